"""`python -m helpers index | search | update`: the search-my-photos path end to end, and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from helpers.datasets import available_sources, make_variant, source_path
from tests.conftest import run_here as conftest_run_here, write_photo

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "SIMSEARCH_BACKBONE": "efficientnet_lite0", "PYTHONPATH": str(REPO)}


def run(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "helpers", *args], cwd=REPO, env=ENV,
                          capture_output=True, text=True, timeout=600)


def run_here(*args: str) -> subprocess.CompletedProcess:
    """`run` in this process (tests/conftest.py): for the fixture's set-up, error cases and repeat
    runs; each test also runs one command through `run`, as a user would."""
    return conftest_run_here(*args, env={"SIMSEARCH_BACKBONE": ENV["SIMSEARCH_BACKBONE"]})


def one_line_error(proc: subprocess.CompletedProcess, phrase: str) -> None:
    """A non-zero exit with exactly one line on stderr, saying `phrase`, and no traceback."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and phrase in lines[0], proc.stderr


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> dict:
    """A folder of real photos (two images each, not the sample set's files), a query variant of
    each of two photos kept outside it, and the manifest -> features -> index path run on it."""
    tmp = tmp_path_factory.mktemp("cli")
    sources = available_sources()[:6]
    if len(sources) < 4:
        pytest.skip("fewer than 4 bundled photos are installed here")
    folder, queries = tmp / "my photos", {}
    for src in sources:
        img = Image.open(source_path(src)).convert("RGB")
        img.thumbnail((160, 160))
        (folder / src.name).mkdir(parents=True)
        img.save(folder / src.name / "original.jpg")
        make_variant(img, src.name, 1)[0].save(folder / src.name / "edited.jpg")
        queries[src.name] = tmp / f"query_{src.name}.png"
        make_variant(img, src.name, 7)[0].save(queries[src.name])
    manifest, features, bundle = tmp / "manifest.csv", tmp / "features.npy", tmp / "bundle"
    # in this process; test_cli runs manifest and features, and the budget test index, as a user would
    for args in (("manifest", str(folder), "--out", str(manifest), "--quiet"),
                 ("features", str(manifest), "--out", str(features), "--quiet"),
                 ("index", str(manifest), str(features), "--out", str(bundle), "--quiet")):
        proc = run_here(*args)
        assert proc.returncode == 0, proc.stderr
    return {"tmp": tmp, "folder": folder, "queries": queries, "bundle": bundle, "index_stdout": proc.stdout}


def test_index_then_search_finds_the_same_photo_first(built):
    assert "indexed 12 vectors (1280-d, efficientnet_lite0) with 'IDMap,Flat', metric cosine" in built["index_stdout"]
    names = list(built["queries"])[:2]
    proc = run_here("search", str(built["bundle"]), *(str(built["queries"][n]) for n in names), "-k", "3")
    assert proc.returncode == 0, proc.stderr
    blocks = proc.stdout.split("query_")[1:]
    assert len(blocks) == 2
    for name, block in zip(names, blocks):
        rank1 = block.splitlines()[1].split(maxsplit=2)
        assert rank1[0] == "1" and 0 < float(rank1[1]) <= 1.0001
        assert f"/{name}/" in rank1[2], block           # the photo the query was made from
    proc = run("search", str(built["bundle"]), str(built["queries"][names[0]]), "-k", "2", "--json", "--mmap")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)          # stdout of a real process: nothing but the JSON
    assert [r["rank"] for r in results[0]["results"]] == [1, 2]
    assert all(f"/{names[0]}/" in r["path"] for r in results[0]["results"])   # both of its images
    scores = [r["score"] for r in results[0]["results"]]
    assert scores == sorted(scores, reverse=True)


def test_update_follows_the_folder_with_stable_ids(built, tmp_path):
    bundle = tmp_path / "bundle"
    subprocess.run(["cp", "-r", str(built["bundle"]), str(bundle)], check=True)
    folder = built["folder"]
    before = {r["path"]: r["id"] for r in _rows(bundle)}
    removed = next(iter(sorted(before)))
    moved = tmp_path / "moved.jpg"
    Path(removed).rename(moved)
    write_photo(folder / "new" / "new.png", seed=5, size=(96, 64))
    try:
        proc = run("update", str(bundle), str(folder), "--quiet")
        assert proc.returncode == 0, proc.stderr
        assert "1 added, 1 removed, 0 failed" in proc.stdout and "now holds 12 images" in proc.stdout
        after = {r["path"]: r["id"] for r in _rows(bundle)}
        assert removed not in after and str(folder / "new" / "new.png") in after
        assert all(before[p] == i for p, i in after.items() if p in before)
        assert after[str(folder / "new" / "new.png")] > max(before.values())
    finally:
        (folder / "new" / "new.png").unlink()
        moved.rename(removed)


def _rows(bundle: Path) -> list[dict]:
    from helpers import store
    b = store.load(bundle)
    return [{"path": str(b.manifest.abspath(e)), "id": e.id} for e in b.manifest]


def test_missing_corrupt_and_mismatched_bundles_give_one_line(built, tmp_path):
    query = str(next(iter(built["queries"].values())))
    one_line_error(run("search", str(tmp_path / "nowhere"), query), "no such bundle folder")
    broken = tmp_path / "broken"
    subprocess.run(["cp", "-r", str(built["bundle"]), str(broken)], check=True)
    index = broken / "index.faiss"
    index.write_bytes(index.read_bytes()[:1000])
    one_line_error(run_here("search", str(broken), query), "truncated or was replaced")
    one_line_error(run_here("update", str(broken), str(built["folder"])), "truncated or was replaced")

    other = tmp_path / "other"
    subprocess.run(["cp", "-r", str(built["bundle"]), str(other)], check=True)
    meta = json.loads((other / "bundle.json").read_text())
    meta["backbone"]["weights_id"] = "someone-elses-weights"
    (other / "bundle.json").write_text(json.dumps(meta))
    one_line_error(run_here("search", str(other), query), "was built with weights someone-elses-weights but")


def test_unreadable_queries_and_bad_options_give_one_line(built, tmp_path):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"\xff\xd8 not really a jpeg")
    one_line_error(run("search", str(built["bundle"]), str(junk)), "junk.jpg: ")
    one_line_error(run_here("search", str(built["bundle"]), str(tmp_path / "gone.jpg")), "gone.jpg: no such image file")
    query = str(next(iter(built["queries"].values())))
    one_line_error(run_here("search", str(built["bundle"]), query, "--param", "nprobe=4"), "do not fit this index")
    one_line_error(run_here("search", str(built["bundle"]), query, "-k", "0"), "ask for at least one result")
    one_line_error(run_here("index", str(tmp_path / "m.csv"), "f.npy", "--out", str(tmp_path / "b")), "no such manifest file")
    bogus = tmp_path / "w.pth"
    bogus.write_bytes(b"not a weights file")
    made_with = json.loads((built["bundle"] / "bundle.json").read_text())["backbone"]["backbone"]
    # a weights file is never silently ignored: refused for another backbone, checked for ResNet50
    one_line_error(run_here("search", str(built["bundle"]), query, "--weights", str(bogus)),
                   "takes no weights file" if made_with != "resnet50" else "w.pth")


def test_index_with_a_budget_and_a_recall_target_says_what_it_chose(built, tmp_path):
    manifest, features = str(built["tmp"] / "manifest.csv"), str(built["tmp"] / "features.npy")
    proc = run("index", manifest, features, "--out", str(tmp_path / "b"), "--budget", "1GB", "--recall", "0.9", "--quiet")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("recommended IDMap,Flat: ") and "Why: N=12 is small" in lines[0]
    assert lines[1] == "tuned on 12 of its own vectors: no parameter reaches recall 1.000 >= 0.9"
    one_line_error(run_here("index", manifest, features, "--out", str(tmp_path / "c"), "--budget", "1kB"),
                   "nothing fits '1kB' for 12 vectors")
    one_line_error(run_here("index", manifest, features, "--out", str(tmp_path / "c"), "--budget", "lots"),
                   "memory budget 'lots'")
    one_line_error(run_here("index", manifest, features, "--out", str(tmp_path / "c"), "--budget", "1GB",
                       "--factory", "IVF4,Flat"), "give --budget or --factory, not both")
    one_line_error(run_here("index", manifest, features, "--out", str(tmp_path / "c"), "--recall", "95"),
                   "--recall 95.0: give a recall@10 target between 0 and 1")
    assert not (tmp_path / "c").exists()
