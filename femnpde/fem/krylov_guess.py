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
one multi-axpy for the guess; to add the solution (Gram–Schmidt twice, see
:meth:`ProjectedGuess.add`) one matrix-vector product, two multi-dots and
two multi-axpys, with the basis's images ``A X`` kept beside it (``2k``
vectors).  When the basis is full it restarts from the latest solution.
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

from femnpde import defaults as D

__all__ = ["FORWARD_GUESSES", "KRYLOV_GUESSES", "KrylovGuesses", "ProjectedGuess", "check_forward_guess",
           "check_krylov_guess"]


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
        self._basis: list[PETSc.Vec] = []  # X, XᵀAX = I
        self._images: list[PETSc.Vec] = []  # A X
        self._spare: list[PETSc.Vec] = []
        self._w = A.createVecLeft()

    def reset(self) -> None:
        """Forget the basis (at the start of a sweep: the guesses then depend on this sweep only)."""
        self._spare.extend(self._basis + self._images)
        self._basis, self._images = [], []

    def guess(self, b: PETSc.Vec, x: PETSc.Vec) -> None:
        """Set ``x`` to the projection of ``A⁻¹ b`` onto the basis (zero without a basis)."""
        x.zeroEntries()
        if self._basis:
            x.maxpy(np.asarray(b.mDot(self._basis)), self._basis)

    def _vector(self) -> PETSc.Vec:
        return self._spare.pop() if self._spare else self._w.duplicate()

    def add(self, x: PETSc.Vec) -> None:
        """Add the solution ``x`` of the last solve to the basis (``A``-orthonormalised).

        Classical Gram–Schmidt in the ``A`` inner product, twice: successive solutions are nearly
        parallel (the new direction's energy is 1e-4 … 1e-12 of ``xᵀAx``), and one pass leaves
        components along the basis of ``eps · ‖x‖_A / ‖v‖_A``, which compound from vector to vector
        (``‖XᵀAX − I‖`` reached 0.9 after six vectors of an Allen–Cahn 3D sweep: the guesses then
        left residuals of up to 3 ‖b‖, and ``xᵀAx − ‖c‖²`` went negative, so no later solution was
        added).  The second pass restores orthogonality to round-off.  The ``A`` inner products with
        the basis are taken with its kept images, ``(AX)ᵀ v``, and ``vᵀAv`` from ``A v`` of the
        orthogonalised ``v``, not by cancellation: one matrix-vector product per solve (session 10;
        before, ``A x`` and ``A v`` after the first pass, two).
        """
        if len(self._basis) >= self._max:
            self.reset()
        v = self._vector()
        x.copy(v)
        along = 0.0  # ‖Xᵀ A x‖², x's energy along the basis
        if self._basis:
            c = np.asarray(v.mDot(self._images))  # first pass
            v.maxpy(-c, self._basis)
            c2 = np.asarray(v.mDot(self._images))  # what the first pass left along the basis
            v.maxpy(-c2, self._basis)  # second pass
            along = float((c + c2) @ (c + c2))
        w = self._vector()
        self._A.mult(v, w)
        vAv = v.dot(w)
        if not np.isfinite(vAv) or vAv <= 1e-14 * abs(vAv + along):  # in the span already (or A not SPD)
            self._spare.extend((v, w))
            return
        scale = 1.0 / np.sqrt(vAv)
        v.scale(scale)
        w.scale(scale)
        self._basis.append(v)
        self._images.append(w)

    @property
    def size(self) -> int:
        """The number of basis vectors."""
        return len(self._basis)

    def orthonormality_error(self) -> float:
        """``max |XᵀAX − I|`` of the basis (collective; a diagnostic: ``k`` matrix-vector products)."""
        if not self._basis:
            return 0.0
        w = self._w
        gram = np.empty((len(self._basis), len(self._basis)))
        for j, v in enumerate(self._basis):
            self._A.mult(v, w)
            gram[:, j] = w.mDot(self._basis)
        return float(np.abs(gram - np.eye(len(self._basis))).max())

    def destroy(self) -> None:
        """Destroy the vectors (collective)."""
        for v in self._basis + self._images + self._spare + [self._w]:
            v.destroy()
        self._basis, self._images, self._spare = [], [], []


#: Choices of ``ThetaSolver(krylov_guess=...)``.
KRYLOV_GUESSES = ("projection", "extrapolate", "previous")
#: Choices of ``ThetaSolver(forward_guess=...)``.
FORWARD_GUESSES = D.FORWARD_GUESS_CHOICES


def _check_choice(name: str, value: str, choices: tuple[str, ...], where: str) -> None:
    if value not in choices:
        raise ValueError(f"{where}{name} = {value!r}; valid: {', '.join(choices)}")


def check_krylov_guess(kind: str, where: str = "") -> None:
    """Raise a ValueError (prefixed by ``where``) unless ``kind`` is one of :data:`KRYLOV_GUESSES`."""
    _check_choice("krylov_guess", kind, KRYLOV_GUESSES, where)


def check_forward_guess(kind: str, where: str = "") -> None:
    """Raise a ValueError (prefixed by ``where``) unless ``kind`` is one of :data:`FORWARD_GUESSES`."""
    _check_choice("forward_guess", kind, FORWARD_GUESSES, where)


class KrylovGuesses:
    """The initial guesses of a solver's adjoint Krylov solves with one constant matrix.

    The adjoint solves ``A λ^n = rhs^n`` backwards in time: ``"previous"``
    starts from ``λ^{n+1}``, ``"extrapolate"`` from ``2 λ^{n+1} − λ^{n+2}``,
    ``"projection"`` from :class:`ProjectedGuess` of the sweep's earlier
    adjoints (a symmetric ``A``; otherwise "extrapolate").  Every guess depends
    on the current sweep only.

    The forward solves start from the previous state ``u^{n-1}`` (the
    correction ``du = 0``) by default: a checkpointing storage recomputes
    states from a snapshot, and only that guess is reproduced bitwise there,
    so the loss and the gradient do not depend on the state storage.
    ``forward = "projection"`` (all levels in memory only, a symmetric ``A``)
    starts each forward solve from :class:`ProjectedGuess` of the sweep's
    earlier corrections instead: session 9 measured 11.6 -> 6.2 forward
    iterations per step on the refined 3D box (heat, 64 steps; session 4's
    ~15 % was with the one-pass Gram–Schmidt that lost orthogonality), with
    losses and gradients that differ from the default's at the Krylov
    tolerance (2e-11 relative).

    Args:
        kind: One of :data:`KRYLOV_GUESSES`.
        A: The matrix.
        symmetric: Whether ``A`` is symmetric (positive definite).
        max_vectors: Basis size of the projection.

    Raises:
        ValueError: ``kind`` is not one of :data:`KRYLOV_GUESSES`.
    """

    def __init__(self, kind: str, A: PETSc.Mat, symmetric: bool, max_vectors: int = 8,
                 forward: str = D.FORWARD_GUESS) -> None:
        check_krylov_guess(kind)
        check_forward_guess(forward)
        self.kind = kind
        #: The forward's :class:`ProjectedGuess` (None unless ``forward`` is "projection" and ``A`` symmetric).
        self.forward_projection = ProjectedGuess(A, max_vectors) if forward == "projection" and symmetric else None
        project = kind == "projection" and symmetric
        self._adjoint = ProjectedGuess(A, max_vectors) if project else None
        #: The adjoint's :class:`ProjectedGuess` (None unless ``kind`` is "projection" and ``A`` symmetric).
        self.projection = self._adjoint
        self._extrapolate = kind != "previous" and not project
        self._lam_old = A.createVecLeft() if self._extrapolate else None  # λ^{n+2}

    def forward_start(self) -> None:
        """Before a forward sweep: its guesses then depend on this sweep only."""
        if self.forward_projection is not None:
            self.forward_projection.reset()

    def forward(self, b: PETSc.Vec, du: PETSc.Vec) -> None:
        """Set the guess of a forward step ``A du = b``: ``du = 0`` (the state ``u^{n-1}``, reproducible by
        any state storage) or the projection onto this sweep's earlier corrections."""
        if self.forward_projection is not None:
            self.forward_projection.guess(b, du)
        else:
            du.zeroEntries()

    def forward_solved(self, du: PETSc.Vec) -> None:
        """Record the solution of a forward step."""
        if self.forward_projection is not None:
            self.forward_projection.add(du)

    def adjoint_start(self) -> None:
        """Before an adjoint sweep (its solution vector zeroed by the caller)."""
        if self._adjoint is not None:
            self._adjoint.reset()

    def adjoint(self, n: int, n_steps: int, rhs: PETSc.Vec, lam: PETSc.Vec) -> None:
        """Turn ``lam = λ^{n+1}`` into the guess of adjoint step ``n``."""
        if self._adjoint is not None:
            self._adjoint.guess(rhs, lam)
        elif self._extrapolate and n < n_steps - 1:  # lam_old = λ^{n+2}
            old = self._lam_old
            old.aypx(-1.0, lam)  # λ^{n+1} − λ^{n+2}
            lam.axpy(1.0, old)  # the guess
            old.aypx(-1.0, lam)  # λ^{n+1}, for the next step
        elif self._extrapolate:
            lam.copy(self._lam_old)

    def adjoint_solved(self, lam: PETSc.Vec) -> None:
        """Record the solution of an adjoint step."""
        if self._adjoint is not None:
            self._adjoint.add(lam)

    def destroy(self) -> None:
        """Destroy the vectors (collective)."""
        for obj in (self._adjoint, self._lam_old, self.forward_projection):
            if obj is not None:
                obj.destroy()
        self._adjoint = self._lam_old = self.projection = self.forward_projection = None
