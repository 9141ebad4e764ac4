"""User JAX functions and modules as models (optional: ``pip install femnpde[jax]``).

A JAX model is a pair ``(apply, params)``: ``params`` any pytree of arrays
(a dict of ``jax.numpy`` arrays, Flax ``variables``, an Equinox module's
array leaves, ...) and ``apply(params, tx) -> y`` a function of a batch of
inputs ``tx`` of shape ``(M, d + 1)`` (columns ``t, x_1, .., x_d``)
returning ``(M,)`` (one output) or ``(M, m)`` values.  Flax:
``apply = lambda p, tx: module.apply(p, tx)``; Equinox:
``params, static = eqx.partition(model, eqx.is_array)`` and
``apply = lambda p, tx: jax.vmap(eqx.combine(p, static))(tx)``.

:class:`JaxModel` flattens ``params`` into the flat float64 vector θ
(``jax.flatten_util.ravel_pytree``), evaluates the whole time × space grid
in one jit-compiled batched call and takes the VJP from ``jax.vjp``: the
forward keeps the VJP closure (the residuals of the forward pass) and
:meth:`JaxModel.vjp_grid` applies it, also jit-compiled.  ``x64=True``
(default) switches on ``jax_enable_x64`` so that everything is float64 like
the finite-element side.  JAX runs on its default device: on a machine with a
GPU and a CUDA build of jaxlib the network runs there without code changes
(values and gradients come back to the host as numpy arrays).

JAX is imported when a :class:`JaxModel` is created, never at ``femnpde``
import time; without JAX the error names the extra ``femnpde[jax]``.

In a run configuration: ``[network] kind = "jax"``,
``factory = "package.module:function"`` (imported like ``pde.residual``),
called as ``function(input_dim=d, n_outputs=m, seed=seed, **options)`` and
returning ``(apply, params)``; :func:`mlp_factory` is a plain ``jax.numpy``
example (``factory = "femnpde.model.jax_model:mlp_factory"``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from femnpde.model.base import FlatModel, as_points, as_times

__all__ = ["JaxModel", "import_jax", "mlp_factory"]


def import_jax(x64: bool = True):
    """Import and return ``jax`` (switching on float64 if ``x64``).

    Raises:
        ModuleNotFoundError: JAX is not installed (the message names the extra).
    """
    try:
        jax = importlib.import_module("jax")
        importlib.import_module("jax.flatten_util")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "JAX models (network.kind = 'jax', femnpde.model.jax_model) need JAX, which is not installed: "
            "pip install 'femnpde[jax]' (or pip install jax)"
        ) from err
    if x64:
        jax.config.update("jax_enable_x64", True)
    return jax


def mlp_factory(
    input_dim: int,
    n_outputs: int = 1,
    seed: int = 0,
    hidden: Sequence[int] = (32, 32),
    activation: str = "tanh",
) -> tuple[Callable[[Any, Any], Any], dict[str, Any]]:
    """A plain ``jax.numpy`` MLP: Glorot-uniform weights, zero biases.

    Args:
        input_dim: Spatial dimension ``d`` (inputs ``t, x``).
        n_outputs: Outputs ``m``.
        seed: Seed of ``jax.random.PRNGKey``.
        hidden: Hidden widths.
        activation: ``"tanh"``, ``"sigmoid"`` or ``"softplus"``.

    Returns:
        ``(apply, params)`` as described in the module documentation.
    """
    jax = import_jax()
    jnp = jax.numpy
    acts = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "softplus": jax.nn.softplus}
    if activation not in acts:
        raise ValueError(f"mlp_factory: activation must be one of {tuple(acts)}, got {activation!r}")
    sigma = acts[activation]
    sizes = [input_dim + 1, *[int(h) for h in hidden], int(n_outputs)]
    key = jax.random.PRNGKey(int(seed))
    params = []
    for fan_in, fan_out in zip(sizes[:-1], sizes[1:]):
        key, sub = jax.random.split(key)
        a = float(np.sqrt(6.0 / (fan_in + fan_out)))
        params.append({"W": jax.random.uniform(sub, (fan_in, fan_out), jnp.float64, -a, a),
                       "b": jnp.zeros(fan_out, jnp.float64)})

    def apply(p, tx):
        h = tx
        for layer in p[:-1]:
            h = sigma(h @ layer["W"] + layer["b"])
        y = h @ p[-1]["W"] + p[-1]["b"]
        return y[:, 0] if n_outputs == 1 else y

    return apply, params


class JaxModel(FlatModel):
    """A user JAX function as a :class:`~femnpde.model.base.Model`.

    Args:
        apply: ``apply(params, tx) -> y`` with ``tx`` of shape ``(M, d + 1)``.
        params: The initial parameter pytree.
        input_dim: Spatial dimension ``d``.
        n_outputs: Number of outputs ``m`` (``apply`` returns ``(M,)`` for 1, ``(M, m)`` else).
        x64: Switch on ``jax_enable_x64`` (float64 everywhere; default).

    Raises:
        ModuleNotFoundError: JAX is not installed.
        ValueError: ``apply`` does not return the declared shape, or ``params`` has no float leaves.
    """

    def __init__(
        self,
        apply: Callable[[Any, Any], Any],
        params: Any,
        input_dim: int,
        n_outputs: int = 1,
        *,
        x64: bool = True,
    ) -> None:
        jax = import_jax(x64)
        self._jax = jax
        if input_dim not in (1, 2, 3) or isinstance(input_dim, bool):
            raise ValueError(f"JaxModel: input_dim must be 1, 2 or 3, got {input_dim!r}")
        if not (isinstance(n_outputs, int) and n_outputs >= 1):
            raise ValueError(f"JaxModel: n_outputs must be an integer >= 1, got {n_outputs!r}")
        self._d, self._m = int(input_dim), int(n_outputs)
        flat, unravel = jax.flatten_util.ravel_pytree(params)
        if flat.size == 0:
            raise ValueError("JaxModel: the parameter pytree has no array leaves")
        self._dtype = flat.dtype
        self._params = np.array(flat, dtype=np.float64)
        self._apply = apply

        def f(theta, tx):
            return apply(unravel(theta.astype(self._dtype)), tx)

        self._f = jax.jit(f)
        self._f_vjp = jax.jit(lambda theta, tx: jax.vjp(lambda th: f(th, tx), theta))
        self._apply_vjp = jax.jit(lambda fn, r: fn(r)[0])
        self._cache: tuple[np.ndarray, tuple[int, int], Any] | None = None
        probe = np.asarray(self._f(self._params, np.zeros((2, self._d + 1))))
        if probe.shape != self._value_shape((2,)):
            raise ValueError(
                f"JaxModel: apply(params, tx) returned shape {probe.shape} for tx of shape (2, {self._d + 1}); "
                f"expected {self._value_shape((2,))} for n_outputs = {self._m}"
            )

    # -- evaluation (description, parameters, inputs: FlatModel) ---------------

    @staticmethod
    def _grid_inputs(t: np.ndarray, x: np.ndarray) -> np.ndarray:
        tx = np.empty((t.size, x.shape[0], x.shape[1] + 1))
        tx[..., 0] = t[:, None]
        tx[..., 1:] = x[None]
        return tx.reshape(-1, x.shape[1] + 1)

    def __call__(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        return np.asarray(self._f(self._params, self._inputs(t, x)), dtype=np.float64)

    def vjp(self, t: np.ndarray, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        tx = self._inputs(t, x)
        r = np.asarray(r, dtype=np.float64)
        if r.shape != self._value_shape((tx.shape[0],)):
            raise ValueError(f"JaxModel.vjp: r must have shape {self._value_shape((tx.shape[0],))}, got {r.shape}")
        _, fn = self._f_vjp(self._params, tx)
        return np.asarray(self._apply_vjp(fn, r.astype(self._dtype)), dtype=np.float64)

    def evaluate_grid(self, t: np.ndarray, x: np.ndarray, cache: bool = True) -> np.ndarray:
        t = as_times(t)
        x = as_points(x, self._d)
        self._cache = None
        tx = self._grid_inputs(t, x)
        if cache:
            y, fn = self._f_vjp(self._params, tx)
            self._cache = (self._params.copy(), (t.size, x.shape[0]), fn)
        else:
            y = self._f(self._params, tx)
        return np.asarray(y, dtype=np.float64).reshape(self._value_shape((t.size, x.shape[0])))

    def vjp_grid(self, r: np.ndarray) -> np.ndarray:
        if self._cache is None:
            raise RuntimeError(
                "JaxModel.vjp_grid: no cached grid evaluation; call evaluate_grid(t, x, cache=True) first"
            )
        params, (n_t, n_x), fn = self._cache
        if not np.array_equal(params, self._params):
            raise RuntimeError("JaxModel.vjp_grid: the parameters changed since evaluate_grid; evaluate again first")
        r = np.asarray(r, dtype=np.float64)
        if r.shape != self._value_shape((n_t, n_x)):
            raise ValueError(f"JaxModel.vjp_grid: r must have shape {self._value_shape((n_t, n_x))}, got {r.shape}")
        r = r.reshape(self._value_shape((n_t * n_x,))).astype(self._dtype)
        return np.asarray(self._apply_vjp(fn, r), dtype=np.float64)

    # -- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "jax", "input_dim", "n_outputs", "n_params", "params"}`` (the function itself is code)."""
        return {
            "kind": "jax",
            "input_dim": self._d,
            "n_outputs": self._m,
            "n_params": self.n_params,
            "params": self._params.copy(),
        }

    def __repr__(self) -> str:
        return f"JaxModel(input_dim={self._d}, n_outputs={self._m}, n_params={self.n_params})"
