"""The reduced functional θ ↦ J(u(θ)) and its exact discrete gradient.

:class:`NetworkSource` couples a network to the source space of a problem:
``g^n_j = g_θ(t_n, x_j)`` at the owned source dofs.  :class:`ReducedFunctional`
puts the PDE problem (:class:`~femnpde.fem.solver.ThetaSolver`), the misfit and the
network together, in the shape of pyadjoint's ``ReducedFunctional``:
``rf(theta)`` returns J and ``rf.derivative()`` its gradient, both of the
*discretised* loss (discretise-then-optimise).

Evaluating ``rf(theta)`` (or ``rf.derivative(theta)``,
``rf.value_and_gradient(theta)``) at a new θ sets the network's parameters to
θ: afterwards ``rf.network.params`` holds the last θ evaluated, and the
source values and states of the last sweep belong to it.  The verification
functions (:func:`~femnpde.model.verification.taylor_test`,
:func:`~femnpde.model.verification.finite_difference_check`) restore the
parameters they found.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Sequence

import numpy as np
from mpi4py import MPI

from femnpde.fem.problem import ParabolicProblem
from femnpde.fem.solver import SolverError, ThetaSolver
from femnpde.model.base import Model
from femnpde.model.parameters import PhysicalParameter, check_parameters, parameter_bounds
from femnpde.obs.misfit import AdjointLoss

__all__ = ["NetworkSource", "FunctionSource", "ReducedFunctional", "adjoint_with_loss", "check_replicated",
           "streamed_forward"]


def check_replicated(comm: MPI.Comm, array: np.ndarray, what: str = "theta") -> None:
    """Raise on every rank unless ``array`` is bitwise identical on all ranks of ``comm``.

    The network parameters are replicated and every rank runs its own copy of
    the optimiser; a rank-dependent update would otherwise make the ranks
    solve different problems (or call mismatched collectives).  Costs one
    allreduce of two integers (a CRC-32 of the bytes).

    Raises:
        SolverError: The ranks disagree (the same error on every rank).
    """
    if comm.size == 1:
        return
    crc = zlib.crc32(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    buf = np.array([crc, -crc], dtype=np.int64)
    comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.MAX)
    if buf[0] != -buf[1]:
        raise SolverError(
            f"{what} differs between the MPI ranks (it must be replicated: the same on every rank); "
            "an optimiser or a user update made it rank-dependent. Compute updates from replicated "
            "values only (the gradient is replicated), or broadcast theta from rank 0."
        )


class NetworkSource:
    """A model sampled at (t_n, x_j) for all levels n and owned source dofs j.

    Uses only the :class:`~femnpde.model.base.Model` interface.  With
    ``m = model.n_outputs > 1`` outputs the problem must have
    ``n_sources = m``; the values of one point are consecutive (the blocked
    layout of the source space), output k feeding the residual's ``g[k]``.

    Args:
        problem: The problem whose source space is sampled.
        network: A :class:`~femnpde.model.base.Model` (e.g.
            :class:`~femnpde.model.network.ShallowNetwork`) with input
            dimension equal to the mesh's geometric dimension.
    """

    def __init__(self, problem: ParabolicProblem, network: Model) -> None:
        gdim = problem.mesh.geometry.dim
        if network.input_dim != gdim:
            raise ValueError(
                f"NetworkSource: the network takes x in R^{network.input_dim} but the mesh has geometric "
                f"dimension {gdim}"
            )
        m = getattr(problem, "n_sources", 1)
        if network.n_outputs != m:
            raise ValueError(
                f"NetworkSource: the network has {network.n_outputs} output(s) but the problem has "
                f"n_sources = {m} network-fed coefficient(s); they must be equal"
            )
        self.problem = problem
        self.network = network
        self.points = problem.source_points()
        self.times = problem.time.times

    def values(self, theta: np.ndarray | None = None) -> np.ndarray:
        """``g^n_j``, shape ``(n_steps + 1, n_owned_source)``; caches the forward for :meth:`vjp`."""
        if theta is not None:
            self.network.params = theta
        G = self.network.evaluate_grid(self.times, self.points, cache=True)
        return G.reshape(len(self.times), -1)

    def vjp(self, R: np.ndarray) -> np.ndarray:
        """``Σ_{n,j} R[n,j] ∂g^n_j/∂θ`` summed over all ranks (one allreduce)."""
        net = self.network
        shape = (len(self.times), len(self.points)) if net.n_outputs == 1 else (
            len(self.times), len(self.points), net.n_outputs)
        local = net.vjp_grid(np.asarray(R).reshape(shape))
        out = np.empty_like(local)
        self.problem.comm.Allreduce(local, out, op=MPI.SUM)
        return out


class FunctionSource:
    """A known source ``g*(t, x)`` sampled like :class:`NetworkSource` (for synthetic data).

    Point arrays in user callbacks follow DOLFINx's convention everywhere in
    femnpde (``Function.interpolate``, initial conditions, Dirichlet values,
    this class): ``x`` has shape ``(3, npts)``, ``x[0]``, ``x[1]``, ``x[2]``
    are the coordinates (zero beyond the mesh's geometric dimension), and the
    callback returns ``npts`` values (or a scalar).  With ``m =
    problem.n_sources > 1`` network-fed coefficients a callback returning
    shape ``(m, npts)`` (row k: the target of ``g[k]``) gives values laid out
    like :meth:`NetworkSource.values` (the m values of one point
    consecutive, ``n_owned_source`` per level); one returning ``npts`` values
    (or a scalar) gives one value per point, shape ``(n_steps + 1, npts)``,
    as for ``m = 1`` (e.g. to build the m coefficients from it).

    Args:
        problem: The problem whose source space is sampled.
        function: ``function(t, x) -> values`` with ``x`` of shape ``(3, npts)``.
    """

    def __init__(self, problem: ParabolicProblem, function: Callable[[float, np.ndarray], np.ndarray]) -> None:
        self.problem = problem
        self.function = function
        points = problem.source_points()
        self.points = np.zeros((3, points.shape[0]))
        self.points[: points.shape[1]] = points.T
        self.times = problem.time.times
        self.n_outputs = int(getattr(problem, "n_sources", 1))

    def values(self) -> np.ndarray:
        """``g*(t_n, x_j)``, shape ``(n_steps + 1, n_owned_source)`` (or ``(n_steps + 1, npts)``, see above)."""
        npts, m = self.points.shape[1], self.n_outputs
        out: np.ndarray | None = None
        for n, t in enumerate(self.times):
            value = np.asarray(self.function(float(t), self.points), dtype=np.float64)
            if value.shape not in ((), (npts,), *(((m, npts),) if m > 1 else ())):
                blocked = f", or shape ({m}, {npts}) (one row per coefficient g[k], n_sources = {m})" if m > 1 else ""
                raise ValueError(
                    f"FunctionSource: the function returned shape {value.shape} for x of shape (3, {npts}); "
                    f"it must return {npts} values (one per point x[:, j]) or a scalar{blocked}"
                )
            if out is None:
                out = np.empty((len(self.times), npts, m if value.ndim == 2 else 1))
            elif (out.shape[2] > 1) != (value.ndim == 2):
                raise ValueError(f"FunctionSource: the function returned shape {value.shape} at t = {t}, "
                                 f"but another shape at t = {self.times[0]}; return the same shape at every time")
            out[n] = value.T if value.ndim == 2 else value.reshape(-1, 1)
        return out.reshape(len(self.times), -1)


def streamed_forward(solver: ThetaSolver, misfit, g: np.ndarray, who: str = "streamed_forward") -> tuple[float, float]:
    """The forward sweep of ``g``, taking the loss level by level (storages that do not keep every level).

    Returns:
        ``(J, max_error_local)``: the loss (summed in increasing level order, then over the ranks, as
        ``misfit.value`` sums) and this rank's largest ``misfit.level_max_error``.

    Raises:
        TypeError: ``misfit`` has no ``level_value`` (``who`` names the caller).
    """
    if not hasattr(misfit, "level_value"):
        raise TypeError(
            f"{who}: {type(misfit).__name__} has no level_value(n, u_owned); it cannot be used "
            f"with a checkpointing state storage (use state_storage = \"memory\")"
        )
    problem = solver.problem
    n_owned = problem.n_owned
    acc = {"J": misfit.level_value(0, problem.u0.x.array[:n_owned]),
           "err": misfit.level_max_error(0, problem.u0.x.array[:n_owned])}
    u = problem.u.x.array

    def take(n: int) -> None:
        acc["J"] += misfit.level_value(n, u[:n_owned])
        acc["err"] = max(acc["err"], misfit.level_max_error(n, u[:n_owned]))

    solver.forward(g, step_callback=take)
    return problem.comm.allreduce(acc["J"], op=MPI.SUM), acc["err"]


def adjoint_with_loss(
    solver: ThetaSolver, misfit, g: np.ndarray, keep_adjoint: bool = False, constants: tuple[str, ...] = ()
) -> tuple[np.ndarray, float, float]:
    """The adjoint sweep after a forward sweep of ``g`` that took no loss; it takes the loss on the way.

    The PDE part of :meth:`ReducedFunctional.value_and_gradient` (no network): the misfit is
    evaluated once per level, in the adjoint sweep (:class:`~femnpde.obs.misfit.AdjointLoss`,
    one ``W r`` per level).  Collective.

    Args:
        solver: The solver whose last :meth:`~femnpde.fem.solver.ThetaSolver.forward` ran with ``g``.
        misfit: The misfit (with ``add_gradient_and_value``, e.g. :class:`~femnpde.obs.misfit.L2Misfit`).
        g: The source values of that forward sweep, shape ``(n_steps + 1, n_owned_source)``.
        keep_adjoint: Passed to :meth:`~femnpde.fem.solver.ThetaSolver.adjoint`.
        constants: Passed to :meth:`~femnpde.fem.solver.ThetaSolver.adjoint`.

    Returns:
        ``(dJ/dg, J, this rank's max_k |(B u^n − d^n)_k| over the levels)``; ``J`` is bitwise
        ``misfit.value(solver.states)``.
    """
    terms = AdjointLoss(misfit)
    R = solver.adjoint(g, terms, keep_adjoint=keep_adjoint, constants=constants)
    return R, terms.loss(), terms.max_error_local


class ReducedFunctional:
    """θ ↦ J(θ) = misfit(u(θ)) with the exact gradient of the discrete loss.

    The last forward sweep is cached: the loss and the gradient at the same θ
    cost one forward sweep (and one adjoint sweep for the gradient).

    Args:
        solver: The time stepper of the PDE problem.
        source: The network coupling.
        misfit: The loss (e.g. :class:`femnpde.obs.misfit.L2Misfit`).
        keep_adjoint: Keep the adjoint field of every level after each
            gradient (see :attr:`adjoint_states`), e.g. to write it out.
        parameters: Physical parameters (constants of the problem's
            residual); the trainable ones follow the model's parameters in
            θ, in this order, and the others are set to their initial value.
    """

    def __init__(
        self,
        solver: ThetaSolver,
        source: NetworkSource,
        misfit,
        keep_adjoint: bool = False,
        parameters: Sequence[PhysicalParameter] = (),
    ) -> None:
        self.solver = solver
        self.source = source
        self.misfit = misfit
        self.keep_adjoint = keep_adjoint
        self.parameters = check_parameters(parameters, tuple(getattr(solver.problem, "constants", {})))
        self._trainable = tuple(p.name for p in self.parameters if p.trainable)
        self._scales = np.array([p.theta_scale for p in self.parameters if p.trainable])
        fixed = {p.name: p.initial for p in self.parameters if not p.trainable}
        if fixed:
            solver.set_constants(fixed)
        self._theta: np.ndarray | None = None
        self._g: np.ndarray | None = None
        self._J: float | None = None
        self._grad: np.ndarray | None = None
        self._max_error_local: float | None = None
        self.n_forward = 0
        self.n_adjoint = 0

    @property
    def n_params(self) -> int:
        """Length of θ: the model's parameters and the trainable physical parameters."""
        return self.source.network.n_params + len(self._trainable)

    @property
    def trainable_parameters(self) -> tuple[str, ...]:
        """Names of the trainable physical parameters (the last entries of θ, in order)."""
        return self._trainable

    @property
    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Lower and upper bounds of θ (``±inf`` where unbounded)."""
        return parameter_bounds(self.source.network.n_params, self.parameters)

    def initial_theta(self) -> np.ndarray:
        """θ from the model's current parameters and the physical parameters' initial values (scaled)."""
        init = {p.name: p.initial for p in self.parameters}
        values = np.array([init[n] for n in self._trainable], dtype=np.float64)
        return np.concatenate([self.source.network.get_params(), values / self._scales])

    def split(self, theta: np.ndarray) -> tuple[np.ndarray, dict[str, float]]:
        """``(model parameters, {name: physical value} of the trainable physical parameters)``."""
        n = self.source.network.n_params
        values = np.asarray(theta[n:], dtype=np.float64) * self._scales
        return theta[:n], dict(zip(self._trainable, values.tolist()))

    @property
    def network(self):
        """The network; its parameters are those of the last θ evaluated."""
        return self.source.network

    @property
    def comm(self):
        """The problem's communicator."""
        return self.solver.problem.comm

    def _forward(self, theta: np.ndarray, loss: bool = True) -> None:
        """The forward sweep at θ unless cached; ``loss=False``: leave the loss to the adjoint
        (:meth:`value_and_gradient`; :attr:`_J` is then None until it ran)."""
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise ValueError(f"ReducedFunctional: theta has shape {theta.shape}, expected ({self.n_params},)")
        # Before the cache test: a rank whose θ drifted must not skip the sweep alone.
        check_replicated(self.comm, theta, "ReducedFunctional: theta")
        if self._theta is not None and np.array_equal(theta, self._theta):
            net_theta, _ = self.split(theta)
            if not np.array_equal(self.source.network.params, net_theta):
                # The parameters were changed since (e.g. restored): set them
                # back to θ, and the activation cache with them.
                self._g = self.source.values(net_theta)
            return
        self._theta = theta.copy()
        self._grad = None
        net_theta, consts = self.split(theta)
        if consts:
            self.solver.set_constants(consts)
        self._g = self.source.values(net_theta)
        states = self.solver.states
        self._J = self._max_error_local = None
        try:
            if not loss:
                self.solver.forward(self._g)
            elif getattr(states, "keeps_all_levels", True):
                self.solver.forward(self._g)
                self._J = self.misfit.value(states)
            else:
                self._J, self._max_error_local = self._streamed_forward()
        except BaseException:
            self._theta = None  # nothing cached for this θ
            raise
        self.n_forward += 1

    def _streamed_forward(self) -> tuple[float, float]:
        """Forward sweep taking the loss level by level (for storages that do not keep every level)."""
        return streamed_forward(self.solver, self.misfit, self._g, "ReducedFunctional")

    def all_states(self) -> np.ndarray:
        """Every state of the last θ, shape ``(n_steps + 1, n_local)`` (local arrays with ghosts).

        With a storage that keeps every level this is its array (a view); with
        a checkpointing storage the forward sweep is run once more and every
        level collected, which takes the memory of all levels (for writing
        output, not during training).
        """
        if self._theta is None:
            raise RuntimeError("ReducedFunctional.all_states: nothing evaluated yet")
        states = self.solver.states
        if getattr(states, "keeps_all_levels", True):
            return states.to_array()
        problem = self.solver.problem
        u = problem.u.x.array
        out = np.empty((self.solver.n_levels, u.size))
        out[0] = problem.u0.x.array

        def collect(n: int) -> None:
            out[n] = u

        self._grad = None  # the replay restarts the storage's schedule
        self.solver.forward(self._g, step_callback=collect)
        return out

    def relative_max_error(self) -> float:
        """``max_{n,j} |u^n_j − h^n_j| / max|h|`` of the last forward sweep (collective)."""
        if self._theta is None:
            raise RuntimeError("ReducedFunctional.relative_max_error: nothing evaluated yet")
        if self._max_error_local is None:
            return self.misfit.relative_max_error(self.solver.states)
        return self.misfit.relative_from_max_error(self._max_error_local)

    def __call__(self, theta: np.ndarray) -> float:
        """The loss J(θ); sets the network's parameters to θ (see the module docstring)."""
        self._forward(theta)
        return self._J

    def derivative(self, theta: np.ndarray | None = None) -> np.ndarray:
        """dJ/dθ at ``theta`` (default: the last θ evaluated), identical on all ranks."""
        if theta is None:
            if self._theta is None:
                raise RuntimeError("ReducedFunctional.derivative: no θ given and none evaluated yet")
            theta = self._theta
        self._forward(theta)
        self._gradient()
        return self._grad.copy()

    def _gradient(self) -> None:
        """The adjoint sweep of the last forward unless cached; it also takes the loss if the forward did not."""
        if self._grad is None:
            with_loss = self._J is None
            try:
                if with_loss:
                    R, self._J, self._max_error_local = adjoint_with_loss(
                        self.solver, self.misfit, self._g, self.keep_adjoint, self._trainable)
                else:
                    R = self.solver.adjoint(self._g, self.misfit.add_gradient, keep_adjoint=self.keep_adjoint,
                                            constants=self._trainable)
            except BaseException:
                if with_loss:
                    self._theta = None  # no loss for this θ: the next call runs the forward again
                raise
            net_theta, _ = self.split(self._theta)
            # The network cache belongs to the θ of the last forward: make sure it is ours.
            if not np.array_equal(self.source.network.params, net_theta):
                self._g = self.source.values(net_theta)
            grad = self.source.vjp(R)
            if self._trainable:
                dc = self.solver.constant_gradient
                grad = np.concatenate([grad, np.array([dc[n] for n in self._trainable]) * self._scales])
            self._grad = grad
            self.n_adjoint += 1

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``(J(θ), dJ/dθ)`` with one forward and one adjoint sweep.

        A misfit with ``add_gradient_and_value`` (every
        :class:`~femnpde.obs.misfit.Misfit`) is evaluated once per level, in
        the adjoint sweep (:class:`~femnpde.obs.misfit.AdjointLoss`): the
        forward takes no loss.  The loss is bitwise the one ``rf(θ)`` returns.
        """
        self._forward(theta, loss=not hasattr(self.misfit, "add_gradient_and_value"))
        self._gradient()
        return self._J, self._grad.copy()

    @property
    def states(self):
        """The states ``u^n`` of the last forward sweep."""
        return self.solver.states

    @property
    def adjoint_states(self):
        """The adjoint ``λ^n`` of the last gradient (needs ``keep_adjoint=True``)."""
        return self.solver.adjoints

    @property
    def source_values(self) -> np.ndarray | None:
        """The network source ``g^n_j`` of the last forward sweep."""
        return self._g
