"""Validation and resolution of a run configuration against :mod:`femnpde.app.schema`.

:func:`validate` checks a nested dict (as read from TOML) and returns it
*resolved*: every default filled in from the schema, ints given for float
keys as floats.  Imports neither DOLFINx nor PETSc nor mpi4py.

The sections are checked by :mod:`femnpde.app.validation_problem` (mesh,
pde, time, initial condition, boundaries), :mod:`femnpde.app.validation_data`
(data, observation, loss, parameters) and here (network, optimizer, run,
solver); the checks of single values are in :mod:`femnpde.app.checks`.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from femnpde.app.checks import (
    _bool,
    _choice,
    _error,
    _float,
    _floats,
    _get,
    _int,
    _ints,
    _reject_keys,
    _RESIDUAL_SPEC,
    _is_int,
    _is_number,
    _section,
    _str,
    _type_name,
    _unknown,
)
from femnpde.app.validation_data import (
    _check_data_file_kind,
    _validate_data,
    _validate_loss,
    _validate_observation,
    _validate_parameters,
)
from femnpde.app.validation_problem import (
    _validate_boundary,
    _validate_initial_condition,
    _validate_mesh,
    _validate_neumann,
    _validate_pde,
    _validate_time,
)
from femnpde.fem.storage_plan import recomputes, validate_state_storage
from femnpde.app.schema import (
    CHOICES,
    DEFAULTS,
    NETWORK_KIND_KEYS,
    ConfigError,
)

__all__ = ["validate"]


def _validate_network(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "network")
    out = {
        "neurons": _int("network.neurons", _get(sec, "network.neurons"), 1),
        "beta": _float("network.beta", _get(sec, "network.beta"), lambda f: 0.5 < f < 1.0,
                       "a number in the open interval (0.5, 1)"),
        "activation": _choice("network.activation", _get(sec, "network.activation"), CHOICES["network.activation"]),
        "seed": _int("network.seed", _get(sec, "network.seed"), 0),
    }
    kind_keys = [k for keys in NETWORK_KIND_KEYS.values() for k in keys]
    if "kind" not in sec:  # the resolved default section stays as it was (saved configurations unchanged)
        _reject_keys(sec, "network", kind_keys, 'is not used by the default kind "shallow"',
                     'remove {key}, or network.kind = "mlp" or "jax"')
        return out
    kind = out["kind"] = _choice("network.kind", sec["kind"], CHOICES["network.kind"])
    for k in kind_keys:
        if k in sec and k not in NETWORK_KIND_KEYS[kind]:
            users = " or ".join(repr(u) for u, keys in NETWORK_KIND_KEYS.items() if k in keys)
            raise _error(f"network.{k}", sec[k], f"is not used with kind {kind!r}", f"remove it, or network.kind = {users}")
    if kind != "shallow":
        out["outputs"] = _int("network.outputs", _get(sec, "network.outputs"), 1)
    if kind == "mlp":
        if "hidden" not in sec:
            raise ConfigError('network.hidden is missing; network.kind = "mlp" needs hidden = [64, 64] (widths)',
                              "network.hidden")
        out["hidden"] = _ints("network.hidden", sec["hidden"], "a non-empty list of integers >= 1, e.g. [64, 64]")
        if not out["hidden"]:
            raise _error("network.hidden", sec["hidden"], "is empty", "a non-empty list of integers >= 1")
        out["init"] = _choice("network.init", _get(sec, "network.init"), CHOICES["network.init"])
        out["output_scale"] = _choice("network.output_scale", _get(sec, "network.output_scale"),
                                      CHOICES["network.output_scale"])
    elif kind == "jax":
        if "factory" not in sec:
            raise ConfigError('network.factory is missing; network.kind = "jax" needs factory = '
                              '"package.module:function"', "network.factory")
        spec = _str("network.factory", sec["factory"], '"package.module:function"')
        if not _RESIDUAL_SPEC.fullmatch(spec):
            raise _error("network.factory", spec, "is not of the form package.module:function",
                         'e.g. "femnpde.model.jax_model:mlp_factory"')
        out["factory"] = spec
        options = sec.get("options", {})
        if not isinstance(options, Mapping):
            raise _error("network.options", options, f"is {_type_name(options)}", "a table of keyword arguments")
        out["options"] = dict(options)
    return out


def _validate_optimizer(user: Mapping[str, Any], iterations: int) -> dict[str, Any]:
    sec = _section(user, "optimizer")
    out: dict[str, Any] = {
        "kind": _choice("optimizer.kind", _get(sec, "optimizer.kind"), CHOICES["optimizer.kind"]),
        "lr": _float("optimizer.lr", _get(sec, "optimizer.lr"), lambda f: f > 0, "a number > 0"),
        "scale_lr": _bool("optimizer.scale_lr", _get(sec, "optimizer.scale_lr")),
        "betas": _floats("optimizer.betas", _get(sec, "optimizer.betas"), "two numbers in [0, 1)", (2,),
                         lambda f: 0.0 <= f < 1.0),
        "eps": _float("optimizer.eps", _get(sec, "optimizer.eps"), lambda f: f > 0, "a number > 0"),
        "weight_decay": _float("optimizer.weight_decay", _get(sec, "optimizer.weight_decay"), lambda f: f >= 0,
                               "a number >= 0"),
        "lbfgs_memory": _int("optimizer.lbfgs_memory", _get(sec, "optimizer.lbfgs_memory"), 1),
    }
    sch = _section(user, "optimizer.schedule")
    p = "optimizer.schedule."
    out["schedule"] = {
        "kind": _choice(p + "kind", _get(sch, "optimizer.schedule.kind"), CHOICES["optimizer.schedule.kind"]),
        "factor": _float(p + "factor", _get(sch, "optimizer.schedule.factor"), lambda f: 0 < f < 1,
                         "a number in the open interval (0, 1)"),
        "patience": _int(p + "patience", _get(sch, "optimizer.schedule.patience"), 1),
        "threshold": _float(p + "threshold", _get(sch, "optimizer.schedule.threshold"), lambda f: f >= 0, "a number >= 0"),
        "min_lr": _float(p + "min_lr", _get(sch, "optimizer.schedule.min_lr"), lambda f: f >= 0, "a number >= 0"),
        "step_size": _int(p + "step_size", _get(sch, "optimizer.schedule.step_size"), 1),
        "gamma": _float(p + "gamma", _get(sch, "optimizer.schedule.gamma"), lambda f: f > 0, "a number > 0"),
        "T_max": _int(p + "T_max", sch.get("T_max", max(1, iterations)), 1),
        "eta_min": _float(p + "eta_min", _get(sch, "optimizer.schedule.eta_min"), lambda f: f >= 0, "a number >= 0"),
        "threshold_mode": _choice(p + "threshold_mode", _get(sch, "optimizer.schedule.threshold_mode"),
                                  CHOICES["optimizer.schedule.threshold_mode"]),
        "cooldown": _int(p + "cooldown", _get(sch, "optimizer.schedule.cooldown"), 0),
        "eps": _float(p + "eps", _get(sch, "optimizer.schedule.eps"), lambda f: f >= 0, "a number >= 0"),
    }
    return out


def _validate_run(user: Mapping[str, Any], T: float) -> dict[str, Any]:
    sec = _section(user, "run")
    return {
        "iterations": _int("run.iterations", _get(sec, "run.iterations"), 0),
        "checkpoint_every": _int("run.checkpoint_every", _get(sec, "run.checkpoint_every"), 1),
        "plot_times": _floats("run.plot_times", sec.get("plot_times", [T / 4, T / 2, T]),
                              f"a list of numbers in [0, T] = [0, {T!r}]", None, lambda f: 0.0 <= f <= T),
        "field_format": _choice("run.field_format", _get(sec, "run.field_format"), CHOICES["run.field_format"]),
        "state_storage": _state_storage(_get(sec, "run.state_storage")),
        "check_gradient": _bool("run.check_gradient", _get(sec, "run.check_gradient")),
    }


def _state_storage(spec: Any) -> Any:
    try:
        return validate_state_storage(spec, "run.state_storage")
    except ValueError as err:
        raise ConfigError(str(err), "run.state_storage", spec) from err


def _validate_solver(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "solver")
    out: dict[str, Any] = {}
    if "petsc_options" in sec:
        opts = sec["petsc_options"]
        if not isinstance(opts, Mapping):
            raise _error("solver.petsc_options", opts, f"is {_type_name(opts)}",
                         'a table of option = value, e.g. {ksp_type = "cg", pc_type = "hypre"}')
        clean: dict[str, Any] = {}
        from femnpde.app.petsc_options import check_key

        for k, v in opts.items():
            check_key(str(k))
            key = f"solver.petsc_options.{k}"
            if isinstance(v, (bool, np.bool_)):
                clean[str(k)] = bool(v)
            elif isinstance(v, str):
                clean[str(k)] = v
            elif _is_int(v):
                clean[str(k)] = int(v)
            elif _is_number(v) and math.isfinite(float(v)):
                clean[str(k)] = float(v)
            else:
                raise _error(key, v, f"is {_type_name(v)}", "a string, a finite number or a boolean")
        out["petsc_options"] = clean
    out["newton_rtol"] = _float("solver.newton_rtol", _get(sec, "solver.newton_rtol"), lambda f: f >= 0,
                                "a number >= 0")
    out["newton_atol"] = _float("solver.newton_atol", _get(sec, "solver.newton_atol"), lambda f: f >= 0,
                                "a number >= 0")
    out["newton_max_it"] = _int("solver.newton_max_it", _get(sec, "solver.newton_max_it"), 1)
    out["nonlinear_method"] = _choice("solver.nonlinear_method", _get(sec, "solver.nonlinear_method"),
                                      CHOICES["solver.nonlinear_method"])
    out["forward_guess"] = _choice("solver.forward_guess", _get(sec, "solver.forward_guess"),
                                   CHOICES["solver.forward_guess"])
    return out


def validate(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Check a configuration and return it resolved.

    ``cfg`` may be partial (missing keys take their defaults, see the module
    docstring) or already resolved (``validate`` is idempotent).  The input is
    not modified.

    Args:
        cfg: The configuration as a nested dict (as read from TOML).

    Returns:
        A new, fully resolved configuration dict (sections in the order of
        :data:`DEFAULTS`, every default filled in, numbers for float keys as
        ``float``).

    Raises:
        ConfigError: On an unknown key (with a "did you mean" suggestion), a
            value of the wrong type, out of range or not among the allowed
            choices, a missing required key, or a missing file
            (``mesh.path``, ``data.path``).  The message names the dotted key,
            the value and what is allowed.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"the configuration must be a table (dict), got {_type_name(cfg)}")
    sections = [*DEFAULTS, "parameters"]
    for k in cfg:
        if k not in sections:
            raise _unknown(str(k), str(k), sections, "")
    for k in sections:
        if k not in ("boundary", "neumann") and k in cfg and not isinstance(cfg[k], Mapping):
            raise _error(k, cfg[k], f"is {_type_name(cfg[k])}", f"a table [{k}]")
    user = copy.deepcopy(dict(cfg))
    time = _validate_time(user)
    mesh = _validate_mesh(user)
    run = _validate_run(user, time["T"])
    network = _validate_network(user)
    resolved = {
        "mesh": mesh,
        "pde": _validate_pde(user),
        "time": time,
        "initial_condition": _validate_initial_condition(user),
        "boundary": _validate_boundary(user, mesh["kind"]),
        "network": network,
        "data": _validate_data(user, network.get("outputs", 1)),  # data.target: one per output
        "loss": _validate_loss(user),
        "observation": None,
        "neumann": _validate_neumann(user, mesh["kind"]),
        "optimizer": _validate_optimizer(user, run["iterations"]),
        "run": run,
        "solver": _validate_solver(user),
    }
    resolved["observation"] = _validate_observation(
        user, mesh["kind"], resolved["data"]["kind"], time["n_steps"]
    )
    # A budget alone may hold every level: the solver decides with the state size (before the run).
    if resolved["solver"]["forward_guess"] != "previous" and recomputes(run["state_storage"], time["n_steps"]):
        raise ConfigError(
            f"solver.forward_guess = {resolved['solver']['forward_guess']!r} needs every level in memory, and "
            f"run.state_storage = {run['state_storage']!r} checkpoints: a checkpointing storage recomputes states, "
            'which only forward_guess = "previous" reproduces bitwise', "solver.forward_guess",
            resolved["solver"]["forward_guess"])
    if "parameters" in user:
        resolved["parameters"] = _validate_parameters(user, resolved["pde"], resolved["data"]["kind"])
    _check_data_file_kind(resolved)
    return resolved

