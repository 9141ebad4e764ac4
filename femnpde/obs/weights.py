"""Time weights of a misfit: ``w_n`` in ``J = ½ Σ_n w_n Δt ‖B u^n − d^n‖²``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TIME_RULES", "TimeWeights", "time_weights"]

#: The time rules (the configuration schema reads this list).
TIME_RULES: tuple[str, ...] = ("rectangle", "trapezoid")


@dataclass(frozen=True)
class TimeWeights:
    """How the time integral of the loss is discretised.

    Attributes:
        rule: ``"rectangle"`` (every included level has weight 1) or
            ``"trapezoid"`` (the first and last included levels weigh 1/2).
        include_initial: Whether level n = 0 (the initial state) is in the
            sum.  The paper sums over all time levels including t = 0; the
            initial state does not depend on the network, so this only shifts
            the loss by a constant.
        levels: Optional subset of time levels observed (others weigh 0).
    """

    rule: str = "rectangle"
    include_initial: bool = True
    levels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.rule not in TIME_RULES:
            raise ValueError(f"TimeWeights: rule={self.rule!r} is not valid; use one of {TIME_RULES}")


def time_weights(n_steps: int, spec: TimeWeights) -> np.ndarray:
    """The weights ``w_n`` (n = 0..n_steps) for ``spec``."""
    w = np.ones(n_steps + 1)
    if spec.rule == "trapezoid":
        w[0] = w[-1] = 0.5
    if not spec.include_initial:
        w[0] = 0.0
        if spec.rule == "trapezoid" and n_steps >= 1:
            w[1] = 1.0 if n_steps > 1 else 0.5
    if spec.levels is not None:
        mask = np.zeros(n_steps + 1, dtype=bool)
        levels = np.asarray(spec.levels, dtype=int)
        bad = levels[(levels < 0) | (levels > n_steps)]
        if bad.size:
            raise ValueError(f"TimeWeights: observation levels {bad.tolist()} are outside 0..{n_steps}")
        mask[levels] = True
        w[~mask] = 0.0
    return w
