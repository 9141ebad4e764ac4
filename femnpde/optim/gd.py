"""Plain gradient descent (bitwise deterministic, see :mod:`femnpde.optim`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from femnpde.optim._checks import _check_kind, _check_params_grad, _non_negative, _positive, _state_float

__all__ = ["GradientDescent"]


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
