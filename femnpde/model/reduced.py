"""The reduced functional θ ↦ J(u(θ)) and its exact discrete gradient.

:class:`NetworkSource` couples a network to the source space of a problem:
``g^n_j = g_θ(t_n, x_j)`` at the owned source dofs.  :class:`ReducedFunctional`
puts the PDE problem (:class:`~femnpde.fem.solver.ThetaSolver`), the misfit and the
network together, in the shape of pyadjoint's ``ReducedFunctional``:
``rf(theta)`` returns J and ``rf.derivative()`` its gradient, both of the
*discretised* loss (discretise-then-optimise).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from mpi4py import MPI

from femnpde.fem.problem import ParabolicProblem
from femnpde.fem.solver import ThetaSolver
from femnpde.model.base import Model
from femnpde.model.parameters import PhysicalParameter, check_parameters, parameter_bounds

__all__ = ["NetworkSource", "FunctionSource", "ReducedFunctional"]


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

    Args:
        problem: The problem whose source space is sampled.
        function: ``function(t, x) -> values`` with ``x`` of shape ``(npts, gdim)``.
    """

    def __init__(self, problem: ParabolicProblem, function: Callable[[float, np.ndarray], np.ndarray]) -> None:
        self.problem = problem
        self.function = function
        self.points = problem.source_points()
        self.times = problem.time.times

    def values(self) -> np.ndarray:
        """``g*(t_n, x_j)``, shape ``(n_steps + 1, n_owned_source)``."""
        out = np.empty((len(self.times), len(self.points)))
        for n, t in enumerate(self.times):
            out[n] = np.broadcast_to(np.asarray(self.function(float(t), self.points), dtype=np.float64), out[n].shape)
        return out


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
    def comm(self):
        """The problem's communicator."""
        return self.solver.problem.comm

    def _forward(self, theta: np.ndarray) -> None:
        theta = np.asarray(theta, dtype=np.float64)
        if theta.shape != (self.n_params,):
            raise ValueError(f"ReducedFunctional: theta has shape {theta.shape}, expected ({self.n_params},)")
        if self._theta is not None and np.array_equal(theta, self._theta):
            return
        self._theta = theta.copy()
        self._grad = None
        net_theta, consts = self.split(theta)
        if consts:
            self.solver.set_constants(consts)
        self._g = self.source.values(net_theta)
        self.solver.forward(self._g)
        self._J = self.misfit.value(self.solver.states)
        self.n_forward += 1

    def __call__(self, theta: np.ndarray) -> float:
        """The loss J(θ)."""
        self._forward(theta)
        return self._J

    def derivative(self, theta: np.ndarray | None = None) -> np.ndarray:
        """dJ/dθ at ``theta`` (default: the last θ evaluated), identical on all ranks."""
        if theta is None:
            if self._theta is None:
                raise RuntimeError("ReducedFunctional.derivative: no θ given and none evaluated yet")
            theta = self._theta
        self._forward(theta)
        if self._grad is None:
            R = self.solver.adjoint(
                self._g, self.misfit.add_gradient, keep_adjoint=self.keep_adjoint, constants=self._trainable
            )
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
        return self._grad.copy()

    def value_and_gradient(self, theta: np.ndarray) -> tuple[float, np.ndarray]:
        """``(J(θ), dJ/dθ)`` with one forward and one adjoint sweep."""
        return self(theta), self.derivative(theta)

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
