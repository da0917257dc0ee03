"""helpers.settings: one reading of the environment, relative paths from the project root."""

import pytest

from helpers.settings import REPO_ROOT, SettingsError, load_settings


def test_defaults():
    s = load_settings({})
    assert (s.scale, s.backbone, s.dataset, s.weights) == ("full", "auto", "photo_variants", None)
    assert s.data_dir == REPO_ROOT / "data" and s.image_dir == REPO_ROOT / "data" / "photo_variants"
    assert s.is_sample and "sample data set" in s.describe()


def test_relative_paths_are_read_from_the_project_root_whatever_the_current_folder(tmp_path, monkeypatch):
    env = {"SIMSEARCH_DATASET": "my photos", "SIMSEARCH_DATA_DIR": "scratch/data",
           "SIMSEARCH_WEIGHTS": "weights/fine_tuned.pth"}
    monkeypatch.chdir(tmp_path)                       # as the command line would be, elsewhere
    here = load_settings(env)
    monkeypatch.chdir(REPO_ROOT / "notebooks")        # as Jupyter is
    there = load_settings(env)
    assert here == there
    assert here.image_dir == REPO_ROOT / "my photos"
    assert here.data_dir == REPO_ROOT / "scratch" / "data"
    assert here.weights == REPO_ROOT / "weights" / "fine_tuned.pth"
    assert not here.is_sample and "your folder" in here.describe()
    assert here.work_dir == REPO_ROOT / "scratch" / "data" / "work" / "my photos-full"


def test_home_and_absolute_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    s = load_settings({"SIMSEARCH_DATASET": "~/Pictures/holidays", "SIMSEARCH_WEIGHTS": str(tmp_path / "w.pth")})
    assert s.image_dir == tmp_path / "Pictures" / "holidays" and s.dataset_name == "holidays"
    assert s.weights == tmp_path / "w.pth"


@pytest.mark.parametrize("name, value", [("SIMSEARCH_SCALE", "medium"), ("SIMSEARCH_HAYSTACK", "paper")])
def test_unknown_values_are_refused_by_name(name, value):
    with pytest.raises(SettingsError) as err:
        load_settings({name: value})
    message = str(err.value)
    assert message.startswith(f"{name}={value!r}") and "use one of" in message
    assert "\n" not in message


def test_values_are_trimmed_and_case_folded_and_empty_means_default():
    s = load_settings({"SIMSEARCH_SCALE": " Quick ", "SIMSEARCH_BACKBONE": "", "SIMSEARCH_DATASET": " ",
                       "SIMSEARCH_WEIGHTS": ""})
    assert (s.scale, s.backbone, s.dataset, s.weights) == ("quick", "auto", "photo_variants", None)
    assert s.quick


def test_the_process_environment_is_read_when_no_mapping_is_given(monkeypatch):
    monkeypatch.setenv("SIMSEARCH_SCALE", "quick")
    assert load_settings().scale == "quick"
    monkeypatch.setenv("SIMSEARCH_SCALE", "full")
    assert load_settings().scale == "full"
