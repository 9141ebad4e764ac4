"""The problem part of :func:`femnpde.app.build.build_run`: mesh (read, created, refined), residual, boundary conditions.

Errors in the configuration are raised as :class:`femnpde.app.schema.ConfigError`
naming the key; no PETSc object is created here.
"""

from __future__ import annotations

import inspect
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from mpi4py import MPI

from femnpde._mpi import tags_present
from femnpde.app.checks import _error
from femnpde.app.schema import ConfigError, format_value
from femnpde.fem.problem import PRESETS, Dirichlet
from femnpde.model.build import import_object
from femnpde.io.refine import refine_uniformly

__all__: list[str] = []  # used by femnpde.app.build only


def _build_mesh(mcfg: Mapping[str, Any], comm: MPI.Comm, need_tags: bool, need_cell_tags: bool = False):
    """The mesh, its facet and cell tags (None when absent or not needed), refined ``mesh.refine`` times."""
    mesh, facet_tags, cell_tags = _read_or_create_mesh(mcfg, comm, need_tags, need_cell_tags)
    if mcfg.get("refine", 0):
        mesh, cell_tags, facet_tags = refine_uniformly(mesh, mcfg["refine"], cell_tags, facet_tags)
    return mesh, facet_tags, cell_tags


def _read_or_create_mesh(mcfg: Mapping[str, Any], comm: MPI.Comm, need_tags: bool, need_cell_tags: bool):
    """The mesh, its facet tags and cell tags (None for built-in meshes or when not needed)."""
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
            raise ConfigError(f"mesh.path = {format_value(path)}: {err}", "mesh.path", path) from err
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
            f"mesh.path = {format_value(path)}: reading the XDMF file failed (mesh.name = {format_value(mcfg['name'])}, "
            f"mesh.facet_tags = {format_value(mcfg['facet_tags'])}, cell tags 'cell_tags'): {err}",
            "mesh.path", path,
        ) from err
    return mesh, tags, cell_tags


def _build_residual(pcfg: Mapping[str, Any], constants: Sequence[str] = ()):
    """The residual; the names in ``constants`` become its keyword arguments (problem constants)."""
    if "residual" not in pcfg:
        factory, names = PRESETS[pcfg["preset"]]
        if not constants:
            return factory(**{k: pcfg[k] for k in names})
        fixed = {k: pcfg[k] for k in names if k not in constants}

        def residual(u, v, g, t, x, **consts):
            return factory(**fixed, **consts)(u, v, g, t, x)

        return residual
    spec = pcfg["residual"]
    try:
        obj: Any = import_object(spec, "pde.residual")
    except ImportError as err:
        raise ConfigError(str(err), "pde.residual", spec) from err
    except (SystemExit, KeyboardInterrupt) as err:  # user code at import: sys.exit() is an error too
        raise ConfigError(f"pde.residual = {format_value(spec)}: importing the module failed: {_describe(err)}",
                          "pde.residual", spec) from err
    if not callable(obj):
        raise ConfigError(f"pde.residual = {format_value(spec)} is not callable; it must name a residual factory",
                          "pde.residual", spec)
    try:
        params = inspect.signature(obj).parameters
        var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kwargs = {k: pcfg[k] for k in ("gamma", "epsilon") if var_kw or k in params}
    except (TypeError, ValueError):
        kwargs = {}
    try:
        residual = obj(**kwargs)
    except (Exception, SystemExit, KeyboardInterrupt) as err:  # user code: sys.exit() is an error too
        raise ConfigError(f"pde.residual = {format_value(spec)}: calling the factory with {kwargs} failed: "
                          f"{_describe(err)}", "pde.residual", spec) from err
    if not callable(residual):
        raise ConfigError(
            f"pde.residual = {format_value(spec)}: the factory returned {type(residual).__name__}, "
            "expected a callable residual(u, v, g, t, x) -> ufl.Form",
            "pde.residual", spec,
        )
    return _guarded(residual, spec)


def _describe(err: BaseException) -> str:
    """An exception of user code in words (``sys.exit()`` has an empty message)."""
    if isinstance(err, SystemExit):
        return f"it called sys.exit({err.code!r}) (raised SystemExit)"
    if isinstance(err, KeyboardInterrupt):
        return "it raised KeyboardInterrupt"
    return f"{type(err).__name__}: {err}" if not isinstance(err, (ValueError, TypeError)) else str(err)


def _guarded(residual, spec: str):
    """The user's residual, with its failures (``sys.exit()`` included) reported as ``pde.residual`` errors."""

    def call(u, v, g, t, x):
        try:
            return residual(u, v, g, t, x)
        except (Exception, SystemExit, KeyboardInterrupt) as err:
            raise ConfigError(f"pde.residual = {format_value(spec)}: the residual raised while building the form: "
                              f"{_describe(err)}", "pde.residual", spec) from err

    return call


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

    def with_flux(u, v, g, t, x, **constants):
        form = residual(u, v, g, t, x, **constants)
        for flux, tag in terms:
            form = form - flux * v * ds(tag)
        return form

    return with_flux
