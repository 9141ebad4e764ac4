"""Former home of the optimizers: an alias of :mod:`femnpde.optim` (import from there)."""

from typing import Any

import femnpde.optim as _optim

__all__ = list(_optim.__all__)


def __getattr__(name: str) -> Any:
    return getattr(_optim, name)
