"""Threads over blocks of the time x space grid for the numpy networks.

numpy's ufuncs and BLAS calls release the GIL, so the blocks of a grid
evaluation run in parallel on a few threads.  :func:`run_ranges` splits the
blocks into contiguous ranges, one per thread; :func:`run_blocks` hands out
small ranges as threads become free (a thread that shares its core with
another process does less of the work).  Callers write per-block results
into preallocated slots and reduce them in block order afterwards, so the
result is bitwise the same for any number of threads and any scheduling.

The number of threads is ``FEMNPDE_NUM_THREADS`` if set, else
``OMP_NUM_THREADS`` (``femnpde`` sets it to 1 per rank under MPI), else the
number of CPUs available to the process divided by the number of MPI ranks
on this node (``OMPI_COMM_WORLD_LOCAL_SIZE``, ``MPI_LOCALNRANKS``), so that
ranks and threads do not oversubscribe the cores.  The pool is created on
first use (no import-time side effect).
"""

from __future__ import annotations

import itertools
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

__all__ = ["default_threads", "run_blocks", "run_ranges"]

_POOL: ThreadPoolExecutor | None = None
_POOL_SIZE = 0
_LOCK = threading.Lock()


def default_threads() -> int:
    """Threads used by default (see the module documentation)."""
    for var in ("FEMNPDE_NUM_THREADS", "OMP_NUM_THREADS"):
        value = os.environ.get(var, "").strip()
        if value:
            try:
                return max(1, int(value))
            except ValueError:
                raise ValueError(f"{var}={value!r} is not valid; use a positive integer") from None
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    local_ranks = 1
    for var in ("OMPI_COMM_WORLD_LOCAL_SIZE", "MPI_LOCALNRANKS"):
        value = os.environ.get(var, "").strip()
        if value.isdigit() and int(value) > 0:
            local_ranks = int(value)
            break
    return max(1, cpus // local_ranks)


def _pool(size: int) -> ThreadPoolExecutor:
    global _POOL, _POOL_SIZE
    with _LOCK:
        if _POOL is None or _POOL_SIZE < size:
            if _POOL is not None:
                _POOL.shutdown(wait=True)
            _POOL = ThreadPoolExecutor(max_workers=size, thread_name_prefix="femnpde-net")
            _POOL_SIZE = size
        return _POOL


def run_ranges(fn: Callable[[int, int], None], n_items: int, threads: int) -> None:
    """Call ``fn(lo, hi)`` on contiguous ranges covering ``range(n_items)``, in parallel.

    Args:
        fn: Works on items ``lo..hi-1``; must only write to per-item outputs.
        n_items: Number of items (blocks).
        threads: Number of threads (1: run in the calling thread).
    """
    k = max(1, min(int(threads), n_items))
    if k == 1:
        if n_items:
            fn(0, n_items)
        return
    bounds = [n_items * i // k for i in range(k + 1)]
    _run_parallel([lambda i=i: fn(bounds[i], bounds[i + 1]) for i in range(k)])


def run_blocks(
    make_worker: Callable[[], Callable[[int, int], None]], n_items: int, threads: int, grain: int | None = None
) -> None:
    """Process ``range(n_items)`` on ``threads`` threads, handing out ranges of items as threads become free.

    Each thread calls ``make_worker()`` once (for its own scratch buffers)
    and then the returned ``work(lo, hi)`` on successive ranges of ``grain``
    items taken from a shared counter: a thread slowed down by another
    process on its core takes fewer ranges, instead of the others waiting
    for its fixed share (as :func:`run_ranges` does).  ``work`` must only
    write to per-item outputs, so the result does not depend on the
    scheduling.

    Args:
        make_worker: Returns a ``work(lo, hi)`` callable (called once per thread).
        n_items: Number of items (blocks).
        threads: Number of threads (1: run in the calling thread).
        grain: Items per range (give it when ``work`` sums over its range,
            so that the ranges do not depend on ``threads``); default about
            1/16 of a thread's share.
    """
    k = max(1, min(int(threads), n_items))
    step = max(1, n_items // (16 * k)) if grain is None else max(1, int(grain))
    if k == 1:
        if n_items:
            work = make_worker()
            for lo in range(0, n_items, step):  # the same ranges as on several threads
                work(lo, min(lo + step, n_items))
        return
    counter = itertools.count()
    lock = threading.Lock()

    def loop() -> None:
        work = make_worker()
        while True:
            with lock:
                lo = next(counter) * step
            if lo >= n_items:
                return
            work(lo, min(lo + step, n_items))

    _run_parallel([loop] * k)


def _run_parallel(tasks: list[Callable[[], None]]) -> None:
    """Run ``tasks[0]`` in the calling thread and the others on the pool; re-raise the first error after all ended."""
    futures = [_pool(len(tasks) - 1).submit(task) for task in tasks[1:]]
    error: BaseException | None = None
    try:
        tasks[0]()
    except BaseException as err:  # wait for the workers before raising
        error = err
    for fut in futures:
        try:
            fut.result()
        except BaseException as err:
            error = error or err
    if error is not None:
        raise error
