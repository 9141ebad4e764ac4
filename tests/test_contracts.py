"""Contracts of the new layout: Misfit base class, state storage, run building without leaks, MPI helpers,
the training step, field spaces, the projection (serial and under ``mpirun -n 2``)."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from femnpde import _mpi
from femnpde.app.build import build_run
from femnpde.app.schema import ConfigError
from femnpde.app.scenarios import paper_problem
from femnpde.app.trainer import FirstOrderStep, LBFGSStep, make_step
from femnpde.app.validation import validate
from femnpde.fem.projection import QuadratureProjector
from femnpde.fem.solver import ThetaSolver
from femnpde.fem.storage import MemoryStorage
from femnpde.io.fields import write_fields
from femnpde.obs.misfit import L2Misfit, Misfit
from femnpde.obs.points import PointMisfit

COMM = MPI.COMM_WORLD
TINY = {"mesh": {"cells": [4, 8]}, "time": {"n_steps": 3}, "network": {"neurons": 4}}


# ---------------------------------------------------------------- schedules
def test_schedule_options_reach_the_schedule():
    """threshold_mode, cooldown and eps of [optimizer.schedule] are passed through, not dropped."""
    cfg = validate({"optimizer": {"kind": "gd", "schedule": {"kind": "plateau", "threshold_mode": "abs",
                                                             "cooldown": 3, "eps": 1e-3, "factor": 0.5}}})
    step = make_step(cfg, lr=0.1)
    assert isinstance(step, FirstOrderStep)
    s = step.schedule
    assert (s.threshold_mode, s.cooldown, s.eps, s.factor) == ("abs", 3, 1e-3, 0.5)
    cosine = make_step(validate({"optimizer": {"schedule": {"kind": "cosine", "T_max": 9, "eta_min": 1e-4}}}), 0.1)
    assert (cosine.schedule.T_max, cosine.schedule.eta_min) == (9, 1e-4)
    assert make_step(validate({"optimizer": {"schedule": {"kind": "none"}}}), 0.1).schedule is None
    assert isinstance(make_step(validate({"optimizer": {"kind": "lbfgs", "lbfgs_memory": 4}}), 0.1), LBFGSStep)


# ---------------------------------------------------------------- storage
def test_storage_to_array_is_a_read_only_view_of_every_level():
    s = MemoryStorage(3, 2)
    s.store(0, np.array([1.0, 2.0]))
    with pytest.raises(RuntimeError, match="levels \\[1, 2\\]"):
        s.to_array()
    s.store(1, np.array([3.0, 4.0]))
    s.store(2, np.array([5.0, 6.0]))
    a = s.to_array()
    np.testing.assert_array_equal(a, [[1, 2], [3, 4], [5, 6]])
    with pytest.raises(ValueError):
        a[0, 0] = 9.0


# ---------------------------------------------------------------- misfits
def test_misfits_share_one_base_class():
    assert issubclass(L2Misfit, Misfit) and issubclass(PointMisfit, Misfit)
    with pytest.raises(TypeError):
        Misfit()
    for name in ("value", "relative_rmse", "relative_max_error"):  # implemented once, in the base class
        assert getattr(L2Misfit, name) is getattr(Misfit, name) is getattr(PointMisfit, name), name


def test_a_user_misfit_plugs_into_the_reduced_functional():
    """A misfit defined outside femnpde (the mean of u at each level) gives a Taylor-consistent gradient."""
    from femnpde.model.network import ShallowNetwork
    from femnpde.model.reduced import NetworkSource, ReducedFunctional

    problem = paper_problem("heat", nx=4, ny=8, n_steps=3)

    class MeanMisfit(Misfit):
        def __init__(self, problem, target):
            self.problem, self.comm, self.target = problem, problem.comm, target
            self.w = np.full(problem.time.n_steps + 1, problem.time.dt)
            self.n_global = problem.V.dofmap.index_map.size_global

        def _residual(self, n, u_owned):
            return np.array([self.comm.allreduce(float(u_owned.sum())) / self.n_global - self.target])

        def _local_value(self, n, u_owned):  # the square of the global mean, counted once (on rank 0)
            r = self._residual(n, u_owned)[0]
            return r * r if self.comm.rank == 0 else 0.0

        def add_gradient(self, n, u_owned, out):
            r = self._residual(n, u_owned)[0]
            out += self.w[n] * r / self.n_global

        def max_abs_data(self):
            return abs(self.target)

        def destroy(self):
            pass

    solver = ThetaSolver(problem, "test_usermisfit_")
    with MeanMisfit(problem, 0.05) as misfit:
        net = ShallowNetwork(4, 2, seed=3)
        rf = ReducedFunctional(solver, NetworkSource(problem, net), misfit)
        theta = net.params.copy()
        J, dJ = rf.value_and_gradient(theta)
        d = np.random.default_rng(0).standard_normal(theta.size)
        h = 1e-6
        fd = (rf(theta + h * d) - rf(theta - h * d)) / (2 * h)
        assert abs(fd - dJ @ d) <= 1e-6 * max(1.0, abs(fd))
        assert misfit.relative_rmse(J) == pytest.approx(np.sqrt(J) / 0.05)
    solver.destroy()


# ---------------------------------------------------------------- build_run
def test_build_run_destroys_the_solver_when_a_later_step_fails(monkeypatch, shared_tmp_path):
    destroyed = []
    original = ThetaSolver.destroy

    def spy(self):
        destroyed.append(self)
        original(self)

    monkeypatch.setattr(ThetaSolver, "destroy", spy)
    bad = shared_tmp_path / "bad.npz"
    if COMM.rank == 0:
        np.savez(bad, values=np.zeros((2, 1)))  # 2 levels, the run has 4
    COMM.Barrier()
    cfg = {**TINY, "data": {"kind": "file", "path": str(bad)},
           "observation": {"kind": "sensors", "sensors": [[0.25, 0.5]]}}
    with pytest.raises(ConfigError, match="data.path"):
        build_run(cfg, COMM)
    assert len(destroyed) == 1


def test_run_is_a_context_manager_and_data_solve_leaves_no_states():
    with build_run(TINY, COMM) as run:
        assert isinstance(run.misfit, Misfit)
        with pytest.raises(RuntimeError, match="no state stored"):
            run.rf.states.load(1)  # the synthetic-data solve does not leave its states behind
        J = run.rf(run.network.params)
        assert np.isfinite(J) and run.rf.states.to_array().shape[0] == 4
        destroyed = []
        run.solver.destroy = lambda: destroyed.append("solver")  # noqa: B023 (checked below)
        run.misfit.destroy = lambda: destroyed.append("misfit")
    assert destroyed == ["solver", "misfit"]


# ---------------------------------------------------------------- _mpi
def test_on_root_runs_once_broadcasts_and_raises_everywhere():
    calls = []

    def fn():
        calls.append(1)
        return {"rank": COMM.rank}

    assert _mpi.on_root(COMM, fn) == {"rank": 0}
    assert len(calls) == (1 if COMM.rank == 0 else 0)
    assert _mpi.on_root(COMM, fn, broadcast=False) == ({"rank": 0} if COMM.rank == 0 else None)

    def fail():
        raise ValueError("cannot read x.csv")

    with pytest.raises(ValueError, match="cannot read x.csv"):
        _mpi.on_root(COMM, fail)

    class Local(Exception):
        def __reduce__(self):
            raise TypeError("not picklable")

    def fail_unpicklable():
        raise Local("odd")

    with pytest.raises(Local if COMM.rank == 0 else RuntimeError, match="odd"):
        _mpi.on_root(COMM, fail_unpicklable, "reading")


def test_bounding_box_tags_and_collective_check():
    x = np.array([[COMM.rank, -COMM.rank], [0.5, 0.5]], dtype=float)
    lo, hi = _mpi.bounding_box(COMM, x)
    np.testing.assert_array_equal(lo, [0.0, -(COMM.size - 1)])
    np.testing.assert_array_equal(hi, [max(COMM.size - 1, 0.5), 0.5])
    lo, hi = _mpi.bounding_box(COMM, np.empty((0, 2)) if COMM.rank == 0 else x)
    assert lo.shape == (2,)

    class Tags:
        values = np.array([COMM.rank + 1, 7])

    assert _mpi.tags_present(Tags, COMM) == sorted({*range(1, COMM.size + 1), 7})
    assert _mpi.tags_present(None, COMM) == []
    with pytest.raises(ValueError, match="bad on the last rank"):
        _mpi.collective_check(COMM, "bad on the last rank" if COMM.rank == COMM.size - 1 else None)


def test_run_agreed_raises_on_every_rank_and_keeps_the_ranks_in_step():
    """A step that fails on the last rank only: that rank raises its own error, the others a RuntimeError
    naming what ran, before the collective the failed rank would not reach; the ranks stay in step."""
    done = []

    def steps(fail_at: int | None):
        for k in range(3):
            if k == fail_at and COMM.rank == COMM.size - 1:
                raise MemoryError(f"injected in step {k}")
            done.append(k)
            yield
            COMM.allreduce(k)  # the collective after local work

    _mpi.run_agreed(COMM, steps(None), "three steps")
    assert done == [0, 1, 2]
    done.clear()
    last = COMM.rank == COMM.size - 1
    with pytest.raises(MemoryError if last else RuntimeError,
                       match="injected in step 1" if last else "the set-up failed on another rank"):
        _mpi.run_agreed(COMM, steps(1), "the set-up")
    assert done == ([0] if last else [0, 1])
    assert COMM.allreduce(1) == COMM.size  # still in step
    _mpi.run_agreed(None, iter([None, None]), "serial")  # comm None: serial
    if COMM.size > 1:
        uneven = iter([None] * (1 + COMM.rank))  # rank r yields r + 1 times
        with pytest.raises(RuntimeError, match="ranks reached different steps"):
            _mpi.run_agreed(COMM, uneven, "uneven")


# ---------------------------------------------------------------- fields, projection
def test_write_fields_uses_the_declared_space(shared_tmp_path):
    problem = paper_problem("heat", nx=4, ny=8, n_steps=1)  # P1 source: G and V have the same size
    n_local = problem.V.dofmap.index_map.size_local + problem.V.dofmap.index_map.num_ghosts
    g = np.ones((2, problem.n_owned_source))
    if problem.n_owned_source != n_local:
        with pytest.raises(ValueError, match="declare the space"):
            write_fields(shared_tmp_path / "f", problem, {"g": g}, problem.time.times)
    with pytest.raises(ValueError, match="spaces names fields"):
        write_fields(shared_tmp_path / "f", problem, {"g": g}, problem.time.times, spaces={"h": "G"})
    with pytest.raises(ValueError, match="'W' is not valid"):
        write_fields(shared_tmp_path / "f", problem, {"g": g}, problem.time.times, spaces={"g": "W"})
    files = write_fields(shared_tmp_path / "f", problem, {"g": g}, problem.time.times, spaces={"g": "G"})
    assert [f.name for f in files] == ["f_g.bp"]


def test_quadrature_projector_needs_a_prefix_and_is_a_context_manager():
    problem = paper_problem("heat", nx=2, ny=4, n_steps=1, source="quadrature")
    with pytest.raises(ValueError, match="petsc_options_prefix"):
        QuadratureProjector(problem, "")
    with QuadratureProjector(problem, "test_cm_projection_") as proj:
        assert proj.ksp.getOptionsPrefix() == "test_cm_projection_"
    assert proj.ksp.handle == 0


def test_public_api_resolves():
    import femnpde

    for name in femnpde.__all__:
        assert getattr(femnpde, name) is not None, name
    assert {"Misfit", "StateStorage", "Adam", "load_config", "build_run", "TrainingLoop"} <= set(femnpde.__all__)
