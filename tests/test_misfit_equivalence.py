"""L2Misfit and PointMisfit over observation operators equal the former implementations.

The reference values in ``misfit_reference.json`` were computed with the
implementations of ``L2Misfit`` and ``PointMisfit`` before they became thin
constructors of one quadratic misfit over an observation operator (commit
``ccac7d6``), on 1 and 2 ranks (``python3 tests/test_misfit_equivalence.py``
writes them for the current rank count).  Every figure must agree to 1e-14
relative: losses, level-by-level losses, relative RMSE, relative max error,
the state gradient ``Σ_n ∂J/∂u^n`` (its sum, norm and a weighted sum), and
the reduced functional's value and θ-gradient.
"""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest
import dolfinx.fem
import dolfinx.mesh
from mpi4py import MPI

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.solver import ThetaSolver
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.obs.misfit import L2Misfit, TimeWeights
from femnpde.obs.points import PointMisfit, synthetic_point_data

REFERENCE = pathlib.Path(__file__).with_name("misfit_reference.json")

_WEIGHTS = {
    "rectangle": TimeWeights(),
    "trapezoid-no-initial": TimeWeights("trapezoid", include_initial=False),
    "levels": TimeWeights(levels=(1, 3, 4)),
}
CASES = [f"{kind}-{w}" for kind in ("field", "subdomain", "points") for w in _WEIGHTS]


def _subdomain_tags(mesh):
    tdim = mesh.topology.dim
    imap = mesh.topology.index_map(tdim)
    cells = np.arange(imap.size_local + imap.num_ghosts, dtype=np.int32)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim, cells)
    return dolfinx.mesh.meshtags(mesh, tdim, cells, np.where(mid[:, 1] > 0.4, 2, 1).astype(np.int32))


def _sensors():
    rng = np.random.default_rng(11)
    inner = np.column_stack([rng.uniform(0.02, 0.48, 9), rng.uniform(0.02, 0.98, 9)])
    return np.vstack([inner, [[0.0, 0.0], [0.25, 0.5], [0.5, 1.0]]])  # boundary, interior vertex


def _misfit(case: str, problem, prefix: str):
    """The misfit of ``case`` on the synthetic data of ``problem``."""
    kind, wname = case.split("-", 1)
    weights = _WEIGHTS[wname]
    n_owned = problem.n_owned
    data_solver = ThetaSolver(problem, f"{prefix}data_")
    target = data_solver.forward(FunctionSource(problem, target_source("difficult", problem.time.T)).values())
    if kind == "points":
        data = synthetic_point_data(problem, target, _sensors())
        if weights.levels is not None:
            data[0] = np.nan  # unobserved levels may hold nan
        misfit = PointMisfit(problem, _sensors(), data, weights)
    else:
        data = target.to_array()[:, :n_owned].copy()
        data[0] *= 8.0  # the largest |h| at level 0, which two of the weights leave unobserved
        subdomain = (_subdomain_tags(problem.mesh), 2) if kind == "subdomain" else None
        misfit = L2Misfit(problem, data, weights, subdomain=subdomain)
    data_solver.destroy()
    return misfit


def _rf(problem, misfit, prefix: str, state_storage="memory"):
    solver = ThetaSolver(problem, prefix, state_storage=state_storage)
    net = ShallowNetwork(7, 2, seed=4)
    theta = net.params + 0.3 * np.random.default_rng(1).standard_normal(net.n_params)
    return ReducedFunctional(solver, NetworkSource(problem, net), misfit), theta


def _compute(case: str) -> dict:
    problem = paper_problem("heat", nx=6, ny=12, n_steps=4)
    n_owned = problem.n_owned
    prefix = f"meq_{case.replace('-', '_')}_"
    misfit = _misfit(case, problem, prefix)
    rf, theta = _rf(problem, misfit, prefix)
    solver = rf.solver
    J, grad = rf.value_and_gradient(theta)
    states = rf.states
    comm = problem.comm
    levels = [comm.allreduce(misfit.level_value(n, states.load(n)[:n_owned])) for n in range(problem.time.n_steps + 1)]
    out = np.zeros(n_owned)
    for n in range(problem.time.n_steps + 1):
        misfit.add_gradient(n, states.load(n)[:n_owned], out)
    f = dolfinx.fem.Function(problem.V)
    f.interpolate(lambda x: 1.0 + x[0] + 2.0 * x[1] ** 2)
    result = {
        "J": J,
        "value": misfit.value(states),
        "levels": levels,
        "relative_rmse": misfit.relative_rmse(J),
        "relative_max_error": misfit.relative_max_error(states),
        "max_abs_data": misfit.max_abs_data(),
        "grad_u_sum": comm.allreduce(float(out.sum())),
        "grad_u_norm": float(np.sqrt(comm.allreduce(float(out @ out)))),
        "grad_u_dot_f": comm.allreduce(float(out @ f.x.array[:n_owned])),
        "grad_theta": grad.tolist(),
    }
    misfit.destroy()
    solver.destroy()
    return result


def _close(a, b) -> bool:
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= 1e-14 * np.maximum(np.abs(b).max(initial=0.0), 1e-300)))


@pytest.mark.parametrize("case", CASES)
def test_misfit_equals_former_implementation(case):
    reference = json.loads(REFERENCE.read_text())[f"np{MPI.COMM_WORLD.size}"][case]
    result = _compute(case)
    assert result["J"] > 0 and np.linalg.norm(result["grad_theta"]) > 0
    for key, ref in reference.items():
        assert _close(result[key], ref), (key, result[key], ref)


@pytest.mark.parametrize("storage", ["memory", {"snapshots": 2}], ids=["memory", "checkpointing"])
@pytest.mark.parametrize("case", CASES)
def test_value_and_gradient_take_one_weight_product_per_level(case, storage):
    """value_and_gradient takes the loss from the adjoint's ``W r`` (AdjointLoss): one ``W r`` per observed
    level instead of two, the loss, the gradient and the max error bitwise those of the loss-only path
    (``rf(θ)``, the forward's misfit, then ``derivative``)."""
    problem = paper_problem("heat", nx=6, ny=12, n_steps=8)
    misfit = _misfit(case, problem, "meq1_")
    calls = []
    weight = misfit.operator.weight
    misfit.operator.weight = lambda r: calls.append(1) or weight(r)
    tag = "m" if storage == "memory" else "c"
    rf_fused, theta = _rf(problem, misfit, f"meq1_fused_{tag}_", storage)
    J, grad = rf_fused.value_and_gradient(theta)
    n_fused = len(calls)
    err = rf_fused.relative_max_error()
    rf_ref, _ = _rf(problem, misfit, f"meq1_ref_{tag}_", storage)
    J_ref = rf_ref(theta)
    grad_ref = rf_ref.derivative(theta)
    n_ref = len(calls) - n_fused
    n_obs = misfit.observed_levels.size
    assert (n_fused, n_ref) == (n_obs, 2 * n_obs - int(misfit.w[0] != 0.0))
    assert J == J_ref and J > 0
    np.testing.assert_array_equal(grad, grad_ref)
    assert err == rf_ref.relative_max_error()
    assert rf_fused.value_and_gradient(theta)[0] == J and len(calls) == n_fused + n_ref  # cached: no sweep
    for rf in (rf_fused, rf_ref):
        rf.solver.destroy()
    misfit.destroy()


if __name__ == "__main__":  # write the reference of this rank count (from the repository root, with env-run)
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    values = {case: _compute(case) for case in CASES}
    if MPI.COMM_WORLD.rank == 0:
        stored = json.loads(REFERENCE.read_text()) if REFERENCE.exists() else {}
        stored[f"np{MPI.COMM_WORLD.size}"] = values
        REFERENCE.write_text(json.dumps(stored, indent=1) + "\n")
