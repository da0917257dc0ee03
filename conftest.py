"""How `make test` (`pytest -n 2`, pytest-xdist) shares the work between its workers. At the
repository's root so that it holds however pytest is started here (`pytest -n 2 notebooks`
too); the tests' own fixtures are in tests/conftest.py."""

from __future__ import annotations

import os

import pytest


def xdist_scope(nodeid: str) -> str:
    """The unit a worker gets: all the notebooks together, since each builds on what the ones
    before it wrote to data/ and so they must run in order on one worker; otherwise the test
    file, whose module fixtures are then built once."""
    path = nodeid.split("::", 1)[0]
    return "notebooks" if path.endswith(".ipynb") else path


def pytest_configure(config):
    """With workers, OpenMP threads wait for work asleep, not spinning: two processes' spinning
    Faiss and torch threads on a 2-core machine made `make test` 1.5x slower (499 s against
    324 s measured here), notebook 05's k-means cell 14x. Workers and the Jupyter kernels they
    start inherit the setting."""
    if config.getoption("numprocesses", None):
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    # Milvus Lite's gRPC core logs keepalive notices ("too_many_pings") straight to file
    # descriptor 2, at any later moment: in a test of what another command prints on stderr,
    # that is another test's noise.
    os.environ.setdefault("GRPC_VERBOSITY", "NONE")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """xdist's load-by-scope scheduling with `xdist_scope`'s units (its `--dist loadgroup` marks
    do not group under pytest 9.2), for the default `--dist load`; any other `--dist` as asked."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksInOrder(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:   # xdist's hook for what makes a unit (pinned 3.8.0)
            return xdist_scope(nodeid)

    return NotebooksInOrder(config, log)
