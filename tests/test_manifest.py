import os
import shutil
from pathlib import Path

import pytest

from helpers.datasets import write_problem_files
from helpers.manifest import COLUMNS, Manifest, ManifestError, diff, scan, skipped_path_for
from tests.conftest import write_photo


def test_scan_indexes_every_image_with_its_fields(photo_folder):
    result = scan(photo_folder, progress=False)
    m = result.manifest
    assert len(m) == 7 and result.skipped == []
    assert [e.path for e in m] == sorted(e.path for e in m)
    assert list(m.ids) == list(range(7))
    e = m.entry(0)
    assert e.path == "cats/cats_0.jpg" and e.label == "cats"
    assert (e.width, e.height, e.format) == (64, 48, "JPEG")
    assert e.bytes == (photo_folder / e.path).stat().st_size and len(e.sha256) == 64
    assert m.label_counts() == {"cats": 3, "dogs": 3, "unlabelled": 1}


def test_problem_files_are_indexed_or_reported_never_lost(tmp_path):
    expect = write_problem_files(tmp_path / "odd")
    result = scan(tmp_path / "odd", progress=False)
    indexed = {e.path for e in result.manifest}
    reasons = {s.path: s.reason for s in result.skipped}
    assert indexed | set(reasons) == {f"{n}" for n in expect}
    for name, outcome in expect.items():
        if outcome == "ok":
            assert name in indexed, name
        else:
            assert outcome in reasons[name], (name, reasons.get(name))


def test_symlink_loops_and_dangling_links_are_skipped_and_reported(photo_folder):
    os.symlink(photo_folder, photo_folder / "cats" / "loop")
    os.symlink(photo_folder / "missing.jpg", photo_folder / "dangling.jpg")
    os.symlink(photo_folder / "dogs" / "dogs_0.jpg", photo_folder / "link_to_dog.jpg")
    (photo_folder / ".DS_Store").write_bytes(b"junk")
    result = scan(photo_folder, progress=False)
    reasons = {s.path: s.reason for s in result.skipped}
    assert reasons["cats/loop"] == "symlink loop"
    assert reasons["dangling.jpg"] == "dangling symlink"
    assert "hidden" in reasons[".DS_Store"]
    assert len(result.manifest) == 8   # the link to a real photo is indexed, as a duplicate
    dup = [e for e in result.manifest if e.path == "link_to_dog.jpg"][0]
    assert dup.duplicate_of == result.manifest.ids[[e.path for e in result.manifest].index("dogs/dogs_0.jpg")]


def test_duplicates_by_content_are_flagged(photo_folder):
    shutil.copy(photo_folder / "cats" / "cats_1.jpg", photo_folder / "dogs" / "copy.jpg")
    m = scan(photo_folder, progress=False).manifest
    (dup,) = m.duplicates()
    assert dup.path == "dogs/copy.jpg"
    assert m.entry(dup.duplicate_of).path == "cats/cats_1.jpg"


def test_rescan_keeps_ids_and_reports_changes(photo_folder):
    first = scan(photo_folder, progress=False).manifest
    ids_before = {e.path: e.id for e in first}
    (photo_folder / "cats" / "cats_0.jpg").unlink()
    write_photo(photo_folder / "cats" / "cats_1.jpg", seed=1234)      # changed content
    write_photo(photo_folder / "birds" / "a_new_bird.jpg", seed=42)  # sorts first: must not steal ids
    second = scan(photo_folder, previous=first, progress=False)
    assert second.changes.added == ["birds/a_new_bird.jpg"]
    assert second.changes.removed == ["cats/cats_0.jpg"]
    assert second.changes.changed == ["cats/cats_1.jpg"]
    for e in second.manifest:
        if e.path in ids_before:
            assert e.id == ids_before[e.path], e.path
    new = [e for e in second.manifest if e.path == "birds/a_new_bird.jpg"][0]
    assert new.id == max(ids_before.values()) + 1
    assert "1 added, 1 removed, 1 changed" in second.summary()
    assert diff(second.manifest, second.manifest).unchanged


def test_save_load_round_trip_and_paths_relative_to_csv(photo_folder, tmp_path):
    result = scan(photo_folder, progress=False)
    inside, skipped = result.save(photo_folder / "manifest.csv")
    assert skipped == photo_folder / "manifest.skipped.csv"
    loaded = Manifest.load(inside)
    assert [e for e in loaded] == [e for e in result.manifest]
    outside = result.manifest.save(tmp_path / "elsewhere" / "m.csv")
    assert outside.read_text().splitlines()[1].split(",")[1] == "../photos/cats/cats_0.jpg"
    moved = Manifest.load(outside)
    assert list(moved) == list(result.manifest) and moved.root == result.manifest.root
    assert moved.abspath(moved[0]).resolve() == (photo_folder / "cats" / "cats_0.jpg").resolve()
    assert moved.content_hash() == loaded.content_hash() == result.manifest.content_hash()


def test_a_symlink_beside_its_target_survives_a_manifest_saved_outside(photo_folder, tmp_path):
    # as Debian's openclipart-png ships: some files are links to others in the same folder
    (photo_folder / "cats" / "link_to_cat.jpg").symlink_to(photo_folder / "cats" / "cats_0.jpg")
    result = scan(photo_folder, progress=False)
    assert "cats/link_to_cat.jpg" in [e.path for e in result.manifest]
    outside = result.manifest.save(tmp_path / "elsewhere" / "m.csv")
    moved = Manifest.load(outside)
    assert [e.path for e in moved] == [e.path for e in result.manifest] and moved.root == result.manifest.root
    again = scan(photo_folder, previous=moved, progress=False)    # a rescan keeps one id for each
    assert list(again.manifest) == list(result.manifest) and again.changes.unchanged


@pytest.mark.parametrize("mutate, message", [
    (lambda rows: [rows[0].replace("id,", "ident,")] + rows[1:], r"not a manifest \(no id column\)"),
    (lambda rows: rows[:2] + [rows[1]], "unique"),
    (lambda rows: rows[:1] + ["x" + rows[1]] + rows[2:], "bad value"),
])
def test_load_validates(photo_folder, tmp_path, mutate, message):
    path = scan(photo_folder, progress=False).manifest.save(tmp_path / "m.csv")
    rows = path.read_text().splitlines()
    path.write_text("\n".join(mutate(rows)) + "\n")
    with pytest.raises(ManifestError, match=message):
        Manifest.load(path)


def test_columns_are_the_documented_contract(photo_folder, tmp_path):
    path = scan(photo_folder, progress=False).manifest.save(tmp_path / "m.csv")
    assert path.read_text().splitlines()[0] == ",".join(COLUMNS)
    assert skipped_path_for(path).name == "m.skipped.csv"


def test_missing_folder_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        scan(tmp_path / "nowhere", progress=False)


def test_refresh_saves_and_keeps_ids(photo_folder, tmp_path):
    from helpers.manifest import refresh
    csv_path = tmp_path / "work" / "manifest.csv"
    first = refresh(photo_folder, csv_path, progress=False)
    assert first.changes is None and Manifest.load(csv_path).ids.tolist() == first.manifest.ids.tolist()
    write_photo(photo_folder / "aaa.jpg", seed=7)
    second = refresh(photo_folder, csv_path, progress=False)
    assert second.changes.added == ["aaa.jpg"]
    assert {e.path: e.id for e in first.manifest}.items() <= {e.path: e.id for e in second.manifest}.items()
    fresh = refresh(photo_folder, csv_path, keep_ids=False, progress=False)
    assert fresh.changes is None and fresh.manifest.entry(0).path == "aaa.jpg"   # ids start afresh
    csv_path.write_text("not,a,manifest\n")
    with pytest.raises(ManifestError, match="not a manifest"):
        refresh(photo_folder, csv_path, progress=False)


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_manifest_and_skipped_report_give_paths_relative_to_the_same_folder(photo_folder, tmp_path, where):
    (photo_folder / "cats" / "notes.jpg").write_text("not an image")
    csv_path = (tmp_path / "work" if where == "outside" else photo_folder) / "manifest.csv"
    result = scan(photo_folder, progress=False, exclude=[csv_path, skipped_path_for(csv_path)])
    manifest_csv, skipped_csv = result.save(csv_path)
    base = csv_path.parent
    listed = [row.split(",")[1] for row in manifest_csv.read_text().splitlines()[1:]]
    skipped = [row.split(",")[0] for row in skipped_csv.read_text().splitlines()[1:]]
    assert skipped == [Path(os.path.relpath(photo_folder / "cats" / "notes.jpg", base)).as_posix()]
    assert all((base / p).resolve().is_file() for p in listed + skipped)   # both resolve from one folder
    assert ("../photos/cats/notes.jpg" if where == "outside" else "cats/notes.jpg") in skipped[0]


def test_labelled_only_with_two_or_more_subfolders(photo_folder, tmp_path):
    assert scan(photo_folder, progress=False).manifest.labelled            # cats/, dogs/
    flat = tmp_path / "flat"
    for i in range(3):
        write_photo(flat / f"{i}.jpg", i)
    assert not scan(flat, progress=False).manifest.labelled
    write_photo(flat / "one_album" / "x.jpg", 7)                           # one label is no label
    m = scan(flat, progress=False).manifest
    assert set(m.labels) == {"unlabelled", "one_album"} and not m.labelled
