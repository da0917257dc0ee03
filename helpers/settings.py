"""The run's settings, read in one place from environment variables.

| variable             | meaning                                              | default          |
| -------------------- | ---------------------------------------------------- | ---------------- |
| SIMSEARCH_DATA_DIR   | where sample data, manifests and caches live         | <repo>/data      |
| SIMSEARCH_DATASET    | `photo_variants`, `fashion_mnist`, or a folder path   | photo_variants   |
| SIMSEARCH_SCALE      | `quick` (CI, small sizes) or `full` (learners)        | full             |
| SIMSEARCH_BACKBONE   | `auto`, `resnet50`, `efficientnet_lite0`, `random_resnet50` | auto     |
| SIMSEARCH_WEIGHTS    | a local ResNet50 weights file (optional)             | unset            |
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
SCALES = ("quick", "full")
BUILTIN_DATASETS = ("photo_variants", "fashion_mnist")


class SettingsError(ValueError):
    """A setting has a value the course cannot use."""


@dataclass(frozen=True)
class Settings:
    data_dir: Path
    dataset: str
    scale: str
    backbone: str
    weights: Path | None

    @property
    def quick(self) -> bool:
        return self.scale == "quick"

    @property
    def image_dir(self) -> Path:
        """The folder of images the course indexes."""
        if self.dataset in BUILTIN_DATASETS:
            return self.data_dir / self.dataset
        return Path(self.dataset).expanduser().resolve()

    @property
    def dataset_name(self) -> str:
        return self.dataset if self.dataset in BUILTIN_DATASETS else self.image_dir.name

    @property
    def work_dir(self) -> Path:
        """Where artefacts made from the data set (manifest, features, indexes) are written."""
        return self.data_dir / "work" / f"{self.dataset_name}-{self.scale}"

    def describe(self) -> str:
        rows = [
            ("data set", f"{self.dataset_name} ({self.image_dir})"),
            ("scale", self.scale),
            ("backbone", self.backbone + (f" (weights file {self.weights})" if self.weights else "")),
            ("data folder", str(self.data_dir)),
        ]
        return "\n".join(f"{k:>12}: {v}" for k, v in rows)


def load_settings(env: dict | None = None) -> Settings:
    """Read the settings from `env` (default: the process environment) and check them."""
    env = os.environ if env is None else env
    scale = env.get("SIMSEARCH_SCALE", "full").strip().lower()
    if scale not in SCALES:
        raise SettingsError(f"SIMSEARCH_SCALE={scale!r}: use one of {', '.join(SCALES)}.")
    weights = env.get("SIMSEARCH_WEIGHTS") or None
    return Settings(
        data_dir=Path(env.get("SIMSEARCH_DATA_DIR") or REPO_ROOT / "data").expanduser().resolve(),
        dataset=env.get("SIMSEARCH_DATASET", "photo_variants").strip() or "photo_variants",
        scale=scale,
        backbone=env.get("SIMSEARCH_BACKBONE", "auto").strip().lower() or "auto",
        weights=Path(weights).expanduser() if weights else None,
    )
