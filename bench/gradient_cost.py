"""Cost of the loss and of loss + gradient on the paper's scenario.

Run inside the environment, serially and on 2 ranks:

    scripts/env-run python3 bench/gradient_cost.py
    scripts/env-run mpirun -n 2 python3 bench/gradient_cost.py

For heat and Allen–Cahn on the rectangle [0,0.5]x[0,1] (h = 0.025, P1,
64 backward-Euler steps) and N = 10, 100, 500, 5000 neurons it prints the
median time of

* the loss alone (network evaluation + forward sweep + misfit),
* loss + gradient (plus adjoint sweep + network VJP),
* their ratio (targets: <= 2.0 heat, <= 1.4 Allen-Cahn),
* an epoch (loss + gradient + Adam step) next to the reference PyTorch
  finite-difference code's float64 epoch time from
  ../shared/notes/paper-scenario.md (measured on this machine kind),
* the split into network and PDE time.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
from mpi4py import MPI

from femnpde.obs.misfit import L2Misfit
from femnpde.model.network import ShallowNetwork
from femnpde.optim.optimizers import Adam
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.solver import ThetaSolver

# Reference code (explicit FD, PyTorch), float64, heat, median epoch time [s],
# 1 thread and 2 threads (../shared/notes/paper-scenario.md).
REFERENCE_F64 = {10: (0.0164, 0.0145), 100: (0.145, 0.102), 500: (0.650, 0.458), 5000: (12.2, 7.07)}


def median_time(fn, repeats: int, comm) -> float:
    times = []
    for _ in range(repeats):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pde", nargs="+", default=["heat", "allen-cahn"])
    parser.add_argument("--N", nargs="+", type=int, default=[10, 100, 500, 5000])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    threads = os.environ.get("OPENBLAS_NUM_THREADS") or os.environ.get("OMP_NUM_THREADS") or "default"

    def say(*a):
        if comm.rank == 0:
            print(*a, flush=True)

    say(f"# femnpde gradient cost, {comm.size} rank(s), BLAS threads: {threads}")
    say(
        f"{'pde':<11} {'N':>5} {'loss [s]':>9} {'loss+grad':>10} {'ratio':>6} {'epoch [s]':>10} "
        f"{'ref f64 [s]':>11} {'epoch/ref':>9} {'net fwd':>8} {'net vjp':>8} {'PDE fwd':>8} {'PDE adj':>8}"
    )
    for pde in args.pde:
        problem = paper_problem(pde, comm=comm)
        solver = ThetaSolver(problem, f"bench_{pde.replace('-', '_')}_")
        gstar = FunctionSource(problem, target_source("difficult")).values()
        data = solver.forward(gstar).to_array()[:, : problem.n_owned].copy()
        misfit = L2Misfit(problem, data)
        for N in args.N:
            net = ShallowNetwork(N, 2, seed=42)
            source = NetworkSource(problem, net)
            rf = ReducedFunctional(solver, source, misfit)
            theta = net.params.copy()
            opt = Adam(lr=0.01 * N ** (2 * net.beta - 1))
            state = {"theta": theta}

            def loss():
                state["theta"] = state["theta"] + 1e-12  # a new θ every call: no caching
                rf(state["theta"])

            def loss_grad():
                state["theta"] = state["theta"] + 1e-12
                rf.value_and_gradient(state["theta"])

            def epoch():
                state["theta"] = state["theta"] + 1e-12  # never a cached evaluation
                _, g = rf.value_and_gradient(state["theta"])
                opt.step(state["theta"], g)

            # Components.
            def net_fwd():
                source.values(state["theta"])

            g_vals = source.values(state["theta"])
            R = np.ones_like(g_vals)

            def net_vjp():
                source.vjp(R)

            def pde_fwd():
                solver.forward(g_vals)

            def pde_adj():
                solver.adjoint(g_vals, misfit.add_gradient)

            reps = args.repeats if N < 5000 else max(2, args.repeats // 2)
            epoch()  # warm-up (JIT, factorisation)
            t_loss = median_time(loss, reps, comm)
            t_lg = median_time(loss_grad, reps, comm)
            t_epoch = median_time(epoch, reps, comm)
            t_nf = median_time(net_fwd, reps, comm)
            t_nv = median_time(net_vjp, reps, comm)
            t_pf = median_time(pde_fwd, reps, comm)
            pde_fwd()
            t_pa = median_time(pde_adj, reps, comm)
            ref = REFERENCE_F64.get(N, (float("nan"),) * 2)
            ref_t = ref[0] if comm.size == 1 else ref[1]
            say(
                f"{pde:<11} {N:>5} {t_loss:9.4f} {t_lg:10.4f} {t_lg / t_loss:6.2f} {t_epoch:10.4f} "
                f"{ref_t:11.4f} {t_epoch / ref_t:9.2f} {t_nf:8.4f} {t_nv:8.4f} {t_pf:8.4f} {t_pa:8.4f}"
            )
    say("# ref f64: the reference code's heat epoch, float64, 1 thread (serial row) or 2 threads (2-rank row).")
    say("# Targets: ratio <= 2.0 (heat), <= 1.4 (Allen-Cahn); epoch <= ref at N=10, <= ref/2 for N >= 500.")


if __name__ == "__main__":
    main()
