"""Sensor-point observations: ``J = ½ Σ_n w_n Δt Σ_k (u^n(x_k) − d^n_k)²``.

:class:`PointMisfit` has the interface of :class:`femnpde.obs.misfit.L2Misfit`
(``value``, ``add_gradient``, ``max_abs_data``, ``relative_rmse``,
``relative_max_error``, ``destroy``), so it plugs into
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

Data files (:func:`load_point_data`, :func:`save_point_data`):

* ``.npz`` — array ``values`` of shape ``(n_levels, n_sensors)`` (required)
  and array ``points`` of shape ``(n_sensors, gdim)`` (optional).
* ``.csv`` — comma-separated text, one row per time level::

      t,s0,s1,s2
      x,0.10,0.25,0.40
      y,0.50,0.50,0.75
      0.0,0.012,0.020,0.007
      0.25,0.015,0.031,0.009
      ...

  The header's first cell is ``t``; the other header cells name the sensors
  (any labels).  Optional coordinate rows, labelled ``x``, ``y`` (and ``z``)
  in this order, directly after the header, give the sensor positions.
  Every further row is one time level: its time, then one value per sensor.
  Blank lines and lines starting with ``#`` are ignored.

In both formats a value ``nan`` marks a level without data; such levels must
not be observed (see :class:`femnpde.obs.misfit.TimeWeights`).
"""

from __future__ import annotations

import csv
import hashlib
import io
import math
import numbers
import os
import zipfile
from typing import Any

import numpy as np
import dolfinx.fem
import dolfinx.geometry
from mpi4py import MPI
from petsc4py import PETSc

from femnpde.obs.misfit import TimeWeights, time_weights
from femnpde.fem.problem import ParabolicProblem

__all__ = [
    "PointMisfit",
    "synthetic_point_data",
    "add_noise",
    "load_point_data",
    "save_point_data",
]

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
class PointMisfit:
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
    def value(self, states) -> float:
        """The loss of the states in ``states`` (one allreduce)."""
        self._require_data("value")
        n_owned = self.problem.n_owned
        local = 0.0
        for n in self._observed:
            local += self.level_value(n, states.load(n)[:n_owned])
        return self.comm.allreduce(local, op=MPI.SUM)

    def level_value(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's part of level n's loss term (0 for unobserved levels; no communication)."""
        if self.w[n] == 0.0:
            return 0.0
        self._require_data("level_value")
        r = self._apply_local(u_owned) - self._data_local[n]
        return 0.5 * self.w[n] * float(np.dot(r, r))

    def level_max_error(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's ``max_k |u^n(x_k) − d^n_k|`` (0 for unobserved levels; no communication)."""
        if self.w[n] == 0.0:
            return 0.0
        self._require_data("level_max_error")
        r = self._apply_local(u_owned) - self._data_local[n]
        return float(np.max(np.abs(r), initial=0.0))

    def relative_from_max_error(self, local: float) -> float:
        """Reduce this rank's largest level error over the ranks and divide by ``max|d|``."""
        glob = self.comm.allreduce(local, op=MPI.MAX)
        m = self.max_abs_data()
        return glob / m if m > 0 else float("nan")

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
        """``max |d|`` over the observed levels and all sensors (the RMSE normalisation)."""
        self._require_data("max_abs_data")
        if self._max_abs is None:
            obs = self._data[self._observed]
            self._max_abs = float(np.max(np.abs(obs))) if obs.size else 0.0
        return self._max_abs

    def relative_rmse(self, loss: float) -> float:
        """``sqrt(J) / max|d|``."""
        m = self.max_abs_data()
        return float(np.sqrt(max(loss, 0.0)) / m) if m > 0 else float("nan")

    def relative_max_error(self, states) -> float:
        """``max_{n,k} |u^n(x_k) − d^n_k| / max|d|`` over the observed levels (one allreduce)."""
        self._require_data("relative_max_error")
        n_owned = self.problem.n_owned
        local = 0.0
        for n in self._observed:
            local = max(local, self.level_max_error(n, states.load(n)[:n_owned]))
        return self.relative_from_max_error(local)


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


def add_noise(data: np.ndarray, relative_std: float, seed: int) -> np.ndarray:
    """``data`` plus Gaussian noise with standard deviation ``relative_std · max|data|``.

    The noise depends only on ``seed`` and the shape of ``data``, so it is
    reproducible and identical on all ranks.  ``nan`` entries (unobserved
    levels) stay ``nan`` and are ignored in ``max|data|``.

    Args:
        data: The clean data.
        relative_std: Noise level relative to ``max|data|`` (>= 0).
        seed: Seed of the random generator.

    Returns:
        A new array of the same shape.
    """
    if not isinstance(relative_std, numbers.Real) or not math.isfinite(relative_std) or relative_std < 0:
        raise ValueError(f"add_noise: relative_std={relative_std!r} must be a finite number >= 0")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool):
        raise TypeError(f"add_noise: seed={seed!r} must be an integer")
    arr = np.array(data, dtype=np.float64)
    finite = np.abs(arr[np.isfinite(arr)])
    scale = float(relative_std) * (float(finite.max()) if finite.size else 0.0)
    rng = np.random.default_rng(int(seed))
    return arr + scale * rng.standard_normal(arr.shape)


# ---------------------------------------------------------------- files
def _file_error(path: str, message: str) -> ValueError:
    return ValueError(f"point data file {path!r}: {message}")


def _load_npz(path: str) -> tuple[np.ndarray | None, np.ndarray]:
    try:
        archive = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
        raise _file_error(path, f"not a readable .npz archive ({err})") from err
    if not isinstance(archive, np.lib.npyio.NpzFile):
        raise _file_error(path, "holds a single .npy array, not an .npz archive with arrays 'values' and 'points'")
    with archive:
        names = list(archive.files)
        if "values" not in names:
            raise _file_error(
                path, f"missing array 'values' (shape (n_levels, n_sensors)); arrays present: {names or 'none'}"
            )
        out = {}
        for name in ("values", "points"):
            if name not in names:
                continue
            try:
                arr = archive[name]
            except (OSError, ValueError, zipfile.BadZipFile, EOFError) as err:
                raise _file_error(path, f"array {name!r} cannot be read ({err})") from err
            if arr.dtype.kind not in "iuf":
                raise _file_error(path, f"array {name!r} has dtype {arr.dtype}, expected real numbers")
            out[name] = arr.astype(np.float64)
    values = out["values"]
    if values.ndim != 2:
        raise _file_error(path, f"array 'values' has shape {values.shape}, expected 2D (n_levels, n_sensors)")
    points = out.get("points")
    if points is not None:
        if points.ndim != 2 or points.shape[0] != values.shape[1] or not 1 <= points.shape[1] <= 3:
            raise _file_error(
                path,
                f"array 'points' has shape {points.shape}, expected (n_sensors, gdim) = ({values.shape[1]}, 1..3) "
                f"to match 'values' of shape {values.shape}",
            )
        bad = np.argwhere(~np.isfinite(points))
        if bad.size:
            raise _file_error(path, f"array 'points' has a non-finite coordinate at {tuple(int(i) for i in bad[0])}")
    bad = np.argwhere(np.isinf(values))
    if bad.size:
        raise _file_error(path, f"array 'values' has an infinite entry at {tuple(int(i) for i in bad[0])}")
    return points, values


def _parse_number(path: str, text: str, line: int, col: int, label: str) -> float:
    where = f"line {line}, column {col + 1} ({label!r})"
    s = text.strip()
    if not s:
        raise _file_error(path, f"{where}: empty cell")
    try:
        x = float(s)
    except ValueError:
        raise _file_error(path, f"{where}: {s!r} is not a number") from None
    if math.isinf(x):
        raise _file_error(path, f"{where}: {s!r} is not finite")
    return x


def _load_csv(path: str) -> tuple[np.ndarray | None, np.ndarray, np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise _file_error(path, f"not a UTF-8 text file ({err})") from err
    rows = []
    for line_no, cells in enumerate(csv.reader(io.StringIO(text)), start=1):
        if not cells or all(not c.strip() for c in cells) or cells[0].lstrip().startswith("#"):
            continue
        rows.append((line_no, cells))
    if not rows:
        raise _file_error(path, "empty (expected a header 't,s0,s1,...' and one row per time level)")
    header_line, header = rows[0]
    labels = [c.strip() for c in header]
    if labels[0].lower() != "t":
        raise _file_error(
            path, f"line {header_line}: the header must start with 't' (then one column per sensor), got {labels[0]!r}"
        )
    if len(labels) < 2:
        raise _file_error(path, f"line {header_line}: the header has no sensor columns after 't'")
    n_cols = len(labels)
    for line_no, cells in rows[1:]:
        if len(cells) != n_cols:
            raise _file_error(
                path, f"line {line_no} has {len(cells)} cells, expected {n_cols} (the header has {n_cols} columns)"
            )
    body = rows[1:]
    coords = []
    for axis in ("x", "y", "z"):
        if body and body[0][1][0].strip().lower() == axis:
            line_no, cells = body.pop(0)
            coords.append([_parse_number(path, c, line_no, j, labels[j]) for j, c in enumerate(cells[1:], start=1)])
        else:
            break
    for line_no, cells in body:
        if cells[0].strip().lower() in ("x", "y", "z"):
            raise _file_error(
                path,
                f"line {line_no}: coordinate row {cells[0].strip()!r} out of place; coordinate rows x, y, z "
                "must come in this order directly after the header",
            )
    times = np.array([_parse_number(path, cells[0], line_no, 0, labels[0]) for line_no, cells in body])
    if times.size and np.any(np.isnan(times)):
        line_no = body[int(np.flatnonzero(np.isnan(times))[0])][0]
        raise _file_error(path, f"line {line_no}, column 1 ('t'): the time is nan")
    if times.size > 1 and np.any(np.diff(times) <= 0):
        i = int(np.flatnonzero(np.diff(times) <= 0)[0]) + 1
        raise _file_error(
            path, f"line {body[i][0]}: time {times[i]:g} does not increase (previous row: {times[i - 1]:g})"
        )
    values = np.array(
        [
            [_parse_number(path, c, line_no, j, labels[j]) for j, c in enumerate(cells[1:], start=1)]
            for line_no, cells in body
        ]
    ).reshape(len(body), n_cols - 1)
    points = np.array(coords).T.copy() if coords else None
    return points, values, times


def _read_point_data(
    path: str, n_levels: int, n_sensors: int | None, times: np.ndarray | None
) -> tuple[np.ndarray | None, np.ndarray]:
    ext = os.path.splitext(path)[1].lower()
    if not os.path.exists(path):
        raise FileNotFoundError(f"point data file {path!r} does not exist")
    if ext == ".npz":
        points, values = _load_npz(path)
        file_times = None
        what_rows = "rows of 'values' (time levels)"
    elif ext == ".csv":
        points, values, file_times = _load_csv(path)
        what_rows = "time-level rows"
    else:
        raise _file_error(path, f"unknown extension {ext!r}; use .npz or .csv")
    if values.shape[0] != n_levels:
        raise _file_error(
            path, f"has {values.shape[0]} {what_rows}, expected n_levels = {n_levels} (n_steps + 1, one per time level)"
        )
    if n_sensors is not None and values.shape[1] != n_sensors:
        raise _file_error(path, f"has data for {values.shape[1]} sensors, expected {n_sensors}")
    if times is not None and file_times is not None:
        ref = np.asarray(times, dtype=np.float64)
        tol = 1e-8 * max(1.0, float(np.max(np.abs(ref))) if ref.size else 1.0)
        off = np.flatnonzero(np.abs(file_times - ref) > tol)
        if off.size:
            n = int(off[0])
            raise _file_error(
                path, f"time of level {n} is {file_times[n]:.10g}, but the time grid has t_{n} = {ref[n]:.10g}"
            )
    return points, values


def load_point_data(
    path: str | os.PathLike,
    n_levels: int,
    n_sensors: int | None = None,
    *,
    times: np.ndarray | None = None,
    comm: MPI.Comm | None = None,
) -> tuple[np.ndarray | None, np.ndarray]:
    """Read sensor data from an ``.npz`` or ``.csv`` file (formats in the module docstring).

    Args:
        path: The file.
        n_levels: Expected number of time levels (``n_steps + 1``).
        n_sensors: Expected number of sensors (not checked if None).
        times: The time grid; if given, the ``t`` column of a CSV file must
            match it (to 1e-8 relative).
        comm: If given, rank 0 reads the file and broadcasts the result (or
            the error) to all ranks of ``comm`` (collective).

    Returns:
        ``(points, values)``: the sensor coordinates ``(n_sensors, gdim)`` if
        the file has them, else None, and the values ``(n_levels, n_sensors)``.

    Raises:
        FileNotFoundError: The file does not exist.
        ValueError: The file is malformed; the message names the file and
            the problem (missing array, wrong shape, non-numeric cell with its
            line and column, wrong number of rows, ...).
    """
    if not isinstance(n_levels, numbers.Integral) or n_levels < 1:
        raise ValueError(f"load_point_data: n_levels={n_levels!r} must be an integer >= 1")
    if n_sensors is not None and (not isinstance(n_sensors, numbers.Integral) or n_sensors < 1):
        raise ValueError(f"load_point_data: n_sensors={n_sensors!r} must be an integer >= 1 or None")
    if times is not None and np.shape(times) != (n_levels,):
        raise ValueError(f"load_point_data: times has shape {np.shape(times)}, expected ({n_levels},)")
    path = os.fspath(path)
    if comm is None or comm.size == 1:
        return _read_point_data(path, int(n_levels), n_sensors, times)
    result: Any = None
    if comm.rank == 0:
        try:
            result = ("ok", _read_point_data(path, int(n_levels), n_sensors, times))
        except (OSError, ValueError) as err:
            result = ("error", err)
    status, payload = comm.bcast(result, root=0)
    if status == "error":
        raise payload
    return payload


def save_point_data(
    path: str | os.PathLike,
    points: np.ndarray | None,
    values: np.ndarray,
    *,
    comm: MPI.Comm = MPI.COMM_WORLD,
) -> None:
    """Write sensor data as an ``.npz`` file readable by :func:`load_point_data` (collective).

    Rank 0 of ``comm`` writes exactly ``path`` (no extension is added); the
    file exists on return on every rank.

    Args:
        path: The output file (conventionally ``*.npz``).
        points: Sensor coordinates ``(n_sensors, gdim)``, or None.
        values: Observed values ``(n_levels, n_sensors)``.
        comm: The communicator whose rank 0 writes.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.ndim != 2:
        raise ValueError(f"save_point_data: values have shape {values.shape}, expected (n_levels, n_sensors)")
    arrays = {"values": values}
    if points is not None:
        points = np.asarray(points, dtype=np.float64)
        if points.ndim != 2 or points.shape[0] != values.shape[1] or not 1 <= points.shape[1] <= 3:
            raise ValueError(
                f"save_point_data: points have shape {points.shape}, expected (n_sensors, gdim) = "
                f"({values.shape[1]}, 1..3)"
            )
        arrays["points"] = points
    path = os.fspath(path)
    error = None
    if comm.rank == 0:
        try:
            with open(path, "wb") as f:
                np.savez(f, **arrays)
        except OSError as err:
            error = err
    error = comm.bcast(error, root=0)
    if error is not None:
        raise error
