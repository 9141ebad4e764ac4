"""The run-configuration schema: the one home of every default and every list of choices.

A run is a TOML file whose sections and keys are listed in :data:`DEFAULTS`
(with their default values), :data:`OPTIONAL_DEFAULTS` (defaults of keys that
only apply to some kinds: ``mesh.kind = "file"``, ``data.kind = "file"``,
``[[boundary]]``/``[[neumann]]`` entries), :data:`CHOICES` (the allowed
values of every string key) and :data:`HELP` (what each key means).  The
validator (:mod:`femnpde.app.validation`), the run builder
(:mod:`femnpde.app.build`) and the reference printed by ``femnpde config
--help`` / :func:`config_reference` all read these tables; nothing else
holds a default.  The few defaults a numerical constructor shares with a key
(network width, beta, activation, seed; degree, theta, nonlinear; Newton tolerances)
are read from :mod:`femnpde.defaults`, which the constructors read too.

A few defaults are *dependent* (they follow from other keys; see
:data:`DEPENDENT`): the box mesh corners, cells and cell type
(:data:`BOX_DEFAULTS`), ``pde.source_degree`` (``degree`` for lagrange,
``2 * degree + 2`` for quadrature), ``optimizer.schedule.T_max``
(``max(1, run.iterations)``) and ``run.plot_times`` (``[T/4, T/2, T]``).

This module imports neither DOLFINx nor PETSc nor mpi4py: a configuration can
be validated (``femnpde config check CONFIG``) on a machine without them.
Activations and time rules are read from their (numpy-only) implementations
(:data:`femnpde.model.network.ACTIVATIONS`, :data:`femnpde.obs.weights.TIME_RULES`);
the names of presets, source kinds and targets, whose implementations need
DOLFINx, are listed here and checked against them
(:data:`femnpde.fem.problem.PRESETS`, :data:`femnpde.app.scenarios.TARGETS`)
by the test suite.

Types: a key documented as a number accepts TOML integers and floats (not
booleans, not nan/inf); an int key accepts only integers (not booleans).
Nothing in a configuration is ``eval``'d; the only code a configuration can
name is ``pde.residual`` (a ``module:function`` imported with
:mod:`importlib` when, and only when, the key is given).
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from typing import Any

import tomli_w

from femnpde import defaults as D
from femnpde.model.build import MODEL_KINDS
from femnpde.model.mlp import INITIALISATIONS, OUTPUT_SCALES
from femnpde.model.network import ACTIVATIONS
from femnpde.obs.weights import TIME_RULES

__all__ = [
    "BOX_DEFAULTS",
    "CELL_TYPES",
    "CHOICES",
    "DEFAULTS",
    "DEPENDENT",
    "HELP",
    "NETWORK_KIND_KEYS",
    "OPTIONAL_DEFAULTS",
    "PARAMETER_KEYS",
    "PRESET_PARAMETERS",
    "ConfigError",
    "config_reference",
    "default",
    "dump_config",
    "format_value",
]


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


#: The full default configuration: the paper's heat scenario (i).  Dependent
#: defaults are shown for the default values of the keys they depend on.
#: Treat as read-only.
DEFAULTS: dict[str, Any] = {
    "mesh": {
        "kind": "rectangle",
        "lower": [0.0, 0.0],
        "upper": [0.5, 1.0],
        "cells": [20, 40],
        "cell_type": "triangle",
        "refine": 0,
    },
    "pde": {
        "preset": "heat",
        "gamma": 0.01,
        "epsilon": 0.32,
        "degree": D.PDE_DEGREE,
        "source": D.PDE_SOURCE,
        "source_degree": D.PDE_DEGREE,
    },
    "time": {"T": 1.0, "n_steps": 64, "theta": D.TIME_THETA, "nonlinear": D.TIME_NONLINEAR},
    "initial_condition": {"kind": "paper", "value": 0.0},
    "boundary": [{"where": "boundary", "value": 0.0, "time_function": "constant"}],
    "network": {
        "neurons": D.NETWORK_NEURONS,
        "beta": D.NETWORK_BETA,
        "activation": D.NETWORK_ACTIVATION,
        "seed": D.NETWORK_SEED,
    },
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
            "threshold_mode": "rel",
            "cooldown": 0,
            "eps": 1e-8,
        },
    },
    "run": {
        "iterations": 500,
        "checkpoint_every": 50,
        "plot_times": [0.25, 0.5, 1.0],
        "field_format": "vtx",
        "state_storage": "memory",
        "check_gradient": False,
    },
    "solver": {"newton_rtol": D.NEWTON_RTOL, "newton_atol": D.NEWTON_ATOL, "newton_max_it": D.NEWTON_MAX_IT,
               "nonlinear_method": D.NONLINEAR_METHOD, "forward_guess": D.FORWARD_GUESS},
}

#: Defaults of keys that exist only for some kinds (``None``: required or optional without default).
OPTIONAL_DEFAULTS: dict[str, Any] = {
    "mesh.path": None,
    "mesh.gdim": 2,
    "mesh.name": "mesh",
    "mesh.facet_tags": "facet_tags",
    "pde.residual": None,
    "data.path": None,
    "data.name": "h",
    "observation.subdomain": None,
    "observation.sensors": None,
    "observation.levels": None,
    "solver.petsc_options": None,
    "boundary.where": "boundary",
    "boundary.value": 0.0,
    "boundary.time_function": "constant",
    "boundary.frequency": 1.0,
    "neumann.where": None,
    "neumann.flux": 0.0,
    "network.kind": "shallow",
    "network.hidden": None,
    "network.init": D.MLP_INIT,
    "network.output_scale": D.MLP_OUTPUT_SCALE,
    "network.factory": None,
    "network.options": None,
    "network.outputs": D.NETWORK_OUTPUTS,
}

#: Keys of [network] that only some kinds use (the shallow network uses neurons, beta, activation, seed).
NETWORK_KIND_KEYS: dict[str, tuple[str, ...]] = {
    "shallow": (),
    "mlp": ("hidden", "init", "output_scale", "outputs"),
    "jax": ("factory", "options", "outputs"),
}

#: The constants of each preset that [parameters] may name (checked against femnpde.fem.problem.PRESETS).
PRESET_PARAMETERS: dict[str, tuple[str, ...]] = {"heat": ("gamma",), "allen-cahn": ("gamma", "epsilon")}

#: Keys of one entry of [parameters] (``name = { initial = ..., ... }``).
PARAMETER_KEYS: tuple[str, ...] = ("initial", "trainable", "bounds", "scale", "true")

#: Defaults of the box mesh (``mesh.kind = "box"``).
BOX_DEFAULTS: dict[str, Any] = {
    "lower": [0.0, 0.0, 0.0],
    "upper": [0.5, 1.0, 1.0],
    "cells": [10, 20, 20],
    "cell_type": "tetrahedron",
}

#: Cell types per built-in mesh kind (the first is the default).
CELL_TYPES: dict[str, tuple[str, ...]] = {
    "rectangle": ("triangle", "quadrilateral"),
    "box": ("tetrahedron", "hexahedron"),
}

#: Mesh file suffixes.
MESH_SUFFIXES = (".msh", ".xdmf")

#: Data file suffixes: sensor values (.npz, .csv) and adios4dolfinx field checkpoints (.bp).
DATA_SUFFIXES = (".npz", ".csv", ".bp")

#: The allowed values of every string-valued key.
CHOICES: dict[str, tuple[str, ...]] = {
    "mesh.kind": ("rectangle", "box", "file"),
    "pde.preset": ("heat", "allen-cahn"),
    "pde.source": ("lagrange", "quadrature"),
    "time.nonlinear": D.TIME_NONLINEAR_CHOICES,
    "solver.nonlinear_method": D.NONLINEAR_METHOD_CHOICES,
    "solver.forward_guess": D.FORWARD_GUESS_CHOICES,
    "initial_condition.kind": ("paper", "constant"),
    "boundary.time_function": ("constant", "linear", "sin"),
    "network.activation": ACTIVATIONS,
    "network.kind": MODEL_KINDS,
    "network.init": INITIALISATIONS,
    "network.output_scale": OUTPUT_SCALES,
    "data.kind": ("synthetic", "file"),
    "data.target": (
        "linear_t", "linear_x", "linear_y", "quadratic_t", "quadratic_x", "tanh_1", "tanh_2", "difficult",
        "moving_gaussian", "zero",
    ),
    "observation.kind": ("field", "subdomain", "sensors"),
    "loss.time_rule": TIME_RULES,
    "optimizer.kind": ("adam", "gd", "lbfgs"),
    "optimizer.schedule.kind": ("none", "plateau", "step", "cosine"),
    "optimizer.schedule.threshold_mode": ("rel", "abs"),
    "run.field_format": ("vtx", "xdmf"),
}

#: Dependent defaults: key -> how the default follows from other keys.
DEPENDENT: dict[str, str] = {
    "mesh.lower": "[0, 0] (rectangle), [0, 0, 0] (box)",
    "mesh.upper": "[0.5, 1] (rectangle), [0.5, 1, 1] (box)",
    "mesh.cells": "[20, 40] (rectangle), [10, 20, 20] (box)",
    "mesh.cell_type": "the simplex: triangle (rectangle), tetrahedron (box)",
    "pde.source_degree": "pde.degree (lagrange), 2 * pde.degree + 2 (quadrature)",
    "optimizer.schedule.T_max": "max(1, run.iterations)",
    "run.plot_times": "[T/4, T/2, T]",
}

#: What each key means (defaults and choices are added by :func:`config_reference`).
HELP: dict[str, str] = {
    "mesh.kind": "built-in rectangle / box, or a mesh file",
    "mesh.lower": "lower corner (2 numbers for a rectangle, 3 for a box)",
    "mesh.upper": "upper corner, above lower componentwise",
    "mesh.cells": "cells per direction, integers >= 1",
    "mesh.cell_type": "triangle | quadrilateral (rectangle), tetrahedron | hexahedron (box)",
    "mesh.path": "kind file, required: a Gmsh .msh (physical groups of dim tdim-1 = facet tags) or .xdmf file; "
    "relative to the configuration file",
    "mesh.gdim": "kind file: geometric dimension of a .msh file, 2 or 3",
    "mesh.name": "kind file: name of the mesh in an .xdmf file",
    "mesh.facet_tags": "kind file: name of the facet tags in an .xdmf file",
    "mesh.refine": "uniform refinements after building or reading the mesh (4x the cells in 2D, 8x in 3D each; "
    "cell and facet tags carried over), >= 0",
    "pde.preset": "the residual, ignored when pde.residual is given",
    "pde.residual": '"package.module:function", a factory returning residual(u, v, g, t, x) -> ufl.Form; called '
    "with those of gamma and epsilon its signature accepts",
    "pde.gamma": "diffusivity, > 0",
    "pde.epsilon": "Allen-Cahn interface parameter, > 0",
    "pde.degree": "Lagrange degree of the solution, >= 1",
    "pde.source": "where the network is sampled: dofs of a Lagrange space or quadrature points",
    "pde.source_degree": "Lagrange degree (>= 1) or quadrature degree (>= 0) of the source",
    "time.T": "final time, > 0",
    "time.n_steps": "time steps, >= 1",
    "time.theta": "theta of the time scheme, in [0.5, 1] (1 backward Euler, 0.5 Crank-Nicolson)",
    "time.nonlinear": "the residual's nonlinear remainder: implicit (at u^n, a nonlinear solve per step) or explicit "
    "(IMEX: at u^{n-1}, one linear solve per step with a matrix factorised once; first order in time for the "
    "remainder, stable for dt * max|dN/du| small)",
    "initial_condition.kind": "paper: 0.2 sin(2 pi x/0.5) sin(2 pi y); constant: value",
    "initial_condition.value": "the constant (kind constant)",
    "boundary": "array of tables, Dirichlet conditions u = value; boundary = [] means none",
    "boundary.where": '"boundary" (the whole boundary) or an integer facet tag (mesh file)',
    "boundary.value": "a number",
    "boundary.time_function": "constant, linear (value t/T) or sin (value sin(2 pi frequency t/T))",
    "boundary.frequency": "frequency of time_function sin, > 0",
    "neumann": "array of tables, fluxes gamma du/dn = flux into the domain",
    "neumann.where": "required: an integer facet tag",
    "neumann.flux": "a number",
    "network.neurons": "hidden units N, >= 1",
    "network.beta": "scaling exponent in the open interval (0.5, 1)",
    "network.activation": "hidden activation",
    "network.seed": "seed of the initialisation, >= 0",
    "network.kind": "shallow (the paper's network: neurons, beta), mlp (deep numpy network) or jax (a user JAX model)",
    "network.hidden": "mlp, required: hidden widths, e.g. [64, 64]",
    "network.init": "mlp: initialisation (paper: N(0, 1) hidden, U(-1, 1) output weights)",
    "network.output_scale": "mlp: none, or mean-field (the last hidden width to the power -beta)",
    "network.factory": 'jax, required: "package.module:function" returning (apply, params); called as '
    "function(input_dim=d, n_outputs=outputs, seed=seed, **options)",
    "network.options": "jax: a table of keyword arguments of the factory",
    "network.outputs": "mlp, jax: network-fed coefficients g[0], g[1], ... of the residual, >= 1",
    "parameters": "optional: name = { initial, trainable, bounds, scale, true }, constants of the residual learnt "
    "with the network (preset: gamma, epsilon; custom residual: its keyword arguments)",
    "data.kind": "synthetic (the discrete solution with the target source) or file",
    "data.target": "target source g* of synthetic data; with network.outputs = m > 1 a list of m names, "
    "one per output g[0], ..., g[m-1] (a single name: g[0] = it, the other outputs' targets zero)",
    "data.noise": "relative noise level, >= 0: data + noise max|data| xi, xi standard normal",
    "data.noise_seed": "seed of the noise, >= 0",
    "data.path": "kind file, required: sensor values (.npz/.csv, observation.kind sensors) or a space-time "
    "field as an adios4dolfinx .bp checkpoint",
    "data.name": "kind file, .bp: the function name in the file",
    "observation.kind": "field (whole domain), subdomain (a cell tag) or sensors (points)",
    "observation.subdomain": "kind subdomain, required: an integer cell tag",
    "observation.sensors": "kind sensors: [[x, y], ...] (or the points of the data file)",
    "observation.levels": "the observed time levels in 0..n_steps (others weigh 0); default all",
    "loss.time_rule": "rectangle (every level weighs 1) or trapezoid (first and last included levels 1/2)",
    "loss.include_initial": "whether level 0 is in the loss",
    "optimizer.kind": "Adam, gradient descent or L-BFGS (scipy)",
    "optimizer.lr": "base learning rate, > 0",
    "optimizer.scale_lr": "if true the rate is lr N^(2 beta - 1)",
    "optimizer.betas": "Adam: two numbers in [0, 1)",
    "optimizer.eps": "Adam: > 0",
    "optimizer.weight_decay": ">= 0",
    "optimizer.lbfgs_memory": "L-BFGS: stored pairs, >= 1",
    "optimizer.schedule.kind": "learning-rate schedule",
    "optimizer.schedule.factor": "plateau: reduction factor in (0, 1)",
    "optimizer.schedule.patience": "plateau: tolerated non-improving epochs, >= 1",
    "optimizer.schedule.threshold": "plateau: minimum significant improvement, >= 0",
    "optimizer.schedule.threshold_mode": "plateau: relative or absolute threshold",
    "optimizer.schedule.cooldown": "plateau: epochs without counting after a reduction, >= 0",
    "optimizer.schedule.min_lr": "plateau: lower bound of the rate, >= 0",
    "optimizer.schedule.eps": "plateau: minimal applied change of the rate, >= 0",
    "optimizer.schedule.step_size": "step: epochs per reduction, >= 1",
    "optimizer.schedule.gamma": "step: factor, > 0",
    "optimizer.schedule.T_max": "cosine: period in epochs, >= 1",
    "optimizer.schedule.eta_min": "cosine: minimum rate, >= 0",
    "run.iterations": "epochs (or L-BFGS iterations), >= 0",
    "run.checkpoint_every": "epochs between checkpoints, >= 1",
    "run.plot_times": "times in [0, T] of the comparison plots",
    "run.field_format": "format of fields/",
    "run.state_storage": '"memory" (every state u^0..u^N kept), or checkpointing: {snapshots = K} (K restart '
    'snapshots in memory) or {budget = "2GB"} (state memory per rank), optionally disk_snapshots = D (per-rank '
    ".npy files in a private temporary directory, removed afterwards) and directory; the adjoint recomputes "
    "states from the snapshots (multistage schedule), gradients unchanged",
    "run.check_gradient": "if true, Taylor + FD gradient check at the initial theta before the first epoch (exit 3 on failure)",
    "solver.petsc_options": "table option -> string/number/bool for the forward and adjoint linear solvers "
    "(default: direct LU)",
    "solver.newton_rtol": "Newton relative tolerance, >= 0",
    "solver.newton_atol": "Newton absolute tolerance, >= 0",
    "solver.newton_max_it": "Newton iterations, >= 1",
    "solver.forward_guess": "initial guess of the forward Krylov solves of a constant symmetric step: previous "
    "(u^(n-1); any state_storage gives bitwise the same states) or projection (onto the sweep's earlier "
    "corrections: about half the forward iterations of the 3D defaults; needs run.state_storage = \"memory\")",
    "solver.nonlinear_method": "linear systems of a nonlinear step: chord (a lagged Newton matrix, refactorised "
    "when the residual falls slowly), krylov (GMRES preconditioned by the constant linear part, factorised "
    "once; petsc_options then configure the Newton Krylov solve, its preconditioner under ksp_), auto (krylov from "
    "100 000 unknowns without petsc_options)",
}


def default(key: str) -> Any:
    """The default of a dotted key (``"pde.gamma"``, ``"optimizer.schedule.factor"``, ``"boundary.value"``).

    Raises:
        KeyError: If the key has no independent default (see :data:`DEPENDENT`).
    """
    if key in OPTIONAL_DEFAULTS:
        return OPTIONAL_DEFAULTS[key]
    node: Any = DEFAULTS
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            raise KeyError(f"{key!r} has no default in femnpde.app.schema")
        node = node[part]
    return node


#: Longest string (its head and tail are kept: file names stay visible), and most list items, a message echoes.
_ECHO_CHARS, _ECHO_ITEMS = 200, 8


def format_value(value: Any) -> str:
    """A value as it would be written inline in TOML (for messages and the reference).

    Long values are cut to a readable length: strings over 200 characters
    keep their first 120 and last 60, lists their first 8 items, each with
    the full length given.
    """
    if isinstance(value, str) and len(value) > _ECHO_CHARS:
        head, tail = json.dumps(value[:120], ensure_ascii=False), json.dumps(value[-60:], ensure_ascii=False)
        return f'{head[:-1]}...{tail[1:]} ({len(value)} characters)'
    if isinstance(value, (list, tuple)) and len(value) > _ECHO_ITEMS:
        shown = ", ".join(format_value(v) for v in value[:_ECHO_ITEMS])
        return f"[{shown}, ...] ({len(value)} items)"
    if isinstance(value, Mapping) and len(value) > _ECHO_ITEMS:
        shown = ", ".join(f"{k} = {format_value(v)}" for k, v in list(value.items())[:_ECHO_ITEMS])
        return f"{{{shown}, ...}} ({len(value)} entries)"
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return "true" if value else "false"
    if isinstance(value, numbers.Integral):
        return str(int(value))
    if isinstance(value, numbers.Real):
        f = float(value)
        return ("inf" if f > 0 else "-inf") if math.isinf(f) else "nan" if math.isnan(f) else repr(f)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(format_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{" + ", ".join(f"{k} = {format_value(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _plain(value: Any, key: str) -> Any:
    """``value`` with numpy scalars made Python scalars; ConfigError naming ``key`` for non-TOML values."""
    if isinstance(value, Mapping):
        return {str(k): _plain(v, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{key}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, bool) or type(value).__name__ == "bool_":
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    if isinstance(value, str):
        return value
    raise ConfigError(
        f"{key} = {value!r} cannot be written as TOML: values must be strings, numbers, booleans, lists or tables",
        key,
        value,
    )


def dump_config(cfg: Mapping[str, Any]) -> str:
    """Write a configuration as TOML text (with ``tomli_w``).

    ``tomllib.loads(dump_config(cfg)) == cfg`` for a resolved configuration.
    The configuration is written as given (it is not validated).

    Args:
        cfg: A nested dict of strings, ints, floats, bools, lists and tables
            (typically the result of :func:`femnpde.app.loading.load_config`).

    Returns:
        The TOML document.

    Raises:
        ConfigError: If a value has a type TOML cannot hold (e.g. ``None``),
            naming its dotted key.
    """
    if not isinstance(cfg, Mapping):
        raise ConfigError(f"the configuration must be a table (dict), got {type(cfg).__name__}")
    body = tomli_w.dumps(_plain(cfg, ""))
    return "# femnpde run configuration (resolved: every default filled in)\n\n" + body


def _reference_line(key: str, leaf: str) -> str:
    parts = [f"  {leaf}: {HELP.get(key, '')}"]
    if key in CHOICES:
        parts.append("choices: " + " | ".join(CHOICES[key]))
    if key in DEPENDENT:
        parts.append(f"default: {DEPENDENT[key]}")
    else:
        try:
            value = default(key)
        except KeyError:
            value = None
        parts.append("no default" if value is None else f"default: {format_value(value)}")
    return "; ".join(parts)


def config_reference() -> str:
    """The configuration reference (every section and key, with choices and defaults), generated from the schema."""
    lines = ["femnpde run configuration (TOML); every key is optional unless marked required."]
    sections: dict[str, list[str]] = {}
    for section, table in DEFAULTS.items():
        if isinstance(table, list):
            sections[section] = []
            continue
        sections[section] = [k for k, v in table.items() if not isinstance(v, Mapping)]
        for k, v in table.items():
            if isinstance(v, Mapping):
                sections[f"{section}.{k}"] = list(v)
    for key in OPTIONAL_DEFAULTS:
        section, leaf = key.rsplit(".", 1)
        if leaf not in sections[section]:
            sections[section].append(leaf)
    for section, keys in sections.items():
        header = f"[[{section}]]" if isinstance(DEFAULTS.get(section), list) else f"[{section}]"
        lines.append("")
        lines.append(f"{header}  {HELP.get(section, '')}".rstrip())
        lines.extend(_reference_line(f"{section}.{k}", k) for k in keys)
    return "\n".join(lines) + "\n"
