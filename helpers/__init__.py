"""Helpers for the image similarity search course: one small module per pipeline stage.

folder -> manifest -> features -> index -> results -> display. The module map, layer by layer, is
`LAYERS` below (docs/design.md says what each module holds): a module imports only from its own
layer or those below it (tests/test_layers.py keeps it so).
"""

__version__ = "0.1.0"

LAYERS = (
    ("settings", "fileio", "images", "indexes", "blas", "devices", "bootstrap"),   # 1: no course module below them
    ("manifest", "datasets", "backbones", "distractors"),             # 2: data, models, the haystack model
    ("features", "decoding", "presentation"),                         # 3: vectors out of images; showing them
    ("evaluate", "scale_ray", "scale_milvus", "runner", "practice", "assignments", "site"),  # 4: measuring; past one machine; tools
    ("tuning", "explorer", "database", "haystack", "gpu", "course"),  # 5: what the notebooks drive
    ("store",),                                                       # 6: bundles
    ("__main__",),                                                    # 7: the command line
)

from . import blas as _blas
from . import devices as _devices

_devices.allow_two_openmp_runtimes()   # macOS: faiss-cpu and torch each bring an OpenMP runtime
_blas.choose_kernels()   # before anything imports faiss: OpenBLAS reads it once, when it loads
_blas.check()
