"""A folder of images as a table: stable int64 ids, relative paths, content hashes, labels.

Every file that is not indexed is reported with its reason; nothing is dropped silently.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np
from tqdm.auto import tqdm

from .fileio import atomic_write, sha256_file
from .images import MAX_PIXELS, ImageLoadError, probe

COLUMNS = ("id", "path", "sha256", "bytes", "width", "height", "format", "label", "duplicate_of")
SKIPPED_COLUMNS = ("path", "reason")
UNLABELLED = "unlabelled"   # the label of an image at the top of the scanned folder


class ManifestError(ValueError):
    """A manifest file that is malformed or does not match what it should describe."""


@dataclass(frozen=True)
class Entry:
    id: int
    path: str          # POSIX path relative to Manifest.root
    sha256: str
    bytes: int
    width: int
    height: int
    format: str
    label: str
    duplicate_of: int | None = None   # id of the first entry with the same content


@dataclass(frozen=True)
class Skipped:
    path: str
    reason: str


@dataclass(frozen=True)
class Changes:
    added: list[str]
    removed: list[str]
    changed: list[str]

    @property
    def unchanged(self) -> bool:
        return not (self.added or self.removed or self.changed)

    def __str__(self) -> str:
        return f"{len(self.added)} added, {len(self.removed)} removed, {len(self.changed)} changed"


class Manifest:
    """An ordered table of image entries; paths are relative to `root`."""

    def __init__(self, root: str | Path, entries: Iterable[Entry]):
        self.root = Path(root).resolve()
        self.entries = list(entries)
        self._validate()
        self._by_id = {e.id: e for e in self.entries}

    def _validate(self) -> None:
        ids = [e.id for e in self.entries]
        if len(set(ids)) != len(ids):
            dup = sorted({i for i in ids if ids.count(i) > 1})[:5]
            raise ManifestError(f"ids must be unique; repeated: {dup}")
        if any(not 0 <= i < 2**63 for i in ids):
            raise ManifestError("ids must be non-negative int64 values")
        paths = [e.path for e in self.entries]
        if len(set(paths)) != len(paths):
            raise ManifestError("paths must be unique")

    def __len__(self) -> int:
        return len(self.entries)

    def __iter__(self) -> Iterator[Entry]:
        return iter(self.entries)

    def __getitem__(self, i: int) -> Entry:
        return self.entries[i]

    @property
    def ids(self) -> np.ndarray:
        return np.array([e.id for e in self.entries], dtype=np.int64)

    @property
    def labels(self) -> list[str]:
        return [e.label for e in self.entries]

    @property
    def labelled(self) -> bool:
        """Whether label-based measures (precision by label, recall@1 same label) mean anything:
        the images sit in at least two subfolders. A flat folder is all UNLABELLED (notebooks
        02-03 skip those measures then, and say so)."""
        return len(set(self.labels) - {UNLABELLED}) >= 2

    def __contains__(self, id_: object) -> bool:
        return isinstance(id_, (int, np.integer)) and int(id_) in self._by_id

    def entry(self, id_: int) -> Entry:
        try:
            return self._by_id[int(id_)]
        except KeyError:
            raise KeyError(f"id {id_} is not in this manifest") from None

    def abspath(self, entry_or_id: Entry | int) -> Path:
        e = entry_or_id if isinstance(entry_or_id, Entry) else self.entry(entry_or_id)
        return self.root / e.path

    def paths_of(self, ids: Iterable[int]) -> list[str | None]:
        """Relative paths for ids; None for -1 (Faiss's 'no result')."""
        return [None if int(i) < 0 else self.entry(i).path for i in ids]

    def content_hash(self) -> str:
        """A hash of what the manifest describes (ids, paths, file contents), for artefacts."""
        h = hashlib.sha256()
        for e in self.entries:
            h.update(f"{e.id}\t{e.path}\t{e.sha256}\n".encode())
        return h.hexdigest()

    def duplicates(self) -> list[Entry]:
        return [e for e in self.entries if e.duplicate_of is not None]

    def label_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for e in self.entries:
            counts[e.label] = counts.get(e.label, 0) + 1
        return dict(sorted(counts.items()))

    def save(self, csv_path: str | Path) -> Path:
        """Write as CSV; paths are stored relative to the CSV's own folder."""
        csv_path = Path(csv_path)
        rows = [{**asdict(e), "path": _relative_to_csv(self.root / e.path, csv_path),
                 "duplicate_of": "" if e.duplicate_of is None else e.duplicate_of} for e in self.entries]
        _write_csv(csv_path, COLUMNS, rows)
        return csv_path

    @classmethod
    def load(cls, csv_path: str | Path) -> "Manifest":
        """Read and validate a manifest CSV written by `save`."""
        root, entries = _read_entries(Path(csv_path))
        try:
            return cls(root, entries)
        except ManifestError as err:
            raise ManifestError(f"{csv_path}: {err}") from None

    def _repr_html_(self) -> str:
        head = self.entries[:8]
        cells = "".join(
            "<tr>" + "".join(f"<td>{getattr(e, c) if getattr(e, c) is not None else ''}</td>"
                             for c in COLUMNS) + "</tr>" for e in head)
        more = f"<p>... {len(self) - len(head)} more rows</p>" if len(self) > len(head) else ""
        header = "".join(f"<th>{c}</th>" for c in COLUMNS)
        return (f"<p>Manifest of {len(self)} images under <code>{self.root}</code></p>"
                f"<table><tr>{header}</tr>{cells}</table>{more}")

    def __repr__(self) -> str:
        return f"Manifest({len(self)} images, root={str(self.root)!r})"


def _read_entries(csv_path: Path) -> tuple[Path, list[Entry]]:
    """The image folder and the entries of a manifest CSV (ManifestError, one line, when it is not one)."""
    if not csv_path.is_file():
        what = "a folder, not a manifest file" if csv_path.is_dir() else "no such manifest file"
        raise ManifestError(f"{csv_path}: {what}")
    try:
        with csv_path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
            if missing:
                raise ManifestError(f"{csv_path}: not a manifest (no {', '.join(missing)} "
                                    f"column{'s' if len(missing) > 1 else ''}); make one with "
                                    "`python -m helpers manifest FOLDER --out FILE.csv`")
            entries = []
            for n, row in enumerate(reader, start=2):
                try:
                    entries.append(Entry(
                        id=int(row["id"]), path=row["path"], sha256=row["sha256"],
                        bytes=int(row["bytes"]), width=int(row["width"]), height=int(row["height"]),
                        format=row["format"], label=row["label"],
                        duplicate_of=int(row["duplicate_of"]) if row["duplicate_of"] else None))
                except (TypeError, ValueError) as err:
                    raise ManifestError(f"{csv_path}, line {n}: bad value ({err})") from None
    except (UnicodeDecodeError, csv.Error) as err:
        why = "not UTF-8 text (a binary file?)" if isinstance(err, UnicodeDecodeError) else str(err)
        raise ManifestError(f"{csv_path}: not a manifest: {why}") from None
    root = csv_path.parent.resolve()
    if entries and all(e.path.startswith("../") for e in entries):
        # saved outside the image folder: recover the folder so paths read as scanned
        # normpath, not resolve: a symlink listed beside its target stays a path of its own
        paths = [Path(os.path.normpath(root / e.path)) for e in entries]
        root = Path(os.path.commonpath([p.parent for p in paths]))
        entries = [replace(e, path=p.relative_to(root).as_posix()) for e, p in zip(entries, paths)]
    return root, entries


@dataclass
class ScanResult:
    manifest: Manifest
    skipped: list[Skipped]
    changes: Changes | None = None   # set when the scan was compared with a previous manifest

    def summary(self) -> str:
        text = (f"{len(self.manifest)} images indexed, {len(self.skipped)} files skipped, "
                f"{len(self.manifest.duplicates())} duplicates by content")
        return text + (f"; since the previous scan: {self.changes}" if self.changes else "")

    def save(self, csv_path: str | Path) -> tuple[Path, Path]:
        """Write the manifest and, beside it, `<name>.skipped.csv` (columns path, reason); both
        give paths relative to the CSVs' own folder."""
        csv_path = Path(csv_path)
        self.manifest.save(csv_path)
        skipped_path = skipped_path_for(csv_path)
        _write_csv(skipped_path, SKIPPED_COLUMNS,
                   [{"path": _relative_to_csv(self.manifest.root / s.path, csv_path), "reason": s.reason}
                    for s in self.skipped])
        return csv_path, skipped_path


def skipped_path_for(csv_path: str | Path) -> Path:
    csv_path = Path(csv_path)
    return csv_path.with_name(csv_path.name.removesuffix(".csv") + ".skipped.csv")


def _relative_to_csv(path: Path, csv_path: Path) -> str:
    """`path` as a POSIX path relative to the folder that holds `csv_path`."""
    return Path(os.path.relpath(path, csv_path.parent.resolve())).as_posix()


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    """Write atomically: a half-written manifest never replaces a good one."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write(path, text.getvalue())


def _walk(root: Path, exclude: set[Path]) -> tuple[list[Path], list[Skipped]]:
    """All regular files under root, following symlinks once; loops and dangling links reported."""
    files, skipped = [], []
    seen_dirs = {root.resolve()}

    def rel(p: Path) -> str:
        return p.relative_to(root).as_posix()

    stack = [root]
    while stack:
        folder = stack.pop()
        try:
            children = sorted(folder.iterdir(), key=lambda p: p.name)
        except OSError as err:
            skipped.append(Skipped(rel(folder) or ".", f"cannot list folder ({err.strerror})"))
            continue
        for p in children:
            if p.name.startswith("."):
                skipped.append(Skipped(rel(p), "hidden file or folder"))
                continue
            if p.is_symlink() and not p.exists():
                try:
                    p.resolve(strict=True)
                    reason = "dangling symlink"
                except RuntimeError:
                    reason = "symlink loop"
                except OSError as err:
                    reason = "symlink loop" if err.errno == 40 else "dangling symlink"
                skipped.append(Skipped(rel(p), reason))
                continue
            if p.is_dir():
                real = p.resolve()
                if real in seen_dirs:
                    loop = real == folder.resolve() or real in folder.resolve().parents
                    skipped.append(Skipped(rel(p), "symlink loop" if loop
                                           else "folder already scanned through another path"))
                    continue
                seen_dirs.add(real)
                stack.append(p)
            elif p.is_file():
                if p.resolve() not in exclude:
                    files.append(p)
            else:
                skipped.append(Skipped(rel(p), "not a regular file"))
    files.sort(key=lambda p: rel(p))
    return files, skipped



def _default_label(rel_path: str) -> str:
    parent = Path(rel_path).parent.name
    return parent or UNLABELLED


def scan(folder: str | Path, previous: Manifest | None = None, *, exclude: Iterable[str | Path] = (),
         max_pixels: int = MAX_PIXELS, progress: bool = True) -> ScanResult:
    """Scan `folder` recursively into a manifest.

    Files are fully decoded once, so a broken image is reported now rather than failing later.
    With `previous`, a file at a path it already listed keeps its id; new files get new ids
    above every id used before, and the changes (added, removed, changed content) are reported.
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder")
    root = root.resolve()
    files, skipped = _walk(root, {Path(x).resolve() for x in exclude})

    old_ids: dict[Path, Entry] = {}
    if previous is not None:
        # lexical paths, not resolved ones: a symlink listed beside its target keeps its own id
        old_ids = {Path(os.path.normpath(previous.root / e.path)): e for e in previous}
    next_id = max([e.id for e in previous] + [-1]) + 1 if previous is not None else 0

    entries: list[Entry] = []
    first_by_hash: dict[str, int] = {}
    for p in tqdm(files, desc="scanning", unit="file", disable=not progress):
        rel_path = p.relative_to(root).as_posix()
        try:
            digest, size = sha256_file(p)
            info = probe(p, max_pixels=max_pixels)
        except ImageLoadError as err:
            skipped.append(Skipped(rel_path, err.reason))
            continue
        except OSError as err:
            skipped.append(Skipped(rel_path, f"cannot read file ({err.strerror or err})"))
            continue
        old = old_ids.get(Path(os.path.normpath(p)))
        if old is not None:
            id_ = old.id
        else:
            id_, next_id = next_id, next_id + 1
        entries.append(Entry(id=id_, path=rel_path, sha256=digest, bytes=size, width=info.width,
                             height=info.height, format=info.format, label=_default_label(rel_path),
                             duplicate_of=first_by_hash.get(digest)))
        first_by_hash.setdefault(digest, id_)
    manifest = Manifest(root, entries)
    skipped.sort(key=lambda s: s.path)
    changes = diff(previous, manifest) if previous is not None else None
    return ScanResult(manifest, skipped, changes)


def diff(old: Manifest, new: Manifest) -> Changes:
    """Files added, removed and changed (same path, new content) between two manifests."""
    before = {(old.root / e.path).resolve(): e for e in old}
    after = {(new.root / e.path).resolve(): e for e in new}
    rel = lambda p: os.path.relpath(p, new.root)  # noqa: E731
    return Changes(
        added=sorted(Path(rel(p)).as_posix() for p in after.keys() - before.keys()),
        removed=sorted(Path(rel(p)).as_posix() for p in before.keys() - after.keys()),
        changed=sorted(Path(rel(p)).as_posix() for p in after.keys() & before.keys()
                       if after[p].sha256 != before[p].sha256),
    )



def refresh(folder: str | Path, csv_path: str | Path, *, keep_ids: bool = True, **scan_kw) -> ScanResult:
    """Scan `folder` keeping the ids of the manifest saved at `csv_path` (if any), and save
    it there with its skipped report (notebook 01_data_manifest; the `manifest` command).

    This is how a notebook builds or updates the manifest that earlier notebooks made.
    `keep_ids=False` ignores the saved manifest: ids start afresh. An unreadable saved manifest
    raises ManifestError.
    """
    csv_path = Path(csv_path)
    previous = Manifest.load(csv_path) if keep_ids and csv_path.is_file() else None
    result = scan(folder, previous, exclude=[csv_path, skipped_path_for(csv_path)], **scan_kw)
    result.save(csv_path)
    return result
