"""The model interface and the numpy MLP (pure numpy; no DOLFINx)."""

from __future__ import annotations

import numpy as np
import pytest

from femnpde.model.base import Model
from femnpde.model.mlp import INITIALISATIONS, MLP
from femnpde.model.network import ShallowNetwork

pytestmark = pytest.mark.serial


def _grid(n_t=5, n_x=7, d=2, seed=1):
    rng = np.random.default_rng(seed)
    return np.linspace(0.0, 1.0, n_t), rng.uniform(-1.0, 1.0, (n_x, d))


def _central_fd(f, theta, v, h):
    return (f(theta + h * v) - f(theta - h * v)) / (2 * h)


def _fd_best(f, grad, theta, v, steps=(1e-3, 1e-4, 1e-5, 1e-6)):
    """Best relative error of the directional derivative against central differences."""
    exact = float(grad @ v)
    return min(abs(_central_fd(f, theta, v, h) - exact) / abs(exact) for h in steps)


def test_models_implement_the_interface():
    assert isinstance(ShallowNetwork(5, 2), Model)
    assert isinstance(MLP(2, [4, 3]), Model)


@pytest.mark.parametrize("activation", ["tanh", "sigmoid", "softplus"])
@pytest.mark.parametrize("m", [1, 2])
def test_mlp_grid_vjp_matches_finite_differences(activation, m):
    net = MLP(2, [6, 5], n_outputs=m, activation=activation, seed=3)
    t, x = _grid()
    rng = np.random.default_rng(0)
    shape = (t.size, x.shape[0]) if m == 1 else (t.size, x.shape[0], m)
    r = rng.standard_normal(shape)
    theta = net.get_params()
    G = net.evaluate_grid(t, x)
    assert G.shape == shape
    grad = net.vjp_grid(r)

    def f(th):
        net.params = th
        return float(np.sum(r * net.evaluate_grid(t, x, cache=False)))

    v = rng.standard_normal(theta.size)
    assert _fd_best(f, grad, theta, v) <= 1e-8


@pytest.mark.parametrize("m", [1, 3])
def test_mlp_pointwise_equals_grid_and_vjps_agree(m):
    net = MLP(2, [8, 8, 4], n_outputs=m, init="he", seed=5)
    t, x = _grid(4, 6)
    G = net.evaluate_grid(t, x)
    T = np.repeat(t, x.shape[0])
    X = np.tile(x, (t.size, 1))
    P = net(T, X)
    np.testing.assert_allclose(P.reshape(G.shape), G, rtol=1e-14, atol=1e-14)
    r = np.random.default_rng(2).standard_normal(G.shape)
    np.testing.assert_allclose(net.vjp(T, X, r.reshape(P.shape)), net.vjp_grid(r), rtol=1e-12, atol=1e-13)


def test_mlp_cache_threads_and_blocks_do_not_change_results(monkeypatch):
    t, x = _grid(9, 50)
    r = np.random.default_rng(4).standard_normal((9, 50))
    ref = MLP(2, [7, 6], seed=1, threads=1)
    G0, g0 = ref.evaluate_grid(t, x), None
    g0 = ref.vjp_grid(r)
    for threads, max_cache in ((2, 4 << 30), (1, 0), (2, 0)):
        net = MLP(2, [7, 6], seed=1, threads=threads, max_cache_bytes=max_cache)
        np.testing.assert_array_equal(net.evaluate_grid(t, x), G0)
        np.testing.assert_allclose(net.vjp_grid(r), g0, rtol=1e-13, atol=1e-14)
    import femnpde.model.mlp as mlp_mod

    monkeypatch.setattr(mlp_mod, "_BLOCK_ELEMS", 7 * 13)  # row blocks inside one time level
    net = MLP(2, [7, 6], seed=1, threads=2)
    np.testing.assert_allclose(net.evaluate_grid(t, x), G0, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(net.vjp_grid(r), g0, rtol=1e-13, atol=1e-14)


@pytest.mark.parametrize("init", INITIALISATIONS)
def test_mlp_initialisations(init):
    net = MLP(2, [200, 100], init=init, seed=0)
    W1, W2, W3 = net.weights
    if init == "glorot":
        assert np.max(np.abs(W2)) <= np.sqrt(6 / 300)
        assert abs(np.var(W2) - 2 / 300) < 0.1 * 2 / 300
        assert not np.any(net.biases[1])
    elif init == "he":
        assert abs(np.var(W2) - 2 / 200) < 0.1 * 2 / 200
    else:
        assert abs(np.var(W2) - 1.0) < 0.05 and np.max(np.abs(W3)) <= 1.0
        assert abs(np.var(net.biases[0]) - 1.0) < 0.3
    assert np.array_equal(MLP(2, [200, 100], init=init, seed=0).params, net.params)


def test_mlp_mean_field_scale():
    a = MLP(2, [10, 40], output_scale="mean-field", beta=0.75, seed=2)
    b = MLP(2, [10, 40], seed=2)
    t, x = _grid()
    assert a.scale == 40**-0.75
    np.testing.assert_allclose(a.evaluate_grid(t, x, cache=False), 40**-0.75 * b.evaluate_grid(t, x, cache=False),
                               rtol=1e-13)


def test_state_dicts_round_trip_and_mismatch():
    net = MLP(2, [5, 4], n_outputs=2, activation="sigmoid", seed=8)
    st = net.state_dict()
    new = MLP.from_state_dict(st)
    assert np.array_equal(new.params, net.params) and new.n_outputs == 2
    other = MLP(2, [5, 4], n_outputs=2, activation="sigmoid", seed=9)
    other.load_state_dict(st)
    assert np.array_equal(other.params, net.params)
    with pytest.raises(ValueError, match="hidden"):
        MLP(2, [5, 5], n_outputs=2, activation="sigmoid").load_state_dict(st)
    sh = ShallowNetwork(6, 2, seed=1)
    sh2 = ShallowNetwork(6, 2, seed=2)
    sh2.load_state_dict(sh.state_dict())
    assert np.array_equal(sh2.params, sh.params)
    with pytest.raises(ValueError, match="n_neurons"):
        ShallowNetwork(7, 2).load_state_dict(sh.state_dict())


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(hidden=[]), "hidden"),
        (dict(hidden=[3, 0]), r"hidden\[1\]"),
        (dict(hidden=[3], activation="relu"), "activation"),
        (dict(hidden=[3], init="xavier"), "init"),
        (dict(hidden=[3], output_scale="ntk"), "output_scale"),
        (dict(hidden=[3], n_outputs=0), "n_outputs"),
        (dict(hidden=[3], beta=1.5), "beta"),
    ],
)
def test_mlp_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        MLP(2, **kwargs)


def test_mlp_vjp_grid_needs_a_fresh_cache():
    net = MLP(2, [3])
    t, x = _grid()
    with pytest.raises(RuntimeError, match="no cached"):
        net.vjp_grid(np.zeros((t.size, x.shape[0])))
    net.evaluate_grid(t, x)
    net.params[0] += 1.0
    with pytest.raises(RuntimeError, match="changed"):
        net.vjp_grid(np.zeros((t.size, x.shape[0])))
    net.evaluate_grid(t, x)
    with pytest.raises(ValueError, match="shape"):
        net.vjp_grid(np.zeros((t.size, x.shape[0] + 1)))
