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

L-BFGS is not a per-epoch stepper; use :func:`minimize_lbfgs` (:mod:`femnpde.optim.lbfgs`), which drives
``scipy.optimize.minimize(method="L-BFGS-B")``.

Modules: :mod:`~femnpde.optim.gd`, :mod:`~femnpde.optim.adam`,
:mod:`~femnpde.optim.schedules`, :mod:`~femnpde.optim.lbfgs`,
:mod:`~femnpde.optim.factory` (``make_optimizer``).
"""

from femnpde.optim.adam import Adam
from femnpde.optim.factory import OPTIMIZERS, make_optimizer
from femnpde.optim.gd import GradientDescent
from femnpde.optim.lbfgs import LBFGSB, LBFGSResult, minimize_lbfgs
from femnpde.optim.schedules import (
    SCHEDULES,
    CosineAnnealingLR,
    ReduceLROnPlateau,
    StepLR,
    make_schedule,
    schedule_options,
)

__all__ = [
    "OPTIMIZERS",
    "SCHEDULES",
    "Adam",
    "CosineAnnealingLR",
    "GradientDescent",
    "LBFGSB",
    "LBFGSResult",
    "ReduceLROnPlateau",
    "StepLR",
    "make_optimizer",
    "make_schedule",
    "minimize_lbfgs",
    "schedule_options",
]
