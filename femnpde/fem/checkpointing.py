"""Bounded-memory state storage: checkpointing schedules for the adjoint sweep.

:class:`CheckpointStorage` plugs into :class:`~femnpde.fem.solver.ThetaSolver`
in place of :class:`~femnpde.fem.storage.MemoryStorage`.  It keeps only the
restart snapshots that a schedule of the ``checkpoint_schedules`` package
(binomial / multistage: Griewank & Walther's revolve with memory and disk
levels) asks for, and recomputes the states the adjoint sweep needs from the
nearest snapshot through a :class:`Stepper` (the solver's one-step forward).

* During the forward sweep the solver calls ``store(n, u^n)`` for n = 0..N;
  the storage keeps the snapshots of the schedule's initial forward actions
  (``Forward(n0, n1, write_ics=True, ...)``: ``u^{n0}``) and the adjoint
  dependencies of the last step.  ``store(0, ...)`` starts a new schedule.
* During the adjoint sweep (n = N..1) the solver calls :meth:`load` for
  ``u^n`` and ``u^{n-1}`` (the theta-scheme adjoint of step n needs both).  A
  level that is not held is produced by running the schedule's next actions:
  ``Copy``/``Move`` of a snapshot to the working state and ``Forward``
  recomputations through the stepper, until the adjoint dependencies of the
  requested step are held.

Schedule step ``i`` of ``checkpoint_schedules`` advances ``u^i`` to
``u^{i+1}``, i.e. it is the solver's time step ``n = i + 1``; its adjoint
dependencies are ``u^i`` and ``u^{i+1}``.  A step that is a pure function
of ``u^{n-1}`` (the constant-Jacobian path) recomputes the original states
bitwise, so the gradient does not change; a stepper with ``begin()`` /
``end()`` can keep and restore solver state around each batch of
recomputed steps (the nonlinear path restores its lagged Newton matrix: the
gradient then agrees to round-off).

Memory (per rank, ``s`` = bytes of one local state with ghosts): at most
``K_ram`` snapshots, two adjoint dependencies and the level last handed to
the caller (or the working copy of a snapshot), i.e. ``(K_ram + 3) s`` against ``(N + 1) s``
for :class:`MemoryStorage`.  Disk snapshots are per-rank ``.npy`` files in a
private temporary directory that :meth:`CheckpointStorage.close` (and garbage
collection) removes.
"""

from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

import numpy as np
from checkpoint_schedules import Copy, EndForward, EndReverse, Forward, Move, Reverse, StorageType

from femnpde.fem.storage_plan import StoragePlan, schedule

__all__ = ["Stepper", "CheckpointStorage"]


class Stepper(Protocol):
    """The one-step forward map the storage recomputes states with."""

    def step(self, n: int, u_prev: np.ndarray) -> np.ndarray:
        """Advance ``u^{n-1}`` (local array with ghosts) to ``u^n``.

        The result may be a view of the stepper's working memory; the storage
        copies what it keeps.  Collective on the problem's communicator.
        A stepper may also have ``begin()`` / ``end()``, called around each
        batch of recomputed steps (e.g. to keep solver state the adjoint uses).
        """


def _remove_tree(path: str) -> None:
    shutil.rmtree(path, ignore_errors=True)


class CheckpointStorage:
    """States through a multistage checkpointing schedule (memory and disk levels).

    Args:
        plan: A ``"checkpointing"`` plan from :func:`femnpde.fem.storage_plan.plan_storage`.
        stepper: The one-step forward used for recomputation (collective);
            may be attached later with :meth:`attach`.
    """

    #: Not every level is held: the loss must be taken during the forward sweep.
    keeps_all_levels = False

    def __init__(self, plan: StoragePlan, stepper: Stepper | None = None) -> None:
        if plan.kind != "checkpointing" or plan.snapshots_in_ram + plan.snapshots_on_disk < 1:
            raise ValueError(f"CheckpointStorage: needs a checkpointing plan with snapshots, got {plan}")
        self.plan = plan
        self.stepper = stepper
        self._ram: dict[int, np.ndarray] = {}
        self._disk: dict[int, Path] = {}
        self._deps: dict[int, np.ndarray] = {}
        self._work: np.ndarray | None = None
        self._work_level = -1
        self._work_private = False
        self._iter: Iterator | None = None
        self._action = None  # the current forward action of the first sweep
        self._phase = "idle"  # "forward" | "reverse" | "done"
        self._last_stored = -1
        self._lowest_served = None
        self._handed: np.ndarray | None = None
        self._dir: str | None = None
        self._finalizer = None
        self.peak_bytes = 0
        self.forward_steps = 0  # recomputed steps in the last adjoint sweep

    def attach(self, stepper: Stepper) -> None:
        """Set the stepper used for recomputation."""
        self.stepper = stepper

    # ------------------------------------------------------------ bookkeeping
    @property
    def nbytes(self) -> int:
        """Memory held now (snapshots, adjoint dependencies, working copy, handed level)."""
        arrays = {id(a): a for a in (*self._ram.values(), *self._deps.values())}
        for a in (self._work if self._work_private else None, self._handed):
            if a is not None:
                arrays[id(a)] = a
        return sum(a.nbytes for a in arrays.values())

    def _account(self) -> None:
        self.peak_bytes = max(self.peak_bytes, self.nbytes)

    def _disk_path(self, n: int) -> Path:
        if self._dir is None:
            self._dir = tempfile.mkdtemp(prefix="femnpde-states-", dir=self.plan.directory)
            self._finalizer = weakref.finalize(self, _remove_tree, self._dir)
        return Path(self._dir) / f"u{n:08d}.npy"

    def _put(self, n: int, storage: StorageType, values: np.ndarray, copy: bool) -> None:
        if storage == StorageType.RAM:
            self._ram[n] = np.array(values, copy=True) if copy else values
        elif storage == StorageType.DISK:
            path = self._disk_path(n)
            np.save(path, values)
            self._disk[n] = path
        else:
            raise RuntimeError(f"CheckpointStorage: unexpected snapshot storage {storage!r}")
        self._account()

    def _take(self, n: int, storage: StorageType, delete: bool) -> np.ndarray:
        if storage == StorageType.RAM:
            return self._ram.pop(n) if delete else self._ram[n].copy()
        if storage == StorageType.DISK:
            path = self._disk[n]
            arr = np.load(path)
            if delete:
                path.unlink()
                del self._disk[n]
            return arr
        raise RuntimeError(f"CheckpointStorage: unexpected snapshot storage {storage!r}")

    def _next(self):
        try:
            return next(self._iter)
        except StopIteration:
            raise RuntimeError("CheckpointStorage: the schedule is exhausted; run the forward sweep again") from None

    # ---------------------------------------------------------- forward sweep
    def store(self, n: int, values: np.ndarray) -> None:
        """Observe ``u^n`` of the forward sweep; keep it if the schedule says so.

        ``n = 0`` starts a new forward sweep (and forgets the previous one).
        """
        if n == 0:
            self.clear()
            self._iter = iter(schedule(self.plan.n_steps, self.plan.snapshots_in_ram, self.plan.snapshots_on_disk))
            self._phase = "forward"
            self._last_stored = 0
            self._begin(0, values)
            return
        a = self._action
        if self._phase != "forward" or n != self._last_stored + 1 or not (a.n0 < n <= a.n1):
            raise RuntimeError(
                f"CheckpointStorage.store: level {n} is out of order (phase {self._phase}, action {a}); "
                f"the forward sweep stores levels 0, 1, ..., N in turn"
            )
        self._last_stored = n
        if a.write_adj_deps:
            self._keep_dep(n, values)
        if n == a.n1:
            self._begin(n, values)

    def _begin(self, n: int, values: np.ndarray) -> None:
        """Take the schedule's next action of the first forward sweep, which starts at level ``n``."""
        a = self._next()
        if isinstance(a, EndForward):
            self._phase = "reverse"
            self._lowest_served = n
            return
        if not isinstance(a, Forward) or a.n0 != n:
            raise RuntimeError(f"CheckpointStorage: unexpected action {a} at level {n} of the forward sweep")
        self._action = a
        if a.write_ics:
            self._put(n, a.storage, values, copy=True)
        if a.write_adj_deps:
            self._keep_dep(n, values)

    def _keep_dep(self, n: int, values: np.ndarray) -> None:
        self._deps[n] = np.array(values, copy=True)
        self._account()

    # ---------------------------------------------------------- adjoint sweep
    def load(self, n: int) -> np.ndarray:
        """``u^n`` for the adjoint sweep (levels requested from N down to 0).

        The array stays valid until the next call (treat it as read-only).

        Raises:
            RuntimeError: the level is requested out of the adjoint order, or
                no forward sweep was run.
        """
        if self._phase != "reverse":
            raise RuntimeError(
                f"CheckpointStorage.load: level {n} is not available (phase {self._phase}); a checkpointing "
                f"storage serves the adjoint sweep only, backwards in time, after a forward sweep"
            )
        if n not in self._deps:
            if n > self._lowest_served:
                raise RuntimeError(
                    f"CheckpointStorage.load: level {n} requested after level {self._lowest_served}; a "
                    f"checkpointing storage serves levels backwards in time only (use state_storage = \"memory\" "
                    f"to read the levels in any order)"
                )
            begin, end = getattr(self.stepper, "begin", None), getattr(self.stepper, "end", None)
            if begin is not None:
                begin()
            try:
                self._advance_to(n)
            finally:
                if end is not None:
                    end()
        self._lowest_served = min(self._lowest_served, n)
        self._handed = self._deps[n]
        self._account()
        return self._handed

    def _advance_to(self, n: int) -> None:
        """Run the schedule until the adjoint dependencies hold level ``n``."""
        if self.stepper is None:
            raise RuntimeError("CheckpointStorage: no stepper attached; cannot recompute states")
        while n not in self._deps:
            a = self._next()
            if isinstance(a, Reverse):
                # The adjoint has passed this step's dependencies.
                if a.clear_adj_deps:
                    self._deps.clear()
            elif isinstance(a, (Copy, Move)):
                delete = isinstance(a, Move)
                if a.to_storage == StorageType.WORK:
                    self._work = self._take(a.n, a.from_storage, delete)
                    self._work_level = a.n
                    self._work_private = True
                else:
                    self._put(a.n, a.to_storage, self._take(a.n, a.from_storage, delete), copy=False)
                self._account()
            elif isinstance(a, Forward):
                self._recompute(a)
            elif isinstance(a, EndReverse):
                self._phase = "done"
                raise RuntimeError(f"CheckpointStorage: the schedule ended before level {n} was recomputed")
            else:
                raise RuntimeError(f"CheckpointStorage: unexpected schedule action {a}")

    def _recompute(self, a: Forward) -> None:
        if self._work_level != a.n0 or self._work is None:
            raise RuntimeError(f"CheckpointStorage: working state is level {self._work_level}, {a} needs {a.n0}")
        for i in a:
            if i == a.n0 and a.write_ics:
                self._put(i, a.storage, self._work, copy=not self._work_private)
                if self._work_private and a.storage == StorageType.RAM:
                    self._work_private = False  # now owned by the snapshot
            if a.write_adj_deps:
                self._deps[i] = self._work if self._work_private else np.array(self._work, copy=True)
                self._work_private = False
            self._account()
            self._work = self.stepper.step(i + 1, self._work)
            self._work_private = False
            self._work_level = i + 1
            self.forward_steps += 1
        if a.write_adj_deps:
            self._keep_dep(a.n1, self._work)
        self._account()

    def to_array(self) -> np.ndarray:
        """Not available: only snapshots are kept.

        Raises:
            RuntimeError: always; :meth:`femnpde.model.reduced.ReducedFunctional.all_states`
                replays the forward sweep to collect every level.
        """
        raise RuntimeError(
            "CheckpointStorage.to_array: a checkpointing storage keeps only snapshots, not every level; "
            "use ReducedFunctional.all_states() (replays the forward sweep) or state_storage = \"memory\""
        )

    def clear(self) -> None:
        """Forget all states (and remove the disk snapshots)."""
        self._ram.clear()
        self._deps.clear()
        for path in self._disk.values():
            path.unlink(missing_ok=True)
        self._disk.clear()
        self._work = self._handed = None
        self._work_level = -1
        self._work_private = False
        self._iter = None
        self._phase = "idle"
        self.forward_steps = 0

    def close(self) -> None:
        """Forget all states and remove the private directory of the disk snapshots."""
        self.clear()
        if self._finalizer is not None:
            self._finalizer()
            self._finalizer = None
            self._dir = None

    @property
    def directory(self) -> str | None:
        """The private directory of the disk snapshots (None until the first is written)."""
        return self._dir
