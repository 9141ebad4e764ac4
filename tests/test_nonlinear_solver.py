"""The nonlinear solver path: residual splitting, lagged Newton matrix, SNES options, adjoint, failures.

Also: the problem's coefficients are consistent after a sweep on the
matrix-vector fast path (issue 9).
"""

import json
import pathlib

import numpy as np
import pytest
import ufl
import dolfinx.fem
import dolfinx.fem.petsc
from mpi4py import MPI
from petsc4py import PETSc

from nonlinear_cases import CASES, build_problem, checks, reduced

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.forms import split_residual
from femnpde.fem.solver import SolverError, ThetaSolver
from femnpde.model.reduced import FunctionSource
from conftest import before_evaluation, write_on_root

REFERENCE = pathlib.Path(__file__).parent.parent / "bench" / "results"
FAST_CASES = [c for c in CASES if c != "ac_paper_861"]


def _random_state(problem, seed=0):
    rng = np.random.default_rng(seed + problem.comm.rank)
    for f in (problem.u, problem.u_prev, problem.g, problem.g_prev):
        f.x.array[:] = 0.5 * rng.standard_normal(f.x.array.size)
        f.x.scatter_forward()
    for bc in problem.bcs:
        bc.set(problem.u.x.array)
    problem.u.x.scatter_forward()
    problem.t.value = 0.3
    problem.t_prev.value = 0.2


@pytest.mark.parametrize("name", FAST_CASES)
def test_split_adds_up_to_the_residual_and_jacobian(name):
    """linear + step + nonlinear parts reproduce F and ∂F/∂u at a random state (round-off)."""
    problem = build_problem(name)
    solver = ThetaSolver(problem, f"split_{name}_")
    step = solver._step
    assert step is not None
    _random_state(problem)
    step._step_constant()
    b = step._b.duplicate()
    step._snes_function(None, problem.u.x.petsc_vec, b)
    ref = dolfinx.fem.petsc.create_vector(problem.V)
    with ref.localForm() as loc:
        loc.set(0.0)
    dolfinx.fem.petsc.assemble_vector(ref, problem.forms.residual)
    ref.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
    dolfinx.fem.petsc.set_bc(ref, problem.bcs, problem.u.x.petsc_vec, -1.0)
    b.axpy(-1.0, ref)
    assert b.norm() <= 1e-13 * ref.norm()
    J = step._J
    step._jacobian_into(J)
    A = dolfinx.fem.petsc.assemble_matrix(problem.forms.jacobian, bcs=problem.bcs)
    A.assemble()
    D = J.copy()
    D.axpy(-1.0, A)
    assert D.norm() <= 1e-13 * A.norm()
    for obj in (b, ref, A, D):
        obj.destroy()
    solver.destroy()


def test_split_of_allen_cahn_leaves_only_the_cubic_term():
    p = paper_problem("allen-cahn", nx=4, ny=8, n_steps=2)
    split = split_residual(p.F_ufl, p.u, {p.u, p.u_prev, p.g, p.g_prev}, {p.t, p.t_prev})
    assert split.n_terms == {"linear": 5, "step": 0, "nonlinear": 1}
    (itg,) = split.nonlinear.integrals()
    assert itg.metadata()["quadrature_degree"] == 4  # the degree of the whole residual, pinned


@pytest.mark.parametrize("name", CASES)
def test_gradients_equal_the_pre_issue12_values(name):
    """Loss, gradient, Taylor remainders and a finite difference as recorded with the solver of main
    before issue 12 (exact Newton, LU at every iteration): 1e-9 relative."""
    path = REFERENCE / f"nonlinear_reference_{MPI.COMM_WORLD.size}.json"
    if not path.exists():
        pytest.skip(f"no reference values for {MPI.COMM_WORLD.size} ranks")
    ref = json.loads(path.read_text())[name]
    new = checks(name)
    g, g_ref = np.array(new["dJ"]), np.array(ref["dJ"])
    assert abs(new["J"] - ref["J"]) <= 1e-9 * abs(ref["J"])
    assert np.linalg.norm(g - g_ref) <= 1e-9 * np.linalg.norm(g_ref)
    # Remainders are differences of J values that the reference itself reproduces
    # only to ~1e-13 (main on 1 vs 2 ranks: remainders differ by up to 2.3e-9).
    assert np.allclose(new["remainders"], ref["remainders"], rtol=5e-9, atol=0)
    assert abs(new["fd"] - ref["fd"]) <= 1e-9 * abs(ref["fd"])
    assert np.all(np.array(new["rates"]) > 1.9)


def test_lagged_matrix_gives_the_exact_newton_result():
    """Default (lagged, accelerated chord) and exact Newton (refresh every iteration) agree to round-off."""
    out = []
    for ratio in (0.03, 0.0):
        problem = build_problem("ac_p2_cn")
        solver = ThetaSolver(problem, f"lag_{ratio}_".replace(".", "p"), jacobian_refresh_ratio=ratio)
        rf, theta0 = reduced(problem, solver)
        out.append((rf(theta0), rf.derivative(), solver.statistics))
        solver.destroy()
    (J1, g1, s1), (J0, g0, s0) = out
    assert abs(J1 - J0) <= 1e-12 * abs(J0)
    assert np.linalg.norm(g1 - g0) <= 1e-11 * np.linalg.norm(g0)
    # Exact Newton refactorises at every iteration (but the polishing ones); the lagged matrix rarely.
    assert s0["factorisations"] >= s0["newton_iterations"] - 2 * s0["forward_steps"]
    assert s1["factorisations"] < s1["newton_iterations"] / 4


def test_factorisation_is_reused_across_sweeps():
    problem = paper_problem("allen-cahn", nx=8, ny=16, n_steps=64)
    solver = ThetaSolver(problem, "reuse_nl_")
    rf, theta0 = reduced(problem, solver)
    rf.value_and_gradient(theta0)
    solver.reset_statistics()
    rf.value_and_gradient(theta0 + 1e-3)
    st = solver.statistics
    assert st["forward_steps"] == 64 and st["adjoint_steps"] == 64
    assert st["factorisations"] <= 32  # main: one per Newton iteration and adjoint step, 256 here
    # One triangular solve per iteration (plus at most one per step for a discarded polishing iteration).
    assert st["newton_iterations"] <= st["forward_krylov_iterations"] <= st["newton_iterations"] + 64
    assert st["adjoint_krylov_iterations"] <= 64 * 12
    solver.destroy()


def test_snes_options_are_honoured():
    """-{prefix}forward_snes_type newtonls (PETSc's Newton with line search) gives the same gradient."""
    grads = []
    for prefix, opts in (("snesdef_", {}), ("snesls_", {"forward_snes_type": "newtonls"})):
        o = PETSc.Options()
        for k, v in opts.items():
            o[f"{prefix}{k}"] = v
        problem = build_problem("network_in_reaction")
        solver = ThetaSolver(problem, prefix)
        for k in opts:
            o.delValue(f"{prefix}{k}")
        assert solver.snes.getType() == (opts.get("forward_snes_type") or "python")
        rf, theta0 = reduced(problem, solver)
        rf(theta0)
        grads.append(rf.derivative())
        solver.destroy()
    assert np.linalg.norm(grads[1] - grads[0]) <= 1e-9 * np.linalg.norm(grads[0])


#: Forward failures: (nonlinear_method, options prefix, the option limited to one iteration, message).
FORWARD_FAILURES = {
    "snes": ("chord", "fail_nl_", "forward_snes_max_it", r"time step 1 \(t = 0.25\).*DIVERGED_MAX_IT"),
    "krylov": ("krylov", "nk_fail_", "forward_ksp_max_it",
               r"time step 1 \(t = 0.25\).*DIVERGED_LINEAR_SOLVE.*DIVERGED_(MAX_IT|ITS)"),
}


@pytest.mark.parametrize("path", sorted(FORWARD_FAILURES))
def test_newton_failure_names_step_time_and_reason(path):
    """A Newton step that fails (SNES on the chord path, its Krylov solve on the Krylov path) names step, time, reason."""
    method, prefix, option, message = FORWARD_FAILURES[path]
    problem = paper_problem("allen-cahn", nx=4, ny=8, n_steps=4)
    o = PETSc.Options()
    o[prefix + option] = 1
    solver = ThetaSolver(problem, prefix, nonlinear_method=method)
    o.delValue(prefix + option)
    g = FunctionSource(problem, target_source("difficult")).values()
    with pytest.raises(SolverError, match=message):
        solver.forward(g)
    solver.destroy()


def _limit_snes(run):
    run.rf.solver.snes.setTolerances(max_it=1)


def _limit_adjoint_ksp(run):
    assert run.rf.solver.nonlinear_method == "krylov"
    run.rf.solver.adjoint_ksp.setTolerances(max_it=1)


#: Training failures from epoch 5 on: ([solver] section, what is limited to one iteration, message parts).
TRAINING_FAILURES = {
    "snes": ("", _limit_snes, ["time step 1", "t = 0.125", "DIVERGED_MAX_IT"]),
    "krylov-adjoint": ('[solver]\nnonlinear_method = "krylov"\n', _limit_adjoint_ksp,
                       ["adjoint linear solve at time step 8", "DIVERGED_MAX_IT"]),
}


@pytest.mark.parametrize("path", sorted(TRAINING_FAILURES))
def test_newton_failure_in_training_exits_3_and_keeps_checkpoint(path, shared_tmp_path, monkeypatch, capsys):
    """A real solver failure at epoch 5 (SNES, or the Krylov path's adjoint): exit 3, the reason, checkpoint 4 kept."""
    from femnpde.app.cli import main
    from femnpde.io.output import load_checkpoint

    section, limit, parts = TRAINING_FAILURES[path]
    cfg = write_on_root(
        shared_tmp_path / "ac.toml",
        '[mesh]\ncells = [5, 10]\n[pde]\npreset = "allen-cahn"\n[time]\nn_steps = 8\n[network]\nneurons = 8\n'
        + section + '[optimizer]\nkind = "adam"\nlr = 0.05\n[run]\niterations = 10\ncheckpoint_every = 2\n',
    )

    def limited(n, run):
        if n == 6:  # from epoch 5 on
            limit(run)

    before_evaluation(monkeypatch, limited)
    rc = main(["train", str(cfg), "--out", str(shared_tmp_path / "run"), "--quiet"])
    assert rc == 3
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert all(part in err for part in parts), err
        assert "last good checkpoint" in err
    ck = load_checkpoint(shared_tmp_path / "run" / "checkpoint.npz", MPI.COMM_WORLD)
    assert ck["epoch"] == 4


def test_forward_step_recomputes_a_level():
    """forward_step(n, source, u_prev) reproduces the sweep's state (what a checkpointing storage needs)."""
    problem = build_problem("nonlinear_diffusion_p2")
    solver = ThetaSolver(problem, "onestep_")
    g = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    states = solver.forward(g)
    u3 = states.load(3).copy()
    solver.forward_step(3, g, u_prev=states.load(2).copy())
    # The lagged Newton matrix differs between the two solves: equal to the solver's round-off polish.
    assert np.allclose(problem.u.x.array, u3, rtol=0, atol=1e-12 * np.abs(u3).max())
    solver.destroy()


def _assembled_g_and_t(problem):
    """(∫ g (1 + x) + g_prev dx, t, t_prev) assembled from the problem's Functions and constants."""
    x = problem.x
    form = dolfinx.fem.form((problem.g * (1 + x[0]) + problem.g_prev) * ufl.dx)
    value = problem.comm.allreduce(dolfinx.fem.assemble_scalar(form), op=MPI.SUM)
    return value, float(problem.t.value), float(problem.t_prev.value)


def _check_consistent(problem, g, level):
    got_g, got_t, got_tp = _assembled_g_and_t(problem)
    ng = problem.n_owned_source
    for f, n in ((problem.g, level), (problem.g_prev, level - 1)):
        f.x.array[:ng] = g[n]
        f.x.scatter_forward()
    want_g, _, _ = _assembled_g_and_t(problem)
    times = problem.time.times
    assert (got_t, got_tp) == (times[level], times[level - 1])
    assert got_g == pytest.approx(want_g, rel=1e-14)  # stale ghosts of g: wrong on 2 ranks


def test_coefficients_consistent_after_fast_path_sweeps():
    """After a forward/adjoint sweep on the matrix-vector path, g's ghosts and the times are those of the
    last step, so any later assembly is right (on main they were stale: wrong on 2 ranks)."""
    problem = paper_problem("heat", nx=6, ny=12, n_steps=5, theta=0.5)
    solver = ThetaSolver(problem, "consistent_")
    assert solver.uses_linear_fast_path
    g = FunctionSource(problem, target_source("difficult")).values()
    solver.forward(g)
    _check_consistent(problem, g, 5)
    solver.adjoint(g, lambda n, u, out: out.__iadd__(u))
    _check_consistent(problem, g, 1)
    solver.destroy()


def test_adjoint_krylov_failure_names_step_time_and_reason():
    problem = paper_problem("allen-cahn", nx=4, ny=8, n_steps=16)
    o = PETSc.Options()
    o["kfail_adjoint_ksp_max_it"] = 1
    o["kfail_adjoint_ksp_rtol"] = 1e-300
    solver = ThetaSolver(problem, "kfail_")
    for k in ("kfail_adjoint_ksp_max_it", "kfail_adjoint_ksp_rtol"):
        o.delValue(k)
    g = FunctionSource(problem, target_source("difficult")).values()
    solver.forward(g)
    with pytest.raises(SolverError, match=r"adjoint linear solve at time step 16 \(t = 1\).*DIVERGED_(MAX_IT|ITS)"):
        solver.adjoint(g, lambda n, u, out: out.__iadd__(u))
    solver.destroy()


@pytest.mark.parametrize("name,symmetric", [("ac_p1_be", True), ("nonlinear_diffusion_p2", False)])
def test_symmetry_detection(name, symmetric):
    """Allen–Cahn's step Jacobian is symmetric (the adjoint uses plain solves); (a + b u²)∇u·∇v gives a
    non-symmetric one (transpose solves)."""
    problem = build_problem(name)
    solver = ThetaSolver(problem, f"sym_{name}_")
    assert solver._step.symmetric is symmetric
    solver.destroy()


@pytest.mark.parametrize("name", FAST_CASES)
def test_csr_jacobian_equals_the_petsc_assembly(name):
    """The step Jacobian through DOLFINx's CSR assembly (fem/csr_jacobian.py: in place on one rank, one
    MatSetValuesCOO on several) is the PETSc-assembled one (∂N/∂u inserted cell by cell, Dirichlet rows and columns zeroed) on the same pattern:
    bitwise on one rank; on several, where the ghost rows' entries travel to their owners, to round-off (a row
    shared between ranks sums the two ranks' cells in another order).  Checked on 2 ranks to fail when the COO
    pairs leave out the ghost rows (error 2.9e-2 relative) or the ghost Dirichlet dofs are not marked (5 of 8)."""
    problem = build_problem(name)
    comm = problem.comm
    solver = ThetaSolver(problem, f"csr_{name}_")
    step = solver._step
    assert step._csr_jac is not None  # the fast path is taken on any number of ranks
    imap = problem.V.dofmap.index_map
    assert comm.size == 1 or comm.allreduce(imap.num_ghosts) > 0  # shared rows exist
    _random_state(problem)
    step._jacobian_into(step._J)
    fast = step._J.getValuesCSR()
    csr, step._csr_jac = step._csr_jac, None
    M = step._A_bc.duplicate(copy=True)
    step._jacobian_into(M)
    step._csr_jac = csr
    ref = M.getValuesCSR()
    same_pattern = comm.allreduce(all(np.array_equal(a, b) for a, b in zip(fast[:2], ref[:2])), op=MPI.LAND)
    scale = comm.allreduce(np.abs(ref[2]).max(initial=0.0), op=MPI.MAX)
    err = comm.allreduce(np.abs(fast[2] - ref[2]).max(initial=0.0) if same_pattern else np.inf, op=MPI.MAX)
    M.destroy()
    solver.destroy()
    assert same_pattern and scale > 0
    if comm.size == 1:
        assert err == 0.0
    else:
        assert err <= 1e-14 * scale


def test_small_systems_on_several_ranks_use_a_redundant_lu():
    from femnpde.fem.linear_defaults import default_linear_solver_options

    assert default_linear_solver_options(1, 861, 2)["pc_type"] == "lu"
    two = default_linear_solver_options(2, 13_041, 2)
    assert two["pc_type"] == "redundant" and two["redundant_pc_type"] == "lu"
    assert two["redundant_pc_factor_mat_solver_type"] == "petsc"
    assert default_linear_solver_options(2, 4_000, 3)["pc_type"] == "redundant"
    assert default_linear_solver_options(2, 20_000, 3)["pc_type"] == "lu"  # MUMPS (or SuperLU_dist) in 3D
    assert default_linear_solver_options(2, 500_000, 2)["pc_type"] == "lu"  # MUMPS above 300 000 in 2D


def test_csr_jacobian_of_a_boundary_nonlinearity():
    """A nonlinear term on the boundary only (an exterior facet integral): ∂N/∂u has a smaller pattern than the
    Jacobian (fem/csr_jacobian.py's COO pairs cover A_bc's pattern and ∂N/∂u's); the step Jacobian still equals
    the full assembly, on any number of ranks."""
    import dolfinx.mesh
    from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid

    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 5, 5)

    def residual(u, v, g, t, x):
        return 0.1 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx + u**3 * v * ufl.ds - g * v * ufl.dx

    problem = ParabolicProblem(mesh, residual, time=TimeGrid(0.5, 4), initial_condition=lambda x: x[0],
                               dirichlet=[Dirichlet(lambda x: np.isclose(x[1], 0.0), 0.0)])
    solver = ThetaSolver(problem, "csr_boundary_")
    step = solver._step
    assert step._csr_jac is not None
    if problem.comm.size == 1:  # in place, through the position map
        assert step._csr_jac._pos is not None and step._csr_jac._pos.size > 0
    _random_state(problem)
    step._jacobian_into(step._J)
    A = dolfinx.fem.petsc.assemble_matrix(problem.forms.jacobian, bcs=problem.bcs)
    A.assemble()
    D = step._J.copy()
    D.axpy(-1.0, A)
    assert D.norm() <= 1e-14 * A.norm()
    for obj in (A, D):
        obj.destroy()
    solver.destroy()
