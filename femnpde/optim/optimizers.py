"""Deterministic first-order optimizers, learning-rate schedules and L-BFGS.

The parameters θ of a femnpde model are a flat ``float64`` numpy vector that is
replicated on every MPI rank.  Every rank runs the same optimizer on the same
(all-reduced) gradient, so the update rules in this module are written to be
*bitwise deterministic*: they use only correctly rounded elementwise IEEE
operations (``+ - * / sqrt``) on numpy arrays and scalar Python ``float``
arithmetic, never reductions whose summation order could vary.  Identical
inputs therefore give identical outputs on every rank and on every run.

Checkpointing: every optimizer and schedule has ``state_dict()`` and
``load_state_dict()``.  A state dict is a plain ``dict`` of numpy arrays,
floats, ints and strings (always including a ``"kind"`` key) that can be
pickled or written with ``np.savez(path, **state)``; values read back from an
``.npz`` file (0-d arrays) are accepted by ``load_state_dict``.  Saving,
loading into freshly constructed objects and continuing reproduces an
uninterrupted run bit for bit.

Typical use in a training loop::

    opt = make_optimizer("adam", lr=1e-3)
    schedule = make_schedule(opt, "plateau", patience=20)
    for epoch in range(n_epochs):
        loss, grad = loss_and_gradient(theta)
        opt.step(theta, grad)              # updates theta in place
        if schedule is not None:
            schedule.step(loss)            # every schedule accepts the metric

L-BFGS is not a per-epoch stepper; use :func:`minimize_lbfgs`, which drives
``scipy.optimize.minimize(method="L-BFGS-B")``.
"""

from __future__ import annotations

import inspect
import math
import numbers
import sys
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

__all__ = [
    "Adam",
    "CosineAnnealingLR",
    "GradientDescent",
    "LBFGSResult",
    "ReduceLROnPlateau",
    "StepLR",
    "make_optimizer",
    "make_schedule",
    "minimize_lbfgs",
]


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _real(name: str, value: Any) -> float:
    """Return ``value`` as a finite float or raise ValueError naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ValueError(f"{name} must be a finite real number, got {value!r}")
    return out


def _positive(name: str, value: Any) -> float:
    out = _real(name, value)
    if not out > 0.0:
        raise ValueError(f"{name} must be > 0, got {value!r}")
    return out


def _non_negative(name: str, value: Any) -> float:
    out = _real(name, value)
    if not out >= 0.0:
        raise ValueError(f"{name} must be >= 0, got {value!r}")
    return out


def _integer(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    out = int(value)
    if out < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return out


def _check_params_grad(params: np.ndarray, grad: np.ndarray) -> np.ndarray:
    """Validate an in-place update target and return ``grad`` as float64."""
    if not isinstance(params, np.ndarray):
        raise ValueError(
            f"params must be a 1-D float64 numpy array (updated in place), "
            f"got {type(params).__name__}"
        )
    if params.dtype != np.float64 or params.ndim != 1:
        raise ValueError(
            f"params must be a 1-D float64 numpy array (updated in place), "
            f"got dtype={params.dtype} with shape {params.shape}"
        )
    if not params.flags.writeable:
        raise ValueError("params must be a writeable array (it is updated in place)")
    g = np.asarray(grad)
    if g.shape != params.shape:
        raise ValueError(
            f"grad must have the same shape as params {params.shape}, got shape {g.shape}"
        )
    if not (np.issubdtype(g.dtype, np.floating) or np.issubdtype(g.dtype, np.integer)):
        raise ValueError(f"grad must be a real-valued array, got dtype={g.dtype}")
    return g.astype(np.float64, copy=False)


def _get(state: Mapping[str, Any], key: str) -> Any:
    try:
        return state[key]
    except KeyError:
        raise ValueError(f"state_dict is missing the key {key!r}") from None


def _check_kind(state: Mapping[str, Any], expected: str) -> None:
    if not isinstance(state, Mapping):
        raise ValueError(f"state_dict must be a mapping, got {type(state).__name__}")
    kind = str(_get(state, "kind"))
    if kind != expected:
        raise ValueError(f"state_dict['kind'] is {kind!r} but this object expects {expected!r}")


def _state_float(state: Mapping[str, Any], key: str) -> float:
    return float(np.asarray(_get(state, key)))


def _state_int(state: Mapping[str, Any], key: str) -> int:
    return int(np.asarray(_get(state, key)))


# ---------------------------------------------------------------------------
# optimizers
# ---------------------------------------------------------------------------


class _LRMixin:
    """Learning-rate attribute shared by the optimizers.

    ``lr`` is a settable property so that schedules can change it; the setter
    accepts any finite value ``>= 0`` (a cosine schedule may anneal to 0),
    while the constructors require ``lr > 0``.
    """

    _lr: float

    @property
    def lr(self) -> float:
        """Current learning rate."""
        return self._lr

    @lr.setter
    def lr(self, value: float) -> None:
        self._lr = _non_negative("lr", value)


class GradientDescent(_LRMixin):
    """Plain gradient descent with optional L2 weight decay.

    The update is ``θ ← θ − lr·(g + weight_decay·θ)``, evaluated in the same
    order as ``torch.optim.SGD`` without momentum.

    Args:
        lr: Learning rate, > 0.  Stored in the settable attribute ``lr``.
        weight_decay: L2 penalty coefficient, >= 0.

    Raises:
        ValueError: If ``lr`` <= 0 or ``weight_decay`` < 0 (or not finite).
    """

    kind = "gd"

    def __init__(self, lr: float, weight_decay: float = 0.0) -> None:
        self._lr = _positive("lr", lr)
        self.weight_decay = _non_negative("weight_decay", weight_decay)

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Apply one update to ``params`` in place.

        Args:
            params: 1-D float64 parameter vector, modified in place.
            grad: Gradient of the loss at ``params``, same shape.

        Raises:
            ValueError: If ``params`` is not a writeable 1-D float64 array or
                ``grad`` has a different shape.
        """
        g = _check_params_grad(params, grad)
        if self.weight_decay != 0.0:
            g = g + self.weight_decay * params
        params -= self._lr * g

    def state_dict(self) -> dict[str, Any]:
        """Return the optimizer state (``kind``, ``lr``, ``weight_decay``)."""
        return {"kind": self.kind, "lr": self._lr, "weight_decay": self.weight_decay}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict`.

        Args:
            state: A dict from :meth:`state_dict` (or read back from ``.npz``).

        Raises:
            ValueError: If ``state`` is of another kind or a key is missing.
        """
        _check_kind(state, self.kind)
        self.lr = _state_float(state, "lr")
        self.weight_decay = _non_negative(
            "state_dict['weight_decay']", _state_float(state, "weight_decay")
        )


class Adam(_LRMixin):
    """Adam with the exact semantics of ``torch.optim.Adam``.

    Corresponds to ``amsgrad=False, maximize=False`` and the single-tensor
    (CPU) code path of PyTorch.  With step count ``t`` (incremented before the
    update) and ``g = grad + weight_decay·θ`` (L2 decay folded into the
    gradient, *not* decoupled AdamW decay)::

        m ← lerp(m, g, 1 − β1)            # = β1·m + (1 − β1)·g
        v ← β2·v + (1 − β2)·g·g
        bc1 = 1 − β1**t,  bc2 = 1 − β2**t
        denom = sqrt(v) / bc2**0.5 + eps
        θ ← θ − (lr / bc1) · m / denom

    which equals ``θ − lr·m̂/(sqrt(v̂) + eps)`` with ``m̂ = m/bc1`` and
    ``v̂ = v/bc2``.  ``lerp`` is evaluated as ``torch.lerp`` does
    (``m + w·(g − m)`` for ``w < 0.5``, else ``g − (g − m)·(1 − w)``).

    The moment buffers are allocated on the first :meth:`step` from the shape
    of ``params``.

    Args:
        lr: Learning rate, > 0.  Stored in the settable attribute ``lr``.
        betas: ``(β1, β2)``, each in ``[0, 1)``.
        eps: Denominator offset, > 0.
        weight_decay: L2 penalty coefficient, >= 0.

    Raises:
        ValueError: On an out-of-range argument.
    """

    kind = "adam"

    def __init__(
        self,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        self._lr = _positive("lr", lr)
        self.betas = self._check_betas(betas)
        self.eps = _positive("eps", eps)
        self.weight_decay = _non_negative("weight_decay", weight_decay)
        self.t = 0
        self._m: np.ndarray | None = None
        self._v: np.ndarray | None = None

    @staticmethod
    def _check_betas(betas: Any) -> tuple[float, float]:
        try:
            b1, b2 = betas
        except (TypeError, ValueError):
            raise ValueError(
                f"betas must be a pair (beta1, beta2) with each in [0, 1), got {betas!r}"
            ) from None
        out = []
        for name, b in (("betas[0]", b1), ("betas[1]", b2)):
            val = _real(name, b)
            if not 0.0 <= val < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {b!r}")
            out.append(val)
        return out[0], out[1]

    def step(self, params: np.ndarray, grad: np.ndarray) -> None:
        """Apply one Adam update to ``params`` in place.

        Args:
            params: 1-D float64 parameter vector, modified in place.
            grad: Gradient of the loss at ``params``, same shape.

        Raises:
            ValueError: If ``params`` is not a writeable 1-D float64 array,
                ``grad`` has a different shape, or ``params`` has a different
                shape from the one the moment buffers were built for.
        """
        g = _check_params_grad(params, grad)
        if self._m is None or self._v is None:
            self._m = np.zeros_like(params)
            self._v = np.zeros_like(params)
        elif self._m.shape != params.shape:
            raise ValueError(
                f"params has shape {params.shape} but this Adam optimizer's state "
                f"was built for shape {self._m.shape}"
            )
        m, v = self._m, self._v
        beta1, beta2 = self.betas

        self.t += 1
        if self.weight_decay != 0.0:
            g = g + self.weight_decay * params

        # exp_avg.lerp_(grad, 1 - beta1)
        w = 1.0 - beta1
        if abs(w) < 0.5:
            m += w * (g - m)
        else:
            m[...] = g - (g - m) * (1.0 - w)
        # exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
        v *= beta2
        v += (1.0 - beta2) * g * g

        step = float(self.t)
        bias_correction1 = 1.0 - beta1**step
        bias_correction2 = 1.0 - beta2**step
        step_size = self._lr / bias_correction1
        bias_correction2_sqrt = bias_correction2**0.5
        denom = np.sqrt(v) / bias_correction2_sqrt
        denom += self.eps
        # param.addcdiv_(exp_avg, denom, value=-step_size)
        params -= step_size * m / denom

    def state_dict(self) -> dict[str, Any]:
        """Return a copy of the optimizer state.

        Keys: ``kind``, ``lr``, ``beta1``, ``beta2``, ``eps``,
        ``weight_decay``, ``step`` (int) and the moment arrays ``m`` and
        ``v`` (empty arrays before the first step).
        """
        empty = np.zeros(0, dtype=np.float64)
        return {
            "kind": self.kind,
            "lr": self._lr,
            "beta1": self.betas[0],
            "beta2": self.betas[1],
            "eps": self.eps,
            "weight_decay": self.weight_decay,
            "step": self.t,
            "m": empty if self._m is None else self._m.copy(),
            "v": empty.copy() if self._v is None else self._v.copy(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict` (arrays are copied).

        Args:
            state: A dict from :meth:`state_dict` (or read back from ``.npz``).

        Raises:
            ValueError: If ``state`` is of another kind, a key is missing or
                the moment arrays are inconsistent.
        """
        _check_kind(state, self.kind)
        lr = _state_float(state, "lr")
        betas = self._check_betas((_state_float(state, "beta1"), _state_float(state, "beta2")))
        eps = _positive("state_dict['eps']", _state_float(state, "eps"))
        wd = _non_negative("state_dict['weight_decay']", _state_float(state, "weight_decay"))
        t = _integer("state_dict['step']", _state_int(state, "step"), 0)
        m = np.array(_get(state, "m"), dtype=np.float64, copy=True)
        v = np.array(_get(state, "v"), dtype=np.float64, copy=True)
        if m.ndim != 1 or m.shape != v.shape:
            raise ValueError(
                f"state_dict['m'] and state_dict['v'] must be 1-D arrays of equal shape, "
                f"got {m.shape} and {v.shape}"
            )
        self.lr = lr
        self.betas = betas
        self.eps = eps
        self.weight_decay = wd
        self.t = t
        if t == 0:
            self._m = self._v = None
        else:
            self._m, self._v = m, v


# ---------------------------------------------------------------------------
# learning-rate schedules
# ---------------------------------------------------------------------------


class _HasLR(Protocol):
    lr: float


def _check_optimizer(optimizer: Any) -> None:
    if not hasattr(optimizer, "lr"):
        raise ValueError(
            f"optimizer must have a settable 'lr' attribute, got {type(optimizer).__name__}"
        )


class ReduceLROnPlateau:
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

    def state_dict(self) -> dict[str, Any]:
        """Return the schedule state (hyperparameters and counters)."""
        return {
            "kind": self.kind,
            "factor": self.factor,
            "patience": self.patience,
            "threshold": self.threshold,
            "threshold_mode": self.threshold_mode,
            "cooldown": self.cooldown,
            "min_lr": self.min_lr,
            "eps": self.eps,
            "best": self.best,
            "num_bad_epochs": self.num_bad_epochs,
            "cooldown_counter": self.cooldown_counter,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict`.

        Hyperparameters are overwritten too, as in PyTorch.  The optimizer's
        ``lr`` is not touched (it is part of the optimizer's own state).

        Raises:
            ValueError: If ``state`` is of another kind or a key is missing.
        """
        _check_kind(state, self.kind)
        mode = str(_get(state, "threshold_mode"))
        if mode not in ("rel", "abs"):
            raise ValueError(f"state_dict['threshold_mode'] must be 'rel' or 'abs', got {mode!r}")
        self.factor = _state_float(state, "factor")
        self.patience = _state_int(state, "patience")
        self.threshold = _state_float(state, "threshold")
        self.threshold_mode = mode
        self.cooldown = _state_int(state, "cooldown")
        self.min_lr = _state_float(state, "min_lr")
        self.eps = _state_float(state, "eps")
        self.best = _state_float(state, "best")
        self.num_bad_epochs = _state_int(state, "num_bad_epochs")
        self.cooldown_counter = _state_int(state, "cooldown_counter")
        self.last_epoch = _state_int(state, "last_epoch")


class StepLR:
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

    def __init__(self, optimizer: _HasLR, step_size: int, gamma: float = 0.1) -> None:
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.step_size = _integer("step_size", step_size, 1)
        self.gamma = _positive("gamma", gamma)
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self, metric: float | None = None) -> None:
        """Advance one epoch and set the optimizer's ``lr``.

        Args:
            metric: Ignored; accepted so that all schedules can be stepped
                uniformly as ``schedule.step(loss)``.
        """
        self.last_epoch += 1
        self.optimizer.lr = self.base_lr * self.gamma ** (self.last_epoch // self.step_size)

    def state_dict(self) -> dict[str, Any]:
        """Return the schedule state."""
        return {
            "kind": self.kind,
            "step_size": self.step_size,
            "gamma": self.gamma,
            "base_lr": self.base_lr,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict` (hyperparameters too).

        Raises:
            ValueError: If ``state`` is of another kind or a key is missing.
        """
        _check_kind(state, self.kind)
        self.step_size = _integer("state_dict['step_size']", _state_int(state, "step_size"), 1)
        self.gamma = _state_float(state, "gamma")
        self.base_lr = _state_float(state, "base_lr")
        self.last_epoch = _state_int(state, "last_epoch")


class CosineAnnealingLR:
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

    def __init__(self, optimizer: _HasLR, T_max: int, eta_min: float = 0.0) -> None:  # noqa: N803
        _check_optimizer(optimizer)
        self.optimizer = optimizer
        self.T_max = _integer("T_max", T_max, 1)
        self.eta_min = _non_negative("eta_min", eta_min)
        self.base_lr = float(optimizer.lr)
        self.last_epoch = 0

    def step(self, metric: float | None = None) -> None:
        """Advance one epoch and set the optimizer's ``lr``.

        Args:
            metric: Ignored; accepted so that all schedules can be stepped
                uniformly as ``schedule.step(loss)``.
        """
        self.last_epoch += 1
        k = min(self.last_epoch, self.T_max)
        self.optimizer.lr = (
            self.eta_min
            + (self.base_lr - self.eta_min) * (1.0 + math.cos(math.pi * k / self.T_max)) / 2.0
        )

    def state_dict(self) -> dict[str, Any]:
        """Return the schedule state."""
        return {
            "kind": self.kind,
            "T_max": self.T_max,
            "eta_min": self.eta_min,
            "base_lr": self.base_lr,
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore the state produced by :meth:`state_dict` (hyperparameters too).

        Raises:
            ValueError: If ``state`` is of another kind or a key is missing.
        """
        _check_kind(state, self.kind)
        self.T_max = _integer("state_dict['T_max']", _state_int(state, "T_max"), 1)
        self.eta_min = _state_float(state, "eta_min")
        self.base_lr = _state_float(state, "base_lr")
        self.last_epoch = _state_int(state, "last_epoch")


# ---------------------------------------------------------------------------
# factories
# ---------------------------------------------------------------------------

_OPTIMIZERS: dict[str, type] = {"gd": GradientDescent, "adam": Adam}
_SCHEDULES: dict[str, type] = {
    "plateau": ReduceLROnPlateau,
    "step": StepLR,
    "cosine": CosineAnnealingLR,
}


def _option_names(cls: type, skip: tuple[str, ...]) -> list[str]:
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", *skip)]


def _check_options(cls: type, skip: tuple[str, ...], what: str, options: Mapping[str, Any]) -> None:
    valid = _option_names(cls, skip)
    bad = sorted(set(options) - set(valid))
    if bad:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, bad))} for {what}; "
            f"valid options: {', '.join(valid) if valid else '(none)'}"
        )


def make_optimizer(kind: str, lr: float, **options: Any) -> GradientDescent | Adam:
    """Create a per-epoch optimizer by name.

    Args:
        kind: ``"gd"`` (:class:`GradientDescent`) or ``"adam"``
            (:class:`Adam`); case-insensitive.  ``"lbfgs"`` is rejected:
            L-BFGS is run by :func:`minimize_lbfgs` instead.
        lr: Learning rate, > 0.
        **options: Further constructor arguments of the chosen class
            (``weight_decay`` for gd; ``betas``, ``eps``, ``weight_decay``
            for adam).

    Returns:
        The optimizer.

    Raises:
        ValueError: For an unknown kind, ``"lbfgs"``, an unknown option or an
            invalid value.
    """
    key = kind.lower() if isinstance(kind, str) else kind
    if key == "lbfgs":
        raise ValueError(
            "kind='lbfgs' is not a per-epoch optimizer: run L-BFGS with "
            "femnpde.optim.optimizers.minimize_lbfgs(fun_and_grad, x0, max_iterations, ...); "
            f"make_optimizer accepts kind in {sorted(_OPTIMIZERS)}"
        )
    if key not in _OPTIMIZERS:
        valid = ", ".join(map(repr, sorted(_OPTIMIZERS)))
        raise ValueError(
            f"unknown optimizer kind {kind!r}; valid kinds: {valid} "
            "(and 'lbfgs' via minimize_lbfgs)"
        )
    cls = _OPTIMIZERS[key]
    _check_options(cls, ("lr",), f"optimizer kind {key!r}", options)
    return cls(lr, **options)


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


# ---------------------------------------------------------------------------
# L-BFGS
# ---------------------------------------------------------------------------


@dataclass
class LBFGSResult:
    """Outcome of :func:`minimize_lbfgs`.

    Attributes:
        params: Final (last accepted) iterate, a new float64 array.
        n_iterations: Number of completed L-BFGS iterations.
        n_evaluations: Number of calls to ``fun_and_grad``.
        success: True if the run converged (``gtol``/``ftol`` test),
            reached ``max_iterations`` or was stopped by the callback; False
            if L-BFGS-B stopped abnormally (e.g. the line search could not
            make progress) or hit ``max_evaluations``.
        message: Human-readable termination reason (scipy's message, or a
            note that the callback stopped the run).
    """

    params: np.ndarray
    n_iterations: int
    n_evaluations: int
    success: bool
    message: str


def minimize_lbfgs(
    fun_and_grad: Callable[[np.ndarray], tuple[float, np.ndarray]],
    x0: np.ndarray,
    max_iterations: int,
    callback: Callable[[int, np.ndarray, float, np.ndarray], bool | None] | None = None,
    gtol: float = 0.0,
    ftol: float = 0.0,
    memory: int = 10,
    max_evaluations: int | None = None,
    bounds: tuple[np.ndarray, np.ndarray] | None = None,
) -> LBFGSResult:
    """Minimise a smooth function with L-BFGS (scipy's L-BFGS-B, unbounded unless ``bounds``).

    Runs ``scipy.optimize.minimize(method="L-BFGS-B", jac=True)``.  With the
    default ``gtol = ftol = 0`` the run lasts ``max_iterations`` iterations
    unless the line search can no longer make progress.

    ``callback(iteration, params, loss, grad)`` is called once per completed
    iteration with the accepted iterate, its loss and its gradient;
    ``iteration`` is the zero-based index of that iteration (so after the
    last call ``iteration + 1 == n_iterations``).  The loss and gradient come
    from a small cache of the most recent evaluations, so the callback costs
    no extra evaluation of ``fun_and_grad``.  If the callback returns a truthy
    value the run stops after that iteration and the result holds that
    iterate.  ``params`` and ``grad`` passed to the callback are copies.

    Determinism: given a deterministic ``fun_and_grad``, the run is
    deterministic (scipy's L-BFGS-B is a sequential algorithm).  Its dense
    linear algebra goes through BLAS; with very large parameter vectors,
    bitwise agreement across MPI ranks additionally needs the same BLAS
    threading configuration (e.g. ``OPENBLAS_NUM_THREADS``) on every rank.

    Checkpointing: L-BFGS keeps its curvature memory inside scipy and has no
    ``state_dict``.  Resuming from a checkpoint calls this function again
    with the saved parameters as ``x0``, which restarts the curvature memory
    (the first resumed step is a scaled steepest-descent step); the resumed
    run is deterministic but not bitwise identical to an uninterrupted one.

    Args:
        fun_and_grad: Returns ``(loss, gradient)`` at a parameter vector.
            It receives its own copy of the vector.
        x0: Starting point (1-D, converted to float64; not modified).
        max_iterations: Maximum number of L-BFGS iterations, >= 1.
        callback: Optional per-iteration callback, see above.
        gtol: Stop when the largest gradient component is <= gtol (>= 0).
        ftol: Stop when the relative reduction of the loss is <= ftol
            (>= 0; scipy's ``ftol``).
        memory: Number of stored correction pairs (scipy's ``maxcor``), >= 1.
        max_evaluations: Optional cap on evaluations of ``fun_and_grad``
            (scipy's ``maxfun``, checked at the end of each iteration); None
            means no cap beyond ``max_iterations``.
        bounds: Optional ``(lower, upper)`` arrays of the shape of ``x0``
            (``-inf``/``inf`` where unbounded), e.g. ``ReducedFunctional.bounds``.

    Returns:
        An :class:`LBFGSResult`.

    Raises:
        ValueError: On invalid arguments, or if ``fun_and_grad`` returns a
            gradient of the wrong shape.
    """
    from scipy.optimize import minimize  # lazy: only L-BFGS needs scipy

    max_iterations = _integer("max_iterations", max_iterations, 1)
    memory = _integer("memory", memory, 1)
    gtol = _non_negative("gtol", gtol)
    ftol = _non_negative("ftol", ftol)
    if max_evaluations is None:
        maxfun = sys.maxsize
    else:
        maxfun = _integer("max_evaluations", max_evaluations, 1)
    if callback is not None and not callable(callback):
        raise ValueError(f"callback must be callable or None, got {callback!r}")
    try:
        x_start = np.array(x0, dtype=np.float64, copy=True)
    except (TypeError, ValueError):
        raise ValueError(f"x0 must be a 1-D array of real numbers, got {x0!r}") from None
    if x_start.ndim != 1 or x_start.size == 0:
        raise ValueError(f"x0 must be a non-empty 1-D array, got shape {x_start.shape}")
    if not np.all(np.isfinite(x_start)):
        raise ValueError("x0 must contain only finite values")

    n_evaluations = 0
    cache: deque[tuple[np.ndarray, float, np.ndarray]] = deque(maxlen=4)

    def evaluate(x: np.ndarray) -> tuple[float, np.ndarray]:
        nonlocal n_evaluations
        key = np.array(x, dtype=np.float64, copy=True)
        loss, grad = fun_and_grad(key.copy())
        n_evaluations += 1
        g = np.array(grad, dtype=np.float64, copy=True)
        if g.shape != key.shape:
            raise ValueError(
                f"fun_and_grad returned a gradient of shape {g.shape}, expected {key.shape}"
            )
        f = float(loss)
        cache.append((key, f, g))
        return f, g.copy()

    iteration = 0
    stopped_by_callback = False

    def scipy_callback(intermediate_result: Any) -> None:
        nonlocal iteration, stopped_by_callback
        index = iteration
        iteration += 1
        if callback is None:
            return
        x = np.asarray(intermediate_result.x)
        hit = next(((f, g) for key, f, g in reversed(cache) if np.array_equal(key, x)), None)
        # a cache miss is not expected with L-BFGS-B; evaluate rather than guess
        f, g = evaluate(x) if hit is None else hit
        if callback(index, x.copy(), f, g.copy()):
            stopped_by_callback = True
            raise StopIteration

    scipy_bounds = None
    if bounds is not None:
        lo, hi = (np.broadcast_to(np.asarray(b, dtype=np.float64), x_start.shape) for b in bounds)
        if np.any(x_start < lo) or np.any(x_start > hi):
            raise ValueError("x0 lies outside the bounds")
        scipy_bounds = list(zip(np.where(np.isinf(lo), None, lo), np.where(np.isinf(hi), None, hi)))
    res = minimize(
        evaluate,
        x_start,
        method="L-BFGS-B",
        jac=True,
        bounds=scipy_bounds,
        callback=scipy_callback,
        options={
            "maxiter": max_iterations,
            "maxfun": maxfun,
            "maxcor": memory,
            "gtol": gtol,
            "ftol": ftol,
        },
    )
    n_iterations = int(res.nit)
    if stopped_by_callback:
        success = True
        message = f"stopped by callback after {n_iterations} iteration(s)"
    else:
        success = bool(res.success) or n_iterations >= max_iterations
        message = str(res.message)
    return LBFGSResult(
        params=np.array(res.x, dtype=np.float64, copy=True),
        n_iterations=n_iterations,
        n_evaluations=n_evaluations,
        success=success,
        message=message,
    )
