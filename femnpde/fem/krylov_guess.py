"""Initial guesses for sequences of Krylov solves with one symmetric positive definite matrix.

A time-stepping sweep solves ``A x^n = b^n`` with the same matrix at every
step and right-hand sides that change smoothly in time.  :class:`ProjectedGuess`
keeps the last few solutions in an ``A``-orthonormal basis ``X`` and starts
each solve from the ``A``-orthogonal projection of the new solution onto their
span, ``x_0 = X Xᵀ b`` (P. F. Fischer, *Projection techniques for iterative
solution of Ax = b with successive right-hand sides*, CMAME 163, 1998): the
error of ``x_0`` in the energy norm is the least over the span.  The stopping
test of the Krylov method stays relative to ``‖b‖`` (PETSc's default test
with a nonzero initial guess), so a better guess only saves iterations, it
does not loosen the tolerance.

Cost per solve with ``k`` basis vectors: one multi-dot (one reduction) and
one multi-axpy for the guess, one matrix-vector product, one multi-dot and
one multi-axpy to add the solution.  When the basis is full it restarts from
the latest solution.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

__all__ = ["ProjectedGuess"]


class ProjectedGuess:
    """``A``-orthogonal projection onto the span of previous solutions (owns its vectors).

    Args:
        A: The symmetric positive definite matrix of every solve.
        max_vectors: Basis size before a restart.
    """

    def __init__(self, A: PETSc.Mat, max_vectors: int = 8) -> None:
        if max_vectors < 1:
            raise ValueError(f"ProjectedGuess: max_vectors must be >= 1, got {max_vectors}")
        self._A = A
        self._max = int(max_vectors)
        self._basis: list[PETSc.Vec] = []
        self._spare: list[PETSc.Vec] = []
        self._w = A.createVecLeft()

    def reset(self) -> None:
        """Forget the basis (at the start of a sweep: the guesses then depend on this sweep only)."""
        self._spare.extend(self._basis)
        self._basis = []

    def guess(self, b: PETSc.Vec, x: PETSc.Vec) -> None:
        """Set ``x`` to the projection of ``A⁻¹ b`` onto the basis (zero without a basis)."""
        x.zeroEntries()
        if self._basis:
            x.maxpy(np.asarray(b.mDot(self._basis)), self._basis)

    def add(self, x: PETSc.Vec) -> None:
        """Add the solution ``x`` of the last solve to the basis (``A``-orthonormalised)."""
        if len(self._basis) >= self._max:
            self.reset()
        w = self._w
        self._A.mult(x, w)
        xAx = x.dot(w)
        v = self._spare.pop() if self._spare else x.duplicate()
        x.copy(v)
        if self._basis:
            c = np.asarray(w.mDot(self._basis))
            v.maxpy(-c, self._basis)
            vAv = xAx - float(c @ c)
        else:
            vAv = xAx
        if not np.isfinite(vAv) or vAv <= 1e-14 * abs(xAx):  # in the span already (or A not SPD)
            self._spare.append(v)
            return
        v.scale(1.0 / np.sqrt(vAv))
        self._basis.append(v)

    def destroy(self) -> None:
        """Destroy the vectors (collective)."""
        for v in self._basis + self._spare + [self._w]:
            v.destroy()
        self._basis, self._spare = [], []
