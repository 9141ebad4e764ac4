"""An exact Schur-complement (substructuring) direct solver for SPD matrices.

:class:`SchurDD` is a PETSc preconditioner of type ``python`` (use it with
``ksp_type preonly``: it is a direct solver) that splits the triangular
substitutions of a symmetric positive definite matrix ``A`` between the
ranks::

    -{prefix}ksp_type preonly -{prefix}pc_type python
    -{prefix}pc_python_type femnpde.fem.schur_dd.SchurDD

**Splitting.** The separator ``S`` is one-sided: the owned rows that have
non-zero entries in a *lower* rank's columns (on two ranks, rank 1's side of
the cut only, about half of the rows that touch the cut); the interior
``I_r`` of rank r is the rest of its rows.  ``A`` is symmetric, so an
interior row couples only to owned columns and to higher ranks' separator
rows: ``A`` restricted to the interiors is block diagonal over the ranks, and
``A_{I_r S}`` has non-zero columns ``C_r`` in rank r's own part of ``S`` and
in higher ranks' parts.  With ``A_rr = P^T R^T R P`` (PETSc's sparse
Cholesky, nested dissection, on ``COMM_SELF``) and ``V_r = R^{-T} P A_{I_r
C_r}`` (one forward substitution per column of ``C_r``, kept sparse), the
Schur complement ``Σ = A_SS - Σ_r V_r^T V_r`` is a dense ``n_S x n_S`` matrix
assembled on every rank (one allreduce at set-up) and factorised by LAPACK's
Cholesky.

**Apply** (per solve, per rank): ``z_r = R^{-T} P b_r``; ``g = b_S - Σ_r V_r^T
z_r`` (one allreduce of ``n_S`` doubles); ``x_S = Σ^{-1} g`` on ``C_r`` and
the own separator (those rows of ``Σ^{-1}``, a dense product); ``x_r = P^T
R^{-1} (z_r - V_r x_{C_r})``, PETSc's separate backward substitution
(``-{prefix}schur_dd_backward substitution``, the default since session 11).
That is, per rank, a half-size forward and a half-size backward substitution
(one pass over the interior factor each) and the products with ``V_r^T`` and
``V_r``.  The alternative ``-{prefix}schur_dd_backward fused`` (sessions
8-10's apply) finishes with one fused solve of ``b_r - A_{I_r C_r} x_{C_r}``
(a product with the sparse coupling and a second forward pass): three passes
instead of two, which pays only where PETSc's separate backward kernel is
slower than its whole fused solve (session 8's machine: 11.3 against 7.9 ms
at 102 831 unknowns, the forward 3.2 ms; session 11's: 9.4 against 20.8 ms,
the forward 14.8 ms; ``bench/dd_profile.py kernels``).  The two agree to
round-off.  ``A`` is symmetric, so
:meth:`SchurDD.applyTranspose` is :meth:`SchurDD.apply`.  On one rank the
separator is empty and the solve is a plain sparse Cholesky.

**Options** (under ``{prefix}schur_dd_``): the interior factorisation is a
KSP with that prefix (defaults ``ksp_type preonly``, ``pc_type cholesky``,
``pc_factor_mat_solver_type petsc``, ``pc_factor_mat_ordering_type nd``;
e.g. ``-{prefix}schur_dd_pc_factor_mat_ordering_type rcm``),
``-{prefix}schur_dd_backward`` (:data:`BACKWARD_CHOICES`, default
:data:`BACKWARD`) and ``-{prefix}schur_dd_max_separator`` (default :data:`MAX_SEPARATOR`) bounds
the dense Schur complement: above it (many ranks, long cuts) the dense
``n_S^3 / 3`` factorisation and ``n_S^2`` storage per rank would dominate,
and the solver falls back to PETSc's LU on every rank (``pc_type
redundant``, options ``{prefix}schur_dd_fallback_*``), which is what
:func:`femnpde.fem.linear_defaults.default_linear_solver_options` chose
before this solver existed.

**Failure.** A matrix that is not symmetric is refused (``ValueError`` naming
the options prefix and what works instead).  A Cholesky breakdown (the
matrix is symmetric but not positive definite: a non-positive pivot of the
interior factor, NaN in the substitutions, or a non-positive-definite Schur
complement; e.g. an Allen–Cahn IMEX step with ``dt > ε²``, whose matrix
``M (1 - dt/ε²) + dt K`` is indefinite) is detected on every rank; by
default (``-{prefix}schur_dd_breakdown fallback``) the matrix is then solved
by the redundant LU, as it was before this solver, so the default never
breaks a step that solved before.  With ``-{prefix}schur_dd_breakdown
fail`` the preconditioner's failed reason is set on every rank instead: the
KSP reports ``DIVERGED_PCSETUP_FAILED`` and the solver's error path
(:class:`femnpde.fem.solver.SolverError`, exit 3) takes over.  Any other
exception of the set-up on one rank is raised on every rank (the ranks agree
before each collective of the set-up), never leaving the others waiting.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import scipy.linalg
import scipy.sparse
from mpi4py import MPI
from petsc4py import PETSc

from femnpde._mpi import run_agreed
from femnpde.fem.linear_defaults import is_symmetric
from femnpde.fem.newton import options_with_defaults

__all__ = ["SchurDD", "MAX_SEPARATOR", "BACKWARD", "BACKWARD_CHOICES", "INTERIOR_OPTIONS", "FALLBACK_OPTIONS"]

#: Default bound of the global separator size n_S (the dense Schur complement
#: is n_S x n_S on every rank: 3 000 -> 72 MB and a ~9 GFlop factorisation
#: with the reference BLAS; the benchmark's heat 2D rectangle on 2 ranks has n_S = 527).
MAX_SEPARATOR = 3_000
#: How the apply finishes (``-{prefix}schur_dd_backward``): ``"fused"``, a fused solve of
#: ``b_r - A_{I_r C_r} x_C`` (a second forward substitution and a backward one), or
#: ``"substitution"``, PETSc's separate backward substitution of ``z_r - V_r x_C``.
BACKWARD_CHOICES = ("substitution", "fused")
BACKWARD = "substitution"
#: Defaults of the interior factorisation (``{prefix}schur_dd_*``).
INTERIOR_OPTIONS = {
    "ksp_type": "preonly",
    "pc_type": "cholesky",
    "pc_factor_mat_solver_type": "petsc",
    "pc_factor_mat_ordering_type": "nd",
}
#: Defaults of the fallback above the separator bound (``{prefix}schur_dd_fallback_*``).
FALLBACK_OPTIONS = {
    "ksp_type": "preonly",
    "pc_type": "redundant",
    "redundant_pc_type": "lu",
    "redundant_pc_factor_mat_solver_type": "petsc",
    "redundant_pc_factor_mat_ordering_type": "nd",
}


def _seq_aij(m: scipy.sparse.csr_matrix) -> PETSc.Mat:
    m = m.tocsr()
    m.sort_indices()
    return PETSc.Mat().createAIJ(
        size=m.shape, csr=(m.indptr.astype(PETSc.IntType), m.indices.astype(PETSc.IntType), m.data),
        comm=PETSc.COMM_SELF,
    )


class SchurDD:
    """Python context of the substructuring direct solver (see the module docstring).

    petsc4py creates it (``pc_python_type femnpde.fem.schur_dd.SchurDD``) and
    calls :meth:`setUp` whenever the operator changes; the PETSc objects it
    creates are its own and are destroyed collectively in :meth:`destroy`.

    Attributes:
        n_separator: Global separator size n_S of the last set-up.
        nnz_v: Non-zeros of this rank's ``V_r`` (the coupling's forward substitutions).
        fallback: Why the last set-up fell back to the redundant LU (n_S above the bound, or
            a Cholesky breakdown); empty when it did not.
        setup_seconds: Wall time of the last set-up on this rank.
    """

    def __init__(self) -> None:
        self._objs: list = []
        self.n_separator = 0
        self.nnz_v = 0
        self.fallback = ""
        self.setup_seconds = 0.0
        self.backward = BACKWARD
        self._ksp = None  # the interior factorisation (COMM_SELF)
        self._fallback_ksp = None  # the redundant LU (the PC's communicator)
        self._use_fallback_ksp = False
        self._failed = False
        self._S = np.zeros(0, dtype=np.int32)

    @property
    def n_own_separator(self) -> int:
        """Separator rows this rank owns (its part of :attr:`n_separator`; 0 on the lowest rank)."""
        return int(self._S.size)

    # ------------------------------------------------------------ set-up
    def setFromOptions(self, pc: PETSc.PC) -> None:  # noqa: N802 (petsc4py's name)
        """Read ``{prefix}schur_dd_*`` and create the sub-solvers (options given as defaults exist only now)."""
        sub = f"{pc.getOptionsPrefix() or ''}schur_dd_"
        opts = PETSc.Options(sub)
        self._max_sep = opts.getInt("max_separator", MAX_SEPARATOR)
        self._breakdown = opts.getString("breakdown", "fallback")
        if self._breakdown not in ("fallback", "fail"):
            raise ValueError(f"-{sub}breakdown {self._breakdown!r}: valid choices are 'fallback' and 'fail'")
        self.backward = opts.getString("backward", BACKWARD)
        if self.backward not in BACKWARD_CHOICES:
            raise ValueError(
                f"-{sub}backward {self.backward!r}: valid choices are " + ", ".join(map(repr, BACKWARD_CHOICES))
            )
        self._destroy_ksps()
        self._ksp = PETSc.KSP().create(PETSc.COMM_SELF)
        options_with_defaults(self._ksp, sub, INTERIOR_OPTIONS)
        self._fallback_ksp = PETSc.KSP().create(pc.getComm())
        options_with_defaults(self._fallback_ksp, f"{sub}fallback_", FALLBACK_OPTIONS)

    def setUp(self, pc: PETSc.PC) -> None:  # noqa: N802 (petsc4py's name)
        """Split, factorise the interiors, build and factorise the Schur complement (collective).

        The ranks agree on the outcome before every collective of the set-up: an exception
        on one rank (e.g. out of memory in its interior factorisation) is raised on every
        rank, the others raising a :class:`RuntimeError` that points to it, instead of
        leaving them waiting in the next collective.
        """
        t0 = MPI.Wtime()
        comm = pc.getComm().tompi4py()
        try:
            run_agreed(comm, self._setup_steps(pc, comm),
                        f"SchurDD (options prefix '{pc.getOptionsPrefix() or ''}') set-up")
        except Exception:
            self._free()  # every rank is here (agreed): the collective resets are safe
            raise
        finally:
            self.setup_seconds = MPI.Wtime() - t0

    def _setup_steps(self, pc: PETSc.PC, comm: MPI.Comm) -> Iterator[None]:
        """The set-up of :meth:`setUp`; it yields before each collective that follows local work."""
        self._free()
        A, _ = pc.getOperators()
        prefix = pc.getOptionsPrefix() or ""
        sub = f"{prefix}schur_dd_"
        if not is_symmetric(A):
            raise ValueError(
                f"pc_type python with femnpde.fem.schur_dd.SchurDD (options prefix '{prefix}') needs a symmetric "
                f"positive definite matrix, and this one is not symmetric; use an LU instead, e.g. "
                f"-{prefix}pc_type lu -{prefix}pc_factor_mat_solver_type mumps, or -{prefix}pc_type redundant"
            )
        if self._ksp is None:  # created without setFromOptions
            self.setFromOptions(pc)
        max_sep, on_breakdown = self._max_sep, self._breakdown
        rstart, rend = A.getOwnershipRange()
        n_own = rend - rstart
        indptr, cols, vals = A.getValuesCSR()
        csr = scipy.sparse.csr_matrix((vals, cols, indptr), shape=(n_own, A.getSize()[1]))
        # One-sided separator: the rows coupled to a lower rank's columns (see the module docstring).
        row_of = np.repeat(np.arange(n_own), np.diff(indptr))
        is_sep = np.zeros(n_own, dtype=bool)
        is_sep[row_of[(cols < rstart) & (vals != 0.0)]] = True
        sep = np.flatnonzero(is_sep)
        self._S = sep.astype(np.int32)
        yield
        counts = np.array(comm.allgather(sep.size))
        n_sep = int(counts.sum())
        self.n_separator = n_sep
        self.fallback = ""
        if n_sep > max_sep:
            self._use_fallback(pc, A, sub, comm, f"n_S = {n_sep} > {sub}max_separator = {max_sep}")
            return
        # The interior block, factorised on this rank alone; the separator rows and columns are
        # replaced by the identity, so that the substitutions act on the owned vector in place.
        loc = csr[:, rstart:rend].tocsr()
        keep = scipy.sparse.diags((~is_sep).astype(float))
        A_rr = _seq_aij(keep @ loc @ keep + scipy.sparse.diags(is_sep.astype(float)))
        self._objs.append(A_rr)
        ksp = self._ksp
        ksp.setOperators(A_rr)
        ksp.setUp()
        inner = ksp.getPC()
        ok = inner.getFailedReason() == 0
        self._F = inner.getFactorMatrix()
        n_s = sep.size
        # Work vectors of the owned size: b and x's arrays are placed in them (no copies).
        self._bv, self._z, self._xv = (PETSc.Vec().createSeq(n_own, comm=PETSc.COMM_SELF) for _ in range(3))
        self._objs += [self._bv, self._z, self._xv]
        # The global separator (sorted: the ranks own contiguous ranges) and this rank's offset in it.
        offsets = np.concatenate([[0], np.cumsum(counts)])
        lo = offsets[comm.rank]
        yield
        all_sep = np.concatenate(comm.allgather(sep + rstart))
        self._lo = lo
        # The coupling A_{I_r S}: the interior rows' columns in the separator, own or a higher
        # rank's; its non-zero columns C_r (global separator numbering) are those V_r has.
        coo = (keep @ csr).tocoo()
        nonzero = coo.data != 0.0
        in_sep = np.isin(coo.col, all_sep) & nonzero
        # By symmetry an interior row's non-zeros in other ranks' columns are in their separators.
        coupled_ok = not np.any(nonzero & ~in_sep & ((coo.col < rstart) | (coo.col >= rend)))
        jj = np.searchsorted(all_sep, coo.col[in_sep])
        c_set = np.unique(jj)
        A_rS = scipy.sparse.csc_matrix(
            (coo.data[in_sep], (coo.row[in_sep], np.searchsorted(c_set, jj))), shape=(n_own, c_set.size)
        )
        n_c = c_set.size
        # One forward substitution per column of the coupling (kept sparse).
        rows, cols_v, data = [], [], []
        ok = ok and coupled_ok
        if ok:
            try:
                # The (isolated) separator entries: the forward substitution passes b_S through
                # unchanged (to positions the ordering chose), so the identity rows are intact.
                marks = self._bv.array_w
                marks[:] = 0.0
                marks[sep] = np.arange(1, n_s + 1)
                self._F.solveForward(self._bv, self._z)
                z = self._z.array_r
                pos = np.flatnonzero(z)
                ok = pos.size == n_s and np.array_equal(np.sort(z[pos]), np.arange(1, n_s + 1))
                # Where the substitutions keep the separator values (the factor's ordering).
                self._S_pos = np.empty(n_s, dtype=np.int32)
                if ok:
                    self._S_pos[z[pos].astype(np.int64) - 1] = pos
                for k in range(n_c):
                    col = self._bv.array_w
                    col[:] = 0.0
                    k0, k1 = A_rS.indptr[k], A_rS.indptr[k + 1]
                    col[A_rS.indices[k0:k1]] = A_rS.data[k0:k1]
                    self._F.solveForward(self._bv, self._z)
                    z = self._z.array_r
                    nz = np.flatnonzero(z)
                    rows.append(nz)
                    cols_v.append(np.full(nz.size, k))
                    data.append(z[nz].copy())
                if n_c == 0 and n_own > 0:
                    # No coupling to test the factor with: one substitution of ones (a NaN marks a
                    # non-positive pivot).
                    self._bv.set(1.0)
                    self._F.solveForward(self._bv, self._z)
                    ok = bool(np.all(np.isfinite(self._z.array_r)))
            except PETSc.Error:
                ok = False
        Vt = scipy.sparse.csr_matrix(
            (np.concatenate(data) if data else np.zeros(0),
             (np.concatenate(cols_v) if cols_v else np.zeros(0, int), np.concatenate(rows) if rows else np.zeros(0, int))),
            shape=(n_c, n_own),
        )
        ok = ok and bool(np.all(np.isfinite(Vt.data)))
        self.nnz_v = Vt.nnz
        self._Vt = _seq_aij(Vt)
        self._objs.append(self._Vt)
        # What the apply's last step multiplies x_{C_r} by: V_r for the backward substitution of
        # z_r - V_r x_C (a mat-vec, not a transposed one), the coupling A_{I_r C_r} for the fused
        # solve of b_r - A_{I_r C_r} x_C.
        self._last = _seq_aij(Vt.T.tocsr() if self.backward == "substitution" else A_rS.tocsr())
        self._t, self._xs = (PETSc.Vec().createSeq(n_c, comm=PETSc.COMM_SELF) for _ in range(2))
        self._C = c_set
        self._r = PETSc.Vec().createSeq(n_own, comm=PETSc.COMM_SELF)
        self._objs += [self._last, self._t, self._xs, self._r]
        # The dense Schur complement: this rank's separator rows of A_SS minus V_r^T V_r.
        S_local = np.zeros((n_sep, n_sep))
        if n_s:
            rows_ss = csr[sep].tocoo()
            in_ss = np.isin(rows_ss.col, all_sep)
            np.add.at(S_local, (lo + rows_ss.row[in_ss], np.searchsorted(all_sep, rows_ss.col[in_ss])),
                      rows_ss.data[in_ss])
        if n_c:
            S_local[np.ix_(c_set, c_set)] -= (Vt @ Vt.T).toarray()
        S = np.empty_like(S_local)
        yield
        comm.Allreduce(S_local, S, op=MPI.SUM)
        del S_local
        # The rows of Σ^{-1} this rank needs: its own separator's and V_r's columns C_r.
        need = np.union1d(c_set, lo + np.arange(n_s))
        self._need_c = np.searchsorted(need, c_set)
        self._need_own = np.searchsorted(need, lo + np.arange(n_s))
        self._W = np.zeros((need.size, n_sep))
        if n_sep and ok:
            try:
                factor = scipy.linalg.cho_factor(S, lower=True, check_finite=True)
                E = np.zeros((n_sep, need.size))
                E[need, np.arange(need.size)] = 1.0
                # Σ^{-1} is symmetric: its rows are the solutions for the unit vectors.
                W = np.ascontiguousarray(scipy.linalg.cho_solve(factor, E).T)
                # Σ^{-1} decays away from the diagonal into subnormal numbers, which make the
                # dense product ~30x slower: flush them (each is below 2.3e-308 relative to |g|).
                W[np.abs(W) < np.finfo(float).tiny] = 0.0
                self._W = W
            except (np.linalg.LinAlgError, ValueError):
                ok = False
        self._g, self._g_local = np.empty(n_sep), np.zeros(n_sep)
        yield
        if on_breakdown == "fallback" and not comm.allreduce(bool(ok), op=MPI.LAND):
            # Symmetric but not positive definite (e.g. an IMEX step with dt > ε²): solve it
            # exactly as before this solver existed.
            self._free()
            self._use_fallback(pc, A, sub, comm, "the Cholesky factorisation broke down (not positive definite)")
        else:
            self._check(pc, comm, ok)

    def _use_fallback(self, pc: PETSc.PC, A: PETSc.Mat, sub: str, comm: MPI.Comm, why: str) -> None:
        """Solve with PETSc's LU on every rank (``{sub}fallback_*``); ``why`` goes to :attr:`fallback`."""
        self.fallback = why
        ksp = self._fallback_ksp
        ksp.setOperators(A)
        ksp.setUp()
        self._use_fallback_ksp = True
        self._check(pc, comm, ksp.getPC().getFailedReason() == 0)

    def _check(self, pc: PETSc.PC, comm: MPI.Comm, ok: bool) -> None:
        """Agree on the set-up's success; on failure, mark the PC failed on every rank."""
        self._failed = not comm.allreduce(bool(ok), op=MPI.LAND)
        if self._failed:
            pc.setFailedReason(PETSc.PC.FailedReason.FACTOR_NUMERIC_ZEROPIVOT)

    # ------------------------------------------------------------- apply
    def apply(self, pc: PETSc.PC, b: PETSc.Vec, x: PETSc.Vec) -> None:
        """x = A^{-1} b (collective: one allreduce of the n_S separator values)."""
        if self._failed:
            x.set(np.nan)
            pc.setFailedReason(PETSc.PC.FailedReason.FACTOR_NUMERIC_ZEROPIVOT)
            return
        if self._use_fallback_ksp:
            self._fallback_ksp.solve(b, x)
            if self._fallback_ksp.getConvergedReason() < 0:
                pc.setFailedReason(PETSc.PC.FailedReason.SUBPC_ERROR)
            return
        b_arr = b.getArray(readonly=True)
        x_arr = x.getArray()
        if not self.n_separator:  # one rank (or no coupling): the plain Cholesky solve
            self._bv.placeArray(b_arr)
            self._xv.placeArray(x_arr)
            self._F.solve(self._bv, self._xv)
            self._bv.resetArray()
            self._xv.resetArray()
            return
        # The forward substitution leaves the separator entries as they are (identity rows).
        self._bv.placeArray(b_arr)
        self._F.solveForward(self._bv, self._z)
        self._bv.resetArray()
        # g = b_S - Σ_r V_r^T z_r (one allreduce of n_S doubles).
        self._Vt.mult(self._z, self._t)
        g = self._g_local
        g[:] = 0.0
        g[self._lo : self._lo + self._S.size] = b_arr[self._S]
        g[self._C] -= self._t.array_r
        pc.getComm().tompi4py().Allreduce(g, self._g, op=MPI.SUM)
        xs = self._W @ self._g  # x_S on C_r and on the own separator
        self._xs.array_w[:] = xs[self._need_c]
        if self.backward == "substitution":
            # x = P^T R^{-1} (z - V_r x_C), x_S at the separator's positions (identity rows).
            r = self._r
            self._last.mult(self._xs, r)
            r.aypx(-1.0, self._z)
            r.array_w[self._S_pos] = xs[self._need_own]
            self._xv.placeArray(x_arr)
            self._F.solveBackward(r, self._xv)
            self._xv.resetArray()
            return
        # b - A_{I C} x_C on the interior, x_S on the separator (identity rows: the solve keeps it).
        r = self._r
        self._last.mult(self._xs, r)
        self._bv.placeArray(b_arr)
        r.aypx(-1.0, self._bv)
        self._bv.resetArray()
        r.array_w[self._S] = xs[self._need_own]
        self._xv.placeArray(x_arr)
        self._F.solve(r, self._xv)
        self._xv.resetArray()

    def applyTranspose(self, pc: PETSc.PC, b: PETSc.Vec, x: PETSc.Vec) -> None:  # noqa: N802
        """The matrix is symmetric: the transposed solve is the solve."""
        self.apply(pc, b, x)

    def view(self, pc: PETSc.PC, viewer: PETSc.Viewer) -> None:
        """One line: the separator size, V's non-zeros, the set-up time."""
        kind = f"fallback to the redundant LU: {self.fallback}" if self.fallback else f"nnz(V_r) {self.nnz_v}"
        viewer.printfASCII(f"  SchurDD: n_S {self.n_separator}, {kind}, set-up {self.setup_seconds:.2f} s\n")

    # ----------------------------------------------------------- cleanup
    def _free(self) -> None:
        """Free the factorisations, matrices and vectors of the last set-up (collective); keep the sub-solvers."""
        for obj in self._objs:
            obj.destroy()
        self._objs = []
        for ksp in (self._ksp, self._fallback_ksp):
            if ksp is not None:
                ksp.reset()
        self._use_fallback_ksp = False
        self._W = None

    def _destroy_ksps(self) -> None:
        for ksp in (self._ksp, self._fallback_ksp):
            if ksp is not None:
                ksp.destroy()
        self._ksp = self._fallback_ksp = None

    def reset(self, pc: PETSc.PC) -> None:
        """Free the factorisations (collective)."""
        self._free()

    def destroy(self, pc: PETSc.PC) -> None:
        """Destroy every PETSc object of the solver (collective)."""
        self._free()
        self._destroy_ksps()
