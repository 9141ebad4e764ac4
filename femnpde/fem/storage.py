"""Where the forward sweep keeps the states the adjoint sweep needs.

A storage maps a time level ``n`` to the local array (owned and ghost
entries) of ``u^n``.  :class:`MemoryStorage` keeps everything in memory;
checkpointing to disk or recomputation schedules plug in through the same
four methods.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np

__all__ = ["StateStorage", "MemoryStorage"]


class StateStorage(Protocol):
    """Interface of a state storage."""

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
