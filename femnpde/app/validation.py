"""Validation and resolution of a run configuration against :mod:`femnpde.app.schema`.

:func:`validate` checks a nested dict (as read from TOML) and returns it
*resolved*: every default filled in from the schema, ints given for float
keys as floats.  Imports neither DOLFINx nor PETSc nor mpi4py.
"""

from __future__ import annotations

import copy
import math
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from femnpde._optional import available, missing_message
from femnpde.app.checks import (
    _all_keys,
    _bool,
    _choice,
    _error,
    _float,
    _floats,
    _get,
    _int,
    _ints,
    _is_int,
    _is_number,
    _section,
    _str,
    _type_name,
    _unknown,
)
from femnpde.fem.storage_plan import validate_state_storage
from femnpde.app.schema import (
    BOX_DEFAULTS,
    CELL_TYPES,
    CHOICES,
    DATA_SUFFIXES,
    DEFAULTS,
    MESH_SUFFIXES,
    NETWORK_KIND_KEYS,
    PARAMETER_KEYS,
    PRESET_PARAMETERS,
    ConfigError,
    format_value,
)

__all__ = ["validate"]

_RESIDUAL_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _reject_keys(sec: Mapping[str, Any], section: str, keys: Sequence[str], problem: str, fix: str) -> None:
    """Raise for the first of ``keys`` given in ``sec`` (keys of another kind); ``fix`` may name ``{key}``."""
    for k in keys:
        if k in sec:
            key = f"{section}.{k}"
            raise _error(key, sec[k], problem, fix.format(key=key))


def _validate_mesh(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "mesh")
    out: dict[str, Any] = {}
    kind = out["kind"] = _choice("mesh.kind", _get(sec, "mesh.kind"), CHOICES["mesh.kind"])
    if kind in ("rectangle", "box"):
        d = 2 if kind == "rectangle" else 3
        defaults = DEFAULTS["mesh"] if kind == "rectangle" else BOX_DEFAULTS
        allowed = f"a list of {d} numbers (mesh.kind = {format_value(kind)})"
        lower = _floats("mesh.lower", sec.get("lower", defaults["lower"]), allowed, (d,))
        upper = _floats("mesh.upper", sec.get("upper", defaults["upper"]), allowed, (d,))
        for i in range(d):
            if not upper[i] > lower[i]:
                raise _error(
                    "mesh.upper", upper, f"is not above mesh.lower = {format_value(lower)} in component {i}",
                    "upper[i] > lower[i] for every i",
                )
        cells = _ints(
            "mesh.cells", sec.get("cells", defaults["cells"]),
            f"a list of {d} integers >= 1 (mesh.kind = {format_value(kind)})", (d,), 1,
        )
        cell_type = _choice("mesh.cell_type", sec.get("cell_type", defaults["cell_type"]), CELL_TYPES[kind])
        out.update(lower=lower, upper=upper, cells=cells, cell_type=cell_type)
        _reject_keys(sec, "mesh", ("path", "gdim", "name", "facet_tags"),
                     f"is only used with mesh.kind = \"file\" (kind is {format_value(kind)})",
                     'remove {key} or set mesh.kind = "file"')
    else:
        if "path" not in sec:
            raise ConfigError(
                'mesh.path is missing; mesh.kind = "file" needs mesh.path = "<file>.msh" or "<file>.xdmf"',
                "mesh.path",
            )
        path = _str("mesh.path", sec["path"], "a path to a .msh or .xdmf file")
        suffix = Path(path).suffix.lower()
        if suffix not in MESH_SUFFIXES:
            raise _error("mesh.path", path, f"has suffix {format_value(suffix)}", "a path ending in .msh (Gmsh) or .xdmf")
        if not os.path.isfile(path):
            raise _error("mesh.path", path, "does not exist (file not found)", "an existing .msh or .xdmf file")
        out["path"] = path
        out["gdim"] = _int("mesh.gdim", _get(sec, "mesh.gdim"), allowed="2 or 3")
        if out["gdim"] not in (2, 3):
            raise _error("mesh.gdim", out["gdim"], "is out of range", "2 or 3")
        out["name"] = _str("mesh.name", _get(sec, "mesh.name"))
        out["facet_tags"] = _str("mesh.facet_tags", _get(sec, "mesh.facet_tags"))
        _reject_keys(sec, "mesh", ("lower", "upper", "cells", "cell_type"), 'is not used with mesh.kind = "file"',
                     'remove {key} or use mesh.kind = "rectangle" or "box"')
    out["refine"] = _int("mesh.refine", _get(sec, "mesh.refine"), 0)
    return out


def _validate_pde(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "pde")
    out: dict[str, Any] = {}
    out["preset"] = _choice("pde.preset", _get(sec, "pde.preset"), CHOICES["pde.preset"])
    if "residual" in sec:
        spec = _str("pde.residual", sec["residual"], '"package.module:function"')
        if not _RESIDUAL_SPEC.fullmatch(spec):
            raise _error("pde.residual", spec, "is not of the form module:function",
                         '"package.module:function" naming a residual factory')
        out["residual"] = spec
    out["gamma"] = _float("pde.gamma", _get(sec, "pde.gamma"), lambda f: f > 0, "a number > 0")
    out["epsilon"] = _float("pde.epsilon", _get(sec, "pde.epsilon"), lambda f: f > 0, "a number > 0")
    degree = out["degree"] = _int("pde.degree", _get(sec, "pde.degree"), 1)
    source = out["source"] = _choice("pde.source", _get(sec, "pde.source"), CHOICES["pde.source"])
    if source == "lagrange":
        out["source_degree"] = _int("pde.source_degree", sec.get("source_degree", degree), 1,
                                    "an integer >= 1 (the Lagrange degree of the source space)")
    else:
        out["source_degree"] = _int("pde.source_degree", sec.get("source_degree", 2 * degree + 2), 0,
                                    "an integer >= 0 (the quadrature degree)")
    return out


def _validate_time(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "time")
    return {
        "T": _float("time.T", _get(sec, "time.T"), lambda f: f > 0, "a number > 0"),
        "n_steps": _int("time.n_steps", _get(sec, "time.n_steps"), 1),
        "theta": _float("time.theta", _get(sec, "time.theta"), lambda f: 0.5 <= f <= 1.0,
                        "a number in [0.5, 1] (1 backward Euler, 0.5 Crank-Nicolson)"),
    }


def _validate_initial_condition(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "initial_condition")
    return {
        "kind": _choice("initial_condition.kind", _get(sec, "initial_condition.kind"), CHOICES["initial_condition.kind"]),
        "value": _float("initial_condition.value", _get(sec, "initial_condition.value")),
    }


def _array_of_tables(
    user: Mapping[str, Any], name: str, keys: Sequence[str], default: list
) -> list[tuple[str, Mapping[str, Any]]]:
    """The entries ``(dotted key, table)`` of an array of tables ``[[name]]``, with their keys checked."""
    entries = user.get(name, default)
    if isinstance(entries, Mapping):  # a single [name] table instead of [[name]]
        raise _error(name, entries, "is a table", f"an array of tables [[{name}]] (or {name} = [])")
    if not isinstance(entries, (list, tuple)):
        raise _error(name, entries, f"is {_type_name(entries)}", f"an array of tables [[{name}]]")
    out = []
    for i, entry in enumerate(entries):
        key = f"{name}[{i}]"
        if not isinstance(entry, Mapping):
            raise _error(key, entry, f"is {_type_name(entry)}", f"a table with keys {', '.join(keys)}")
        for k in entry:
            if k not in keys:
                raise _unknown(f"{key}.{k}", str(k), keys, name)
        out.append((key, entry))
    return out


def _validate_boundary(user: Mapping[str, Any], mesh_kind: str) -> list[dict[str, Any]]:
    out = []
    for key, entry in _array_of_tables(user, "boundary", _all_keys()["boundary"], DEFAULTS["boundary"]):
        where = _get(entry, "boundary.where")
        allowed = '"boundary" (the whole boundary) or an integer facet tag'
        if isinstance(where, str):
            if where != "boundary":
                raise _error(f"{key}.where", where, "is not valid", allowed)
        elif _is_int(where):
            where = int(where)
            if mesh_kind != "file":
                raise _error(f"{key}.where", where,
                             f"is a facet tag, but facet tags need a mesh file with tags "
                             f"(mesh.kind is {format_value(mesh_kind)})",
                             '"boundary", or mesh.kind = "file" with facet tags')
        else:
            raise _error(f"{key}.where", where, f"is {_type_name(where)}", allowed)
        item = {
            "where": where,
            "value": _float(f"{key}.value", _get(entry, "boundary.value")),
            "time_function": _choice(f"{key}.time_function", _get(entry, "boundary.time_function"), CHOICES["boundary.time_function"]),
        }
        if "frequency" in entry or item["time_function"] == "sin":
            item["frequency"] = _float(f"{key}.frequency", _get(entry, "boundary.frequency"), lambda f: f > 0, "a number > 0")
        out.append(item)
    return out


def _validate_neumann(user: Mapping[str, Any], mesh_kind: str) -> list[dict[str, Any]]:
    out = []
    for key, entry in _array_of_tables(user, "neumann", _all_keys()["neumann"], DEFAULTS["neumann"]):
        if "where" not in entry:
            raise ConfigError(f"{key}.where is missing; give the facet tag of the Neumann boundary", f"{key}.where")
        where = _int(f"{key}.where", entry["where"], 0, "an integer facet tag")
        if mesh_kind != "file":
            raise _error(f"{key}.where", where, "is a facet tag, but facet tags need a mesh file with tags",
                         'mesh.kind = "file" with facet tags')
        out.append({"where": where, "flux": _float(f"{key}.flux", _get(entry, "neumann.flux"))})
    return out


def _validate_observation(user: Mapping[str, Any], mesh_kind: str, data_kind: str, n_steps: int) -> dict[str, Any]:
    sec = _section(user, "observation")
    out: dict[str, Any] = {}
    kind = out["kind"] = _choice("observation.kind", _get(sec, "observation.kind"), CHOICES["observation.kind"])
    if kind == "subdomain":
        if "subdomain" not in sec:
            raise ConfigError('observation.subdomain is missing; observation.kind = "subdomain" needs a cell tag',
                              "observation.subdomain")
        out["subdomain"] = _int("observation.subdomain", sec["subdomain"], 0, "an integer cell tag")
        if mesh_kind != "file":
            raise _error("observation.subdomain", out["subdomain"],
                         "is a cell tag, but cell tags need a mesh file with tags", 'mesh.kind = "file"')
    elif "subdomain" in sec:
        raise _error("observation.subdomain", sec["subdomain"], f"is only used with kind \"subdomain\" (kind is {kind!r})",
                     'remove it or set observation.kind = "subdomain"')
    if kind == "sensors":
        if "sensors" in sec:
            pts = sec["sensors"]
            if not (isinstance(pts, list) and pts and all(isinstance(p, list) and p for p in pts)):
                raise _error("observation.sensors", pts, "is not a list of points", "a list of [x, y] or [x, y, z] lists")
            out["sensors"] = [
                _floats(f"observation.sensors[{i}]", p, "2 or 3 numbers", (2, 3)) for i, p in enumerate(pts)
            ]
            if len({len(p) for p in out["sensors"]}) != 1:
                raise _error("observation.sensors", pts, "mixes points of different dimension", "points of one dimension")
        elif data_kind != "file":
            raise ConfigError(
                'observation.sensors is missing; observation.kind = "sensors" needs sensors = [[x, y], ...] '
                '(or data.kind = "file" with a file that has the points)',
                "observation.sensors",
            )
    elif "sensors" in sec:
        raise _error("observation.sensors", sec["sensors"], f"is only used with kind \"sensors\" (kind is {kind!r})",
                     'remove it or set observation.kind = "sensors"')
    if "levels" in sec:
        levels = _ints("observation.levels", sec["levels"], f"a list of time levels in 0..{n_steps}", None, 0)
        bad = [lv for lv in levels if lv > n_steps]
        if bad or not levels:
            raise _error("observation.levels", levels, "has levels outside the time grid" if bad else "is empty",
                         f"a non-empty list of integers in 0..{n_steps}")
        out["levels"] = sorted(set(levels))
    return out


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


def _validate_parameters(user: Mapping[str, Any], pcfg: Mapping[str, Any], data_kind: str) -> dict[str, Any]:
    """``[parameters]``: named residual constants learnt with the network (see :mod:`femnpde.model.parameters`)."""
    sec = user["parameters"]
    if not isinstance(sec, Mapping):
        raise _error("parameters", sec, f"is {_type_name(sec)}", "a table [parameters] of name = { initial = ... }")
    custom = "residual" in pcfg
    names = () if custom else PRESET_PARAMETERS[pcfg["preset"]]
    out: dict[str, Any] = {}
    for name, entry in sec.items():
        key = f"parameters.{name}"
        if not custom and name not in names:
            raise _error(key, entry, f"is not a parameter of the preset {pcfg['preset']!r}",
                         ", ".join(names) + " (or a custom pde.residual taking the name as a keyword)")
        if not str(name).isidentifier() or name in ("u", "v", "g", "t", "x"):
            raise _error(key, entry, "has a name that is not a residual keyword",
                         "a Python identifier other than u, v, g, t, x")
        if not isinstance(entry, Mapping):
            raise _error(key, entry, f"is {_type_name(entry)}", "a table, e.g. { initial = 0.02, bounds = [1e-4, 1] }")
        for k in entry:
            if k not in PARAMETER_KEYS:
                raise _unknown(f"{key}.{k}", str(k), PARAMETER_KEYS, key)
        if "true" in entry and not custom:
            raise _error(f"{key}.true", entry["true"], "is only used with a custom pde.residual",
                         f"set pde.{name} (the value the synthetic data are made with)")
        res: dict[str, Any] = {}
        if "initial" in entry:
            res["initial"] = _float(f"{key}.initial", entry["initial"])
        elif not custom:
            res["initial"] = float(pcfg[name])
        else:
            raise ConfigError(f"{key}.initial is missing; give initial = <number>", f"{key}.initial")
        res["trainable"] = _bool(f"{key}.trainable", entry.get("trainable", True))
        if "bounds" in entry:
            lo, hi = _floats(f"{key}.bounds", entry["bounds"], "[lower, upper] with lower < upper", (2,))
            if not lo < hi or not lo <= res["initial"] <= hi:
                raise _error(f"{key}.bounds", entry["bounds"],
                             f"does not hold lower < upper with the initial value {res['initial']!r} inside",
                             "[lower, upper] with lower <= initial <= upper")
            res["bounds"] = [lo, hi]
        if "scale" in entry:
            res["scale"] = _float(f"{key}.scale", entry["scale"], lambda f: f > 0, "a number > 0")
        if "true" in entry:
            res["true"] = _float(f"{key}.true", entry["true"])
        elif custom and data_kind == "synthetic":
            raise ConfigError(f"{key}.true is missing; synthetic data with a custom pde.residual need the value "
                              "they are made with", f"{key}.true")
        out[str(name)] = res
    return out


def _validate_target(value: Any, outputs: int) -> str | list[str]:
    """``data.target``: a name, or with ``outputs`` = m > 1 a list of m names (one per output)."""
    names = CHOICES["data.target"]
    if not isinstance(value, (list, tuple)):
        if isinstance(value, str) or outputs == 1:
            return _choice("data.target", value, names)
        raise _error("data.target", value, f"is {_type_name(value)}",
                     f"a target name, or a list of {outputs} names (network.outputs = {outputs}) from: "
                     + ", ".join(format_value(c) for c in names))
    if outputs == 1:
        raise _error("data.target", value, "is a list, but the network has one output (network.outputs = 1)",
                     "one target name: " + ", ".join(format_value(c) for c in names))
    if len(value) != outputs:
        raise _error("data.target", value, f"has {len(value)} entries, but network.outputs = {outputs}",
                     f"a list of {outputs} target names, one per output g[0], ..., g[{outputs - 1}]")
    return [_choice(f"data.target[{k}]", v, names) for k, v in enumerate(value)]


def _validate_data(user: Mapping[str, Any], outputs: int = 1) -> dict[str, Any]:
    sec = _section(user, "data")
    out: dict[str, Any] = {}
    kind = out["kind"] = _choice("data.kind", _get(sec, "data.kind"), CHOICES["data.kind"])
    out["target"] = _validate_target(_get(sec, "data.target"), outputs)
    out["noise"] = _float("data.noise", _get(sec, "data.noise"), lambda f: f >= 0, "a number >= 0")
    out["noise_seed"] = _int("data.noise_seed", _get(sec, "data.noise_seed"), 0)
    if kind == "file":
        if "path" not in sec:
            raise ConfigError('data.path is missing; data.kind = "file" needs data.path = "<file>.npz"', "data.path")
        path = _str("data.path", sec["path"], "a path to an .npz, .csv (sensors) or .bp (fields) file")
        allowed = ".npz or .csv (sensor values per time level) or .bp (an adios4dolfinx field checkpoint)"
        if Path(path).suffix.lower() not in DATA_SUFFIXES:
            raise _error("data.path", path, f"has suffix {format_value(Path(path).suffix)}", f"a path ending in {allowed}")
        if not os.path.exists(path):
            raise _error("data.path", path, "does not exist (file not found)", f"an existing {allowed} file")
        if Path(path).suffix.lower() == ".bp" and not available("adios4dolfinx"):
            raise ConfigError(f"data.path = {format_value(path)}: {missing_message('adios4dolfinx')}", "data.path", path)
        out["path"] = path
        out["name"] = _str("data.name", _get(sec, "data.name"), "the function name in the .bp file")
    else:
        _reject_keys(sec, "data", ("path", "name"), 'is only used with data.kind = "file"',
                     'remove {key} or set data.kind = "file"')
    return out


def _validate_loss(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "loss")
    return {
        "time_rule": _choice("loss.time_rule", _get(sec, "loss.time_rule"), CHOICES["loss.time_rule"]),
        "include_initial": _bool("loss.include_initial", _get(sec, "loss.include_initial")),
    }


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
        "data": _validate_data(user, network.get("outputs", 1)),
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
    if "parameters" in user:
        resolved["parameters"] = _validate_parameters(user, resolved["pde"], resolved["data"]["kind"])
    data = resolved["data"]
    if data["kind"] == "file":
        field_file = Path(data["path"]).suffix.lower() == ".bp"
        obs_kind = resolved["observation"]["kind"]
        if field_file and obs_kind == "sensors":
            raise _error("data.path", data["path"], 'is field data (.bp), but observation.kind = "sensors"',
                         'sensor values in .npz/.csv, or observation.kind = "field" / "subdomain"')
        if not field_file and obs_kind != "sensors":
            raise _error("data.path", data["path"], f"holds sensor values, but observation.kind = {obs_kind!r}",
                         'observation.kind = "sensors", or field data in an adios4dolfinx .bp checkpoint')
    return resolved

