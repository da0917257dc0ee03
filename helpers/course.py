"""The set-up that notebooks 04_ivf to 11_scaling_out start with, in one call (03_flat_index writes
it out step by step): settings, manifest, backbone, features, and the course database."""

from __future__ import annotations

from typing import NamedTuple

from .backbones import Backbone, load_backbone
from .database import CourseDatabase
from .datasets import ensure_dataset
from .features import FeatureSet, load_or_extract
from .manifest import Manifest, refresh
from .settings import Settings, load_settings


class Course(NamedTuple):
    """What `setup` made, in the order notebook 03_flat_index makes it."""
    settings: Settings
    manifest: Manifest
    backbone: Backbone
    features: FeatureSet
    db: CourseDatabase


def setup(env: dict | None = None) -> Course:
    """Read the settings (`env`: default the process environment), build or refresh the data set's
    manifest, load the backbone, extract the features or reuse their cache, and build the course
    database, printing the settings and what the features came from."""
    settings = load_settings(env)
    print(settings.describe())
    manifest = refresh(ensure_dataset(settings), settings.work_dir / "manifest.csv", progress=False).manifest
    backbone = load_backbone(settings.backbone, settings.weights)
    features, status = load_or_extract(manifest, backbone, settings.work_dir, progress=False)
    print(f"features: {status}; {features.summary()}")
    return Course(settings, manifest, backbone, features,
                  CourseDatabase.from_settings(settings, features, manifest, backbone))
