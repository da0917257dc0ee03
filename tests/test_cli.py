import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from helpers.datasets import write_problem_files
from helpers.manifest import Manifest
from tests.conftest import run_here, write_photo

REPO = Path(__file__).resolve().parent.parent


def run(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **(env or {})})


def test_manifest_command_writes_manifest_and_skipped_report(photo_folder, tmp_path):
    expect = write_problem_files(photo_folder / "odd")
    out = tmp_path / "manifest.csv"
    proc = run("manifest", str(photo_folder), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    n_bad = sum(o != "ok" for o in expect.values())
    n_good = 7 + len(expect) - n_bad
    assert f"indexed {n_good} files, skipped {n_bad}" in proc.stdout
    assert len(Manifest.load(out)) == n_good
    with open(tmp_path / "manifest.skipped.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    # relative to the CSV's folder, as the manifest's own paths are
    assert {r["path"] for r in rows} == {f"photos/odd/{n}" for n, o in expect.items() if o != "ok"}
    assert all(r["reason"] for r in rows)


def test_rerun_keeps_ids_and_reports_changes(photo_folder, tmp_path):
    out = tmp_path / "m.csv"
    assert run("manifest", str(photo_folder), "--out", str(out), "--quiet").returncode == 0
    before = {e.path: e.id for e in Manifest.load(out)}
    (photo_folder / "cats" / "cats_2.jpg").unlink()
    proc = run("manifest", str(photo_folder), "--out", str(out), "--quiet")
    assert "0 added, 1 removed, 0 changed" in proc.stdout
    assert all(before[e.path] == e.id for e in Manifest.load(out))


def test_manifest_inside_the_folder_does_not_index_itself(photo_folder):
    out = photo_folder / "manifest.csv"
    for _ in range(2):
        proc = run("manifest", str(photo_folder), "--out", str(out), "--quiet")
        assert "indexed 7 files, skipped 0" in proc.stdout, proc.stdout


def error_line(proc: subprocess.CompletedProcess) -> str:
    """The one line a failing command prints: no traceback, nothing else on stderr."""
    assert proc.returncode != 0, proc.stdout
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    return lines[0]


def test_missing_folder_and_no_images(tmp_path):
    assert error_line(run("manifest", str(tmp_path / "missing"), "--out", str(tmp_path / "m.csv"))) == \
        f"error: {tmp_path / 'missing'}: no such folder"
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("not an image")
    proc = run("manifest", str(tmp_path / "junk"), "--out", str(tmp_path / "m.csv"), "--quiet")
    assert error_line(proc) == f"error: no readable image under {tmp_path / 'junk'}"
    assert "skipped a.txt: not an image" in proc.stdout


@pytest.mark.parametrize("content, described", [
    ("date,amount\n2026-01-02,12.50\n", "a text file of 29 bytes starting 'date,amount'"),
    (bytes(range(256)) * 4, "a binary file of 1,024 bytes"),
])
def test_manifest_refuses_to_overwrite_a_file_that_is_not_a_manifest(photo_folder, tmp_path, content, described):
    out = tmp_path / "budget.csv"
    (out.write_text if isinstance(content, str) else out.write_bytes)(content)
    before = out.read_bytes()
    line = error_line(run("manifest", str(photo_folder), "--out", str(out), "--quiet"))
    assert line == (f"error: {out} exists and is not a manifest ({described}); left untouched. "
                    "Choose another --out, or add --force to overwrite it.")
    assert out.read_bytes() == before and not (tmp_path / "budget.skipped.csv").exists()
    proc = run("manifest", str(photo_folder), "--out", str(out), "--quiet", "--force")
    assert proc.returncode == 0 and len(Manifest.load(out)) == 7


def test_manifest_refuses_to_overwrite_a_foreign_skipped_report(photo_folder, tmp_path):
    (tmp_path / "m.skipped.csv").write_text("my notes\n")
    line = error_line(run("manifest", str(photo_folder), "--out", str(tmp_path / "m.csv"), "--quiet"))
    assert "m.skipped.csv exists and is not a skipped-files report" in line
    assert (tmp_path / "m.skipped.csv").read_text() == "my notes\n" and not (tmp_path / "m.csv").exists()


@pytest.mark.parametrize("content, message", [
    (bytes(range(256)) * 4, "not a manifest: not UTF-8 text (a binary file?)"),
    ("date,amount\n2026-01-02,12.50\n", "not a manifest (no id, path, sha256"),
])
def test_features_with_a_file_that_is_not_a_manifest(tmp_path, content, message):
    given = tmp_path / "given.csv"
    (given.write_text if isinstance(content, str) else given.write_bytes)(content)
    line = error_line(run_here("features", str(given), "--out", str(tmp_path / "f.npy"), "--backbone",
                               "random_resnet50", "--quiet"))
    assert line.startswith(f"error: {given}: {message}")
    assert not (tmp_path / "f.npy").exists()


def test_features_refuses_to_overwrite_arrays_it_did_not_write(photo_folder, tmp_path):
    manifest = tmp_path / "m.csv"
    assert run("manifest", str(photo_folder), "--out", str(manifest), "--quiet").returncode == 0
    mine = tmp_path / "embeddings.npy"
    np.save(mine, np.ones((3, 4), np.float32))          # a user's own array, no metadata beside it
    before = mine.read_bytes()
    line = error_line(run_here("features", str(manifest), "--out", str(mine), "--quiet"))
    assert line.startswith(f"error: {mine} exists and is not a features file (a binary file of ")
    assert line.endswith("add --force to overwrite it.") and mine.read_bytes() == before


def test_missing_inputs_and_bad_settings_are_one_line(tmp_path):
    line = error_line(run("features", str(tmp_path / "none.csv"), "--out", str(tmp_path / "f.npy")))
    assert line == f"error: {tmp_path / 'none.csv'}: no such manifest file"
    env = {"SIMSEARCH_SCALE": "medium"}
    for command in (["data"], ["run"], ["features", "x.csv", "--out", str(tmp_path / "f.npy")]):
        assert error_line(run_here(*command, env=env)) == \
            "error: SIMSEARCH_SCALE='medium' is not a setting the course knows: use one of quick, full."
    line = error_line(run_here("data", env={"SIMSEARCH_DATASET": "no_such_photos"}))
    assert line.startswith("error: SIMSEARCH_DATASET='no_such_photos': no such folder")
    assert error_line(run_here("features", "x.csv", "--out", str(tmp_path / "f.txt"))) == \
        f"error: {tmp_path / 'f.txt'}: a features file must end in .npy"


def test_a_flat_folder_with_a_duplicate_and_a_broken_file(tmp_path):
    """A folder unlike the sample: no subfolders, one photo twice, one broken file. The manifest
    reports all three, and features are extracted for every readable image."""
    folder = tmp_path / "holiday"
    for i in range(4):
        write_photo(folder / f"IMG_{i:04d}.jpg", seed=i, size=(80, 60))
    shutil.copyfile(folder / "IMG_0001.jpg", folder / "IMG_0001 (copy).jpg")
    (folder / "IMG_0009.jpg").write_bytes((folder / "IMG_0002.jpg").read_bytes()[:300])
    out = tmp_path / "work" / "manifest.csv"
    proc = run("manifest", str(folder), "--out", str(out), "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("indexed 5 files, skipped 1")
    assert lines[1].startswith("  skipped IMG_0009.jpg: ")
    assert lines[2] == ("1 file has the same content as another (column duplicate_of), "
                        "e.g. IMG_0001.jpg = IMG_0001 (copy).jpg")
    assert lines[3].startswith("no labels:") and len(lines) == 4
    m = Manifest.load(out)
    assert {e.path: e.duplicate_of for e in m if e.duplicate_of is not None} == {
        "IMG_0001.jpg": next(e.id for e in m if e.path == "IMG_0001 (copy).jpg")}
    assert not m.labelled and set(m.labels) == {"unlabelled"}
    proc = run("features", str(out), "--out", str(tmp_path / "work" / "features.npy"),
               "--backbone", "random_resnet50", "--quiet")
    assert proc.returncode == 0, proc.stderr
    assert "wrote 5 vectors" in proc.stdout and "0 images failed" in proc.stdout
    vectors = np.load(tmp_path / "work" / "features.npy")
    ids = list(np.load(tmp_path / "work" / "features.ids.npy"))
    dup = next(e for e in m if e.duplicate_of is not None)
    assert np.array_equal(vectors[ids.index(dup.id)], vectors[ids.index(dup.duplicate_of)])
    again = run_here("features", str(out), "--out", str(tmp_path / "work" / "features.npy"),
                     "--backbone", "random_resnet50", "--quiet")
    assert again.returncode == 0, again.stderr           # its own output: replaced without --force
