"""Time series of fields for ParaView (VTX or XDMF), each field on a space it is declared to live on.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import re
from collections.abc import Mapping
from typing import Any

import numpy as np

from femnpde._mpi import collective_check, on_root
from femnpde.fem.projection import QuadratureProjector

__all__ = ['write_fields']


_FIELD_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


def write_fields(
    path: str | os.PathLike,
    problem: Any,
    fields: Mapping[str, np.ndarray],
    times: np.ndarray,
    fmt: str = "vtx",
    *,
    spaces: Mapping[str, str] | None = None,
) -> list[pathlib.Path]:
    """Write time series of fields for ParaView (collective).

    Each field lives on the space it is declared on (nothing is guessed from
    array shapes): ``spaces[name]`` is ``"V"`` (the solution space; the
    default for a field not in ``spaces``) or ``"G"`` (the source space).  A
    field on ``V`` is an array of shape ``(n_levels, n_local)`` of local
    values (owned + ghost, e.g. ``solver.states.to_array()``); a field on
    ``G`` has shape ``(n_levels, n_owned_source)`` of owned values (e.g. the
    network source).  Source values on a *quadrature* space are
    L2-projected onto continuous P1 for output.  With ``m = n_sources > 1``
    network-fed coefficients (a vector source space) a field on ``G`` holds
    the blocked values (the ``m`` values of one point consecutive, as
    :meth:`~femnpde.model.reduced.NetworkSource.values`) and is written as
    ``m`` scalar fields ``<name>_0``, ..., ``<name>_<m-1>`` (component k:
    the coefficient ``g[k]``).

    Files, with ``path`` a location without extension (a ``.bp``/``.xdmf``
    suffix is dropped), e.g. ``run / "fields"``:

    * ``fmt="vtx"``: one ADIOS2 directory per function space,
      ``<path>_<name1>-<name2>....bp`` (:class:`dolfinx.io.VTXWriter`): the
      fields that share a space (e.g. u, h and the adjoint) open in ParaView
      as one dataset with time steps; the mesh is written once, and
      higher-degree Lagrange fields are written exactly.
    * ``fmt="xdmf"``: one ``<path>.xdmf`` (+ ``<path>.h5``) holding the
      mesh and all fields at every time.  XDMF stores fields of the mesh's
      own degree only, so higher-degree fields (e.g. P2) are interpolated
      onto the Lagrange space of the mesh's degree (their values at the mesh
      nodes); use VTX for the exact P2 fields.

    Args:
        path: Output location without extension.
        problem: The :class:`~femnpde.fem.problem.ParabolicProblem`.
        fields: Field name (letters, digits, ``_ . -``) -> values.
        times: The times of the levels, shape ``(n_levels,)``.
        fmt: ``"vtx"`` or ``"xdmf"``.
        spaces: Field name -> ``"V"`` or ``"G"`` (default ``"V"``).

    Returns:
        The paths written (the ``.bp`` directories, or the ``.xdmf`` file).

    Raises:
        ValueError: Unknown format, bad names, spaces or shapes (on every rank).
    """
    import dolfinx.fem
    import dolfinx.io

    comm = problem.comm
    if fmt not in ("vtx", "xdmf"):
        raise ValueError(f"write_fields: fmt={fmt!r} is not valid; use 'vtx' or 'xdmf'")
    if fmt == "vtx" and not getattr(dolfinx, "has_adios2", False):
        raise ValueError(
            "write_fields: fmt='vtx' needs DOLFINx built with ADIOS2; use fmt='xdmf'"
        )
    if not fields:
        raise ValueError("write_fields: no fields given")
    spaces = dict(spaces or {})
    unknown = sorted(set(spaces) - set(fields))
    if unknown:
        raise ValueError(f"write_fields: spaces names fields {unknown} that are not given; fields: {list(fields)}")
    times = np.asarray(times, dtype=np.float64).reshape(-1)
    n_levels = times.shape[0]
    V, G = problem.V, problem.G
    n_local_v = V.dofmap.index_map.size_local + V.dofmap.index_map.num_ghosts
    m = G.dofmap.index_map_bs
    n_owned_g = G.dofmap.index_map.size_local * m
    expected = {"V": (n_local_v, "local values on V"),
                "G": (n_owned_g, "owned values on G" + (f", {m} per point" if m > 1 else ""))}

    error = None
    space_of: dict[str, str] = {}
    for name, arr in fields.items():
        if not isinstance(name, str) or not _FIELD_NAME.match(name):
            error = f"write_fields: field name {name!r} is not valid; use letters, digits, '_', '.', '-'"
            break
        space = spaces.get(name, "V")
        if space not in expected:
            error = f"write_fields: spaces[{name!r}]={space!r} is not valid; use 'V' or 'G'"
            break
        arr = np.asarray(arr)
        n_values, what = expected[space]
        if arr.ndim != 2 or arr.shape[0] != n_levels:
            error = f"write_fields: field {name!r} has shape {arr.shape}, expected ({n_levels}, n_dofs) for {n_levels} times"
            break
        if arr.shape[1] != n_values:
            error = (
                f"write_fields: field {name!r} on {space} has {arr.shape[1]} values per level; expected {n_values} "
                f"({what}); declare the space of a source field with spaces={{{name!r}: 'G'}}"
            )
            break
        space_of[name] = space
    collective_check(comm, error)

    path = pathlib.Path(path).absolute()
    if path.suffix in (".bp", ".xdmf", ".h5"):
        path = path.with_suffix("")
    on_root(comm, lambda: path.parent.mkdir(parents=True, exist_ok=True), "write_fields", broadcast=False)
    if comm is not None:
        comm.barrier()

    quadrature = getattr(problem, "source_kind", "lagrange") == "quadrature"
    # A vector source space: each component on the scalar space G0 of G's
    # sub-element; G0's local dof i is component k of the parent's local
    # entry components[i] + k (matched cell by cell through the dofmaps).
    parent = G0 = components = None
    if m > 1 and "G" in space_of.values():
        parent = dolfinx.fem.Function(G)
        G0 = dolfinx.fem.functionspace(problem.mesh, G.ufl_element().sub_elements[0])
        imap = G0.dofmap.index_map
        components = np.empty(imap.size_local + imap.num_ghosts, dtype=np.int64)
        components[G0.dofmap.list.reshape(-1)] = G.dofmap.list.reshape(-1).astype(np.int64) * m
    projector = (
        QuadratureProjector(problem, "femnpde_output_projection_", G0)
        if quadrature and "G" in space_of.values()
        else None
    )
    # (field, component) of every function written; component None: the field itself.
    written_as: dict[str, tuple[str, int | None]] = {}
    for name in fields:
        if space_of[name] == "G" and m > 1:
            written_as.update({f"{name}_{k}": (name, k) for k in range(m)})
        else:
            written_as[name] = (name, None)
    funcs: dict[str, Any] = {}
    for out_name, (name, k) in written_as.items():
        if space_of[name] == "V":
            funcs[out_name] = dolfinx.fem.Function(V, name=out_name)
        elif projector is not None:
            funcs[out_name] = dolfinx.fem.Function(projector.W, name=out_name)
        else:
            funcs[out_name] = dolfinx.fem.Function(G if k is None else G0, name=out_name)
    # XDMF: fields of another degree than the mesh's are written interpolated
    # onto the Lagrange space of the mesh's degree (one such space for all).
    mesh_degree = problem.mesh.geometry.cmaps[0].degree
    xdmf_funcs = dict(funcs)
    if fmt == "xdmf":
        nodal = None
        for name, f in funcs.items():
            if f.function_space.ufl_element().embedded_superdegree != mesh_degree:
                if nodal is None:
                    nodal = dolfinx.fem.functionspace(problem.mesh, ("Lagrange", mesh_degree))
                xdmf_funcs[name] = dolfinx.fem.Function(nodal, name=name)
    # VTX: one file per function space, in the order the fields were given.
    groups: dict[str, list[str]] = {}
    for out_name, (name, _) in written_as.items():
        groups.setdefault(space_of[name], []).append(out_name)

    def load(n: int) -> None:
        for name, arr in fields.items():
            values = np.asarray(arr)[n]
            if space_of[name] == "G" and m > 1:
                parent.x.array[:n_owned_g] = values
                parent.x.scatter_forward()
                n_owned_0 = G0.dofmap.index_map.size_local
                for k in range(m):
                    f = funcs[f"{name}_{k}"]
                    local = parent.x.array[components + k]
                    if projector is not None:
                        projector.project(local[:n_owned_0], f)
                    else:
                        f.x.array[:] = local
            else:
                f = funcs[name]
                if space_of[name] == "V":
                    f.x.array[:] = values
                    f.x.scatter_forward()
                elif projector is not None:
                    projector.project(values, f)
                else:
                    f.x.array[:n_owned_g] = values
                    f.x.scatter_forward()
        for out_name, f in funcs.items():
            if xdmf_funcs[out_name] is not f:
                xdmf_funcs[out_name].interpolate(f)

    written: list[pathlib.Path] = []
    try:
        if fmt == "vtx":
            written = [path.parent / f"{path.name}_{'-'.join(names)}.bp" for names in groups.values()]
            with contextlib.ExitStack() as stack:
                writers = [
                    stack.enter_context(
                        dolfinx.io.VTXWriter(
                            comm,
                            p,
                            [funcs[name] for name in names],
                            engine="BPFile",
                            mesh_policy=dolfinx.io.VTXMeshPolicy.reuse,
                        )
                    )
                    for p, names in zip(written, groups.values())
                ]
                for n in range(n_levels):
                    load(n)
                    for w in writers:
                        w.write(float(times[n]))
        else:
            target = path.with_suffix(".xdmf")
            with dolfinx.io.XDMFFile(comm, target, "w") as xdmf:
                xdmf.write_mesh(problem.mesh)
                for n in range(n_levels):
                    load(n)
                    for out_name in written_as:
                        xdmf.write_function(xdmf_funcs[out_name], float(times[n]))
            written = [target]
    finally:
        if projector is not None:
            projector.destroy()
    return written
