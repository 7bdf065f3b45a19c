import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def mirror() -> Path:
    """The offline data mirror ($S3VAE_DATA_MIRROR); tests that need real data skip without it."""
    value = os.environ.get("S3VAE_DATA_MIRROR")
    if not value or not (Path(value) / "sprites-lpc").is_dir():
        pytest.skip("S3VAE_DATA_MIRROR is not set to a folder with sprites-lpc/ (.ci/run sets it)")
    return Path(value).resolve()


@pytest.fixture(scope="session")
def layers(mirror, tmp_path_factory) -> Path:
    """The 25 Sprites layer sheets, fetched from the mirror through the real fetch code."""
    from s3vae.datasets.sprites import fetch_layers

    return fetch_layers(tmp_path_factory.mktemp("sprites") / "layers", mirror)


def labelled_clip_shard(path, n=24, seed=0) -> str:
    """A shard of n clips of 4 frames, 16x16: the red channel's level is the static label (skin), a green
    bar moves with a speed set by the dynamic label (action)."""
    import numpy as np

    from s3vae.data import atomic_h5, create_frames

    rng = np.random.default_rng(seed)
    action, skin = rng.integers(0, 3, n), rng.integers(0, 2, n)
    frames = np.zeros((n, 4, 16, 16, 3), np.uint8)
    frames[..., 0] = (skin * 200)[:, None, None, None]
    for t in range(4):
        for i in range(n):
            frames[i, t, :, (t * (action[i] + 1)) % 16, 1] = 255
    with atomic_h5(path) as f:
        create_frames(f, frames)
        f.create_dataset("labels/action", data=action)
        f.create_dataset("labels/skin", data=skin)
    return str(path)
