"""Bounded-memory state storage (checkpointing): schedule driver and exact gradients."""

import os
import tracemalloc

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.fem.checkpointing import CheckpointStorage
from femnpde.fem.storage_plan import parse_bytes, plan_storage, validate_state_storage
from femnpde.fem.storage import MemoryStorage, make_state_storage
from conftest import write_on_root


class FakeStepper:
    """u^n = sin(u^{n-1} + n / 100) + (u^{n-1})^2 / 10: deterministic, nonlinear, bounded, allocation-free."""

    def __init__(self, n_local: int) -> None:
        self.calls = 0
        self._work = np.empty(n_local)
        self._tmp = np.empty(n_local)

    def step(self, n: int, u_prev: np.ndarray) -> np.ndarray:
        self.calls += 1
        np.square(u_prev, out=self._tmp)
        self._tmp *= 0.1
        np.add(u_prev, n / 100.0, out=self._work)  # u_prev may be self._work: tmp is taken first
        np.sin(self._work, out=self._work)
        self._work += self._tmp
        return self._work


def _reference(n_steps, n_local):
    step = FakeStepper(n_local)
    u = [np.linspace(0.0, 1.0, n_local)]
    for n in range(1, n_steps + 1):
        u.append(step.step(n, u[-1]).copy())
    return u


def _sweep(storage, stepper, n_steps, n_local):
    """The solver's access pattern: store 0..N forward, then load (n-1, n) for n = N..1."""
    u0 = np.linspace(0.0, 1.0, n_local)
    storage.attach(stepper) if hasattr(storage, "attach") else None
    storage.store(0, u0)
    u = u0
    for n in range(1, n_steps + 1):
        u = stepper.step(n, u)
        storage.store(n, u)
    pairs = []
    for n in range(n_steps, 0, -1):
        prev = storage.load(n - 1).copy()
        cur = storage.load(n).copy()
        pairs.append((n, prev, cur))
    return pairs


@pytest.mark.serial
@pytest.mark.parametrize("ram,disk", [(1, 0), (3, 0), (8, 0), (2, 3), (0, 4)])
def test_schedule_serves_exact_states(tmp_path, ram, disk):
    n_steps, n_local = 64, 37
    ref = _reference(n_steps, n_local)
    plan = plan_storage({"snapshots": max(ram, 1), "disk_snapshots": disk, "directory": str(tmp_path)}
                        if ram else {"budget": 8 * n_local * 3 + 8 * n_local, "disk_snapshots": disk,
                                     "directory": str(tmp_path)}, n_steps, n_local)
    storage = CheckpointStorage(plan)
    stepper = FakeStepper(n_local)
    pairs = _sweep(storage, stepper, n_steps, n_local)
    for n, prev, cur in pairs:
        assert np.array_equal(prev, ref[n - 1]) and np.array_equal(cur, ref[n]), n
    # The schedule's recomputation factor is what was run.
    assert stepper.calls == plan.forward_steps
    assert plan.recomputation_factor >= 1.0
    # Memory accounting: never more than predicted.
    assert storage.peak_bytes <= plan.predicted_peak_bytes
    if disk:
        assert storage.directory is not None and storage.directory.startswith(str(tmp_path))
    d = storage.directory
    storage.close()
    if d is not None:
        assert not os.path.exists(d)


@pytest.mark.serial
def test_snapshots_8_of_64_memory_measured():
    """K = 8 for 64 steps: traced peak <= 1/4 of all-in-memory and within 20 % of the prediction."""
    n_steps, n_local = 64, 20_000
    plan = plan_storage({"snapshots": 8}, n_steps, n_local)
    assert plan.predicted_peak_bytes <= plan.memory_bytes / 4

    def measure(storage):
        stepper = FakeStepper(n_local)
        u0 = np.linspace(0.0, 1.0, n_local)
        tracemalloc.start()
        base = tracemalloc.get_traced_memory()[0]
        _sweep_no_copy(storage, stepper, n_steps, u0)
        peak = tracemalloc.get_traced_memory()[1] - base
        tracemalloc.stop()
        return peak

    mem = measure(MemoryStorage(n_steps + 1, n_local))
    ck = measure(CheckpointStorage(plan))
    assert mem >= 0  # MemoryStorage preallocates: its states were allocated before tracing
    full = plan.memory_bytes
    assert ck <= full / 4, (ck, full)
    assert abs(ck - plan.predicted_peak_bytes) <= 0.2 * plan.predicted_peak_bytes, (ck, plan)
    assert storage_peak(plan, n_local) == plan.predicted_peak_bytes


def storage_peak(plan, n_local):
    storage = CheckpointStorage(plan)
    _sweep_no_copy(storage, FakeStepper(n_local), plan.n_steps, np.linspace(0.0, 1.0, n_local))
    return storage.peak_bytes


def _sweep_no_copy(storage, stepper, n_steps, u0):
    if hasattr(storage, "attach"):
        storage.attach(stepper)
    storage.store(0, u0)
    u = u0
    for n in range(1, n_steps + 1):
        u = stepper.step(n, u)
        storage.store(n, u)
    for n in range(n_steps, 0, -1):
        storage.load(n - 1)
        storage.load(n)


@pytest.mark.serial
def test_out_of_order_and_exhausted_are_errors():
    n_steps, n_local = 16, 5
    storage = CheckpointStorage(plan_storage({"snapshots": 2}, n_steps, n_local))
    stepper = FakeStepper(n_local)
    storage.attach(stepper)
    with pytest.raises(RuntimeError, match="adjoint sweep only"):
        storage.load(3)
    storage.store(0, np.zeros(n_local))
    with pytest.raises(RuntimeError, match="out of order"):
        storage.store(5, np.zeros(n_local))
    u = np.zeros(n_local)
    for n in range(1, n_steps + 1):
        u = stepper.step(n, u)
        storage.store(n, u)
    storage.load(n_steps - 1)
    storage.load(4)
    with pytest.raises(RuntimeError, match="backwards in time"):
        storage.load(10)


@pytest.mark.serial
def test_specification_errors():
    assert parse_bytes("2GB") == 2 * 10**9 and parse_bytes("1 GiB") == 2**30 and parse_bytes(4096) == 4096
    with pytest.raises(ValueError, match="budget.*unit"):
        parse_bytes("2 parsecs")
    with pytest.raises(ValueError, match="unknown value 'disk'"):
        validate_state_storage("disk")
    with pytest.raises(ValueError, match="unknown key 'snapshot'"):
        validate_state_storage({"snapshot": 8})
    with pytest.raises(ValueError, match="exactly one"):
        validate_state_storage({"snapshots": 8, "budget": "1GB"})
    with pytest.raises(ValueError, match="snapshots: expected an integer >= 1"):
        validate_state_storage({"snapshots": 0})
    with pytest.raises(ValueError, match="minimum is"):
        plan_storage({"budget": "1KB"}, 64, 10_000)
    # A budget that holds every level is the memory storage.
    assert plan_storage({"budget": "1GB"}, 64, 1000).kind == "memory"
    plan = plan_storage({"budget": 8 * 1000 * 11}, 64, 1000)
    assert plan.kind == "checkpointing" and plan.snapshots_in_ram == 8
    assert "recomputation factor" in plan.describe()


def test_plan_is_the_same_on_every_rank(comm):
    n_local = 100 + 37 * comm.rank
    storage, plan = make_state_storage({"budget": 8 * 150 * 12}, 65, n_local, comm)
    plans = comm.allgather((plan.snapshots_in_ram, plan.forward_steps))
    assert all(p == plans[0] for p in plans)
    assert isinstance(storage, CheckpointStorage)


def _paper_rf(pde, storage, n_steps, theta=1.0, weights=None, prefix="ckpt_"):
    from femnpde.app.scenarios import paper_problem, target_source
    from femnpde.fem.solver import ThetaSolver
    from femnpde.model.network import ShallowNetwork
    from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
    from femnpde.obs.misfit import L2Misfit

    problem = paper_problem(pde, nx=6, ny=12, n_steps=n_steps, theta=theta)
    data_solver = ThetaSolver(problem, prefix + "data_")
    gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    data = data_solver.forward(gstar).array[:, : problem.n_owned].copy()
    data_solver.destroy()
    solver = ThetaSolver(problem, prefix, state_storage=storage)
    net = ShallowNetwork(6, 2, seed=4)
    return ReducedFunctional(solver, NetworkSource(problem, net), L2Misfit(problem, data, weights)), net.params.copy()


#: "Identical" for gradients with checkpointing: heat (constant Jacobian) is bitwise; the nonlinear
#: path (lagged Newton matrices whose history a recomputation does not repeat) agrees to round-off.
IDENTICAL_RTOL = 1e-14


@pytest.mark.parametrize("pde,theta", [("heat", 1.0), ("allen-cahn", 1.0), ("allen-cahn", 0.5)])
def test_gradient_with_checkpointing_is_identical(pde, theta, tmp_path):
    """K = 3 in memory (+ 2 on disk) for 32 steps: loss, gradient and error bitwise equal to all-in-memory."""
    from femnpde.obs.misfit import TimeWeights

    n_steps = 32
    weights = TimeWeights("trapezoid", include_initial=True, levels=(0, 3, 17, 31, 32)) if theta < 1 else None
    tmp = MPI.COMM_WORLD.bcast(str(tmp_path), root=0)
    results = {}
    for name, spec in (("memory", "memory"), ("ram", {"snapshots": 3}),
                       ("disk", {"snapshots": 1, "disk_snapshots": 2, "directory": tmp})):
        rf, theta0 = _paper_rf(pde, spec, n_steps, theta, weights, prefix=f"ckpt_{pde}_{name}_")
        J, dJ = rf.value_and_gradient(theta0)
        J2, dJ2 = rf.value_and_gradient(theta0 * 1.1)  # a second forward + adjoint on the same storage
        results[name] = (J, dJ, J2, dJ2, rf.relative_max_error())
        storage = rf.solver.states
        if name != "memory":
            assert storage.forward_steps > 0  # states were recomputed
            d = storage.directory
            assert (d is not None) == (name == "disk")
            storage.close()
            assert d is None or not os.path.exists(d)
        rf.solver.destroy()
    ref = results["memory"]
    for name in ("ram", "disk"):
        got = results[name]
        for k in (0, 2, 4):
            assert abs(got[k] - ref[k]) <= IDENTICAL_RTOL * abs(ref[k]), (name, k, got[k], ref[k])
        for k in (1, 3):
            err = np.linalg.norm(got[k] - ref[k]) / np.linalg.norm(ref[k])
            print(f"{pde} theta={theta} {name}: relative gradient difference {err:.2e}")
            assert err <= IDENTICAL_RTOL, (name, k, err)
    assert np.linalg.norm(ref[1]) > 0


_TRAIN = """
[mesh]
cells = [5, 10]
[time]
n_steps = 12
[network]
neurons = 6
[data]
noise = 0.0
[run]
iterations = 4
checkpoint_every = 2
{storage}
"""


def test_training_with_checkpointing_matches_memory(shared_tmp_path, capsys):
    from femnpde.app.training import train
    from femnpde.io.output import History

    hist = {}
    for name, line in (("memory", ""), ("ckpt", "state_storage = {snapshots = 2, disk_snapshots = 1}")):
        cfg = write_on_root(shared_tmp_path / f"{name}.toml", _TRAIN.format(storage=line))
        train(cfg, out=shared_tmp_path / name, quiet=name == "memory", write_outputs=name == "ckpt")
        h = History.read(shared_tmp_path / name / "history.csv")
        hist[name] = {k: v for k, v in h.items() if k != "wall_time"}
    if MPI.COMM_WORLD.rank == 0:
        assert "recomputation factor" in capsys.readouterr().out
    for key in hist["memory"]:
        assert np.array_equal(hist["memory"][key], hist["ckpt"][key]), key
    assert (shared_tmp_path / "ckpt" / "fields" / "u.bp").exists()  # every level, replayed at the end


@pytest.mark.parametrize("line,needle", [
    ('state_storage = "disk"', "run.state_storage: unknown value 'disk'"),
    ("state_storage = {snapshots = 0}", "run.state_storage.snapshots"),
    ('state_storage = {budget = "lots"}', "run.state_storage.budget"),
    ("state_storage = {snapshots = 2, budgte = 3}", "unknown key 'budgte'"),
])
def test_bad_state_storage_exits_2(shared_tmp_path, capsys, line, needle):
    from femnpde.app.cli import main

    cfg = write_on_root(shared_tmp_path / "bad.toml", _TRAIN.format(storage=line))
    assert main(["train", str(cfg), "--out", str(shared_tmp_path / "x"), "--quiet"]) == 2
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
