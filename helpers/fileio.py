"""Writing files so that a reader never sees half of one, and hashing files: the one place for both.

Every writer in `helpers` (manifest, features, data sets, the comparison table, index bundles)
goes through `atomic_write`: the data goes to a temporary file beside the target, which is then
renamed over it, so a run killed part-way leaves the previous file intact. A folder written as
one unit (an index bundle) goes through `atomic_write_dir` the same way. `timestamp` is the
time every artefact records it was made, and `first_line` the one line of an exception that
messages quote.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import tempfile
import time
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


def atomic_write_dir(path: str | Path, fill: Callable[[Path], object]) -> Path:
    """Build a folder at `path` atomically: `fill(tmp)` writes everything into a temporary folder
    beside `path`, which then takes `path`'s place, so a run killed part-way leaves the previous
    folder intact (an interrupted temporary `.NAME.*.tmp` folder may stay behind; delete it).

    An existing folder is swapped with the new one in one step where Linux allows it
    (renameat2 RENAME_EXCHANGE); elsewhere by two renames, between which `path` is briefly absent.
    Used for index bundles (notebook 09_serialization). Returns the path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o777 & ~umask)   # mkdtemp's folder is private; the result should not be
    try:
        fill(tmp)
        if not path.exists():
            os.rename(tmp, path)
        elif _exchange(tmp, path):
            shutil.rmtree(tmp)              # now holds the previous folder
        else:
            old = tmp.with_suffix(".old")
            os.rename(path, old)
            os.rename(tmp, path)
            shutil.rmtree(old)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def _exchange(a: Path, b: Path) -> bool:
    """Swap two paths in one system call (Linux renameat2 RENAME_EXCHANGE); False if unsupported."""
    renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    if renameat2 is None:
        return False
    at_fdcwd, rename_exchange = -100, 2
    return renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0


def timestamp() -> str:
    """Now, as every artefact records it (ISO 8601, local time with its UTC offset)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def first_line(err: BaseException, last: bool = False, typed: bool = False) -> str:
    """An exception's first line of message (its last with `last`: Faiss's own message ends its
    text), or its type's name when it has none; `typed`: "Type: line", the type named once."""
    lines = [ln for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    line = lines[-1] if last else lines[0]
    return f"{type(err).__name__}: {line}" if typed else line
