"""Adam (bitwise deterministic, see :mod:`femnpde.optim`)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from femnpde.optim._checks import (
    _check_kind,
    _check_params_grad,
    _get,
    _integer,
    _non_negative,
    _positive,
    _real,
    _state_float,
    _state_int,
)
from femnpde.optim.gd import _LRMixin

__all__ = ["Adam"]


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
