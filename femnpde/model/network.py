"""One-hidden-layer ("shallow") neural network in the mean-field scaling.

The network is

.. math::

    g_\\theta(t, x) = N^{-\\beta} \\sum_{i=1}^{N} c_i\\,
        \\sigma(w_{t,i}\\, t + w_i \\cdot x + \\eta_i),

with ``N`` hidden neurons, a scaling exponent ``beta`` (the paper's range is
``1/2 < beta < 1``), a scalar time input ``t`` and a spatial input
``x`` in ``R^d`` (``d`` = 1, 2 or 3).  The parameters
``theta = (c, w_t, w_x, eta)`` are stored in one flat ``float64`` vector with
layout ``[c (N), w_t (N), w_x (N*d, row-major N x d), eta (N)]``; the
attributes :attr:`ShallowNetwork.c`, :attr:`ShallowNetwork.w_t`,
:attr:`ShallowNetwork.w_x` and :attr:`ShallowNetwork.eta` are views into it.

Two evaluation modes are provided:

* pointwise, :meth:`ShallowNetwork.__call__` / :meth:`ShallowNetwork.vjp`, for
  scattered points ``(t_m, x_m)``;
* on a tensor grid ``t (n_t,) x x (n_x, d)``,
  :meth:`ShallowNetwork.evaluate_grid` / :meth:`ShallowNetwork.vjp_grid`,
  which is what a time-stepping finite-element solver needs (the network is
  evaluated at every quadrature/DOF point for every time step).  The spatial
  part ``x @ w_x.T + eta`` is computed once, the hidden activations are
  cached, and the vector-Jacobian product reuses them.

Only activation *outputs* are cached; every activation's derivative is
computed from its output (``tanh' = 1 - s**2``, ``sigmoid' = s (1 - s)``,
``softplus' = 1 - exp(-s)``).  On the grid, tanh and sigmoid are separable:
with ``R = 1 / (1 + exp(-k z)) = B_n / (A_j + B_n)``, ``A = exp(-k P)``,
``B = exp(k t w_t)`` (k = 2 for tanh, 1 for sigmoid), an activation costs
one addition and one division, ``tanh = 2R - 1``, ``sigmoid = R`` and
``sigma' = kappa R (1 - R)`` (kappa = 4, 1): the cache then holds ``R``.

Everything is pure numpy and float64.  Heavy work is done with BLAS
matrix-vector products and in-place ufuncs on cache-sized blocks of the grid
(whole time steps, or row blocks of one time step), never with Python loops
over points or neurons; the blocks run on :attr:`ShallowNetwork.threads`
threads (numpy releases the GIL), and per-block partial sums are reduced in
block order, so the results do not depend on the number of threads.  ``tanh`` and ``sigmoid`` are evaluated through ``np.exp``
(several times faster than ``np.tanh`` where numpy lacks a SIMD ``tanh``) and
``softplus`` as ``max(z, 0) + log1p(exp(-|z|))``; all are overflow-free with
absolute errors below 1e-15.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femnpde import defaults as D
from femnpde.model import _grid
from femnpde.model._grid import ShallowGridMixin, _GridCache
from femnpde.model._network_checks import (
    _check_activation,
    _check_beta,
    _check_input_dim,
    _check_max_cache_bytes,
    _check_n_neurons,
    _check_seed,
    _is_int,
)
from femnpde.model._threads import default_threads
from femnpde.model.activations import ACTIVATIONS, activate_inplace as _activate_inplace
from femnpde.model.activations import derivative_from_output as _derivative_from_output
from femnpde.model.base import Model, as_points, as_times
from femnpde.model.scaling import reference_learning_rate

__all__ = ["ACTIVATIONS", "ShallowNetwork", "reference_learning_rate"]


#: Default upper bound (bytes) for the activation cache of ``evaluate_grid``.
_DEFAULT_MAX_CACHE_BYTES = 4 * 1024**3


# ---------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------


class ShallowNetwork(ShallowGridMixin, Model):
    """Shallow network ``g(t, x) = N**-beta * sum_i c_i sigma(w_t,i t + w_i.x + eta_i)``.

    The paper's network; implements :class:`~femnpde.model.base.Model`.

    Reference initialisation: ``c ~ U(-1, 1)`` and ``w_t, w_x, eta ~ N(0, 1)``,
    drawn from ``np.random.default_rng(seed)`` in the order ``c`` (N values),
    ``w_t`` (N), ``w_x`` (N*d, filled row-major into the (N, d) matrix),
    ``eta`` (N).

    Args:
        n_neurons: Number of hidden neurons ``N`` (integer >= 1).
        input_dim: Spatial dimension ``d`` of ``x`` (1, 2 or 3).  The network
            has ``d + 1`` inputs: time ``t`` and ``x``.
        beta: Mean-field scaling exponent; the output is multiplied by
            ``N**-beta``.  The theory assumes ``1/2 < beta < 1`` (default
            2/3); any ``0 < beta <= 1`` is accepted (``beta = 1`` is the
            classical mean-field scaling, ``beta = 1/2`` the NTK scaling).
        activation: Hidden activation, one of :data:`ACTIVATIONS`.
        seed: Seed of the reference initialisation; ``None`` draws fresh OS
            entropy (not reproducible).
        max_cache_bytes: Upper bound (bytes) on the activation cache kept by
            :meth:`evaluate_grid` (``n_t * n_x * N * 8`` bytes).  If the cache
            would be larger, it is not stored; :meth:`vjp_grid` then
            recomputes the activations block by block from the stored ``t``
            and ``x`` (same result, roughly one extra forward pass of work).
            ``0`` disables the activation cache entirely.  Default 4 GiB.
            For tanh and sigmoid on the grid (the separable form, see the
            module documentation) the bound is at most 64 MiB: recomputing
            is faster than a larger cache.
        threads: Threads over blocks of the grid in :meth:`evaluate_grid`
            and :meth:`vjp_grid` (the results do not depend on it); default
            :func:`femnpde.model._threads.default_threads` (``FEMNPDE_NUM_THREADS``,
            else ``OMP_NUM_THREADS``, else the available CPUs).

    Raises:
        ValueError: If an argument is invalid; the message names the
            argument, the bad value and the allowed values.
    """

    def __init__(
        self,
        n_neurons: int,
        input_dim: int,
        beta: float = D.NETWORK_BETA,
        activation: str = D.NETWORK_ACTIVATION,
        seed: int | None = D.NETWORK_SEED,
        *,
        max_cache_bytes: int = _DEFAULT_MAX_CACHE_BYTES,
        threads: int | None = None,
    ) -> None:
        self._configure(n_neurons, input_dim, beta, activation, max_cache_bytes)
        if threads is not None:
            self.threads = threads
        self._reference_init(_check_seed(seed))

    # -- construction helpers ------------------------------------------------

    def _configure(
        self,
        n_neurons: Any,
        input_dim: Any,
        beta: Any,
        activation: Any,
        max_cache_bytes: Any,
    ) -> None:
        """Validate hyper-parameters and allocate the parameter buffer."""
        self._n = _check_n_neurons(n_neurons)
        self._d = _check_input_dim(input_dim)
        self._beta = _check_beta(beta)
        self._activation = _check_activation(activation)
        self._max_cache_bytes = _check_max_cache_bytes(max_cache_bytes)
        self._threads = default_threads()
        self._scale = float(self._n) ** (-self._beta)
        n, d = self._n, self._d
        self._params = np.zeros(n * (3 + d), dtype=np.float64)
        # Fixed views into the flat buffer; the buffer is never reallocated
        # (assignments copy into it), so the views stay valid forever.
        self._c = self._params[:n]
        self._w_t = self._params[n : 2 * n]
        self._w_x = self._params[2 * n : (2 + d) * n].reshape(n, d)
        self._eta = self._params[(2 + d) * n :]
        self._grid_cache: _GridCache | None = None
        # Activation buffer of the last cached evaluate_grid; kept (even when
        # the cache is invalidated by a parameter update) so that repeated
        # evaluations on grids of the same shape reuse it.  Freed by
        # clear_cache().
        self._s_buffer: np.ndarray | None = None

    def _reference_init(self, seed: int | None) -> None:
        """Draw the reference initialisation (order: c, w_t, w_x, eta)."""
        rng = np.random.default_rng(seed)
        n, d = self._n, self._d
        self._c[:] = rng.uniform(-1.0, 1.0, size=n)
        self._w_t[:] = rng.standard_normal(n)
        self._w_x[:] = rng.standard_normal((n, d))
        self._eta[:] = rng.standard_normal(n)

    # -- read-only hyper-parameters ------------------------------------------

    @property
    def n_neurons(self) -> int:
        """Number of hidden neurons ``N``."""
        return self._n

    @property
    def input_dim(self) -> int:
        """Spatial input dimension ``d``."""
        return self._d

    @property
    def beta(self) -> float:
        """Mean-field scaling exponent."""
        return self._beta

    @property
    def activation(self) -> str:
        """Name of the hidden activation."""
        return self._activation

    @property
    def max_cache_bytes(self) -> int:
        """Upper bound (bytes) on the activation cache of :meth:`evaluate_grid`."""
        return self._max_cache_bytes

    @property
    def scale(self) -> float:
        """Output scaling ``N ** -beta``."""
        return self._scale

    @property
    def threads(self) -> int:
        """Threads of the grid evaluation and its VJP (results do not depend on it)."""
        return self._threads

    @threads.setter
    def threads(self, value: int) -> None:
        if not _is_int(value) or value < 1:
            raise ValueError(f"threads must be an integer >= 1, got {value!r}")
        self._threads = int(value)

    @property
    def n_params(self) -> int:
        """Number of scalar parameters, ``N * (3 + d)``."""
        return self._params.size

    # -- parameters -----------------------------------------------------------

    @property
    def params(self) -> np.ndarray:
        """Flat parameter vector ``[c, w_t, w_x (row-major N x d), eta]``.

        The returned array is the network's own buffer (not a copy); in-place
        changes modify the network.  Assigning ``net.params = v`` copies ``v``
        (shape ``(n_params,)``) into the buffer and discards the grid cache.
        """
        return self._params

    @params.setter
    def params(self, value: np.ndarray) -> None:
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != self._params.shape:
            raise ValueError(
                f"params must have shape ({self.n_params},), got shape {arr.shape}"
            )
        self._grid_cache = None  # stale; the activation buffer is kept for reuse
        np.copyto(self._params, arr)

    def _assign_block(self, name: str, view: np.ndarray, value: np.ndarray) -> None:
        arr = np.asarray(value, dtype=np.float64)
        if arr.shape != view.shape:
            raise ValueError(
                f"{name} must have shape {view.shape}, got shape {arr.shape}"
            )
        self._grid_cache = None  # stale; the activation buffer is kept for reuse
        np.copyto(view, arr)

    @property
    def c(self) -> np.ndarray:
        """Output weights, shape ``(N,)`` (view into :attr:`params`)."""
        return self._c

    @c.setter
    def c(self, value: np.ndarray) -> None:
        self._assign_block("c", self._c, value)

    @property
    def w_t(self) -> np.ndarray:
        """Time weights, shape ``(N,)`` (view into :attr:`params`)."""
        return self._w_t

    @w_t.setter
    def w_t(self, value: np.ndarray) -> None:
        self._assign_block("w_t", self._w_t, value)

    @property
    def w_x(self) -> np.ndarray:
        """Spatial weights, shape ``(N, d)`` (view into :attr:`params`)."""
        return self._w_x

    @w_x.setter
    def w_x(self, value: np.ndarray) -> None:
        self._assign_block("w_x", self._w_x, value)

    @property
    def eta(self) -> np.ndarray:
        """Biases, shape ``(N,)`` (view into :attr:`params`)."""
        return self._eta

    @eta.setter
    def eta(self, value: np.ndarray) -> None:
        self._assign_block("eta", self._eta, value)

    def copy(self) -> ShallowNetwork:
        """Return an independent copy (same hyper-parameters and parameters, no cache)."""
        new = object.__new__(type(self))
        new._configure(
            self._n, self._d, self._beta, self._activation, self._max_cache_bytes
        )
        new._threads = self._threads
        np.copyto(new._params, self._params)
        return new

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(n_neurons={self._n}, input_dim={self._d}, "
            f"beta={self._beta!r}, activation={self._activation!r})"
        )

    # -- input checking -------------------------------------------------------

    def _as_times(self, t: np.ndarray, name: str = "t") -> np.ndarray:
        return as_times(t, name)

    def _as_points(self, x: np.ndarray, name: str = "x") -> np.ndarray:
        return as_points(x, self._d, name)

    # -- pointwise evaluation ---------------------------------------------------

    def _rows_per_chunk(self) -> int:
        return max(1, _grid._CHUNK_ELEMS // self._n)  # one home: tests patch _grid._CHUNK_ELEMS

    def _augmented(self, t: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Return ``A = [t, x, 1]`` (M, d+2) and ``W = [w_t; w_x.T; eta]`` (d+2, N)."""
        a = np.empty((t.size, self._d + 2))
        a[:, 0] = t
        a[:, 1 : 1 + self._d] = x
        a[:, -1] = 1.0
        w = np.empty((self._d + 2, self._n))
        w[0] = self._w_t
        w[1 : 1 + self._d] = self._w_x.T
        w[-1] = self._eta
        return a, w

    def _check_pointwise(
        self, t: np.ndarray, x: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        t = self._as_times(t)
        x = self._as_points(x)
        if x.shape[0] != t.size:
            raise ValueError(
                f"t and x must hold the same number of points, got {t.size} and {x.shape[0]}"
            )
        return t, x

    def __call__(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Evaluate the network at scattered points.

        Args:
            t: Times, shape ``(M,)``.
            x: Points, shape ``(M, d)`` (shape ``(M,)`` is accepted for d = 1).

        Returns:
            ``g(t_m, x_m)``, shape ``(M,)``.

        Raises:
            ValueError: On inconsistent shapes.
        """
        t, x = self._check_pointwise(t, x)
        a, w = self._augmented(t, x)
        m, n = t.size, self._n
        out = np.empty(m)
        rows = min(self._rows_per_chunk(), m)
        zbuf = np.empty((rows, n))
        tmp = np.empty((rows, n)) if self._activation == "softplus" else None
        with np.errstate(over="ignore", under="ignore"):
            for m0 in range(0, m, rows):
                k = min(rows, m - m0)
                z = zbuf[:k]
                np.matmul(a[m0 : m0 + k], w, out=z)
                _activate_inplace(z, self._activation, None if tmp is None else tmp[:k])
                np.matmul(z, self._c, out=out[m0 : m0 + k])
        out *= self._scale
        return out

    def vjp(self, t: np.ndarray, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        """Vector-Jacobian product at scattered points.

        Args:
            t: Times, shape ``(M,)``.
            x: Points, shape ``(M, d)`` (shape ``(M,)`` is accepted for d = 1).
            r: Cotangent weights, shape ``(M,)``.

        Returns:
            ``d/dtheta sum_m r_m g(t_m, x_m)`` as a flat vector of shape
            ``(n_params,)`` with the layout of :attr:`params`.

        Raises:
            ValueError: On inconsistent shapes.
        """
        t, x = self._check_pointwise(t, x)
        r = np.ascontiguousarray(r, dtype=np.float64)
        if r.shape != t.shape:
            raise ValueError(f"r must have shape {t.shape}, got shape {r.shape}")
        m, n, d = t.size, self._n, self._d
        a, w = self._augmented(t, x)
        ra = a * r[:, None]  # rows r_m * (t_m, x_m, 1)
        dc = np.zeros(n)
        acc = np.zeros((n, d + 2))  # columns: t, x_1..x_d, 1
        rows = min(self._rows_per_chunk(), m)
        sbuf = np.empty((rows, n))
        qbuf = np.empty((rows, n))
        with np.errstate(over="ignore", under="ignore"):
            for m0 in range(0, m, rows):
                k = min(rows, m - m0)
                s, q = sbuf[:k], qbuf[:k]
                np.matmul(a[m0 : m0 + k], w, out=s)
                _activate_inplace(s, self._activation, q)
                dc += s.T @ r[m0 : m0 + k]
                _derivative_from_output(s, q, self._activation)
                acc += q.T @ ra[m0 : m0 + k]
        return self._assemble_gradient(dc, acc[:, 0], acc[:, 1 : 1 + d], acc[:, -1])

    def _assemble_gradient(
        self, dc: np.ndarray, awt: np.ndarray, awx: np.ndarray, aeta: np.ndarray
    ) -> np.ndarray:
        """Build the flat gradient from raw (unscaled) accumulations.

        ``dc`` is ``sum r sigma`` and ``awt, awx, aeta`` are
        ``sum r sigma' (t, x, 1)``; the scale factors are applied here.
        """
        n, d = self._n, self._d
        sc = self._scale * self._c
        g = np.empty_like(self._params)
        g[:n] = self._scale * dc
        g[n : 2 * n] = sc * awt
        g[2 * n : (2 + d) * n] = (sc[:, None] * awx).ravel()
        g[(2 + d) * n :] = sc * aeta
        return g

    # -- serialisation ---------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Return the hyper-parameters and a copy of the parameters.

        Returns:
            ``{"n_neurons", "input_dim", "beta", "activation", "params"}``.
        """
        return {
            "n_neurons": self._n,
            "input_dim": self._d,
            "beta": self._beta,
            "activation": self._activation,
            "params": self._params.copy(),
        }

    @classmethod
    def from_state_dict(
        cls, d: dict[str, Any], *, max_cache_bytes: int = _DEFAULT_MAX_CACHE_BYTES
    ) -> ShallowNetwork:
        """Rebuild a network from :meth:`state_dict` output.

        Args:
            d: Mapping with keys ``n_neurons, input_dim, beta, activation, params``.
            max_cache_bytes: See the class documentation.

        Returns:
            A new network (parameters copied from ``d["params"]``).

        Raises:
            ValueError: If a key is missing or a value is invalid.
        """
        keys = ("n_neurons", "input_dim", "beta", "activation", "params")
        missing = [k for k in keys if k not in d]
        if missing:
            raise ValueError(
                f"state dict is missing the keys {missing}; required: {keys}"
            )
        net = object.__new__(cls)
        net._configure(
            d["n_neurons"], d["input_dim"], d["beta"], d["activation"], max_cache_bytes
        )
        net.params = d["params"]
        return net
