"""Observation/loss pieces: ``J = ½ Σ_n w_n Δt ‖B(u^n) − d^n‖²``.

A misfit is separate from the PDE and the network.  It works on the owned
entries of the discrete states:

* ``value(states)`` — the loss, summed over ranks with one allreduce;
* ``add_gradient(n, u_owned, out_owned)`` — adds ``∂J/∂u^n`` (owned entries).

:class:`L2Misfit` is the full-field space-time L2 loss, optionally restricted
to cells of a subdomain, with documented time weights.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc
import ufl
from mpi4py import MPI
from petsc4py import PETSc

from femnpde.io.meshes import tags_present
from femnpde.fem.problem import ParabolicProblem

__all__ = ["TimeWeights", "time_weights", "L2Misfit"]

TIME_RULES = ("rectangle", "trapezoid")


@dataclass(frozen=True)
class TimeWeights:
    """How the time integral of the loss is discretised.

    Attributes:
        rule: ``"rectangle"`` (every included level has weight 1) or
            ``"trapezoid"`` (the first and last included levels weigh 1/2).
        include_initial: Whether level n = 0 (the initial state) is in the
            sum.  The paper sums over all time levels including t = 0; the
            initial state does not depend on the network, so this only shifts
            the loss by a constant.
        levels: Optional subset of time levels observed (others weigh 0).
    """

    rule: str = "rectangle"
    include_initial: bool = True
    levels: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.rule not in TIME_RULES:
            raise ValueError(f"TimeWeights: rule={self.rule!r} is not valid; use one of {TIME_RULES}")


def time_weights(n_steps: int, spec: TimeWeights) -> np.ndarray:
    """The weights ``w_n`` (n = 0..n_steps) for ``spec``."""
    w = np.ones(n_steps + 1)
    if spec.rule == "trapezoid":
        w[0] = w[-1] = 0.5
    if not spec.include_initial:
        w[0] = 0.0
        if spec.rule == "trapezoid" and n_steps >= 1:
            w[1] = 1.0 if n_steps > 1 else 0.5
    if spec.levels is not None:
        mask = np.zeros(n_steps + 1, dtype=bool)
        levels = np.asarray(spec.levels, dtype=int)
        bad = levels[(levels < 0) | (levels > n_steps)]
        if bad.size:
            raise ValueError(f"TimeWeights: observation levels {bad.tolist()} are outside 0..{n_steps}")
        mask[levels] = True
        w[~mask] = 0.0
    return w


class L2Misfit:
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

    def value(self, states) -> float:
        """The loss of the states in ``states`` (one allreduce)."""
        n_owned = self.problem.n_owned
        local = 0.0
        for n in np.flatnonzero(self.w):
            local += self.level_value(n, states.load(n)[:n_owned])
        return self.comm.allreduce(local, op=MPI.SUM)

    def level_value(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's part of level n's loss term (0 for unobserved levels; no communication)."""
        if self.w[n] == 0.0:
            return 0.0
        e, Me = self._apply(n, u_owned)
        return 0.5 * self.w[n] * float(np.dot(e, Me))

    def level_max_error(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's ``max_j |u^n_j − h^n_j|`` (0 for unobserved levels; no communication)."""
        if self.w[n] == 0.0:
            return 0.0
        return float(np.max(np.abs(u_owned - self.data[n]), initial=0.0))

    def relative_from_max_error(self, local: float) -> float:
        """Reduce this rank's largest level error over the ranks and divide by ``max|h|``."""
        glob = self.comm.allreduce(local, op=MPI.MAX)
        m = self.max_abs_data()
        return glob / m if m > 0 else float("nan")

    def add_gradient(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> None:
        """Add ``∂J/∂u^n = w_n Δt M (u^n − h^n)`` to the owned entries ``out``."""
        if self.w[n] == 0.0:
            return
        _, Me = self._apply(n, u_owned)
        out += self.w[n] * Me

    def max_abs_data(self) -> float:
        """``max |h|`` over all levels and ranks (the RMSE normalisation)."""
        if self._max_abs is None:
            local = float(np.max(np.abs(self.data))) if self.data.size else 0.0
            self._max_abs = self.comm.allreduce(local, op=MPI.MAX)
        return self._max_abs

    def relative_rmse(self, loss: float) -> float:
        """``sqrt(J) / max|h|`` — the paper's 'relative RMSE' computed from the FEM loss."""
        m = self.max_abs_data()
        return float(np.sqrt(max(loss, 0.0)) / m) if m > 0 else float("nan")

    def relative_max_error(self, states) -> float:
        """``max_n,j |u − h| / max|h|`` over the observed levels."""
        n_owned = self.problem.n_owned
        local = 0.0
        for n in np.flatnonzero(self.w):
            local = max(local, self.level_max_error(n, states.load(n)[:n_owned]))
        return self.relative_from_max_error(local)
