"""Validation of the problem sections of a run configuration: mesh, pde, time, initial condition, boundaries.

One function per section, called by :func:`femnpde.app.validation.validate`:
it returns the section resolved (defaults of :mod:`femnpde.app.schema` filled
in).  No DOLFINx, PETSc or mpi4py import.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from femnpde.app.checks import (
    _all_keys,
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
    _section,
    _str,
    _type_name,
    _unknown,
)
from femnpde.app.schema import (
    BOX_DEFAULTS,
    CELL_TYPES,
    CHOICES,
    DEFAULTS,
    MESH_SUFFIXES,
    ConfigError,
    format_value,
)

__all__: list[str] = []  # used by femnpde.app.validation only


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
        "nonlinear": _choice("time.nonlinear", _get(sec, "time.nonlinear"), CHOICES["time.nonlinear"]),
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
