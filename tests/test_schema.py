"""Tests for femnpde.app.schema / validation / loading: one home of defaults and choices, validation without DOLFINx."""

from __future__ import annotations

import inspect
import json
import os
import pathlib
import subprocess
import sys
import tomllib

import pytest

from femnpde.app import schema
from femnpde.app.checks import _all_keys
from femnpde.app.schema import CHOICES, DEFAULTS, DEPENDENT, HELP, OPTIONAL_DEFAULTS, config_reference, default
from femnpde.app.validation import validate

ROOT = pathlib.Path(__file__).resolve().parent.parent
DEMOS = ROOT / "demos"


def _every_key() -> list[str]:
    keys = []
    for section, allowed in _all_keys().items():
        for k in allowed:
            key = f"{section}.{k}"
            if key not in _all_keys():  # sub-tables are sections of their own
                keys.append(key)
    return keys


@pytest.mark.serial
def test_validating_a_config_imports_no_dolfinx_petsc_or_mpi4py():
    """``femnpde config check`` and ``train --dry-run`` run without the numerical stack."""
    code = (
        "import json, sys\n"
        "from femnpde.app.cli import main\n"
        "codes = [main(['config', 'check', sys.argv[1]]), main(['train', '--dry-run', sys.argv[1]]),\n"
        "         main(['config', 'check', sys.argv[1], '--set', 'network.neurns=3'])]\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('dolfinx', 'petsc4py', 'mpi4py', 'ufl', 'basix'))\n"
        "print(json.dumps({'codes': codes, 'heavy': heavy}))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OMPI_", "PMI", "PMIX"))}
    out = subprocess.run(
        [sys.executable, "-c", code, str(DEMOS / "annulus_sensors.toml")],
        capture_output=True, text=True, env=env, cwd=ROOT, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["codes"] == [0, 0, 2]
    assert result["heavy"] == []
    assert "network.neurons" in out.stderr  # the bad key is named, with the suggestion
    assert "is valid" in out.stdout


def test_choice_lists_match_their_implementations():
    from femnpde.app.scenarios import TARGETS
    from femnpde.fem.problem import PRESETS
    from femnpde.model.network import ACTIVATIONS
    from femnpde.obs.weights import TIME_RULES
    from femnpde.optim import OPTIMIZERS, SCHEDULES

    assert CHOICES["pde.preset"] == tuple(PRESETS)
    assert CHOICES["data.target"] == tuple(TARGETS)
    assert CHOICES["network.activation"] is ACTIVATIONS
    assert CHOICES["loss.time_rule"] is TIME_RULES
    assert set(CHOICES["optimizer.kind"]) == {*OPTIMIZERS, "lbfgs"}
    assert set(CHOICES["optimizer.schedule.kind"]) == {*SCHEDULES, "none"}


def test_constructor_defaults_agree_with_the_schema():
    """Where a numerical constructor has a default for a configured value, it is the schema's."""
    from femnpde.model.network import ShallowNetwork

    net = inspect.signature(ShallowNetwork.__init__).parameters
    assert net["activation"].default == default("network.activation")
    solver = pytest.importorskip("femnpde.fem.solver")
    params = inspect.signature(solver.ThetaSolver.__init__).parameters
    for key in ("newton_rtol", "newton_atol", "newton_max_it", "nonlinear_method"):
        assert params[key].default == default(f"solver.{key}"), key


def test_shared_defaults_have_one_home():
    """femnpde.defaults is what the schema and the numerical constructors read (not equal copies)."""
    from femnpde import defaults as D
    from femnpde.model.mlp import MLP
    from femnpde.model.network import ShallowNetwork

    schema = {
        "network.neurons": D.NETWORK_NEURONS, "network.beta": D.NETWORK_BETA,
        "network.activation": D.NETWORK_ACTIVATION, "network.seed": D.NETWORK_SEED,
        "network.outputs": D.NETWORK_OUTPUTS, "network.init": D.MLP_INIT, "network.output_scale": D.MLP_OUTPUT_SCALE,
        "pde.degree": D.PDE_DEGREE, "pde.source": D.PDE_SOURCE, "time.theta": D.TIME_THETA,
        "solver.newton_rtol": D.NEWTON_RTOL, "solver.newton_atol": D.NEWTON_ATOL,
        "solver.newton_max_it": D.NEWTON_MAX_IT, "solver.nonlinear_method": D.NONLINEAR_METHOD,
    }
    assert set(schema.values()) <= {getattr(D, name) for name in D.__all__}
    for key, value in schema.items():
        assert default(key) is value, key
    net = inspect.signature(ShallowNetwork.__init__).parameters
    mlp = inspect.signature(MLP.__init__).parameters
    for params, names in ((net, {"beta": D.NETWORK_BETA, "activation": D.NETWORK_ACTIVATION, "seed": D.NETWORK_SEED}),
                          (mlp, {"beta": D.NETWORK_BETA, "activation": D.NETWORK_ACTIVATION, "seed": D.NETWORK_SEED,
                                 "n_outputs": D.NETWORK_OUTPUTS, "init": D.MLP_INIT,
                                 "output_scale": D.MLP_OUTPUT_SCALE})):
        for name, value in names.items():
            assert params[name].default is value, name
    problem = pytest.importorskip("femnpde.fem.problem")
    params = inspect.signature(problem.ParabolicProblem.__init__).parameters
    assert (params["degree"].default, params["theta"].default, params["source"].default) == (
        D.PDE_DEGREE, D.TIME_THETA, D.PDE_SOURCE)
    solver = pytest.importorskip("femnpde.fem.solver")
    params = inspect.signature(solver.ThetaSolver.__init__).parameters
    for key, value in (("newton_rtol", D.NEWTON_RTOL), ("newton_atol", D.NEWTON_ATOL), ("newton_max_it", D.NEWTON_MAX_IT)):
        assert params[key].default is value, key


def test_every_key_is_documented_and_has_a_default_or_a_rule():
    keys = _every_key()
    assert len(keys) > 60
    for key in keys:
        assert HELP.get(key), f"{key} has no help text"
        assert key in DEPENDENT or key in OPTIONAL_DEFAULTS or default(key) is not None, key
    for key in CHOICES:
        assert key in keys, key
    # A resolved default configuration holds exactly the schema's defaults.
    resolved = validate({})
    for key in keys:
        section, leaf = key.rsplit(".", 1)
        node = resolved
        for part in section.split("."):
            node = node[part] if isinstance(node, dict) else node
        if isinstance(node, dict) and leaf in node and key not in DEPENDENT:
            assert node[leaf] == default(key), key


def test_validators_carry_no_literal_defaults():
    """Defaults are read from the schema: a changed default changes the resolved configuration."""
    old = DEFAULTS["pde"]["gamma"], DEFAULTS["optimizer"]["schedule"]["cooldown"], OPTIONAL_DEFAULTS["mesh.gdim"]
    try:
        DEFAULTS["pde"]["gamma"] = 0.123
        DEFAULTS["optimizer"]["schedule"]["cooldown"] = 7
        cfg = validate({})
        assert cfg["pde"]["gamma"] == 0.123
        assert cfg["optimizer"]["schedule"]["cooldown"] == 7
    finally:
        DEFAULTS["pde"]["gamma"], DEFAULTS["optimizer"]["schedule"]["cooldown"], OPTIONAL_DEFAULTS["mesh.gdim"] = old


def test_config_reference_is_generated_from_the_schema():
    text = config_reference()
    for key in _every_key():
        section, leaf = key.rsplit(".", 1)
        assert f"[{section}]" in text or f"[[{section}]]" in text, section
        assert f"  {leaf}: " in text, key
    assert 'choices: heat | allen-cahn; default: "heat"' in text
    assert "threshold_mode: plateau: relative or absolute threshold; choices: rel | abs" in text


def test_dump_uses_tomli_w_and_round_trips():
    cfg = validate({"boundary": [], "solver": {"petsc_options": {"ksp_type": "cg", "ksp_odd_value": 'a "q"\\\n'}}})
    text = schema.dump_config(cfg)
    assert tomllib.loads(text) == cfg
    assert "_toml_value" not in dir(schema) and "tomli_w" in schema.dump_config.__globals__


def test_schedule_options_are_validated():
    cfg = validate({"optimizer": {"schedule": {"threshold_mode": "abs", "cooldown": 3, "eps": 1e-3}}})
    assert cfg["optimizer"]["schedule"]["threshold_mode"] == "abs"
    with pytest.raises(ValueError, match='optimizer.schedule.threshold_mode = "relative" is not valid'):
        validate({"optimizer": {"schedule": {"threshold_mode": "relative"}}})
    with pytest.raises(ValueError, match="optimizer.schedule.cooldown"):
        validate({"optimizer": {"schedule": {"cooldown": -1}}})
