"""The step Jacobian ``A_bc + ∂N/∂u`` on any number of ranks without PETSc's per-cell insertion.

:class:`~femnpde.fem.newton.NonlinearStep` needs the exact step Jacobian at
every adjoint step and at every Newton iteration (Krylov path) or refresh of
the lagged Newton matrix (chord): the constant part ``A_bc`` (Dirichlet rows
identity) plus the nonlinear remainder's derivative ``∂N/∂u`` with its
Dirichlet rows and columns dropped.  Assembled through PETSc's
``MatSetValuesLocal`` cell by cell, ``∂N/∂u`` costs about twice its assembly
into DOLFINx's own CSR matrix on one and on two ranks
(``bench/jacobian_assembly.py``).  :class:`CSRJacobian` therefore assembles
``∂N/∂u`` into a :class:`dolfinx.la.MatrixCSR` (owned and ghost rows, no
communication) and then:

* on one rank, adds its values through a position map computed once into the
  value arrays of AIJ matrices that share their memory with numpy
  (``MatCreateSeqAIJWithArrays``);
* on several ranks, writes ``M`` with one ``MatSetValuesCOO``: the matrix is
  preallocated once with the global (row, column) pairs of ``A_bc``'s owned
  entries followed by the CSR matrix's entries (those in a Dirichlet row or
  column get row -1, which PETSc ignores), and each assembly passes the values
  ``[A_bc, ∂N/∂u]``; PETSc sums the duplicate pairs and sends the ghost rows'
  entries to their owners (a star forest built once).  The COO path costs
  ~6 ms more than the in-place one per assembly at 205 761 dofs on one rank.

On one rank every entry is ``A_bc + ∂N/∂u`` with ``∂N/∂u`` summed in cell
order, so the matrix is bitwise the PETSc path's; on several ranks an entry
of a row shared between ranks sums the owner's and the other rank's cell
contributions in another order than PETSc's stash (round-off).
"""

from __future__ import annotations

import numpy as np
import dolfinx.fem
import dolfinx.la
from dolfinx import cpp as _cpp
from dolfinx.fem import pack_coefficients, pack_constants
from mpi4py import MPI
from petsc4py import PETSc

__all__ = ["CSRJacobian", "make_csr_jacobian"]


class CSRJacobian:
    """``M = A_bc + ∂N/∂u`` (Dirichlet rows and columns of ``∂N/∂u`` dropped) into matrices it creates.

    Args:
        A_bc: The constant part with Dirichlet rows identity, on the full
            Jacobian's sparsity (an AIJ matrix).
        form: The compiled bilinear form ``∂N/∂u``.
        csr: Its :class:`dolfinx.la.MatrixCSR` (from :func:`dolfinx.fem.create_matrix`, block size 1).
        is_bc_row: For each local row of ``csr`` (owned and ghost), whether it is a Dirichlet dof.
        is_bc_col: The same for its local columns.
    """

    def __init__(self, A_bc: PETSc.Mat, form, csr, is_bc_row: np.ndarray, is_bc_col: np.ndarray) -> None:
        self._form = form
        self._csr = csr
        self._sizes = A_bc.getSizes()
        self._comm = A_bc.getComm()
        self._row_start = A_bc.getOwnershipRange()[0]
        indptr, indices, values = A_bc.getValuesCSR()
        self._a_indptr = np.asarray(indptr, dtype=PETSc.IntType)
        self._a_indices = np.asarray(indices, dtype=PETSc.IntType)
        self._n_a = self._a_indices.size
        rmap, cmap = csr.index_map(0), csr.index_map(1)
        n_rows = rmap.size_local + rmap.num_ghosts
        n_indptr = np.asarray(csr.indptr, dtype=np.int64)
        self._rows = np.repeat(np.arange(n_rows, dtype=np.int32), np.diff(n_indptr[: n_rows + 1]))  # local
        self._cols = np.asarray(csr.indices, dtype=np.int32)[: self._rows.size]  # local
        self._dropped = np.flatnonzero(is_bc_row[self._rows] | is_bc_col[self._cols])
        self._pos = self._serial_positions() if self._comm.getSize() == 1 else None
        if self._pos is not None:  # in place: A_bc's values, and each matrix's value array
            self._base = np.array(values, dtype=PETSc.ScalarType)
            self._arrays: dict[int, np.ndarray] = {}
        else:  # COO: [A_bc, ∂N/∂u]
            self._values = np.zeros(self._n_a + csr.data.size, dtype=PETSc.ScalarType)
            self._values[: self._n_a] = values

    def _serial_positions(self) -> np.ndarray | None:
        """One rank: each CSR entry's index in A_bc's values (an empty array: the same pattern and order), or
        None if an entry lies outside A_bc's pattern (then the COO path takes the union)."""
        n = self._sizes[0][0]
        if self._rows.size != self._csr.data.size:
            return None
        a_rows = np.repeat(np.arange(n, dtype=np.int64), np.diff(self._a_indptr))
        a_keys = a_rows * n + self._a_indices
        n_keys = self._rows.astype(np.int64) * n + self._cols
        if a_keys.size and np.any(np.diff(a_keys) <= 0):
            return None
        pos = np.searchsorted(a_keys, n_keys)
        if np.any(pos >= a_keys.size) or not np.array_equal(a_keys[np.minimum(pos, a_keys.size - 1)], n_keys):
            return None
        if pos.size == a_keys.size and np.array_equal(pos, np.arange(pos.size)):
            return np.zeros(0, dtype=np.int64)
        return pos.astype(np.int64)

    def _coo(self) -> tuple[np.ndarray, np.ndarray]:
        """The global (row, column) pairs of ``[A_bc, ∂N/∂u]``; -1 rows for ∂N/∂u's Dirichlet entries."""
        n_a_rows = self._a_indptr.size - 1
        a_rows = self._row_start + np.repeat(np.arange(n_a_rows, dtype=np.int64), np.diff(self._a_indptr))
        csr = self._csr
        n_rows = csr.index_map(0).local_to_global(self._rows).astype(np.int64)
        n_cols = csr.index_map(1).local_to_global(self._cols).astype(np.int64)
        n_rows[self._dropped] = -1
        rows = np.concatenate([a_rows, n_rows]).astype(PETSc.IntType)
        cols = np.concatenate([self._a_indices, n_cols]).astype(PETSc.IntType)
        return rows, cols

    def create_matrix(self, prefix: str) -> PETSc.Mat:
        """A new AIJ matrix equal to ``A_bc`` whose values :meth:`assemble_into` sets (collective)."""
        if self._pos is not None:
            values = self._base.copy()
            M = PETSc.Mat().createAIJWithArrays(self._sizes, (self._a_indptr, self._a_indices, values),
                                                comm=PETSc.COMM_SELF)
            M.setOptionsPrefix(prefix)
            M.assemble()
            self._arrays[M.handle] = values
            return M
        M = PETSc.Mat().create(comm=self._comm)
        M.setSizes(self._sizes)
        M.setType(PETSc.Mat.Type.AIJ)
        M.setOptionsPrefix(prefix)
        rows, cols = self._coo()
        M.setPreallocationCOO(rows, cols)
        self._values[self._n_a:] = 0.0
        M.setValuesCOO(self._values, addv=PETSc.InsertMode.INSERT_VALUES)
        return M

    def assemble_csr(self) -> None:
        """∂N/∂u at the current coefficients into the CSR matrix (owned and ghost rows; local work only)."""
        form, data = self._form, self._csr.data
        data[:] = 0.0
        _cpp.fem.assemble_matrix(self._csr._cpp_object, form._cpp_object, pack_constants(form),
                                 pack_coefficients(form), [])

    def set_values(self, M: PETSc.Mat) -> None:
        """``M = A_bc +`` the CSR matrix's ∂N/∂u (collective: on several ranks ghost rows go to their owners)."""
        data = self._csr.data
        if self._pos is not None:
            values = self._arrays[M.handle]
            data[self._dropped] = 0.0
            if self._pos.size == 0:
                np.add(self._base, data, out=values)
            else:
                np.copyto(values, self._base)
                values[self._pos] += data
            M.assemble()  # new values: the object state changes, a factorisation of M is redone
            return
        self._values[self._n_a:] = data
        M.setValuesCOO(self._values, addv=PETSc.InsertMode.INSERT_VALUES)  # new state, as assemble()

    def assemble_into(self, M: PETSc.Mat) -> None:
        """``M = A_bc + ∂N/∂u`` at the current coefficients (``M`` from :meth:`create_matrix`; collective)."""
        self.assemble_csr()
        self.set_values(M)

    def forget(self, M: PETSc.Mat) -> None:
        """Drop what this object keeps of ``M`` (before destroying it)."""
        if self._pos is not None:
            self._arrays.pop(M.handle, None)


def _dirichlet_marker(imap, bc_owned: np.ndarray) -> np.ndarray:
    """For each local index (owned and ghost) of ``imap``, whether it is an owned Dirichlet dof somewhere.

    ``imap`` owns the rows the function space's index map owns (its ghosts may differ: the CSR matrix's column
    map also holds the columns of entries other ranks contribute to owned rows); the owners tell the ghosts.
    """
    mark = dolfinx.la.vector(imap, dtype=np.float64)
    mark.array[:] = 0.0
    mark.array[bc_owned] = 1.0
    mark.scatter_forward()
    return mark.array > 0.5


def make_csr_jacobian(A_bc: PETSc.Mat, form, bc_owned: np.ndarray, V) -> CSRJacobian | None:
    """A :class:`CSRJacobian`, or None where it does not apply (no ``∂N/∂u``, a blocked layout; collective).

    Args:
        A_bc: The constant part of the Jacobian (Dirichlet rows identity).
        form: The compiled ``∂N/∂u`` (None when the residual is affine in u).
        bc_owned: Local indices of the owned Dirichlet dofs (the rows and columns dropped).
        V: The function space of the rows and columns.
    """
    if form is None or A_bc.getType() not in (PETSc.Mat.Type.SEQAIJ, PETSc.Mat.Type.MPIAIJ):
        return None
    if V.dofmap.index_map_bs != 1:
        return None
    csr = dolfinx.fem.create_matrix(form)
    n_owned = V.dofmap.index_map.size_local
    rmap, cmap = csr.index_map(0), csr.index_map(1)
    fits = (list(csr.block_size) == [1, 1] and A_bc.getSizes()[0][0] == n_owned
            and rmap.size_local == n_owned and cmap.size_local == n_owned)
    if not A_bc.getComm().tompi4py().allreduce(fits, op=MPI.LAND):
        return None
    is_bc_row, is_bc_col = _dirichlet_marker(rmap, bc_owned), _dirichlet_marker(cmap, bc_owned)
    return CSRJacobian(A_bc, form, csr, is_bc_row, is_bc_col)
