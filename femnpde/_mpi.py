"""MPI helpers used across femnpde (one copy each).

* :func:`on_root` -- run a function on rank 0 (file access), broadcast its
  result, raise its exception on every rank;
* :func:`collective_check` -- raise on every rank if any rank found an error;
* :func:`run_agreed` -- run a generator of local work and collectives, the
  ranks agreeing after each piece (an error on one rank is raised on every rank);
* :func:`rank0_print` -- print on rank 0 only;
* :class:`ErrorGuard` -- an error on some ranks only ends every rank, its
  message printed once;
* :class:`FailureAgreement` -- whether every rank failed (may the cleanup be collective?);
* :func:`tags_present` -- the global list of mesh tag values;
* :func:`bounding_box` -- the global bounding box of distributed points.

A communicator ``None`` means serial.  Every function is collective over
``comm``.  mpi4py is only imported where a reduction needs its operators.
"""

from __future__ import annotations

import pickle
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import numpy as np

__all__ = ["ErrorGuard", "FailureAgreement", "bounding_box", "collective_check", "comm_rank", "comm_size", "on_root", "rank0_print", "run_agreed", "tags_present"]

_T = TypeVar("_T")


def comm_rank(comm: Any) -> int:
    """The rank of ``comm`` (0 for ``None``)."""
    return 0 if comm is None else comm.rank


def comm_size(comm: Any) -> int:
    """The size of ``comm`` (1 for ``None``)."""
    return 1 if comm is None else comm.size


def _portable(err: BaseException, what: str) -> BaseException:
    """``err`` if it can be broadcast (pickled), else a RuntimeError with its message."""
    try:
        pickle.loads(pickle.dumps(err))
        return err
    except Exception:  # noqa: BLE001 - an exception that cannot travel
        prefix = f"{what} failed on rank 0: " if what else ""
        return RuntimeError(f"{prefix}{type(err).__name__}: {err}")


def on_root(comm: Any, fn: Callable[[], _T], what: str = "", broadcast: bool = True) -> _T | None:
    """Run ``fn`` on rank 0 only and make every rank agree on the outcome (collective).

    Args:
        comm: The communicator (``None``: serial).
        fn: The function (typically file access).
        what: A description for messages of exceptions that cannot be pickled.
        broadcast: Broadcast ``fn``'s result to every rank; if False, ranks
            other than 0 get ``None`` (for results that are large or not picklable).

    Returns:
        ``fn()``'s value (on every rank if ``broadcast``, else on rank 0).

    Raises:
        Exception: ``fn``'s exception on rank 0 and the same exception
            (broadcast) on every other rank.
    """
    result: Any = None
    error: BaseException | None = None
    original: BaseException | None = None
    if comm_rank(comm) == 0:
        try:
            result = fn()
        except Exception as err:  # noqa: BLE001 - re-raised below, on every rank
            original = err
            error = _portable(err, what)
    if comm_size(comm) > 1:
        error = comm.bcast(error, root=0)
        if broadcast and error is None:
            result = comm.bcast(result, root=0)
    if original is not None:
        raise original
    if error is not None:
        raise error
    return result


def collective_check(comm: Any, error: str | None) -> None:
    """Raise ``ValueError`` on every rank if any rank reports an error message (collective)."""
    errors = [error] if comm_size(comm) == 1 else comm.allgather(error)
    bad = [(r, e) for r, e in enumerate(errors) if e is not None]
    if bad:
        r, e = bad[0]
        raise ValueError(e if comm_size(comm) == 1 else f"{e} (rank {r})")


_DONE = object()


def run_agreed(comm: Any, steps: Iterator[None], what: str) -> None:
    """Run ``steps`` to its end, the ranks agreeing after each step (collective: one allreduce of 3 ints per step).

    ``steps`` (typically a generator) does local work and yields before each of its collectives:
    if any rank raised in the step before, every rank raises instead of entering the collective
    (which the failed rank would never reach).  Use it for a set-up whose local work may fail on
    some ranks only (e.g. out of memory in one rank's factorisation).

    Args:
        comm: The communicator (``None``: serial, ``steps`` simply runs).
        steps: The work, yielding before each collective that follows local work.
        what: What runs, for the message of the ranks that did not fail.

    Raises:
        Exception: On a rank where a step raised, its own exception; on the other ranks a
            :class:`RuntimeError` "``what`` failed on another rank (see that rank's error)".
            A :class:`RuntimeError` on every rank if the ranks yielded a different number of
            times (some finished while others did not: a bug in ``steps``).
    """
    if comm_size(comm) == 1:
        for _ in steps:
            pass
        return
    from mpi4py import MPI

    while True:
        error = None
        try:
            done = next(steps, _DONE) is _DONE
        except Exception as err:  # noqa: BLE001 - re-raised below, with every rank raising
            error, done = err, True
        flags = np.array([error is not None, done, not done], dtype=np.int32)
        comm.Allreduce(MPI.IN_PLACE, flags, op=MPI.MAX)
        if flags[0]:
            if error is not None:
                raise error
            raise RuntimeError(f"{what} failed on another rank (see that rank's error)")
        if flags[1] and flags[2]:
            raise RuntimeError(f"{what}: the ranks reached different steps (a bug in the set-up)")
        if done:
            return


def rank0_print(comm: Any, *args: Any, **kwargs: Any) -> None:
    """``print`` on rank 0 only (flushed by default).

    Args:
        comm: The communicator (``None`` means serial).
        *args: Passed to :func:`print`.
        **kwargs: Passed to :func:`print` (``flush`` defaults to True).
    """
    if comm_rank(comm) == 0:
        kwargs.setdefault("flush", True)
        print(*args, **kwargs)


def tags_present(tags: Any, comm: Any) -> list[int]:
    """The sorted tag values used anywhere on ``comm`` (collective).

    Args:
        tags: ``dolfinx.mesh.MeshTags`` (None: no tags on this rank).
        comm: The mesh's communicator.

    Returns:
        The global list of distinct values.
    """
    local = np.unique(tags.values).tolist() if tags is not None else []
    present: set[int] = set()
    for values in [local] if comm_size(comm) == 1 else comm.allgather(local):
        present.update(int(v) for v in values)
    return sorted(present)


def bounding_box(comm: Any, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Global componentwise minimum and maximum of the local points ``x`` (shape ``(n, d)``; collective)."""
    x = np.asarray(x, dtype=np.float64)
    lo = np.min(x, axis=0, initial=np.inf)
    hi = np.max(x, axis=0, initial=-np.inf)
    if comm_size(comm) == 1:
        return lo, hi
    from mpi4py import MPI

    glo = np.empty_like(lo)
    ghi = np.empty_like(hi)
    comm.Allreduce(np.ascontiguousarray(lo), glo, op=MPI.MIN)
    comm.Allreduce(np.ascontiguousarray(hi), ghi, op=MPI.MAX)
    return glo, ghi


class FailureAgreement:
    """Whether every rank failed: decides if the cleanup of a failure may call collective operations.

    Destroying PETSc objects is collective; a rank that failed alone must not
    do it (the other ranks are elsewhere, in another collective call, and
    both would wait forever).  :meth:`all_failed` is a non-blocking barrier
    on a private duplicate of the communicator (it never matches a collective
    call of the computation), given ``grace`` seconds to complete.

    Args:
        comm: The communicator (collective: every rank constructs the agreement).
        grace: Seconds to wait for the other ranks.
    """

    def __init__(self, comm: Any, grace: float = 2.0) -> None:
        self.comm = comm
        self.grace = grace
        self._private = comm.Dup() if comm_size(comm) > 1 else None
        self._pending: Any = None

    def all_failed(self) -> bool:
        """Called by a failing rank: True if every rank of ``comm`` calls it within ``grace`` seconds."""
        if self._private is None:
            return True
        if self._pending is None:  # a second call waits on the same barrier
            self._pending = self._private.Ibarrier()
        deadline = time.monotonic() + self.grace
        while not self._pending.Test():
            if time.monotonic() > deadline:
                return False
            time.sleep(0.005)
        self._pending = None
        return True

    def free(self) -> None:
        """Free the private communicator (collective; only when every rank gets here)."""
        if self._private is not None and self._pending is None:
            self._private.Free()
        self._private = None


class ErrorGuard:
    """Ends every rank when an error reaches the top level, with its message printed once.

    An error raised on every rank (a configuration error, an exception
    broadcast by :func:`on_root`, a failed collective solve) is reported by
    rank 0 and every rank returns the exit code.  An error raised on some
    ranks only (user code failing on one rank, a file readable on one node
    only) would leave the other ranks waiting in their next collective call
    forever: the failing ranks wait ``grace`` seconds for the others to
    report too, then print their message and call ``Abort`` on the
    communicator, which ends every rank with the exit code.

    The agreement uses a private duplicate of the communicator (a
    non-blocking barrier), so it never matches a collective call of the
    computation.

    Args:
        comm: The communicator of the command (collective: every rank
            constructs the guard).
        grace: Seconds the failing ranks wait for the others.
    """

    def __init__(self, comm: Any, grace: float = 2.0) -> None:
        self._world = comm
        self._agreement = FailureAgreement(comm, grace)

    def fail(self, message: str, code: int) -> int:
        """Report an error of this rank; returns ``code`` if every rank failed, else aborts every rank.

        Args:
            message: The complete message (printed to stderr as is).
            code: The exit code.

        Returns:
            ``code`` (when every rank reached :meth:`fail`; rank 0 printed the message).
        """
        if not self._agreement.all_failed():  # some ranks are elsewhere: end them all
            print(f"{message} (on rank {self._world.rank} of {self._world.size}; ending every rank)",
                  file=sys.stderr, flush=True)
            self._world.Abort(code)
        if comm_rank(self._world) == 0:
            print(message, file=sys.stderr, flush=True)
        self.close()
        return code

    def close(self) -> None:
        """Free the private communicator (collective; after a successful command)."""
        self._agreement.free()
