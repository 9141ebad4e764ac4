"""Split a theta-step residual into constant matrices and a small nonlinear remainder.

The residual ``F^n(u^n; u^{n-1}, g^n, g^{n-1}, t)`` of a
:class:`~femnpde.fem.problem.ParabolicProblem` is expanded, per integral, into
a sum of terms (sums and products are distributed) and each term is put in one
of three classes:

* **linear**: jointly affine in ``(u^n, u^{n-1}, g^n, g^{n-1})`` with
  coefficients that depend on neither the state, the source nor the time.
  Their derivative blocks are matrices assembled once, their value at zero a
  vector assembled once;
* **step**: independent of the unknown ``u^n`` but nonlinear in the known
  coefficients or time-dependent; assembled once per time step;
* **nonlinear**: everything that depends on ``u^n`` otherwise (for
  Allen–Cahn only ``ε⁻² u³ v``); assembled per Newton iteration, with its
  own Jacobian.

Nothing is specific to a PDE.  Each piece keeps the quadrature degree of the
integral it came from (pinned on ``F`` by
:func:`~femnpde.fem.quadrature.pin_quadrature_degrees`), so the pieces add up to
the same discrete residual; an integral without a pinned degree is kept whole.  Integer powers
``f**k`` (2 <= k <= 8) become products, which FFCx evaluates several times
faster than ``pow``.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field

import dolfinx.fem
import ufl
from ufl.algorithms import expand_derivatives
from ufl.algorithms.apply_algebra_lowering import apply_algebra_lowering
from ufl.algorithms.map_integrands import map_integrand_dags
from ufl.algorithms.remove_complex_nodes import remove_complex_nodes
from ufl.corealg.multifunction import MultiFunction
from ufl.classes import Division, IndexSum, IntValue, Product, RealValue, Sum

__all__ = [
    "SplitForms",
    "split_residual",
    "explicit_remainder",
    "expand_integer_powers",
    "compile_form",
    "derivative",
    "adjoint_action",
    "add_forms",
]

#: Above this many terms a product is kept whole instead of being distributed.
_MAX_TERMS = 64


class _PowerExpander(MultiFunction):
    """Rewrite ``f**k`` with an integer 2 <= k <= 8 as repeated products."""

    expr = MultiFunction.reuse_if_untouched

    def power(self, o, base, exponent):
        if isinstance(exponent, (IntValue, RealValue)):
            k = float(exponent)
            if k.is_integer() and 2 <= k <= 8:
                result = base  # a UFL power's base is a true scalar: no implicit sums
                for _ in range(int(k) - 1):
                    result = result * base
                return result
        return self.reuse_if_untouched(o, base, exponent)


def expand_integer_powers(form: ufl.Form) -> ufl.Form:
    """``form`` with small integer powers written as products (derivatives expanded first)."""
    return map_integrand_dags(_PowerExpander(), expand_derivatives(form))


def _terms(e) -> list:
    """The additive terms of a (lowered, real) scalar integrand."""
    if isinstance(e, Sum):
        a, b = e.ufl_operands
        return _terms(a) + _terms(b)
    if isinstance(e, Product):
        a, b = e.ufl_operands
        ta, tb = _terms(a), _terms(b)
        if len(ta) * len(tb) > _MAX_TERMS:
            return [e]
        return [e._ufl_expr_reconstruct_(x, y) for x in ta for y in tb]
    if isinstance(e, Division):
        a, b = e.ufl_operands
        return [e._ufl_expr_reconstruct_(x, b) for x in _terms(a)]
    if isinstance(e, IndexSum):
        a, mi = e.ufl_operands
        return [e._ufl_expr_reconstruct_(x, mi) for x in _terms(a)]
    return [e]


@dataclass
class SplitForms:
    """The pieces of a theta-step residual (UFL forms; compiled by :meth:`compile`).

    Attributes:
        linear: Sum of the linear terms (None if there are none).
        step: Sum of the per-step terms (None if none).
        nonlinear: Sum of the nonlinear terms (None if none).
        n_terms: Number of terms in each class.
    """

    linear: ufl.Form | None
    step: ufl.Form | None
    nonlinear: ufl.Form | None
    n_terms: dict[str, int] = field(default_factory=dict)


def _form(integrals: list[ufl.Integral]) -> ufl.Form | None:
    return ufl.Form(integrals) if integrals else None


def split_residual(F: ufl.Form, u, state: set, times: set) -> SplitForms:
    """Split ``F`` into linear, per-step and nonlinear parts (see the module docstring).

    Args:
        F: The theta-step residual (linear in the test function).
        u: The unknown Function ``u^n``.
        state: All coefficients that change between steps or iterations
            (``u^n``, ``u^{n-1}``, ``g^n``, ``g^{n-1}``).
        times: The time constants.

    Returns:
        The three parts; their sum is ``F`` term by term, with the quadrature
        degree of each original integral pinned on its pieces.
    """
    F = remove_complex_nodes(apply_algebra_lowering(expand_derivatives(F)))
    groups: dict[tuple, list[ufl.Integral]] = defaultdict(list)
    for itg in F.integrals():
        md = tuple(sorted((k, repr(v)) for k, v in itg.metadata().items()))
        groups[(itg.integral_type(), itg.ufl_domain(), repr(itg.subdomain_id()), md)].append(itg)
    parts: dict[str, list[ufl.Integral]] = {"linear": [], "step": [], "nonlinear": []}
    for group in groups.values():
        md = dict(group[0].metadata())
        terms = []
        if "quadrature_degree" not in md:
            # Only pinned integrals are split (ParabolicProblem pins every
            # integral of F, see pin_quadrature_degrees): a piece of an
            # unpinned integral would get a quadrature rule of its own.
            parts["nonlinear"].extend(group)
            continue
        for itg in group:
            terms.extend(_terms(itg.integrand()))
        for term in terms:
            itg = group[0].reconstruct(integrand=term, metadata=md)
            parts[_classify(ufl.Form([itg]), u, state, times)].append(itg)
    return SplitForms(
        linear=_form(parts["linear"]),
        step=_form(parts["step"]),
        nonlinear=_form(parts["nonlinear"]),
        n_terms={k: len(v) for k, v in parts.items()},
    )


def explicit_remainder(F: ufl.Form, u, u_prev, state: set, times: set) -> ufl.Form:
    """The IMEX residual: ``F`` with ``u^n`` replaced by ``u^{n-1}`` in its nonlinear remainder.

    ``F`` is split by :func:`split_residual`; the linear and per-step parts
    are kept and the nonlinear part ``N(u^n, ...)`` becomes
    ``N(u^{n-1}, ...)`` (``ufl.replace``).  The result is affine in ``u^n``
    with the linear part's constant Jacobian.  A residual without a
    nonlinear part is returned unchanged (the same object).

    Raises:
        ValueError: An integral of ``F`` has no pinned quadrature degree (the
            split would put it whole, mass term included, in the remainder).
    """
    unpinned = [itg for itg in F.integrals() if "quadrature_degree" not in itg.metadata()]
    if unpinned:
        raise ValueError(
            f"explicit_remainder: {len(unpinned)} integral(s) of the residual have no pinned quadrature degree; "
            "pin them first (femnpde.fem.quadrature.pin_quadrature_degrees)"
        )
    parts = split_residual(F, u, state, times)
    if parts.nonlinear is None:
        return F
    return add_forms(parts.linear, parts.step, ufl.replace(parts.nonlinear, {u: u_prev}))


def _classify(term: ufl.Form, u, state: set, times: set) -> str:
    coefficients = set(term.coefficients())
    constants = set(term.constants())
    present = coefficients & state
    if not present:
        return "step" if constants & times else "linear"
    if not constants & times:
        affine = True
        for w in present:
            d = expand_derivatives(ufl.derivative(term, w, ufl.TrialFunction(w.function_space)))
            if not d.empty() and (set(d.coefficients()) & state or set(d.constants()) & times):
                affine = False
                break
        if affine:
            return "linear"
    return "nonlinear" if u in present else "step"


def compile_form(form: ufl.Form | None, fco: dict | None = None, jit: dict | None = None):
    """Compile a UFL form with integer powers expanded (None stays None)."""
    if form is None:
        return None
    form = expand_integer_powers(form)
    if form.empty():
        return None
    return dolfinx.fem.form(form, form_compiler_options=fco, jit_options=jit)


def derivative(form: ufl.Form | None, w) -> ufl.Form | None:
    """``∂form/∂w`` in the direction of a trial function on w's space, or None if it vanishes."""
    if form is None or w not in form.coefficients():
        return None
    d = expand_derivatives(ufl.derivative(form, w, ufl.TrialFunction(w.function_space)))
    return None if d.empty() else d


def adjoint_action(form: ufl.Form | None, w, lam) -> ufl.Form | None:
    """``(∂form/∂w)^T lam`` as a linear form on w's space, or None if it vanishes."""
    d = derivative(form, w)
    return None if d is None else ufl.action(ufl.adjoint(d), lam)


def add_forms(*forms: ufl.Form | None) -> ufl.Form | None:
    """The sum of the forms that are not None (None if all are)."""
    present = [f for f in forms if f is not None]
    if not present:
        return None
    total = present[0]
    for f in present[1:]:
        total = total + f
    return total
