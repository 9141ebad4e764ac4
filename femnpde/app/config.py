"""Validated TOML run configuration and the assembly of a training run from it.

A run is described by a TOML file with the sections below.  Every key is
optional: a missing key takes its value from :data:`DEFAULTS` (the paper's
heat scenario (i)), except for the few *dependent defaults* marked ``(dep.)``,
which follow from other keys.  :func:`load_config` reads a file, applies
command-line style overrides (``--set a.b.c=value``) and returns the
*resolved* configuration: a plain nested ``dict`` in which every default is
filled in, ints given for float keys are floats, and relative paths of the
file are absolute.  :func:`validate` does the checking and resolution (on any
nested dict), :func:`dump_config` writes a resolved configuration back as
TOML, and :func:`build_run` turns it into the objects of a training run
(:class:`Run`).  Nothing in a configuration is ``eval``'d or ``exec``'d; the
only code a configuration can name is ``pde.residual`` (a ``module:function``
imported with :mod:`importlib` when, and only when, the key is given).

Schema (``key``: type, allowed values, default):

``[mesh]``
    * ``kind``: ``"rectangle"`` | ``"box"`` | ``"file"``; default ``"rectangle"``.
    * ``lower``, ``upper``: corners, lists of 2 (rectangle) or 3 (box) numbers
      with ``upper > lower`` componentwise; default (dep.) ``[0, 0]``,
      ``[0.5, 1]`` for a rectangle, ``[0, 0, 0]``, ``[0.5, 1, 1]`` for a box.
    * ``cells``: cells per direction, list of ints >= 1 of the same length;
      default (dep.) ``[20, 40]`` (rectangle), ``[10, 20, 20]`` (box).
    * ``cell_type``: ``"triangle"`` | ``"quadrilateral"`` (rectangle),
      ``"tetrahedron"`` | ``"hexahedron"`` (box); default (dep.) the simplex.
    * ``path`` (kind ``"file"`` only, required): a Gmsh ``.msh`` file (read
      on rank 0 and distributed, as ``dolfinx.io.gmsh.read_from_msh`` does;
      needs the ``gmsh`` module; physical groups of dimension ``tdim - 1``
      become the facet tags) or an ``.xdmf`` file (read with
      ``dolfinx.io.XDMFFile.read_mesh``).  A relative path in a file is
      relative to that file's directory.
    * ``gdim`` (file): geometric dimension for ``.msh`` files, 2 or 3; default 2.
    * ``name`` (file): name of the mesh in an ``.xdmf`` file; default ``"mesh"``.
    * ``facet_tags`` (file): name of the facet tags in an ``.xdmf`` file (read
      only when a ``[[boundary]]`` uses a tag); default ``"facet_tags"``.
    * ``refine``: int >= 0, uniform refinements after building or reading
      the mesh (4x the cells in 2D, 8x in 3D each; cell and facet tags are
      carried over); default 0.

``[pde]``
    * ``preset``: ``"heat"`` | ``"allen-cahn"``; default ``"heat"``.  Ignored
      when ``residual`` is given.
    * ``residual`` (optional): ``"package.module:function"``, a factory
      returning a residual ``residual(u, v, g, t, x) -> ufl.Form``; it is
      called with those of ``gamma`` and ``epsilon`` (as keywords) that its
      signature accepts.
    * ``gamma``: diffusivity, > 0; default 0.01.
    * ``epsilon``: Allen–Cahn interface parameter, > 0; default 0.32.
    * ``degree``: Lagrange degree of the solution, int >= 1; default 1.
    * ``source``: ``"lagrange"`` | ``"quadrature"``; default ``"lagrange"``.
    * ``source_degree``: int (>= 1 for lagrange, >= 0 for quadrature); default
      (dep.) ``degree`` (lagrange) or ``2 * degree + 2`` (quadrature).

``[time]``
    * ``T``: final time, > 0; default 1.0.
    * ``n_steps``: int >= 1; default 64.
    * ``theta``: theta of the time scheme, in [0.5, 1]; default 1.0.

``[initial_condition]``
    * ``kind``: ``"paper"`` (``0.2 sin(2πx/0.5) sin(2πy)``) | ``"constant"``;
      default ``"paper"``.
    * ``value``: the constant (kind ``"constant"``); default 0.0.

``[[boundary]]`` (array of tables; Dirichlet conditions ``u = value``)
    * ``where``: ``"boundary"`` (the whole boundary) or an int facet tag (needs
      ``mesh.kind = "file"`` with facet tags).
    * ``value``: number; default 0.0.

    Default: one entry, ``where = "boundary"``, ``value = 0.0``.  An empty
    array (``boundary = []``) means no Dirichlet condition.

``[network]``
    * ``neurons``: int >= 1; default 100.
    * ``beta``: scaling exponent in the open interval (0.5, 1); default 2/3.
    * ``activation``: ``"tanh"`` | ``"sigmoid"`` | ``"softplus"``; default ``"tanh"``.
    * ``seed``: int >= 0, seed of the initialisation; default 42.

``[data]``
    * ``kind``: ``"synthetic"`` | ``"file"``; default ``"synthetic"``.
      Synthetic data is the solution of the same discrete problem with the
      target source.  ``"file"`` reads ``path``.
    * ``target``: one of :data:`femnpde.app.scenarios.TARGETS`; default ``"difficult"``.
    * ``noise``: relative noise level, >= 0: the data becomes
      ``h + noise · max|h| · ξ`` with i.i.d. standard normal ``ξ`` for every
      time level and dof; default 0.0.
    * ``noise_seed``: int >= 0; default 0.
    * ``path`` (kind ``"file"`` only, required): sensor values per time level
      in ``.npz``/``.csv`` (see :func:`femnpde.obs.points.load_point_data`;
      needs ``observation.kind = "sensors"``), or a space-time field as an
      adios4dolfinx ``.bp`` checkpoint (see :mod:`femnpde.io.fielddata`; e.g. the
      ``fields/u.bp`` a run writes; ``observation.kind`` field or subdomain).
    * ``name`` (kind ``"file"``, ``.bp``): function name in the file; default ``"h"``.

``[observation]``
    * ``kind``: ``"field"`` (the whole domain) | ``"subdomain"`` (cells of
      the cell tag ``subdomain``; needs a mesh file) | ``"sensors"`` (point
      values at ``sensors = [[x, y], ...]``); default ``"field"``.
    * ``levels`` (optional): the observed time levels (others weigh 0).

``[[neumann]]`` (array of tables; default none)
    * ``where``: facet tag; ``flux``: number (``γ ∂u/∂n = flux`` into the
      domain, i.e. ``− flux v ds(where)`` is added to the residual).

Dirichlet entries (``[[boundary]]``) also take ``time_function`` =
``"constant"`` | ``"linear"`` (``value · t/T``) | ``"sin"``
(``value · sin(2π frequency t/T)``) and ``frequency``.

``[loss]``
    * ``time_rule``: ``"rectangle"`` | ``"trapezoid"``; default ``"rectangle"``.
    * ``include_initial``: bool; default true.

``[optimizer]``
    * ``kind``: ``"adam"`` | ``"gd"`` | ``"lbfgs"``; default ``"adam"``.
    * ``lr``: base learning rate, > 0; default 0.01.
    * ``scale_lr``: bool; if true the effective rate is
      ``lr · N^(2β − 1)`` (:func:`femnpde.model.network.reference_learning_rate`);
      default true.
    * ``betas``: two numbers in [0, 1) (Adam); default ``[0.9, 0.999]``.
    * ``eps``: > 0 (Adam); default 1e-8.
    * ``weight_decay``: >= 0; default 0.0.
    * ``lbfgs_memory``: int >= 1; default 10.

``[optimizer.schedule]``
    * ``kind``: ``"none"`` | ``"plateau"`` | ``"step"`` | ``"cosine"``; default ``"plateau"``.
    * ``factor`` (plateau): in (0, 1); default 0.95.
    * ``patience`` (plateau): int >= 1; default 100.
    * ``threshold`` (plateau): >= 0; default 1e-8.
    * ``min_lr`` (plateau): >= 0; default 1e-8.
    * ``step_size`` (step): int >= 1; default 1000.
    * ``gamma`` (step): > 0; default 0.5.
    * ``T_max`` (cosine): int >= 1; default (dep.) ``max(1, run.iterations)``.
    * ``eta_min`` (cosine): >= 0; default 0.0.

``[run]``
    * ``iterations``: int >= 0; default 500.
    * ``checkpoint_every``: int >= 1; default 50.
    * ``plot_times``: list of numbers in [0, T]; default (dep.) ``[T/4, T/2, T]``.
    * ``field_format``: ``"vtx"`` | ``"xdmf"``; default ``"vtx"``.
    * ``state_storage``: ``"memory"`` (every state u^0..u^N kept) or a
      checkpointing table: ``{snapshots = K}`` (K restart snapshots in memory)
      or ``{budget = "2GB"}`` (memory per rank for the states), optionally
      ``disk_snapshots = D`` (per-rank .npy files in a private temporary
      directory, removed afterwards) and ``directory`` (where); default
      ``"memory"``.  States the adjoint needs are recomputed from the
      snapshots (multistage/revolve schedule); gradients are unchanged.

``[solver]``
    * ``petsc_options`` (optional): table of option name -> string, number or
      bool for the forward and adjoint linear solvers (default: direct LU).
    * ``newton_rtol``: >= 0; default 1e-11.
    * ``newton_atol``: >= 0; default 1e-13.
    * ``newton_max_it``: int >= 1; default 25.

Types: a key documented as a number accepts TOML integers and floats (not
booleans, not nan/inf); an int key accepts only integers (not booleans).
"""

from __future__ import annotations

import copy
import difflib
import importlib
import inspect
import math
import numbers
import os
import re
import tomllib
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from femnpde.io.meshes import tags_present
from femnpde.obs.misfit import L2Misfit, TimeWeights
from femnpde.model.network import ACTIVATIONS, ShallowNetwork, reference_learning_rate
from femnpde.fem.problem import PRESETS, Dirichlet, ParabolicProblem, TimeGrid
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.app.scenarios import TARGETS, paper_initial_condition, target_source
from femnpde.fem.checkpointing import validate_state_storage
from femnpde.io.refine import refine_uniformly
from femnpde.obs.rng import add_field_noise
from femnpde.fem.solver import ThetaSolver

__all__ = ["DEFAULTS", "ConfigError", "Run", "build_run", "dump_config", "load_config", "validate"]


class ConfigError(ValueError):
    """An invalid run configuration.

    The message names the offending key (as a dotted path, e.g.
    ``optimizer.schedule.factor`` or ``boundary[0].where``), the bad value and
    what is allowed.

    Attributes:
        key: The dotted key (or the file / override) the error is about, if any.
        value: The offending value, if any.
    """

    def __init__(self, message: str, key: str | None = None, value: Any = None) -> None:
        super().__init__(message)
        self.key = key
        self.value = value


#: The full default configuration: the paper's heat scenario (i) (see the
#: module docstring for every key).  Dependent defaults (mesh corners, cells
#: and cell type for ``mesh.kind = "box"``, ``pde.source_degree``,
#: ``optimizer.schedule.T_max``, ``run.plot_times``) are shown here for the
#: default values of the keys they depend on.  Treat as read-only.
DEFAULTS: dict[str, Any] = {
    "mesh": {
        "kind": "rectangle",
        "lower": [0.0, 0.0],
        "upper": [0.5, 1.0],
        "cells": [20, 40],
        "cell_type": "triangle",
    },
    "pde": {
        "preset": "heat",
        "gamma": 0.01,
        "epsilon": 0.32,
        "degree": 1,
        "source": "lagrange",
        "source_degree": 1,
    },
    "time": {"T": 1.0, "n_steps": 64, "theta": 1.0},
    "initial_condition": {"kind": "paper", "value": 0.0},
    "boundary": [{"where": "boundary", "value": 0.0, "time_function": "constant"}],
    "network": {"neurons": 100, "beta": 2.0 / 3.0, "activation": "tanh", "seed": 42},
    "data": {"kind": "synthetic", "target": "difficult", "noise": 0.0, "noise_seed": 0},
    "loss": {"time_rule": "rectangle", "include_initial": True},
    "observation": {"kind": "field"},
    "neumann": [],
    "optimizer": {
        "kind": "adam",
        "lr": 0.01,
        "scale_lr": True,
        "betas": [0.9, 0.999],
        "eps": 1e-8,
        "weight_decay": 0.0,
        "lbfgs_memory": 10,
        "schedule": {
            "kind": "plateau",
            "factor": 0.95,
            "patience": 100,
            "threshold": 1e-8,
            "min_lr": 1e-8,
            "step_size": 1000,
            "gamma": 0.5,
            "T_max": 500,
            "eta_min": 0.0,
        },
    },
    "run": {"iterations": 500, "checkpoint_every": 50, "plot_times": [0.25, 0.5, 1.0], "field_format": "vtx",
            "state_storage": "memory"},
    "solver": {"newton_rtol": 1e-11, "newton_atol": 1e-13, "newton_max_it": 25},
}

# Keys allowed besides those in DEFAULTS (optional or kind-specific).
_EXTRA_KEYS: dict[str, tuple[str, ...]] = {
    "mesh": ("path", "gdim", "name", "facet_tags", "refine"),
    "pde": ("residual",),
    "data": ("path", "name"),
    "solver": ("petsc_options",),
    "observation": ("subdomain", "sensors", "levels"),
}
_BOUNDARY_KEYS = ("where", "value", "time_function", "frequency")
_NEUMANN_KEYS = ("where", "flux")
_TIME_FUNCTIONS = ("constant", "linear", "sin")
_OBSERVATION_KINDS = ("field", "subdomain", "sensors")
_MESH_KINDS = ("rectangle", "box", "file")
_CELL_TYPES = {"rectangle": ("triangle", "quadrilateral"), "box": ("tetrahedron", "hexahedron")}
_MESH_SUFFIXES = (".msh", ".xdmf")
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_RESIDUAL_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")
_MISSING = object()


# ---------------------------------------------------------------------------
# TOML writing (values and documents)
# ---------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}


def _toml_string(s: str) -> str:
    out = []
    for ch in s:
        if ch in _ESCAPES:
            out.append(_ESCAPES[ch])
        elif ord(ch) < 0x20 or ord(ch) == 0x7F:
            out.append(f"\\u{ord(ch):04X}")
        else:
            out.append(ch)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key)


def _toml_value(value: Any, key: str) -> str:
    """A TOML value (inline form) for ``value``; ``key`` is used in error messages."""
    if isinstance(value, (bool, np.bool_)):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        f = float(value)
        if math.isnan(f):
            return "nan"
        if math.isinf(f):
            return "inf" if f > 0 else "-inf"
        return repr(f)
    if isinstance(value, str):
        return _toml_string(value)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v, f"{key}[{i}]") for i, v in enumerate(value)) + "]"
    if isinstance(value, Mapping):
        items = ", ".join(f"{_toml_key(str(k))} = {_toml_value(v, f'{key}.{k}')}" for k, v in value.items())
        return "{" + items + "}" if items else "{}"
    raise ConfigError(
        f"{key} = {value!r} cannot be written as TOML: values must be strings, numbers, booleans, lists or tables",
        key,
        value,
    )


def _is_array_of_tables(value: Any) -> bool:
    return isinstance(value, (list, tuple)) and len(value) > 0 and all(isinstance(v, Mapping) for v in value)


def _dump_table(table: Mapping[str, Any], path: list[str], lines: list[str], aot: bool = False) -> None:
    scalars = [(k, v) for k, v in table.items() if not isinstance(v, Mapping) and not _is_array_of_tables(v)]
    tables = [(k, v) for k, v in table.items() if isinstance(v, Mapping)]
    arrays = [(k, v) for k, v in table.items() if _is_array_of_tables(v)]
    dotted = ".".join(_toml_key(str(p)) for p in path)
    if path and (aot or scalars or not (tables or arrays)):
        if lines:
            lines.append("")
        lines.append(f"[[{dotted}]]" if aot else f"[{dotted}]")
    for k, v in scalars:
        lines.append(f"{_toml_key(str(k))} = {_toml_value(v, '.'.join([*map(str, path), str(k)]))}")
    for k, v in table.items():  # sub-tables and arrays of tables, in their order
        if isinstance(v, Mapping):
            _dump_table(v, [*path, str(k)], lines)
        elif _is_array_of_tables(v):
            for entry in v:
                _dump_table(entry, [*path, str(k)], lines, aot=True)


def dump_config(cfg: Mapping[str, Any]) -> str:
    """Write a configuration as TOML text.

    ``tomllib.loads(dump_config(cfg)) == cfg`` for a resolved configuration
    (floats are written with ``repr``, so they round-trip exactly).  The
    configuration is written as given (it is not validated).

    Args:
        cfg: A nested dict of strings, ints, floats, bools, lists and tables
            (typically the result of :func:`load_config` or :func:`validate`).

    Returns:
        The TOML document.

    Raises:
        ConfigError: If a value has a type TOML cannot hold (e.g. ``None``).
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"the configuration must be a table (dict), got {type(cfg).__name__}")
    lines: list[str] = ["# femnpde run configuration (resolved: every default filled in)"]
    body: list[str] = []
    _dump_table(cfg, [], body)
    if body and body[0] == "":
        body = body[1:]
    return "\n".join([*lines, "", *body]) + "\n"


def _fmt(value: Any) -> str:
    """A value as it would be written in TOML (for error messages)."""
    try:
        return _toml_value(value, "")
    except ConfigError:
        return repr(value)


# ---------------------------------------------------------------------------
# validation helpers
# ---------------------------------------------------------------------------


def _error(key: str, value: Any, problem: str, allowed: str) -> ConfigError:
    return ConfigError(f"{key} = {_fmt(value)} {problem}; allowed: {allowed}", key, value)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _type_name(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "a boolean"
    if isinstance(v, numbers.Integral):
        return "an integer"
    if isinstance(v, numbers.Real):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, Mapping):
        return "a table"
    return f"a {type(v).__name__}"


def _float(key: str, v: Any, ok: Callable[[float], bool] = lambda f: True, allowed: str = "a number") -> float:
    if not _is_number(v):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    f = float(v)
    if not math.isfinite(f):
        raise _error(key, v, "is not finite", allowed)
    if not ok(f):
        raise _error(key, v, "is out of range", allowed)
    return f


def _int(key: str, v: Any, minimum: int | None = None, allowed: str | None = None) -> int:
    allowed = allowed or ("an integer" if minimum is None else f"an integer >= {minimum}")
    if not _is_int(v):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    if minimum is not None and v < minimum:
        raise _error(key, v, "is out of range", allowed)
    return int(v)


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _error(key, v, f"is {_type_name(v)}", "true or false")
    return bool(v)


def _str(key: str, v: Any, allowed: str = "a string") -> str:
    if not isinstance(v, str):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    return v


def _choice(key: str, v: Any, choices: Sequence[str]) -> str:
    allowed = ", ".join(_toml_string(c) for c in choices)
    if not isinstance(v, str):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    if v not in choices:
        close = difflib.get_close_matches(v, list(choices), n=1)
        hint = f" (did you mean {_toml_string(close[0])}?)" if close else ""
        raise _error(key, v, f"is not valid{hint}", allowed)
    return v


def _list(key: str, v: Any, allowed: str, lengths: Sequence[int] | None = None) -> list:
    if not isinstance(v, (list, tuple)):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    if lengths is not None and len(v) not in lengths:
        raise _error(key, v, f"has {len(v)} entries", allowed)
    return v


def _floats(
    key: str,
    v: Any,
    allowed: str,
    lengths: Sequence[int] | None = None,
    ok: Callable[[float], bool] = lambda f: True,
) -> list[float]:
    items = _list(key, v, allowed, lengths)
    return [_float(f"{key}[{i}]", x, ok, allowed) for i, x in enumerate(items)]


def _ints(key: str, v: Any, allowed: str, lengths: Sequence[int] | None = None, minimum: int = 1) -> list[int]:
    items = _list(key, v, allowed, lengths)
    return [_int(f"{key}[{i}]", x, minimum, allowed) for i, x in enumerate(items)]


def _all_keys() -> dict[str, list[str]]:
    """Section name -> allowed keys (``optimizer.schedule`` is its own section)."""
    out: dict[str, list[str]] = {}
    for section, table in DEFAULTS.items():
        if isinstance(table, dict):
            out[section] = [k for k in table if not isinstance(table[k], dict)] + list(_EXTRA_KEYS.get(section, ()))
            for k, sub in table.items():
                if isinstance(sub, dict):
                    out[section].append(k)
                    out[f"{section}.{k}"] = list(sub)
    out["boundary"] = list(_BOUNDARY_KEYS)
    out["neumann"] = list(_NEUMANN_KEYS)
    return out


def _unknown(key: str, name: str, allowed: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6)
    if close:
        prefix = key.rsplit(".", 1)[0] if "." in key else ""
        suggestion = f"{prefix}.{close[0]}" if prefix else close[0]
        hint = f" (did you mean {suggestion!r}?)"
    else:
        # The key may belong to another section.
        homes = [f"{s}.{name}" for s, keys in _all_keys().items() if name in keys and s != where]
        hint = f" (did you mean {homes[0]!r}?)" if homes else ""
    listing = ", ".join(allowed)
    title = f"[{where}]" if where else "the top level"
    return ConfigError(f"unknown key {key!r}{hint}; allowed keys in {title}: {listing}", key, None)


def _section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The user's table ``name`` (dotted for sub-tables), checked for unknown keys."""
    node: Any = cfg
    for part in name.split("."):
        node = node.get(part, {}) if isinstance(node, Mapping) else node
    if not isinstance(node, Mapping):
        raise _error(name, node, f"is {_type_name(node)}", f"a table [{name}]")
    allowed = _all_keys()[name]
    for k in node:
        if k not in allowed:
            raise _unknown(f"{name}.{k}", str(k), allowed, name)
    return dict(node)


def _get(sec: Mapping[str, Any], key: str, default: Any) -> Any:
    return sec.get(key, default)


# ---------------------------------------------------------------------------
# validate
# ---------------------------------------------------------------------------


def _validate_mesh(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "mesh")
    out: dict[str, Any] = {}
    kind = out["kind"] = _choice("mesh.kind", _get(sec, "kind", "rectangle"), _MESH_KINDS)
    if kind in ("rectangle", "box"):
        d = 2 if kind == "rectangle" else 3
        defaults = {
            2: ([0.0, 0.0], [0.5, 1.0], [20, 40]),
            3: ([0.0, 0.0, 0.0], [0.5, 1.0, 1.0], [10, 20, 20]),
        }[d]
        allowed = f"a list of {d} numbers (mesh.kind = {_toml_string(kind)})"
        lower = _floats("mesh.lower", _get(sec, "lower", defaults[0]), allowed, (d,))
        upper = _floats("mesh.upper", _get(sec, "upper", defaults[1]), allowed, (d,))
        for i in range(d):
            if not upper[i] > lower[i]:
                raise _error(
                    "mesh.upper", upper, f"is not above mesh.lower = {_fmt(lower)} in component {i}",
                    "upper[i] > lower[i] for every i",
                )
        cells = _ints(
            "mesh.cells", _get(sec, "cells", defaults[2]),
            f"a list of {d} integers >= 1 (mesh.kind = {_toml_string(kind)})", (d,), 1,
        )
        cell_type = _choice("mesh.cell_type", _get(sec, "cell_type", _CELL_TYPES[kind][0]), _CELL_TYPES[kind])
        out.update(lower=lower, upper=upper, cells=cells, cell_type=cell_type)
        for k in ("path", "gdim", "name", "facet_tags"):
            if k in sec:
                raise _error(f"mesh.{k}", sec[k], f"is only used with mesh.kind = \"file\" (kind is {_toml_string(kind)})",
                             f"remove mesh.{k} or set mesh.kind = \"file\"")
    else:
        if "path" not in sec:
            raise ConfigError(
                'mesh.path is missing; mesh.kind = "file" needs mesh.path = "<file>.msh" or "<file>.xdmf"',
                "mesh.path",
            )
        path = _str("mesh.path", sec["path"], "a path to a .msh or .xdmf file")
        suffix = Path(path).suffix.lower()
        if suffix not in _MESH_SUFFIXES:
            raise _error("mesh.path", path, f"has suffix {suffix!r}", "a path ending in .msh (Gmsh) or .xdmf")
        if not os.path.isfile(path):
            raise _error("mesh.path", path, "does not exist (file not found)", "an existing .msh or .xdmf file")
        out["path"] = path
        out["gdim"] = _int("mesh.gdim", _get(sec, "gdim", 2), allowed="2 or 3")
        if out["gdim"] not in (2, 3):
            raise _error("mesh.gdim", out["gdim"], "is out of range", "2 or 3")
        out["name"] = _str("mesh.name", _get(sec, "name", "mesh"))
        out["facet_tags"] = _str("mesh.facet_tags", _get(sec, "facet_tags", "facet_tags"))
        for k in ("lower", "upper", "cells", "cell_type"):
            if k in sec:
                raise _error(f"mesh.{k}", sec[k], 'is not used with mesh.kind = "file"',
                             f'remove mesh.{k} or use mesh.kind = "rectangle" or "box"')
    out["refine"] = _int("mesh.refine", _get(sec, "refine", 0), 0)
    return out


def _validate_pde(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "pde")
    out: dict[str, Any] = {}
    out["preset"] = _choice("pde.preset", _get(sec, "preset", "heat"), tuple(PRESETS))
    if "residual" in sec:
        spec = _str("pde.residual", sec["residual"], '"package.module:function"')
        if not _RESIDUAL_SPEC.fullmatch(spec):
            raise _error("pde.residual", spec, "is not of the form module:function",
                         '"package.module:function" naming a residual factory')
        out["residual"] = spec
    out["gamma"] = _float("pde.gamma", _get(sec, "gamma", 0.01), lambda f: f > 0, "a number > 0")
    out["epsilon"] = _float("pde.epsilon", _get(sec, "epsilon", 0.32), lambda f: f > 0, "a number > 0")
    degree = out["degree"] = _int("pde.degree", _get(sec, "degree", 1), 1)
    source = out["source"] = _choice("pde.source", _get(sec, "source", "lagrange"), ("lagrange", "quadrature"))
    if source == "lagrange":
        out["source_degree"] = _int("pde.source_degree", _get(sec, "source_degree", degree), 1,
                                    "an integer >= 1 (the Lagrange degree of the source space)")
    else:
        out["source_degree"] = _int("pde.source_degree", _get(sec, "source_degree", 2 * degree + 2), 0,
                                    "an integer >= 0 (the quadrature degree)")
    return out


def _validate_time(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "time")
    return {
        "T": _float("time.T", _get(sec, "T", 1.0), lambda f: f > 0, "a number > 0"),
        "n_steps": _int("time.n_steps", _get(sec, "n_steps", 64), 1),
        "theta": _float("time.theta", _get(sec, "theta", 1.0), lambda f: 0.5 <= f <= 1.0,
                        "a number in [0.5, 1] (1 backward Euler, 0.5 Crank-Nicolson)"),
    }


def _validate_initial_condition(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "initial_condition")
    return {
        "kind": _choice("initial_condition.kind", _get(sec, "kind", "paper"), ("paper", "constant")),
        "value": _float("initial_condition.value", _get(sec, "value", 0.0)),
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
    for key, entry in _array_of_tables(user, "boundary", _BOUNDARY_KEYS, DEFAULTS["boundary"]):
        where = entry.get("where", "boundary")
        allowed = '"boundary" (the whole boundary) or an integer facet tag'
        if isinstance(where, str):
            if where != "boundary":
                raise _error(f"{key}.where", where, "is not valid", allowed)
        elif _is_int(where):
            where = int(where)
            if mesh_kind != "file":
                raise _error(f"{key}.where", where,
                             f"is a facet tag, but facet tags need a mesh file with tags "
                             f"(mesh.kind is {_toml_string(mesh_kind)})",
                             '"boundary", or mesh.kind = "file" with facet tags')
        else:
            raise _error(f"{key}.where", where, f"is {_type_name(where)}", allowed)
        item = {
            "where": where,
            "value": _float(f"{key}.value", entry.get("value", 0.0)),
            "time_function": _choice(f"{key}.time_function", entry.get("time_function", "constant"), _TIME_FUNCTIONS),
        }
        if "frequency" in entry or item["time_function"] == "sin":
            item["frequency"] = _float(f"{key}.frequency", entry.get("frequency", 1.0), lambda f: f > 0, "a number > 0")
        out.append(item)
    return out


def _validate_neumann(user: Mapping[str, Any], mesh_kind: str) -> list[dict[str, Any]]:
    out = []
    for key, entry in _array_of_tables(user, "neumann", _NEUMANN_KEYS, []):
        if "where" not in entry:
            raise ConfigError(f"{key}.where is missing; give the facet tag of the Neumann boundary", f"{key}.where")
        where = _int(f"{key}.where", entry["where"], 0, "an integer facet tag")
        if mesh_kind != "file":
            raise _error(f"{key}.where", where, "is a facet tag, but facet tags need a mesh file with tags",
                         'mesh.kind = "file" with facet tags')
        out.append({"where": where, "flux": _float(f"{key}.flux", entry.get("flux", 0.0))})
    return out


def _validate_observation(user: Mapping[str, Any], mesh_kind: str, data_kind: str, n_steps: int) -> dict[str, Any]:
    sec = _section(user, "observation")
    out: dict[str, Any] = {}
    kind = out["kind"] = _choice("observation.kind", _get(sec, "kind", "field"), _OBSERVATION_KINDS)
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
    return {
        "neurons": _int("network.neurons", _get(sec, "neurons", 100), 1),
        "beta": _float("network.beta", _get(sec, "beta", 2.0 / 3.0), lambda f: 0.5 < f < 1.0,
                       "a number in the open interval (0.5, 1)"),
        "activation": _choice("network.activation", _get(sec, "activation", "tanh"), ACTIVATIONS),
        "seed": _int("network.seed", _get(sec, "seed", 42), 0),
    }


def _validate_data(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "data")
    out: dict[str, Any] = {}
    kind = out["kind"] = _choice("data.kind", _get(sec, "kind", "synthetic"), ("synthetic", "file"))
    out["target"] = _choice("data.target", _get(sec, "target", "difficult"), tuple(TARGETS))
    out["noise"] = _float("data.noise", _get(sec, "noise", 0.0), lambda f: f >= 0, "a number >= 0")
    out["noise_seed"] = _int("data.noise_seed", _get(sec, "noise_seed", 0), 0)
    if kind == "file":
        if "path" not in sec:
            raise ConfigError('data.path is missing; data.kind = "file" needs data.path = "<file>.npz"', "data.path")
        path = _str("data.path", sec["path"], "a path to an .npz, .csv (sensors) or .bp (fields) file")
        allowed = ".npz or .csv (sensor values per time level) or .bp (an adios4dolfinx field checkpoint)"
        if Path(path).suffix.lower() not in (".npz", ".csv", ".bp"):
            raise _error("data.path", path, f"has suffix {Path(path).suffix!r}", f"a path ending in {allowed}")
        if not os.path.exists(path):
            raise _error("data.path", path, "does not exist (file not found)", f"an existing {allowed} file")
        out["path"] = path
        out["name"] = _str("data.name", sec.get("name", "h"), "the function name in the .bp file")
    else:
        for k in ("path", "name"):
            if k in sec:
                raise _error(f"data.{k}", sec[k], 'is only used with data.kind = "file"',
                             f'remove data.{k} or set data.kind = "file"')
    return out


def _validate_loss(user: Mapping[str, Any]) -> dict[str, Any]:
    sec = _section(user, "loss")
    return {
        "time_rule": _choice("loss.time_rule", _get(sec, "time_rule", "rectangle"), ("rectangle", "trapezoid")),
        "include_initial": _bool("loss.include_initial", _get(sec, "include_initial", True)),
    }


def _validate_optimizer(user: Mapping[str, Any], iterations: int) -> dict[str, Any]:
    sec = _section(user, "optimizer")
    out: dict[str, Any] = {
        "kind": _choice("optimizer.kind", _get(sec, "kind", "adam"), ("adam", "gd", "lbfgs")),
        "lr": _float("optimizer.lr", _get(sec, "lr", 0.01), lambda f: f > 0, "a number > 0"),
        "scale_lr": _bool("optimizer.scale_lr", _get(sec, "scale_lr", True)),
        "betas": _floats("optimizer.betas", _get(sec, "betas", [0.9, 0.999]), "two numbers in [0, 1)", (2,),
                         lambda f: 0.0 <= f < 1.0),
        "eps": _float("optimizer.eps", _get(sec, "eps", 1e-8), lambda f: f > 0, "a number > 0"),
        "weight_decay": _float("optimizer.weight_decay", _get(sec, "weight_decay", 0.0), lambda f: f >= 0,
                               "a number >= 0"),
        "lbfgs_memory": _int("optimizer.lbfgs_memory", _get(sec, "lbfgs_memory", 10), 1),
    }
    sch = _section(user, "optimizer.schedule")
    p = "optimizer.schedule."
    out["schedule"] = {
        "kind": _choice(p + "kind", _get(sch, "kind", "plateau"), ("none", "plateau", "step", "cosine")),
        "factor": _float(p + "factor", _get(sch, "factor", 0.95), lambda f: 0 < f < 1,
                         "a number in the open interval (0, 1)"),
        "patience": _int(p + "patience", _get(sch, "patience", 100), 1),
        "threshold": _float(p + "threshold", _get(sch, "threshold", 1e-8), lambda f: f >= 0, "a number >= 0"),
        "min_lr": _float(p + "min_lr", _get(sch, "min_lr", 1e-8), lambda f: f >= 0, "a number >= 0"),
        "step_size": _int(p + "step_size", _get(sch, "step_size", 1000), 1),
        "gamma": _float(p + "gamma", _get(sch, "gamma", 0.5), lambda f: f > 0, "a number > 0"),
        "T_max": _int(p + "T_max", _get(sch, "T_max", max(1, iterations)), 1),
        "eta_min": _float(p + "eta_min", _get(sch, "eta_min", 0.0), lambda f: f >= 0, "a number >= 0"),
    }
    return out


def _validate_run(user: Mapping[str, Any], T: float) -> dict[str, Any]:
    sec = _section(user, "run")
    return {
        "iterations": _int("run.iterations", _get(sec, "iterations", 500), 0),
        "checkpoint_every": _int("run.checkpoint_every", _get(sec, "checkpoint_every", 50), 1),
        "plot_times": _floats("run.plot_times", _get(sec, "plot_times", [T / 4, T / 2, T]),
                              f"a list of numbers in [0, T] = [0, {T!r}]", None, lambda f: 0.0 <= f <= T),
        "field_format": _choice("run.field_format", _get(sec, "field_format", "vtx"), ("vtx", "xdmf")),
        "state_storage": _state_storage(_get(sec, "state_storage", "memory")),
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
        for k, v in opts.items():
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
    out["newton_rtol"] = _float("solver.newton_rtol", _get(sec, "newton_rtol", 1e-11), lambda f: f >= 0,
                                "a number >= 0")
    out["newton_atol"] = _float("solver.newton_atol", _get(sec, "newton_atol", 1e-13), lambda f: f >= 0,
                                "a number >= 0")
    out["newton_max_it"] = _int("solver.newton_max_it", _get(sec, "newton_max_it", 25), 1)
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
    sections = list(DEFAULTS)
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
    resolved = {
        "mesh": mesh,
        "pde": _validate_pde(user),
        "time": time,
        "initial_condition": _validate_initial_condition(user),
        "boundary": _validate_boundary(user, mesh["kind"]),
        "network": _validate_network(user),
        "data": _validate_data(user),
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


# ---------------------------------------------------------------------------
# load_config: file, overrides
# ---------------------------------------------------------------------------


def _parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], parsed value)."""
    form = 'KEY=VALUE with a dotted KEY, e.g. time.T=2.0, pde.preset=allen-cahn or optimizer.betas=[0.9, 0.99]'
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r} is not valid: expected {form}", str(text), text)
    key, raw = (s.strip() for s in text.split("=", 1))
    parts = key.split(".")
    if not key or not all(_BARE_KEY.fullmatch(p) for p in parts):
        raise ConfigError(
            f"override {text!r}: key {key!r} is not valid: expected {form} (key parts are letters, digits, _ and -)",
            key, raw,
        )
    if not raw:
        raise ConfigError(f'override {text!r}: the value is empty; use {key}="" for an empty string', key, raw)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as err:
        if raw[0] in "[{\"'" or "\n" in raw:
            raise ConfigError(f"override {text!r}: the value {raw!r} is not a valid TOML value ({err})", key, raw) from None
        value = raw  # a bare word: a string
    return parts, value


def _apply_override(cfg: dict[str, Any], text: str) -> None:
    parts, value = _parse_override(text)
    node: Any = cfg
    default: Any = DEFAULTS
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(parts[:depth])} is an array of {len(node)} entries; "
                    f"{part!r} is not an index 0..{len(node) - 1}",
                    here, value,
                )
            idx = int(part)
            default = default[idx] if isinstance(default, list) and idx < len(default) else _MISSING
            if last:
                node[idx] = value
                return
            node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"override {text!r}: {'.'.join(parts[:depth])} = {_fmt(node)} is not a table", here, value
            )
        default = default.get(part, _MISSING) if isinstance(default, Mapping) else _MISSING
        if last:
            node[part] = value
            return
        if part not in node:
            node[part] = copy.deepcopy(default) if isinstance(default, list) else {}
        node = node[part]


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read, override, resolve and validate a TOML run configuration.

    Relative ``mesh.path`` and ``data.path`` values in the file are taken
    relative to the file's directory (and made absolute); values given as
    overrides are taken relative to the working directory.

    Args:
        path: The TOML file.
        overrides: ``"a.b.c=value"`` strings applied after reading the file.
            The value is parsed as a TOML value (``0.02``, ``true``, ``"x"``,
            ``[1, 2]``); a bare word that is not valid TOML (``allen-cahn``,
            ``mesh.msh``) is taken as a string.  A numeric part indexes an
            array of tables, e.g. ``boundary.0.value=1.0``.

    Returns:
        The resolved configuration (see :func:`validate`).

    Raises:
        ConfigError: If the file is missing or unreadable (naming the file),
            has a TOML syntax error (naming the file and line), an override
            is malformed, or the configuration is invalid.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(p)!r} not found", str(p), str(p)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"configuration file {str(p)!r} cannot be read: {err}", str(p), str(p)) from None
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line = getattr(err, "lineno", None)
        where = f"{p}:{line}" if line is not None else str(p)
        msg = getattr(err, "msg", None) or str(err)
        raise ConfigError(f"{where}: TOML syntax error: {msg} (in configuration file {str(p)!r})", str(p), None) from None
    base = p.resolve().parent
    for section in ("mesh", "data"):
        sec = cfg.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("path"), str) and sec["path"]:
            q = Path(sec["path"]).expanduser()
            sec["path"] = str(q if q.is_absolute() else base / q)
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        _apply_override(cfg, text)
    return validate(cfg)


# ---------------------------------------------------------------------------
# build_run
# ---------------------------------------------------------------------------


@dataclass
class Run:
    """Everything a training run needs, built from a validated configuration.

    Attributes:
        cfg: The resolved configuration.
        problem: The PDE problem.
        solver: The forward/adjoint time stepper.
        network: The neural network (parameters at their initial values).
        source: The network sampled at the source dofs.
        misfit: The L2 loss against the data.
        rf: The reduced functional θ ↦ J(θ) with its adjoint gradient.
        target: The target source g* (synthetic data), else None.
        target_values: g* at the owned source dofs of every level, shape
            ``(n_steps + 1, n_owned_source)`` (synthetic data), else None.
        lr: The effective learning rate (scaled by ``N^(2β−1)`` if
            ``optimizer.scale_lr``).
    """

    cfg: dict[str, Any]
    problem: ParabolicProblem
    solver: ThetaSolver
    network: ShallowNetwork
    source: NetworkSource
    misfit: Any  # L2Misfit (field, subdomain) or femnpde.obs.points.PointMisfit (sensors)
    rf: ReducedFunctional
    target: FunctionSource | None
    target_values: np.ndarray | None
    lr: float
    field_data: np.ndarray | None = None  # synthetic data: the full-field solution h (owned dofs, before noise)

    def destroy(self) -> None:
        """Destroy the PETSc objects of the solver and the misfit (collective)."""
        self.solver.destroy()
        self.misfit.destroy()


def _build_mesh(mcfg: Mapping[str, Any], comm: MPI.Comm, need_tags: bool, need_cell_tags: bool = False):
    """The mesh, its facet and cell tags (None when absent or not needed), refined ``mesh.refine`` times."""
    mesh, facet_tags, cell_tags = _read_or_create_mesh(mcfg, comm, need_tags, need_cell_tags)
    if mcfg.get("refine", 0):
        mesh, cell_tags, facet_tags = refine_uniformly(mesh, mcfg["refine"], cell_tags, facet_tags)
    return mesh, facet_tags, cell_tags


def _read_or_create_mesh(mcfg: Mapping[str, Any], comm: MPI.Comm, need_tags: bool, need_cell_tags: bool):
    import dolfinx.mesh

    # dolfinx.mesh.refine needs an unghosted mesh (it rebuilds the ghost layer).
    ghost = dolfinx.mesh.GhostMode.none if mcfg.get("refine", 0) else dolfinx.mesh.GhostMode.shared_facet
    kind = mcfg["kind"]
    if kind == "rectangle":
        mesh = dolfinx.mesh.create_rectangle(
            comm, [np.array(mcfg["lower"]), np.array(mcfg["upper"])], list(mcfg["cells"]),
            dolfinx.mesh.CellType[mcfg["cell_type"]], ghost_mode=ghost,
        )
        return mesh, None, None
    if kind == "box":
        mesh = dolfinx.mesh.create_box(
            comm, [np.array(mcfg["lower"]), np.array(mcfg["upper"])], list(mcfg["cells"]),
            dolfinx.mesh.CellType[mcfg["cell_type"]], ghost_mode=ghost,
        )
        return mesh, None, None
    path = mcfg["path"]
    if not os.path.isfile(path):
        raise _error("mesh.path", path, "does not exist (file not found)", "an existing .msh or .xdmf file")
    suffix = Path(path).suffix.lower()
    if suffix == ".msh":
        from femnpde.io.meshes import read_mesh

        try:
            data = read_mesh(path, comm, gdim=mcfg["gdim"], ghost_mode=ghost)
        except (OSError, ValueError) as err:
            raise ConfigError(f"mesh.path = {_fmt(path)}: {err}", "mesh.path", path) from err
        return data.mesh, data.facet_tags, data.cell_tags
    import dolfinx.io

    try:
        with dolfinx.io.XDMFFile(comm, path, "r") as f:
            mesh = f.read_mesh(name=mcfg["name"], ghost_mode=ghost)
            tdim = mesh.topology.dim
            tags = None
            if need_tags:
                mesh.topology.create_connectivity(tdim - 1, tdim)
                tags = f.read_meshtags(mesh, name=mcfg["facet_tags"])
            cell_tags = f.read_meshtags(mesh, name="cell_tags") if need_cell_tags else None
    except Exception as err:
        raise ConfigError(
            f"mesh.path = {_fmt(path)}: reading the XDMF file failed (mesh.name = {_fmt(mcfg['name'])}, "
            f"mesh.facet_tags = {_fmt(mcfg['facet_tags'])}, cell tags 'cell_tags'): {err}",
            "mesh.path", path,
        ) from err
    return mesh, tags, cell_tags


def _build_residual(pcfg: Mapping[str, Any]):
    if "residual" not in pcfg:
        factory, names = PRESETS[pcfg["preset"]]
        return factory(**{k: pcfg[k] for k in names})
    spec = pcfg["residual"]
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as err:
        raise ConfigError(f"pde.residual = {_fmt(spec)}: importing module {module_name!r} failed: {err}",
                          "pde.residual", spec) from err
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise ConfigError(f"pde.residual = {_fmt(spec)}: module {module_name!r} has no attribute {attr!r}",
                              "pde.residual", spec) from None
    if not callable(obj):
        raise ConfigError(f"pde.residual = {_fmt(spec)} is not callable; it must name a residual factory",
                          "pde.residual", spec)
    try:
        params = inspect.signature(obj).parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: pcfg[k] for k in ("gamma", "epsilon") if var_kw or k in params}
    except (TypeError, ValueError):
        kwargs = {}
    try:
        residual = obj(**kwargs)
    except Exception as err:
        raise ConfigError(f"pde.residual = {_fmt(spec)}: calling the factory with {kwargs} failed: {err}",
                          "pde.residual", spec) from err
    if not callable(residual):
        raise ConfigError(
            f"pde.residual = {_fmt(spec)}: the factory returned {type(residual).__name__}, "
            "expected a callable residual(u, v, g, t, x) -> ufl.Form",
            "pde.residual", spec,
        )
    return residual


def _dirichlet(bcfg: Sequence[Mapping[str, Any]], tags, comm: MPI.Comm, T: float = 1.0) -> list[Dirichlet]:
    out = []
    present: list[int] | None = None
    for i, entry in enumerate(bcfg):
        where, name = entry["where"], f"boundary[{i}]"
        value = _time_function(entry, T)
        if where == "boundary":
            out.append(Dirichlet("boundary", value, name=name))
            continue
        if tags is None:
            raise _error(f"{name}.where", where, "is a facet tag, but facet tags need a mesh file with tags",
                         '"boundary", or a mesh file (mesh.kind = "file") with facet tags')
        if present is None:
            present = tags_present(tags, comm)
        if int(where) not in present:
            raise _error(f"{name}.where", where, "is not a facet tag of the mesh",
                         f"one of the facet tags {present} or \"boundary\"")
        out.append(Dirichlet((tags, int(where)), value, name=name))
    return out


def _time_function(entry: Mapping[str, Any], T: float):
    """The Dirichlet value of a ``[[boundary]]`` entry: a number or a function of t."""
    value = float(entry["value"])
    kind = entry.get("time_function", "constant")
    if kind == "constant":
        return value
    if kind == "linear":
        return lambda t: value * t / T
    freq = float(entry.get("frequency", 1.0))
    return lambda t: value * np.sin(2 * np.pi * freq * t / T)


def _with_neumann(residual, ncfg: Sequence[Mapping[str, Any]], mesh, facet_tags, comm: MPI.Comm):
    """Add ``− Σ flux v ds(tag)`` (a flux γ ∂u/∂n = flux into the domain) to a residual."""
    if not ncfg:
        return residual
    import ufl

    present = tags_present(facet_tags, comm)
    for i, entry in enumerate(ncfg):
        if facet_tags is None or entry["where"] not in present:
            raise _error(f"neumann[{i}].where", entry["where"], "is not a facet tag of the mesh",
                         f"one of the facet tags {present}")
    ds = ufl.Measure("ds", domain=mesh, subdomain_data=facet_tags)
    terms = [(float(e["flux"]), int(e["where"])) for e in ncfg]

    def with_flux(u, v, g, t, x):
        form = residual(u, v, g, t, x)
        for flux, tag in terms:
            form = form - flux * v * ds(tag)
        return form

    return with_flux


def _bounding_box(mesh) -> tuple[np.ndarray, np.ndarray]:
    """Global bounding box of the mesh geometry."""
    x = mesh.geometry.x[:, : mesh.geometry.dim]
    lo = np.empty(mesh.geometry.dim)
    hi = np.empty(mesh.geometry.dim)
    mesh.comm.Allreduce(np.min(x, axis=0, initial=np.inf), lo, op=MPI.MIN)
    mesh.comm.Allreduce(np.max(x, axis=0, initial=-np.inf), hi, op=MPI.MAX)
    return lo, hi


def _add_noise(problem: ParabolicProblem, data: np.ndarray, noise: float, seed: int) -> None:
    """``data += noise · max|data| · ξ``, ξ keyed by (seed, dof coordinate, level): O(local), rank-independent."""
    add_field_noise(problem, data, noise, seed)


def build_run(
    cfg: Mapping[str, Any],
    comm: MPI.Comm = MPI.COMM_WORLD,
    petsc_options_prefix: str = "femnpde_",
) -> Run:
    """Build the problem, solver, network, data, loss and reduced functional of a run.

    Synthetic data (``data.kind = "synthetic"``) is the discrete solution of
    the same problem with the target source ``g*`` (same mesh, time grid and
    solver), plus the optional noise.  The noise of a dof at a level is a pure
    function of ``(data.noise_seed, the dof's coordinates, the level)``
    (:func:`femnpde.obs.rng.add_field_noise`): each rank draws only its own
    dofs' noise and the data is the same on any number of ranks.
    ``data.kind = "file"`` reads sensor values (``.npz``/``.csv``, with
    ``observation.kind = "sensors"``) or a space-time field (an adios4dolfinx
    ``.bp`` checkpoint, function ``data.name``, see :mod:`femnpde.io.fielddata`).

    Args:
        cfg: A configuration (validated and resolved here; may be partial).
        comm: The communicator the mesh is distributed over.
        petsc_options_prefix: PETSc options prefix of the solver.

    Returns:
        The :class:`Run`; the network holds its initial parameters.

    Raises:
        ConfigError: If the configuration is invalid, a file cannot be read,
            ``pde.residual`` cannot be imported, a facet tag is missing, or
            ``data.kind = "file"``.
    """
    cfg = validate(cfg)
    mcfg, pcfg, tcfg, obs = cfg["mesh"], cfg["pde"], cfg["time"], cfg["observation"]
    step = tcfg["theta"] * tcfg["T"] / tcfg["n_steps"]
    if "residual" not in pcfg and pcfg["preset"] == "allen-cahn" and step >= pcfg["epsilon"] ** 2 and comm.rank == 0:
        warnings.warn(
            f"Allen-Cahn with theta*dt = {step:.4g} >= epsilon^2 = {pcfg['epsilon'] ** 2:.4g}: a time step may have "
            "several solutions, Newton may not converge and the loss may be non-smooth in the parameters; "
            f"use time.n_steps > {int(tcfg['theta'] * tcfg['T'] / pcfg['epsilon'] ** 2)}",
            stacklevel=2,
        )
    need_tags = any(not isinstance(b["where"], str) for b in cfg["boundary"]) or bool(cfg["neumann"])
    mesh, facet_tags, cell_tags = _build_mesh(mcfg, comm, need_tags, obs["kind"] == "subdomain")
    residual = _with_neumann(_build_residual(pcfg), cfg["neumann"], mesh, facet_tags, mesh.comm)
    icfg = cfg["initial_condition"]
    ic: Any = paper_initial_condition if icfg["kind"] == "paper" else float(icfg["value"])
    problem = ParabolicProblem(
        mesh,
        residual,
        degree=pcfg["degree"],
        time=TimeGrid(tcfg["T"], tcfg["n_steps"]),
        theta=tcfg["theta"],
        initial_condition=ic,
        dirichlet=_dirichlet(cfg["boundary"], facet_tags, mesh.comm, tcfg["T"]),
        source=pcfg["source"],
        source_degree=pcfg["source_degree"],
    )
    scfg = cfg["solver"]
    petsc_options = None
    if "petsc_options" in scfg:
        petsc_options = {
            k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in scfg["petsc_options"].items()
        }
    solver = ThetaSolver(
        problem,
        petsc_options_prefix,
        petsc_options,
        newton_rtol=scfg["newton_rtol"],
        newton_atol=scfg["newton_atol"],
        newton_max_it=scfg["newton_max_it"],
        state_storage=cfg["run"]["state_storage"],
    )
    ncfg = cfg["network"]
    network = ShallowNetwork(
        ncfg["neurons"], mesh.geometry.dim, beta=ncfg["beta"], activation=ncfg["activation"], seed=ncfg["seed"]
    )
    source = NetworkSource(problem, network)

    dcfg = cfg["data"]
    lcfg = cfg["loss"]
    weights = TimeWeights(
        rule=lcfg["time_rule"],
        include_initial=lcfg["include_initial"],
        levels=tuple(obs["levels"]) if "levels" in obs else None,
    )
    target = target_values = None
    n_levels = tcfg["n_steps"] + 1
    if dcfg["kind"] == "synthetic":
        bbox = _bounding_box(mesh)
        target = FunctionSource(problem, target_source(dcfg["target"], tcfg["T"], bbox))
        target_values = target.values()
        # Level by level: a checkpointing storage does not keep every state.
        field_data = np.empty((n_levels, problem.n_owned))
        field_data[0] = problem.u0.x.array[: problem.n_owned]

        def collect(n: int) -> None:
            field_data[n] = problem.u.x.array[: problem.n_owned]

        solver.forward(target_values, step_callback=collect)
    else:
        field_data = None
    if obs["kind"] == "sensors":
        from femnpde.obs.points import PointMisfit, add_noise, load_point_data, synthetic_point_data

        points = np.array(obs["sensors"]) if "sensors" in obs else None
        if dcfg["kind"] == "file":
            try:
                file_points, values = load_point_data(
                    dcfg["path"], n_levels, None if points is None else len(points), times=problem.time.times,
                    comm=mesh.comm,
                )
            except (OSError, ValueError) as err:
                raise ConfigError(f"data.path = {_fmt(dcfg['path'])}: {err}", "data.path", dcfg["path"]) from err
            if points is None:
                if file_points is None:
                    raise ConfigError(
                        f"data.path = {_fmt(dcfg['path'])} has no sensor coordinates; give observation.sensors",
                        "observation.sensors",
                    )
                points = file_points
            data = values
        try:
            if dcfg["kind"] != "file":
                data = synthetic_point_data(problem, field_data, points)
            if dcfg["noise"] > 0:
                data = add_noise(data, dcfg["noise"], dcfg["noise_seed"])
            misfit = PointMisfit(problem, points, data, weights)
        except ValueError as err:
            raise ConfigError(f"observation.sensors: {err}", "observation.sensors") from err
    else:
        if dcfg["kind"] == "file":
            from femnpde.io.fielddata import read_field_data

            try:
                field_data = read_field_data(dcfg["path"], problem, dcfg["name"])
            except (OSError, ValueError) as err:
                raise ConfigError(f"data.path = {_fmt(dcfg['path'])}: {err}", "data.path", dcfg["path"]) from err
        data = field_data.copy()
        if dcfg["noise"] > 0:
            _add_noise(problem, data, dcfg["noise"], dcfg["noise_seed"])
        subdomain = None
        if obs["kind"] == "subdomain":
            present = tags_present(cell_tags, mesh.comm)
            if cell_tags is None or obs["subdomain"] not in present:
                raise _error("observation.subdomain", obs["subdomain"], "is not a cell tag of the mesh",
                             f"one of the cell tags {present}")
            subdomain = (cell_tags, obs["subdomain"])
        misfit = L2Misfit(problem, data, weights, subdomain=subdomain)
    solver.states.clear()
    # The adjoint of every level is kept for output only when the states are.
    rf = ReducedFunctional(solver, source, misfit, keep_adjoint=solver.states.keeps_all_levels)
    ocfg = cfg["optimizer"]
    lr = reference_learning_rate(ocfg["lr"], ncfg["neurons"], ncfg["beta"]) if ocfg["scale_lr"] else ocfg["lr"]
    return Run(
        cfg=cfg,
        problem=problem,
        solver=solver,
        network=network,
        source=source,
        misfit=misfit,
        rf=rf,
        target=target,
        target_values=target_values,
        lr=float(lr),
        field_data=field_data,
    )
