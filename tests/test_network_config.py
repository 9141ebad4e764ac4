"""[network] kinds and [parameters] in the run configuration."""

from __future__ import annotations

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.config import ConfigError, build_run, validate
from femnpde.model.mlp import MLP
from femnpde.model.network import ShallowNetwork

SMALL = {
    "mesh": {"cells": [4, 8]},
    "time": {"n_steps": 4},
    "network": {"neurons": 5},
    "run": {"iterations": 2},
}


def _cfg(**sections):
    cfg = {k: dict(v) for k, v in SMALL.items()}
    for k, v in sections.items():
        cfg[k] = v
    return cfg


@pytest.mark.serial
def test_default_network_section_is_unchanged():
    """No new key appears in a resolved default configuration (saved configs stay the same)."""
    assert validate({})["network"] == {"neurons": 100, "beta": 2.0 / 3.0, "activation": "tanh", "seed": 42}
    assert "parameters" not in validate({})


@pytest.mark.serial
@pytest.mark.parametrize(
    "network, match",
    [
        ({"kind": "mlp"}, "network.hidden is missing"),
        ({"kind": "mlp", "hidden": []}, "network.hidden"),
        ({"kind": "mlp", "hidden": [4], "init": "xavier"}, "network.init"),
        ({"kind": "mlp", "hidden": [4], "factory": "a.b:c"}, "network.factory .* not used with kind 'mlp'"),
        ({"hidden": [4]}, "network.hidden .* default kind"),
        ({"kind": "jax"}, "network.factory is missing"),
        ({"kind": "jax", "factory": "nocolon"}, "network.factory"),
        ({"kind": "cnn"}, "network.kind"),
    ],
)
def test_bad_network_sections(network, match):
    with pytest.raises(ConfigError, match=match):
        validate(_cfg(network=network))


@pytest.mark.serial
@pytest.mark.parametrize(
    "parameters, pde, match",
    [
        ({"beta": {"initial": 1.0}}, {}, "parameters.beta .* not a parameter of the preset 'heat'"),
        ({"gamma": {"initial": 0.02, "bounds": [1.0, 0.1]}}, {}, "parameters.gamma.bounds"),
        ({"gamma": {"initial": 2.0, "bounds": [0.0, 1.0]}}, {}, "parameters.gamma.bounds"),
        ({"gamma": {"initial": 0.02, "trainabel": True}}, {}, "did you mean 'parameters.gamma.trainable'"),
        ({"gamma": {"true": 0.01}}, {}, "only used with a custom pde.residual"),
        ({"gamma": 0.02}, {}, "parameters.gamma"),
        ({"kappa": {"initial": 1.0}}, {"residual": "femnpde.fem.problem:heat"}, "parameters.kappa.true is missing"),
    ],
)
def test_bad_parameters(parameters, pde, match):
    with pytest.raises(ConfigError, match=match):
        validate(_cfg(parameters=parameters, pde=pde))


@pytest.mark.serial
def test_preset_parameter_defaults_to_the_pde_value():
    cfg = validate(_cfg(parameters={"gamma": {"bounds": [1e-4, 1.0]}}))
    assert cfg["parameters"] == {"gamma": {"initial": 0.01, "trainable": True, "bounds": [1e-4, 1.0]}}


def test_build_run_mlp_and_trainable_gamma():
    cfg = _cfg(network={"kind": "mlp", "hidden": [6, 4], "seed": 3},
               parameters={"gamma": {"initial": 0.02, "bounds": [1e-4, 1.0]}})
    run = build_run(cfg, MPI.COMM_WORLD, "netcfg_a_")
    try:
        assert isinstance(run.network, MLP) and run.network.hidden == [6, 4]
        theta = run.rf.initial_theta()
        assert run.rf.n_params == run.network.n_params + 1 and theta[-1] == 1.0
        # The data were made with pde.gamma = 0.01: the loss vanishes there only for the true source.
        J, grad = run.rf.value_and_gradient(theta)
        assert np.isfinite(J) and grad.shape == theta.shape and grad[-1] != 0.0
        assert float(run.problem.constants["gamma"].value) == 0.02
    finally:
        run.destroy()


def test_build_run_two_outputs_with_a_custom_residual():
    cfg = _cfg(pde={"residual": "tests.test_network_pde:two_coefficients_factory"},
               network={"kind": "mlp", "hidden": [5], "outputs": 2})
    run = build_run(cfg, MPI.COMM_WORLD, "netcfg_b_")
    try:
        assert run.problem.n_sources == 2 and run.network.n_outputs == 2
        J, grad = run.rf.value_and_gradient(run.rf.initial_theta())
        assert np.isfinite(J) and np.linalg.norm(grad) > 0
    finally:
        run.destroy()


def test_build_run_jax():
    pytest.importorskip("jax")
    from femnpde.model.jax_model import JaxModel

    cfg = _cfg(network={"kind": "jax", "factory": "femnpde.model.jax_model:mlp_factory", "options": {"hidden": [4]}})
    run = build_run(cfg, MPI.COMM_WORLD, "netcfg_c_")
    try:
        assert isinstance(run.network, JaxModel) and run.network.n_params == 3 * 4 + 4 + 4 + 1
        assert np.isfinite(run.rf(run.rf.initial_theta()))
    finally:
        run.destroy()


def test_build_run_default_network_is_the_shallow_one():
    run = build_run(_cfg(), MPI.COMM_WORLD, "netcfg_d_")
    try:
        ref = ShallowNetwork(5, 2, seed=42)
        assert type(run.network) is ShallowNetwork and np.array_equal(run.network.params, ref.params)
        assert np.array_equal(run.rf.initial_theta(), ref.params)
    finally:
        run.destroy()


def test_preset_parameters_match_the_presets():
    """The schema's list of preset constants (no DOLFINx there) is that of femnpde.fem.problem.PRESETS."""
    from femnpde.app.schema import PRESET_PARAMETERS
    from femnpde.fem.problem import PRESETS

    assert PRESET_PARAMETERS == {name: names for name, (_, names) in PRESETS.items()}
