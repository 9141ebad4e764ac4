"""The tensor-grid evaluation of :class:`~femnpde.model.network.ShallowNetwork` and its VJP.

:class:`ShallowGridMixin` holds ``evaluate_grid`` / ``vjp_grid`` (see the
module documentation of :mod:`femnpde.model.network` for the separable
``R`` form of tanh and sigmoid); :class:`_GridBlocks` cuts the
``n_t x n_x`` grid into cache-sized blocks, which run on the network's
threads (:func:`femnpde.model._threads.run_blocks`) with per-block partial
sums reduced in block order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from femnpde.model._threads import run_blocks
from femnpde.model.activations import activate_inplace as _activate_inplace
from femnpde.model.activations import derivative_from_output as _derivative_from_output

__all__ = ["ShallowGridMixin", "_CHUNK_ELEMS", "_RFORM_MAX_CACHE_BYTES", "_GridCache", "_GridBlocks"]


#: Number of float64 entries (512 KiB) in one chunk of the (rows x neurons)
#: pre-activation matrix.  All elementwise work is done chunk by chunk so that
#: the several passes of an activation run in the CPU cache; a grid block
#: holds every time level (or as many as fit) for a few rows, a pointwise
#: chunk a block of rows (at least one row).
_CHUNK_ELEMS = 1 << 16

#: Activation cache bound (bytes) when tanh/sigmoid use the separable form R:
#: beyond it R is recomputed in vjp_grid (two passes over each block in the
#: CPU cache), which is faster than the memory traffic of a larger cache.
_RFORM_MAX_CACHE_BYTES = 64 * 1024**2


class _GridBlocks:
    """Blocks ``(n0, n1, j0, j1)`` covering the ``n_t x n_x`` grid, and their places in block-major arrays.

    A block holds ``L = min(n_t, cap // N)`` time levels (a level chunk)
    and ``m = cap // (L N)`` rows (at least one), so its ``(L, m, N)``
    pre-activations have at most ``cap = max(_CHUNK_ELEMS, N)`` entries;
    the blocks run level chunk by level chunk, row block by row block.
    All levels of a few rows in one block: the spatial factor's rows
    (``m x N``) are read once for every level, and each thread's tile of
    the time factor (``L x m x N``) is refilled only when the level chunk
    changes.  The activation cache and the cotangent weights are stored
    block-major (each block's entries contiguous, at :attr:`offsets`).
    """

    def __init__(self, n_t: int, n_x: int, n: int) -> None:
        self.cap = max(_CHUNK_ELEMS, n)
        self.levels = min(n_t, max(1, _CHUNK_ELEMS // n))
        self.rows = max(1, _CHUNK_ELEMS // (self.levels * n))
        self.n_x = n_x
        self.blocks = [
            (n0, min(n0 + self.levels, n_t), j0, min(j0 + self.rows, n_x))
            for n0 in range(0, n_t, self.levels)
            for j0 in range(0, n_x, self.rows)
        ]
        sizes = [(n1 - n0) * (j1 - j0) for n0, n1, j0, j1 in self.blocks]
        #: Start of each block's ``k * m`` points in a block-major array of the grid.
        self.offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)

    def __len__(self) -> int:
        return len(self.blocks)

    def block_major(self, v: np.ndarray) -> np.ndarray:
        """Copy ``v`` (c, n_t, n_x) into block-major order, shape (c, n_t * n_x) (level-major within a block)."""
        out = np.empty((v.shape[0], v.shape[1] * v.shape[2]))
        c, m = v.shape[0], self.rows
        full = (self.n_x // m) * m
        for b, (n0, n1, j0, _) in enumerate(self.blocks):
            if j0 != 0:
                continue  # one copy per level chunk: its full row blocks, then the tail
            k, o = n1 - n0, int(self.offsets[b])
            if full:
                f = full // m
                out[:, o : o + k * full].reshape(c, f, k, m)[:] = v[:, n0:n1, :full].reshape(c, k, f, m).transpose(0, 2, 1, 3)
            if full < self.n_x:
                o += k * full
                out[:, o : o + k * (self.n_x - full)].reshape(c, k, self.n_x - full)[:] = v[:, n0:n1, full:]
        return out


def _reduction_grain(n_blocks: int) -> int:
    """Blocks per range of the VJP's partial sums: at most 64 ranges, independent of the number of threads."""
    return max(1, -(-n_blocks // 64))


class _LevelTile:
    """``B[n0:n1]`` repeated over the rows of a block (one per thread), refilled only when the level chunk changes."""

    def __init__(self, levels: int, rows: int, n: int) -> None:
        self._buf = np.empty((levels, rows, n))
        self._key = (-1, -1)

    def get(self, b: np.ndarray, n0: int, n1: int, rows: int) -> np.ndarray:
        """The ``(n1 - n0, rows, N)`` tile of ``b[n0:n1]``."""
        if self._key != (n0, n1):
            self._buf[: n1 - n0] = b[n0:n1, None, :]
            self._key = (n0, n1)
        return self._buf[: n1 - n0, :rows]


@dataclass
class _GridCache:
    """State kept by :meth:`ShallowNetwork.evaluate_grid` for ``vjp_grid``."""

    t: np.ndarray  # (n_t,) copy of the evaluation times
    x: np.ndarray  # (n_x, d) copy of the evaluation points
    params: np.ndarray  # snapshot of the parameters used
    S: np.ndarray | None  # block-major activations (or R, see r_form), or None if too large
    r_form: bool = False  # S holds R = 1 / (1 + exp(-k z)), not sigma(z) (ShallowNetwork._r_form)
    p: np.ndarray | None = None  # (n_x, N) spatial pre-activations, kept when S is None
    factors: tuple[np.ndarray, np.ndarray] | None = None  # (A, B) of the R form, kept when S is None


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

    def _separable_factors(
        self, p: np.ndarray, t: np.ndarray, overwrite: bool = False
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Factors ``A = exp(-k P)`` (n_x, N) and ``B = exp(k t w_t)`` (n_t, N) for tanh (k = 2) and sigmoid (k = 1).

        With ``z[n, j] = P[j] + t_n w_t``, ``1 / (1 + exp(-k z)) = B[n] / (A[j] + B[n])``:
        the exponentials are taken on the two factors only and each grid
        activation costs one addition and one division (two passes over
        memory) instead of an ``exp``.  The network output is affine in
        this ``R`` (:meth:`_r_form`).  Returns None (use the direct formula)
        for softplus, or when a factor or their sum overflows or underflows.
        With ``overwrite`` (tanh, sigmoid) ``A`` is computed in the memory of
        ``p``, which is then lost, also when None is returned.
        """
        k = {"tanh": 2.0, "sigmoid": 1.0}.get(self._activation)
        if k is None:
            return None
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            a = np.multiply(p, -k, out=p if overwrite else None)
            np.exp(a, out=a)
            b = np.exp(np.multiply.outer(k * t, self._w_t))
            # all entries finite and > 0, and their sum finite (a NaN fails every comparison)
            ok = bool(np.min(a) > 0 and np.min(b) > 0 and np.isfinite(np.max(a) + np.max(b)))
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

        ``tile`` (with ``factors``): the thread's tile of ``B`` over the
        block's rows, so that both passes run on arrays of one shape (the
        spatial factor's rows are broadcast over the levels).
        """
        n0, n1, j0, j1 = blk
        if factors is not None:
            a, b = factors
            bb = tile.get(b, n0, n1, j1 - j0)
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
                ``max_cache_bytes``, all activations ``S``
                (``n_t * n_x * N * 8`` bytes), else the spatial
                pre-activations (or the two factors of the separable form,
                ``(n_x + n_t) * N * 8`` bytes).  The activation buffer is
                kept for reuse by later calls on grids of the same shape
                (also across parameter updates) until :meth:`clear_cache`.
                If False, any previous cache is invalidated (so
                ``vjp_grid`` can never silently use a stale grid).

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
        factors = self._separable_factors(p, t, overwrite=True)  # A takes p's memory
        limit = self._max_cache_bytes
        if factors is not None:
            # Recomputing R (two passes in the CPU cache) is cheaper than
            # writing and reading back a large activation array.
            limit = min(limit, _RFORM_MAX_CACHE_BYTES)
            p = None
        elif self._activation in ("tanh", "sigmoid"):  # p was overwritten: the direct formula needs it
            p = self._spatial_preactivation(x)
        s_all: np.ndarray | None = None
        if cache and n_t * n_x * n * 8 <= limit:
            if self._s_buffer is None or self._s_buffer.size != n_t * n_x * n:
                self._s_buffer = None  # free the old buffer before allocating
                self._s_buffer = np.empty(n_t * n_x * n)
            s_all = self._s_buffer
        elif self._s_buffer is not None and cache:
            self._s_buffer = None  # not used for this grid: free it
        g = np.empty((n_t, n_x))
        grid = _GridBlocks(n_t, n_x, n)
        blocks, offsets = grid.blocks, grid.offsets

        def make_worker():
            # Scratch per thread; every block writes its own slice of g.
            work = np.empty(grid.cap) if s_all is None else None
            tmp = np.empty(grid.cap) if self._activation == "softplus" else None
            tile = _LevelTile(grid.levels, grid.rows, n) if factors is not None else None
            gbuf = np.empty(grid.levels * grid.rows)

            def work_on(lo: int, hi: int) -> None:
                with np.errstate(over="ignore", under="ignore"):
                    for b in range(lo, hi):
                        n0, n1, j0, j1 = blk = blocks[b]
                        shape = (n1 - n0, j1 - j0, n)
                        size = shape[0] * shape[1] * n
                        if s_all is not None:
                            s = s_all[offsets[b] * n : offsets[b] * n + size].reshape(shape)
                        else:
                            s = work[:size].reshape(shape)
                        self._grid_activations(
                            p, t, blk, s, None if tmp is None else tmp[:size].reshape(shape), factors, tile
                        )
                        gb = gbuf[: shape[0] * shape[1]]
                        np.dot(s.reshape(-1, n), self._c, out=gb)  # np.dot releases the GIL, matmul does not
                        g[n0:n1, j0:j1] = gb.reshape(shape[:2])

            return work_on

        run_blocks(make_worker, len(blocks), self._threads)
        if factors is None:
            g *= self._scale
        else:  # g = scale * (alpha R c + beta sum(c))
            alpha, beta, _ = self._r_form()
            g *= alpha * self._scale
            g += beta * self._scale * float(np.sum(self._c))

        if cache:
            keep = s_all is None
            self._grid_cache = _GridCache(
                t=t.copy(), x=x.copy(), params=self._params.copy(), S=s_all, r_form=factors is not None,
                p=p if keep and factors is None else None, factors=factors if keep else None,
            )
        return g

    def vjp_grid(self, r: np.ndarray) -> np.ndarray:
        """Vector-Jacobian product for the last :meth:`evaluate_grid` call.

        Computes ``d/dtheta sum_{n,j} r[n, j] G[n, j]`` reusing the cached
        activations (or recomputing them block by block, from the cached
        spatial pre-activations or separable factors, if they were too
        large to cache, see ``max_cache_bytes``).  With
        ``D = sigma'(S) * r[..., None] * (scale * c)``:
        ``dc = scale * S^T r``, ``d_eta = sum_{n,j} D``,
        ``d_wt = sum_n t_n sum_j D[n, j]`` and ``d_wx = sum_{n,j} D[n, j] x_j``.
        For each cache-sized block, three matrix-vector products over its
        points give ``S^T r``, ``sigma'(S)^T (t r)`` and, per row ``j``,
        ``e_j = sum_n r[n, j] sigma'(S[n, j])``, whence ``d_eta = sum_j e_j``
        and ``d_wx = sum_j x_j e_j`` (the factor ``scale * c`` is applied
        once at the end), so ``D`` is never materialised.  Partial sums are
        taken over fixed ranges of blocks and then over the ranges in order:
        the result does not depend on the number of threads.

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

        grid = _GridBlocks(n_t, n_x, n)
        blocks, offsets = grid.blocks, grid.offsets
        # Three reductions of a block over its points (the reference BLAS is
        # no faster on one GEMM with several columns): dc from r^T S; d_wt
        # from (t_n r)^T sigma'(S) (block-major weights rw); per row
        # e_j = sum_n r[n, j] sigma'(S[n, j]) gives d_eta = sum_j e_j and
        # d_wx = sum_j x_j e_j: two reads of sigma'(S) for any d.
        tr = np.empty((2, n_t, n_x))
        tr[0] = r
        np.multiply(r, t[:, None], out=tr[1])
        rw = grid.block_major(tr)
        del tr
        xx = np.empty((n_x, d + 1))  # [1, x]: d_eta and d_wx from e in one product
        xx[:, 0] = 1.0
        xx[:, 1:] = x
        p, factors, r_form = cache.p, cache.factors, cache.r_form
        # Partial sums over fixed ranges of blocks (in block order within a
        # range), then over the ranges in order: the result does not depend
        # on the number of threads or the scheduling.
        nb = len(blocks)
        offs = offsets.tolist()
        grain = _reduction_grain(nb)
        parts = np.zeros((-(-nb // grain), 3 + d, n))  # dc, d_wt, d_eta, d_wx (d rows)

        def make_worker():
            work = np.empty(grid.cap)
            q = np.empty(grid.cap)
            tile = _LevelTile(grid.levels, grid.rows, n) if factors is not None else None
            e = np.empty((grid.rows, n))
            part = np.empty((3 + d, n))
            views: dict[tuple[int, int], tuple[np.ndarray, ...]] = {}

            def views_for(k: int, rows: int) -> tuple[np.ndarray, ...]:
                v = views.get((k, rows))
                if v is None:
                    size = k * rows * n
                    v = views[(k, rows)] = (work[:size].reshape(k, rows, n), q[:size].reshape(k, rows, n),
                                            q[:size].reshape(-1, n), e[:rows])
                return v

            def work_on(lo: int, hi: int) -> None:
                acc = parts[lo // grain]
                with np.errstate(over="ignore", under="ignore"):
                    for b in range(lo, hi):
                        n0, n1, j0, j1 = blk = blocks[b]
                        k, rows = n1 - n0, j1 - j0
                        o0, o1 = offs[b], offs[b + 1]
                        s, qb, q2, eb = views_for(k, rows)
                        if s_all is not None:
                            s = s_all[o0 * n : o1 * n].reshape(k, rows, n)
                        else:
                            self._grid_activations(p, t, blk, s, qb, factors, tile)
                        # The derivative pass first: it reads the cached block from
                        # memory once, the products below find it in the CPU cache.
                        if r_form:  # R (1 - R) = R - R^2; the factor kappa comes at the end
                            np.multiply(s, s, out=qb)
                            np.subtract(s, qb, out=qb)
                        else:
                            _derivative_from_output(s, qb, self._activation)
                        # np.dot and einsum release the GIL (matmul does not): the threads overlap
                        w = rw[:, o0:o1]
                        np.dot(w[0], s.reshape(-1, n), out=part[0])
                        np.dot(w[1], q2, out=part[1])
                        np.einsum("kj,kjn->jn", w[0].reshape(k, rows), qb, out=eb)
                        np.dot(xx[j0:j1].T, eb, out=part[2:])
                        acc += part

            return work_on

        run_blocks(make_worker, nb, self._threads, grain=grain)
        total = parts.sum(axis=0)  # numpy adds the ranges' rows one after another
        dc, awt, aeta, awx = total[0], total[1], total[2], total[3:]
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
