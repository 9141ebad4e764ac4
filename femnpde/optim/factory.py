"""``make_optimizer``: a per-epoch optimizer by name (``"gd"``, ``"adam"``)."""

from __future__ import annotations

from typing import Any

from femnpde.optim._checks import _check_options
from femnpde.optim.adam import Adam
from femnpde.optim.gd import GradientDescent

__all__ = ["OPTIMIZERS", "make_optimizer"]

#: Optimizer kind -> class (L-BFGS is :func:`femnpde.optim.lbfgs.minimize_lbfgs`).
OPTIMIZERS: dict[str, type] = {"gd": GradientDescent, "adam": Adam}
_OPTIMIZERS = OPTIMIZERS


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
            "femnpde.optim.minimize_lbfgs(fun_and_grad, x0, max_iterations, ...); "
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
