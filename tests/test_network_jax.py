"""JAX models: a user jax.numpy MLP through the model interface (no DOLFINx)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from femnpde.model.mlp import MLP

pytestmark = pytest.mark.serial

jax = pytest.importorskip("jax")

from femnpde.model.jax_model import JaxModel, import_jax, mlp_factory  # noqa: E402


def _grid(n_t=5, n_x=7, d=2, seed=1):
    rng = np.random.default_rng(seed)
    return np.linspace(0.0, 1.0, n_t), rng.uniform(-1.0, 1.0, (n_x, d))


def _jax_copy_of(net: MLP) -> JaxModel:
    """The numpy MLP's weights in the jax.numpy MLP of mlp_factory."""
    apply, _ = mlp_factory(net.input_dim, net.n_outputs, hidden=net.hidden, activation=net.activation)
    jnp = jax.numpy
    params = [{"W": jnp.asarray(W.T), "b": jnp.asarray(b)} for W, b in zip(net.weights, net.biases)]
    return JaxModel(apply, params, net.input_dim, net.n_outputs)


def _to_numpy_layout(net: MLP, g_jax: np.ndarray) -> np.ndarray:
    out, k = [], 0
    for W in net.weights:
        o, i = W.shape
        out.append(g_jax[k : k + i * o].reshape(i, o).T.ravel())
        k += i * o
        out.append(g_jax[k : k + o])
        k += o
    return np.concatenate(out)


@pytest.mark.parametrize("m", [1, 2])
def test_jax_mlp_equals_numpy_mlp(m):
    net = MLP(2, [6, 5], n_outputs=m, seed=3)
    jm = _jax_copy_of(net)
    assert jm.n_params == net.n_params and jm.n_outputs == m
    t, x = _grid()
    G = jm.evaluate_grid(t, x)
    assert G.dtype == np.float64
    np.testing.assert_allclose(G, net.evaluate_grid(t, x), rtol=1e-13, atol=1e-14)
    r = np.random.default_rng(0).standard_normal(G.shape)
    np.testing.assert_allclose(_to_numpy_layout(net, jm.vjp_grid(r)), net.vjp_grid(r), rtol=1e-12, atol=1e-13)
    T, X = np.repeat(t, x.shape[0]), np.tile(x, (t.size, 1))
    np.testing.assert_allclose(jm(T, X).reshape(G.shape), G, rtol=1e-14, atol=1e-14)
    np.testing.assert_allclose(jm.vjp(T, X, r.reshape(jm(T, X).shape)), jm.vjp_grid(r), rtol=1e-12, atol=1e-13)


def test_jax_grid_vjp_matches_finite_differences():
    apply, params = mlp_factory(2, 1, seed=4, hidden=(8, 8))
    jm = JaxModel(apply, params, 2)
    t, x = _grid()
    r = np.random.default_rng(1).standard_normal((t.size, x.shape[0]))
    theta = jm.get_params()
    jm.evaluate_grid(t, x)
    grad = jm.vjp_grid(r)

    def f(th):
        jm.params = th
        return float(np.sum(r * jm.evaluate_grid(t, x, cache=False)))

    v = np.random.default_rng(2).standard_normal(theta.size)
    exact = float(grad @ v)
    best = min(abs((f(theta + h * v) - f(theta - h * v)) / (2 * h) - exact) / abs(exact) for h in (1e-3, 1e-4, 1e-5))
    assert best <= 1e-8


def test_jax_state_dict_and_errors():
    apply, params = mlp_factory(2, 1, seed=0, hidden=(4,))
    jm = JaxModel(apply, params, 2)
    st = jm.state_dict()
    other = JaxModel(*mlp_factory(2, 1, seed=1, hidden=(4,)), 2)
    other.load_state_dict(st)
    assert np.array_equal(other.params, jm.params)
    with pytest.raises(ValueError, match="n_params"):
        JaxModel(*mlp_factory(2, 1, hidden=(5,)), 2).load_state_dict(st)
    with pytest.raises(ValueError, match="expected"):
        JaxModel(apply, params, 2, n_outputs=2)
    with pytest.raises(RuntimeError, match="no cached"):
        jm.vjp_grid(np.zeros((2, 3)))


def test_missing_jax_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "jax", None)
    with pytest.raises(ModuleNotFoundError, match=r"femnpde\[jax\]"):
        import_jax()


def test_femnpde_import_does_not_import_jax():
    code = "import sys, femnpde, femnpde.model.jax_model, femnpde.model.mlp; print('jax' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"
