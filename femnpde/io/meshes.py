"""Reading, writing and describing tagged meshes (gmsh ``.msh`` and XDMF).

A mesh file holds the mesh and, optionally, cell tags (subdomains, e.g. an
observation region for :class:`femnpde.obs.misfit.L2Misfit` ``subdomain=(cell_tags,
tag)``) and facet tags (boundary parts, e.g. for :class:`femnpde.fem.problem.Dirichlet`
``where=(facet_tags, tag)``).  Two formats are read:

* ``.msh`` (gmsh): physical groups of the highest dimension become cell tags,
  those one dimension lower facet tags.  Needs the ``gmsh`` Python module; the
  file is read on rank 0 and the mesh distributed.
* ``.xdmf`` (+ its ``.h5``), as written by :func:`write_mesh_xdmf`: the grids
  ``"mesh"``, ``"cell_tags"`` and ``"facet_tags"`` (see :data:`XDMF_NAMES`).
  Needs DOLFINx only.

The meshes shipped with femnpde live in the repository's ``meshes/`` folder,
each as a ``.msh`` with its XDMF twin; ``read_mesh("meshes/l_shape")`` picks
the XDMF twin (so gmsh is not needed) and falls back to the ``.msh``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import dolfinx.fem
import dolfinx.io
import dolfinx.mesh
from mpi4py import MPI

from femnpde._mpi import bounding_box, on_root, tags_present

__all__ = [
    "MESH_SUFFIXES",
    "XDMF_NAMES",
    "MeshData",
    "MeshInfo",
    "read_mesh",
    "write_mesh_xdmf",
    "mesh_info",
    "format_mesh_info",
    "tags_present",  # re-exported from femnpde._mpi
]

#: File suffixes :func:`read_mesh` understands, in the order tried for a path without suffix.
MESH_SUFFIXES: tuple[str, ...] = (".xdmf", ".msh")

#: Names of the grids in an XDMF mesh file (mesh, cell tags, facet tags).
XDMF_NAMES: dict[str, str] = {"mesh": "mesh", "cell_tags": "cell_tags", "facet_tags": "facet_tags"}


@dataclass
class MeshData:
    """A mesh with its tags.

    Attributes:
        mesh: The (distributed) DOLFINx mesh.
        cell_tags: Cell tags (subdomains), or None if the file has none.
        facet_tags: Facet tags (boundary parts), or None if the file has none.
        path: The file the mesh was read from (None for a mesh built in memory).
    """

    mesh: dolfinx.mesh.Mesh
    cell_tags: dolfinx.mesh.MeshTags | None = None
    facet_tags: dolfinx.mesh.MeshTags | None = None
    path: Path | None = None


@dataclass
class MeshInfo:
    """Global sizes of a mesh (the same on every rank).

    Attributes:
        n_cells: Number of cells.
        n_vertices: Number of vertices.
        n_dofs: Number of dofs of the scalar Lagrange space of degree ``degree``.
        degree: The Lagrange degree ``n_dofs`` refers to.
        cell_tags: Tag value -> number of cells with it.
        facet_tags: Tag value -> number of facets with it.
        bbox: ``(min, max)`` corner coordinates, each of shape ``(gdim,)``.
        gdim: Geometric dimension.
        tdim: Topological dimension.
        cell_type: Cell type name (``"triangle"``, ``"tetrahedron"``, ...).
        path: The file the mesh came from, if any.
    """

    n_cells: int
    n_vertices: int
    n_dofs: int
    degree: int
    cell_tags: dict[int, int]
    facet_tags: dict[int, int]
    bbox: tuple[np.ndarray, np.ndarray]
    gdim: int
    tdim: int
    cell_type: str
    path: Path | None = field(default=None)


# --------------------------------------------------------------------- helpers
def _listing(folder: Path) -> str:
    """A sentence naming the mesh files in ``folder``."""
    if not folder.is_dir():
        return f"the folder {folder} does not exist"
    files = sorted(p.name for p in folder.iterdir() if p.is_file() and p.suffix in MESH_SUFFIXES)
    if not files:
        return f"there are no .msh/.xdmf files in {folder}"
    return f"meshes in {folder}: {', '.join(files)}"


def _resolve(path: Path) -> Path:
    """The mesh file ``path`` designates (see :func:`read_mesh`); raises for missing or unknown files."""
    suffixes = "/".join(MESH_SUFFIXES)
    if path.suffix in MESH_SUFFIXES:
        if path.is_file():
            return path
        if path.exists():
            raise ValueError(f"read_mesh: {path} is not a file")
        raise FileNotFoundError(f"read_mesh: mesh file {path} does not exist; {_listing(path.parent)}")
    if path.is_file():
        raise ValueError(
            f"read_mesh: {path} has the unknown suffix {path.suffix!r}; mesh files must end in {suffixes} "
            "(gmsh .msh, or XDMF as written by femnpde.io.meshes.write_mesh_xdmf)"
        )
    candidates = [path.with_name(path.name + s) for s in MESH_SUFFIXES]
    for cand in candidates:
        if cand.is_file():
            return cand
    if path.suffix:
        raise ValueError(
            f"read_mesh: {path} has the unknown suffix {path.suffix!r} (and neither "
            f"{' nor '.join(c.name for c in candidates)} exists); mesh files must end in {suffixes}"
        )
    folder = path if path.is_dir() else path.parent
    raise FileNotFoundError(
        f"read_mesh: no mesh file {path} (tried {', '.join(str(c) for c in candidates)}); {_listing(folder)}"
    )


def _gmsh_available() -> bool:
    try:
        import gmsh  # noqa: F401
    except ImportError:
        return False
    return True


def _partitioner(ghost_mode: dolfinx.mesh.GhostMode) -> Callable:
    return dolfinx.mesh.create_cell_partitioner(ghost_mode, 2)


def _read_msh(path: Path, comm: MPI.Comm, gdim: int | None, ghost_mode: dolfinx.mesh.GhostMode) -> MeshData:
    """Read a gmsh file on rank 0 and distribute it (``dolfinx.io.gmsh.read_from_msh`` with error handling).

    Unlike ``read_from_msh``, a file gmsh cannot read raises the same
    ValueError on every rank (instead of leaving the other ranks waiting),
    and a gmsh session the caller already opened is left open.
    """
    available = comm.allreduce(_gmsh_available(), op=MPI.LAND)
    if not available:
        twin = path.with_suffix(".xdmf")
        hint = f"read its XDMF twin {twin}" if twin.is_file() else "convert it to XDMF (femnpde.io.meshes.write_mesh_xdmf)"
        raise ValueError(
            f"read_mesh: reading {path} needs the gmsh Python module, which is not installed; "
            f"{hint}, or install gmsh (pip install gmsh, or the python3-gmsh package)"
        )
    import gmsh
    import dolfinx.io.gmsh

    state: dict[str, Any] = {}

    def open_model() -> int:
        state["own"] = not gmsh.isInitialized()
        if state["own"]:
            gmsh.initialize(readConfigFiles=False, interruptible=False)
        else:
            state["previous"] = gmsh.model.getCurrent()
        state["terminal"] = gmsh.option.getNumber("General.Terminal")
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add(f"femnpde.read_mesh:{path}")
        try:
            gmsh.merge(str(path))
        except Exception as err:
            raise ValueError(f"read_mesh: gmsh could not read {path}: {err}") from None
        groups = gmsh.model.getPhysicalGroups()
        if not groups:
            raise ValueError(
                f"read_mesh: {path} has no physical groups; DOLFINx reads only the elements of physical groups "
                "(add physical groups for the domain, and for the boundary parts to tag)"
            )
        tdim = max(d for d, _ in groups)
        element_types, _, _ = gmsh.model.mesh.getElements(tdim)
        if len(element_types) == 0:
            raise ValueError(f"read_mesh: {path} has no elements of dimension {tdim}")
        return tdim

    def close_model() -> None:
        if comm.rank != 0 or "own" not in state:
            return
        if not gmsh.isInitialized():
            return
        if state["own"]:
            gmsh.finalize()
            return
        gmsh.option.setNumber("General.Terminal", state["terminal"])
        gmsh.model.remove()
        if state.get("previous"):
            gmsh.model.setCurrent(state["previous"])

    try:
        tdim = on_root(comm, open_model)
        if gdim is None:
            gdim = tdim
        elif gdim < tdim:
            raise ValueError(f"read_mesh: gdim={gdim} is smaller than the dimension {tdim} of the mesh in {path}")
        try:
            data = dolfinx.io.gmsh.model_to_mesh(
                gmsh.model if comm.rank == 0 else None, comm, 0, gdim=gdim, partitioner=_partitioner(ghost_mode)
            )
        except (RuntimeError, KeyError, AssertionError) as err:
            raise ValueError(f"read_mesh: DOLFINx could not build a mesh from {path}: {err}") from err
    finally:
        close_model()
    return MeshData(data.mesh, data.cell_tags, data.facet_tags, path)


def _xdmf_grids(path: Path) -> set[str]:
    """Names of the grids in an XDMF file; checks that the mesh grid and the HDF5 files it needs exist."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as err:
        raise ValueError(f"read_mesh: {path} is not a valid XDMF file: {err}") from None
    if root.tag != "Xdmf":
        raise ValueError(f"read_mesh: {path} is not an XDMF file (root element <{root.tag}>)")
    names = {g.get("Name", "") for g in root.iter("Grid")}
    if XDMF_NAMES["mesh"] not in names:
        raise ValueError(
            f"read_mesh: {path} has no grid named {XDMF_NAMES['mesh']!r} (grids: {sorted(names)}); "
            "write it with femnpde.io.meshes.write_mesh_xdmf"
        )
    for item in root.iter("DataItem"):
        if item.get("Format") == "HDF" and item.text:
            h5 = path.parent / item.text.strip().split(":", 1)[0]
            if not h5.is_file():
                raise FileNotFoundError(f"read_mesh: the data file {h5} of {path} does not exist")
    return names


def _read_xdmf(path: Path, comm: MPI.Comm, gdim: int | None, ghost_mode: dolfinx.mesh.GhostMode) -> MeshData:
    names = on_root(comm, lambda: _xdmf_grids(path))
    try:
        with dolfinx.io.XDMFFile(comm, str(path), "r") as xdmf:
            mesh = xdmf.read_mesh(ghost_mode=ghost_mode, name=XDMF_NAMES["mesh"])
            tdim = mesh.topology.dim
            mesh.topology.create_connectivity(tdim - 1, tdim)
            cell_tags = facet_tags = None
            if XDMF_NAMES["cell_tags"] in names:
                cell_tags = xdmf.read_meshtags(mesh, name=XDMF_NAMES["cell_tags"])
            if XDMF_NAMES["facet_tags"] in names:
                facet_tags = xdmf.read_meshtags(mesh, name=XDMF_NAMES["facet_tags"])
    except RuntimeError as err:
        raise ValueError(f"read_mesh: DOLFINx could not read {path}: {err}") from err
    if gdim is not None and gdim != mesh.geometry.dim:
        raise ValueError(
            f"read_mesh: {path} holds a mesh of geometric dimension {mesh.geometry.dim}, not gdim={gdim}"
        )
    for tags, kind in ((cell_tags, "cell"), (facet_tags, "facet")):
        expected = tdim if kind == "cell" else tdim - 1
        if tags is not None and tags.dim != expected:
            raise ValueError(f"read_mesh: the {kind} tags in {path} are on entities of dimension {tags.dim}")
    return MeshData(mesh, cell_tags, facet_tags, path)


# ------------------------------------------------------------------------ API
def read_mesh(
    path: str | Path,
    comm: MPI.Comm = MPI.COMM_WORLD,
    gdim: int | None = None,
    *,
    ghost_mode: dolfinx.mesh.GhostMode = dolfinx.mesh.GhostMode.shared_facet,
) -> MeshData:
    """Read a tagged mesh from a gmsh ``.msh`` or an XDMF file (collective).

    Args:
        path: The file.  ``.msh`` is read with gmsh on rank 0 and distributed
            (as ``dolfinx.io.gmsh.read_from_msh``); ``.xdmf`` with
            ``dolfinx.io.XDMFFile`` (grids ``"mesh"``, ``"cell_tags"``,
            ``"facet_tags"``).  A path without one of these suffixes is tried
            as ``PATH.xdmf``, then ``PATH.msh``.
        comm: The communicator to distribute the mesh on (``MPI.COMM_SELF``:
            a whole copy on every rank).
        gdim: Geometric dimension.  Default: the dimension of the mesh (a
            planar gmsh mesh gets ``gdim = 2``; XDMF stores it).
        ghost_mode: Ghosting of the distributed mesh (the default is that of
            ``dolfinx.mesh.create_unit_square``).

    Returns:
        The mesh, its cell and facet tags (None when the file has none) and
        the path read.

    Raises:
        FileNotFoundError: The file (or the HDF5 data of an XDMF file) does
            not exist; the message names it and lists the meshes in its folder.
        ValueError: Unknown suffix; a ``.msh`` file without the gmsh module
            installed; a file that cannot be read (the message names it).
    """
    p = Path(path)
    resolved = on_root(comm, lambda: _resolve(p))
    if resolved.suffix == ".msh":
        return _read_msh(resolved, comm, gdim, ghost_mode)
    return _read_xdmf(resolved, comm, gdim, ghost_mode)


def write_mesh_xdmf(path: str | Path, data: MeshData) -> None:
    """Write a mesh and its tags to an XDMF file (+ ``.h5``) that :func:`read_mesh` reads (collective).

    The grids are named by :data:`XDMF_NAMES` (``"mesh"``, ``"cell_tags"``,
    ``"facet_tags"``); absent tags are not written.

    Args:
        path: The ``.xdmf`` file (the suffix is added when missing); the
            HDF5 data goes next to it with the suffix ``.h5``.
        data: The mesh and tags.
    """
    p = Path(path)
    if p.suffix == "":
        p = p.with_suffix(".xdmf")
    elif p.suffix != ".xdmf":
        raise ValueError(f"write_mesh_xdmf: {p} must end in .xdmf")
    mesh = data.mesh
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    geometry_xpath = f"/Xdmf/Domain/Grid[@Name='{XDMF_NAMES['mesh']}']/Geometry"
    renamed: list[tuple[Any, str]] = []
    try:
        for obj, name in ((mesh, XDMF_NAMES["mesh"]), (data.cell_tags, XDMF_NAMES["cell_tags"]),
                          (data.facet_tags, XDMF_NAMES["facet_tags"])):
            if obj is not None:
                renamed.append((obj, obj.name))
                obj.name = name
        with dolfinx.io.XDMFFile(mesh.comm, str(p), "w") as xdmf:
            xdmf.write_mesh(mesh)
            for tags in (data.cell_tags, data.facet_tags):
                if tags is not None:
                    xdmf.write_meshtags(tags, mesh.geometry, geometry_xpath=geometry_xpath)
    finally:
        for obj, name in renamed:
            obj.name = name


def _tag_counts(mesh: dolfinx.mesh.Mesh, tags: dolfinx.mesh.MeshTags | None) -> dict[int, int]:
    """Tag value -> number of (owned, so each counted once) entities with it, summed over ranks."""
    local: dict[int, int] = {}
    if tags is not None:
        mesh.topology.create_entities(tags.dim)
        n_owned = mesh.topology.index_map(tags.dim).size_local
        values = tags.values[tags.indices < n_owned]
        for v, c in zip(*np.unique(values, return_counts=True)):
            local[int(v)] = int(c)
    total: dict[int, int] = {}
    for counts in mesh.comm.allgather(local):
        for v, c in counts.items():
            total[v] = total.get(v, 0) + c
    return dict(sorted(total.items()))


def mesh_info(data: MeshData, degree: int = 1) -> MeshInfo:
    """Global counts and extent of a mesh (collective; the same result on every rank).

    Args:
        data: The mesh and its tags.
        degree: Lagrange degree for the dof count (>= 1).

    Returns:
        The mesh information.
    """
    if not isinstance(degree, (int, np.integer)) or degree < 1:
        raise ValueError(f"mesh_info: degree={degree!r} is not valid; use an integer >= 1")
    mesh = data.mesh
    comm = mesh.comm
    tdim, gdim = mesh.topology.dim, mesh.geometry.dim
    n_cells = mesh.topology.index_map(tdim).size_global
    mesh.topology.create_entities(0)
    n_vertices = mesh.topology.index_map(0).size_global
    V = dolfinx.fem.functionspace(mesh, ("Lagrange", int(degree)))
    n_dofs = V.dofmap.index_map.size_global * V.dofmap.index_map_bs
    n_nodes = mesh.geometry.index_map().size_local
    x = mesh.geometry.x[:n_nodes, :gdim]
    bmin, bmax = bounding_box(comm, x)
    return MeshInfo(
        n_cells=int(n_cells),
        n_vertices=int(n_vertices),
        n_dofs=int(n_dofs),
        degree=int(degree),
        cell_tags=_tag_counts(mesh, data.cell_tags),
        facet_tags=_tag_counts(mesh, data.facet_tags),
        bbox=(bmin, bmax),
        gdim=int(gdim),
        tdim=int(tdim),
        cell_type=mesh.topology.cell_type.name,
        path=data.path,
    )


def format_mesh_info(info: MeshInfo) -> str:
    """A short multi-line human-readable summary of :func:`mesh_info`."""

    def fmt_tags(tags: dict[int, int]) -> str:
        return ", ".join(f"{t}: {n}" for t, n in tags.items()) if tags else "none"

    def fmt_point(p: np.ndarray) -> str:
        return "(" + ", ".join(f"{v:.6g}" for v in p) + ")"

    lines = []
    if info.path is not None:
        lines.append(f"mesh:       {info.path}")
    lines += [
        f"cells:      {info.n_cells} ({info.cell_type}; tdim {info.tdim}, gdim {info.gdim})",
        f"vertices:   {info.n_vertices}",
        f"P{info.degree} dofs:    {info.n_dofs}",
        f"bbox:       {fmt_point(info.bbox[0])} - {fmt_point(info.bbox[1])}",
        f"cell tags:  {fmt_tags(info.cell_tags)}",
        f"facet tags: {fmt_tags(info.facet_tags)}",
    ]
    return "\n".join(lines)
