"""The model interface: what is trained.

A *model* is a differentiable map ``g_θ(t, x)`` from time ``t`` and a point
``x ∈ R^d`` to ``m >= 1`` outputs, with all its trainable parameters ``θ`` in
one flat ``float64`` vector.  :class:`~femnpde.model.reduced.NetworkSource`
and everything downstream (the reduced functional, the optimisers, the
checkpoints) use only this interface, so any implementation can be trained:
:class:`~femnpde.model.network.ShallowNetwork` (the paper's network),
:class:`~femnpde.model.mlp.MLP` (deep numpy networks) and
:class:`~femnpde.model.jax_model.JaxModel` (user JAX functions and modules).

Shapes: with ``m = n_outputs``, pointwise values have shape ``(M,)`` for
``m = 1`` and ``(M, m)`` otherwise; grid values have shape ``(n_t, n_x)``
for ``m = 1`` and ``(n_t, n_x, m)`` otherwise (the last axis is the output,
``G[n, j, k] = g_k(t_n, x_j)``).  Cotangents of a VJP have the shape of the
values they weigh.

Protocol of the grid evaluation: :meth:`Model.evaluate_grid` with
``cache=True`` keeps what :meth:`Model.vjp_grid` needs (activations,
a snapshot of ``θ``); ``vjp_grid`` raises if there is no cache or ``θ``
changed since.
"""

from __future__ import annotations

import abc
from typing import Any

import numpy as np

__all__ = ["Model", "FlatModel", "as_points", "as_times"]


def as_times(t: Any, name: str = "t") -> np.ndarray:
    """``t`` as a contiguous 1-D float64 array.

    Raises:
        ValueError: If ``t`` is not one-dimensional.
    """
    arr = np.ascontiguousarray(t, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of times, got shape {arr.shape}")
    return arr


def as_points(x: Any, dim: int, name: str = "x") -> np.ndarray:
    """``x`` as a contiguous float64 array of shape ``(n_points, dim)``.

    A 1-D array is accepted for ``dim = 1``.

    Raises:
        ValueError: On a wrong shape.
    """
    arr = np.ascontiguousarray(x, dtype=np.float64)
    if arr.ndim == 1 and dim == 1:
        arr = arr.reshape(-1, 1)
    if arr.ndim != 2 or arr.shape[1] != dim:
        raise ValueError(f"{name} must have shape (n_points, {dim}), got shape {arr.shape}")
    return arr


class Model(abc.ABC):
    """A trainable model ``g_θ(t, x)`` with a flat parameter vector and exact VJPs.

    Subclasses implement the abstract members; the concrete ones
    (:meth:`get_params`, :meth:`set_params`, :meth:`load_state_dict`,
    :meth:`clear_cache`, :attr:`n_outputs`) have generic defaults.
    """

    # -- description ------------------------------------------------------------

    @property
    @abc.abstractmethod
    def input_dim(self) -> int:
        """Spatial dimension ``d`` of ``x`` (the model has ``d + 1`` inputs)."""

    @property
    def n_outputs(self) -> int:
        """Number of outputs ``m`` (coefficients of the residual it feeds)."""
        return 1

    @property
    @abc.abstractmethod
    def n_params(self) -> int:
        """Number of scalar parameters."""

    # -- parameters -------------------------------------------------------------

    @property
    @abc.abstractmethod
    def params(self) -> np.ndarray:
        """The flat float64 parameter vector (the model's own buffer, or a copy)."""

    @params.setter
    @abc.abstractmethod
    def params(self, value: np.ndarray) -> None: ...

    def get_params(self) -> np.ndarray:
        """A copy of the flat parameter vector."""
        return np.array(self.params, dtype=np.float64, copy=True)

    def set_params(self, theta: np.ndarray) -> None:
        """Set the parameters from a flat vector of length :attr:`n_params`."""
        self.params = theta

    # -- evaluation -------------------------------------------------------------

    @abc.abstractmethod
    def __call__(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Values at scattered points ``(t_m, x_m)``: shape ``(M,)`` or ``(M, m)``."""

    @abc.abstractmethod
    def vjp(self, t: np.ndarray, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        """``d/dθ Σ r · g(t_m, x_m)`` at scattered points, shape ``(n_params,)``."""

    @abc.abstractmethod
    def evaluate_grid(self, t: np.ndarray, x: np.ndarray, cache: bool = True) -> np.ndarray:
        """Values on the grid ``t (n_t,) × x (n_x, d)``: shape ``(n_t, n_x)`` or ``(n_t, n_x, m)``.

        With ``cache=True`` keep what :meth:`vjp_grid` needs; with
        ``cache=False`` discard any previous cache.
        """

    @abc.abstractmethod
    def vjp_grid(self, r: np.ndarray) -> np.ndarray:
        """``d/dθ Σ r · G`` for the last cached :meth:`evaluate_grid`, shape ``(n_params,)``."""

    def clear_cache(self) -> None:
        """Discard the cache of :meth:`evaluate_grid` (default: nothing to discard)."""

    # -- checkpoints ------------------------------------------------------------

    @abc.abstractmethod
    def state_dict(self) -> dict[str, Any]:
        """Hyper-parameters (plain scalars/strings/lists) and ``"params"`` (a copy)."""

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the parameters of :meth:`state_dict` output.

        Every hyper-parameter in ``state`` must equal this model's.

        Raises:
            ValueError: If ``"params"`` is missing or a hyper-parameter differs
                (the message names the key, both values).
        """
        if "params" not in state:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state has no 'params' key")
        own = self.state_dict()
        for key, value in own.items():
            if key == "params":
                continue
            if key not in state:
                raise ValueError(f"{type(self).__name__}.load_state_dict: the state has no {key!r} key")
            theirs = state[key]
            same = np.array_equal(np.asarray(theirs), np.asarray(value)) if not isinstance(value, str) else (
                theirs == value
            )
            if not same:
                raise ValueError(
                    f"{type(self).__name__}.load_state_dict: {key} = {theirs!r} in the state, "
                    f"but this model has {key} = {value!r}"
                )
        self.params = np.asarray(state["params"], dtype=np.float64)

    # -- helpers ----------------------------------------------------------------

    def _value_shape(self, lead: tuple[int, ...]) -> tuple[int, ...]:
        """Shape of values with leading shape ``lead``: ``lead`` or ``lead + (m,)``."""
        return lead if self.n_outputs == 1 else (*lead, self.n_outputs)


class FlatModel(Model):
    """A :class:`Model` whose parameters are one float64 buffer.

    Subclasses set ``self._d`` (the spatial input dimension), ``self._m``
    (the number of outputs), ``self._params`` (the flat buffer) and
    ``self._cache`` (what :meth:`evaluate_grid` keeps for :meth:`vjp_grid`);
    the description, parameter and cache members are implemented here once.
    """

    @property
    def input_dim(self) -> int:
        """Spatial dimension ``d`` of ``x`` (the model has ``d + 1`` inputs)."""
        return self._d

    @property
    def n_outputs(self) -> int:
        """Number of outputs ``m``."""
        return self._m

    @property
    def n_params(self) -> int:
        """Number of scalar parameters."""
        return self._params.size

    @property
    def params(self) -> np.ndarray:
        """The flat parameter buffer (assigning copies into it and drops the cache)."""
        return self._params

    @params.setter
    def params(self, value: np.ndarray) -> None:
        self._copy_into_params(value)

    def clear_cache(self) -> None:
        """Discard the cache ``self._cache`` of :meth:`evaluate_grid`."""
        self._cache = None

    def _inputs(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Points ``(t_i, x_i)`` as rows of shape ``(n, d + 1)``."""
        t = as_times(t)
        x = as_points(x, self._d)
        if x.shape[0] != t.size:
            raise ValueError(
                f"{type(self).__name__}: t and x must hold the same number of points, got {t.size} and {x.shape[0]}"
            )
        return np.column_stack([t, x])

    def _copy_into_params(self, value: np.ndarray) -> None:
        """Copy ``value`` into the flat buffer ``self._params`` (shape checked) and drop ``self._cache``.

        A helper for models that keep their parameters in one float64 buffer.
        """
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != self._params.shape:
            raise ValueError(
                f"{type(self).__name__}: params must have shape ({self._params.size},), got shape {arr.shape}"
            )
        self._cache = None
        np.copyto(self._params, arr)
