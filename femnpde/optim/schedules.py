"""Learning-rate schedules: plateau, step, cosine (bitwise deterministic, see :mod:`femnpde.optim`).

Every schedule steps as ``schedule.step(metric)`` and checkpoints with
``state_dict()`` / ``load_state_dict()``, implemented once in :class:`_Schedule`
from each schedule's list of state fields.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from femnpde.optim._checks import (
    _HasLR,
    _check_kind,
    _check_optimizer,
    _check_options,
    _get,
    _integer,
    _option_names,
    _non_negative,
    _positive,
    _real,
    _state_float,
    _state_int,
)

__all__ = ["CosineAnnealingLR", "ReduceLROnPlateau", "SCHEDULES", "StepLR", "make_schedule", "schedule_options"]


def _state_mode(state: Mapping[str, Any], key: str) -> str:
    mode = str(_get(state, key))
    if mode not in ("rel", "abs"):
        raise ValueError(f"state_dict[{key!r}] must be 'rel' or 'abs', got {mode!r}")
    return mode


def _state_period(state: Mapping[str, Any], key: str) -> int:
    return _integer(f"state_dict[{key!r}]", _state_int(state, key), 1)


class _Schedule:
    """``state_dict`` / ``load_state_dict`` from the class's ``_state`` = ((attribute, reader), ...)."""

    kind: str
    _state: tuple[tuple[str, Callable[[Mapping[str, Any], str], Any]], ...] = ()

    def state_dict(self) -> dict[str, Any]:
        """Return the schedule state (hyperparameters and counters)."""
        return {"kind": self.kind, **{name: getattr(self, name) for name, _ in self._state}}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict` (hyperparameters too, as in PyTorch).

        The optimizer's ``lr`` is not touched (it is part of the optimizer's
        own state).  Nothing is changed if a key is missing or invalid.

        Raises:
            ValueError: If ``state`` is of another kind or a key is missing.
        """
        _check_kind(state, self.kind)
        values = {name: read(state, name) for name, read in self._state}
        for name, value in values.items():
            setattr(self, name, value)


class _ClosedFormSchedule(_Schedule):
    """A schedule whose rate is a closed form ``_lr(epoch)`` of the epochs done and ``base_lr``.

    ``base_lr`` is the optimizer's ``lr`` at construction.
    """

    def __init__(self, optimizer: _HasLR) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def _lr(self, epoch: int) -> float:
        raise NotImplementedError

    def step(self, metric: float | None = None) -> None:
        """Advance one epoch and set the optimizer's ``lr``.

        Args:
            metric: Ignored; accepted so that all schedules can be stepped
                uniformly as ``schedule.step(loss)``.
        """
        self.last_epoch += 1
        self.optimizer.lr = self._lr(self.last_epoch)


class ReduceLROnPlateau(_Schedule):
    """Reduce the learning rate when a minimised metric stops improving.

    Same semantics as ``torch.optim.lr_scheduler.ReduceLROnPlateau`` with
    ``mode="min"``.  Each :meth:`step` counts one epoch: if the metric is not
    better than the best so far by the threshold, ``num_bad_epochs`` grows;
    when it *exceeds* ``patience`` (i.e. on the ``patience + 1``-th
    consecutive non-improving epoch) the learning rate becomes
    ``max(lr·factor, min_lr)`` (skipped if the change is ``<= eps``), the
    cooldown starts and the counter resets.  During the ``cooldown`` epochs
    after a reduction, bad epochs are not counted.  "Better" means
    ``metric < best·(1 − threshold)`` for ``threshold_mode="rel"`` and
    ``metric < best − threshold`` for ``"abs"``.  A NaN metric is never
    better (it counts as a bad epoch), as in PyTorch.

    Args:
        optimizer: Object with a settable ``lr`` attribute.
        factor: Multiplicative reduction, in ``(0, 1)``.
        patience: Number of tolerated non-improving epochs, >= 1.
        threshold: Minimum significant improvement, >= 0.
        threshold_mode: ``"rel"`` or ``"abs"``.
        cooldown: Epochs to wait after a reduction, >= 0.
        min_lr: Lower bound on the learning rate, >= 0.
        eps: Minimal applied change of the learning rate, >= 0.

    Raises:
        ValueError: On an out-of-range argument.
    """

    kind = "plateau"
    _state = (
        ("factor", _state_float),
        ("patience", _state_int),
        ("threshold", _state_float),
        ("threshold_mode", _state_mode),
        ("cooldown", _state_int),
        ("min_lr", _state_float),
        ("eps", _state_float),
        ("best", _state_float),
        ("num_bad_epochs", _state_int),
        ("cooldown_counter", _state_int),
        ("last_epoch", _state_int),
    )

    def __init__(
        self,
        optimizer: _HasLR,
        factor: float = 0.1,
        patience: int = 10,
        threshold: float = 1e-4,
        threshold_mode: str = "rel",
        cooldown: int = 0,
        min_lr: float = 0.0,
        eps: float = 1e-8,
    ) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.factor = _real("factor", factor)
        if not 0.0 < self.factor < 1.0:
            raise ValueError(f"factor must be in (0, 1), got {factor!r}")
        self.patience = _integer("patience", patience, 1)
        self.threshold = _non_negative("threshold", threshold)
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"threshold_mode must be 'rel' or 'abs', got {threshold_mode!r}")
        self.threshold_mode = threshold_mode
        self.cooldown = _integer("cooldown", cooldown, 0)
        self.min_lr = _non_negative("min_lr", min_lr)
        self.eps = _non_negative("eps", eps)
        self.best = math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.last_epoch = 0

    def _is_better(self, current: float) -> bool:
        if self.threshold_mode == "rel":
            return current < self.best * (1.0 - self.threshold)
        return current < self.best - self.threshold

    def step(self, metric: float) -> None:
        """Record one epoch's metric and reduce the learning rate if needed.

        Args:
            metric: The value being minimised (e.g. the training loss).
        """
        current = float(metric)
        self.last_epoch += 1
        if self._is_better(current):
            self.best = current
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old_lr = float(self.optimizer.lr)
            new_lr = max(old_lr * self.factor, self.min_lr)
            if old_lr - new_lr > self.eps:
                self.optimizer.lr = new_lr
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0

class StepLR(_ClosedFormSchedule):
    """Multiply the learning rate by ``gamma`` every ``step_size`` epochs.

    Uses the closed form ``lr = base_lr·gamma**(k // step_size)`` where
    ``k`` is the number of :meth:`step` calls so far and ``base_lr`` is the
    optimizer's ``lr`` at construction.  (This equals PyTorch's StepLR values
    up to rounding; the closed form avoids accumulating products and
    overrides any other change made to ``lr`` in between.)

    Args:
        optimizer: Object with a settable ``lr`` attribute.
        step_size: Period in epochs, >= 1.
        gamma: Multiplicative factor, > 0.

    Raises:
        ValueError: On an out-of-range argument.
    """

    kind = "step"
    _state = (("step_size", _state_period), ("gamma", _state_float), ("base_lr", _state_float), ("last_epoch", _state_int))

    def __init__(self, optimizer: _HasLR, step_size: int, gamma: float = 0.1) -> None:
        super().__init__(optimizer)
        self.step_size = _integer("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)

    def _lr(self, epoch: int) -> float:
        return self.base_lr * self.gamma ** (epoch // self.step_size)


class CosineAnnealingLR(_ClosedFormSchedule):
    """Cosine annealing from the initial learning rate to ``eta_min``.

    Closed form ``lr = eta_min + (base_lr − eta_min)·(1 + cos(π·k/T_max))/2``
    with ``k = min(epochs done, T_max)``: after ``T_max`` epochs the rate
    stays at ``eta_min`` (unlike PyTorch, which would rise again).
    ``base_lr`` is the optimizer's ``lr`` at construction.

    Args:
        optimizer: Object with a settable ``lr`` attribute.
        T_max: Number of annealing epochs, >= 1.
        eta_min: Final learning rate, >= 0.

    Raises:
        ValueError: On an out-of-range argument.
    """

    kind = "cosine"
    _state = (("T_max", _state_period), ("eta_min", _state_float), ("base_lr", _state_float), ("last_epoch", _state_int))

    def __init__(self, optimizer: _HasLR, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        super().__init__(optimizer)
        self.T_max = _integer("T_max", T_max, 1)
        self.eta_min = _non_negative("eta_min", eta_min)

    def _lr(self, epoch: int) -> float:
        k = min(epoch, self.T_max)
        return self.eta_min + (self.base_lr - self.eta_min) * (1.0 + math.cos(math.pi * k / self.T_max)) / 2.0


#: Schedule kind -> class (``"none"``: no schedule).
SCHEDULES: dict[str, type] = {"plateau": ReduceLROnPlateau, "step": StepLR, "cosine": CosineAnnealingLR}
_SCHEDULES = SCHEDULES


def schedule_options(kind: str) -> tuple[str, ...]:
    """The constructor options of the schedule ``kind`` (none for ``"none"``)."""
    cls = SCHEDULES.get(kind)
    return () if cls is None else tuple(_option_names(cls, ("optimizer",)))


def make_schedule(
    optimizer: _HasLR, kind: str | None, **options: Any
) -> ReduceLROnPlateau | StepLR | CosineAnnealingLR | None:
    """Create a learning-rate schedule by name.

    Args:
        optimizer: Object with a settable ``lr`` attribute.
        kind: ``None`` or ``"none"`` (no schedule), ``"plateau"``
            (:class:`ReduceLROnPlateau`), ``"step"`` (:class:`StepLR`) or
            ``"cosine"`` (:class:`CosineAnnealingLR`); case-insensitive.
        **options: Constructor arguments of the chosen class (e.g.
            ``patience=5`` for plateau, ``step_size=100`` for step,
            ``T_max=1000`` for cosine).

    Returns:
        The schedule, or ``None`` for ``kind`` ``None``/``"none"``.  Every
        schedule accepts ``schedule.step(metric)``.

    Raises:
        ValueError: For an unknown kind, an unknown option (including any
            option with no schedule) or an invalid value.
    """
    key = kind.lower() if isinstance(kind, str) else kind
    valid_kinds = "None, 'none', " + ", ".join(map(repr, _SCHEDULES))
    if key is None or key == "none":
        if options:
            raise ValueError(
                f"schedule kind {kind!r} takes no options, got {', '.join(sorted(options))}"
            )
        return None
    if key not in _SCHEDULES:
        raise ValueError(f"unknown schedule kind {kind!r}; valid kinds: {valid_kinds}")
    cls = _SCHEDULES[key]
    _check_options(cls, ("optimizer",), f"schedule kind {key!r}", options)
    return cls(optimizer, **options)
