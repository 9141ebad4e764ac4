"""Memory bandwidth per process count: what a memory-bound kernel can gain from a second rank.

Each rank streams its own arrays, far larger than the L3 cache (``--mb`` per array,
default 320 MB); printed on rank 0: the total over ranks of the best of 8 passes::

    scripts/env-run python3 bench/bandwidth.py
    scripts/env-run mpirun -n 2 python3 bench/bandwidth.py

``read``: ``a.sum()`` (8 bytes per entry); ``add``: ``c = a + b`` (24 bytes per entry).
Session 10 (2-core AMD EPYC, 32 MB shared L3): 1 process 15.7 / 23.1 GB/s, 2 processes
30.1 / 38.3 GB/s (read / add): DRAM bandwidth scales with the second core, so a 2D direct
solve that does not scale is limited by something else (the shared L3, the kernels).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from mpi4py import MPI


def best_seconds(fn, comm: MPI.Comm, passes: int = 8) -> float:
    """The shortest of ``passes`` wall times of ``fn()``, all ranks at once (barriers around each)."""
    best = float("inf")
    for _ in range(passes):
        comm.Barrier()
        t0 = time.perf_counter()
        fn()
        comm.Barrier()
        best = min(best, time.perf_counter() - t0)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mb", type=int, default=320, help="megabytes per array and rank")
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    n = args.mb * 1_000_000 // 8
    a, b, c = np.ones(n), np.ones(n), np.empty(n)
    t_read = best_seconds(a.sum, comm)
    t_add = best_seconds(lambda: np.add(a, b, out=c), comm)
    if comm.rank == 0:
        total = comm.size * n * 8 / 1e9
        print(f"{comm.size} process(es), {args.mb} MB per array: read {total / t_read:.1f} GB/s, "
              f"add {3 * total / t_add:.1f} GB/s (totals over the processes)")


if __name__ == "__main__":
    main()
