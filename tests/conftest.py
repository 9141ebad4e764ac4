"""Test configuration: MPI-aware collection and collective garbage collection.

* Tests marked ``serial`` are skipped when running on more than one rank.
* Garbage is collected at a barrier after every test, because destroying
  PETSc objects is collective.
* On ranks > 0 the terminal report is silenced (rank 0 reports); a failure on
  another rank is still printed to stderr, and mpirun's exit code is non-zero.

Helpers shared by several test modules (``from conftest import ...``):
:func:`write_on_root` (a file every rank then reads), :func:`history_columns`
(a training history without its wall times), :func:`before_evaluation`
(a hook before the n-th loss evaluation of a training run) and
:func:`refactorise_every_step` (a solver that forgets its factorisation at
each step, for checks that count factorisations) and
:func:`numeric_factorisations` (PETSc's count of numeric LU and Cholesky
factorisations so far) and :func:`network_fit` (the loss of a shallow network fitted to a
forward solve's states, the set-up of the solver tests).
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


# ---------------------------------------------------------------- helpers
def write_on_root(path, text: str):
    """Write ``text`` to ``path`` on rank 0, then wait for every rank (all read it next); return ``path``."""
    if MPI.COMM_WORLD.rank == 0:
        path.write_text(text)
    MPI.COMM_WORLD.Barrier()
    return path


def history_columns(path) -> dict:
    """The columns of a training history (``history.csv``) as arrays, without the wall times."""
    import numpy as np

    from femnpde.io.history import History

    return {k: np.asarray(v) for k, v in History.read(path).items() if k != "wall_time"}


def before_evaluation(monkeypatch, hook) -> None:
    """Make the runs of ``femnpde.app.training`` call ``hook(n, run)`` before their n-th loss evaluation.

    ``n`` counts the calls of ``run.rf.value_and_gradient`` from 1; the hook may
    raise (an injected failure) or change the run (e.g. its solver options).
    """
    import femnpde.app.training as training

    real_build = training.build_run

    def build(*args, **kwargs):
        run = real_build(*args, **kwargs)
        real = run.rf.value_and_gradient
        calls = {"n": 0}

        def evaluate(theta):
            calls["n"] += 1
            hook(calls["n"], run)
            return real(theta)

        run.rf.value_and_gradient = evaluate
        return run

    monkeypatch.setattr(training, "build_run", build)


def refactorise_every_step(solver) -> None:
    """Make ``solver`` (a ThetaSolver) reassemble and refactorise its step matrix at every step."""
    real = solver._set_step

    def set_step(*args, **kwargs):
        solver._A_current = False
        return real(*args, **kwargs)

    solver._set_step = set_step


def numeric_factorisations() -> int:
    """Numeric LU and Cholesky factorisations logged so far (call ``PETSc.Log.begin()`` first).

    The default for a symmetric constant step is a Cholesky factorisation (on several ranks in 2D,
    of each rank's interior: :mod:`femnpde.fem.schur_dd`), otherwise an LU.
    """
    from petsc4py import PETSc

    return sum(int(PETSc.Log.Event(name).getPerfInfo()["count"]) for name in ("MatLUFactorNum", "MatCholFctrNum"))


def network_fit(problem, target, prefix: str, options=None, neurons: int = 6, seed: int = 5, **solver_kwargs):
    """The L2 loss of a shallow network fitted to the states that the source ``target(t, x)`` drives.

    The data come from a forward solve with the default solver (prefix ``prefix + "data_"``); the
    loss solves with ``options`` and ``solver_kwargs`` (e.g. ``state_storage``) under ``prefix``.

    Returns:
        ``(rf, theta)``: the :class:`~femnpde.model.reduced.ReducedFunctional` and the network's
        initial parameters.  Destroy ``rf.solver`` after use.
    """
    from femnpde.fem.solver import ThetaSolver
    from femnpde.model.network import ShallowNetwork
    from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
    from femnpde.obs.misfit import L2Misfit

    ref = ThetaSolver(problem, prefix + "data_")
    data = ref.forward(FunctionSource(problem, target).values()).array[:, : problem.n_owned].copy()
    ref.destroy()
    solver = ThetaSolver(problem, prefix, options, **solver_kwargs)
    net = ShallowNetwork(neurons, problem.mesh.geometry.dim, seed=seed)
    return ReducedFunctional(solver, NetworkSource(problem, net), L2Misfit(problem, data)), net.params.copy()
