"""Noise for replicated observations (sensor values): reproducible and identical on all ranks.

Field data get their (partition-independent) noise from
:func:`femnpde.app.synthetic.add_field_noise`.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["add_noise"]


def add_noise(data: np.ndarray, relative_std: float, seed: int) -> np.ndarray:
    """``data`` plus Gaussian noise with standard deviation ``relative_std · max|data|``.

    The noise depends only on ``seed`` and the shape of ``data``, so it is
    reproducible and identical on all ranks.  ``nan`` entries (unobserved
    levels) stay ``nan`` and are ignored in ``max|data|``.

    Args:
        data: The clean data.
        relative_std: Noise level relative to ``max|data|`` (>= 0).
        seed: Seed of the random generator.

    Returns:
        A new array of the same shape.
    """
    if not isinstance(relative_std, numbers.Real) or not math.isfinite(relative_std) or relative_std < 0:
        raise ValueError(f"add_noise: relative_std={relative_std!r} must be a finite number >= 0")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"add_noise: seed={seed!r} must be an integer")
    arr = np.array(data, dtype=np.float64)
    finite = np.abs(arr[np.isfinite(arr)])
    scale = float(relative_std) * (float(finite.max()) if finite.size else 0.0)
    rng = np.random.default_rng(int(seed))
    return arr + scale * rng.standard_normal(arr.shape)
