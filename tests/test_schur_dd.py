"""The exact Schur-complement solver (femnpde/fem/schur_dd.py): exactness, the defaults, refusals, failures."""

from pathlib import Path

import numpy as np
import pytest
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.linear_defaults import SCHUR_DD, default_linear_solver_options
from femnpde.fem.schur_dd import BACKWARD_CHOICES
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, heat
from femnpde.fem.solver import SolverError, ThetaSolver
from femnpde.io.meshes import read_mesh
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.model.verification import taylor_test
from femnpde.obs.misfit import L2Misfit

MESHES = Path(__file__).resolve().parent.parent / "meshes"
LU = {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"}


def _step_matrix(problem, prefix):
    """The assembled (constant) step matrix of ``problem``, through a throw-away ThetaSolver."""
    s = ThetaSolver(problem, prefix, {"ksp_type": "preonly", "pc_type": "jacobi"})
    s.forward(np.zeros((problem.time.n_steps + 1, problem.n_owned_source)))
    return s


def _ksp(A, prefix, options):
    ksp = PETSc.KSP().create(A.getComm())
    ksp.setOptionsPrefix(prefix)
    opts = PETSc.Options()
    for k, v in options.items():
        opts[prefix + k] = v
    ksp.setFromOptions()
    for k in options:
        opts.delValue(prefix + k)
    ksp.setOperators(A)
    return ksp


def _solve_both(A, prefix, dd_options=None):
    """Solutions of A x = b (random b) with the DD solver and with MUMPS LU; the DD context."""
    dd, lu = _ksp(A, f"{prefix}dd_", {**SCHUR_DD, **(dd_options or {})}), _ksp(A, f"{prefix}lu_", LU)
    b = A.createVecLeft()
    b.setRandom()
    x_dd, x_lu = b.duplicate(), b.duplicate()
    dd.solve(b, x_dd)
    lu.solve(b, x_lu)
    assert dd.getConvergedReason() > 0
    ctx = dd.getPC().getPythonContext()
    err = (x_dd - x_lu).norm() / x_lu.norm()
    for obj in (dd, lu, b, x_dd, x_lu):
        obj.destroy()
    return err, ctx


def test_matches_lu_on_the_rectangle():
    s = _step_matrix(paper_problem("heat", nx=16, ny=32, n_steps=2), "dd_rect_")
    err, ctx = _solve_both(s.A, "dd_rect_")
    assert err < 1e-12, err
    comm = MPI.COMM_WORLD
    if comm.size == 1:  # the separator is empty: plain Cholesky
        assert ctx.n_separator == 0 and ctx.nnz_v == 0
    else:
        assert 0 < ctx.n_separator < 561 and ctx.fallback == ""
        assert comm.allreduce(ctx.nnz_v) > 0
    s.destroy()


@pytest.mark.parametrize("backward", BACKWARD_CHOICES)
def test_both_ways_of_finishing_the_apply_are_exact(backward):
    """``schur_dd_backward``: the separate backward substitution (default) and the fused solve."""
    data = read_mesh(MESHES / "annulus_holes.xdmf", MPI.COMM_WORLD, gdim=2)
    p = ParabolicProblem(data.mesh, heat(0.1), time=TimeGrid(1.0, 2), initial_condition=lambda x: 1.0 + x[0],
                         dirichlet=[Dirichlet("boundary", 0.0)])
    for name, problem in (("rect", paper_problem("heat", nx=16, ny=32, n_steps=2)), ("ann", p)):
        s = _step_matrix(problem, f"dd_bw_{name}_")
        err, ctx = _solve_both(s.A, f"dd_bw_{name}_", {"schur_dd_backward": backward})
        assert err < 1e-12, (name, err)
        assert ctx.backward == backward and ctx.fallback == ""
        if MPI.COMM_WORLD.size > 1:
            assert ctx.n_separator > 0
        s.destroy()


@pytest.mark.parametrize("option,choices", [("backward", "'substitution', 'fused'"),
                                            ("breakdown", "'fallback' and 'fail'")])
def test_an_unknown_choice_is_a_value_error_naming_the_option(option, choices):
    """Bad input (exit code 2 on the command line), not PETSc's error 101 (before: an internal error)."""
    p = paper_problem("heat", nx=4, ny=8, n_steps=2)
    with pytest.raises(ValueError, match=rf"-dd_bad_forward_schur_dd_{option} 'lu': valid choices are {choices}"):
        ThetaSolver(p, "dd_bad_", {**SCHUR_DD, f"schur_dd_{option}": "lu"})


def test_separator_is_one_sided_and_the_solve_exact():
    """The separator is the rows coupled to a lower rank only (not both sides of the cut)."""
    s = _step_matrix(paper_problem("heat", nx=16, ny=32, n_steps=2), "dd_one_")
    A = s.A
    rstart, _ = A.getOwnershipRange()
    indptr, cols, vals = A.getValuesCSR()
    rows = np.repeat(np.arange(indptr.size - 1), np.diff(indptr))
    comm = MPI.COMM_WORLD
    one_sided = comm.allreduce(np.unique(rows[(cols < rstart) & (vals != 0.0)]).size)
    err, ctx = _solve_both(A, "dd_one_")
    assert err < 1e-12, err
    assert ctx.n_separator == one_sided and ctx.fallback == ""
    if comm.rank == 0:
        assert ctx.n_own_separator == 0  # the lowest rank owns no separator row
    assert comm.allreduce(ctx.n_own_separator) == ctx.n_separator
    s.destroy()


def test_matches_lu_on_an_unstructured_mesh_and_falls_back_above_the_bound():
    data = read_mesh(MESHES / "annulus_holes.xdmf", MPI.COMM_WORLD, gdim=2)
    p = ParabolicProblem(data.mesh, heat(0.1), time=TimeGrid(1.0, 2), initial_condition=lambda x: 1.0 + x[0],
                         dirichlet=[Dirichlet("boundary", 0.0)])
    s = _step_matrix(p, "dd_ann_")
    err, ctx = _solve_both(s.A, "dd_ann_")
    assert err < 1e-12, err
    if MPI.COMM_WORLD.size > 1:
        assert ctx.n_separator > 0
        # A bound below n_S: the redundant LU inside the preconditioner, still exact.
        PETSc.Options()["dd_ann_fb_dd_schur_dd_max_separator"] = ctx.n_separator - 1
        err_fb, ctx_fb = _solve_both(s.A, "dd_ann_fb_")
        PETSc.Options().delValue("dd_ann_fb_dd_schur_dd_max_separator")
        assert "max_separator" in ctx_fb.fallback and err_fb < 1e-12, err_fb
    s.destroy()


def _rf(comm, prefix, options=None, pde="heat", nonlinear="implicit"):
    # IMEX (the cubic term explicit) needs a small step on the paper's scenario: 64 steps.
    problem = paper_problem(pde, comm=comm, nx=8, ny=16, n_steps=8 if pde == "heat" else 64, nonlinear=nonlinear)
    ref = ThetaSolver(problem, prefix + "data_", LU)
    data = ref.forward(FunctionSource(problem, target_source("difficult")).values()).array[:, : problem.n_owned].copy()
    ref.destroy()
    solver = ThetaSolver(problem, prefix, options)
    net = ShallowNetwork(6, 2, seed=5)
    return ReducedFunctional(solver, NetworkSource(problem, net), L2Misfit(problem, data)), net.params.copy()


@pytest.mark.parametrize("pde,nonlinear", [("heat", "implicit"), ("allen-cahn", "explicit")], ids=["heat", "ac-imex"])
def test_default_gradient_check_rank_agreement_and_lu_agreement(pde, nonlinear):
    """The default (DD on several ranks, Cholesky on one): Taylor + FD; 1 vs n ranks and LU to round-off."""
    tag = f"{pde[0]}{nonlinear[0]}"
    rf, theta = _rf(MPI.COMM_WORLD, f"dd_g_{tag}_", None, pde, nonlinear)
    ksp = rf.solver.ksp
    if MPI.COMM_WORLD.size > 1:
        assert ksp.getPC().getType() == "python"
        assert type(ksp.getPC().getPythonContext()).__name__ == "SchurDD"
    else:
        assert ksp.getPC().getType() == "cholesky"
    J, dJ = rf.value_and_gradient(theta)
    rf_self, _ = _rf(MPI.COMM_SELF, f"dd_g_self_{tag}_", None, pde, nonlinear)
    J_self, dJ_self = rf_self.value_and_gradient(theta)
    rf_lu, _ = _rf(MPI.COMM_WORLD, f"dd_g_lu_{tag}_", LU, pde, nonlinear)
    J_lu, dJ_lu = rf_lu.value_and_gradient(theta)
    for J_ref, dJ_ref in ((J_self, dJ_self), (J_lu, dJ_lu)):
        assert abs(J - J_ref) <= 1e-10 * abs(J_ref)
        assert np.linalg.norm(dJ - dJ_ref) <= 1e-10 * np.linalg.norm(dJ_ref)
    dtheta = np.random.default_rng(0).standard_normal(theta.size)
    result = taylor_test(rf, theta, dtheta, n_steps=4)
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates
    h = 1e-4
    fd = (rf(theta + h * dtheta) - rf(theta - h * dtheta)) / (2 * h)
    assert fd == pytest.approx(float(dJ @ dtheta), rel=1e-5)
    for r in (rf, rf_self, rf_lu):
        r.solver.destroy()


def _convection(u, v, g, t, x):
    return 0.05 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + u.dx(0) * v * ufl.dx - g * v * ufl.dx


def test_nonsymmetric_matrix_is_refused_with_the_prefix():
    from femnpde.app.scenarios import paper_mesh

    p = ParabolicProblem(paper_mesh(MPI.COMM_WORLD, 4, 8), _convection, time=TimeGrid(1.0, 2),
                         initial_condition=lambda x: 1.0 + x[0], dirichlet=[Dirichlet("boundary", 0.0)])
    s = _step_matrix(p, "dd_ns_")
    assert not s.symmetric
    # Given to the time stepping: refused before the run.
    with pytest.raises(ValueError, match=r"not symmetric.*options prefix 'dd_ns_forward_'.*SchurDD.*pc_type lu"):
        ThetaSolver(p, "dd_ns_", SCHUR_DD)
    # Given to a KSP directly: the set-up refuses it (PETSc wraps the ValueError).
    ksp = _ksp(s.A, "dd_ns_dd_", SCHUR_DD)
    with pytest.raises(PETSc.Error) as info:
        ksp.setUp()
    assert isinstance(info.value.__cause__, ValueError)
    assert "options prefix 'dd_ns_dd_'" in str(info.value.__cause__) and "not symmetric" in str(info.value.__cause__)
    ksp.destroy()
    s.destroy()


def test_a_set_up_failure_on_one_rank_is_raised_on_every_rank(monkeypatch):
    """An unexpected exception in one rank's set-up (here: building its sparse matrices) is raised on every
    rank, and the ranks stay in step; before the agreed set-up the other ranks hung in the next collective."""
    import femnpde.fem.schur_dd as schur_dd

    comm = MPI.COMM_WORLD
    s = _step_matrix(paper_problem("heat", nx=16, ny=32, n_steps=2), "dd_fail_")
    bad = comm.size - 1
    if comm.rank == bad:
        def broken(m):
            raise MemoryError("injected: out of memory in this rank's set-up")

        monkeypatch.setattr(schur_dd, "_seq_aij", broken)
    ksp = _ksp(s.A, "dd_fail_dd_", SCHUR_DD)
    with pytest.raises(PETSc.Error) as info:
        ksp.setUp()
    cause = info.value.__cause__
    if comm.rank == bad:
        assert isinstance(cause, MemoryError), repr(cause)
    else:
        assert isinstance(cause, RuntimeError) and "failed on another rank" in str(cause), repr(cause)
        assert "'dd_fail_dd_'" in str(cause)
    assert comm.allreduce(1) == comm.size  # still in step
    monkeypatch.undo()
    ksp.destroy()
    err, ctx = _solve_both(s.A, "dd_fail_again_")  # and a new set-up works
    assert err < 1e-12 and comm.allreduce(ctx.n_own_separator) == ctx.n_separator
    s.destroy()


def _negative_reaction(u, v, g, t, x):
    # 1/dt = 2 against a reaction of -50: the step matrix M/dt + K - 50 M is symmetric, indefinite.
    return 0.01 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - 50.0 * u * v * ufl.dx - g * v * ufl.dx


def test_indefinite_matrix_falls_back_or_fails_through_the_solver_error_path():
    from femnpde.app.scenarios import paper_mesh

    p = ParabolicProblem(paper_mesh(MPI.COMM_WORLD, 8, 16), _negative_reaction, time=TimeGrid(1.0, 2),
                         initial_condition=lambda x: 0 * x[0] + 1.0, dirichlet=[Dirichlet("boundary", 0.0)])
    # Asked to fail on a breakdown: the solver's error path (SolverError, exit 3 in the CLI).
    s = ThetaSolver(p, "dd_indef_", {**SCHUR_DD, "schur_dd_breakdown": "fail"})
    assert s.symmetric
    with pytest.raises(SolverError, match="DIVERGED_PC(SETUP_)?FAILED"):
        s.forward(np.zeros((3, p.n_owned_source)))
    s.destroy()
    # By default: detected, and solved by the redundant LU, as exactly as an LU solves it.
    ref = _step_matrix(p, "dd_indef_ref_")
    err, ctx = _solve_both(ref.A, "dd_indef_ref_")
    assert "not positive definite" in ctx.fallback and err < 1e-10, (ctx.fallback, err)
    ref.destroy()


def test_defaults_table():
    assert default_linear_solver_options(2, 205_761, 2, True, constant=True) == SCHUR_DD
    assert default_linear_solver_options(4, 13_041, 2, True, constant=True) == SCHUR_DD
    one = default_linear_solver_options(1, 205_761, 2, True, constant=True)
    assert one["pc_type"] == "cholesky" and one["pc_factor_mat_solver_type"] == "petsc"
    # Not symmetric, not constant (a nonlinear step's Newton matrix), 3D, or above 300 000: as before.
    assert default_linear_solver_options(2, 205_761, 2, False, constant=True)["pc_type"] == "redundant"
    assert default_linear_solver_options(2, 205_761, 2, True, constant=False)["pc_type"] == "redundant"
    assert default_linear_solver_options(1, 205_761, 2, True, constant=False)["pc_type"] == "lu"
    assert default_linear_solver_options(2, 4_000, 3, True, constant=True)["pc_type"] == "redundant"
    assert default_linear_solver_options(2, 500_000, 2, True, constant=True)["pc_type"] == "lu"
