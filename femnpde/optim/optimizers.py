"""Former home of the optimizers; kept as an alias of :mod:`femnpde.optim` (import from there)."""

from femnpde.optim import (
    Adam,
    CosineAnnealingLR,
    GradientDescent,
    LBFGSResult,
    ReduceLROnPlateau,
    StepLR,
    make_optimizer,
    make_schedule,
    minimize_lbfgs,
)

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
