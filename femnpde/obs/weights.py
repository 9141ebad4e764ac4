"""Time weights of a misfit: ``w_n`` in ``J = ½ Σ_n w_n Δt ‖B u^n − d^n‖²``."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["TIME_RULES", "TimeWeights", "time_weights"]

#: The time rules (the configuration schema reads this list).
TIME_RULES: tuple[str, ...] = ("rectangle", "trapezoid")


@dataclass(frozen=True)
class TimeWeights:
    """How the time integral of the loss is discretised: the weights ``w_n``, n = 0..n_steps.

    The rule is applied on the whole grid first, then levels are excluded by
    setting their weight to 0 (the other weights are not changed):

    * ``"rectangle"``: ``w_n = 1`` for every level;
    * ``"trapezoid"``: ``w_0 = w_N = 1/2`` (the first and last levels of the
      *grid*, N = n_steps), ``w_n = 1`` in between;
    * ``include_initial=False``: ``w_0 = 0``; with the trapezoid rule level 1
      keeps weight 1 (it is not promoted to an end point), except when
      n_steps = 1, where it is the last level and weighs 1/2;
    * ``levels``: only the listed levels keep their weight, the others weigh 0;
      the weights of the kept levels are those of the full grid (a kept
      interior level weighs 1 even if it is the first or last kept one).

    The loss multiplies these by Δt: ``J = ½ Σ_n w_n Δt ‖u^n − h^n‖²``.

    >>> time_weights(4, TimeWeights("trapezoid")).tolist()
    [0.5, 1.0, 1.0, 1.0, 0.5]
    >>> time_weights(4, TimeWeights("trapezoid", include_initial=False)).tolist()
    [0.0, 1.0, 1.0, 1.0, 0.5]
    >>> time_weights(4, TimeWeights("trapezoid", levels=(1, 2, 4))).tolist()
    [0.0, 1.0, 1.0, 0.0, 0.5]

    Attributes:
        rule: ``"rectangle"`` or ``"trapezoid"``.
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
