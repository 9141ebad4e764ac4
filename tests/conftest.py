"""Test configuration: MPI-aware collection and collective garbage collection.

* Tests marked ``serial`` are skipped when running on more than one rank.
* Garbage is collected at a barrier after every test, because destroying
  PETSc objects is collective.
* On ranks > 0 the terminal report is silenced (rank 0 reports); a failure on
  another rank is still printed to stderr, and mpirun's exit code is non-zero.
"""

import gc
import sys

import pytest
from mpi4py import MPI


@pytest.hookimpl(trylast=True)
def pytest_configure(config):
    if MPI.COMM_WORLD.rank > 0:
        reporter = config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            config.pluginmanager.unregister(reporter)


def pytest_runtest_logreport(report):
    comm = MPI.COMM_WORLD
    if comm.rank > 0 and report.failed:
        print(f"[rank {comm.rank}] FAILED {report.nodeid} ({report.when})\n{report.longreprtext}", file=sys.stderr)


def pytest_collection_modifyitems(config, items):
    if MPI.COMM_WORLD.size > 1:
        skip = pytest.mark.skip(reason=f"serial-only test, running on {MPI.COMM_WORLD.size} ranks")
        for item in items:
            if "serial" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(autouse=True)
def _collective_gc():
    yield
    gc.collect()
    MPI.COMM_WORLD.Barrier()


@pytest.fixture
def comm():
    """The world communicator."""
    return MPI.COMM_WORLD


@pytest.fixture
def shared_tmp_path(tmp_path):
    """A temporary directory that is the same on every rank (rank 0's)."""
    import pathlib

    return pathlib.Path(MPI.COMM_WORLD.bcast(str(tmp_path), root=0))
