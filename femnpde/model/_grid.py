"""The tensor-grid evaluation of :class:`~femnpde.model.network.ShallowNetwork` and its VJP.

:class:`ShallowGridMixin` holds ``evaluate_grid`` / ``vjp_grid`` (see the
module documentation of :mod:`femnpde.model.network` for the separable
``R`` form of tanh and sigmoid); :func:`_grid_blocks` cuts the
``n_t x n_x`` grid into cache-sized blocks, which run on the network's
threads (:func:`femnpde.model._threads.run_ranges`) with per-block partial
sums reduced in block order.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from femnpde.model._threads import run_ranges
from femnpde.model.activations import activate_inplace as _activate_inplace
from femnpde.model.activations import derivative_from_output as _derivative_from_output

__all__ = ["ShallowGridMixin", "_CHUNK_ELEMS", "_RFORM_MAX_CACHE_BYTES", "_GridCache", "_grid_blocks"]


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


class _LevelTile:
    """``B[n]`` repeated over ``rows`` rows, refilled only when the level ``n`` changes (one per thread)."""

    def __init__(self, cap: int, n: int) -> None:
        self._buf = np.empty((max(1, cap // n), n))
        self._level = -1
        self._rows = 0

    def level(self, b: np.ndarray, n: int, rows: int) -> np.ndarray:
        """The ``(rows, N)`` tile of ``b[n]``."""
        if n != self._level or rows > self._rows:
            self._buf[:rows] = b[n]
            self._level, self._rows = n, rows
        return self._buf[:rows]


@dataclass
class _GridCache:
    """State kept by :meth:`ShallowNetwork.evaluate_grid` for ``vjp_grid``."""

    t: np.ndarray  # (n_t,) copy of the evaluation times
    x: np.ndarray  # (n_x, d) copy of the evaluation points
    params: np.ndarray  # snapshot of the parameters used
    S: np.ndarray | None  # (n_t, n_x, N) activations (or R, see r_form), or None if too large
    r_form: bool = False  # S holds R = 1 / (1 + exp(-k z)), not sigma(z) (ShallowNetwork._r_form)


class ShallowGridMixin:
    """Grid evaluation and its VJP, mixed into :class:`~femnpde.model.network.ShallowNetwork`.

    Uses the network's private state (``_n``, ``_d``, ``_activation``,
    ``_params`` and its views, ``_scale``, ``_threads``, ``_max_cache_bytes``,
    ``_grid_cache``, ``_s_buffer``) and its ``_as_times``, ``_as_points`` and
    ``_assemble_gradient``.
    """

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
        tile: _LevelTile | None = None,
    ) -> None:
        """Write ``R`` (with ``factors``) or ``sigma(P[j] + t[n] w_t)`` for one grid block into ``out`` (k, rows, N).

        ``tile``: a per-thread buffer holding ``B[n]`` repeated over rows,
        used for the blocks of a single time level (large grids), where
        the elementwise passes then run on arrays of one shape instead of
        broadcasting a length-N row (the same operations and values).
        """
        n0, n1, j0, j1 = blk
        if factors is not None:
            a, b = factors
            bb = b[n0:n1, None, :] if tile is None or n1 - n0 != 1 else tile.level(b, n0, j1 - j0)[None]
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
            tile = _LevelTile(cap, n) if factors is not None and n_x * n > _CHUNK_ELEMS else None
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
                        p, t, blk, s, None if tmp is None else tmp[:size].reshape(shape), factors, tile
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
            tile = _LevelTile(cap, n) if factors is not None and n_x * n > _CHUNK_ELEMS else None
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
                        self._grid_activations(p, t, blk, s, qb, factors, tile)
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
