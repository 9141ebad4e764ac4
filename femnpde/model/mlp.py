"""Deep fully connected networks (multi-layer perceptrons) in numpy.

.. math::

    h_0 = (t, x),\\quad h_l = \\sigma(W_l h_{l-1} + b_l)\\ (l = 1..L),\\quad
    g_\\theta(t, x) = s\\,(W_{L+1} h_L + b_{L+1}) \\in R^m,

with hidden widths ``hidden = [n_1, ..., n_L]``, ``m = n_outputs`` linear
outputs and an output scale ``s``: 1 (``output_scale = "none"``) or the
mean-field ``n_L^{-β}`` of the last hidden layer (``"mean-field"``; with one
hidden layer and the ``"paper"`` initialisation this is the paper's network
with an extra output bias).

Parameters, flat ``float64``, layer by layer: ``W_l`` (row-major
``n_l × n_{l-1}``) then ``b_l``.  Initialisations: ``"paper"`` (hidden
weights and biases ``N(0, 1)``, output weights ``U(-1, 1)``, output bias 0),
``"glorot"`` (``W ~ U(±sqrt(6 / (fan_in + fan_out)))``, biases 0) and
``"he"`` (``W ~ N(0, 2 / fan_in)``, biases 0), drawn layer by layer from
``np.random.default_rng(seed)``.

The VJP is the exact reverse sweep (one GEMM per layer and block) reusing
the activations of the forward pass; on the time × space grid they are cached
(bounded by ``max_cache_bytes``, else recomputed block by block).  Blocks of
the grid run on threads (:mod:`femnpde.model._threads`); the gradient sums
per-thread partial sums in thread order (deterministic for a given number of
threads; different thread counts differ at round-off).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Any

import numpy as np

from femnpde import defaults as D
from femnpde.model._threads import default_threads, run_blocks, run_ranges
from femnpde.model.activations import ACTIVATIONS, activate_inplace, derivative_from_output
from femnpde.model.base import FlatModel, as_points, as_times

__all__ = ["INITIALISATIONS", "MLP", "OUTPUT_SCALES"]

INITIALISATIONS: tuple[str, ...] = ("paper", "glorot", "he")
OUTPUT_SCALES: tuple[str, ...] = ("none", "mean-field")

#: Rows of one block of work (rows x widest layer <= this many entries, at least 1 row).
_BLOCK_ELEMS = 1 << 16
_DEFAULT_MAX_CACHE_BYTES = 4 * 1024**3


def _int(name: str, value: Any, low: int) -> int:
    if not isinstance(value, Integral) or isinstance(value, bool) or value < low:
        raise ValueError(f"MLP: {name} must be an integer >= {low}, got {value!r}")
    return int(value)


@dataclass
class _Cache:
    """What :meth:`MLP.vjp_grid` needs from the last :meth:`MLP.evaluate_grid`."""

    t: np.ndarray
    x: np.ndarray
    params: np.ndarray
    acts: list[np.ndarray] | None  # per hidden layer (n_t, n_x, n_l), or None: recompute


class MLP(FlatModel):
    """A deep fully connected network ``g(t, x)`` with ``d + 1`` inputs and ``m`` outputs.

    Args:
        input_dim: Spatial dimension ``d`` (1, 2 or 3).
        hidden: Hidden widths, e.g. ``[64, 64]`` (at least one layer).
        n_outputs: Number of outputs ``m``.
        activation: Hidden activation, one of :data:`~femnpde.model.activations.ACTIVATIONS`.
        init: One of :data:`INITIALISATIONS`.
        output_scale: One of :data:`OUTPUT_SCALES`.
        beta: Exponent of the ``"mean-field"`` scale, ``0 < beta <= 1``.
        seed: Seed of the initialisation (None: fresh entropy).
        max_cache_bytes: Bound on the grid activation cache (see the module).
        threads: Threads over blocks of the grid (default
            :func:`femnpde.model._threads.default_threads`).

    Raises:
        ValueError: On an invalid argument (the message names it and the valid values).
    """

    def __init__(
        self,
        input_dim: int,
        hidden: Sequence[int],
        n_outputs: int = D.NETWORK_OUTPUTS,
        activation: str = D.NETWORK_ACTIVATION,
        init: str = D.MLP_INIT,
        output_scale: str = D.MLP_OUTPUT_SCALE,
        beta: float = D.NETWORK_BETA,
        seed: int | None = D.NETWORK_SEED,
        *,
        max_cache_bytes: int = _DEFAULT_MAX_CACHE_BYTES,
        threads: int | None = None,
    ) -> None:
        d = _int("input_dim", input_dim, 1)
        if d > 3:
            raise ValueError(f"MLP: input_dim must be 1, 2 or 3, got {input_dim!r}")
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden:
            raise ValueError(f"MLP: hidden must be a non-empty list of layer widths, e.g. [64, 64], got {hidden!r}")
        widths = [_int(f"hidden[{k}]", h, 1) for k, h in enumerate(hidden)]
        if activation not in ACTIVATIONS:
            raise ValueError(f"MLP: activation must be one of {ACTIVATIONS}, got {activation!r}")
        if init not in INITIALISATIONS:
            raise ValueError(f"MLP: init must be one of {INITIALISATIONS}, got {init!r}")
        if output_scale not in OUTPUT_SCALES:
            raise ValueError(f"MLP: output_scale must be one of {OUTPUT_SCALES}, got {output_scale!r}")
        if isinstance(beta, bool) or not isinstance(beta, Real) or not 0.0 < float(beta) <= 1.0:
            raise ValueError(f"MLP: beta must be a number with 0 < beta <= 1, got {beta!r}")
        if seed is not None:
            _int("seed", seed, 0)
        self._d = d
        self._hidden = widths
        self._m = _int("n_outputs", n_outputs, 1)
        self._activation = str(activation)
        self._init = str(init)
        self._output_scale = str(output_scale)
        self._beta = float(beta)
        self._max_cache_bytes = _int("max_cache_bytes", max_cache_bytes, 0)
        self._threads = default_threads() if threads is None else _int("threads", threads, 1)
        self._scale = float(widths[-1]) ** (-self._beta) if output_scale == "mean-field" else 1.0
        sizes = [d + 1, *widths, self._m]
        self._sizes = sizes
        self._params = np.zeros(sum(o * i + o for i, o in zip(sizes[:-1], sizes[1:])))
        self._W: list[np.ndarray] = []
        self._b: list[np.ndarray] = []
        k = 0
        for i, o in zip(sizes[:-1], sizes[1:]):
            self._W.append(self._params[k : k + o * i].reshape(o, i))
            k += o * i
            self._b.append(self._params[k : k + o])
            k += o
        self._cache: _Cache | None = None
        self._initialise(seed)

    def _initialise(self, seed: int | None) -> None:
        rng = np.random.default_rng(seed)
        last = len(self._W) - 1
        for layer, (W, b) in enumerate(zip(self._W, self._b)):
            fan_out, fan_in = W.shape
            if self._init == "paper":
                if layer == last:
                    W[:] = rng.uniform(-1.0, 1.0, W.shape)
                else:
                    W[:] = rng.standard_normal(W.shape)
                    b[:] = rng.standard_normal(b.shape)
            elif self._init == "glorot":
                a = math.sqrt(6.0 / (fan_in + fan_out))
                W[:] = rng.uniform(-a, a, W.shape)
            else:  # he
                W[:] = rng.standard_normal(W.shape) * math.sqrt(2.0 / fan_in)

    # -- description ------------------------------------------------------------

    @property
    def hidden(self) -> list[int]:
        """The hidden widths."""
        return list(self._hidden)

    @property
    def activation(self) -> str:
        """The hidden activation."""
        return self._activation

    @property
    def scale(self) -> float:
        """The output scale ``s``."""
        return self._scale

    @property
    def threads(self) -> int:
        """Threads over blocks of the grid."""
        return self._threads

    @property
    def weights(self) -> list[np.ndarray]:
        """Views of the weight matrices ``W_1 .. W_{L+1}``."""
        return list(self._W)

    @property
    def biases(self) -> list[np.ndarray]:
        """Views of the biases ``b_1 .. b_{L+1}``."""
        return list(self._b)

    # -- the two sweeps on one block of rows -----------------------------------

    def _forward_rows(self, X: np.ndarray, acts: list[np.ndarray], out: np.ndarray) -> None:
        """Hidden activations of rows ``X`` (rows, d+1) into ``acts``; outputs (rows, m) into ``out``."""
        h = X
        for W, b, a in zip(self._W[:-1], self._b[:-1], acts):
            np.matmul(h, W.T, out=a)
            a += b
            activate_inplace(a, self._activation)
            h = a
        np.matmul(h, self._W[-1].T, out=out)
        out += self._b[-1]
        out *= self._scale

    def _backward_rows(self, X: np.ndarray, acts: list[np.ndarray], r: np.ndarray, grad: np.ndarray) -> None:
        """Add ``d/dθ Σ r · g`` over rows ``X`` (activations ``acts``) to the flat ``grad``."""
        gW, gb = self._views(grad)
        delta = r * self._scale
        L = len(self._W) - 1
        for layer in range(L, -1, -1):
            h = acts[layer - 1] if layer > 0 else X
            gW[layer] += delta.T @ h
            gb[layer] += delta.sum(axis=0)
            if layer == 0:
                break
            back = delta @ self._W[layer]
            q = np.empty_like(back)
            derivative_from_output(h, q, self._activation)
            back *= q
            delta = back

    def _views(self, flat: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:
        gW, gb, k = [], [], 0
        for i, o in zip(self._sizes[:-1], self._sizes[1:]):
            gW.append(flat[k : k + o * i].reshape(o, i))
            k += o * i
            gb.append(flat[k : k + o])
            k += o
        return gW, gb

    def _rows_per_block(self) -> int:
        return max(1, _BLOCK_ELEMS // max(self._sizes[1:]))

    # -- pointwise ---------------------------------------------------------------

    def __call__(self, t: np.ndarray, x: np.ndarray) -> np.ndarray:
        X = self._inputs(t, x)
        out = np.empty((X.shape[0], self._m))
        rows = self._rows_per_block()
        with np.errstate(over="ignore", under="ignore"):
            for m0 in range(0, X.shape[0], rows):
                Xb = X[m0 : m0 + rows]
                acts = [np.empty((Xb.shape[0], w)) for w in self._hidden]
                self._forward_rows(Xb, acts, out[m0 : m0 + rows])
        return out[:, 0] if self._m == 1 else out

    def vjp(self, t: np.ndarray, x: np.ndarray, r: np.ndarray) -> np.ndarray:
        X = self._inputs(t, x)
        r = np.ascontiguousarray(r, dtype=np.float64)
        if r.shape != self._value_shape((X.shape[0],)):
            raise ValueError(f"MLP.vjp: r must have shape {self._value_shape((X.shape[0],))}, got {r.shape}")
        r = r.reshape(X.shape[0], self._m)
        grad = np.zeros(self.n_params)
        rows = self._rows_per_block()
        out = np.empty((rows, self._m))
        with np.errstate(over="ignore", under="ignore"):
            for m0 in range(0, X.shape[0], rows):
                Xb = X[m0 : m0 + rows]
                acts = [np.empty((Xb.shape[0], w)) for w in self._hidden]
                self._forward_rows(Xb, acts, out[: Xb.shape[0]])
                self._backward_rows(Xb, acts, r[m0 : m0 + rows], grad)
        return grad

    # -- grid --------------------------------------------------------------------

    def _grid_blocks(self, n_t: int, n_x: int) -> list[tuple[int, int, int, int]]:
        rows = self._rows_per_block()
        if n_x <= rows:
            k = max(1, rows // max(n_x, 1))
            return [(n0, min(n0 + k, n_t), 0, n_x) for n0 in range(0, n_t, k)]
        return [(n0, n0 + 1, j0, min(j0 + rows, n_x)) for n0 in range(n_t) for j0 in range(0, n_x, rows)]

    @staticmethod
    def _block_inputs(t: np.ndarray, x: np.ndarray, blk: tuple[int, int, int, int]) -> np.ndarray:
        n0, n1, j0, j1 = blk
        k, rows = n1 - n0, j1 - j0
        X = np.empty((k, rows, x.shape[1] + 1))
        X[..., 0] = t[n0:n1, None]
        X[..., 1:] = x[None, j0:j1]
        return X.reshape(k * rows, -1)

    def _block_acts(self, acts_all, blk, rows: int) -> list[np.ndarray]:
        n0, n1, j0, j1 = blk
        if acts_all is None:
            return [np.empty((rows, w)) for w in self._hidden]
        return [a[n0:n1, j0:j1].reshape(rows, -1) for a in acts_all]

    def evaluate_grid(self, t: np.ndarray, x: np.ndarray, cache: bool = True) -> np.ndarray:
        t = as_times(t)
        x = as_points(x, self._d)
        n_t, n_x = t.size, x.shape[0]
        self._cache = None
        acts_all = None
        if cache and n_t * n_x * sum(self._hidden) * 8 <= self._max_cache_bytes:
            acts_all = [np.empty((n_t, n_x, w)) for w in self._hidden]
        G = np.empty((n_t, n_x, self._m))
        blocks = self._grid_blocks(n_t, n_x)

        def work_on(lo: int, hi: int) -> None:
            with np.errstate(over="ignore", under="ignore"):
                for blk in blocks[lo:hi]:
                    n0, n1, j0, j1 = blk
                    X = self._block_inputs(t, x, blk)
                    out = np.empty((X.shape[0], self._m))
                    self._forward_rows(X, self._block_acts(acts_all, blk, X.shape[0]), out)
                    G[n0:n1, j0:j1] = out.reshape(n1 - n0, j1 - j0, self._m)

        run_blocks(lambda: work_on, len(blocks), self._threads)  # blocks handed out as threads become free
        if cache:
            self._cache = _Cache(t=t.copy(), x=x.copy(), params=self._params.copy(), acts=acts_all)
        return G[..., 0] if self._m == 1 else G

    def vjp_grid(self, r: np.ndarray) -> np.ndarray:
        c = self._cache
        if c is None:
            raise RuntimeError(
                "MLP.vjp_grid: no cached grid evaluation; call evaluate_grid(t, x, cache=True) first "
                "(assigning parameters and clear_cache() discard it)"
            )
        if not np.array_equal(c.params, self._params):
            raise RuntimeError("MLP.vjp_grid: the parameters changed since evaluate_grid; evaluate again first")
        n_t, n_x = c.t.size, c.x.shape[0]
        r = np.ascontiguousarray(r, dtype=np.float64)
        if r.shape != self._value_shape((n_t, n_x)):
            raise ValueError(f"MLP.vjp_grid: r must have shape {self._value_shape((n_t, n_x))}, got {r.shape}")
        r = r.reshape(n_t, n_x, self._m)
        blocks = self._grid_blocks(n_t, n_x)
        k = max(1, min(self._threads, len(blocks)))
        bounds = [len(blocks) * i // k for i in range(k + 1)]
        parts = np.zeros((k, self.n_params))

        def work_on(lo: int, hi: int) -> None:
            grad = parts[bounds.index(lo)]
            with np.errstate(over="ignore", under="ignore"):
                for blk in blocks[lo:hi]:
                    n0, n1, j0, j1 = blk
                    X = self._block_inputs(c.t, c.x, blk)
                    acts = self._block_acts(c.acts, blk, X.shape[0])
                    if c.acts is None:
                        self._forward_rows(X, acts, np.empty((X.shape[0], self._m)))
                    self._backward_rows(X, acts, r[n0:n1, j0:j1].reshape(-1, self._m), grad)

        run_ranges(work_on, len(blocks), k)
        grad = parts[0].copy()
        for p in parts[1:]:
            grad += p
        return grad

    # -- checkpoints -------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """``{"kind": "mlp", input_dim, hidden, n_outputs, activation, init, output_scale, beta, params}``."""
        return {
            "kind": "mlp",
            "input_dim": self._d,
            "hidden": list(self._hidden),
            "n_outputs": self._m,
            "activation": self._activation,
            "init": self._init,
            "output_scale": self._output_scale,
            "beta": self._beta,
            "params": self._params.copy(),
        }

    @classmethod
    def from_state_dict(cls, state: dict[str, Any]) -> MLP:
        """Rebuild an MLP from :meth:`state_dict` output."""
        keys = ("input_dim", "hidden", "n_outputs", "activation", "init", "output_scale", "beta", "params")
        missing = [k for k in keys if k not in state]
        if missing:
            raise ValueError(f"MLP.from_state_dict: the state is missing the keys {missing}; required: {keys}")
        net = cls(
            int(state["input_dim"]), [int(h) for h in state["hidden"]], int(state["n_outputs"]),
            str(state["activation"]), str(state["init"]), str(state["output_scale"]), float(state["beta"]),
        )
        net.params = state["params"]
        return net

    def copy(self) -> MLP:
        """An independent copy (no cache)."""
        new = MLP.from_state_dict(self.state_dict())
        new._threads = self._threads
        new._max_cache_bytes = self._max_cache_bytes
        return new

    def __repr__(self) -> str:
        return (
            f"MLP(input_dim={self._d}, hidden={self._hidden}, n_outputs={self._m}, "
            f"activation={self._activation!r}, output_scale={self._output_scale!r})"
        )
