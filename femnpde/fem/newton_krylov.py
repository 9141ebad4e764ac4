"""The Krylov path of a nonlinear theta step (``method="krylov"``, :class:`~femnpde.fem.newton.NonlinearStep`).

With ``method="krylov"`` (:data:`METHODS`; the default of large problems,
:func:`default_nonlinear_method`) nothing is factorised per step or per
iteration: the constant linear part ``A_lin = A_u`` (Dirichlet rows identity)
is the preconditioner, set up once from the default linear solver options
(PETSc's ``PCKSP``, whose inner solver reads ``{prefix}forward_ksp_*``: the
serial LU, the redundant LU on several ranks, or whatever the step solver
default is; an iterative default contributes its preconditioner only), and
both the Newton systems (exact Jacobian, assembled per iteration) and the
adjoint systems are solved by GMRES (safe when the Jacobian or the linear
part is indefinite; for a non-symmetric Jacobian the adjoint applies
transposes).  The Newton systems are solved inexactly, each to
the accuracy the next iterate needs (the residual test is exact, so the
converged state is the same); the adjoint's Krylov tolerance bounds the
gradient error (:mod:`femnpde.fem.linear_defaults`).

This module holds the choice of the method (:func:`default_nonlinear_method`),
the options of the Newton systems' and the adjoint's Krylov solves
(:func:`krylov_options`, :func:`krylov_adjoint_options`) and the inexact
Newton forcing term (:class:`EisenstatWalker`) that
:class:`~femnpde.fem.chord.AcceleratedChord` applies to each Newton system.
"""

from __future__ import annotations

from petsc4py import PETSc

from femnpde import defaults as D

__all__ = [
    "KRYLOV_MIN_DOFS",
    "METHODS",
    "AdjointExtrapolation",
    "EisenstatWalker",
    "default_nonlinear_method",
    "krylov_adjoint_options",
    "krylov_options",
]

#: The linear systems of a nonlinear step: ``"chord"`` (a lagged Newton matrix, factorised and
#: refreshed when the residual falls slowly) or ``"krylov"`` (Krylov solves preconditioned by the
#: constant linear part, factorised once); ``"auto"`` picks by size (:func:`default_nonlinear_method`).
METHODS = D.NONLINEAR_METHOD_CHOICES
#: ``"auto"`` takes ``"krylov"`` from this many unknowns on (measured faster at 205 761, slower
#: at 13 041 dofs: ``bench/nonlinear_cost.py``, ``bench/scaling.py --case ac2d``).
KRYLOV_MIN_DOFS = 100_000


def default_nonlinear_method(n_dofs: int, default_options: bool) -> str:
    """The method ``"auto"`` stands for: Krylov from :data:`KRYLOV_MIN_DOFS` unknowns, with default options.

    Args:
        n_dofs: Global number of unknowns.
        default_options: Whether the linear solver options are the defaults
            (options given by the caller configure the chord's factorisation,
            so they keep that path).
    """
    return "krylov" if default_options and n_dofs >= KRYLOV_MIN_DOFS else "chord"


def krylov_options(linear_options: dict[str, str], symmetric: bool) -> dict[str, str]:
    """Options (without prefix) of the Newton systems' Krylov solve, preconditioned by the linear part.

    A direct (``preonly``) ``linear_options`` becomes the inner solver of a
    ``PCKSP`` (keys prefixed ``ksp_``): any exact solver the defaults name
    plugs in.  An iterative one contributes its preconditioner only (a
    Krylov method inside the preconditioner would make it nonlinear).

    Args:
        linear_options: The linear step solver's options (e.g.
            :func:`~femnpde.fem.linear_defaults.default_linear_solver_options`).
        symmetric: Whether the step Jacobian is symmetric (kept for a choice by symmetry; GMRES for both).
    """
    # GMRES for symmetric Jacobians too: the linear part need not be definite (Allen–Cahn's holds
    # -ε⁻² u v: A_lin is indefinite once dt > ε², where MINRES stopped with DIVERGED_INDEFINITE_PC),
    # and it cost what MINRES cost (13 041 dofs: 17.2 iterations per step, the same CPU time).
    # Right preconditioning: the tolerance is on ‖F + J d‖, what the Newton forcing term is about.
    # Flexible GMRES (session 10): with the fixed linear-part preconditioner its iterates are GMRES's,
    # but its solution update reuses the preconditioned vectors, where GMRES's x0 + M⁻¹ V y applies the
    # preconditioner (a solve with the factorised linear part) once more per Newton system.
    outer = {"ksp_type": "fgmres", "ksp_gmres_restart": "100", "ksp_pc_side": "right", "ksp_rtol": "1e-14",
             "ksp_atol": "1e-50", "ksp_max_it": "200"}
    if linear_options.get("ksp_type", "preonly") == "preonly":
        return {**outer, "pc_type": "ksp", **{f"ksp_{k}": v for k, v in linear_options.items()}}
    return {**outer, **{k: v for k, v in linear_options.items() if not k.startswith("ksp_")}}


def krylov_adjoint_options(symmetric: bool, adjoint_rtol: float) -> dict[str, str]:
    """Options (without prefix) of the adjoint's Krylov solve, preconditioned by the linear part.

    Args:
        symmetric: Whether the step Jacobian is symmetric (see :func:`krylov_options`).
        adjoint_rtol: The relative tolerance (it bounds the gradient error:
            :mod:`femnpde.fem.linear_defaults`).
    """
    adj_defaults = {k: v for k, v in krylov_options({}, symmetric).items() if not k.startswith("pc_")}
    # Left-preconditioned GMRES (FGMRES is right-preconditioned only), its norm: ‖P⁻¹(b − J λ)‖ ≈
    # ‖λ_exact − λ‖ since P⁻¹J ≈ I; its initial residual, not its update, costs the extra application.
    del adj_defaults["ksp_pc_side"]
    adj_defaults["ksp_type"] = "gmres"
    adj_defaults.update({"ksp_rtol": repr(float(adjoint_rtol)), "ksp_max_it": "300"})
    return adj_defaults


class EisenstatWalker:
    """The relative tolerances of a step's inexact Newton solves (Eisenstat–Walker, choice 2).

    Args:
        eta0: The relative tolerance of a step's first Krylov solve.
    """

    def __init__(self, eta0: float = 1e-3) -> None:
        self.eta0 = float(eta0)
        self.reset(0.0)

    def reset(self, target: float) -> None:
        """Start a step whose final residual norm is aimed at ``target`` (the polishing target)."""
        self._target = target
        self._fprev = None
        self._fprev2 = None
        self._eta = self.eta0

    def limited_by_roundoff(self, fnorm: float, factor: float = 10.0) -> bool:
        """Whether ``fnorm``, the residual norm after the last Newton step, is round-off (polishing cannot lower it).

        The step solved its Newton system to ``‖F + J d‖ ≤ η ‖F‖`` from
        ``‖F_k‖``; an exact-Newton model of the remainder, ``‖F_k‖ (‖F_k‖/‖F_{k-1}‖)²``
        (quadratic convergence with the constant of the previous step, which
        holds that step's linear error too, so it errs on the large side),
        bounds what a further step could leave.  A residual ``factor`` times
        above ``η ‖F_k‖`` plus that remainder is the floor of the residual's
        evaluation, not a Newton error: polishing it only repeats the floor
        (measured at 205 761 dofs: 1.5e-15 after a step that should have left
        5e-18).  False before a step's second Newton step (no model yet).
        """
        if self._fprev is None or self._fprev2 is None or not self._fprev2 > 0:
            return False
        f = self._fprev
        predicted = self._eta * f + f * (f / self._fprev2) ** 2
        return fnorm > factor * predicted

    def __call__(self, fnorm: float, rtol_min: float) -> float:
        """The relative tolerance of the Newton system at residual norm ``fnorm``.

        ``η_k = 0.9 (‖F_k‖/‖F_{k-1}‖)²`` (the reduction the next exact-Newton step
        would give; ``eta0`` at the first iteration of a step), safeguarded by
        ``0.9 η_{k-1}²``, never below what reaches the polishing target from
        here, within ``[rtol_min, 0.1]``.  Only norms of this step enter, so a
        recomputed step repeats its iterates exactly.
        """
        if self._fprev is None:
            eta = self.eta0
        else:
            eta = 0.9 * (fnorm / self._fprev) ** 2
            if 0.9 * self._eta**2 > 0.1:
                eta = max(eta, 0.9 * self._eta**2)
        if fnorm > 0:
            eta = max(eta, 0.5 * self._target / fnorm)
        eta = min(0.1, max(rtol_min, eta))
        self._fprev2, self._fprev, self._eta = self._fprev, fnorm, eta
        return eta


class AdjointExtrapolation:
    """Initial guesses ``2 λ^{n+1} − λ^{n+2}`` of an adjoint sweep's Krylov solves (owns its vectors).

    Only this sweep's adjoints enter (:meth:`reset` at its start), so a
    checkpointed sweep, which solves the same systems in the same order,
    starts from the same guesses.
    """

    def __init__(self) -> None:
        self._hist: list[PETSc.Vec] = []
        self._spare: list[PETSc.Vec] = []

    def reset(self) -> None:
        """Forget the previous sweep's adjoints."""
        self._spare.extend(self._hist)
        self._hist = []

    def guess(self, lam: PETSc.Vec) -> bool:
        """Set ``lam`` to the guess (λ^{n+1} with one adjoint, zero with none); whether it is nonzero."""
        h = self._hist
        if not h:
            lam.zeroEntries()
        elif len(h) == 1:
            h[0].copy(lam)
        else:
            h[0].copy(lam)
            lam.scale(2.0)
            lam.axpy(-1.0, h[1])
        return bool(h)

    def add(self, lam: PETSc.Vec) -> None:
        """Keep the solution ``lam`` as the newest of the last two adjoints."""
        h = self._hist
        if len(h) == 2:
            v = h.pop()
        elif self._spare:
            v = self._spare.pop()
        else:
            v = lam.duplicate()
        lam.copy(v)
        h.insert(0, v)

    def destroy(self) -> None:
        """Destroy the vectors (collective)."""
        for v in (*self._hist, *self._spare):
            v.destroy()
        self._hist, self._spare = [], []
