"""Scaling of the PDE part (forward + adjoint) at >= 200 000 dofs, 1 and 2 ranks.

One configuration per process (so that the peak RSS belongs to it), the row
appended to a JSON file on rank 0; ``--report`` prints the table with the
speed-ups against the fastest single-rank configuration of each case::

    scripts/env-run python3 bench/scaling.py --case heat2d --solver lu
    scripts/env-run mpirun -n 2 python3 bench/scaling.py --case heat2d --solver lu
    scripts/env-run python3 bench/scaling.py --case heat2d --solver lu --storage 8
    scripts/env-run python3 bench/scaling.py --report

Cases (P1, backward Euler, PDE part only: the source is the target ``g*``
sampled on the grid, no network):

* ``heat2d`` / ``ac2d``: the paper's rectangle, 320 x 640 squares (321 x 641 = 205 761 dofs);
* ``heat3d`` / ``ac3d``: ``meshes/box_cavity`` refined 3 times (~250 000 dofs).

For each: the median (``--repeats``) time of the loss (forward sweep +
misfit) and of loss + gradient (+ adjoint sweep), their ratio, the linear
iterations per solve, the process's peak RSS per rank, and the state
storage's predicted and measured peak (``--storage K``: K snapshots in memory;
``--storage memory``: every level).  ``--accuracy`` instead prints the
relative gradient error of CG + AMG against LU for several ``ksp_rtol``;
``--solvers A B ...`` the set-up time and the per-solve wall and CPU time of
the named solvers on the case's step matrix (a random right-hand side, 16
solves): what the per-step cost of each choice is, without a sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
import tracemalloc
from pathlib import Path

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from femnpde import defaults as D
from femnpde.app.scenarios import paper_problem
from femnpde.fem.linear_defaults import default_linear_solver_options
from femnpde.fem.problem import ParabolicProblem
from femnpde.fem.solver import FORWARD_GUESSES, ThetaSolver
from femnpde.model.reduced import adjoint_with_loss, streamed_forward
from femnpde.obs.misfit import L2Misfit

from _scaling_cases import SOLVERS, build, target  # noqa: E402  (bench/, the script's directory)

HERE = Path(__file__).resolve().parent
RESULTS = HERE / "results" / "scaling.json"
def _row_key(r: dict) -> tuple:
    """What identifies a row (rows written before a key existed: implicit; Allen-Cahn implicit ran the chord)."""
    old = {"nonlinear": "implicit", "forward_guess": "previous",
           "method": "chord" if r["case"].startswith("ac") and r.get("nonlinear", "implicit") == "implicit" else None}
    return tuple(r.get(k, old.get(k)) for k in ("case", "nonlinear", "solver", "method", "forward_guess", "storage",
                                                 "ranks", "dofs",
                                                 "steps"))


def median_times(fn, repeats: int, comm: MPI.Comm) -> tuple[float, float]:
    """Medians of the wall-clock time and of the CPU time (``time.process_time``, largest rank) of ``fn()``."""
    wall, cpu = [], []
    for _ in range(repeats):
        comm.Barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        c1 = time.process_time()
        comm.Barrier()
        wall.append(time.perf_counter() - t0)
        cpu.append(comm.allreduce(c1 - c0, op=MPI.MAX))
    return float(np.median(wall)), float(np.median(cpu))


def loss_and_gradient(solver: ThetaSolver, misfit: L2Misfit, g: np.ndarray) -> tuple[float, np.ndarray]:
    """``(J, dJ/dg)``: the forward sweep, then the adjoint's, which also takes the loss (one ``M r`` per level).

    The PDE part of ``ReducedFunctional.value_and_gradient`` (its code path,
    :func:`femnpde.model.reduced.adjoint_with_loss`), without the network.
    """
    solver.forward(g)
    R, J, _ = adjoint_with_loss(solver, misfit, g)
    return J, R


def run(args, comm) -> dict:
    problem = build(args.case, comm, args.steps, args.small, args.nonlinear)
    n_dofs = problem.V.dofmap.index_map.size_global
    options = None if args.solver == "default" else dict(SOLVERS[args.solver])
    g = target(problem)
    data_solver = ThetaSolver(problem, "scal_data_", options, nonlinear_method=args.method)
    data = np.empty((args.steps + 1, problem.n_owned))
    data[0] = problem.u0.x.array[: problem.n_owned]

    def collect(n):
        data[n] = problem.u.x.array[: problem.n_owned]

    data_solver.forward(g, step_callback=collect)
    data_solver.destroy()
    misfit = L2Misfit(problem, data)
    storage = "memory" if args.storage == "memory" else {"snapshots": int(args.storage)}
    # numpy's allocations (the states, the adjoint's dJ/dg, temporaries) are traced from here
    # to the end of the first loss + gradient; PETSc's (matrices, factorisations) are not.
    tracemalloc.start()
    solver = ThetaSolver(problem, "scal_", options, state_storage=storage, krylov_guess=args.guess,
                         forward_guess=args.forward_guess, nonlinear_method=args.method)
    chosen = options or default_linear_solver_options(comm.size, n_dofs, problem.mesh.geometry.dim, solver.symmetric,
                                                      constant=problem.forms.jacobian_constant)
    g2 = 0.9 * g
    bounded = not solver.states.keeps_all_levels

    def loss():  # ReducedFunctional's forward: streamed with a bounded storage
        if bounded:
            return streamed_forward(solver, misfit, g2)[0]
        return misfit.value(solver.forward(g2))

    log: list[int] = []  # the linear iterations of every solve of the loss + gradient calls

    def loss_grad():
        J, R = loss_and_gradient(solver, misfit, g2)
        log.extend(solver.linear_iterations.solves())
        return J, R

    loss_grad()  # warm-up: factorisations, AMG set-up, JIT
    traced_peak = comm.allreduce(tracemalloc.get_traced_memory()[1], op=MPI.MAX)
    tracemalloc.stop()
    n_fwd = len(log)
    t_loss, c_loss = median_times(loss, args.repeats, comm)
    log.clear()
    solver.reset_statistics()
    t_lg, c_lg = median_times(loss_grad, args.repeats, comm)
    its = np.array(log, dtype=float)
    split_its = {}
    if its.size == args.repeats * 2 * args.steps:  # one forward and one adjoint solve per step
        per = its.reshape(args.repeats, 2, args.steps)
        split_its = dict(fwd_its_per_solve=float(per[:, 0].mean()), adj_its_per_solve=float(per[:, 1].mean()))
    stats = solver.statistics  # the nonlinear path (SNES; its solves are not in solver.linear_iterations)
    if stats:
        per = args.repeats * args.steps
        newton_stats = dict(newton_per_step=stats["newton_iterations"] / per,
                         fwd_krylov_per_step=stats["forward_krylov_iterations"] / per,
                         adj_krylov_per_step=stats["adjoint_krylov_iterations"] / per,
                         factorisations_per_loss_grad=stats["factorisations"] / args.repeats,
                         fwd_krylov_per_newton_system=stats["forward_krylov_iterations"]
                         / max(1, stats["forward_linear_solves"]),
                         adj_krylov_per_solve=stats["adjoint_krylov_iterations"] / max(1, stats["adjoint_steps"]),
                         jacobian_assemblies_per_loss_grad=stats["jacobian_assemblies"] / args.repeats)
        its = np.array([(stats["forward_krylov_iterations"] + stats["adjoint_krylov_iterations"])
                        / max(1, stats["newton_iterations"] + stats["adjoint_steps"])])
    else:
        newton_stats = {}
    J, R = loss_grad()
    grad_norm = float(np.sqrt(comm.allreduce(float(np.sum(R * R)))))
    plan = solver.storage_plan
    measured = getattr(solver.states, "peak_bytes", None)
    if measured is None:
        measured = solver.states.nbytes
    rss_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    rss = comm.gather(rss_kb / 1024.0, root=0)
    store_peak = comm.allreduce(int(measured), op=MPI.MAX)
    row = dict(
        case=args.case, nonlinear=args.nonlinear, solver=args.solver, method=solver.nonlinear_method, options=chosen, storage=args.storage, ranks=comm.size, dofs=n_dofs,
        steps=args.steps, loss=t_loss, loss_grad=t_lg, ratio=t_lg / t_loss, loss_cpu=c_loss, loss_grad_cpu=c_lg,
        ratio_cpu=c_lg / c_loss, loss_value=J, grad_norm=grad_norm, **newton_stats, **split_its, guess=args.guess,
        its_per_solve=float(its.mean()) if its.size else 0.0, solves_per_sweep=n_fwd,
        peak_rss_mb=rss, storage_predicted_mb=plan.predicted_peak_bytes / 1e6, storage_measured_mb=store_peak / 1e6,
        storage_all_levels_mb=plan.memory_bytes / 1e6, traced_peak_mb=traced_peak / 1e6, recomputation_factor=plan.recomputation_factor,
        load_average=os.getloadavg(), repeats=args.repeats, symmetric=solver.symmetric,
        forward_guess=args.forward_guess,
    )
    solver.destroy()
    misfit.destroy()
    return row


def accuracy(args, comm) -> None:
    """Relative gradient error of CG + AMG against LU, for several Krylov tolerances."""
    problem = paper_problem(args.case.startswith("heat") and "heat" or "allen-cahn", comm=comm, nx=80, ny=160,
                            n_steps=args.steps)
    g = target(problem)
    ref = ThetaSolver(problem, "acc_ref_", SOLVERS["lu"])
    data = ref.forward(g).array[:, : problem.n_owned].copy()
    misfit = L2Misfit(problem, data)
    g2 = 0.9 * g
    J_lu = misfit.value(ref.forward(g2))
    R_lu = ref.adjoint(g2, misfit.add_gradient)
    norm = np.sqrt(comm.allreduce(float(np.sum(R_lu**2))))
    if comm.rank == 0:
        print(f"# {args.case}: {problem.V.dofmap.index_map.size_global} dofs, {args.steps} steps; error vs MUMPS LU")
        print(f"{'pc':>6} {'ksp_rtol':>9} {'rel. loss error':>16} {'rel. dJ/dg error':>17}")
    for pc in ("hypre", "gamg"):
        for rtol in ("1e-6", "1e-8", "1e-10", "1e-12"):
            opts = {**SOLVERS[f"cg-{pc}"], "ksp_rtol": rtol}
            s = ThetaSolver(problem, f"acc_{pc}_{rtol.replace('-', 'm')}_", opts)
            J = misfit.value(s.forward(g2))
            R = s.adjoint(g2, misfit.add_gradient)
            err = np.sqrt(comm.allreduce(float(np.sum((R - R_lu) ** 2)))) / norm
            if comm.rank == 0:
                print(f"{pc:>6} {rtol:>9} {abs(J - J_lu) / abs(J_lu):16.2e} {err:17.2e}", flush=True)
            s.destroy()


def sweep_systems(problem: ParabolicProblem, steps: int, every: int, guess: str = "projection"
                  ) -> tuple[ThetaSolver, list[tuple]]:
    """The sweep's own linear systems: ``(kind, n, b, x0, its)`` of every ``every``-th forward and adjoint solve.

    One loss + gradient of :func:`run`'s sweep with the default solver; ``b`` is the right-hand side,
    ``x0`` the initial guess the solver started from (forward: zero, the state ``u^{n-1}``; adjoint:
    ``guess``, by default the projection onto the sweep's earlier adjoints), ``its`` the default's iterations.
    """
    g = target(problem)
    s = ThetaSolver(problem, "sol_step_", krylov_guess=guess)
    data = s.forward(g).array[:, : problem.n_owned].copy()
    misfit = L2Misfit(problem, data)
    systems: list[tuple] = []
    orig = s._solve
    phase = {"kind": "forward"}

    def solve(ksp, b, x, n, transpose, **kwargs):
        keep = n % every == 0 or n == 1
        x0 = x.copy() if keep else None
        orig(ksp, b, x, n, transpose, **kwargs)
        if keep:
            systems.append((phase["kind"], n, b.copy(), x0, ksp.getIterationNumber()))

    s._solve = solve
    s.forward(0.9 * g)
    phase["kind"] = "adjoint"
    s.adjoint(0.9 * g, misfit.add_gradient)
    misfit.destroy()
    return s, systems


def solvers(args, comm) -> None:
    """Set-up and per-solve cost of several linear solvers on the case's step matrix.

    ``--rhs random``: a random right-hand side from a zero guess, 16 solves; ``--rhs sweep``: the
    sweep's own systems (:func:`sweep_systems`, every 8th step's forward and adjoint solve, from the
    guesses the sweep used), the iterations per kind and the relative initial residual.
    """
    problem = build(args.case, comm, args.steps, args.small, args.nonlinear)
    if args.rhs == "sweep":
        s, systems = sweep_systems(problem, args.steps, 8, args.guess)
    else:
        s = ThetaSolver(problem, "sol_step_", {"ksp_type": "preonly", "pc_type": "jacobi"})
        s.forward(np.zeros((args.steps + 1, problem.n_owned_source)))  # assembles the step matrix
        systems = []
    A = s.A
    if systems and comm.rank == 0:
        print("# the sweep's systems with the default solver: kind n its ||b - A x0|| / ||b||")
    for kind, n, b, x0, its in systems:
        r = b.duplicate()
        A.mult(x0, r)
        r.aypx(-1.0, b)
        rel = r.norm() / b.norm()
        r.destroy()
        if comm.rank == 0:
            print(f"#   {kind:<8} {n:3d} {its:4d} {rel:10.3e}", flush=True)
    if comm.rank == 0:
        print(f"# {args.case}: {problem.V.dofmap.index_map.size_global} dofs, {comm.size} rank(s), "
              f"load {os.getloadavg()[0]:.1f}; per solve: median of 16, CPU time of the largest rank")
        print(f"{'solver':<12} {'set-up [s]':>10} {'wall [ms]':>10} {'cpu [ms]':>9} {'its':>5}")
    for name in args.solvers:
        if comm.size > 1 and SOLVERS[name].get("pc_factor_mat_solver_type") == "petsc":
            if comm.rank == 0:
                print(f"{name:<12} (serial only: PETSc's LU; on several ranks see 'redundant')")
            continue
        ksp = PETSc.KSP().create(comm)
        prefix = f"sol_{name.replace('-', '_')}_"
        ksp.setOptionsPrefix(prefix)
        opts = PETSc.Options()
        for k, v in SOLVERS[name].items():
            opts.setValue(prefix + k, v)
        ksp.setFromOptions()
        ksp.setOperators(A)
        b, x = A.createVecLeft(), A.createVecLeft()
        b.setRandom()
        comm.Barrier()
        t0 = time.perf_counter()
        ksp.setUp()
        ksp.solve(b, x)
        comm.Barrier()
        setup = time.perf_counter() - t0
        its = []
        if systems:
            ksp.setInitialGuessNonzero(True)
            by_kind: dict[str, list[int]] = {"forward": [], "adjoint": []}
            cpu_kind: dict[str, float] = {"forward": 0.0, "adjoint": 0.0}
            times = []
            for kind, _, bb, x0, _ in systems:
                x0.copy(x)
                times.append(median_times(lambda: ksp.solve(bb, x), 1, comm))
                by_kind[kind].append(ksp.getIterationNumber())
                cpu_kind[kind] += times[-1][1]
            wall, cpu = zip(*times)
            if comm.rank == 0:
                n_it = {k: max(1, sum(v)) for k, v in by_kind.items()}
                print(f"{name:<12} {setup:10.2f} {1e3 * np.median(wall):10.1f} {1e3 * np.median(cpu):9.1f} "
                      f"{np.mean(by_kind['forward']):5.1f} fwd / {np.mean(by_kind['adjoint']):4.1f} adj "
                      f"{by_kind['forward']} {by_kind['adjoint']}; CPU per forward solve "
                      f"{1e3 * cpu_kind['forward'] / max(1, len(by_kind['forward'])):.1f} ms, per iteration "
                      f"{1e3 * (cpu_kind['forward'] + cpu_kind['adjoint']) / (n_it['forward'] + n_it['adjoint']):.2f} ms",
                      flush=True)
        else:
            def once():
                ksp.solve(b, x)
                its.append(ksp.getIterationNumber())

            wall, cpu = zip(*(median_times(once, 1, comm) for _ in range(16)))
            if comm.rank == 0:
                print(f"{name:<12} {setup:10.2f} {1e3 * np.median(wall):10.1f} {1e3 * np.median(cpu):9.1f} "
                      f"{np.mean(its):5.1f}", flush=True)
        if name == "dd":  # the Schur-complement solver's split (femnpde/fem/schur_dd.py)
            ctx = ksp.getPC().getPythonContext()
            nnz = comm.gather(ctx.nnz_v, root=0)
            if comm.rank == 0:
                print(f"{'':<12} n_S {ctx.n_separator}, nnz(V_r) {nnz}, fallback {ctx.fallback}", flush=True)
        for k in SOLVERS[name]:
            opts.delValue(prefix + k)
        for obj in (ksp, b, x):
            obj.destroy()
    for _, _, b, x0, _ in systems:
        b.destroy()
        x0.destroy()
    s.destroy()


def report(path: Path) -> None:
    rows = json.loads(path.read_text())
    print(f"{'case':<7} {'solver':<10} {'storage':>7} {'ranks':>5} {'dofs':>7} {'loss [s]':>9} {'l+g [s]':>8} "
          f"{'ratio':>5} {'cpu loss':>8} {'cpu l+g':>8} {'cpu ratio':>9} {'speed-up':>8} {'its':>5} {'RSS/rank [MB]':>14} {'store pred/meas [MB]':>21} {'traced':>7} "
          f"{'recomp':>6} "
          f"{'load':>5}")
    def case(r):  # IMEX is another discretisation: compared with IMEX rows only
        return r["case"] + ("-imex" if r.get("nonlinear") == "explicit" else "")

    best1: dict[str, float] = {}
    for r in rows:
        if r["ranks"] == 1:
            best1[case(r)] = min(best1.get(case(r), np.inf), r["loss_grad"])
    def solver_label(r):  # the nonlinear step's method, when it is not the chord of rows written before it
        return (r["solver"] + ("+krylov" if r.get("method") == "krylov" else "")
                + ("+fproj" if r.get("forward_guess", "previous") == "projection" else ""))

    for r in sorted(rows, key=lambda r: (case(r), solver_label(r), str(r["storage"]), r["ranks"])):
        sp = best1.get(case(r), np.nan) / r["loss_grad"]
        rss = "/".join(f"{x:.0f}" for x in r["peak_rss_mb"])
        print(f"{case(r):<7} {solver_label(r):<10} {str(r['storage']):>7} {r['ranks']:>5} {r['dofs']:>7} "
              f"{r['loss']:9.2f} {r['loss_grad']:8.2f} {r['ratio']:5.2f} {r.get('loss_cpu', np.nan):8.2f} "
              f"{r.get('loss_grad_cpu', np.nan):8.2f} {r.get('ratio_cpu', np.nan):9.2f} {sp:8.2f} {r['its_per_solve']:5.1f} "
              f"{rss:>14} {r['storage_predicted_mb']:10.1f}/{r['storage_measured_mb']:<10.1f} "
              f"{r.get('traced_peak_mb', float('nan')):7.1f} {r['recomputation_factor']:6.2f} {r['load_average'][0]:5.1f}")
    print("# traced: peak of numpy's allocations from the solver's construction to the end of the first "
          "loss+grad (states, dJ/dg, temporaries), largest rank")
    print("# its: linear iterations per solve (nonlinear cases: forward + adjoint Krylov iterations per Newton "
          "iteration / adjoint step); cpu: process CPU time, largest rank")
    print("# speed-up: the case's fastest single-rank loss+grad divided by this row's; "
          "load: 1-minute load average at the end of the row (2-core machine shared with other work)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--case", default="heat2d", choices=["heat2d", "ac2d", "heat3d", "ac3d"])
    parser.add_argument("--solver", default="default", choices=["default", *SOLVERS])
    parser.add_argument("--nonlinear", default="implicit", choices=["implicit", "explicit"],
                        help="Allen-Cahn's cubic term: implicit (Newton) or explicit (IMEX, time.nonlinear)")
    parser.add_argument("--method", default="auto", choices=["auto", "chord", "krylov"],
                        help="nonlinear steps: chord (lagged factorised Newton matrix) or krylov (MINRES/GMRES "
                             "preconditioned by the linear part, factorised once); auto: by size (ThetaSolver)")
    parser.add_argument("--storage", default="memory", help="'memory' or K (snapshots in memory)")
    parser.add_argument("--guess", default="projection", choices=["previous", "extrapolate", "projection"],
                        help="Krylov initial guess of the forward and adjoint solves (ThetaSolver.krylov_guess)")
    parser.add_argument("--forward-guess", default=D.FORWARD_GUESS, choices=list(FORWARD_GUESSES),
                        help="the forward Krylov solves' initial guess (ThetaSolver(forward_guess=...))")
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--small", action="store_true", help="a small mesh, to try the script (not for figures)")
    parser.add_argument("--report", action="store_true")
    parser.add_argument("--accuracy", action="store_true")
    parser.add_argument("--solvers", nargs="+", choices=list(SOLVERS), help="per-solve cost of these solvers")
    parser.add_argument("--rhs", default="random", choices=["random", "sweep"],
                        help="--solvers: a random right-hand side, or the sweep's own systems and guesses")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if args.report:
        if comm.rank == 0:
            report(args.out)
        return
    if args.accuracy:
        accuracy(args, comm)
        return
    if args.solvers:
        solvers(args, comm)
        return
    row = run(args, comm)
    if comm.rank == 0:
        rows = json.loads(args.out.read_text()) if args.out.exists() else []
        rows = [r for r in rows if _row_key(r) != _row_key(row)]
        rows.append(row)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=1))
        print(json.dumps({k: row.get(k) for k in ("case", "nonlinear", "solver", "method", "storage", "ranks", "dofs", "loss", "loss_grad",
                                              "ratio", "loss_cpu", "loss_grad_cpu", "ratio_cpu", "its_per_solve", "fwd_its_per_solve", "adj_its_per_solve", "guess", "peak_rss_mb", "storage_predicted_mb",
                                              "storage_measured_mb", "traced_peak_mb", "recomputation_factor",
                                              "load_average")}))
        if row["method"] is not None and comm.rank == 0:
            print(json.dumps({k: v for k, v in row.items() if k.startswith(("newton", "fwd_", "adj_", "factor", "jacobian"))}))


if __name__ == "__main__":
    main()
