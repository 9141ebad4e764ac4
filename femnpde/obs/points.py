"""Sensor-point observations: ``J = ½ Σ_n w_n Δt Σ_k (u^n(x_k) − d^n_k)²``.

:class:`PointMisfit` has the interface of :class:`femnpde.obs.misfit.L2Misfit`
(it is a :class:`femnpde.obs.misfit.Misfit`), so it plugs into
:class:`femnpde.model.reduced.ReducedFunctional` unchanged.  Point evaluation is a
linear map: the observation operator ``B`` (one row per sensor, one column
per global dof of the solution space, ``B[k, j] = φ_j(x_k)``) is assembled
once as a distributed PETSc AIJ matrix.  Each sensor row is owned by exactly
one rank: the lowest rank whose owned cells contain the point.  Then

* the observations are ``B u^n``;
* the loss gradient is ``∂J/∂u^n = w_n Δt Bᵀ (B u^n − d^n)`` — point sources
  in the adjoint equation.

Sensor points and data are replicated (identical on all ranks); the
observations returned by :meth:`PointMisfit.observe` are replicated as well.

Data files: :mod:`femnpde.io.pointdata`; noise: :func:`femnpde.obs.noise.add_noise`.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np
import dolfinx.fem
import dolfinx.geometry
from mpi4py import MPI
from petsc4py import PETSc

from femnpde.io.pointdata import load_point_data, save_point_data
from femnpde.obs.misfit import Misfit, TimeWeights, time_weights
from femnpde.obs.noise import add_noise
from femnpde.fem.problem import ParabolicProblem

__all__ = ["PointMisfit", "synthetic_point_data", "add_noise", "load_point_data", "save_point_data"]

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


def _same_on_all_ranks(comm: MPI.Comm, a: np.ndarray) -> bool:
    """Whether ``a`` is identical on every rank of ``comm`` (collective)."""
    if comm.size == 1:
        return True
    ref = comm.bcast(_digest(a), root=0)
    return bool(comm.allreduce(int(ref == _digest(a)), op=MPI.MIN))


def _check_points(points: Any, gdim: int, comm: MPI.Comm) -> np.ndarray:
    """Validate the sensor coordinates: shape ``(n_sensors, gdim)``, finite, replicated."""
    try:
        pts = np.array(points, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise ValueError(f"PointMisfit: points are not a numeric array: {err}") from err
    if pts.ndim == 1 and gdim == 1:
        pts = pts.reshape(-1, 1)
    if pts.ndim != 2 or pts.shape[1] != gdim:
        raise ValueError(
            f"PointMisfit: points have shape {pts.shape}, expected (n_sensors, gdim) = (n_sensors, {gdim})"
        )
    if pts.shape[0] == 0:
        raise ValueError("PointMisfit: no sensor points given")
    bad = np.flatnonzero(~np.all(np.isfinite(pts), axis=1))
    if bad.size:
        raise ValueError(f"PointMisfit: sensor point(s) {bad[:_MAX_LISTED].tolist()} have non-finite coordinates")
    if not _same_on_all_ranks(comm, pts):
        raise ValueError("PointMisfit: the sensor points differ between ranks; pass the same points on every rank")
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


def _basis_rows(V, cells: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Basis values ``φ_j(x_k)`` and local dof indices of the cells containing the points.

    Returns:
        ``(values, dofs)``, both of shape ``(n_points, n_cell_dofs)``.
    """
    mesh = V.mesh
    gdim = mesh.geometry.dim
    if len(mesh.geometry.cmaps) != 1:
        raise ValueError("PointMisfit: meshes with several cell types are not supported")
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


def _check_space(V) -> None:
    element = V.element
    if V.dofmap.index_map_bs != 1 or tuple(element.value_shape) != ():
        raise ValueError("PointMisfit: the solution space must be scalar-valued (block size 1)")
    if element.needs_dof_transformations:
        raise ValueError("PointMisfit: elements that need dof transformations are not supported (use a Lagrange space)")


# ------------------------------------------------------------ PointMisfit
class PointMisfit(Misfit):
    """``J = ½ Σ_n w_n Δt Σ_k (u^n(x_k) − d^n_k)²`` over sensor points and observed levels.

    The observation operator ``B`` (``n_sensors × N`` with ``N`` the global
    number of dofs of ``problem.V``, ``B[k, j] = φ_j(x_k)``) is assembled once
    as a PETSc AIJ matrix whose row of sensor ``k`` lives on the rank owning
    the point (the lowest rank whose owned cells contain it).  PETSc orders
    the rows by owner rank (see :attr:`sensor_of_row`); everything this class
    returns is in sensor order.

    All methods taking states are collective (they call PETSc products on
    the problem's communicator).

    Args:
        problem: The PDE problem (its solution space is observed).
        points: Sensor coordinates, shape ``(n_sensors, gdim)``, identical on
            all ranks.
        data: Observed values ``d^n_k``, shape ``(n_steps + 1, n_sensors)``,
            identical on all ranks; ``None`` to set them later with
            :meth:`set_data` (e.g. for :func:`synthetic_point_data`).  Levels
            that are not observed are ignored (they may hold ``nan``).
        weights: Time weights (default: every level, weight 1).

    Raises:
        ValueError: A point lies outside the mesh (the message lists each
            such point's index and coordinates), the arrays have the wrong
            shape, or they differ between ranks.
    """

    def __init__(
        self,
        problem: ParabolicProblem,
        points: np.ndarray,
        data: np.ndarray | None = None,
        weights: TimeWeights | None = None,
    ) -> None:
        self.problem = problem
        self.comm = problem.comm
        V = problem.V
        _check_space(V)
        mesh = problem.mesh
        self.points = _check_points(points, mesh.geometry.dim, self.comm)
        self.points.setflags(write=False)
        self.n_sensors = self.points.shape[0]
        self.n_levels = problem.time.n_steps + 1
        self.weights_spec = weights if weights is not None else TimeWeights()
        self.w = time_weights(problem.time.n_steps, self.weights_spec) * problem.time.dt
        self._observed = np.flatnonzero(self.w)

        owner, cell = _locate_points(mesh, self.points)
        outside = np.flatnonzero(owner < 0)
        if outside.size:
            listed = ", ".join(f"#{k} at {_fmt_point(self.points[k])}" for k in outside[:_MAX_LISTED])
            more = f" and {outside.size - _MAX_LISTED} more" if outside.size > _MAX_LISTED else ""
            raise ValueError(
                f"PointMisfit: {outside.size} sensor point(s) outside the mesh: {listed}{more}; "
                "every sensor must lie in the domain (or on its boundary)"
            )
        self.owner = owner
        self.owner.setflags(write=False)
        #: Sensors whose row this rank owns, in increasing index order.
        self.local_sensors = np.flatnonzero(owner == self.comm.rank)
        #: Row r of B (global PETSc numbering) observes sensor ``sensor_of_row[r]``.
        self.sensor_of_row = np.argsort(owner, kind="stable")
        self._counts = np.bincount(owner, minlength=self.comm.size).astype(np.int64)
        self._B = self._assemble(cell)
        self._u, self._y = self._B.createVecs()
        self._z = self._B.createVecs(side="right")
        self._data: np.ndarray | None = None
        self._data_local: np.ndarray | None = None
        self._max_abs: float | None = None
        if data is not None:
            self.set_data(data)

    # ------------------------------------------------------------ building
    def _assemble(self, cell: np.ndarray) -> PETSc.Mat:
        V = self.problem.V
        imap = V.dofmap.index_map
        local = self.local_sensors
        values, dofs = _basis_rows(V, cell[local], self.points[local])
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
        """The observation operator (rows in owner-rank order, see :attr:`sensor_of_row`)."""
        return self._B

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        for obj in (self._B, self._u, self._y, self._z):
            if obj is not None:
                obj.destroy()
        self._B = self._u = self._y = self._z = None

    # ---------------------------------------------------------------- data
    @property
    def data(self) -> np.ndarray | None:
        """The observed values, shape ``(n_steps + 1, n_sensors)`` (read-only), or None."""
        return self._data

    def set_data(self, data: np.ndarray) -> None:
        """Set the observed values.

        Args:
            data: Shape ``(n_steps + 1, n_sensors)``, identical on all ranks
                (collective check).  Values at observed levels must be finite;
                unobserved levels are ignored.

        Raises:
            ValueError: Wrong shape, non-finite values at observed levels, or
                data that differ between ranks.
        """
        try:
            arr = np.array(data, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise ValueError(f"PointMisfit: data are not a numeric array: {err}") from err
        expected = (self.n_levels, self.n_sensors)
        if arr.shape != expected:
            raise ValueError(
                f"PointMisfit: data have shape {arr.shape}, expected (n_steps + 1, n_sensors) = {expected}"
            )
        obs = arr[self._observed]
        if not np.all(np.isfinite(obs)):
            i, k = np.argwhere(~np.isfinite(obs))[0]
            n = int(self._observed[i])
            count = int(np.sum(~np.isfinite(obs)))
            raise ValueError(
                f"PointMisfit: data hold {count} non-finite value(s) at observed time levels, first at level {n}, "
                f"sensor {int(k)} ({arr[n, k]}); unobserved levels may be nan, observed ones may not"
            )
        if not _same_on_all_ranks(self.comm, arr):
            raise ValueError("PointMisfit: the data differ between ranks; pass the same data on every rank")
        arr.setflags(write=False)
        self._data = arr
        self._data_local = np.ascontiguousarray(arr[:, self.local_sensors])
        self._max_abs = None

    def _residual(self, n: int, u_owned: np.ndarray) -> np.ndarray:
        return self._apply_local(u_owned) - self._data_local[n]

    def _local_value(self, n: int, u_owned: np.ndarray) -> float:
        r = self._residual(n, u_owned)
        return float(np.dot(r, r))

    def _check_ready(self, what: str) -> None:
        self._require_data(what)

    def _require_data(self, what: str) -> None:
        if self._data is None:
            raise RuntimeError(f"PointMisfit.{what}: no data set; pass data to the constructor or call set_data()")

    # ----------------------------------------------------------- products
    def _apply_local(self, u_owned: np.ndarray) -> np.ndarray:
        """``(B u)`` on the rows owned here (collective); a read-only view valid until the next product."""
        self._u.array_w[:] = u_owned
        self._B.mult(self._u, self._y)
        return self._y.array_r

    def _gather(self, local: np.ndarray) -> np.ndarray:
        """Rows owned here, shape ``(m, n_local_rows)`` -> all sensors ``(m, n_sensors)`` on every rank."""
        m = local.shape[0]
        rows = np.empty((self.n_sensors, m))
        send = np.ascontiguousarray(local.T)
        counts = [int(c) * m for c in self._counts]
        displs = [0, *np.cumsum(counts)[:-1].tolist()]
        self.comm.Allgatherv(send, [rows, counts, displs, MPI.DOUBLE])
        out = np.empty((m, self.n_sensors))
        out[:, self.sensor_of_row] = rows.T
        return out

    def _owned(self, u: np.ndarray) -> np.ndarray:
        n_owned = self.problem.n_owned
        imap = self.problem.V.dofmap.index_map
        if u.shape[-1] not in (n_owned, n_owned + imap.num_ghosts):
            raise ValueError(
                f"PointMisfit.observe: a state has {u.shape[-1]} entries, expected {n_owned} (owned) or "
                f"{n_owned + imap.num_ghosts} (owned and ghosts) on rank {self.comm.rank}"
            )
        return u[..., :n_owned]

    def observe(self, u: Any) -> np.ndarray:
        """Point values ``B u`` in sensor order, identical on all ranks (collective).

        Args:
            u: A state storage (``load(n)`` for n = 0..n_steps, e.g.
                ``solver.states``), a Function on the solution space, or an
                array of local values (owned, or owned and ghosts) of one
                state (1D) or of several states (2D, one per row).

        Returns:
            Shape ``(n_steps + 1, n_sensors)`` for a storage, ``(n_sensors,)``
            for one state, ``(m, n_sensors)`` for ``m`` states.
        """
        if hasattr(u, "load"):
            local = np.empty((self.n_levels, self.local_sensors.size))
            for n in range(self.n_levels):
                local[n] = self._apply_local(self._owned(u.load(n)))
            return self._gather(local)
        if isinstance(u, dolfinx.fem.Function):
            u = u.x.array
        arr = np.asarray(u, dtype=np.float64)
        if arr.ndim == 1:
            return self._gather(self._apply_local(self._owned(arr)).reshape(1, -1))[0]
        if arr.ndim == 2:
            states = self._owned(arr)
            local = np.empty((arr.shape[0], self.local_sensors.size))
            for i, s in enumerate(states):
                local[i] = self._apply_local(s)
            return self._gather(local)
        raise ValueError(
            f"PointMisfit.observe: expected a state storage, a Function or a 1D/2D array, got shape {arr.shape}"
        )

    # --------------------------------------------------------- misfit API
    def add_gradient(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> None:
        """Add ``∂J/∂u^n = w_n Δt Bᵀ (B u^n − d^n)`` to the owned entries ``out`` (collective)."""
        if self.w[n] == 0.0:
            return
        self._require_data("add_gradient")
        self._u.array_w[:] = u_owned
        self._B.mult(self._u, self._y)
        y = self._y.array_w
        y -= self._data_local[n]
        y *= self.w[n]
        self._B.multTranspose(self._y, self._z)
        out += self._z.array_r

    def max_abs_data(self) -> float:
        """``max |d|`` over the observed levels and all sensors (the RMSE normalisation of sensors)."""
        self._require_data("max_abs_data")
        if self._max_abs is None:
            obs = self._data[self._observed]
            self._max_abs = float(np.max(np.abs(obs))) if obs.size else 0.0
        return self._max_abs

# ------------------------------------------------------------ utilities
def synthetic_point_data(problem: ParabolicProblem, states, points: np.ndarray) -> np.ndarray:
    """Observe a forward solution at sensor points (collective).

    Args:
        problem: The problem the states belong to.
        states: A state storage with levels 0..n_steps (e.g. ``solver.forward(g)``).
        points: Sensor coordinates, shape ``(n_sensors, gdim)``, identical on all ranks.

    Returns:
        ``u^n(x_k)``, shape ``(n_steps + 1, n_sensors)``, identical on all ranks.
    """
    misfit = PointMisfit(problem, points)
    try:
        return misfit.observe(states)
    finally:
        misfit.destroy()
