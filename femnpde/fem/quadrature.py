"""Quadrature degrees of the residual, fixed before it is differentiated.

:func:`pin_quadrature_degrees` gives every integral the degree the form
compiler would estimate for the residual itself, so the residual, its
Jacobian and every adjoint form integrate with one rule per integral;
:func:`_with_quadrature_degree` sets one degree (the quadrature source space).
"""

from __future__ import annotations

import numpy as np
import ufl

__all__ = ["pin_quadrature_degrees", "_with_quadrature_degree", "_single_subdomain_integrals"]


def _with_quadrature_degree(form: ufl.Form, degree: int) -> ufl.Form:
    """Return ``form`` with the quadrature degree of every integral not set by the user set to ``degree``."""
    integrals = []
    for itg in form.integrals():
        md = dict(itg.metadata())
        md.setdefault("quadrature_degree", degree)
        integrals.append(itg.reconstruct(metadata=md))
    return ufl.Form(integrals)


def _single_subdomain_integrals(form: ufl.Form) -> list[ufl.Integral]:
    """The integrals of ``form``, those over a tuple of subdomain ids split into one per id."""
    out = []
    for itg in form.integrals():
        sid = itg.subdomain_id()
        if isinstance(sid, tuple):
            out.extend(itg.reconstruct(subdomain_id=i) for i in sid)
        else:
            out.append(itg)
    return out


def pin_quadrature_degrees(form: ufl.Form) -> ufl.Form:
    """Fix the quadrature degree of every integral of ``form`` before it is differentiated.

    Each integral without a ``quadrature_degree`` in its metadata gets the
    degree the form compiler would estimate for ``form`` itself: UFL's
    ``estimate_total_polynomial_degree`` of the integrand (after algebra
    lowering and derivative expansion), maximised, as FFCx does, over the
    integrals that share integral type, domain, subdomain id and metadata.
    A degree set in the measure's metadata (``dx(degree=4)``,
    ``ds(metadata={"quadrature_degree": 4})``) is kept.

    Derivatives (``ufl.derivative``, ``ufl.adjoint``, ``ufl.action``) keep the
    integrals' metadata, so the residual, its Jacobian and every adjoint form
    then integrate with one quadrature rule per integral: the adjoint is the
    exact derivative of the residual that the forward solves.  Without
    pinning, a non-polynomial integrand such as ``exp(g) u v`` is estimated at
    a higher degree in ∂F/∂g than in F, and the gradient is off by the
    quadrature error (1e-8 … 1e-5 relative).

    Args:
        form: The residual.

    Returns:
        The same form with a quadrature degree in every integral's metadata.
    """
    from ufl.algorithms.apply_algebra_lowering import apply_algebra_lowering
    from ufl.algorithms.apply_derivatives import apply_derivatives
    from ufl.algorithms.estimate_degrees import estimate_total_polynomial_degree

    integrals = _single_subdomain_integrals(form)

    def key(itg: ufl.Integral) -> tuple:
        md = tuple(sorted((k, repr(v)) for k, v in itg.metadata().items()))
        return (itg.integral_type(), itg.ufl_domain(), itg.subdomain_id(), md)

    degrees: list[int | None] = []
    group_degree: dict[tuple, int] = {}
    for itg in integrals:
        if itg.metadata().get("quadrature_degree", -1) >= 0:  # set by the user (FFCx: < 0 means estimate)
            degrees.append(None)
            continue
        integrand = apply_derivatives(apply_algebra_lowering(itg.integrand()))
        deg = int(np.max(estimate_total_polynomial_degree(integrand)))
        degrees.append(deg)
        k = key(itg)
        group_degree[k] = max(group_degree.get(k, deg), deg)
    pinned = []
    for itg, deg in zip(integrals, degrees):
        if deg is not None:
            md = dict(itg.metadata())
            md["quadrature_degree"] = group_degree[key(itg)]
            itg = itg.reconstruct(metadata=md)
        pinned.append(itg)
    return ufl.Form(pinned)
