"""MPI helpers used across femnpde (one copy each).

* :func:`on_root` -- run a function on rank 0 (file access), broadcast its
  result, raise its exception on every rank;
* :func:`collective_check` -- raise on every rank if any rank found an error;
* :func:`rank0_print` -- print on rank 0 only;
* :func:`tags_present` -- the global list of mesh tag values;
* :func:`bounding_box` -- the global bounding box of distributed points.

A communicator ``None`` means serial.  Every function is collective over
``comm``.  mpi4py is only imported where a reduction needs its operators.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np

__all__ = ["bounding_box", "collective_check", "comm_rank", "comm_size", "on_root", "rank0_print", "tags_present"]

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
