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

import math
from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from femnpde.model._threads import default_threads, run_ranges
from femnpde.model.activations import ACTIVATIONS, activate_inplace as _activate_inplace
from femnpde.model.activations import derivative_from_output as _derivative_from_output
from femnpde.model.base import Model, as_points, as_times

__all__ = ["ACTIVATIONS", "ShallowNetwork", "reference_learning_rate"]


#: Default upper bound (bytes) for the activation cache of ``evaluate_grid``.
_DEFAULT_MAX_CACHE_BYTES = 4 * 1024**3

#: Number of float64 entries (512 KiB) in one chunk of the (rows x neurons)
#: pre-activation matrix.  All elementwise work is done chunk by chunk so that
#: the several passes of an activation run in the CPU cache; a chunk holds
#: whole time steps (grid mode) if they fit, otherwise a block of rows of a
#: single time step (at least one row).
_CHUNK_ELEMS = 1 << 16

#: Activation cache bound (bytes) when tanh/sigmoid use the separable form R:
#: beyond it R is recomputed in vjp_grid (two passes over each block in the
#: CPU cache), which is faster than the memory traffic of a larger cache.
_RFORM_MAX_CACHE_BYTES = 64 * 1024**2


def _grid_blocks(n_t: int, n_x: int, n: int) -> Iterator[tuple[int, int, int, int]]:
    """Yield ``(n0, n1, j0, j1)`` blocks covering the ``n_t x n_x`` grid.

    Either a block holds whole time steps (``j0, j1 = 0, n_x``) or a row range
    of a single time step (``n1 = n0 + 1``); in both cases the block of the
    ``(n_t, n_x, N)`` activation array is contiguous and has at most
    ``max(_CHUNK_ELEMS, N)`` entries.
    """
    per_time = n_x * n
    if per_time <= _CHUNK_ELEMS:
        k = max(1, _CHUNK_ELEMS // max(per_time, 1))
        for n0 in range(0, n_t, k):
            yield n0, min(n0 + k, n_t), 0, n_x
    else:
        rows = max(1, _CHUNK_ELEMS // n)
        for n0 in range(n_t):
            for j0 in range(0, n_x, rows):
                yield n0, n0 + 1, j0, min(j0 + rows, n_x)


# ---------------------------------------------------------------------------
# argument validation helpers
# ---------------------------------------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool)


def _check_n_neurons(n_neurons: Any) -> int:
    if not _is_int(n_neurons) or n_neurons < 1:
        raise ValueError(f"n_neurons must be an integer >= 1, got {n_neurons!r}")
    return int(n_neurons)


def _check_input_dim(input_dim: Any) -> int:
    if not _is_int(input_dim) or input_dim not in (1, 2, 3):
        raise ValueError(f"input_dim must be 1, 2 or 3, got {input_dim!r}")
    return int(input_dim)


def _check_beta(beta: Any) -> float:
    if (
        isinstance(beta, bool)
        or not isinstance(beta, Real)
        or not math.isfinite(float(beta))
        or not 0.0 < float(beta) <= 1.0
    ):
        raise ValueError(
            f"beta must be a real number with 0 < beta <= 1 "
            f"(the mean-field analysis uses 1/2 < beta < 1), got {beta!r}"
        )
    return float(beta)


def _check_activation(activation: Any) -> str:
    if activation not in ACTIVATIONS:
        raise ValueError(f"activation must be one of {ACTIVATIONS}, got {activation!r}")
    return str(activation)


def _check_max_cache_bytes(max_cache_bytes: Any) -> int:
    if not _is_int(max_cache_bytes) or max_cache_bytes < 0:
        raise ValueError(
            f"max_cache_bytes must be an integer >= 0, got {max_cache_bytes!r}"
        )
    return int(max_cache_bytes)


def _check_seed(seed: Any) -> int | None:
    if seed is not None and (not _is_int(seed) or seed < 0):
        raise ValueError(f"seed must be a non-negative integer or None, got {seed!r}")
    return None if seed is None else int(seed)


@dataclass
class _GridCache:
    """State kept by :meth:`ShallowNetwork.evaluate_grid` for ``vjp_grid``."""

    t: np.ndarray  # (n_t,) copy of the evaluation times
    x: np.ndarray  # (n_x, d) copy of the evaluation points
    params: np.ndarray  # snapshot of the parameters used
    S: np.ndarray | None  # (n_t, n_x, N) activations (or R, see r_form), or None if too large
    r_form: bool = False  # S holds R = 1 / (1 + exp(-k z)), not sigma(z) (ShallowNetwork._r_form)


# ---------------------------------------------------------------------------
# the network
# ---------------------------------------------------------------------------


class ShallowNetwork(Model):
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
        beta: float = 2 / 3,
        activation: str = "tanh",
        seed: int | None = 42,
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
        return max(1, _CHUNK_ELEMS // self._n)

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

    # -- tensor-grid evaluation ------------------------------------------------

    def _spatial_preactivation(self, x: np.ndarray) -> np.ndarray:
        """``P = x @ w_x.T + eta``, shape ``(n_x, N)``."""
        p = x @ self._w_x.T
        p += self._eta
        return p

    def _separable_factors(self, p: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
        """Factors ``A = exp(-k P)`` (n_x, N) and ``B = exp(k t w_t)`` (n_t, N) for tanh (k = 2) and sigmoid (k = 1).

        With ``z[n, j] = P[j] + t_n w_t``, ``1 / (1 + exp(-k z)) = B[n] / (A[j] + B[n])``:
        the exponentials are taken on the two factors only and each grid
        activation costs one addition and one division (two passes over
        memory) instead of an ``exp``.  The network output is affine in
        this ``R`` (:meth:`_r_form`).  Returns None (use the direct formula)
        for softplus, or when a factor or their sum overflows or underflows.
        """
        k = {"tanh": 2.0, "sigmoid": 1.0}.get(self._activation)
        if k is None:
            return None
        with np.errstate(over="ignore", under="ignore"):
            a = np.exp(-k * p)
            b = np.exp(np.multiply.outer(k * t, self._w_t))
            ok = (
                np.all(np.isfinite(a)) and np.all(a > 0) and np.all(np.isfinite(b)) and np.all(b > 0)
                and np.isfinite(np.max(a) + np.max(b))
            )
        return (a, b) if ok else None

    def _r_form(self) -> tuple[float, float, float]:
        """``(alpha, beta, kappa)`` with ``sigma = alpha R + beta`` and ``sigma' = kappa R (1 - R)``.

        ``R = 1 / (1 + exp(-k z))``: tanh ``= 2R - 1``, ``tanh' = 4R(1 - R)``;
        sigmoid ``= R``, ``sigmoid' = R(1 - R)``.
        """
        return (2.0, -1.0, 4.0) if self._activation == "tanh" else (1.0, 0.0, 1.0)

    def _grid_activations(
        self,
        p: np.ndarray,
        t: np.ndarray,
        blk: tuple[int, int, int, int],
        out: np.ndarray,
        tmp: np.ndarray | None,
        factors: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        """Write ``R`` (with ``factors``) or ``sigma(P[j] + t[n] w_t)`` for one grid block into ``out`` (k, rows, N)."""
        n0, n1, j0, j1 = blk
        if factors is not None:
            a, b = factors
            bb = b[n0:n1, None, :]
            np.add(a[None, j0:j1, :], bb, out=out)
            np.divide(bb, out, out=out)
            return
        np.add(p[None, j0:j1, :], t[n0:n1, None, None] * self._w_t, out=out)
        _activate_inplace(out, self._activation, tmp)

    def evaluate_grid(
        self, t: np.ndarray, x: np.ndarray, cache: bool = True
    ) -> np.ndarray:
        """Evaluate the network on the tensor grid ``t x x``.

        ``P = x @ w_x.T + eta`` is computed once; then, for cache-sized blocks
        of the grid, ``S = sigma(P + t_n w_t)`` and ``G = N**-beta * S @ c``
        (BLAS matrix-vector products).

        Args:
            t: Times, shape ``(n_t,)``.
            x: Points, shape ``(n_x, d)`` (shape ``(n_x,)`` is accepted for d = 1).
            cache: If True, keep what :meth:`vjp_grid` needs: copies of ``t``
                and ``x``, a snapshot of the parameters and, if it fits into
                ``max_cache_bytes``, all activations ``S`` (shape
                ``(n_t, n_x, N)``, ``n_t * n_x * N * 8`` bytes).  The
                activation buffer is kept for reuse by later calls on grids
                of the same shape (also across parameter updates) until
                :meth:`clear_cache`.  If False, any previous cache is
                invalidated (so ``vjp_grid`` can never silently use a stale
                grid).

        Returns:
            ``G`` with ``G[n, j] = g(t[n], x[j])``, shape ``(n_t, n_x)``.

        Raises:
            ValueError: On inconsistent shapes.
        """
        t = self._as_times(t)
        x = self._as_points(x)
        n_t, n_x, n = t.size, x.shape[0], self._n
        self._grid_cache = None  # a failed call leaves no (inconsistent) cache

        p = self._spatial_preactivation(x)
        factors = self._separable_factors(p, t)
        limit = self._max_cache_bytes
        if factors is not None:
            # Recomputing R (two passes in the CPU cache) is cheaper than
            # writing and reading back a large activation array.
            limit = min(limit, _RFORM_MAX_CACHE_BYTES)
        s_all: np.ndarray | None = None
        if cache and n_t * n_x * n * 8 <= limit:
            if self._s_buffer is None or self._s_buffer.shape != (n_t, n_x, n):
                self._s_buffer = None  # free the old buffer before allocating
                self._s_buffer = np.empty((n_t, n_x, n))
            s_all = self._s_buffer
        elif self._s_buffer is not None and cache:
            self._s_buffer = None  # not used for this grid: free it
        g = np.empty((n_t, n_x))
        cap = max(_CHUNK_ELEMS, n)
        blocks = list(_grid_blocks(n_t, n_x, n))

        def work_on(lo: int, hi: int) -> None:
            # Scratch per thread; every block writes its own slice of g.
            work = np.empty(cap) if s_all is None else None
            tmp = np.empty(cap) if self._activation == "softplus" else None
            with np.errstate(over="ignore", under="ignore"):
                for blk in blocks[lo:hi]:
                    n0, n1, j0, j1 = blk
                    shape = (n1 - n0, j1 - j0, n)
                    size = shape[0] * shape[1] * n
                    if s_all is not None:
                        s = s_all[n0:n1, j0:j1]
                    else:
                        s = work[:size].reshape(shape)
                    self._grid_activations(
                        p, t, blk, s, None if tmp is None else tmp[:size].reshape(shape), factors
                    )
                    g[n0:n1, j0:j1] = (s.reshape(-1, n) @ self._c).reshape(shape[:2])

        run_ranges(work_on, len(blocks), self._threads)
        if factors is None:
            g *= self._scale
        else:  # g = scale * (alpha R c + beta sum(c))
            alpha, beta, _ = self._r_form()
            g *= alpha * self._scale
            g += beta * self._scale * float(np.sum(self._c))

        if cache:
            self._grid_cache = _GridCache(
                t=t.copy(), x=x.copy(), params=self._params.copy(), S=s_all, r_form=factors is not None
            )
        return g

    def vjp_grid(self, r: np.ndarray) -> np.ndarray:
        """Vector-Jacobian product for the last :meth:`evaluate_grid` call.

        Computes ``d/dtheta sum_{n,j} r[n, j] G[n, j]`` reusing the cached
        activations (or recomputing them block by block if they were too large
        to cache, see ``max_cache_bytes``).  With
        ``D = sigma'(S) * r[..., None] * (scale * c)``:
        ``dc = scale * S^T r``, ``d_eta = sum_{n,j} D``,
        ``d_wt = sum_n t_n sum_j D[n, j]`` and ``d_wx = sum_{n,j} D[n, j] x_j``.
        For each cache-sized block, ``d_eta, d_wt, d_wx`` are accumulated by
        matrix-vector products ``r_n^T sigma'(S_n)`` per time level (giving
        ``d_eta`` and, weighted by ``t_n``, ``d_wt``) and ``(r x_k)^T
        sigma'(S)`` (the factor ``scale * c`` is applied once at the end), so
        ``D`` is never materialised.

        Args:
            r: Cotangent weights, shape ``(n_t, n_x)`` of the cached grid.

        Returns:
            Flat gradient of shape ``(n_params,)`` with the layout of
            :attr:`params`.

        Raises:
            RuntimeError: If there is no cache (no ``evaluate_grid(...,
                cache=True)`` call, or it was discarded by ``clear_cache``,
                a parameter assignment or ``evaluate_grid(..., cache=False)``),
                or if the parameters were modified in place since.
            ValueError: If ``r`` has the wrong shape.
        """
        cache = self._grid_cache
        if cache is None:
            raise RuntimeError(
                "vjp_grid: no cached grid evaluation; call evaluate_grid(t, x, cache=True) "
                "first (the cache is discarded by clear_cache(), by assigning parameters "
                "and by evaluate_grid(..., cache=False))"
            )
        if not np.array_equal(cache.params, self._params):
            raise RuntimeError(
                "vjp_grid: the parameters changed since the last evaluate_grid call; "
                "call evaluate_grid again before vjp_grid"
            )
        t, x, s_all = cache.t, cache.x, cache.S
        n_t, n_x, n, d = t.size, x.shape[0], self._n, self._d
        r = np.ascontiguousarray(r, dtype=np.float64)
        if r.shape != (n_t, n_x):
            raise ValueError(
                f"r must have the shape (n_t, n_x) = {(n_t, n_x)} of the cached grid, "
                f"got shape {r.shape}"
            )

        # rx[k, n, j] = r[n, j] x_j[k]: sigma'(S)^T rx gives d_wx; per time
        # level u_n = sigma'(S_n)^T r_n gives d_eta = sum_n u_n and
        # d_wt = sum_n t_n u_n (t_n is constant on a level).  Only
        # matrix-vector products: BLAS is several times slower on one GEMM
        # with the d + 2 columns (r, r t, r x).
        rx = np.empty((d, n_t, n_x))
        np.multiply(r[None, :, :], x.T[:, None, :], out=rx)

        cap = max(_CHUNK_ELEMS, n)
        if s_all is None:
            p = self._spatial_preactivation(x)
            factors = self._separable_factors(p, t)
            r_form = factors is not None
        else:
            p = factors = None
            r_form = cache.r_form
        blocks = list(_grid_blocks(n_t, n_x, n))
        # Per-block contributions, summed in block order below: the result
        # does not depend on the number of threads.
        nb = len(blocks)
        dc_parts = np.empty((nb, n))
        eta_parts = np.empty((nb, n))
        wt_parts = np.empty((nb, n))
        wx_parts = np.empty((nb, d, n))

        def work_on(lo: int, hi: int) -> None:
            q = np.empty(cap)
            work = np.empty(cap) if s_all is None else None
            u = np.empty((max(1, _CHUNK_ELEMS // max(n_x * n, 1)), 1, n))
            with np.errstate(over="ignore", under="ignore"):
                for b in range(lo, hi):
                    blk = blocks[b]
                    n0, n1, j0, j1 = blk
                    k, rows = n1 - n0, j1 - j0
                    shape = (k, rows, n)
                    size = k * rows * n
                    qb = q[:size].reshape(shape)
                    if s_all is not None:
                        s = s_all[n0:n1, j0:j1]
                    else:
                        s = work[:size].reshape(shape)
                        self._grid_activations(p, t, blk, s, qb, factors)
                    rb = r[n0:n1, j0:j1]
                    # The derivative pass first: it reads the cached block from
                    # memory once, the product below finds it in the CPU cache.
                    if r_form:  # R (1 - R) = R - R^2; the factor kappa comes at the end
                        np.multiply(s, s, out=qb)
                        np.subtract(s, qb, out=qb)
                    else:
                        _derivative_from_output(s, qb, self._activation)
                    np.matmul(rb.reshape(-1), s.reshape(-1, n), out=dc_parts[b])
                    ub = u[:k]
                    np.matmul(rb[:, None, :], qb, out=ub)
                    np.sum(ub[:, 0, :], axis=0, out=eta_parts[b])
                    np.matmul(t[n0:n1], ub[:, 0, :], out=wt_parts[b])
                    q2 = qb.reshape(-1, n)
                    for k_x in range(d):  # d matrix-vector products: BLAS is slow on (d x rows) @ (rows x N)
                        np.matmul(rx[k_x, n0:n1, j0:j1].reshape(-1), q2, out=wx_parts[b, k_x])

        run_ranges(work_on, nb, self._threads)
        dc = np.zeros(n)
        aeta = np.zeros(n)
        awt = np.zeros(n)
        awx = np.zeros((d, n))
        for b in range(nb):
            dc += dc_parts[b]
            aeta += eta_parts[b]
            awt += wt_parts[b]
            awx += wx_parts[b]
        if r_form:  # sigma = alpha R + beta, sigma' = kappa R (1 - R)
            alpha, beta, kappa = self._r_form()
            dc *= alpha
            dc += beta * float(np.sum(r))
            aeta *= kappa
            awt *= kappa
            awx *= kappa
        return self._assemble_gradient(dc, awt, awx.T, aeta)

    def clear_cache(self) -> None:
        """Discard the cache kept by :meth:`evaluate_grid` and free its memory."""
        self._grid_cache = None
        self._s_buffer = None

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


def reference_learning_rate(base_lr: float, n_neurons: int, beta: float) -> float:
    """Learning rate ``base_lr * N ** (2 beta - 1)`` of the mean-field scaling.

    With the output scaled by ``N**-beta`` every parameter's gradient is
    ``O(N**-beta)``, so one gradient step changes the output by
    ``lr * sum_i |dg/dtheta_i|**2 = O(lr * N**(1 - 2 beta))``; the factor
    ``N**(2 beta - 1)`` keeps that change ``O(1)`` as ``N`` grows.

    Args:
        base_lr: Base learning rate (> 0).
        n_neurons: Number of neurons ``N`` (integer >= 1).
        beta: Scaling exponent, ``0 < beta <= 1``.

    Returns:
        The scaled learning rate.

    Raises:
        ValueError: If an argument is invalid.
    """
    if (
        isinstance(base_lr, bool)
        or not isinstance(base_lr, Real)
        or not math.isfinite(float(base_lr))
        or base_lr <= 0
    ):
        raise ValueError(f"base_lr must be a finite number > 0, got {base_lr!r}")
    n = _check_n_neurons(n_neurons)
    b = _check_beta(beta)
    return float(base_lr) * float(n) ** (2.0 * b - 1.0)
