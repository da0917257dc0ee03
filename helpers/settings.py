"""The run's settings, read in one place from environment variables.

| variable             | meaning                                              | default          |
| -------------------- | ---------------------------------------------------- | ---------------- |
| SIMSEARCH_DATA_DIR   | where sample data, manifests and caches live         | <repo>/data      |
| SIMSEARCH_DATASET    | `photo_variants`, `fashion_mnist`, or a folder path   | photo_variants   |
| SIMSEARCH_SCALE      | `quick` (CI, small sizes) or `full` (learners)        | full             |
| SIMSEARCH_BACKBONE   | `auto` or a name in `helpers.backbones.REGISTRY`     | auto             |
| SIMSEARCH_WEIGHTS    | a local ResNet50 weights file (optional)             | unset            |
| SIMSEARCH_HAYSTACK   | `synthetic` distractors or `real` images (helpers.haystack) | synthetic |

A relative path in any of them is read from the project root: the checkout holding `helpers/`
(with its pyproject.toml), or, where the package is installed from a wheel (Colab, Kaggle:
helpers.bootstrap), the folder Python started in. So in a checkout a setting means the same
folder in Jupyter (which runs in `notebooks/`), on the command line and under `make`, whatever
the current folder. The backbone's name is checked where it is loaded,
against the registry (`helpers.backbones.load_backbone`), so that adding a backbone is one entry.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

_CHECKOUT = Path(__file__).resolve().parent.parent
REPO_ROOT = _CHECKOUT if (_CHECKOUT / "pyproject.toml").is_file() else Path.cwd()
SCALES = ("quick", "full")
BUILTIN_DATASETS = ("photo_variants", "fashion_mnist")
HAYSTACKS = ("synthetic", "real")


class SettingsError(ValueError):
    """A setting has a value the course cannot use."""


def project_path(value: str | Path) -> Path:
    """A path setting as an absolute path: `~` expanded, a relative path read from REPO_ROOT."""
    path = Path(value).expanduser()
    return (path if path.is_absolute() else REPO_ROOT / path).resolve()


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    dataset: str
    scale: str
    backbone: str
    weights: Path | None
    haystack: str = "synthetic"

    @property
    def quick(self) -> bool:
        return self.scale == "quick"

    @property
    def is_sample(self) -> bool:
        """True for a built-in sample data set, False for the user's own folder. Notebooks run
        the checks that only hold for the sample data (no duplicates, labels known) only when
        this is True, and say so otherwise."""
        return self.dataset in BUILTIN_DATASETS

    @property
    def image_dir(self) -> Path:
        """The folder of images the course indexes."""
        if self.is_sample:
            return self.data_dir / self.dataset
        return project_path(self.dataset)

    @property
    def dataset_name(self) -> str:
        return self.dataset if self.is_sample else self.image_dir.name

    @property
    def work_dir(self) -> Path:
        """Where artefacts made from the data set (manifest, features, indexes) are written."""
        return self.data_dir / "work" / f"{self.dataset_name}-{self.scale}"

    def describe(self) -> str:
        kind = "sample data set" if self.is_sample else "your folder"
        rows = [
            ("data set", f"{self.dataset_name}, {kind} ({self.image_dir})"),
            ("scale", self.scale),
            ("backbone", self.backbone + (f" (weights file {self.weights})" if self.weights else "")),
            ("haystack", self.haystack),
            ("data folder", str(self.data_dir)),
        ]
        return "\n".join(f"{k:>12}: {v}" for k, v in rows)


def _choice(env, name: str, default: str, allowed: tuple[str, ...]) -> str:
    value = env.get(name, default).strip().lower() or default
    if value not in allowed:
        raise SettingsError(f"{name}={value!r} is not a setting the course knows: "
                            f"use one of {', '.join(allowed)}.")
    return value


def load_settings(env: dict | None = None) -> Settings:
    """Read the settings from `env` (default: the process environment) and check them."""
    env = os.environ if env is None else env
    weights = env.get("SIMSEARCH_WEIGHTS", "").strip()
    data_dir = env.get("SIMSEARCH_DATA_DIR", "").strip()
    return Settings(
        data_dir=project_path(data_dir or "data"),
        dataset=env.get("SIMSEARCH_DATASET", "").strip() or "photo_variants",
        scale=_choice(env, "SIMSEARCH_SCALE", "full", SCALES),
        backbone=env.get("SIMSEARCH_BACKBONE", "").strip().lower() or "auto",   # load_backbone checks it
        weights=project_path(weights) if weights else None,
        haystack=_choice(env, "SIMSEARCH_HAYSTACK", "synthetic", HAYSTACKS),
    )
