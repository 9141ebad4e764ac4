"""FD-vs-adjoint agreement for the residuals of tests/test_exact_gradients.py.

Run inside the environment, serially and on 2 ranks:

    scripts/env-run python3 bench/exact_gradients.py
    scripts/env-run mpirun -n 2 python3 bench/exact_gradients.py

For each residual it prints the quadrature degree(s) of the residual's
integrals, the source kind and the best relative error of central finite
differences (steps 1e-2 … 1e-6, two random directions) against the adjoint
directional derivative (issue 9 target: <= 1e-9), and the minimum Taylor rate.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from mpi4py import MPI

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_exact_gradients import CASES, build_case  # noqa: E402

from femnpde.model.verification import finite_difference_check, taylor_test  # noqa: E402


def main() -> None:
    comm = MPI.COMM_WORLD
    if comm.rank == 0:
        print(f"{comm.size} rank(s)")
        print(f"| residual | degree(s) | source | FD best rel. error | min Taylor rate |")
        print("|---|---|---|---|---|")
    for k, (name, case) in enumerate(CASES.items()):
        rf, theta0 = build_case(case, comm, prefix=f"bench_exact{k}_")
        F = rf.solver.problem.F_ufl
        degrees = sorted({itg.metadata().get("quadrature_degree", "est.") for itg in F.integrals()}, key=str)
        fd = finite_difference_check(rf, theta0, n_directions=2, seed=1)
        d = np.random.default_rng(2).standard_normal(theta0.size)
        tay = taylor_test(rf, theta0, d, n_steps=4)
        rf.solver.destroy()
        rf.misfit.destroy()
        if comm.rank == 0:
            print(f"| {name} | {','.join(map(str, degrees))} | {case.source} | {fd.worst:.1e} | {tay.min_rate:.3f} |")


if __name__ == "__main__":
    main()
