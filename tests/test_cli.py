import csv
import subprocess
import sys
from pathlib import Path

from helpers.datasets import write_problem_files
from helpers.manifest import Manifest

REPO = Path(__file__).resolve().parent.parent


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


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


def test_exit_codes(tmp_path):
    assert run("manifest", str(tmp_path / "missing"), "--out", str(tmp_path / "m.csv")).returncode != 0
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("not an image")
    proc = run("manifest", str(tmp_path / "junk"), "--out", str(tmp_path / "m.csv"), "--quiet")
    assert proc.returncode != 0 and "no readable image" in proc.stderr
