"""The IMEX time treatment (``nonlinear="explicit"``, ``time.nonlinear``): exact discrete adjoint, cost, accuracy.

The nonlinear remainder of the residual is evaluated at u^{n-1}: the step is
linear in u^n with the linear part's constant matrix, factorised once.  The
gradient is the exact gradient of that scheme: Taylor rates 2 and central
differences (best relative error <= 1e-8) for Allen–Cahn, a nonlinear
diffusion and a reaction nonlinear in g, P1 and P2, 2D and 3D, backward Euler
and Crank–Nicolson; loss and gradient on COMM_WORLD equal a serial
computation on a renumbered mesh to 1e-10.
"""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
import ufl
import dolfinx.fem
import dolfinx.mesh
from mpi4py import MPI
from petsc4py import PETSc

from conftest import numeric_factorisations, refactorise_every_step, write_on_root
from serial_reference import renumbered_serial_copy
from femnpde.app.cli import main
from femnpde.app.scenarios import paper_initial_condition, paper_mesh, paper_problem, target_source
from femnpde.fem.forms import explicit_remainder, split_residual
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, allen_cahn
from femnpde.fem.solver import ThetaSolver
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.model.verification import finite_difference_check, taylor_test
from femnpde.obs.misfit import L2Misfit


def _square(comm, n=6):
    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_SELF if comm == "self" else MPI.COMM_WORLD, n, n)
    return renumbered_serial_copy(mesh) if comm == "self" else mesh


def _cube(comm, n=3):
    mesh = dolfinx.mesh.create_unit_cube(MPI.COMM_SELF if comm == "self" else MPI.COMM_WORLD, n, n, n)
    # seed 1: with seed 0 the 3x3x3 copy comes back in the original order (the copy checks it)
    return renumbered_serial_copy(mesh, seed=1) if comm == "self" else mesh


def _paper(comm):
    mesh = paper_mesh(MPI.COMM_SELF if comm == "self" else MPI.COMM_WORLD, 5, 10)
    return renumbered_serial_copy(mesh) if comm == "self" else mesh


def _ac(mesh, degree=1, theta=1.0, n_steps=8, T=0.25):
    return ParabolicProblem(mesh, allen_cahn(0.01, 0.32), degree=degree, time=TimeGrid(T, n_steps), theta=theta,
                            nonlinear="explicit", initial_condition=paper_initial_condition,
                            dirichlet=[Dirichlet("boundary", 0.0)])


def _nonlinear_diffusion(mesh):
    def residual(u, v, g, t, x):
        return (0.02 + 0.5 * u**2) * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + (u * g - g) * v * ufl.dx

    # dt = 0.01: the explicit nonlinear diffusion needs dt * 0.5 u^2 / h^2 small
    return ParabolicProblem(mesh, residual, degree=2, time=TimeGrid(0.06, 6), theta=0.5, nonlinear="explicit",
                            initial_condition=lambda x: 0.3 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]),
                            dirichlet=[Dirichlet("boundary", 0.0)])


def _exp_reaction(mesh):
    def residual(u, v, g, t, x):
        return (0.05 * ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.exp(g) * u * v - (1 + t * x[0]) * v) * ufl.dx

    return ParabolicProblem(mesh, residual, time=TimeGrid(0.5, 5), theta=1.0, nonlinear="explicit",
                            initial_condition=lambda x: x[0] * (1 - x[0]),
                            dirichlet=[Dirichlet(lambda x: np.isclose(x[0], 0.0), lambda t: 0.1 * t)])


#: name -> (mesh builder(comm), problem builder(mesh))
CASES = {
    "ac_p1_be": (_paper, _ac),
    "ac_p2_cn": (_paper, lambda m: _ac(m, degree=2, theta=0.5)),
    "ac_3d_p1": (_cube, lambda m: ParabolicProblem(
        m, allen_cahn(0.05, 0.5), time=TimeGrid(0.3, 4), nonlinear="explicit",
        initial_condition=lambda x: 0.4 * np.sin(np.pi * x[0]) * x[1], dirichlet=[Dirichlet("boundary", 0.0)])),
    "ac_3d_p2": (lambda c: _cube(c, 2), lambda m: ParabolicProblem(
        m, allen_cahn(0.05, 0.5), degree=2, time=TimeGrid(0.3, 3), theta=0.5, nonlinear="explicit",
        initial_condition=lambda x: 0.4 * np.sin(np.pi * x[0]) * x[1], dirichlet=[Dirichlet("boundary", 0.0)])),
    "ac_quadrature_source": (_paper, lambda m: ParabolicProblem(
        m, allen_cahn(0.01, 0.32), time=TimeGrid(0.25, 8), nonlinear="explicit", source="quadrature",
        initial_condition=paper_initial_condition, dirichlet=[Dirichlet("boundary", 0.0)])),
    "nonlinear_diffusion_p2_cn": (_square, _nonlinear_diffusion),
    "exp_g_reaction_p1": (_square, _exp_reaction),
}


def _reduced(problem, label):
    solver = ThetaSolver(problem, f"imex_{label}_")
    gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    misfit = L2Misfit(problem, solver.forward(gstar).array[:, : problem.n_owned].copy())
    net = ShallowNetwork(6, problem.mesh.geometry.dim, seed=3)
    theta = net.params + 0.2 * np.random.default_rng(2).standard_normal(net.n_params)
    return ReducedFunctional(solver, NetworkSource(problem, net), misfit), theta


@pytest.mark.parametrize("name", CASES)
def test_imex_gradient_is_exact_and_rank_independent(name):
    make_mesh, make_problem = CASES[name]
    out = {}
    for side in ("self", "world"):
        problem = make_problem(make_mesh(side))
        assert problem.nonlinear == "explicit"
        # The IMEX step is affine in u^n with a constant Jacobian: one factorised solve per step.
        assert problem.forms.jacobian_constant and problem.forms.affine
        rf, theta = _reduced(problem, f"{name}_{side}")
        assert rf.solver._imex is not None and rf.solver.snes is None
        J, dJ = rf.value_and_gradient(theta)
        assert np.all(rf.solver.newton_iterations[1:] == 1)
        if side == "world":
            dtheta = np.random.default_rng(5).standard_normal(theta.size)
            tt = taylor_test(rf, theta, dtheta, gradient=dJ, n_steps=4)
            assert np.all(tt.rates > 1.9) and np.all(tt.rates < 2.1), tt.rates
            fd = finite_difference_check(rf, theta)
            assert np.all(fd.best <= 1e-8), fd.best
        out[side] = (J, dJ)
        rf.solver.destroy()
        rf.misfit.destroy()
    (J1, g1), (J2, g2) = out["self"], out["world"]
    assert J1 > 0 and np.linalg.norm(g1) > 0
    assert abs(J1 - J2) <= 1e-10 * J1, (J1, J2)
    assert np.linalg.norm(g1 - g2) <= 1e-10 * np.linalg.norm(g1)


def test_imex_fast_path_equals_the_generic_assembly():
    """The split's matrices (fast path) and plain assembly of the whole IMEX residual and its generic adjoint
    forms (ufl.derivative with respect to u^{n-1}, fast_affine=False) give the same loss and gradient."""
    out = []
    for fast in (True, False):
        problem = _ac(paper_mesh(MPI.COMM_WORLD, 5, 10))
        rf, theta = _reduced(problem, f"generic_{fast}")
        if not fast:
            solver = ThetaSolver(problem, "imex_generic_plain_", fast_affine=False)
            assert solver._imex is None and solver.snes is None
            rf.solver.destroy()
            rf = ReducedFunctional(solver, rf.source, rf.misfit)
        out.append(rf.value_and_gradient(theta))
        rf.solver.destroy()
        rf.misfit.destroy()
    (J0, g0), (J1, g1) = out
    assert abs(J1 - J0) <= 1e-12 * J0
    assert np.linalg.norm(g1 - g0) <= 1e-11 * np.linalg.norm(g0)


def test_explicit_remainder_moves_only_the_cubic_term_to_u_prev():
    p = paper_problem("allen-cahn", nx=4, ny=8, n_steps=2)
    state, times = {p.u, p.u_prev, p.g, p.g_prev}, {p.t, p.t_prev}
    F = explicit_remainder(p.F_ufl, p.u, p.u_prev, state, times)
    split = split_residual(F, p.u, state, times)
    # linear: mass (u, u_prev), diffusion, source; the cubic term is now a per-step term in u_prev.
    assert split.nonlinear is None and split.n_terms["step"] == 1
    assert p.u not in split.step.coefficients() and p.u_prev in split.step.coefficients()
    heat = paper_problem("heat", nx=4, ny=8, n_steps=2)
    assert explicit_remainder(heat.F_ufl, heat.u, heat.u_prev, {heat.u}, set()) is heat.F_ufl


def test_default_is_the_implicit_scheme():
    p = paper_problem("allen-cahn", nx=4, ny=8, n_steps=2)
    assert p.nonlinear == "implicit" and not p.forms.jacobian_constant


def test_bad_scheme_names_the_choices():
    with pytest.raises(ValueError, match=r"nonlinear='semi'.*'implicit', 'explicit'"):
        paper_problem("allen-cahn", nx=2, ny=2, n_steps=1, nonlinear="semi")


def _imex_factorisations(patch=None) -> int:
    """Numeric factorisations of the data sweep and two loss+grad evaluations (8 steps each)."""
    PETSc.Log.begin()
    problem = _ac(paper_mesh(MPI.COMM_WORLD, 4, 8))
    before = numeric_factorisations()
    rf, theta = _reduced(problem, "lu")
    if patch is not None:
        patch(rf.solver)
    rf.value_and_gradient(theta)
    rf.value_and_gradient(theta + 0.1)
    count = numeric_factorisations() - before
    rf.solver.destroy()
    rf.misfit.destroy()
    return count


def test_imex_factorises_once():
    assert _imex_factorisations() == 1


def test_imex_factorisation_count_catches_refactorising_every_step():
    """The check above can fail: an IMEX solver that refactorises at each step is caught."""

    assert _imex_factorisations(refactorise_every_step) == 1 + 2 * (8 + 8)


def test_imex_gradient_with_checkpointing_is_identical():
    """Recomputed forward steps inside the adjoint sweep do not disturb it (the IMEX step has its own vectors)."""
    out = {}
    for name, spec in (("memory", "memory"), ("ram", {"snapshots": 3})):
        problem = _ac(paper_mesh(MPI.COMM_WORLD, 5, 10), n_steps=24, T=0.75)
        data_rf, theta = _reduced(problem, f"ckdata_{name}")
        solver = ThetaSolver(problem, f"imex_ck_{name}_", state_storage=spec)
        rf = ReducedFunctional(solver, data_rf.source, data_rf.misfit)
        out[name] = rf.value_and_gradient(theta)
        assert name == "memory" or solver.storage_plan.recomputation_factor > 1
        for s in (solver, data_rf.solver, data_rf.misfit):
            s.destroy()
    (J0, g0), (J1, g1) = out["memory"], out["ram"]
    assert J1 == J0 and np.array_equal(g1, g0)


def test_imex_gradient_of_a_trainable_constant():
    """dJ/dgamma through the adjoint equals central differences; changing gamma rebuilds the split's matrices."""

    def residual(u, v, g, t, x, gamma):
        return gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + 10.0 * (u**3 - u) * v * ufl.dx - g * v * ufl.dx

    problem = ParabolicProblem(paper_mesh(MPI.COMM_WORLD, 5, 10), residual, time=TimeGrid(0.25, 8),
                               nonlinear="explicit", constants={"gamma": 0.01},
                               initial_condition=paper_initial_condition, dirichlet=[Dirichlet("boundary", 0.0)])
    rf, theta = _reduced(problem, "const")
    solver, misfit = rf.solver, rf.misfit
    g = NetworkSource(problem, ShallowNetwork(6, 2, seed=3)).values()

    def loss(gamma):
        solver.set_constants({"gamma": gamma})
        return misfit.value(solver.forward(g))

    J = loss(0.02)
    solver.adjoint(g, misfit.add_gradient, constants=("gamma",))
    dJ = solver.constant_gradient["gamma"]
    h = 1e-6  # 1e-5: truncation error 2e-7
    fd = (loss(0.02 + h) - loss(0.02 - h)) / (2 * h)
    assert J > 0 and abs(dJ) > 0
    assert abs(fd - dJ) <= 1e-7 * abs(dJ), (fd, dJ)
    solver.destroy()
    misfit.destroy()


def _final_state(nonlinear: str, n_steps: int) -> np.ndarray:
    problem = paper_problem("allen-cahn", nx=8, ny=16, n_steps=n_steps, T=0.5, nonlinear=nonlinear)
    solver = ThetaSolver(problem, f"imex_conv_{nonlinear}_{n_steps}_")
    gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    u = solver.forward(gstar).to_array()[-1, : problem.n_owned].copy()
    solver.destroy()
    return u


def test_imex_tends_to_implicit_at_first_order():
    """|u_imex(T) - u_implicit(T)| halves with the time step (first order in the remainder)."""
    diffs = []
    for n in (32, 64, 128):  # at 16 steps the ratio is still 2.3
        d = _final_state("explicit", n) - _final_state("implicit", n)
        diffs.append(np.sqrt(MPI.COMM_WORLD.allreduce(float(d @ d))))
    ratios = np.array(diffs[:-1]) / np.array(diffs[1:])
    assert diffs[-1] > 0
    assert np.all((ratios > 1.8) & (ratios < 2.2)), (diffs, ratios)


# ------------------------------------------------------------ configuration
CONFIG = """
[mesh]
cells = [4, 8]
[pde]
preset = "allen-cahn"
[time]
n_steps = {n_steps}
nonlinear = "{nonlinear}"
[network]
neurons = 3
[run]
iterations = 2
"""


def test_config_key_trains_and_is_in_the_reference(shared_tmp_path, capsys):
    cfg = write_on_root(shared_tmp_path / "imex.toml", CONFIG.format(n_steps=32, nonlinear="explicit"))
    code = main(["train", str(cfg), "--quiet", "--out", str(shared_tmp_path / "run")])
    out, err = capsys.readouterr()
    assert code == 0, err
    if MPI.COMM_WORLD.rank == 0:
        saved = (shared_tmp_path / "run" / "config.toml").read_text()
        assert 'nonlinear = "explicit"' in saved
    assert main(["config", "reference"]) == 0
    ref = capsys.readouterr().out
    if MPI.COMM_WORLD.rank == 0:
        line = next(line for line in ref.splitlines() if line.strip().startswith("nonlinear:"))
        assert "choices: implicit | explicit" in line and 'default: "implicit"' in line, line


def test_gradcheck_cli_with_imex(capsys):
    code = main(["gradcheck", "--pde", "allen-cahn", "--nonlinear", "explicit", "--N", "5", "--nx", "4", "--ny", "8",
                 "--steps", "32", "--taylor-steps", "4", "--h0", "2.5e-3"])
    out = capsys.readouterr().out
    assert code == 0, out
    if MPI.COMM_WORLD.rank == 0:
        assert "nonlinear explicit" in out, out


def test_bad_config_value_is_exit_2_naming_the_choices(shared_tmp_path, capsys):
    cfg = write_on_root(shared_tmp_path / "bad.toml", CONFIG.format(n_steps=8, nonlinear="semi"))
    assert main(["config", "check", str(cfg)]) == 2
    err = capsys.readouterr().err
    if MPI.COMM_WORLD.rank == 0:
        assert "time.nonlinear" in err and "semi" in err and '"implicit"' in err and '"explicit"' in err, err


def test_explicit_blow_up_is_exit_3(shared_tmp_path, capsys):
    """u^0 = 3 and dt = 1/8 > epsilon^2: the explicit cubic term overflows; the run stops with exit code 3."""
    text = CONFIG.format(n_steps=8, nonlinear="explicit") + '[initial_condition]\nkind = "constant"\nvalue = 3.0\n'
    cfg = write_on_root(shared_tmp_path / "blow.toml", text)
    warns = pytest.warns(UserWarning, match="explicit cubic term may be unstable")
    with warns if MPI.COMM_WORLD.rank == 0 else contextlib.nullcontext():
        code = main(["train", str(cfg), "--quiet", "--out", str(shared_tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3, err
    if MPI.COMM_WORLD.rank == 0:
        assert "time step" in err and "the residual is inf" in err and "Traceback" not in err, err

