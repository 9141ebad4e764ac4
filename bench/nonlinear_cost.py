"""Cost of nonlinear (Allen–Cahn) against linear (heat) theta steps.

Run inside the environment, serially and on 2 ranks:

    scripts/env-run python3 bench/nonlinear_cost.py
    scripts/env-run mpirun -n 2 python3 bench/nonlinear_cost.py

On the paper rectangle (P1, 64 backward-Euler steps; 21x41 = 861 and
81x161 = 13 041 dofs) it prints, for heat and Allen–Cahn, the median time of

* loss: forward sweep + misfit (the PDE part of a loss evaluation),
* loss+grad: plus the adjoint sweep and dJ/dg,

the Newton iterations per step, the forward and adjoint Krylov iterations per
step, the factorisations per loss+grad (after warm-up: the lagged Newton
matrix is kept across sweeps; PETSc's count of numeric LU factorisations)
and the Allen–Cahn / heat ratio of loss+grad, for Allen–Cahn with the
implicit scheme (``ac-implicit``: a nonlinear solve per step) and with the
IMEX scheme (``ac-imex``, ``time.nonlinear = "explicit"``: the cubic term at
u^{n-1}, one solve per step with a matrix factorised once); then the
paper-scale Allen–Cahn epoch (861 dofs, N = 10: network, loss, gradient,
network VJP and Adam step) with both schemes. Figures are medians of --repeats runs,
as wall time and as the CPU time of rank 0 (on a shared machine other jobs
inflate wall time; CPU time is what the run itself used).

``--method krylov`` runs the Allen–Cahn implicit row with the Newton and
adjoint systems solved by GMRES preconditioned by the once-factorised linear
part (``ThetaSolver(nonlinear_method=...)``; ``auto``, the default, is the
chord at these sizes); ``--accuracy`` instead prints the relative loss and
dJ/dg differences of that path against the chord for adjoint tolerances
1e-6 ... 1e-12::

    scripts/env-run python3 bench/nonlinear_cost.py --method krylov
    scripts/env-run python3 bench/nonlinear_cost.py --accuracy --dofs 13041
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.solver import ThetaSolver
from femnpde.model.network import ShallowNetwork
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.obs.misfit import L2Misfit
from femnpde.optim.optimizers import Adam

MESHES = {861: (20, 40), 13041: (80, 160)}


def median_times(fn, repeats: int, comm) -> tuple[float, float]:
    """Median wall time and median CPU time of this process (the shared machine's load inflates the former)."""
    wall, cpu = [], []
    for _ in range(repeats):
        comm.Barrier()
        t0, c0 = time.perf_counter(), time.process_time()
        fn()
        cpu.append(time.process_time() - c0)
        comm.Barrier()
        wall.append(time.perf_counter() - t0)
    return float(np.median(wall)), float(np.median(cpu))


#: Row name -> (pde, time.nonlinear).
ROWS = {"heat": ("heat", "implicit"), "ac-implicit": ("allen-cahn", "implicit"), "ac-imex": ("allen-cahn", "explicit")}


def _lu_factorisations() -> int:
    """Numeric LU factorisations so far (PETSc's log; PETSc.Log.begin() must have been called)."""
    return int(PETSc.Log.Event("MatLUFactorNum").getPerfInfo()["count"])


def sweep_costs(row: str, dofs: int, repeats: int, comm, method: str = "auto") -> dict:
    pde, nonlinear = ROWS[row]
    nx, ny = MESHES[dofs]
    problem = paper_problem(pde, comm=comm, nx=nx, ny=ny, n_steps=64, nonlinear=nonlinear)
    solver = ThetaSolver(problem, f"nlbench_{row.replace('-', '_')}_{dofs}_", nonlinear_method=method)
    gstar = FunctionSource(problem, target_source("difficult")).values()
    data = solver.forward(gstar).array[:, : problem.n_owned].copy()
    misfit = L2Misfit(problem, data)
    # A source different from the data's (a network, N = 10).
    g = NetworkSource(problem, ShallowNetwork(10, 2, seed=42)).values()

    def loss():
        misfit.value(solver.forward(g))

    def loss_grad():
        loss()
        solver.adjoint(g, misfit.add_gradient)

    loss_grad()  # warm-up
    t_loss, c_loss = median_times(loss, repeats, comm)
    t_lg, c_lg = median_times(loss_grad, repeats, comm)
    solver.reset_statistics()
    lu0 = _lu_factorisations()
    loss_grad()
    n_lu = _lu_factorisations() - lu0
    st = solver.statistics
    n = problem.time.n_steps
    out = {"loss": t_loss, "loss_grad": t_lg, "cpu_loss": c_loss, "cpu_loss_grad": c_lg}
    if st:
        out.update(
            newton=st["newton_iterations"] / n,
            fwd_krylov=st["forward_krylov_iterations"] / n,
            adj_krylov=st["adjoint_krylov_iterations"] / n,
            factorisations=st["factorisations"],
            krylov_per_newton_system=st["forward_krylov_iterations"] / max(1, st["forward_linear_solves"]),
            krylov_per_adjoint_solve=st["adjoint_krylov_iterations"] / max(1, st["adjoint_steps"]),
        )
    else:  # constant Jacobian: one solve per step, factorised once ever
        out.update(newton=float(np.mean(solver.newton_iterations[1:])), fwd_krylov=1.0, adj_krylov=1.0,
                   factorisations=0)
    out["lu"] = n_lu
    solver.destroy()
    misfit.destroy()
    return out


def epoch_cost(repeats: int, comm, nonlinear: str) -> tuple[float, float]:
    problem = paper_problem("allen-cahn", comm=comm, nonlinear=nonlinear)
    solver = ThetaSolver(problem, f"nlbench_epoch_{nonlinear}_")
    gstar = FunctionSource(problem, target_source("difficult")).values()
    misfit = L2Misfit(problem, solver.forward(gstar).array[:, : problem.n_owned].copy())
    net = ShallowNetwork(10, 2, seed=42)
    rf = ReducedFunctional(solver, NetworkSource(problem, net), misfit)
    opt = Adam(lr=0.01 * 10 ** (2 * net.beta - 1))
    state = {"theta": net.params.copy()}

    def epoch():
        _, grad = rf.value_and_gradient(state["theta"])
        opt.step(state["theta"], grad)

    epoch()
    return median_times(epoch, repeats, comm)


def accuracy(dofs: int, comm) -> None:
    """Loss and dJ/dg of the Krylov path against the chord's, for several adjoint tolerances."""
    nx, ny = MESHES[dofs]
    problem = paper_problem("allen-cahn", comm=comm, nx=nx, ny=ny, n_steps=64)
    ref = ThetaSolver(problem, "nlacc_ref_", nonlinear_method="chord")
    data = ref.forward(FunctionSource(problem, target_source("difficult")).values()).array[:, : problem.n_owned].copy()
    misfit = L2Misfit(problem, data)
    g = NetworkSource(problem, ShallowNetwork(10, 2, seed=42)).values()
    J0 = misfit.value(ref.forward(g))
    R0 = ref.adjoint(g, misfit.add_gradient)
    norm = np.sqrt(comm.allreduce(float(np.sum(R0**2))))
    if comm.rank == 0:
        print(f"# Allen-Cahn, {dofs} dofs, 64 steps, {comm.size} rank(s): krylov against chord (adjoint GMRES "
              f"rtol 1e-13 on the lagged LU)")
        print(f"{'adjoint rtol':>12} {'rel. loss diff':>15} {'rel. dJ/dg diff':>16} {'adj its/solve':>13}")
    opts = PETSc.Options()
    for rtol in ("1e-6", "1e-8", "1e-10", "1e-12"):
        prefix = f"nlacc_{rtol.replace('-', 'm')}_"
        opts[prefix + "adjoint_ksp_rtol"] = rtol
        s = ThetaSolver(problem, prefix, nonlinear_method="krylov")
        opts.delValue(prefix + "adjoint_ksp_rtol")
        J = misfit.value(s.forward(g))
        R = s.adjoint(g, misfit.add_gradient)
        err = np.sqrt(comm.allreduce(float(np.sum((R - R0) ** 2)))) / norm
        st = s.statistics
        if comm.rank == 0:
            print(f"{rtol:>12} {abs(J - J0) / abs(J0):15.2e} {err:16.2e} "
                  f"{st['adjoint_krylov_iterations'] / st['adjoint_steps']:13.2f}", flush=True)
        s.destroy()
    ref.destroy()
    misfit.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dofs", nargs="+", type=int, default=[861, 13041])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--method", default="auto", choices=["auto", "chord", "krylov"],
                        help="the nonlinear step's linear systems (ThetaSolver nonlinear_method)")
    parser.add_argument("--accuracy", action="store_true", help="Krylov path against the chord, adjoint rtol")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    if args.accuracy:
        for dofs in args.dofs:
            accuracy(dofs, comm)
        return
    PETSc.Log.begin()

    def say(*a):
        if comm.rank == 0:
            print(*a, flush=True)

    say(f"# femnpde nonlinear cost, {comm.size} rank(s), 64 backward-Euler steps, P1, medians of {args.repeats}; "
        f"ac-implicit method: {args.method}")
    say(f"{'pde':<11} {'dofs':>6} {'loss [s]':>9} {'loss+grad':>10} {'cpu loss':>9} {'cpu l+g':>9} "
        f"{'Newton/step':>11} {'fwd KSP/step':>12} {'adj KSP/step':>12} {'factorisations':>14} {'LU':>4} "
        f"{'AC/heat':>8} {'cpu AC/heat':>11}")
    for dofs in args.dofs:
        reps = args.repeats if dofs < 10_000 else max(3, args.repeats // 2)
        heat = None
        for row in ROWS:
            c = sweep_costs(row, dofs, reps, comm, args.method if row == "ac-implicit" else "auto")
            ratio = cratio = ""
            if heat is not None:
                ratio = f"{c['loss_grad'] / heat['loss_grad']:8.1f}"
                cratio = f"{c['cpu_loss_grad'] / heat['cpu_loss_grad']:11.1f}"
            heat = c if heat is None else heat
            say(f"{row:<11} {dofs:>6} {c['loss']:9.4f} {c['loss_grad']:10.4f} {c['cpu_loss']:9.4f} "
                f"{c['cpu_loss_grad']:9.4f} {c['newton']:11.2f} {c['fwd_krylov']:12.2f} {c['adj_krylov']:12.2f} "
                f"{c['factorisations']:14d} {c['lu']:4d} {ratio:>8} {cratio:>11}")
            if "krylov_per_newton_system" in c:
                say(f"#   {row} {dofs}: {c['krylov_per_newton_system']:.2f} linear iterations per Newton system, "
                    f"{c['krylov_per_adjoint_solve']:.2f} per adjoint solve")
    for nonlinear in ("implicit", "explicit"):
        wall, cpu = epoch_cost(args.repeats * 3, comm, nonlinear)
        say(f"# paper-scale Allen-Cahn epoch, time.nonlinear = {nonlinear} (861 dofs, N = 10, Adam step included): "
            f"{wall:.4f} s wall, {cpu:.4f} s CPU (target <= 0.08 s serial)")
    say("# factorisations: the lagged Newton matrix's per loss+grad after warm-up; LU: PETSc's numeric LU")
    say("#   factorisations in that loss+grad (0: the constant matrix of heat and ac-imex was factorised once, before).")
    say("# cpu: this process's CPU time (rank 0), less sensitive than wall time to other jobs on a shared machine.")
    say("# Targets: Allen-Cahn loss+grad <= 5x heat's on the same mesh and steps (serial).")


if __name__ == "__main__":
    main()
