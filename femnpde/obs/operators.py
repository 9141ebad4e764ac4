"""Observation operators ``B``: what a misfit observes of a state, and the inner product ``W``.

A misfit ``J = ½ Σ_n w_n (B u^n − d^n)ᵀ W (B u^n − d^n)``
(:class:`femnpde.obs.misfit.QuadraticMisfit`) needs four things of its
observation operator, all on this rank's part of the distributed vectors:

* :meth:`ObservationOperator.apply` -- ``B u`` (the local observations of the
  owned state entries);
* :meth:`ObservationOperator.weight` -- ``W r`` for local observations ``r``;
* :meth:`ObservationOperator.apply_transpose` -- ``Bᵀ y`` on the owned dofs
  (the adjoint right-hand side ``Bᵀ W (B u − d)``);
* :attr:`ObservationOperator.n_local` -- how many observations this rank holds.

Implementations:

* :class:`FieldObservation`: ``B`` = the identity on the owned dofs of the
  solution space, ``W`` = the mass matrix of the domain or of the cells with
  one tag (a subdomain restricts ``W``, not ``B``: the observations are all
  owned dofs, the inner product only integrates over the subdomain);
* :class:`PointObservation`: ``B`` = point evaluation (one row per sensor,
  ``B[k, j] = φ_j(x_k)``, a distributed PETSc AIJ matrix whose row of sensor
  ``k`` lives on the lowest rank whose owned cells contain the point),
  ``W`` = the identity.

An operator owns its PETSc objects (:meth:`destroy` is collective; it is a
context manager).  A user's observation derives from
:class:`ObservationOperator` and plugs into the quadratic misfit.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.geometry
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from femnpde._mpi import tags_present

__all__ = ["ObservationOperator", "FieldObservation", "PointObservation", "same_on_all_ranks"]

#: How many offending points an error message lists.
_MAX_LISTED = 10


# ---------------------------------------------------------------- helpers
def _fmt_point(p: np.ndarray) -> str:
    return "(" + ", ".join(f"{float(c):.6g}" for c in p) + ")"


def _digest(a: np.ndarray) -> bytes:
    """A hash of the shape and bytes of ``a`` (to check replication)."""
    a = np.ascontiguousarray(a)
    h = hashlib.sha1(repr((a.shape, a.dtype.str)).encode())
    h.update(a.tobytes())
    return h.digest()


def same_on_all_ranks(comm: MPI.Comm, a: np.ndarray) -> bool:
    """Whether ``a`` is identical on every rank of ``comm`` (collective)."""
    if comm.size == 1:
        return True
    ref = comm.bcast(_digest(a), root=0)
    return bool(comm.allreduce(int(ref == _digest(a)), op=MPI.MIN))


def _check_points(points: Any, gdim: int, comm: MPI.Comm, label: str) -> np.ndarray:
    """Validate the sensor coordinates: shape ``(n_sensors, gdim)``, finite, replicated."""
    try:
        pts = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{label}: points are not a numeric array: {err}") from err
    if pts.ndim == 1 and gdim == 1:
        pts = pts.reshape(-1, 1)
    if pts.ndim != 2 or pts.shape[1] != gdim:
        raise ValueError(
            f"{label}: points have shape {pts.shape}, expected (n_sensors, gdim) = (n_sensors, {gdim})"
        )
    if pts.shape[0] == 0:
        raise ValueError(f"{label}: no sensor points given")
    bad = np.flatnonzero(~np.all(np.isfinite(pts), axis=1))
    if bad.size:
        raise ValueError(f"{label}: sensor point(s) {bad[:_MAX_LISTED].tolist()} have non-finite coordinates")
    if not same_on_all_ranks(comm, pts):
        raise ValueError(f"{label}: the sensor points differ between ranks; pass the same points on every rank")
    return pts


def _locate_points(mesh, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Owner rank of every point and, for the points owned here, the containing owned cell.

    The owner of a point is the lowest rank among those whose *owned* cells
    contain it (a point on an interface between ranks is found by several).

    Returns:
        ``(owner, cell)``: ``owner`` of shape ``(n_points,)`` (replicated,
        ``-1`` for points outside the mesh) and ``cell`` of shape
        ``(n_points,)`` with the local cell index for points owned by this
        rank (``-1`` elsewhere).
    """
    comm = mesh.comm
    tdim = mesh.topology.dim
    n_cells = mesh.topology.index_map(tdim).size_local
    x3 = np.zeros((pts.shape[0], 3), dtype=mesh.geometry.x.dtype)
    x3[:, : pts.shape[1]] = pts
    cell = np.full(pts.shape[0], -1, dtype=np.int32)
    if n_cells > 0:
        tree = dolfinx.geometry.bb_tree(mesh, tdim, entities=np.arange(n_cells, dtype=np.int32))
        candidates = dolfinx.geometry.compute_collisions_points(tree, x3)
        colliding = dolfinx.geometry.compute_colliding_cells(mesh, candidates, x3)
        for k in range(pts.shape[0]):
            links = colliding.links(k)
            links = links[links < n_cells]
            if links.size:
                cell[k] = links.min()
    mine = np.where(cell >= 0, comm.rank, comm.size).astype(np.int32)
    owner = np.empty_like(mine)
    comm.Allreduce(mine, owner, op=MPI.MIN)
    owner[owner == comm.size] = -1
    cell[owner != comm.rank] = -1
    return owner, cell


def _basis_rows(V, cells: np.ndarray, pts: np.ndarray, label: str) -> tuple[np.ndarray, np.ndarray]:
    """Basis values ``φ_j(x_k)`` and local dof indices of the cells containing the points.

    Returns:
        ``(values, dofs)``, both of shape ``(n_points, n_cell_dofs)``.
    """
    mesh = V.mesh
    gdim = mesh.geometry.dim
    if len(mesh.geometry.cmaps) != 1:
        raise ValueError(f"{label}: meshes with several cell types are not supported")
    cmap = mesh.geometry.cmaps[0]
    gdofs = mesh.geometry.dofmaps[0]
    xg = mesh.geometry.x
    element = V.ufl_element().basix_element
    n_dofs = element.dim
    values = np.empty((len(cells), n_dofs))
    dofs = np.empty((len(cells), n_dofs), dtype=np.int32)
    for i, (c, p) in enumerate(zip(cells, pts)):
        X = cmap.pull_back(np.ascontiguousarray(p.reshape(1, gdim), dtype=xg.dtype), xg[gdofs[c], :gdim])
        values[i] = element.tabulate(0, X)[0, 0, :, 0]
        dofs[i] = V.dofmap.cell_dofs(c)
    return values, dofs


def _check_space(V, label: str) -> None:
    element = V.element
    if V.dofmap.index_map_bs != 1 or tuple(element.value_shape) != ():
        raise ValueError(f"{label}: the solution space must be scalar-valued (block size 1)")
    if element.needs_dof_transformations:
        raise ValueError(f"{label}: elements that need dof transformations are not supported (use a Lagrange space)")


# ------------------------------------------------------------- interface
class ObservationOperator(ABC):
    """The observation operator ``B`` of a state and the inner product ``W`` of observations.

    Vectors are this rank's parts: states are the owned dofs of the solution
    space, observations the :attr:`n_local` observations held here.  The
    arrays returned may be views of internal buffers, valid until the next
    call of the same operator.  All methods are collective (they may call
    PETSc products).
    """

    #: The communicator of the problem.
    comm: Any
    #: The number of observations held by this rank.
    n_local: int

    @abstractmethod
    def apply(self, u_owned: np.ndarray) -> np.ndarray:
        """``B u``: this rank's observations of the owned state entries."""

    @abstractmethod
    def weight(self, r: np.ndarray) -> np.ndarray:
        """``W r`` for this rank's observations ``r`` (the inner product of observations)."""

    @abstractmethod
    def apply_transpose(self, y: np.ndarray) -> np.ndarray:
        """``Bᵀ y`` on the owned dofs, for this rank's observations ``y``."""

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""

    def _destroy_attributes(self, *names: str) -> None:
        """Destroy the PETSc objects held in the attributes ``names`` and set them to None (collective)."""
        for name in names:
            obj = getattr(self, name)
            if obj is not None:
                obj.destroy()
            setattr(self, name, None)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


# ------------------------------------------------------------------ field
class FieldObservation(ObservationOperator):
    """The whole field: ``B`` = identity on the owned dofs, ``W`` = the mass matrix.

    ``rᵀ W r = ∫_Ω r² dx`` over the domain, or over the cells tagged ``tag``
    when ``subdomain=(cell_tags, tag)`` (the mass matrix of that subdomain,
    assembled once).

    Args:
        V: The solution space.
        subdomain: Optional ``(cell_tags, tag)`` restricting the inner product.
        label: The name errors are reported under.

    Raises:
        ValueError: The tag is not a cell tag of the mesh.
    """

    def __init__(
        self, V: dolfinx.fem.FunctionSpace, subdomain: tuple | None = None, label: str = "FieldObservation"
    ) -> None:
        self.comm = V.mesh.comm
        self.n_local = V.dofmap.index_map.size_local * V.dofmap.index_map_bs
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        if subdomain is None:
            dx = ufl.dx
        else:
            tags, tag = subdomain
            present = tags_present(tags, self.comm)
            if int(tag) not in present:
                raise ValueError(f"{label}: cell tag {tag} not found in the mesh; tags present: {present}")
            dx = ufl.Measure("dx", domain=V.mesh, subdomain_data=tags)(int(tag))
        self._M = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(u * v * dx))
        self._M.assemble()
        self._r, self._Wr = self._M.createVecs()

    @property
    def M(self) -> PETSc.Mat:
        """The mass matrix ``W``."""
        return self._M

    def apply(self, u_owned: np.ndarray) -> np.ndarray:
        """``B u = u`` (the owned entries themselves)."""
        return u_owned

    def weight(self, r: np.ndarray) -> np.ndarray:
        """``M r``."""
        self._r.array_w[:] = r
        self._M.mult(self._r, self._Wr)
        return self._Wr.array_r

    def apply_transpose(self, y: np.ndarray) -> np.ndarray:
        """``Bᵀ y = y``."""
        return y

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        self._destroy_attributes("_M", "_r", "_Wr")


# ----------------------------------------------------------------- points
class PointObservation(ObservationOperator):
    """Point evaluation at sensors: ``(B u)_k = u(x_k)``, ``W`` = the identity.

    ``B`` (``n_sensors × N``, ``N`` the global number of dofs of ``V``,
    ``B[k, j] = φ_j(x_k)``) is assembled once as a PETSc AIJ matrix whose row
    of sensor ``k`` lives on the rank owning the point (the lowest rank whose
    owned cells contain it).  PETSc orders the rows by owner rank
    (:attr:`sensor_of_row`); this rank's observations are those of
    :attr:`local_sensors`, in increasing sensor order.

    Args:
        V: The solution space (scalar Lagrange).
        points: Sensor coordinates, shape ``(n_sensors, gdim)``, identical on
            all ranks.
        label: The name errors are reported under.

    Raises:
        ValueError: A point lies outside the mesh (the message lists each
            such point's index and coordinates), the points have the wrong
            shape or differ between ranks, or the space is not supported.
    """

    def __init__(self, V: dolfinx.fem.FunctionSpace, points: Any, label: str = "PointObservation") -> None:
        self.V = V
        self.comm = V.mesh.comm
        _check_space(V, label)
        mesh = V.mesh
        self.points = _check_points(points, mesh.geometry.dim, self.comm, label)
        self.points.setflags(write=False)
        self.n_sensors = self.points.shape[0]
        owner, cell = _locate_points(mesh, self.points)
        outside = np.flatnonzero(owner < 0)
        if outside.size:
            listed = ", ".join(f"#{k} at {_fmt_point(self.points[k])}" for k in outside[:_MAX_LISTED])
            more = f" and {outside.size - _MAX_LISTED} more" if outside.size > _MAX_LISTED else ""
            raise ValueError(
                f"{label}: {outside.size} sensor point(s) outside the mesh: {listed}{more}; "
                "every sensor must lie in the domain (or on its boundary)"
            )
        self.owner = owner
        self.owner.setflags(write=False)
        #: Sensors whose row this rank owns, in increasing index order.
        self.local_sensors = np.flatnonzero(owner == self.comm.rank)
        self.n_local = int(self.local_sensors.size)
        #: Row r of B (global PETSc numbering) observes sensor ``sensor_of_row[r]``.
        self.sensor_of_row = np.argsort(owner, kind="stable")
        #: How many rows each rank owns.
        self.counts = np.bincount(owner, minlength=self.comm.size).astype(np.int64)
        self._B = self._assemble(cell, label)
        self._u, self._y = self._B.createVecs()
        self._z = self._B.createVecs(side="right")

    def _assemble(self, cell: np.ndarray, label: str) -> PETSc.Mat:
        V = self.V
        imap = V.dofmap.index_map
        local = self.local_sensors
        values, dofs = _basis_rows(V, cell[local], self.points[local], label)
        n_rows = local.size
        n_per_row = values.shape[1] if n_rows else 0
        cols = imap.local_to_global(dofs.reshape(-1)).reshape(n_rows, n_per_row).astype(PETSc.IntType)
        order = np.argsort(cols, axis=1, kind="stable")
        cols = np.take_along_axis(cols, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        indptr = np.arange(n_rows + 1, dtype=PETSc.IntType) * n_per_row
        B = PETSc.Mat().createAIJ(
            size=((n_rows, self.n_sensors), (imap.size_local, imap.size_global)),
            csr=(indptr, cols.reshape(-1), values.reshape(-1).astype(PETSc.ScalarType)),
            comm=self.comm,
        )
        B.assemble()
        return B

    @property
    def B(self) -> PETSc.Mat:
        """The operator as a PETSc matrix (rows in owner-rank order, see :attr:`sensor_of_row`)."""
        return self._B

    def apply(self, u_owned: np.ndarray) -> np.ndarray:
        """``B u`` on the rows owned here (a read-only view valid until the next product)."""
        self._u.array_w[:] = u_owned
        self._B.mult(self._u, self._y)
        return self._y.array_r

    def weight(self, r: np.ndarray) -> np.ndarray:
        """``W r = r``."""
        return r

    def apply_transpose(self, y: np.ndarray) -> np.ndarray:
        """``Bᵀ y`` on the owned dofs (a read-only view valid until the next product)."""
        self._y.array_w[:] = y
        self._B.multTranspose(self._y, self._z)
        return self._z.array_r

    def gather(self, local: np.ndarray) -> np.ndarray:
        """Rows owned here, shape ``(m, n_local)`` -> all sensors ``(m, n_sensors)`` on every rank."""
        m = local.shape[0]
        rows = np.empty((self.n_sensors, m))
        send = np.ascontiguousarray(local.T)
        counts = [int(c) * m for c in self.counts]
        displs = [0, *np.cumsum(counts)[:-1].tolist()]
        self.comm.Allgatherv(send, [rows, counts, displs, MPI.DOUBLE])
        out = np.empty((m, self.n_sensors))
        out[:, self.sensor_of_row] = rows.T
        return out

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        self._destroy_attributes("_B", "_u", "_y", "_z")
