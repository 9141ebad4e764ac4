"""Misfits: ``J = ½ Σ_n w_n Δt ‖B u^n − d^n‖²_W`` over an observation operator ``B``.

A misfit is separate from the PDE and the network (hIPPYlib's split).  It
works on the owned entries of the discrete states.  :class:`Misfit` is the
contract every misfit fulfils (and the base class a user's observation
derives from); it implements the loss, the relative errors and the context
manager once, from two per-observation primitives:

* ``_residual(n, u_owned)`` -- this rank's part of ``B u^n − d^n``;
* ``_local_value(n, u_owned)`` -- this rank's part of ``‖B u^n − d^n‖²_W``;

and ``add_gradient(n, u_owned, out)`` adds ``∂J/∂u^n = w_n Δt Bᵀ W (B u^n − d^n)``.

Implementations: :class:`L2Misfit` (``B`` = the identity on the solution
space, ``W`` = the mass matrix of the domain or of a cell-tagged subdomain)
and :class:`femnpde.obs.points.PointMisfit` (``B`` = point evaluation at
sensors, ``W`` = the identity).

**Relative RMSE** (one definition): ``relative_rmse(J) = sqrt(J) / max_abs_data()``,
the paper's 'relative RMSE' computed from the FEM loss.  ``max_abs_data()``
is the normalisation ``max |d|`` of the observation kind: over *all* levels
for a field/subdomain (the full-field data exist at every level, whether
observed or not, as in the paper) and over the *observed* levels for sensors
(unobserved sensor levels may hold no data, ``nan``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc
import ufl
from mpi4py import MPI

from femnpde._mpi import tags_present
from femnpde.fem.problem import ParabolicProblem
from femnpde.obs.weights import TIME_RULES, TimeWeights, time_weights

__all__ = ["Misfit", "TIME_RULES", "TimeWeights", "time_weights", "L2Misfit"]


class Misfit(ABC):
    """The contract of a misfit ``J = ½ Σ_n w_n ‖B u^n − d^n‖²_W`` (``w_n`` includes Δt).

    Subclasses set ``self.problem``, ``self.comm`` and ``self.w`` (the
    weights times Δt, shape ``(n_steps + 1,)``) and implement the abstract
    methods.  All methods taking states are collective.
    """

    problem: ParabolicProblem
    comm: Any
    w: np.ndarray

    @property
    def observed_levels(self) -> np.ndarray:
        """The time levels with a non-zero weight."""
        return np.flatnonzero(self.w)

    @abstractmethod
    def _residual(self, n: int, u_owned: np.ndarray) -> np.ndarray:
        """This rank's entries of ``B u^n − d^n``."""

    @abstractmethod
    def _local_value(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's part of ``‖B u^n − d^n‖²_W``."""

    @abstractmethod
    def add_gradient(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> None:
        """Add ``∂J/∂u^n`` to the owned entries ``out`` (collective)."""

    @abstractmethod
    def max_abs_data(self) -> float:
        """The RMSE normalisation ``max |d|`` (see the module docstring)."""

    @abstractmethod
    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""

    def _check_ready(self, what: str) -> None:
        """Raise if the misfit cannot be evaluated yet (e.g. no data)."""

    def value(self, states) -> float:
        """The loss of the states in ``states`` (a storage with ``load(n)``; one allreduce)."""
        self._check_ready("value")
        n_owned = self.problem.n_owned
        local = 0.0
        for n in self.observed_levels:
            local += self.level_value(n, states.load(n)[:n_owned])
        return self.comm.allreduce(local, op=MPI.SUM)

    def level_value(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's part of level n's term ``½ w_n ‖B u^n − d^n‖²_W`` (0 if unobserved; local).

        Summed over the levels in increasing order and over the ranks it is
        :meth:`value`: a loss can be taken during the forward sweep, level by
        level (storages that do not keep every state).
        """
        if self.w[n] == 0.0:
            return 0.0
        self._check_ready("level_value")
        return 0.5 * self.w[n] * self._local_value(n, u_owned)

    def relative_rmse(self, loss: float) -> float:
        """``sqrt(J) / max|d|`` (nan if the data are zero)."""
        m = self.max_abs_data()
        return float(np.sqrt(max(loss, 0.0)) / m) if m > 0 else float("nan")

    def level_max_error(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's ``max_k |(B u^n − d^n)_k|`` (0 if unobserved; local)."""
        if self.w[n] == 0.0:
            return 0.0
        self._check_ready("level_max_error")
        return float(np.max(np.abs(self._residual(n, u_owned)), initial=0.0))

    def relative_from_max_error(self, local: float) -> float:
        """The largest :meth:`level_max_error` of this rank -> the relative max error (one allreduce)."""
        glob = self.comm.allreduce(local, op=MPI.MAX)
        m = self.max_abs_data()
        return glob / m if m > 0 else float("nan")

    def relative_max_error(self, states) -> float:
        """``max_{n,k} |(B u^n − d^n)_k| / max|d|`` over the observed levels (one allreduce)."""
        self._check_ready("relative_max_error")
        n_owned = self.problem.n_owned
        local = 0.0
        for n in self.observed_levels:
            local = max(local, self.level_max_error(n, states.load(n)[:n_owned]))
        return self.relative_from_max_error(local)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


class L2Misfit(Misfit):
    """``J = ½ Σ_n w_n Δt ∫_Ω (u^n − h^n)² dx`` with data ``h^n`` in the solution space.

    The integral is ``e^T M e`` with the mass matrix ``M`` of Ω (the whole
    domain, or the cells tagged ``subdomain``), assembled once.

    Args:
        problem: The PDE problem (its solution space holds the data).
        data: ``h^n`` on the owned dofs, shape ``(n_steps + 1, n_owned)``.
        weights: Time weights.
        subdomain: Optional ``(cell_tags, tag)`` restricting the loss to cells.
    """

    def __init__(
        self,
        problem: ParabolicProblem,
        data: np.ndarray,
        weights: TimeWeights | None = None,
        subdomain: tuple | None = None,
    ) -> None:
        self.problem = problem
        self.comm = problem.comm
        n_levels = problem.time.n_steps + 1
        data = np.asarray(data, dtype=np.float64)
        if data.shape != (n_levels, problem.n_owned):
            raise ValueError(
                f"L2Misfit: data has shape {data.shape}, expected (n_steps + 1, n_owned) = "
                f"{(n_levels, problem.n_owned)}"
            )
        self.data = data
        self.weights_spec = weights if weights is not None else TimeWeights()
        self.w = time_weights(problem.time.n_steps, self.weights_spec) * problem.time.dt
        V = problem.V
        u, v = ufl.TrialFunction(V), ufl.TestFunction(V)
        if subdomain is None:
            dx = ufl.dx
        else:
            tags, tag = subdomain
            present = tags_present(tags, self.comm)
            if int(tag) not in present:
                raise ValueError(f"L2Misfit: cell tag {tag} not found in the mesh; tags present: {present}")
            dx = ufl.Measure("dx", domain=problem.mesh, subdomain_data=tags)(int(tag))
        self._M = dolfinx.fem.petsc.assemble_matrix(dolfinx.fem.form(u * v * dx))
        self._M.assemble()
        self._e, self._Me = self._M.createVecs()
        self._max_abs = None

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        for obj in (self._M, self._e, self._Me):
            obj.destroy()

    def _apply(self, n: int, u_owned: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        e = self._e.array_w
        np.subtract(u_owned, self.data[n], out=e)
        self._M.mult(self._e, self._Me)
        return self._e.array_r, self._Me.array_r

    def _residual(self, n: int, u_owned: np.ndarray) -> np.ndarray:
        return u_owned - self.data[n]

    def _local_value(self, n: int, u_owned: np.ndarray) -> float:
        e, Me = self._apply(n, u_owned)
        return float(np.dot(e, Me))

    def add_gradient(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> None:
        """Add ``∂J/∂u^n = w_n Δt M (u^n − h^n)`` to the owned entries ``out``."""
        if self.w[n] == 0.0:
            return
        _, Me = self._apply(n, u_owned)
        out += self.w[n] * Me

    def max_abs_data(self) -> float:
        """``max |h|`` over all levels and ranks (the RMSE normalisation of a field)."""
        if self._max_abs is None:
            local = float(np.max(np.abs(self.data))) if self.data.size else 0.0
            self._max_abs = self.comm.allreduce(local, op=MPI.MAX)
        return self._max_abs
