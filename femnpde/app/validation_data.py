"""Validation of the data sections of a run configuration: data, observation, loss, parameters.

Part of :func:`femnpde.app.validation.validate`; each function checks one section
against :mod:`femnpde.app.schema` and returns it resolved.  Imports neither DOLFINx
nor PETSc nor mpi4py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from femnpde._optional import available, missing_message
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
    _section,
    _str,
    _type_name,
    _unknown,
)
from femnpde.app.schema import (
    CHOICES,
    DATA_SUFFIXES,
    PARAMETER_KEYS,
    PRESET_PARAMETERS,
    ConfigError,
    format_value,
)

__all__: list[str] = []  # used by femnpde.app.validation only


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


def _validate_data(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "data")
    out: dict[str, Any] = {}
    kind = out["kind"] = _choice("data.kind", _get(sec, "data.kind"), CHOICES["data.kind"])
    out["target"] = _choice("data.target", _get(sec, "data.target"), CHOICES["data.target"])
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


def _check_data_file_kind(resolved: Mapping[str, Any]) -> None:
    """A data file holds what the observation kind reads: field data (.bp) or sensor values (.npz/.csv)."""
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
