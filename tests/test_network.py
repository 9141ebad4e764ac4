"""Tests for femnpde.model.network (pure numpy shallow network)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from femnpde.model import _grid as grid_module
from femnpde.model.network import ACTIVATIONS, ShallowNetwork, reference_learning_rate

#: numpy only: nothing here depends on the number of MPI ranks.
pytestmark = pytest.mark.serial

DIMS = (1, 2, 3)


def _points(m: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 1.0, m), rng.uniform(-1.0, 1.0, (m, d))


def _grid(n_t: int, n_x: int, d: int, seed: int = 1) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return np.linspace(0.0, 1.0, n_t), rng.uniform(-1.0, 1.0, (n_x, d))


def _sigma_scalar(z: float, activation: str) -> float:
    if activation == "tanh":
        return math.tanh(z)
    if activation == "sigmoid":
        return 0.5 * (1.0 + math.tanh(0.5 * z))
    return max(z, 0.0) + math.log1p(math.exp(-abs(z)))  # softplus


def _naive(net: ShallowNetwork, t: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Reference g(t, x) with explicit loops over points and neurons."""
    out = np.empty(t.size)
    for m in range(t.size):
        total = 0.0
        for i in range(net.n_neurons):
            z = net.w_t[i] * t[m] + float(np.dot(net.w_x[i], x[m])) + net.eta[i]
            total += net.c[i] * _sigma_scalar(z, net.activation)
        out[m] = net.n_neurons ** (-net.beta) * total
    return out


def _fd_gradient(f, theta: np.ndarray, h: float = 1e-6) -> np.ndarray:
    g = np.empty_like(theta)
    for k in range(theta.size):
        tp, tm = theta.copy(), theta.copy()
        tp[k] += h
        tm[k] -= h
        g[k] = (f(tp) - f(tm)) / (2.0 * h)
    return g


def _rel_err(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


# ---------------------------------------------------------------------------
# structure
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("d", DIMS)
def test_shapes_and_n_params(d):
    n = 7
    net = ShallowNetwork(n, d)
    assert net.n_neurons == n and net.input_dim == d
    assert net.n_params == n * (3 + d)
    assert net.params.shape == (n * (3 + d),) and net.params.dtype == np.float64
    assert net.c.shape == (n,) and net.w_t.shape == (n,) and net.eta.shape == (n,)
    assert net.w_x.shape == (n, d)
    t, x = _points(5, d)
    assert net(t, x).shape == (5,)
    assert net.vjp(t, x, np.ones(5)).shape == (net.n_params,)
    tg, xg = _grid(4, 6, d)
    assert net.evaluate_grid(tg, xg).shape == (4, 6)
    assert net.vjp_grid(np.ones((4, 6))).shape == (net.n_params,)


def test_flat_layout_and_view_aliasing():
    n, d = 4, 3
    net = ShallowNetwork(n, d)
    net.c[1] = 11.0
    net.w_t[2] = 22.0
    net.w_x[3, 1] = 33.0
    net.eta[0] = 44.0
    p = net.params
    assert p[1] == 11.0
    assert p[n + 2] == 22.0
    assert p[2 * n + 3 * d + 1] == 33.0  # row-major N x d
    assert p[(2 + d) * n + 0] == 44.0
    # the other direction: writing into params changes the views
    net.params[n] = -5.0
    assert net.w_t[0] == -5.0
    # assignment copies in and keeps earlier views valid
    c_view = net.c
    new = np.arange(net.n_params, dtype=float)
    net.params = new
    new[0] = 1e9
    assert net.params[0] == 0.0
    np.testing.assert_array_equal(c_view, np.arange(n, dtype=float))
    np.testing.assert_array_equal(net.w_x, np.arange(2 * n, (2 + d) * n).reshape(n, d))
    # block setters copy into the flat vector
    net.eta = np.full(n, 7.0)
    np.testing.assert_array_equal(net.params[(2 + d) * n :], 7.0)


def test_params_setter_checks_shape():
    net = ShallowNetwork(3, 2)
    with pytest.raises(ValueError, match="params"):
        net.params = np.zeros(net.n_params + 1)
    with pytest.raises(ValueError, match="params"):
        net.params = np.zeros((net.n_params, 1))
    with pytest.raises(ValueError, match="w_x"):
        net.w_x = np.zeros(6)


def test_copy_is_independent():
    net = ShallowNetwork(5, 2, beta=0.75, activation="sigmoid", seed=3)
    cp = net.copy()
    assert (cp.n_neurons, cp.input_dim, cp.beta, cp.activation) == (
        5,
        2,
        0.75,
        "sigmoid",
    )
    np.testing.assert_array_equal(cp.params, net.params)
    cp.c[0] += 1.0
    assert cp.params[0] != net.params[0]


# ---------------------------------------------------------------------------
# forward evaluation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("d", DIMS)
def test_call_matches_naive_formula(activation, d):
    net = ShallowNetwork(9, d, beta=0.6, activation=activation, seed=5)
    t, x = _points(11, d)
    np.testing.assert_allclose(net(t, x), _naive(net, t, x), rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_extreme_preactivations_are_finite_and_exact(activation):
    net = ShallowNetwork(4, 1, beta=1.0, activation=activation)
    net.params = np.zeros(net.n_params)
    net.c[:] = 1.0
    net.eta[:] = [-1000.0, -40.0, 40.0, 1000.0]
    t, x = np.zeros(1), np.zeros((1, 1))
    with np.errstate(all="raise"):  # no overflow may escape
        g = net(t, x)
        net.evaluate_grid(t, x)
    expected = _naive(net, t, x)
    assert np.all(np.isfinite(g))
    np.testing.assert_allclose(g, expected, rtol=1e-14)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("max_cache_bytes", [1 << 30, 0])
def test_grid_with_overflowing_separable_factors_equals_pointwise(activation, max_cache_bytes):
    """Pre-activations whose factors exp(-k P) overflow: the grid falls back to the direct formula, VJP included."""
    net = ShallowNetwork(4, 1, beta=1.0, activation=activation, seed=3, max_cache_bytes=max_cache_bytes)
    net.eta[:] = [-1000.0, -40.0, 40.0, 1000.0]
    tg, xg = _grid(3, 5, 1)
    r = np.random.default_rng(2).standard_normal((3, 5))
    tt, xx = np.repeat(tg, 5), np.tile(xg, (3, 1))
    with np.errstate(all="raise"):
        g = net.evaluate_grid(tg, xg)
        v = net.vjp_grid(r)
    np.testing.assert_allclose(g.ravel(), net(tt, xx), rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(v, net.vjp(tt, xx, r.ravel()), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("d", DIMS)
def test_call_equals_evaluate_grid(activation, d):
    net = ShallowNetwork(13, d, activation=activation, seed=2)
    tg, xg = _grid(5, 7, d)
    grid = net.evaluate_grid(tg, xg)
    tt = np.repeat(tg, xg.shape[0])
    xx = np.tile(xg, (tg.size, 1))
    np.testing.assert_allclose(grid.ravel(), net(tt, xx), rtol=1e-13, atol=1e-15)
    assert grid[3, 4] == pytest.approx(_naive(net, tg[3:4], xg[4:5])[0], rel=1e-13)


def test_one_dimensional_x_accepted_for_d1_only():
    net = ShallowNetwork(3, 1)
    t = np.array([0.1, 0.2])
    np.testing.assert_array_equal(
        net(t, np.array([0.3, 0.4])), net(t, np.array([[0.3], [0.4]]))
    )
    net2 = ShallowNetwork(3, 2)
    with pytest.raises(ValueError, match="x"):
        net2(t, np.array([0.3, 0.4]))
    with pytest.raises(ValueError, match="same number"):
        net(t, np.zeros((3, 1)))


# ---------------------------------------------------------------------------
# gradients
# ---------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("d", DIMS)
def test_vjp_matches_finite_differences(activation, d):
    net = ShallowNetwork(6, d, activation=activation, seed=11)
    t, x = _points(9, d, seed=4)
    r = np.random.default_rng(8).standard_normal(9)
    probe = net.copy()

    def f(theta):
        probe.params = theta
        return float(r @ probe(t, x))

    fd = _fd_gradient(f, net.params.copy())
    assert _rel_err(net.vjp(t, x, r), fd) < 1e-6


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("d", DIMS)
def test_vjp_grid_matches_finite_differences(activation, d):
    net = ShallowNetwork(6, d, activation=activation, seed=12)
    tg, xg = _grid(4, 5, d, seed=6)
    r = np.random.default_rng(9).standard_normal((4, 5))
    probe = net.copy()

    def f(theta):
        probe.params = theta
        return float(np.sum(r * probe.evaluate_grid(tg, xg, cache=False)))

    fd = _fd_gradient(f, net.params.copy())
    net.evaluate_grid(tg, xg)
    grad = net.vjp_grid(r)
    assert _rel_err(grad, fd) < 1e-6
    # and the pointwise vjp on the flattened grid gives the same vector
    tt, xx = np.repeat(tg, xg.shape[0]), np.tile(xg, (tg.size, 1))
    np.testing.assert_allclose(grad, net.vjp(tt, xx, r.ravel()), rtol=1e-11, atol=1e-14)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_vjp_grid_with_and_without_activation_cache(activation):
    d = 2
    tg, xg = _grid(6, 9, d)
    r = np.random.default_rng(3).standard_normal((6, 9))
    cached = ShallowNetwork(8, d, activation=activation, seed=1)
    uncached = ShallowNetwork(8, d, activation=activation, seed=1, max_cache_bytes=0)
    g1 = cached.evaluate_grid(tg, xg)
    g2 = uncached.evaluate_grid(tg, xg)
    # make sure the two code paths really differ
    assert cached._grid_cache.S is not None
    assert uncached._grid_cache.S is None
    np.testing.assert_array_equal(g1, g2)
    np.testing.assert_allclose(
        cached.vjp_grid(r), uncached.vjp_grid(r), rtol=1e-12, atol=1e-15
    )


def test_max_cache_bytes_threshold():
    tg, xg = _grid(3, 4, 1)
    need = 3 * 4 * 5 * 8
    assert ShallowNetwork(5, 1, max_cache_bytes=need).evaluate_grid(tg, xg) is not None
    exact = ShallowNetwork(5, 1, max_cache_bytes=need)
    exact.evaluate_grid(tg, xg)
    assert exact._grid_cache.S is not None
    below = ShallowNetwork(5, 1, max_cache_bytes=need - 1)
    below.evaluate_grid(tg, xg)
    assert below._grid_cache.S is None


@pytest.mark.parametrize("activation", ["softplus", "tanh", "sigmoid"])
@pytest.mark.parametrize("chunk", [1, 9, 50, 7 * 3 * 2, 1 << 16])
def test_blocking_does_not_change_results(monkeypatch, chunk, activation):
    """Row blocks (a level's tile of B reused and refilled), partial-time and multi-time blocks: the same numbers."""
    n, d = 3, 2
    tg, xg = _grid(5, 7, d)
    r = np.random.default_rng(5).standard_normal((5, 7))
    ref = ShallowNetwork(n, d, activation=activation, seed=4)
    g_ref, v_ref = ref.evaluate_grid(tg, xg), None
    v_ref = ref.vjp_grid(r)
    tt, xx = np.repeat(tg, 7), np.tile(xg, (5, 1))
    p_ref, pv_ref = ref(tt, xx), ref.vjp(tt, xx, r.ravel())

    monkeypatch.setattr(grid_module, "_CHUNK_ELEMS", chunk)  # the grid blocks and the pointwise row chunks
    for mcb in (1 << 30, 0):
        net = ShallowNetwork(n, d, activation=activation, seed=4, max_cache_bytes=mcb)
        np.testing.assert_allclose(net.evaluate_grid(tg, xg), g_ref, rtol=1e-13)
        np.testing.assert_allclose(net.vjp_grid(r), v_ref, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(net(tt, xx), p_ref, rtol=1e-13)
    np.testing.assert_allclose(
        net.vjp(tt, xx, r.ravel()), pv_ref, rtol=1e-12, atol=1e-15
    )


def test_cache_reuse_after_parameter_update_and_new_grid():
    d = 2
    tg, xg = _grid(4, 6, d)
    _, xg2 = _grid(4, 6, d, seed=99)
    r = np.random.default_rng(0).standard_normal((4, 6))
    net = ShallowNetwork(5, d, seed=0)
    net.evaluate_grid(tg, xg)
    net.params = net.params + 0.1 * net.vjp_grid(r)
    net.evaluate_grid(tg, xg)  # same shape: buffer reused with the new params
    fresh = ShallowNetwork.from_state_dict(net.state_dict())
    fresh.evaluate_grid(tg, xg)
    np.testing.assert_allclose(net.vjp_grid(r), fresh.vjp_grid(r), rtol=1e-13)
    # a new grid of the same shape replaces the old one
    net.evaluate_grid(tg, xg2)
    tt, xx = np.repeat(tg, 6), np.tile(xg2, (4, 1))
    np.testing.assert_allclose(net.vjp_grid(r), net.vjp(tt, xx, r.ravel()), rtol=1e-11)


def test_vjp_grid_errors():
    tg, xg = _grid(3, 4, 1)
    r = np.ones((3, 4))
    net = ShallowNetwork(5, 1)
    with pytest.raises(RuntimeError, match="evaluate_grid"):
        net.vjp_grid(r)
    net.evaluate_grid(tg, xg)
    with pytest.raises(ValueError, match="r must have the shape"):
        net.vjp_grid(np.ones((4, 3)))
    net.vjp_grid(r)  # fine
    net.params = net.params * 1.5
    with pytest.raises(RuntimeError, match="evaluate_grid"):
        net.vjp_grid(r)
    net.evaluate_grid(tg, xg)
    net.c[0] += 1.0  # in-place change is detected too
    with pytest.raises(RuntimeError, match="parameters changed"):
        net.vjp_grid(r)
    net.evaluate_grid(tg, xg)
    net.clear_cache()
    with pytest.raises(RuntimeError, match="no cached"):
        net.vjp_grid(r)
    net.evaluate_grid(tg, xg)
    net.evaluate_grid(tg, xg, cache=False)
    with pytest.raises(RuntimeError, match="no cached"):
        net.vjp_grid(r)


# ---------------------------------------------------------------------------
# initialisation, scaling, learning rate
# ---------------------------------------------------------------------------


def test_reference_initialisation_statistics():
    n = 20000
    net = ShallowNetwork(n, 2)
    assert np.all(np.abs(net.c) <= 1.0)
    assert abs(net.c.mean()) < 0.03 and abs(net.c.std() - 1 / math.sqrt(3)) < 0.02
    for w in (net.w_t, net.w_x.ravel(), net.eta):
        assert abs(w.mean()) < 0.03 and abs(w.std() - 1.0) < 0.03


@pytest.mark.parametrize("d", DIMS)
def test_reference_initialisation_draw_order(d):
    n = 6
    rng = np.random.default_rng(123)
    c = rng.uniform(-1.0, 1.0, n)
    w_t = rng.standard_normal(n)
    w_x = rng.standard_normal((n, d))
    eta = rng.standard_normal(n)
    net = ShallowNetwork(n, d, seed=123)
    np.testing.assert_array_equal(
        net.params, np.concatenate([c, w_t, w_x.ravel(), eta])
    )


def test_seeds():
    a = ShallowNetwork(10, 2, seed=1)
    b = ShallowNetwork(10, 2, seed=1)
    c = ShallowNetwork(10, 2, seed=2)
    np.testing.assert_array_equal(a.params, b.params)
    assert not np.array_equal(a.params, c.params)
    np.testing.assert_array_equal(
        ShallowNetwork(10, 2).params, ShallowNetwork(10, 2, seed=42).params
    )
    assert np.all(np.isfinite(ShallowNetwork(10, 2, seed=None).params))


def test_scale_and_reference_learning_rate():
    net = ShallowNetwork(64, 1, beta=0.75)
    assert net.scale == pytest.approx(64**-0.75, rel=1e-15)
    assert ShallowNetwork(64, 1).scale == pytest.approx(64 ** (-2 / 3), rel=1e-15)
    assert reference_learning_rate(0.1, 100, 0.75) == pytest.approx(1.0, rel=1e-14)
    assert reference_learning_rate(2.0, 8, 2 / 3) == pytest.approx(
        2.0 * 8 ** (1 / 3), rel=1e-14
    )
    assert reference_learning_rate(0.5, 1000, 0.5) == pytest.approx(0.5, rel=1e-15)
    with pytest.raises(ValueError, match="base_lr"):
        reference_learning_rate(0.0, 10, 0.7)
    with pytest.raises(ValueError, match="n_neurons"):
        reference_learning_rate(0.1, 0, 0.7)
    with pytest.raises(ValueError, match="beta"):
        reference_learning_rate(0.1, 10, 1.2)


# ---------------------------------------------------------------------------
# argument validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "name", "bad"),
    [
        ({"n_neurons": 0}, "n_neurons", "0"),
        ({"n_neurons": 2.5}, "n_neurons", "2.5"),
        ({"n_neurons": True}, "n_neurons", "True"),
        ({"input_dim": 4}, "input_dim", "4"),
        ({"input_dim": 0}, "input_dim", "0"),
        ({"beta": 0.0}, "beta", "0.0"),
        ({"beta": 1.5}, "beta", "1.5"),
        ({"beta": float("nan")}, "beta", "nan"),
        ({"beta": "0.7"}, "beta", "'0.7'"),
        ({"activation": "relu"}, "activation", "'relu'"),
        ({"max_cache_bytes": -1}, "max_cache_bytes", "-1"),
        ({"seed": -3}, "seed", "-3"),
        ({"seed": "abc"}, "seed", "'abc'"),
    ],
)
def test_invalid_arguments_raise_value_error(kwargs, name, bad):
    args = {"n_neurons": 4, "input_dim": 2} | kwargs
    with pytest.raises(ValueError) as info:
        ShallowNetwork(**args)
    msg = str(info.value)
    assert msg.startswith(name) and bad in msg


def test_beta_one_allowed():
    assert ShallowNetwork(4, 1, beta=1.0).scale == pytest.approx(0.25)


# ---------------------------------------------------------------------------
# serialisation
# ---------------------------------------------------------------------------


def test_state_dict_round_trip():
    net = ShallowNetwork(7, 3, beta=0.8, activation="softplus", seed=9)
    sd = net.state_dict()
    assert set(sd) == {"n_neurons", "input_dim", "beta", "activation", "params"}
    sd["params"][0] += 100.0  # a copy, not the live buffer
    assert net.params[0] != sd["params"][0]
    sd = net.state_dict()
    back = ShallowNetwork.from_state_dict(sd)
    assert (back.n_neurons, back.input_dim, back.beta, back.activation) == (
        7,
        3,
        0.8,
        "softplus",
    )
    np.testing.assert_array_equal(back.params, net.params)
    assert back.params is not sd["params"]
    t, x = _points(4, 3)
    np.testing.assert_array_equal(back(t, x), net(t, x))
    del sd["activation"]
    with pytest.raises(ValueError, match="activation"):
        ShallowNetwork.from_state_dict(sd)


@pytest.mark.serial
@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
def test_initialisation_and_state_dict_are_those_of_the_wave_1_network(activation):
    """Checkpoints stay bitwise: the parameters of ShallowNetwork(7, 2, seed=42) and the state-dict layout.

    The CRC-32 was computed with the wave-1 module (``git show 34e896c:femnpde/network.py``).
    """
    import zlib

    net = ShallowNetwork(7, 2, seed=42, activation=activation)
    assert zlib.crc32(net.params.tobytes()) == 1303086489
    state = net.state_dict()
    assert list(state) == ["n_neurons", "input_dim", "beta", "activation", "params"]
    assert state["params"].dtype == np.float64 and state["activation"] == activation


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("max_cache_bytes", [1 << 30, 0])
def test_grid_results_do_not_depend_on_the_threads(monkeypatch, activation, max_cache_bytes):
    """Bitwise the same grid values and VJP on 1, 2 and 3 threads (more blocks than partial-sum ranges)."""
    monkeypatch.setattr(grid_module, "_CHUNK_ELEMS", 40)
    d = 2
    tg, xg = _grid(7, 150, d)
    r = np.random.default_rng(6).standard_normal((7, 150))
    out = []
    for threads in (1, 2, 3):
        net = ShallowNetwork(5, d, activation=activation, seed=8, threads=threads, max_cache_bytes=max_cache_bytes)
        out.append((net.evaluate_grid(tg, xg), net.vjp_grid(r)))
    assert len(grid_module._GridBlocks(7, 150, 5)) > 64
    for g, v in out[1:]:
        np.testing.assert_array_equal(g, out[0][0])
        np.testing.assert_array_equal(v, out[0][1])
