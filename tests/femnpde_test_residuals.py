"""Residual factories for the tests of ``pde.residual`` (imported by name from test configurations).

Not a test module: ``pytest`` puts ``tests/`` on ``sys.path``, so a config
names these as ``pde.residual = "femnpde_test_residuals:<factory>"``.
"""

import ufl

#: Not callable: ``pde.residual`` naming it must be refused.
NOT_A_FACTORY = 42


def blow_up(gamma=0.01, **_):
    """``∂t u − γΔu − c u² = g`` with c = 10: from u⁰ = 1 an implicit step of Δt = 0.5 has no real solution."""

    def residual(u, v, g, t, x):
        return gamma * ufl.inner(ufl.grad(u), ufl.grad(v)) * ufl.dx - 10.0 * u**2 * v * ufl.dx - g * v * ufl.dx

    return residual


def raising(**_):
    """A factory that fails."""
    raise RuntimeError("factory exploded on purpose")


def returns_number(**_):
    """A factory whose residual returns a number instead of a UFL form."""

    def residual(u, v, g, t, x):
        return 1.0

    return residual


def residual_raises(**_):
    """A factory whose residual fails when called (an undefined UFL operation)."""

    def residual(u, v, g, t, x):
        return ufl.inner(ufl.grad(u), v) * ufl.dx  # a vector times a scalar test function: not a valid form

    return residual
