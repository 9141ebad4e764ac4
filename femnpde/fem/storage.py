"""Where the forward sweep keeps the states the adjoint sweep needs.

A storage maps a time level ``n`` to the local array (owned and ghost
entries) of ``u^n``.  :class:`MemoryStorage` keeps everything in memory;
:class:`femnpde.fem.checkpointing.CheckpointStorage` keeps a bounded number
of snapshots (memory and disk) and recomputes the rest during the adjoint
sweep, through the same four methods; :func:`make_state_storage` picks one
from a specification.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
from mpi4py import MPI

from femnpde.fem.checkpointing import CheckpointStorage
from femnpde.fem.storage_plan import plan_storage

__all__ = ["StateStorage", "MemoryStorage", "make_state_storage", "plan_state_storage", "storage_for"]


class StateStorage(Protocol):
    """Interface of a state storage.

    ``keeps_all_levels`` tells whether every level can be loaded in any order
    after the forward sweep; when it is false, the storage serves the adjoint
    sweep only (levels N down to 0) and losses must be taken during the
    forward sweep.
    """

    keeps_all_levels: bool

    def store(self, n: int, values: np.ndarray) -> None:
        """Keep a copy of the state at time level ``n``."""

    def load(self, n: int) -> np.ndarray:
        """Return the state at time level ``n`` (read-only use)."""

    def clear(self) -> None:
        """Forget all states."""

    def to_array(self) -> np.ndarray:
        """All states as one array, shape ``(n_levels, n_local)`` (owned and ghost entries; read-only use).

        Callers use this instead of reaching into a storage's internals.
        """


class MemoryStorage:
    """All states in one preallocated array (``(n_levels, n_local)``)."""

    keeps_all_levels = True

    def __init__(self, n_levels: int, n_local: int) -> None:
        self._data = np.zeros((n_levels, n_local), dtype=np.float64)
        self._filled = np.zeros(n_levels, dtype=bool)

    def store(self, n: int, values: np.ndarray) -> None:
        """Keep a copy of the state at time level ``n``."""
        self._data[n, :] = values
        self._filled[n] = True

    def load(self, n: int) -> np.ndarray:
        """Return the state at time level ``n``."""
        if not self._filled[n]:
            raise RuntimeError(f"MemoryStorage: no state stored for time level {n}; run the forward sweep first")
        return self._data[n]

    def clear(self) -> None:
        """Forget all states."""
        self._filled[:] = False

    def to_array(self) -> np.ndarray:
        """All states, shape ``(n_levels, n_local)`` (a read-only view; every level must be stored)."""
        if not self._filled.all():
            missing = np.flatnonzero(~self._filled).tolist()
            raise RuntimeError(f"MemoryStorage: no state stored for time levels {missing[:10]}; run the sweep first")
        view = self._data.view()
        view.flags.writeable = False
        return view

    @property
    def array(self) -> np.ndarray:
        """All states, shape ``(n_levels, n_local)`` (a view)."""
        return self._data

    @property
    def nbytes(self) -> int:
        """Memory held, in bytes."""
        return self._data.nbytes


def make_state_storage(spec: str | Mapping[str, Any], n_levels: int, n_local: int, comm: MPI.Comm):
    """The state storage for ``spec`` and its plan (collective: one allreduce).

    Args:
        spec: ``"memory"``, ``{"snapshots": K}`` or ``{"budget": "2GB"}``
            (optionally ``"disk_snapshots"``, ``"directory"``); see
            :func:`femnpde.fem.storage_plan.validate_state_storage`.
        n_levels: Time levels N + 1.
        n_local: Local state length (owned + ghosts) on this rank.
        comm: The problem's communicator (every rank gets the same schedule,
            sized by the largest rank).

    Returns:
        ``(storage, plan)`` with ``plan`` a
        :class:`femnpde.fem.checkpointing.StoragePlan`.
    """
    plan = plan_state_storage(spec, n_levels, n_local, comm)
    return storage_for(plan, n_levels, n_local), plan


def plan_state_storage(spec: str | Mapping[str, Any], n_levels: int, n_local: int, comm: MPI.Comm):
    """The :class:`~femnpde.fem.storage_plan.StoragePlan` of ``spec``, the same on every rank (one allreduce).

    The arguments are :func:`make_state_storage`'s; :func:`storage_for` builds the storage later.
    """
    n_local_max = comm.allreduce(int(n_local), op=MPI.MAX)
    return plan_storage(spec, n_levels - 1, n_local_max)


def storage_for(plan, n_levels: int, n_local: int) -> StateStorage:
    """The storage ``plan`` chose (:func:`plan_state_storage`): every level in memory, or checkpointing."""
    if plan.kind == "memory":
        return MemoryStorage(n_levels, n_local)
    return CheckpointStorage(plan)
