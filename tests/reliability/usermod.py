"""User residual modules that misbehave (for tests/test_reliability.py; imported through PYTHONPATH)."""

import os
import sys

import ufl
from mpi4py import MPI


def _heat(u, v, g, t, x):
    return 0.01 * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - g * v * ufl.dx


def fails_on_one_rank(**kwargs):
    """Raises on rank ``FAIL_RANK`` only (default 0)."""
    if MPI.COMM_WORLD.rank == int(os.environ.get("FAIL_RANK", "0")):
        raise RuntimeError("injected user error")
    return _heat


def calls_sys_exit(**kwargs):
    sys.exit()


def raises_keyboard_interrupt(**kwargs):
    raise KeyboardInterrupt


def residual_calls_sys_exit(**kwargs):
    def residual(u, v, g, t, x):
        sys.exit(0)

    return residual


def returns_none(**kwargs):
    return None
