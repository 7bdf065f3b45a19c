"""Dataset recipes: raw data (downloaded or from a data mirror) -> HDF5 clip shards."""

import os
from pathlib import Path

MIRROR_ENV = "S3VAE_DATA_MIRROR"


def resolve_mirror(configured: str | None = None) -> Path | None:
    """The data mirror: the config key if set, else $S3VAE_DATA_MIRROR, else None (download)."""
    value = configured or os.environ.get(MIRROR_ENV) or None
    return Path(value).expanduser().resolve() if value else None
