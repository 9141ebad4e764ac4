"""Where the 2-rank heat 2D loss + gradient spends its time (issue 13, the Schur-complement DD).

Two measurements, each printed (CPU time, ``time.process_time``)::

    scripts/env-run python3 bench/dd_profile.py kernels            # PETSc's triangular kernels, one process
    scripts/env-run [mpirun -n 2] python3 bench/dd_profile.py profile [--solver NAME]

``kernels``: on the paper's rectangle at half the benchmark's size (226 x 452
squares, 102 831 unknowns: one rank's interior on two ranks), the heat step
matrix factorised by PETSc's Cholesky: the fused solve against the separate
forward + backward substitutions, each alone, and the forward substitution +
fused solve the DD's apply does, with the factor's own nested
dissection ordering and with that ordering applied once to the matrix
(natural-ordering kernels), and the cost of gathering a vector by the
permutation.  ``profile``: cProfile (CPU-time clock) of two loss + gradient
evaluations of ``bench/scaling.py --case heat2d`` per rank, the top entries by
own time, per loss + gradient.  Under MPI the CPU times include the MPI
busy-wait of a rank whose partner is descheduled (state the load).
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse
from mpi4py import MPI
from petsc4py import PETSc

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaling  # noqa: E402  (the benchmark's case and solver table)

from femnpde.app.scenarios import paper_problem  # noqa: E402
from femnpde.fem.solver import ThetaSolver  # noqa: E402
from femnpde.obs.misfit import L2Misfit  # noqa: E402


def _cpu_ms(fn, k: int = 30) -> float:
    ts = []
    for _ in range(k):
        c0 = time.process_time()
        fn()
        ts.append(time.process_time() - c0)
    return 1e3 * float(np.median(ts))


def _cholesky(M: PETSc.Mat, ordering: str) -> tuple[PETSc.PC, PETSc.Mat]:
    pc = PETSc.PC().create(PETSc.COMM_SELF)
    pc.setType("cholesky")
    pc.setFactorSolverType("petsc")
    pc.setFactorOrdering(ordering)
    pc.setOperators(M)
    pc.setUp()
    return pc, pc.getFactorMatrix()


def kernels(nx: int) -> None:
    problem = paper_problem("heat", comm=MPI.COMM_SELF, nx=nx, ny=2 * nx, n_steps=2)
    s = ThetaSolver(problem, "ddk_", {"ksp_type": "preonly", "pc_type": "jacobi"})
    s.forward(np.zeros((3, problem.n_owned_source)))  # assembles the step matrix
    A = s.A
    n = A.getSize()[0]
    b, x, z = A.createVecLeft(), A.createVecLeft(), A.createVecLeft()
    b.setRandom()
    pc_nd, F_nd = _cholesky(A, "nd")
    rperm, cperm = A.getOrdering("nd")
    perm = rperm.getIndices()
    indptr, cols, vals = A.getValuesCSR()
    Ap = scipy.sparse.csr_matrix((vals, cols, indptr), shape=(n, n))[perm][:, perm].tocsr()
    Ap.sort_indices()
    P = PETSc.Mat().createAIJ(size=(n, n), comm=PETSc.COMM_SELF,
                              csr=(Ap.indptr.astype(PETSc.IntType), Ap.indices.astype(PETSc.IntType), Ap.data))
    pc_nat, F_nat = _cholesky(P, "natural")
    src, dst = b.getArray(readonly=True), z.duplicate()
    rows = {
        "nd: fused solve": _cpu_ms(lambda: F_nd.solve(b, x)),
        "nd: forward + backward": _cpu_ms(lambda: (F_nd.solveForward(b, z), F_nd.solveBackward(z, x))),
        "nd: forward": _cpu_ms(lambda: F_nd.solveForward(b, z)),
        "nd: backward": _cpu_ms(lambda: F_nd.solveBackward(z, x)),
        "nd: forward + fused solve (the DD's apply)": _cpu_ms(lambda: (F_nd.solveForward(b, z), F_nd.solve(b, x))),
        "permuted matrix, natural: fused solve": _cpu_ms(lambda: F_nat.solve(b, x)),
        "permuted matrix, natural: forward + backward": _cpu_ms(lambda: (F_nat.solveForward(b, z),
                                                                         F_nat.solveBackward(z, x))),
        "gather by the permutation (np.take)": _cpu_ms(lambda: np.take(src, perm, out=dst.array_w)),
    }
    print(f"# Cholesky triangular kernels, {n} unknowns, CPU ms per call (median of 30), "
          f"load {os.getloadavg()[0]:.1f}")
    for name, ms in rows.items():
        print(f"{name:<46} {ms:7.2f}")
    for obj in (pc_nd, pc_nat, P, rperm, cperm, b, x, z, dst):
        obj.destroy()
    s.destroy()


def profile(solver_name: str, steps: int, top: int) -> None:
    comm = MPI.COMM_WORLD
    problem = scaling.build("heat2d", comm, steps)
    options = None if solver_name == "default" else dict(scaling.SOLVERS[solver_name])
    g = scaling.target(problem)
    data_solver = ThetaSolver(problem, "ddp_data_", options)
    data = data_solver.forward(g).array[:, : problem.n_owned].copy()  # the synthetic observations
    data_solver.destroy()
    misfit = L2Misfit(problem, data)
    solver = ThetaSolver(problem, "ddp_", options)
    g2 = 0.9 * g

    def loss_grad():
        J = misfit.value(solver.forward(g2))
        return J, solver.adjoint(g2, misfit.add_gradient)

    loss_grad()  # warm-up: the factorisation
    comm.Barrier()
    prof = cProfile.Profile(time.process_time)
    c0, t0 = time.process_time(), time.perf_counter()
    prof.enable()
    loss_grad()
    loss_grad()
    prof.disable()
    cpu, wall = (time.process_time() - c0) / 2, (time.perf_counter() - t0) / 2
    stats = pstats.Stats(prof)
    lines = []
    for (path, line, name), (cc, nc, tt, ct, _) in sorted(stats.stats.items(), key=lambda kv: -kv[1][2])[:top]:
        lines.append(f"{tt / 2:8.3f} {ct / 2:8.3f} {nc // 2:6d}  {Path(path).name}:{line}({name})")
    out = comm.gather((cpu, wall, lines), root=0)
    if comm.rank == 0:
        print(f"# heat2d, {problem.V.dofmap.index_map.size_global} dofs, {steps} steps, {comm.size} rank(s), "
              f"solver {solver_name}, load {os.getloadavg()[0]:.1f}; per loss + gradient, CPU s")
        for rank, (c, w, ls) in enumerate(out):
            print(f"## rank {rank}: CPU {c:.3f} s, wall {w:.3f} s\n{'own':>8} {'cumul':>8} {'calls':>6}")
            print("\n".join(ls))
    solver.destroy()
    misfit.destroy()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=["kernels", "profile"])
    parser.add_argument("--nx", type=int, default=226, help="kernels: squares in x (226: 102 831 unknowns)")
    parser.add_argument("--solver", default="default", choices=["default", *scaling.SOLVERS])
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--top", type=int, default=14)
    args = parser.parse_args()
    if args.what == "kernels":
        if MPI.COMM_WORLD.rank == 0:
            kernels(args.nx)
        return
    profile(args.solver, args.steps, args.top)


if __name__ == "__main__":
    main()
