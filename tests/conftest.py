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
