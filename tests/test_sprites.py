"""The Sprites recipe: split, frame layout, composition, and clear errors on bad sheets."""

import hashlib
import re
import shutil

import h5py
import numpy as np
import pytest
from PIL import Image

from s3vae.datasets import sprites
from s3vae.datasets.sprites import (
    SpritesError,
    attributes_of,
    build_shard,
    character_clips,
    fetch_layers,
    load_sheet,
    split_characters,
)


def test_split_is_the_upstream_seed_423_permutation():
    train, test = split_characters()
    assert len(train) == 1000 and len(test) == 296
    assert sorted(np.concatenate([train, test]).tolist()) == list(range(1296))
    np.random.seed(423)                     # the upstream's exact calls
    perm = np.random.permutation(range(0, 6**4))
    assert np.array_equal(train, perm[:1000])


def test_attribute_decoding_matches_upstream_order():
    # upstream: body = c // 6^3, bottom = (c mod 6^3) // 6^2, top = (c mod 6^2) // 6, hair = c mod 6
    assert attributes_of(0) == (0, 0, 0, 0)
    assert attributes_of(1295) == (5, 5, 5, 5)
    assert attributes_of(216 * 2 + 36 * 3 + 6 * 4 + 5) == (2, 3, 4, 5)


def test_frame_layout_on_a_labelled_sheet():
    """Each 64x64 cell holds its (row, col): the clips must read the recipe's cells in order."""
    sheet = np.zeros((21 * 64, 13 * 64, 3), np.uint8)
    for r in range(21):
        for c in range(13):
            sheet[r * 64:(r + 1) * 64, c * 64:(c + 1) * 64] = (r, c, 7)
    clips, actions = character_clips(sheet)
    assert clips.shape == (9, 8, 64, 64, 3)
    assert actions.tolist() == list(range(9))
    cells = [[(int(f[0, 0, 0]), int(f[0, 0, 1])) for f in clip] for clip in clips]
    # action 0 = walk/front: row 10, columns 8,1..7
    assert cells[0] == [(10, 8)] + [(10, c) for c in range(1, 8)]
    assert cells[1][0] == (9, 8) and cells[2][0] == (11, 8)                   # walk left, right
    assert cells[3] == [(2, c) for c in (0, 1, 2, 3, 4, 5, 4, 6)]            # spellcast front
    assert cells[8] == [(15, c) for c in (0, 1, 2, 3, 4, 5, 4, 0)]           # slash right
    small, _ = character_clips(sheet, frame_size=32)
    assert small.shape == (9, 8, 32, 32, 3)


def test_missing_and_corrupt_sheets_name_the_file(tmp_path):
    with pytest.raises(SpritesError, match=r"nothere\.png: layer sheet not found"):
        load_sheet(tmp_path / "nothere.png")
    bad = tmp_path / "corrupt.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    with pytest.raises(SpritesError, match=r"corrupt\.png: not a readable PNG"):
        load_sheet(bad)
    small = tmp_path / "small.png"
    Image.new("RGBA", (64, 64)).save(small)
    with pytest.raises(SpritesError, match=r"small\.png: sheet is 64x64"):
        load_sheet(small)


def test_truncated_sheet_in_a_build_names_it_and_writes_nothing(layers, tmp_path):
    broken = tmp_path / "layers"
    shutil.copytree(layers, broken)
    data = (broken / "hair/0.png").read_bytes()
    (broken / "hair/0.png").write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.h5"
    with pytest.raises(SpritesError, match=r"hair/0\.png"):
        build_shard(broken, out, "train", 0, 1, n_characters=5)
    assert not out.exists() and not list(tmp_path.glob("*.partial"))


def test_fetch_rejects_a_checksum_mismatch(mirror, tmp_path):
    fake = tmp_path / "mirror"
    shutil.copytree(mirror / "sprites-lpc", fake / "sprites-lpc")
    Image.new("RGBA", (832, 1344)).save(fake / "sprites-lpc/body/3.png")
    # the error names the damaged file in the mirror, not the destination that was never written
    bad = re.escape(str((fake / "sprites-lpc/body/3.png").resolve()))
    with pytest.raises(SpritesError, match=bad + r" \(in the data mirror; replace it.*checksum mismatch"):
        fetch_layers(tmp_path / "dest", fake)
    assert not (tmp_path / "dest/body/3.png").exists()


def test_fetched_layers_match_the_manifest(layers):
    man = sprites.manifest()
    assert len(man["sha256"]) == 25
    for rel, digest in man["sha256"].items():
        assert hashlib.sha256((layers / rel).read_bytes()).hexdigest() == digest


def test_real_shard(layers, tmp_path):
    out = tmp_path / "test_0.h5"
    n = build_shard(layers, out, "test", 0, 2, n_characters=3, frame_size=32)
    assert n == 9 * 2                                   # characters 0 and 2 of the test split
    with h5py.File(out) as f:
        frames = f["frames"][()]
        assert frames.shape == (18, 8, 32, 32, 3) and frames.dtype == np.uint8
        _, test = split_characters()
        assert f["character"][()].tolist() == [test[0]] * 9 + [test[2]] * 9
        assert f["labels/action"][()].tolist() == list(range(9)) * 2
        assert f["labels/hair"][0] == attributes_of(int(test[0]))[3]
        assert f.attrs["split"] == "test"
    # black background, a character in the middle, and actual motion between frames
    assert frames[:, :, 0, 0].max() == 0
    assert frames[:, :, 8:24, 8:24].mean() > 10
    assert np.abs(frames[0, 1].astype(int) - frames[0, 0]).sum() > 0


def test_download_path_over_http_verifies_checksums(mirror, tmp_path, monkeypatch):
    """The real download code, against a local HTTP server holding the upstream files."""
    import functools
    import http.server
    import threading

    monkeypatch.delenv("S3VAE_DATA_MIRROR", raising=False)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(mirror / "sprites-lpc"))
    handler.log_message = lambda *a, **k: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/{{path}}"
        dest = fetch_layers(tmp_path / "dl", url_template=url)
        assert len(list(dest.rglob("*.png"))) == 25
        with pytest.raises(SpritesError, match=r"download failed.*data mirror"):
            fetch_layers(tmp_path / "dl2", url_template=url.replace("{path}", "missing/{path}"))
        assert not list((tmp_path / "dl2").rglob("*.partial"))
    finally:
        server.shutdown()
