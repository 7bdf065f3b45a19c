"""Dataset recipes: raw data (downloaded or from a data mirror) -> HDF5 clip shards."""

import os
from pathlib import Path

from s3vae.utils import file_digest

MIRROR_ENV = "S3VAE_DATA_MIRROR"


def resolve_mirror(configured: str | None = None) -> Path | None:
    """The data mirror: the config key if set, else $S3VAE_DATA_MIRROR, else None (download)."""
    value = configured or os.environ.get(MIRROR_ENV) or None
    return Path(value).expanduser().resolve() if value else None


def place_verified(target: Path, digest: str, algorithm: str, *, mirror_file: Path | None, url: str | None,
                   timeout: float, error: type[Exception], hint: str) -> Path:
    """Put one file at ``target``: kept if already verified, else copied from ``mirror_file`` (when a
    mirror is set) or downloaded from ``url``, into ``<target>.partial`` first and renamed only once its
    checksum matches; any failure raises ``error`` naming the file and leaves no partial file."""
    import shutil
    import urllib.request

    if target.exists() and file_digest(target, algorithm) == digest:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(target.name + ".partial")
    if mirror_file is not None:
        if not mirror_file.exists():
            raise error(f"{mirror_file}: missing from the data mirror ({hint})")
        shutil.copyfile(mirror_file, tmp)
    else:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as out:
                shutil.copyfileobj(r, out)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            raise error(f"{url}: download failed ({e}); set a data mirror (S3VAE_DATA_MIRROR or config "
                        f"data_mirror) if this machine is offline ({hint})") from e
    got = file_digest(tmp, algorithm)
    if got != digest:
        tmp.unlink()
        source = f"{mirror_file} (in the data mirror; replace it with an intact copy)" if mirror_file else \
            f"{url} (downloaded; try again, or use a data mirror)"
        raise error(f"{source}: checksum mismatch ({algorithm} {got}, expected {digest}); nothing was written "
                    f"to {target}")
    tmp.replace(target)
    return target
