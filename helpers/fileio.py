"""Writing files so that a reader never sees half of one, and hashing files: the one place for both.

Every writer in `helpers` (manifest, features, data sets, the comparison table, index bundles)
goes through `atomic_write`: the data goes to a temporary file beside the target, which is then
renamed over it, so a run killed part-way leaves the previous file intact.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import BinaryIO, Callable


def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], object]) -> Path:
    """Write `data` (bytes, text as UTF-8, or a function that writes to a binary file) to `path`
    through a temporary file and a rename; the parent folder is created. Returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data.encode("utf-8") if isinstance(data, str) else data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def sha256_file(path: str | Path) -> tuple[str, int]:
    """The SHA-256 hex digest of a file's bytes and its size, read in 1 MB chunks."""
    h = hashlib.sha256()
    size = 0
    with Path(path).open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size
