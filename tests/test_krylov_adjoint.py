"""Iterative solvers with exact adjoints: symmetric untransposed adjoint solves, transpose checks, tolerances."""

import numpy as np
import pytest
import ufl
from mpi4py import MPI

from femnpde.app.scenarios import paper_mesh, paper_problem, target_source
from femnpde.fem.linear_defaults import default_linear_solver_options
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid
from femnpde.fem.solver import ThetaSolver
from femnpde.model.verification import taylor_test
from conftest import network_fit

CG_AMG = {"ksp_type": "cg", "pc_type": "hypre", "pc_hypre_type": "boomeramg", "ksp_rtol": "1e-10"}
CG_GAMG = {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": "1e-10"}
#: The iterative default for large 3D systems (CG + block Jacobi / ICC(0)), used here on a small 2D mesh.
ITERATIVE_3D = default_linear_solver_options(1, 300_000, 3, symmetric=True)
#: Relative gradient tolerance of the iterative defaults (ksp_rtol = 1e-10), see fem/linear_defaults.py.
KRYLOV_GRADIENT_RTOL = 1e-8


def _burgers(u, v, g, t, x):
    return 0.01 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + u * u.dx(0) * v * ufl.dx - g * v * ufl.dx


def test_symmetry_is_detected():
    for pde in ("heat", "allen-cahn"):
        s = ThetaSolver(paper_problem(pde, nx=4, ny=8, n_steps=2), f"sym_{pde[0]}_")
        assert s.symmetric, pde
        s.destroy()
    mesh = paper_mesh(MPI.COMM_WORLD, 4, 8)
    p = ParabolicProblem(mesh, _burgers, time=TimeGrid(1.0, 2), initial_condition=lambda x: 0 * x[0],
                         dirichlet=[Dirichlet("boundary", 0.0)])
    s = ThetaSolver(p, "sym_b_")
    assert not s.symmetric  # u ∂x u: its Jacobian vanishes at u = 0, not at the random probe state
    s.destroy()


def test_nonsymmetric_with_hypre_is_refused_before_running():
    mesh = paper_mesh(MPI.COMM_WORLD, 4, 8)
    p = ParabolicProblem(mesh, _burgers, time=TimeGrid(1.0, 2), initial_condition=lambda x: 0 * x[0],
                         dirichlet=[Dirichlet("boundary", 0.0)])
    with pytest.raises(ValueError, match="pc_type 'hypre'.*no effective transpose.*gamg"):
        ThetaSolver(p, "nohypre_", {"ksp_type": "gmres", "pc_type": "hypre"})


def _rf(pde, options, comm=MPI.COMM_WORLD, prefix="kr_", nx=8, n_steps=16, storage="memory"):
    # 16 steps: Allen–Cahn's step Jacobian is then positive definite (1/dt > 1/ε²), as CG needs.
    problem = paper_problem(pde, comm=comm, nx=nx, ny=2 * nx, n_steps=n_steps)
    return network_fit(problem, target_source("difficult"), prefix, options, state_storage=storage)


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
@pytest.mark.parametrize("options", [CG_AMG, CG_GAMG, ITERATIVE_3D], ids=["cg-hypre", "cg-gamg", "cg-bjacobi-icc"])
def test_krylov_gradient_matches_direct_and_adjoint_is_untransposed(pde, options):
    rf_lu, theta = _rf(pde, None, prefix=f"kr_lu_{pde[0]}_")
    J_lu, dJ_lu = rf_lu.value_and_gradient(theta)
    tag = options["pc_type"]
    rf_k, _ = _rf(pde, options, prefix=f"kr_{tag}_{pde[0]}_")
    J_k, dJ_k = rf_k.value_and_gradient(theta)
    assert abs(J_k - J_lu) <= KRYLOV_GRADIENT_RTOL * abs(J_lu)
    assert np.linalg.norm(dJ_k - dJ_lu) <= KRYLOV_GRADIENT_RTOL * np.linalg.norm(dJ_lu)
    assert rf_k.solver.symmetric
    if rf_k.solver.snes is None:  # constant Jacobian: the solver's own linear solves
        its = rf_k.solver.linear_iterations
        fwd, adj = its.forward, its.adjoint
        assert len(adj) == 16 and not its.transposed  # symmetric: plain solves only
        # The adjoint's Krylov work stays at the forward's per-solve level (warm start from λ^{n+1}).
        assert np.mean(adj) <= 1.5 * np.mean(fwd) + 1, (fwd, adj)
    else:  # nonlinear steps (fem/newton.py) detect the symmetry too and solve untransposed
        assert rf_k.solver._step.symmetric
    rf_lu.solver.destroy()
    rf_k.solver.destroy()


@pytest.mark.parametrize("pde", ["heat", "allen-cahn"])
@pytest.mark.parametrize("options", [CG_AMG, ITERATIVE_3D], ids=["cg-hypre", "cg-bjacobi-icc"])
def test_gradcheck_with_iterative_solver_and_rank_agreement(pde, options):
    """Taylor test with the iterative defaults; the gradient on this rank count agrees with the serial one.

    Block Jacobi's preconditioner depends on the partition (one block per rank), so the 1 vs 2
    rank agreement is the Krylov tolerance's, not round-off.
    """
    tag = options["pc_type"]
    rf, theta = _rf(pde, options, prefix=f"kr_tay_{tag}_{pde[0]}_")
    dtheta = np.random.default_rng(0).standard_normal(theta.size)
    result = taylor_test(rf, theta, dtheta, n_steps=4)
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates
    _, dJ = rf.value_and_gradient(theta)
    rf_self, _ = _rf(pde, options, comm=MPI.COMM_SELF, prefix=f"kr_self_{tag}_{pde[0]}_")
    _, dJ_self = rf_self.value_and_gradient(theta)
    assert np.linalg.norm(dJ - dJ_self) <= KRYLOV_GRADIENT_RTOL * np.linalg.norm(dJ_self)
    # Finite differences along dtheta, central, h = 1e-4.
    h = 1e-4
    fd = (rf(theta + h * dtheta) - rf(theta - h * dtheta)) / (2 * h)
    assert fd == pytest.approx(float(dJ @ dtheta), rel=1e-5)
    rf.solver.destroy()
    rf_self.solver.destroy()


def test_krylov_with_checkpointing_is_identical():
    """Checkpointing recomputes states bitwise: the forward's Krylov solves start from u^{n-1} whatever
    the adjoint's guess, so the gradient does not depend on the state storage."""
    rf_m, theta = _rf("heat", CG_AMG, prefix="kr_ck_m_", n_steps=16)
    rf_c, _ = _rf("heat", CG_AMG, prefix="kr_ck_c_", n_steps=16, storage={"snapshots": 3})
    for guess in ("projection", "extrapolate", "previous"):
        for rf in (rf_m, rf_c):
            rf.solver.krylov_guess = guess
        theta = 1.01 * theta  # (not the cached evaluation)
        J_m, dJ_m = rf_m.value_and_gradient(theta)
        J_c, dJ_c = rf_c.value_and_gradient(theta)
        # The bound (1e-14 relative): two solver objects differ in memory layout, and the adjoint's
        # vector kernels may then sum in another order (seen: 2 in 13 runs of the suite, a few 1e-16).
        assert J_m == J_c, guess
        assert np.linalg.norm(dJ_m - dJ_c) <= 1e-14 * np.linalg.norm(dJ_m), guess
        # the same forward solves; 3 snapshots for 16 steps repeat some of them during the adjoint sweep
        its_m, its_c = rf_m.solver.linear_iterations, rf_c.solver.linear_iterations
        assert its_m.forward == its_c.forward and len(its_c.forward) == len(its_c.adjoint) == 16, (its_m, its_c)
        assert not its_m.recomputed and its_c.recomputed, (its_m, its_c)
    rf_m.solver.destroy()
    rf_c.solver.destroy()


def test_defaults_table():
    assert default_linear_solver_options(1, 10_000, 2)["pc_factor_mat_solver_type"] == "petsc"
    # 2D up to 300 000 unknowns: PETSc's LU (27 ms per solve against MUMPS' 50 ms at 205 761), on
    # several ranks on every rank; MUMPS above.
    assert default_linear_solver_options(1, 205_761, 2)["pc_factor_mat_solver_type"] == "petsc"
    two = default_linear_solver_options(2, 205_761, 2)
    assert two["pc_type"] == "redundant" and two["redundant_pc_factor_mat_solver_type"] == "petsc"
    assert default_linear_solver_options(2, 500_000, 2)["pc_type"] == "lu"
    big2d = default_linear_solver_options(2, 2_000_000, 2, symmetric=True)
    assert big2d["ksp_type"] == "cg" and big2d["pc_type"] in ("hypre", "gamg")
    assert default_linear_solver_options(1, 2_000_000, 2, symmetric=False)["pc_type"] == "gamg"
    # 3D beyond 50 000: CG + symmetric additive Schwarz (overlap 1, ICC(1) blocks); GMRES + block
    # Jacobi/ILU(0) when not symmetric.
    big3d = default_linear_solver_options(1, 300_000, 3, symmetric=True)
    assert big3d["ksp_type"] == "cg" and big3d["pc_type"] == "asm" and big3d["pc_asm_type"] == "basic"
    assert big3d["pc_asm_overlap"] == "1" and big3d["sub_pc_type"] == "icc" and big3d["sub_pc_factor_levels"] == "1"
    # ... on several ranks restricted ASM (iterations flat in the subdomains), hence (flexible) GMRES,
    # right-preconditioned
    par3d = default_linear_solver_options(2, 300_000, 3, symmetric=True)
    assert par3d["ksp_type"] == "fgmres" and par3d["ksp_pc_side"] == "right" and par3d["pc_asm_type"] == "restrict"
    assert par3d["pc_asm_overlap"] == "1" and par3d["sub_pc_type"] == "icc" and par3d["sub_pc_factor_levels"] == "1"
    nonsym3d = default_linear_solver_options(1, 300_000, 3, symmetric=False)
    assert nonsym3d["ksp_type"] == "gmres" and nonsym3d["sub_pc_type"] == "ilu"
