"""Solver paths against each other and real failures.

* The matrix–vector fast path (fully affine residual), the branch with a
  constant Jacobian but assembled residuals (explicit time in the residual),
  and the constant derivative blocks (Allen–Cahn) agree with plain assembly
  (``fast_affine=False``): states, loss and gradient.
* A constant Jacobian is assembled and factorised once across steps, sweeps
  and iterations: counted with PETSc's ``MatLUFactorNum`` event and the
  matrix state (``Mat.stateGet``); the count is shown to catch a solver that
  refactorises every step.
* Real failures: a residual whose implicit step has no solution exits 3; bad
  user residuals (not callable, factory raising, residual returning a
  non-form, residual raising) exit 2 with the key named.
"""

from __future__ import annotations

import numpy as np
import pytest
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from conftest import numeric_factorisations, refactorise_every_step
from femnpde.app.cli import main
from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid
from femnpde.fem.solver import SolverError, ThetaSolver
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.obs.misfit import L2Misfit
from conftest import write_on_root


def _heat_explicit_time(comm=MPI.COMM_WORLD):
    """Heat with a source term depending on t: constant Jacobian, residual assembled every step."""
    import dolfinx.mesh

    mesh = dolfinx.mesh.create_rectangle(comm, [[0.0, 0.0], [0.5, 1.0]], [4, 8])

    def residual(u, v, g, t, x):
        return (0.01 * ufl.inner(ufl.grad(u), ufl.grad(v)) - g * v - (1 + t) * x[0] * v) * ufl.dx

    return ParabolicProblem(
        mesh, residual, time=TimeGrid(1.0, 6), theta=0.5,
        initial_condition=lambda x: x[0] * (0.5 - x[0]), dirichlet=[Dirichlet("boundary", lambda t: 0.1 * t)],
    )


def _heat_constant_term(comm=MPI.COMM_WORLD):
    """Fully affine with a constant term f0 = F(0) != 0 and non-zero Dirichlet data: the mat-vec path adds f0."""
    import dolfinx.mesh

    mesh = dolfinx.mesh.create_rectangle(comm, [[0.0, 0.0], [0.5, 1.0]], [4, 8])

    def residual(u, v, g, t, x):
        return (0.01 * ufl.inner(ufl.grad(u), ufl.grad(v)) + u * v - g * v - (0.3 + x[1]) * v) * ufl.dx

    return ParabolicProblem(
        mesh, residual, time=TimeGrid(1.0, 6), theta=1.0, initial_condition=0.2,
        dirichlet=[Dirichlet(lambda x: np.isclose(x[1], 0.0), 0.2)],
    )


PROBLEMS = {
    "heat": lambda: paper_problem("heat", nx=4, ny=8, n_steps=6, theta=0.5),
    "heat_constant_term": _heat_constant_term,
    "heat_explicit_time": _heat_explicit_time,
    "allen_cahn": lambda: paper_problem("allen-cahn", nx=4, ny=8, n_steps=6, theta=0.5),
}


def _rf(problem, prefix, fast_affine, data=None):
    solver = ThetaSolver(problem, prefix, fast_affine=fast_affine)
    if data is None:
        gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
        data = solver.forward(gstar).to_array()[:, : problem.n_owned].copy()
    net = ShallowNetwork(7, problem.mesh.geometry.dim, seed=11)
    return ReducedFunctional(solver, NetworkSource(problem, net), L2Misfit(problem, data)), net.params.copy(), data


@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_fast_paths_equal_plain_assembly(name):
    problem = PROBLEMS[name]()
    forms = problem.forms
    plain, theta, data = _rf(problem, f"plain_{name}_", fast_affine=False)
    fast, _, _ = _rf(problem, f"fast_{name}_", fast_affine=True, data=data)
    # Which branch each problem exercises.
    assert not plain.solver.uses_linear_fast_path and not plain.solver._block_names
    if name == "heat":
        assert fast.solver.uses_linear_fast_path
    elif name == "heat_constant_term":
        assert fast.solver.uses_linear_fast_path and not fast.solver._f0_zero
    elif name == "heat_explicit_time":
        assert forms.jacobian_constant and forms.linear is None and not fast.solver.uses_linear_fast_path
        assert fast.solver._block_names  # the source block is still a matrix
    else:  # nonlinear: the Newton step of issue 12 (constant blocks only where it does not own the step)
        assert not forms.jacobian_constant
    theta = theta + 0.3 * np.random.default_rng(0).standard_normal(theta.size)
    J_p, g_p = plain.value_and_gradient(theta)
    u_p = plain.states.to_array().copy()
    J_f, g_f = fast.value_and_gradient(theta)
    u_f = fast.states.to_array().copy()
    assert J_p > 0 and np.linalg.norm(g_p) > 0
    assert abs(J_f - J_p) <= 1e-11 * J_p, (J_f, J_p)
    assert np.linalg.norm(g_f - g_p) <= 1e-10 * np.linalg.norm(g_p)
    assert np.max(np.abs(u_f - u_p)) <= 1e-11 * max(1.0, np.max(np.abs(u_p)))
    for rf in (plain, fast):
        rf.solver.destroy()
        rf.misfit.destroy()


def _count_factorisations(solver_patch=None):
    """Numeric factorisations (data sweep + two iterations of forward and adjoint) and Jacobian state change."""
    PETSc.Log.begin()
    problem = paper_problem("heat", nx=4, ny=8, n_steps=5)
    assert problem.forms.jacobian_constant and problem.forms.affine
    before = numeric_factorisations()
    rf, theta, _ = _rf(problem, "reuse_", fast_affine=True)  # one forward sweep for the data
    if solver_patch is not None:
        solver_patch(rf.solver)
    rf.value_and_gradient(theta)
    state = rf.solver.A.stateGet()
    rf.value_and_gradient(theta + 0.1)
    counts = (numeric_factorisations() - before, rf.solver.A.stateGet() - state)
    rf.solver.destroy()
    rf.misfit.destroy()
    return counts


def test_constant_jacobian_is_assembled_and_factorised_once():
    n_factor, state_change = _count_factorisations()
    # One factorisation in the data sweep (5 steps), reused by every later
    # forward step, the adjoint (transpose solve) and the second iteration.
    assert n_factor == 1, n_factor
    assert state_change == 0, state_change


def test_factorisation_count_catches_refactorising_every_step():
    """The check above can fail: a solver that reassembles and refactorises each step is caught."""

    n_factor, state_change = _count_factorisations(refactorise_every_step)
    assert n_factor == 1 + 2 * (5 + 5)  # the data sweep, then every forward and adjoint step twice
    assert state_change > 0


# ------------------------------------------------------------- failures
BASE = """
[mesh]
cells = [2, 4]
[pde]
residual = "{residual}"
[time]
n_steps = 2
[initial_condition]
kind = "constant"
value = 1.0
[network]
neurons = 3
[run]
iterations = 2
"""


def _config(tmp, residual, name="c.toml"):
    return write_on_root(tmp / name, BASE.format(residual=residual))


def test_affine_step_is_one_product_and_its_adjoint_one_transposed_product():
    """The fast path's residual ``[A0 | B | C] [u; u_prev; g]`` is one mat-vec per step (it was three) and the
    adjoint's couplings ``(Bᵀ λ, Cᵀ λ)`` one mat-vec with the explicitly transposed blocks (it was two, then
    one transposed mat-vec; AIJ's transposed product costs ~3 mat-vecs); λ's ghost
    values, which no product reads, are updated once per sweep (it was once per step)."""
    import dolfinx.la

    problem = paper_problem("heat", nx=4, ny=8, n_steps=5)
    solver = ThetaSolver(problem, "one_product_", {"ksp_type": "preonly", "pc_type": "lu",
                                                   "pc_factor_mat_solver_type": "mumps"})
    assert solver.uses_linear_fast_path and set(solver._block_names) == {"u_prev", "g"}
    g = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    events = ("MatMult", "MatMultAdd", "MatMultTranspose")
    lam_scatters = []
    original = dolfinx.la.Vector.scatter_forward

    def counted(vector):
        lam_scatters.append(vector is problem.lam.x)
        original(vector)

    def counts():
        return [int(PETSc.Log.Event(e).getPerfInfo()["count"]) for e in events]

    PETSc.Log.begin()
    c0 = counts()
    solver.forward(g)
    c1 = counts()
    dolfinx.la.Vector.scatter_forward = counted
    try:
        solver.adjoint(g, lambda n, u, out: out.__iadd__(u))  # a misfit without products
    finally:
        dolfinx.la.Vector.scatter_forward = original
    c2 = counts()
    N = problem.time.n_steps
    assert [b - a for a, b in zip(c0, c1)] == [N, 0, 0]
    assert [b - a for a, b in zip(c1, c2)] == [N, 0, 0]
    # Kᵀ holds the blocks after A0 only (A0ᵀ λ is unused): u_prev's and g's columns.
    K = solver._lin.mat
    n_u = problem.V.dofmap.index_map.size_global
    assert solver._lin._mat_t.getSize() == (K.getSize()[1] - n_u, K.getSize()[0])
    assert sum(lam_scatters) == 1
    solver.destroy()


def test_newton_failure_is_exit_3_naming_the_step(shared_tmp_path, capsys):
    cfg = _config(shared_tmp_path, "femnpde_test_residuals:blow_up")
    code = main(["train", str(cfg), "--quiet", "--out", str(shared_tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3, err
    if MPI.COMM_WORLD.rank == 0:
        assert "did not converge at time step 1 " in err and "Newton" in err, err
        assert "Traceback" not in err


@pytest.mark.parametrize(
    "factory,fragments",
    [
        ("NOT_A_FACTORY", ["pde.residual", "NOT_A_FACTORY", "not callable"]),
        ("raising", ["pde.residual", "factory exploded on purpose"]),
        ("returns_number", ["residual returned float", "ufl.Form"]),
        ("residual_raises", ["calling the residual(u, v, g, t, x) failed"]),
        ("no_such_factory", ["pde.residual", "no attribute 'no_such_factory'"]),
    ],
)
def test_bad_user_residual_is_exit_2(shared_tmp_path, capsys, factory, fragments):
    cfg = _config(shared_tmp_path, f"femnpde_test_residuals:{factory}", name=f"{factory}.toml")
    code = main(["train", str(cfg), "--quiet", "--out", str(shared_tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    if MPI.COMM_WORLD.rank == 0:
        for frag in fragments:
            assert frag in err, (frag, err)
        assert "Traceback" not in err


def test_failed_adjoint_solve_of_a_symmetric_step_is_named_adjoint():
    """Heat's adjoint solves with the untransposed (symmetric) operator; a failure there is an adjoint failure
    (the message said "forward linear solve" before session 8: the label came from the transpose flag)."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=4)
    solver = ThetaSolver(problem, "afail_")
    assert solver.symmetric
    g = FunctionSource(problem, target_source("difficult")).values()
    solver.forward(g)
    ksp = solver._ksp_adj  # the forward's KSP (constant Jacobian): one unpreconditioned GMRES iteration from now on
    ksp.setType("gmres")
    ksp.getPC().setType("none")
    ksp.setTolerances(rtol=1e-300, atol=1e-300, max_it=1)
    with pytest.raises(SolverError, match=r"^adjoint linear solve at time step 4 \(t = 1\).*DIVERGED_(MAX_IT|ITS)"):
        solver.adjoint(g, lambda n, u, out: out.__iadd__(u))
    solver.destroy()


def test_linear_solver_failure_is_exit_3_naming_the_prefix(shared_tmp_path, capsys):
    """One unpreconditioned GMRES iteration cannot solve the step: KSP diverges, the run exits 3."""
    path = write_on_root(
        shared_tmp_path / "ksp.toml",
        "[mesh]\ncells = [4, 8]\n[time]\nn_steps = 2\n[network]\nneurons = 3\n[run]\niterations = 1\n"
        '[solver.petsc_options]\nksp_type = "gmres"\npc_type = "none"\nksp_max_it = 1\nksp_rtol = 1e-12\n',
    )
    code = main(["train", str(path), "--quiet", "--out", str(shared_tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 3, err
    if MPI.COMM_WORLD.rank == 0:
        assert "forward linear solve at time step 1 " in err and "(-3)" in err, err
        assert "femnpde_forward_" in err, err


_CG = {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": "1e-12"}


def test_forward_projection_with_a_budget_that_holds_every_level():
    """``forward_guess = "projection"`` needs every level in memory: a budget that holds them all plans
    memory and is accepted (before: refused because the storage was not the literal "memory"); one that
    does not is refused, before any PETSc object exists."""
    problem = paper_problem("heat", nx=4, ny=8, n_steps=6)
    s = ThetaSolver(problem, "fg_budget_", _CG, forward_guess="projection", state_storage={"budget": "1GB"})
    assert s.storage_plan.kind == "memory" and s.forward_guess == "projection"
    s.destroy()
    with pytest.raises(ValueError, match=r"needs every level in memory \(state_storage = \{'budget': '2kB'\} plans "
                                         r"checkpointing\)"):
        ThetaSolver(problem, "fg_small_", _CG, forward_guess="projection", state_storage={"budget": "2kB"})


def test_forward_projection_is_refused_where_it_cannot_apply():
    """A Newton step (no constant Jacobian) or a non-symmetric one has no projected forward guess: refused
    with the reason (before: silently ignored)."""
    ac = paper_problem("allen-cahn", nx=4, ny=8, n_steps=2)
    with pytest.raises(ValueError, match=r"forward_guess = 'projection' .* Jacobian is not constant \(a nonlinear "
                                         r"step: Newton\); use forward_guess = 'previous'"):
        ThetaSolver(ac, "fg_newton_", _CG, forward_guess="projection")

    def convection(u, v, g, t, x):
        return (ufl.inner(ufl.grad(u), ufl.grad(v)) + ufl.grad(u)[0] * v - g * v) * ufl.dx

    from femnpde.app.scenarios import paper_mesh

    p = ParabolicProblem(paper_mesh(MPI.COMM_WORLD, 4, 8), convection, time=TimeGrid(1.0, 2),
                         initial_condition=lambda x: 1.0 + x[0], dirichlet=[Dirichlet("boundary", 0.0)])
    with pytest.raises(ValueError, match=r"Jacobian is not symmetric"):
        ThetaSolver(p, "fg_nonsym_", {"ksp_type": "gmres", "pc_type": "jacobi"}, forward_guess="projection")
