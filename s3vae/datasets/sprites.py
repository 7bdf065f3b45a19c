"""Sprites (Li & Mandt 2018, DSVAE) rebuilt from the Liberated Pixel Cup layer sheets.

The upstream recipe (github.com/YingzhenLi/Sprites @ 3ce4048, ``random_character.py`` and
``frame_to_npy.py``), restated:

* a character is (body, bottomwear, topwear, hair), each index in 0..5 -> 6^4 = 1296 characters,
  character id ``c = 216*body + 36*bottom + 6*top + hair``;
* the layers are alpha-composited over opaque black in the order body, bottomwear, topwear, hair,
  then ``shoes/1.png``; a sheet is 13 x 21 cells of 64x64;
* 9 clips per character, 8 frames each: action label = 3*act + dir with act in (walk, spellcast,
  slash) and dir in (front, left, right); the sheet row and the column of each frame are in
  ``ROWS`` and ``COLUMNS`` below (walk's first frame is the sheet's last column; spellcast and
  slash repeat frames to reach 8);
* split: ``np.random.seed(423); np.random.permutation(1296)``, first 1000 train, last 296 test.

We keep pixels as uint8 RGB (upstream divides by 256 into float32); a config knob may downsample
frames (area interpolation) and subsample characters (the first n of each split's permuted order).
"""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
from PIL import Image

from s3vae.data import atomic_h5, create_frames, write_attrs
from s3vae.datasets import place_verified, resolve_mirror

LAYERS = ("body", "bottomwear", "topwear", "hair")
ATTRIBUTES = ("skin", "pants", "top", "hair")  # label names of the four layers, in layer order
N_VARIANTS = 6
N_CHARACTERS = N_VARIANTS**4
N_TRAIN = 1000
SPLIT_SEED = 423
CELL = 64
SHEET_SIZE = (13 * CELL, 21 * CELL)  # PIL (width, height) = (832, 1344)
T = 8
ACTIONS = ("walk", "spellcast", "slash")
DIRECTIONS = ("front", "left", "right")
# sheet row of each (action, direction); LPC rows are ordered back/left/front/right per action
ROWS = {
    "walk": {"left": 9, "front": 10, "right": 11},
    "spellcast": {"left": 1, "front": 2, "right": 3},
    "slash": {"left": 13, "front": 14, "right": 15},
}
COLUMNS = {
    "walk": (8, 1, 2, 3, 4, 5, 6, 7),
    "spellcast": (0, 1, 2, 3, 4, 5, 4, 6),
    "slash": (0, 1, 2, 3, 4, 5, 4, 0),
}


class SpritesError(ValueError):
    """A layer sheet is missing, corrupt or has the wrong size (the message names the file)."""


def manifest() -> dict:
    return json.loads(resources.files("s3vae.datasets").joinpath("sprites_manifest.json").read_text())


def fetch_layers(dest: str | Path, mirror: str | Path | None = None, timeout: float = 60.0,
                 url_template: str | None = None) -> Path:
    """Place the 25 layer sheets the recipe needs under ``dest``, checksum-verified.

    From ``mirror/sprites-lpc/`` when a data mirror is set, else downloaded from the pinned
    upstream commit (``url_template`` overrides the manifest's, e.g. for an institutional copy).
    Each file goes to a temporary name first and is renamed once verified.
    """
    dest = Path(dest)
    man = manifest()
    mirror = resolve_mirror(str(mirror) if mirror else None)
    for rel, digest in man["sha256"].items():
        place_verified(dest / rel, digest, "sha256", mirror_file=mirror / "sprites-lpc" / rel if mirror else None,
                       url=(url_template or man["url_template"]).format(commit=man["commit"], path=rel),
                       timeout=timeout, error=SpritesError, hint="Sprites layer sheets")
    return dest


def load_sheet(path: str | Path) -> Image.Image:
    """Read one RGBA layer sheet, failing with the file's name if missing, corrupt or mis-sized."""
    path = Path(path)
    if not path.exists():
        raise SpritesError(f"{path}: layer sheet not found")
    try:
        with Image.open(path) as im:
            im.load()
            sheet = im.convert("RGBA")
    except (OSError, SyntaxError, ValueError) as e:
        raise SpritesError(f"{path}: not a readable PNG ({e})") from e
    if sheet.size != SHEET_SIZE:
        raise SpritesError(f"{path}: sheet is {sheet.size[0]}x{sheet.size[1]}, expected "
                           f"{SHEET_SIZE[0]}x{SHEET_SIZE[1]} (13x21 cells of 64x64)")
    return sheet


def attributes_of(c: int) -> tuple[int, int, int, int]:
    """(body, bottom, top, hair) of character id ``c``."""
    return c // 216, (c // 36) % 6, (c // 6) % 6, c % 6


def split_characters(seed: int = SPLIT_SEED) -> tuple[np.ndarray, np.ndarray]:
    """The upstream split: permutation of the 1296 ids with numpy seed 423; first 1000 train."""
    perm = np.random.RandomState(seed).permutation(N_CHARACTERS)
    return perm[:N_TRAIN], perm[N_TRAIN:]


class SheetCache:
    """Loads each layer sheet once."""

    def __init__(self, layers_dir: str | Path):
        self.dir = Path(layers_dir)
        self._cache: dict[str, Image.Image] = {}

    def __call__(self, rel: str) -> Image.Image:
        if rel not in self._cache:
            self._cache[rel] = load_sheet(self.dir / rel)
        return self._cache[rel]


def compose_character(sheets: SheetCache, c: int) -> np.ndarray:
    """Alpha-composite the character's layers over black: (1344, 832, 3) uint8."""
    canvas = Image.new("RGBA", SHEET_SIZE, "black")
    for layer, idx in zip(LAYERS, attributes_of(c)):
        canvas = Image.alpha_composite(canvas, sheets(f"{layer}/{idx}.png"))
    canvas = Image.alpha_composite(canvas, sheets("shoes/1.png"))
    return np.asarray(canvas.convert("RGB"))


def character_clips(sheet: np.ndarray, frame_size: int = CELL) -> tuple[np.ndarray, np.ndarray]:
    """The 9 clips of one composed sheet: frames (9, 8, S, S, 3) uint8 and action labels (9,)."""
    clips, actions = [], []
    for a, act in enumerate(ACTIONS):
        for d, direction in enumerate(DIRECTIONS):
            row = ROWS[act][direction]
            frames = [sheet[row * CELL:(row + 1) * CELL, col * CELL:(col + 1) * CELL] for col in COLUMNS[act]]
            if frame_size != CELL:
                frames = [np.asarray(Image.fromarray(f).resize((frame_size, frame_size), Image.Resampling.BOX))
                          for f in frames]
            clips.append(np.stack(frames))
            actions.append(3 * a + d)
    return np.stack(clips), np.asarray(actions, dtype=np.int64)


def shard_characters(split: str, shard: int, n_shards: int, n_characters: int | None) -> np.ndarray:
    """Character ids of one shard: the split's first ``n_characters`` (upstream order), dealt round-robin."""
    train, test = split_characters()
    ids = {"train": train, "test": test}[split]
    if n_characters is not None:
        ids = ids[:n_characters]
    return ids[shard::n_shards]


def build_shard(layers_dir: str | Path, out: str | Path, split: str, shard: int, n_shards: int,
                n_characters: int | None = None, frame_size: int = CELL) -> int:
    """Write one clip shard; returns the number of clips."""
    if split not in ("train", "test"):
        raise ValueError(f"split must be train or test, got {split!r}")
    if CELL % frame_size:
        raise ValueError(f"frame_size must divide 64, got {frame_size}")
    chars = shard_characters(split, shard, n_shards, n_characters)
    sheets = SheetCache(layers_dir)
    frames = np.zeros((9 * len(chars), T, frame_size, frame_size, 3), np.uint8)
    action = np.zeros(9 * len(chars), np.int64)
    attrs = np.zeros((9 * len(chars), 4), np.int64)
    character = np.zeros(9 * len(chars), np.int64)
    for i, c in enumerate(chars):
        clips, acts = character_clips(compose_character(sheets, int(c)), frame_size)
        sl = slice(9 * i, 9 * i + 9)
        frames[sl], action[sl], attrs[sl], character[sl] = clips, acts, attributes_of(int(c)), c
    with atomic_h5(out) as f:
        create_frames(f, frames)
        f.create_dataset("labels/action", data=action)
        for k, name in enumerate(ATTRIBUTES):
            f.create_dataset(f"labels/{name}", data=attrs[:, k])
        f.create_dataset("character", data=character)
        f.attrs["split"] = split
        f.attrs["label_classes"] = json.dumps({"action": 9, **{a: N_VARIANTS for a in ATTRIBUTES}})
        write_attrs(f, "sprites-dsvae", {
            "upstream": manifest()["upstream"], "commit": manifest()["commit"], "split_seed": SPLIT_SEED,
            "n_train": N_TRAIN, "split": split, "shard": shard, "n_shards": n_shards,
            "n_characters": n_characters, "frame_size": frame_size, "rows": ROWS, "columns": COLUMNS,
            "actions": ACTIONS, "directions": DIRECTIONS, "label": "action = 3*act + dir"})
    return len(frames)
