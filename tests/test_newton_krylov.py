"""Nonlinear steps solved by Krylov methods preconditioned by the constant linear part (issue 13).

``nonlinear_method="krylov"``: GMRES (with transposes in the adjoint when
the Jacobian is not symmetric) on the exact Jacobian, the linear part factorised
once; against the chord path (a lagged, refactorised Newton matrix) the
loss is the same to round-off and the gradient to the adjoint's Krylov
tolerance.
"""

import numpy as np
import pytest
from mpi4py import MPI
from petsc4py import PETSc

from nonlinear_cases import build_problem

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.newton import KRYLOV_MIN_DOFS, default_nonlinear_method, krylov_options
from femnpde.fem.newton_krylov import EisenstatWalker
from femnpde.fem.solver import ThetaSolver
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.model.verification import taylor_test
from femnpde.obs.misfit import L2Misfit
from conftest import write_on_root

#: The relative gradient difference allowed against the chord path (adjoint ksp_rtol 1e-12: measured
#: 3e-13 .. 1.2e-12 relative at 861 and 13 041 dofs, see fem/linear_defaults.py).
GRADIENT_RTOL = 1e-10


def _lu_factorisations() -> int:
    return int(PETSc.Log.Event("MatLUFactorNum").getPerfInfo()["count"])


def _rf(method, problem=None, comm=MPI.COMM_WORLD, prefix="nk_", nx=8, n_steps=16):
    if problem is None:
        problem = paper_problem("allen-cahn", comm=comm, nx=nx, ny=2 * nx, n_steps=n_steps)
    ref = ThetaSolver(problem, prefix + "data_", nonlinear_method="chord")
    g = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    data = ref.forward(g).array[:, : problem.n_owned].copy()
    ref.destroy()
    solver = ThetaSolver(problem, prefix, nonlinear_method=method)
    net = ShallowNetwork(6, problem.mesh.geometry.dim, seed=5)
    return ReducedFunctional(solver, NetworkSource(problem, net), L2Misfit(problem, data)), net.params.copy()


@pytest.mark.parametrize("case", ["allen-cahn", "nonlinear_diffusion_p2"])
def test_krylov_matches_the_chord_and_factorises_nothing_per_step(case):
    """Loss to 1e-12, gradient to the adjoint tolerance; no LU factorisation after the first evaluation."""
    PETSc.Log.begin()
    problem = None if case == "allen-cahn" else build_problem(case)
    rf_c, theta = _rf("chord", problem, prefix=f"nk_c_{case[:2]}_")
    J_c, dJ_c = rf_c.value_and_gradient(theta)
    problem = None if case == "allen-cahn" else build_problem(case)
    rf_k, _ = _rf("krylov", problem, prefix=f"nk_k_{case[:2]}_")
    s = rf_k.solver
    assert s.nonlinear_method == "krylov"
    assert s.snes.getKSP().getType() == "fgmres" and s.adjoint_ksp.getType() == "gmres"
    assert s.symmetric == (case == "allen-cahn")  # nonlinear diffusion: GMRES with transposed adjoint solves
    rf_k.value_and_gradient(theta)  # sets up the preconditioner (one factorisation of the linear part)
    s.reset_statistics()
    lu0 = _lu_factorisations()
    J_k, dJ_k = rf_k.value_and_gradient(0.9 * theta)
    J_k, dJ_k = rf_k.value_and_gradient(theta)
    assert _lu_factorisations() == lu0
    assert abs(J_k - J_c) <= 1e-12 * abs(J_c), (J_k, J_c)
    assert np.linalg.norm(dJ_k - dJ_c) <= GRADIENT_RTOL * np.linalg.norm(dJ_c)
    st = s.statistics
    n = 2 * problem.time.n_steps if problem is not None else 2 * 16
    assert st["factorisations"] == 0 and st["forward_steps"] == n and st["adjoint_steps"] == n
    # Counted: Newton iterations, Krylov iterations per Newton system and per adjoint solve.
    # (a polishing iterate that does not lower the residual is dropped: a solve, no iteration)
    assert st["newton_iterations"] >= n and st["forward_linear_solves"] >= st["newton_iterations"]
    assert st["forward_krylov_iterations"] >= st["forward_linear_solves"]
    assert st["adjoint_krylov_iterations"] >= n
    assert st["jacobian_assemblies"] == st["forward_linear_solves"] + n
    rf_c.solver.destroy()
    s.destroy()


def test_krylov_gradient_check_and_rank_agreement():
    """Taylor rate 2, central finite differences along two directions, 1 vs 2 ranks to the tolerance."""
    rf, theta = _rf("krylov", prefix="nk_tay_")
    rng = np.random.default_rng(0)
    dtheta = rng.standard_normal(theta.size)
    result = taylor_test(rf, theta, dtheta, n_steps=4)
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates
    _, dJ = rf.value_and_gradient(theta)
    for d in (dtheta, rng.standard_normal(theta.size)):
        for h in (1e-3, 1e-4):
            fd = (rf(theta + h * d) - rf(theta - h * d)) / (2 * h)
            assert fd == pytest.approx(float(dJ @ d), rel=1e-5), h
    rf_self, _ = _rf("krylov", comm=MPI.COMM_SELF, prefix="nk_self_")
    J_self, dJ_self = rf_self.value_and_gradient(theta)
    assert abs(rf(theta) - J_self) <= 1e-12 * abs(J_self)
    assert np.linalg.norm(dJ - dJ_self) <= GRADIENT_RTOL * np.linalg.norm(dJ_self)
    rf.solver.destroy()
    rf_self.solver.destroy()


def test_krylov_with_checkpointing_is_identical():
    problem = paper_problem("allen-cahn", nx=6, ny=12, n_steps=16)
    rf_m, theta = _rf("krylov", problem, prefix="nk_ckm_")
    J_m, dJ_m = rf_m.value_and_gradient(theta)
    solver = ThetaSolver(problem, "nk_ckc_", nonlinear_method="krylov", state_storage={"snapshots": 3})
    rf_c = ReducedFunctional(solver, rf_m.source, rf_m.misfit)
    J_c, dJ_c = rf_c.value_and_gradient(theta)
    # Issue 13's bound: 1e-14 relative.  Not bitwise: with the Schur-complement preconditioner on several
    # ranks a recomputed state repeats the original to round-off; and on one rank the two solver objects'
    # forward sweeps themselves (no recomputation involved) have been seen to differ by 3e-16 in u^16 in
    # 3 of 17 runs of `pytest test_newton_krylov.py test_krylov_3d.py test_krylov_adjoint.py` (never with
    # this file alone; cause not found, see the session-9 note), which the bitwise assertion made flaky.
    assert J_m == J_c
    assert np.linalg.norm(dJ_m - dJ_c) <= 1e-14 * np.linalg.norm(dJ_m), np.linalg.norm(dJ_m - dJ_c)
    rf_m.solver.destroy()
    solver.destroy()


def test_krylov_skips_roundoff_polishing_and_warm_starts_the_adjoint():
    """No polishing iteration after a Newton step that left round-off; adjoints start from 2 λ^{n+1} − λ^{n+2}.

    Counts, not timings: the previous code took one more Newton iteration per step (a polishing
    iteration that repeated the round-off floor) and started every adjoint solve from zero.
    """
    rf, theta = _rf("krylov", prefix="nk_cnt_", nx=16, n_steps=16)
    s = rf.solver
    s.reset_statistics()
    rf.value_and_gradient(theta)
    st = s.statistics
    per_step = st["newton_iterations"] / st["forward_steps"]
    per_adjoint = st["adjoint_krylov_iterations"] / st["adjoint_steps"]
    # measured (1 and 2 ranks): 4.8 Newton iterations per step (5.4 before), 21.1 Krylov iterations per adjoint
    # solve (23.0 before)
    assert per_step <= 5.0, st
    assert per_adjoint <= 22.0, st
    s.destroy()


@pytest.mark.serial
def test_roundoff_model_of_the_forcing_term():
    """The round-off test on residual norms measured at 205 761 dofs (bench/scaling.py --case ac2d)."""
    ew = EisenstatWalker()
    ew.reset(1e-17)
    assert not ew.limited_by_roundoff(4.7e-6)  # no model before the second Newton step
    ew(8.6e-4, 1e-14)
    assert not ew.limited_by_roundoff(4.7e-6)
    ew(4.7e-6, 1e-14)
    assert not ew.limited_by_roundoff(2.1e-10)  # quadratic convergence: not round-off
    ew(2.1e-10, 1e-14)
    assert ew.limited_by_roundoff(1.7e-15)  # the step should have left ~5e-18
    ew.reset(1e-17)
    for f in (9.6e-3, 1.2e-4, 3.1e-8):
        ew(f, 1e-14)
    assert not ew.limited_by_roundoff(3.1e-15)  # 13 041 dofs: the model allows 3.9e-15, polish once (-> 1.7e-16)


def test_auto_keeps_small_problems_on_the_chord():
    assert default_nonlinear_method(KRYLOV_MIN_DOFS - 1, True) == "chord"
    assert default_nonlinear_method(KRYLOV_MIN_DOFS, True) == "krylov"
    assert default_nonlinear_method(10 * KRYLOV_MIN_DOFS, False) == "chord"  # options given: the chord's
    s = ThetaSolver(paper_problem("allen-cahn", nx=4, ny=8, n_steps=2), "nk_auto_")
    assert s.nonlinear_method == "chord"
    s.destroy()
    heat = ThetaSolver(paper_problem("heat", nx=4, ny=8, n_steps=2), "nk_heat_", nonlinear_method="krylov")
    assert heat.nonlinear_method is None  # a constant Jacobian has no Newton systems
    heat.destroy()


def test_newton_systems_apply_the_linear_part_once_per_iteration():
    """The Newton systems' Krylov solve is FGMRES (session 10): right-preconditioned GMRES applied the
    preconditioner (a solve with the factorised linear part: an inner KSP) once more per system for its
    solution update.  Counted over a forward sweep by PETSc's ``PCApply`` event (the outer one: PETSc's
    log does not count the inner solve's nested application)."""
    PETSc.Log.begin()
    event = PETSc.Log.Event("PCApply")
    problem = paper_problem("allen-cahn", nx=8, ny=16, n_steps=8)
    s = ThetaSolver(problem, "nk_apply_", nonlinear_method="krylov")
    g = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    s.forward(g)  # set-up: the linear part's factorisation
    s.reset_statistics()
    before = event.getPerfInfo()["count"]
    s.forward(0.9 * g)
    applied = event.getPerfInfo()["count"] - before
    st = s.statistics
    s.destroy()
    assert st["forward_linear_solves"] > 0 and st["forward_krylov_iterations"] > st["forward_linear_solves"], st
    assert applied == st["forward_krylov_iterations"], (applied, st)


@pytest.mark.serial
def test_preconditioner_options():
    """A direct solver becomes PCKSP's inner solver (any exact default plugs in); an iterative one its PC."""
    lu = {"ksp_type": "preonly", "pc_type": "redundant", "redundant_pc_type": "lu"}
    opts = krylov_options(lu, symmetric=True)
    assert opts["ksp_type"] == "fgmres" and opts["pc_type"] == "ksp"
    assert opts["ksp_ksp_type"] == "preonly" and opts["ksp_pc_type"] == "redundant"
    assert opts["ksp_redundant_pc_type"] == "lu"
    it = krylov_options({"ksp_type": "cg", "ksp_rtol": "1e-10", "pc_type": "bjacobi", "sub_pc_type": "icc"}, False)
    assert it["ksp_type"] == "fgmres" and it["pc_type"] == "bjacobi" and it["sub_pc_type"] == "icc"
    assert it["ksp_rtol"] != "1e-10"


def test_nonlinear_method_name_is_checked():
    problem = paper_problem("allen-cahn", nx=4, ny=8, n_steps=2)
    with pytest.raises(ValueError, match=r"nonlinear_method 'krylv' is not one of \['auto', 'chord', 'krylov'\]"):
        ThetaSolver(problem, "nk_bad_", nonlinear_method="krylv")


def test_nonlinear_method_config_error_exits_2(shared_tmp_path, capsys):
    from femnpde.app.cli import main

    cfg = write_on_root(shared_tmp_path / "bad.toml",
                        '[pde]\npreset = "allen-cahn"\n[solver]\nnonlinear_method = "krylv"\n')
    assert main(["train", str(cfg), "--out", str(shared_tmp_path / "run"), "--quiet"]) == 2
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert "solver.nonlinear_method" in err and "krylv" in err and "krylov" in err, err
