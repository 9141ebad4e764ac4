"""What the IMEX scheme's speed costs in accuracy: Allen–Cahn data, IMEX against implicit.

Run inside the environment (serially or on K ranks; the figures agree):

    scripts/env-run python3 bench/imex_accuracy.py

On the paper rectangle (P1, 861 dofs, backward Euler, T = 1, the paper's
Allen–Cahn with gamma = 0.01, epsilon = 0.32 and the 'difficult' target
source g*) it solves the data h = u(g*) with ``time.nonlinear = "implicit"``
and ``"explicit"`` (IMEX: the cubic term at u^{n-1}) at 64, 128, 256 and 512
steps, and prints the relative space-time L2 differences

    e(a, b) = sqrt(sum_n dt ||u_a^n - u_b^n||^2_L2) / sqrt(sum_n dt ||u_b^n||^2_L2)

over the levels t = k/64 (k = 1..64) that all grids share: IMEX against
implicit at the same number of steps, and each against the reference (512
steps, implicit).  The IMEX-implicit difference is first order in dt (the
remainder is lagged by one step); both schemes are first order against the
reference.
"""

from __future__ import annotations

import argparse

import numpy as np
import ufl
import dolfinx.fem
from mpi4py import MPI

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.solver import ThetaSolver
from femnpde.model.reduced import FunctionSource

STEPS = (64, 128, 256, 512)


def data(nonlinear: str, n_steps: int, comm):
    """The data's local arrays at t = k/64 (k = 1..64), and the problem (the same mesh and numbering every time)."""
    problem = paper_problem("allen-cahn", comm=comm, n_steps=n_steps, nonlinear=nonlinear)
    solver = ThetaSolver(problem, f"imexacc_{nonlinear}_{n_steps}_")
    gstar = FunctionSource(problem, target_source("difficult", problem.time.T)).values()
    states = solver.forward(gstar).to_array()
    stride = n_steps // 64
    levels = states[stride::stride].copy()
    solver.destroy()
    return levels, problem


class SpaceTimeNorm:
    """sqrt(sum_n dt ||d^n||^2_L2) of rows of local arrays (with ghosts) at the 64 shared levels, over all ranks."""

    def __init__(self, problem) -> None:
        self.comm = problem.comm
        self.d = dolfinx.fem.Function(problem.V)
        self.form = dolfinx.fem.form(self.d * self.d * ufl.dx)

    def __call__(self, rows: np.ndarray) -> float:
        total = 0.0
        for row in rows:
            self.d.x.array[:] = row
            total += dolfinx.fem.assemble_scalar(self.form)
        return float(np.sqrt(self.comm.allreduce(total, op=MPI.SUM) / 64))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.parse_args()
    comm = MPI.COMM_WORLD
    runs = {}
    problem = None
    for n in STEPS:
        for nonlinear in ("implicit", "explicit"):
            runs[nonlinear, n], problem = data(nonlinear, n, comm)
    norm = SpaceTimeNorm(problem)
    ref = runs["implicit", STEPS[-1]]
    ref_norm = norm(ref)

    def rel(a, b):
        return norm(a - b) / norm(b)

    if comm.rank == 0:
        print(f"# Allen-Cahn data (target 'difficult'), 861 dofs, P1, backward Euler, T = 1, {comm.size} rank(s); "
              f"relative space-time L2 differences at t = k/64; reference: {STEPS[-1]} steps implicit "
              f"(norm {ref_norm:.6g})")
        print(f"{'steps':>6} {'IMEX vs implicit':>17} {'implicit vs ref':>16} {'IMEX vs ref':>12}")
    for n in STEPS:
        imex, impl = runs["explicit", n], runs["implicit", n]
        row = (rel(imex, impl), rel(impl, ref) if n != STEPS[-1] else 0.0, rel(imex, ref))
        if comm.rank == 0:
            print(f"{n:>6} {row[0]:17.3e} {row[1]:16.3e} {row[2]:12.3e}")


if __name__ == "__main__":
    main()
