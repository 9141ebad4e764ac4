"""Misfits: ``J = ½ Σ_n w_n Δt ‖B u^n − d^n‖²_W`` over an observation operator ``B``.

A misfit is separate from the PDE and the network (hIPPYlib's split).  It
works on the owned entries of the discrete states.  :class:`Misfit` is the
contract every misfit fulfils (and the base class a user's observation
derives from); it implements the loss, the relative errors and the context
manager once, from two per-observation primitives:

* ``_residual(n, u_owned)`` -- this rank's part of ``B u^n − d^n``;
* ``_local_value(n, u_owned)`` -- this rank's part of ``‖B u^n − d^n‖²_W``;

and ``add_gradient(n, u_owned, out)`` adds ``∂J/∂u^n = w_n Δt Bᵀ W (B u^n − d^n)``.

**Loss and gradient from one residual per level.** The adjoint's source
``w_n Bᵀ W r_n`` and the loss term ``½ w_n r_nᵀ W r_n`` share ``W r_n`` (for a
field, the mass-matrix product ``M r``): :meth:`Misfit.add_gradient_and_value`
computes both at once, and :class:`AdjointLoss`, passed to
:meth:`~femnpde.fem.solver.ThetaSolver.adjoint` in place of ``add_gradient``,
collects the loss during the adjoint sweep, so that a forward sweep followed
by the adjoint sweep needs no misfit evaluation in the forward (one ``W r``
per level instead of two).  Its loss sums the same level terms in the same
order as :meth:`Misfit.value`: the two agree bitwise.

One implementation, hIPPYlib's: :class:`QuadraticMisfit`, over an
observation operator ``B`` and its inner product ``W``
(:mod:`femnpde.obs.operators`) and the time weights
(:mod:`femnpde.obs.weights`).  Its named constructors:
:class:`L2Misfit` (:class:`~femnpde.obs.operators.FieldObservation`: ``B`` =
the identity on the solution space, ``W`` = the mass matrix of the domain or
of a cell-tagged subdomain) and :class:`femnpde.obs.points.PointMisfit`
(:class:`~femnpde.obs.operators.PointObservation`: ``B`` = point evaluation
at sensors, ``W`` = the identity).

**Relative RMSE** (one definition): ``relative_rmse(J) = sqrt(J) / max_abs_data()``,
the paper's 'relative RMSE' computed from the FEM loss.  ``max_abs_data()``
is the normalisation ``max |d|``, over the levels chosen by
``QuadraticMisfit(normalise=...)``: over *all* levels for a field/subdomain
(``"all"``: the full-field data exist at every level, whether observed or
not, as in the paper) and over the *observed* levels for sensors
(``"observed"``: unobserved sensor levels may hold no data, ``nan``).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, Self

import numpy as np
from mpi4py import MPI

from femnpde.fem.problem import ParabolicProblem
from femnpde.obs.operators import FieldObservation, ObservationOperator
from femnpde.obs.weights import TIME_RULES, TimeWeights, time_weights

__all__ = ["Misfit", "AdjointLoss", "QuadraticMisfit", "NORMALISATIONS", "TIME_RULES", "TimeWeights", "time_weights", "L2Misfit"]

#: The levels the relative-error normalisation ``max |d|`` runs over.
NORMALISATIONS: tuple[str, ...] = ("all", "observed")


def _max_abs(a: np.ndarray) -> float:
    """``max |a|`` (0 for no entries)."""
    return float(np.max(np.abs(a), initial=0.0))


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
        return self.sum_levels({n: self.level_value(n, states.load(n)[:n_owned]) for n in self.observed_levels})

    def sum_levels(self, local_terms) -> float:
        """The loss from this rank's level terms (``local_terms[n]`` for the observed levels; one allreduce).

        The terms are summed in increasing level order, then over the ranks:
        :meth:`value` and :class:`AdjointLoss` both sum this way.
        """
        local = 0.0
        for n in self.observed_levels:
            local += local_terms[n]
        return self.comm.allreduce(local, op=MPI.SUM)

    def add_gradient_and_value(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> tuple[float, float]:
        """Add ``∂J/∂u^n`` to ``out``; return this rank's :meth:`level_value` and :meth:`level_max_error`.

        Collective.  This default calls the three methods; :class:`QuadraticMisfit`
        takes all three from one residual and one ``W r``.
        """
        self.add_gradient(n, u_owned, out)
        return self.level_value(n, u_owned), self.level_max_error(n, u_owned)

    def level_value(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's part of level n's term ``½ w_n ‖B u^n − d^n‖²_W`` (0 if unobserved; local).

        Summed over the levels in increasing order and over the ranks it is
        :meth:`value`: a loss can be taken during the forward sweep, level by
        level (storages that do not keep every state).
        """
        if self.w[n] == 0.0:
            return 0.0
        self._check_ready("level_value")
        return self._level_term(n, self._local_value(n, u_owned))

    def _level_term(self, n: int, local_value: float) -> float:
        """Level n's loss term ``½ w_n`` times this rank's ``‖B u^n − d^n‖²_W`` (the one formula)."""
        return 0.5 * self.w[n] * local_value

    def relative_rmse(self, loss: float) -> float:
        """``sqrt(J) / max|d|`` (nan if the data are zero)."""
        m = self.max_abs_data()
        return float(np.sqrt(max(loss, 0.0)) / m) if m > 0 else float("nan")

    def level_max_error(self, n: int, u_owned: np.ndarray) -> float:
        """This rank's ``max_k |(B u^n − d^n)_k|`` (0 if unobserved; local)."""
        if self.w[n] == 0.0:
            return 0.0
        self._check_ready("level_max_error")
        return _max_abs(self._residual(n, u_owned))

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


class AdjointLoss:
    """The adjoint sweep's misfit callback that also takes the loss (one ``W r`` per level).

    Pass it to :meth:`~femnpde.fem.solver.ThetaSolver.adjoint` in place of
    ``misfit.add_gradient`` after a forward sweep that evaluated no misfit;
    afterwards :meth:`loss` is the loss of that sweep (bitwise
    :meth:`Misfit.value` of its states) and :attr:`max_error_local` this
    rank's :meth:`Misfit.level_max_error` over all levels::

        solver.forward(g)
        terms = AdjointLoss(misfit)
        dJdg = solver.adjoint(g, terms)
        J = terms.loss()

    The adjoint visits the levels N, ..., 1; level 0 (the initial state, not
    a function of the source) is taken here, from ``problem.u0``.

    Args:
        misfit: The misfit (:meth:`Misfit.add_gradient_and_value`).
    """

    def __init__(self, misfit: Misfit) -> None:
        self.misfit = misfit
        u0 = misfit.problem.u0.x.array[: misfit.problem.n_owned]
        self._terms = np.zeros(misfit.w.size)
        self._terms[0] = misfit.level_value(0, u0)
        #: This rank's largest level error ``max_k |(B u^n − d^n)_k|`` over the levels seen so far.
        self.max_error_local = misfit.level_max_error(0, u0)
        self._seen = np.zeros(misfit.w.size, dtype=bool)
        self._seen[0] = True

    def __call__(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> None:
        """Add ``∂J/∂u^n`` to ``out`` and keep level n's loss term (collective)."""
        self._terms[n], err = self.misfit.add_gradient_and_value(n, u_owned, out)
        self.max_error_local = max(self.max_error_local, err)
        self._seen[n] = True

    def loss(self) -> float:
        """The loss ``J`` of the sweep (collective: one allreduce).

        Raises:
            RuntimeError: The adjoint sweep did not visit every level.
        """
        if not self._seen.all():
            raise RuntimeError(f"AdjointLoss.loss: levels {np.flatnonzero(~self._seen).tolist()} were not visited "
                               "by an adjoint sweep")
        return self.misfit.sum_levels(self._terms)


class QuadraticMisfit(Misfit):
    """``J = ½ Σ_n w_n Δt (B u^n − d^n)ᵀ W (B u^n − d^n)`` over an observation operator.

    The data ``d^n`` are this rank's observations (:attr:`ObservationOperator.n_local`
    of them) at every level; levels of weight 0 are never read (they may hold
    ``nan``).  The misfit owns the operator (:meth:`destroy` destroys it).

    Args:
        problem: The PDE problem.
        operator: The observation operator ``B`` and its inner product ``W``.
        data: This rank's observations, shape ``(n_steps + 1, operator.n_local)``;
            ``None`` to set them later with :meth:`set_local_data`.
        weights: Time weights (default: every level, weight 1).
        normalise: The levels of ``max |d|`` in the relative errors, one of
            :data:`NORMALISATIONS` (see the module docstring).
    """

    def __init__(
        self,
        problem: ParabolicProblem,
        operator: ObservationOperator,
        data: np.ndarray | None = None,
        weights: TimeWeights | None = None,
        normalise: str = "observed",
    ) -> None:
        self.operator = operator
        try:
            if normalise not in NORMALISATIONS:
                raise ValueError(f"{type(self).__name__}: normalise={normalise!r} is not valid; use one of {NORMALISATIONS}")
            self.problem = problem
            self.comm = problem.comm
            self.n_levels = problem.time.n_steps + 1
            self.weights_spec = weights if weights is not None else TimeWeights()
            self.w = time_weights(problem.time.n_steps, self.weights_spec) * problem.time.dt
            self.normalise = normalise
            self._data_local: np.ndarray | None = None
            self._max_abs: float | None = None
            if data is not None:
                self.set_local_data(data)
        except Exception:
            operator.destroy()
            raise

    def set_local_data(self, data: np.ndarray) -> None:
        """Set this rank's observations, shape ``(n_steps + 1, operator.n_local)`` (kept, not copied)."""
        data = np.asarray(data, dtype=np.float64)
        expected = (self.n_levels, self.operator.n_local)
        if data.shape != expected:
            raise ValueError(
                f"{type(self).__name__}: local data have shape {data.shape}, expected (n_steps + 1, n_local) = {expected}"
            )
        self._data_local = data
        self._max_abs = None

    def destroy(self) -> None:
        """Destroy the observation operator's PETSc objects (collective)."""
        self.operator.destroy()

    def _check_ready(self, what: str) -> None:
        if self._data_local is None:
            raise RuntimeError(
                f"{type(self).__name__}.{what}: no data set; pass data to the constructor or call set_data()"
            )

    def _residual(self, n: int, u_owned: np.ndarray) -> np.ndarray:
        return self.operator.apply(u_owned) - self._data_local[n]

    def _weighted_residual(self, n: int, u_owned: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """``(r, W r, rᵀ W r)`` with ``r = B u^n − d^n`` (this rank's entries; collective: ``W r``).

        The one evaluation behind :meth:`_local_value`, :meth:`add_gradient` and
        :meth:`add_gradient_and_value`, so their values agree bitwise.  ``W r`` may be a
        view of the operator's work vector, valid until its next :meth:`weight`.
        """
        r = self._residual(n, u_owned)
        Wr = self.operator.weight(r)
        return r, Wr, float(np.dot(r, Wr))

    def _add_weighted(self, n: int, Wr: np.ndarray, out: np.ndarray) -> None:
        """``out += w_n Bᵀ W r`` (the gradient's formula, from ``W r``)."""
        out += self.operator.apply_transpose(self.w[n] * Wr)

    def _local_value(self, n: int, u_owned: np.ndarray) -> float:
        return self._weighted_residual(n, u_owned)[2]

    def add_gradient(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> None:
        """Add ``∂J/∂u^n = w_n Δt Bᵀ W (B u^n − d^n)`` to the owned entries ``out`` (collective)."""
        if self.w[n] == 0.0:
            return
        self._check_ready("add_gradient")
        r = self._residual(n, u_owned)
        self._add_weighted(n, self.operator.weight(r), out)

    def add_gradient_and_value(self, n: int, u_owned: np.ndarray, out: np.ndarray) -> tuple[float, float]:
        """:meth:`add_gradient`, :meth:`level_value` and :meth:`level_max_error` from one ``r`` and ``W r``."""
        if self.w[n] == 0.0:
            return 0.0, 0.0
        self._check_ready("add_gradient_and_value")
        r, Wr, rWr = self._weighted_residual(n, u_owned)
        self._add_weighted(n, Wr, out)
        return self._level_term(n, rWr), _max_abs(r)

    def max_abs_data(self) -> float:
        """``max |d|`` over all or the observed levels and all ranks (collective the first time)."""
        self._check_ready("max_abs_data")
        if self._max_abs is None:
            d = self._data_local if self.normalise == "all" else self._data_local[self.observed_levels]
            local = _max_abs(d)
            self._max_abs = self.comm.allreduce(local, op=MPI.MAX)
        return self._max_abs


class L2Misfit(QuadraticMisfit):
    """``J = ½ Σ_n w_n Δt ∫_Ω (u^n − h^n)² dx`` with data ``h^n`` in the solution space.

    The quadratic misfit over a :class:`~femnpde.obs.operators.FieldObservation`:
    the integral is ``e^T M e`` with the mass matrix ``M`` of Ω (the whole
    domain, or the cells tagged ``subdomain``), assembled once.  The relative
    errors are normalised by ``max |h|`` over all levels.

    Args:
        problem: The PDE problem (its solution space holds the data).
        data: ``h^n`` on the owned dofs, shape ``(n_steps + 1, n_owned)`` (kept, not copied).
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
        n_levels = problem.time.n_steps + 1
        data = np.asarray(data, dtype=np.float64)
        if data.shape != (n_levels, problem.n_owned):
            raise ValueError(
                f"L2Misfit: data has shape {data.shape}, expected (n_steps + 1, n_owned) = "
                f"{(n_levels, problem.n_owned)}"
            )
        super().__init__(problem, FieldObservation(problem.V, subdomain, "L2Misfit"), data, weights, "all")

    @property
    def data(self) -> np.ndarray:
        """``h^n`` on the owned dofs, shape ``(n_steps + 1, n_owned)``."""
        return self._data_local
