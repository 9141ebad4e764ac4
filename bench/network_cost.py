"""Cost of the network part alone: forward on the time x space grid and its VJP.

Run inside the environment (serially; the network is replicated, each rank
evaluates its own dofs):

    git show main:femnpde/model/network.py > runs/baseline_network.py   # git is not in the environment
    scripts/env-run python3 bench/network_cost.py --baseline runs/baseline_network.py
    scripts/env-run python3 bench/network_cost.py --baseline runs/baseline_network.py --N 100 --dofs 13041

The grids are those of the paper's rectangle [0, 0.5] x [0, 1] with P1 dofs
on a structured mesh: 21 x 41 = 861 dofs (h = 0.025) and 81 x 161 = 13 041
dofs (h = 0.00625), 65 time levels on [0, 1] (64 steps).  For each N it
prints the median (over ``--repeats`` runs) of the forward
``evaluate_grid(t, x, cache=True)`` and of ``vjp_grid(r)``, for the current
:class:`femnpde.model.network.ShallowNetwork` and, in the same process, for
the baseline module (``git show <rev>:femnpde/model/network.py``, default
``main``; or ``--baseline FILE``), with the speed-up and the relative
difference of the results (max-norm over the grid / the gradient).

The machine may be shared: only medians of several repetitions are printed,
and both versions are timed alternately in the same run.  ``--memory``
adds the peak of the memory allocated by one forward + VJP of each version
(``tracemalloc``, which numpy reports its arrays to; the activation
buffers and caches included), measured outside the timings.
``--threads-overhead`` only measures the thread CPU time of one VJP
(N = 100) alone and while another VJP runs in a second thread of the same
process (the cost of sharing the GIL; meaningful when both threads get a
core).
"""

from __future__ import annotations

import argparse
import importlib.util
import pathlib
import subprocess
import sys
import tempfile
import time
import tracemalloc

import numpy as np

from femnpde.model.mlp import MLP
from femnpde.model.network import ShallowNetwork

GRIDS = {861: (21, 41), 13041: (81, 161)}


def load_baseline(rev: str, path: str | None):
    """The baseline network module, from a file or from git revision ``rev``."""
    if path is None:
        root = pathlib.Path(__file__).resolve().parents[1]
        try:
            src = subprocess.run(
                ["git", "-C", str(root), "show", f"{rev}:femnpde/model/network.py"],
                check=True, capture_output=True, text=True,
            ).stdout
        except FileNotFoundError:
            sys.exit("network_cost.py: git is not available here (e.g. inside scripts/env-run); write the baseline "
                     "first, git show main:femnpde/model/network.py > /tmp/x/base.py, and pass --baseline /tmp/x/base.py")
        tmp = tempfile.NamedTemporaryFile("w", suffix="_baseline_network.py", delete=False)
        tmp.write(src)
        tmp.close()
        path = tmp.name
    spec = importlib.util.spec_from_file_location("baseline_network", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["baseline_network"] = mod
    spec.loader.exec_module(mod)
    return mod


def grid(n_dofs: int) -> tuple[np.ndarray, np.ndarray]:
    nx, ny = GRIDS[n_dofs]
    X, Y = np.meshgrid(np.linspace(0.0, 0.5, nx), np.linspace(0.0, 1.0, ny), indexing="ij")
    return np.linspace(0.0, 1.0, 65), np.column_stack([X.ravel(), Y.ravel()])


def timings(net, t, x, r, repeats, clock=time.perf_counter):
    """Median forward and VJP times (wall clock, or ``time.process_time``: CPU of all threads) and the last results."""
    fwd, bwd = [], []
    for _ in range(repeats):
        t0 = clock()
        g = net.evaluate_grid(t, x, cache=True)
        t1 = clock()
        dg = net.vjp_grid(r)
        t2 = clock()
        fwd.append(t1 - t0)
        bwd.append(t2 - t1)
    return float(np.median(fwd)), float(np.median(bwd)), g, dg


def peak_mb(make_net, t, x, r) -> float:
    """Peak memory (MB) allocated while building a network and running one forward + VJP (then freed)."""
    tracemalloc.start()
    tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0]
    net = make_net()
    net.evaluate_grid(t, x, cache=True)
    net.vjp_grid(r)
    peak = tracemalloc.get_traced_memory()[1] - base
    del net
    tracemalloc.stop()
    return peak / 1e6


def thread_overhead(t, x, r, repeats: int) -> tuple[float, float]:
    """Median thread CPU time of one VJP alone and of each of two independent VJPs run in two threads (1 thread each)."""
    import threading

    nets = [ShallowNetwork(100, 2, seed=42, threads=1) for _ in range(2)]
    for net in nets:
        net.evaluate_grid(t, x)
        net.vjp_grid(r)

    def job(net, out):
        for _ in range(repeats):
            c0 = time.thread_time()
            net.vjp_grid(r)
            out.append(time.thread_time() - c0)

    solo: list[float] = []
    job(nets[0], solo)
    outs: list[list[float]] = [[], []]
    workers = [threading.Thread(target=job, args=(nets[i], outs[i])) for i in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return float(np.median(solo)), float(np.median(outs[0] + outs[1]))


def rel(a, b) -> float:
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--N", nargs="+", type=int, default=[10, 100, 1000])
    parser.add_argument("--dofs", nargs="+", type=int, default=[861, 13041], choices=sorted(GRIDS))
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--rev", default="main", help="git revision of the baseline network module")
    parser.add_argument("--baseline", help="a file holding the baseline network module instead of --rev")
    parser.add_argument("--mlp", action="store_true", help="also time an MLP with hidden = [N, N]")
    parser.add_argument("--threads", type=int, help="threads of the new network (default: femnpde's default)")
    parser.add_argument("--memory", action="store_true",
                        help="also print the peak memory of one forward + VJP of each version (tracemalloc)")
    parser.add_argument("--threads-overhead", action="store_true",
                        help="only measure the CPU cost of running two VJPs (N = 100) in two threads of one process")
    parser.add_argument("--cpu", action="store_true",
                        help="time with process CPU time (all threads) instead of wall clock: less sensitive to "
                             "other processes on a shared machine")
    args = parser.parse_args()
    clock = time.process_time if args.cpu else time.perf_counter
    if args.threads_overhead:
        for n_dofs in args.dofs:
            t, x = grid(n_dofs)
            r = np.random.default_rng(1).standard_normal((t.size, x.shape[0]))
            solo, pair = thread_overhead(t, x, r, args.repeats)
            print(f"{n_dofs:>6} dofs, N = 100: VJP thread CPU alone {solo:.4f} s, with another VJP in a second thread "
                  f"{pair:.4f} s (+{100 * (pair / solo - 1):.0f} %)", flush=True)
        return
    base = load_baseline(args.rev, args.baseline)
    print("network forward (evaluate_grid) and VJP (vjp_grid), medians of", args.repeats, "runs [s,",
          "CPU time]" if args.cpu else "wall clock]", f"; new network threads = {ShallowNetwork(1, 2).threads}"
          if args.threads is None else f"; new network threads = {args.threads}")
    print("baseline = femnpde/model/network.py at", args.baseline or args.rev, "; shared machine: noisy figures")
    print(f"{'dofs':>6} {'N':>5} | {'fwd base':>9} {'vjp base':>9} {'sum base':>9} | "
          f"{'fwd new':>9} {'vjp new':>9} {'sum new':>9} | {'ratio':>6} | {'rel diff g':>10} {'rel diff dJ':>11}")
    for n_dofs in args.dofs:
        t, x = grid(n_dofs)
        r = np.random.default_rng(1).standard_normal((t.size, x.shape[0]))
        for N in args.N:
            old = base.ShallowNetwork(N, 2, seed=42)
            new = ShallowNetwork(N, 2, seed=42, threads=args.threads)
            # warm-up (allocates the activation buffers), then alternate
            timings(old, t, x, r, 1)
            timings(new, t, x, r, 1)
            fo, bo, go, do = timings(old, t, x, r, args.repeats, clock)
            fn, bn, gn, dn = timings(new, t, x, r, args.repeats, clock)
            old.clear_cache()
            new.clear_cache()
            print(f"{n_dofs:>6} {N:>5} | {fo:9.4f} {bo:9.4f} {fo + bo:9.4f} | {fn:9.4f} {bn:9.4f} {fn + bn:9.4f} | "
                  f"{(fo + bo) / (fn + bn):6.2f} | {rel(gn, go):10.2e} {rel(dn, do):11.2e}", flush=True)
            if args.memory:
                mo = peak_mb(lambda: base.ShallowNetwork(N, 2, seed=42), t, x, r)
                mn = peak_mb(lambda: ShallowNetwork(N, 2, seed=42, threads=args.threads), t, x, r)
                print(f"{n_dofs:>6} {N:>5} | peak memory of forward + VJP: base {mo:.1f} MB, new {mn:.1f} MB", flush=True)
            if args.mlp:
                mlp = MLP(2, [N, N], seed=42)
                timings(mlp, t, x, r, 1)
                fm, bm, _, _ = timings(mlp, t, x, r, args.repeats, clock)
                mlp.clear_cache()
                print(f"{n_dofs:>6} {N:>5} | MLP hidden=[{N}, {N}]: forward {fm:.4f} s, VJP {bm:.4f} s", flush=True)


if __name__ == "__main__":
    main()
