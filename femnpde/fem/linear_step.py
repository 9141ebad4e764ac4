"""The linear step path of :class:`~femnpde.fem.solver.ThetaSolver`: constant Jacobians.

When the step Jacobian is constant (the residual is affine in ``u^n``: heat,
IMEX), each time step is one solve with a matrix assembled and factorised
once (:func:`make_ksp`) and reused across steps, sweeps and training
iterations; the residual is a matrix-vector product for fully affine problems
(the fast path of :meth:`LinearStepMixin._setup_linear`), the split per-step
assembly for IMEX, or a plain assembly.  :class:`LinearStepMixin` holds these
methods and the Krylov initial-guess set-up (:attr:`krylov_guess`); the
attributes they use are created by ``ThetaSolver.__init__``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc
from petsc4py import PETSc

from femnpde.fem.krylov_guess import KrylovGuesses, check_krylov_guess
from femnpde.fem.linear_defaults import check_adjoint_capable
from femnpde.fem.newton import ksp_reason, options_with_defaults

__all__ = ["LinearIterations", "LinearStepMixin", "StackedBlocks", "make_ksp", "SolverError"]


class SolverError(RuntimeError):
    """A forward or adjoint solve failed (Newton or linear solver divergence)."""


@dataclass
class LinearIterations:
    """The Krylov iterations of each linear solve of the last forward and adjoint sweeps (constant Jacobians).

    ``ThetaSolver.linear_iterations``: :meth:`~femnpde.fem.solver.ThetaSolver.forward` starts a new
    ``forward`` list, :meth:`~femnpde.fem.solver.ThetaSolver.adjoint` new ``adjoint`` and ``recomputed``
    lists; each entry is ``ksp.getIterationNumber()`` after the solve (1 for a direct solver).  The
    nonlinear steps' Newton and Krylov counts are ``ThetaSolver.statistics`` instead (these lists stay empty).

    Attributes:
        forward: Each forward step's solve, in step order (a step whose residual is already below
            ``newton_atol`` has none).
        adjoint: Each adjoint step's solve, in the sweep's order (n = N, ..., 1).
        recomputed: The forward solves a checkpointing state storage repeated during the adjoint sweep.
        transposed: Whether the adjoint solved with the transposed operator (a nonsymmetric Jacobian).
    """

    forward: list[int] = field(default_factory=list)
    adjoint: list[int] = field(default_factory=list)
    recomputed: list[int] = field(default_factory=list)
    transposed: bool = False

    def solves(self) -> list[int]:
        """Every solve of a forward and the following adjoint sweep: forward, recomputed, adjoint."""
        return [*self.forward, *self.recomputed, *self.adjoint]


def make_ksp(comm, prefix: str, options: dict[str, str], A: PETSc.Mat, symmetric: bool) -> PETSc.KSP:
    """A KSP with ``prefix`` for the assembled ``A``, checked for the adjoint and set up (its
    preconditioner and the sub-solvers' ``sub_*`` options read now); ``options`` are defaults that
    command-line options override."""
    ksp = PETSc.KSP().create(comm)
    ksp.setOperators(A)

    def setup(k: PETSc.KSP) -> None:
        check_adjoint_capable(k, symmetric)
        k.setUp()

    try:
        options_with_defaults(ksp, prefix, options, setup=setup)
    except BaseException:
        ksp.destroy()
        raise
    return ksp


class StackedBlocks:
    """Constant bilinear forms with the same test space side by side, ``K = [M_1 | M_2 | ...]``.

    Assembled once by DOLFINx as one monolithic block matrix (one row block): ``K x = Σ_j M_j x_j``
    (:meth:`mult`) and ``Kᵀ y = (M_jᵀ y)_j`` (:meth:`mult_transpose`) cost one ghost exchange
    (PETSc's scatter of the product) instead of one per block, and give the blocks' products to
    round-off (the sums of a row run in another order).  The stacked vector is DOLFINx's block
    layout (on each rank the owned entries of block 1, then of block 2, ...): :meth:`part` is
    block ``name``'s owned entries, the input of :meth:`mult` and the output of :meth:`mult_transpose`.

    Args:
        forms: The compiled bilinear forms by name, in the order they are stacked.
        skip_first_in_transpose: :meth:`mult_transpose` leaves the first block's part as it is
            (its ``M_1ᵀ y`` unused: the affine fast path's ``A0``), so that ``Kᵀ`` holds the
            other blocks only.
    """

    def __init__(self, forms: dict[str, dolfinx.fem.Form], skip_first_in_transpose: bool = False) -> None:
        self.mat = dolfinx.fem.petsc.assemble_matrix([list(forms.values())])
        self.mat.assemble()
        self._mat_t: PETSc.Mat | None = None  # Kᵀ, assembled at the first mult_transpose
        sizes = [a.function_spaces[1].dofmap.index_map.size_local * a.function_spaces[1].dofmap.index_map_bs
                 for a in forms.values()]
        offsets = np.concatenate([[0], np.cumsum(sizes)])
        n_local, n_global = self.mat.getLocalSize()[1], self.mat.getSize()[1]
        if n_local != offsets[-1]:
            raise RuntimeError(f"StackedBlocks: {n_local} local columns, expected {offsets[-1]} (the block layout)")
        self._array = np.zeros(n_local)  # the stacked vector's owned entries, PETSc's array
        self._x = PETSc.Vec().createWithArray(self._array, size=(n_local, n_global), comm=self.mat.getComm())
        self._parts = {name: self._array[offsets[j]: offsets[j + 1]] for j, name in enumerate(forms)}
        # The output of the transposed product: every block's part, or all but the first one's.
        self._t_first = int(offsets[1]) if skip_first_in_transpose else 0
        self._x_t = self._x
        if self._t_first:
            self._x_t = PETSc.Vec().createWithArray(self._array[self._t_first:], comm=self.mat.getComm(),
                                                    size=(n_local - self._t_first, PETSc.DECIDE))

    @property
    def names(self) -> tuple[str, ...]:
        """The blocks' names, in stacking order."""
        return tuple(self._parts)

    def part(self, name: str) -> np.ndarray:
        """Block ``name``'s owned entries of the stacked vector (a view: write inputs, read outputs)."""
        return self._parts[name]

    def mult(self, out: PETSc.Vec) -> None:
        """``out = Σ_j M_j x_j`` with the :meth:`part` values ``x_j`` (collective)."""
        self.mat.mult(self._x, out)

    def mult_transpose(self, y: PETSc.Vec) -> None:
        """The :meth:`part` values become ``M_jᵀ y`` (collective).

        A product with ``Kᵀ``, assembled explicitly at the first call (PETSc's ``MatTranspose``,
        one more copy of ``K``): AIJ's transposed product scatters into the output and costs
        about three times the mat-vec (heat 2D, 205 761 unknowns, one rank: 14.6 against 4.8 ms
        per call, session 11); a forward-only run never builds it.
        """
        if self._mat_t is None:
            K = self.mat
            if self._t_first:  # the owned columns of the blocks after the first
                comm, (r0, r1), (c0, c1) = K.getComm(), K.getOwnershipRange(), K.getOwnershipRangeColumn()
                rows = PETSc.IS().createStride(r1 - r0, first=r0, step=1, comm=comm)
                cols = PETSc.IS().createStride(c1 - c0 - self._t_first, first=c0 + self._t_first, step=1, comm=comm)
                K = self.mat.createSubMatrix(rows, cols)
                rows.destroy()
                cols.destroy()
            self._mat_t = K.transpose(PETSc.Mat())  # a new matrix (no argument: in place)
            if K is not self.mat:
                K.destroy()
        self._mat_t.mult(y, self._x_t)

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        for obj in {id(o): o for o in (self.mat, self._mat_t, self._x, self._x_t)}.values():
            if obj is not None:
                obj.destroy()
        self._mat_t = None
        self._parts = {}


class LinearStepMixin:
    """The constant-Jacobian step of :class:`~femnpde.fem.solver.ThetaSolver` (its attributes)."""

    def _setup_constant_jacobian(self, options: dict[str, str]) -> None:
        """Assemble the constant step Jacobian and set up its KSP (``{prefix}forward_``), shared by the adjoint."""
        # The adjoint reuses the forward matrix and its factorisation.
        self._A = dolfinx.fem.petsc.create_matrix(self.problem.forms.jacobian)
        self._A.setOptionsPrefix(f"{self.prefix}forward_")
        self._assemble_A(self._A)  # constant: the preconditioner (factorisation) is set up once, here
        self._A_current = True
        self._ksp = make_ksp(self.problem.comm, f"{self.prefix}forward_", options, self._A, self.symmetric)
        self._ksp_adj = self._ksp

    def _setup_blocks(self) -> None:
        """Assemble the constant blocks side by side (:class:`StackedBlocks`).

        On the affine fast path they join A0 (:meth:`_setup_linear`): ``[A0 | blocks]`` is the
        residual's product and, transposed without ``A0`` (whose ``A0ᵀ λ`` is unused), the adjoint's
        couplings; otherwise ``[blocks]`` gives the couplings.
        """
        blocks = {name: self.problem.forms.constant_blocks[name] for name in self._block_names}
        if self._fast_linear:
            self._setup_linear(blocks)
            self._adj_blocks = self._lin
        elif blocks:
            self._adj_blocks = StackedBlocks(blocks)

    def _destroy_blocks(self) -> None:
        """Destroy what :meth:`_setup_blocks` made (collective)."""
        objs = [self._lin, self._f0, None if self._adj_blocks is self._lin else self._adj_blocks]
        for obj in objs:
            if obj is not None:
                obj.destroy()
        self._lin = self._adj_blocks = self._f0 = None

    def _setup_linear(self, blocks: dict[str, dolfinx.fem.Form]) -> None:
        """Assemble [A0 | blocks] (no BCs) and f0 = F(0) once: F(u) = [A0 | blocks] [u; coefficients] + f0."""
        p = self.problem
        forms = p.forms
        lin = StackedBlocks({"u": forms.jacobian, **blocks}, skip_first_in_transpose=True)
        saved = [f.x.array.copy() for f in (p.u, p.u_prev, p.g, p.g_prev)]
        for f in (p.u, p.u_prev, p.g, p.g_prev):
            f.x.array[:] = 0.0
        f0 = dolfinx.fem.petsc.create_vector(p.V)
        with f0.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(f0, forms.residual)
        f0.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        for f, a in zip((p.u, p.u_prev, p.g, p.g_prev), saved):
            f.x.array[:] = a
        self._lin = lin
        self._f0 = f0
        self._f0_zero = f0.norm() == 0.0

    @property
    def uses_linear_fast_path(self) -> bool:
        """Whether residuals and adjoint actions are matrix-vector products (fully affine problem)."""
        return self._lin is not None

    def _assemble_A(self, A: PETSc.Mat) -> None:
        A.zeroEntries()
        dolfinx.fem.petsc.assemble_matrix(A, self.problem.forms.jacobian, bcs=self.problem.bcs)
        A.assemble()

    def _residual(self) -> float:
        """Assemble the Newton right-hand side F(u) (BC rows: u − u_D) into b; return its norm."""
        p = self.problem
        b = self._b
        if self._lin is not None:
            lin = self._lin
            for name in lin.names:  # the owned entries of u, u_prev, g, g_prev: one product, one ghost exchange
                x = lin.part(name)
                x[:] = self._arrays[name][: x.size]
            lin.mult(b)
            if not self._f0_zero:
                b.axpy(1.0, self._f0)
            # The iterate carries the Dirichlet values: the BC rows u − u_D vanish.
            b.array_w[self._bc_owned] = 0.0
            return b.norm()
        if self._imex is not None:
            self._imex.step_constant(self._c_step)
            self._imex.residual(p.u.x.petsc_vec, self._c_step, b)
            b.array_w[self._bc_owned] = 0.0  # as above
            return b.norm()
        with b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(b, p.forms.residual)
        b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        # The iterate already carries the Dirichlet values, so no lifting is needed.
        dolfinx.fem.petsc.set_bc(b, p.bcs, p.u.x.petsc_vec, -1.0)
        return b.norm()

    def _solve(self, ksp: PETSc.KSP, b: PETSc.Vec, x: PETSc.Vec, n: int, transpose: bool,
               adjoint: bool | None = None) -> None:
        """Solve (or, ``transpose``, solve with the transposed operator); a failure raises :class:`SolverError`
        naming the step, its time, the reason and the options prefix, as a forward or (``adjoint``; by default
        ``transpose``) an adjoint solve: a symmetric Jacobian's adjoint solves untransposed."""
        if transpose:
            ksp.solveTranspose(b, x)
        else:
            ksp.solve(b, x)
        reason = ksp.getConvergedReason()
        if reason < 0:
            kind = "adjoint" if (transpose if adjoint is None else adjoint) else "forward"
            raise SolverError(
                f"{kind} linear solve at time step {n} (t = {self._times[n]:.6g}) failed (KSP converged reason "
                f"{ksp_reason(reason)} ({int(reason)})); check the linear solver options under "
                f"'{ksp.getOptionsPrefix()}'"
            )

    def _linear_step(self, n: int) -> int:
        """One solve of an affine step with the constant, factorised Jacobian; returns 0 or 1 iterations."""
        p = self.problem
        norm = self._residual()
        if not np.isfinite(norm):
            raise SolverError(f"time step {n} (t = {self._times[n]:.6g}): the residual is {norm}")
        if norm <= self.newton_atol:
            return 0
        if not self._A_current:
            self._assemble_A(self._A)
            self._ksp.setOperators(self._A)
            self._A_current = True
        if self._guesses is not None:  # the KSP has a nonzero initial guess (the adjoint's warm start)
            self._guesses.forward(self._b, self._du)  # by default u^{n-1}: reproduced bitwise by any storage
        self._solve(self._ksp, self._b, self._du, n, transpose=False)
        if self._guesses is not None:
            self._guesses.forward_solved(self._du)
        its = self.linear_iterations
        (its.recomputed if self._recomputing else its.forward).append(self._ksp.getIterationNumber())
        # One Newton step solves an affine residual exactly.
        p.u.x.petsc_vec.axpy(-1.0, self._du)
        p.u.x.scatter_forward()
        return 1

    @property
    def forward_guess(self) -> str:
        """The initial guess of the forward's Krylov solves (``ThetaSolver(forward_guess=...)``)."""
        return self._forward_guess

    @property
    def krylov_guess(self) -> str:
        """The initial guess of the Krylov solves (see the constructor); settable."""
        return self._kind

    @krylov_guess.setter
    def krylov_guess(self, kind: str) -> None:
        check_krylov_guess(kind, "ThetaSolver: ")
        if self._guesses is not None:
            self._guesses.destroy()
        self._kind = kind
        self._guesses = (KrylovGuesses(kind, self._A, self.symmetric, forward=self._forward_guess)
                         if self._adjoint_warm else None)
