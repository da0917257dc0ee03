"""Helpers for the image similarity search course: one small module per pipeline stage.

folder -> manifest -> features -> index -> results -> display; see DESIGN.md.
"""

__version__ = "0.1.0"

from . import blas as _blas

_blas.choose_kernels()   # before anything imports faiss: OpenBLAS reads it once, when it loads
_blas.check()
