"""Sensor-point observations: ``J = ½ Σ_n w_n Δt Σ_k (u^n(x_k) − d^n_k)²``.

:class:`PointMisfit` is the quadratic misfit
(:class:`femnpde.obs.misfit.QuadraticMisfit`) over a
:class:`femnpde.obs.operators.PointObservation` (``B`` = point evaluation,
``W`` = the identity), so it plugs into
:class:`femnpde.model.reduced.ReducedFunctional` like
:class:`femnpde.obs.misfit.L2Misfit`.  Then

* the observations are ``B u^n``;
* the loss gradient is ``∂J/∂u^n = w_n Δt Bᵀ (B u^n − d^n)`` — point sources
  in the adjoint equation.

Sensor points and data are replicated (identical on all ranks); the
observations returned by :meth:`PointMisfit.observe` are replicated as well.
The relative errors are normalised by ``max |d|`` over the observed levels.

Data files: :mod:`femnpde.io.pointdata`; noise: :func:`femnpde.obs.noise.add_noise`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import dolfinx.fem
from petsc4py import PETSc

from femnpde.fem.problem import ParabolicProblem
from femnpde.io.pointdata import load_point_data, save_point_data
from femnpde.obs.misfit import QuadraticMisfit, TimeWeights
from femnpde.obs.noise import add_noise
from femnpde.obs.operators import PointObservation, same_on_all_ranks

__all__ = ["PointMisfit", "synthetic_point_data", "add_noise", "load_point_data", "save_point_data"]


class PointMisfit(QuadraticMisfit):
    """``J = ½ Σ_n w_n Δt Σ_k (u^n(x_k) − d^n_k)²`` over sensor points and observed levels.

    The observation operator ``B`` (``n_sensors × N`` with ``N`` the global
    number of dofs of ``problem.V``, ``B[k, j] = φ_j(x_k)``) is a
    :class:`~femnpde.obs.operators.PointObservation`: a PETSc AIJ matrix
    whose row of sensor ``k`` lives on the rank owning the point (the lowest
    rank whose owned cells contain it).  PETSc orders the rows by owner rank
    (see :attr:`sensor_of_row`); everything this class returns is in sensor
    order.

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
        super().__init__(problem, PointObservation(problem.V, points, "PointMisfit"), None, weights, "observed")
        op = self.operator
        self.points = op.points
        self.n_sensors = op.n_sensors
        self.owner = op.owner
        #: Sensors whose row this rank owns, in increasing index order.
        self.local_sensors = op.local_sensors
        #: Row r of B (global PETSc numbering) observes sensor ``sensor_of_row[r]``.
        self.sensor_of_row = op.sensor_of_row
        self._observed = self.observed_levels
        self._data: np.ndarray | None = None
        if data is not None:
            self.set_data(data)

    @property
    def B(self) -> PETSc.Mat:
        """The observation operator (rows in owner-rank order, see :attr:`sensor_of_row`)."""
        return self.operator.B

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
        if not same_on_all_ranks(self.comm, arr):
            raise ValueError("PointMisfit: the data differ between ranks; pass the same data on every rank")
        arr.setflags(write=False)
        self._data = arr
        self.set_local_data(np.ascontiguousarray(arr[:, self.local_sensors]))

    # ---------------------------------------------------------- observing
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
        op = self.operator
        if hasattr(u, "load"):
            m, state = self.n_levels, lambda i: u.load(i)
        else:
            if isinstance(u, dolfinx.fem.Function):
                u = u.x.array
            arr = np.asarray(u, dtype=np.float64)
            if arr.ndim == 1:
                return op.gather(op.apply(self._owned(arr)).reshape(1, -1))[0]
            if arr.ndim != 2:
                raise ValueError(
                    f"PointMisfit.observe: expected a state storage, a Function or a 1D/2D array, got shape {arr.shape}"
                )
            self._owned(arr)
            m, state = arr.shape[0], lambda i: arr[i]
        local = np.empty((m, op.n_local))
        for i in range(m):
            local[i] = op.apply(self._owned(state(i)))  # apply returns a view of one buffer: copy each row
        return op.gather(local)


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
