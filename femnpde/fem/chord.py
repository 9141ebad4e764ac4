"""The default nonlinear solver of a theta step: chord iterations as a PETSc SNES of type ``python``.

:class:`AcceleratedChord` is the SNES's solve routine; the residual, the
lagged Newton matrix and its refresh policy belong to
:class:`femnpde.fem.newton.NonlinearStep`, whose callbacks it calls through
SNES (``SNESComputeFunction`` / ``SNESComputeJacobian``), so SNES's
tolerances, monitors and converged reasons apply unchanged.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from petsc4py import PETSc

from femnpde.fem.newton_krylov import EisenstatWalker

if TYPE_CHECKING:
    from femnpde.fem.newton import NonlinearStep

__all__ = ["AcceleratedChord"]


class AcceleratedChord:
    """The default SNES solver (type ``python``): chord iterations on the lagged Newton matrix.

    Each iteration solves ``P d = F(x)`` with the lagged Newton matrix ``P``
    (one residual evaluation and one pair of triangular solves; ``P`` is
    refreshed by :class:`NonlinearStep`'s Jacobian callback when the residual
    falls slowly).  With ``depth > 0`` the last ``depth`` fixed-point steps are
    mixed (Anderson acceleration; global dot products, so every rank takes the
    same decisions).  SNES's own tolerances, iteration limits, monitors and
    converged reasons apply (``-{prefix}forward_snes_rtol``, ``_atol``,
    ``_max_it``, ``_monitor``, ``_converged_reason``);
    ``-{prefix}forward_snes_type newtonls`` selects PETSc's Newton with line
    search on the same callbacks instead.  With ``exact`` set (the fallback
    after a failure) it is Newton with a fresh Jacobian at every iteration and
    backtracking on ‖F‖.

    Once SNES's test is met, up to ``polish`` further iterations are taken
    until ‖F‖ is ``polish_factor`` times below the tolerance met (or stops
    falling): the final iterate is converged to about round-off, as an exact
    Newton's last (quadratic) step would leave it, so losses, gradients and
    finite differences do not depend on where the linear convergence happened
    to cross the tolerance.  With the step's ``krylov`` method no polishing
    iteration follows an inexact Newton step whose residual is already
    round-off (:meth:`~femnpde.fem.newton_krylov.EisenstatWalker.limited_by_roundoff`:
    far above what the step should have left), where it would only repeat
    that floor.

    Args:
        step: The owner (its vectors, matrices and callbacks).
        depth: Anderson depth (0: plain chord).
        polish: Maximum extra iterations after convergence.
        polish_factor: How far below the tolerance they aim.
        eta0: With the step's ``krylov`` method (Newton systems solved by a
            Krylov method preconditioned by the linear part), the relative
            tolerance of a step's first Krylov solve; later ones follow
            :class:`~femnpde.fem.newton_krylov.EisenstatWalker`.
    """

    def __init__(self, step: "NonlinearStep", depth: int = 0, polish: int = 3, polish_factor: float = 1e-4,
                 eta0: float = 1e-3) -> None:
        self.step = step
        self.forcing = EisenstatWalker(eta0)
        self.depth = int(depth)
        self.polish = int(polish)
        self.polish_factor = float(polish_factor)

    def _dots(self, cols: list[np.ndarray], f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The Gram matrix of ``cols`` and their products with ``f`` (one allreduce)."""
        C = np.column_stack(cols)
        local = np.ascontiguousarray(C.T @ np.column_stack((C, f)))
        total = np.empty_like(local)
        self.step.problem.comm.Allreduce(local, total)
        m = len(cols)
        return total[:, :m], total[:, m]

    def solve(self, snes: PETSc.SNES, b, x: PETSc.Vec) -> None:
        """Solve F(x) = 0 from the initial guess in x (called by SNESSolve)."""
        st = self.step
        F = st._b
        self._exact = st._exact
        self._history: tuple[list, list] = ([], [])
        self._prev = None
        snes.setIterationNumber(0)
        snes.computeFunction(x, F)
        fnorm = F.norm()
        self._report(snes, 0, fnorm, 0.0, 0, x, test=True)
        rtol, atol, _, _ = snes.getTolerances()
        target = self.polish_factor * max(atol, rtol * fnorm)
        self.forcing.reset(target)
        k = 0
        polished = 0
        last_ratio = 1.0
        at_floor = False
        while True:
            reason = snes.getConvergedReason()
            if reason < 0:
                return
            if reason > 0:
                # Converged: polish towards round-off (the discrete adjoint and
                # finite differences see the final iterate) while it still pays.
                if polished >= self.polish or last_ratio > 0.5 or fnorm <= target or at_floor:
                    return
                polished += 1
                x_best = x.array_r.copy()
                new_norm, ynorm, lin_its = self._iterate(snes, x, fnorm)
                if not new_norm < fnorm:
                    x.array_w[:] = x_best
                    snes.computeFunction(x, F)
                    return
            else:
                new_norm, ynorm, lin_its = self._iterate(snes, x, fnorm)
                if new_norm is None:
                    snes.setConvergedReason(PETSc.SNES.ConvergedReason.DIVERGED_LINEAR_SOLVE)
                    return
            last_ratio = new_norm / fnorm if fnorm > 0 else 0.0
            # Inexact Newton (krylov): a residual far above what the step should have left is round-off.
            at_floor = st.krylov and not self._exact and self.forcing.limited_by_roundoff(new_norm)
            fnorm = new_norm
            k += 1
            self._report(snes, k, fnorm, ynorm, lin_its, x, test=reason == 0)

    @staticmethod
    def _report(snes, k: int, fnorm: float, ynorm: float, lin_its: int, x: PETSc.Vec, test: bool) -> None:
        snes.setIterationNumber(k)
        snes.setFunctionNorm(fnorm)
        snes.logConvergenceHistory(fnorm, lin_its)
        snes.monitor(k, fnorm)
        if test:
            snes.converged(k, x.norm() if k else 0.0, ynorm, fnorm)

    def _iterate(self, snes, x: PETSc.Vec, fnorm: float):
        """One chord (or, when exact, Newton) iteration; returns (‖F‖, ‖Δx‖, linear its), ‖F‖ None on failure."""
        st = self.step
        F, d, P, Pmat = st._b, st._d, st._P, st._pmat
        ksp = snes.getKSP()
        snes.computeJacobian(x, P, Pmat)
        if st.refreshed_now:  # secants of the old matrix do not describe the new one
            self._history[0].clear()
            self._history[1].clear()
            self._prev = None
        ksp.setOperators(P, Pmat)
        if st.krylov:
            ksp.setTolerances(rtol=self.forcing(fnorm, st.newton_ksp_rtol_min))
        ksp.solve(F, d)
        lin_its = ksp.getIterationNumber()
        st.stats.forward_krylov_iterations += lin_its
        st.stats.forward_linear_solves += 1
        if ksp.getConvergedReason() < 0:
            return None, 0.0, lin_its
        if self.depth == 0 and not self._exact:
            # Plain chord step: PETSc vector operations only.
            x.axpy(-1.0, d)
            snes.computeFunction(x, F)
            return F.norm(), d.norm(), lin_its
        x_old = x.array_r.copy()
        da = d.array_r
        g = x_old - da
        dF, dG = self._history
        if self.depth > 0 and not self._exact:
            f = -da
            if self._prev is not None:
                dF.append(f - self._prev[0])
                dG.append(g - self._prev[1])
                if len(dF) > self.depth:
                    dF.pop(0)
                    dG.pop(0)
            self._prev = (f, g)
        x_new = g
        if dF:
            A, r = self._dots(dF, f)
            A = A + 1e-14 * np.trace(A) * np.eye(len(dF))
            x_new = g - np.column_stack(dG) @ np.linalg.solve(A, r)
        x.array_w[:] = x_new
        snes.computeFunction(x, F)
        new_norm = F.norm()
        if dF and not new_norm < fnorm:
            # The mixed step did not reduce ‖F‖: restart from a plain chord step.
            dF.clear()
            dG.clear()
            self._prev = None
            x.array_w[:] = g
            snes.computeFunction(x, F)
            new_norm = F.norm()
        if self._exact:
            # Backtracking (Armijo on ‖F‖); global norms, the same decisions on every rank.
            alpha = 1.0
            for _ in range(10):
                if new_norm <= (1.0 - 1e-4 * alpha) * fnorm:
                    break
                alpha *= 0.5
                x.array_w[:] = x_old - alpha * da
                snes.computeFunction(x, F)
                new_norm = F.norm()
        local = np.array([np.sum((x.array_r - x_old) ** 2)])
        total = np.empty(1)
        st.problem.comm.Allreduce(local, total)
        return new_norm, float(np.sqrt(total[0])), lin_its
