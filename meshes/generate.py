"""(Re)generate the meshes of this folder with the gmsh Python API.

Every mesh is built from its gmsh geometry (OpenCASCADE kernel), with
physical groups for the boundary parts (facet tags) and subdomains (cell
tags), written as ``NAME.msh`` (MSH 4.1, ASCII) and read back with
:func:`femnpde.io.meshes.read_mesh` to write its XDMF twin ``NAME.xdmf`` +
``NAME.h5`` (mesh ``"mesh"``, cell tags ``"cell_tags"``, facet tags
``"facet_tags"``), which loads without gmsh.  The tags are documented in
``meshes/README.md``.

Usage (from the repository root)::

    scripts/env-run python3 meshes/generate.py              # all meshes
    scripts/env-run python3 meshes/generate.py l_shape      # some of them
    scripts/env-run python3 meshes/generate.py --out-dir .scratch/meshes

Generation is serial and deterministic for a given gmsh version (one
thread, fixed random seed).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

__all__ = [
    "MESHES",
    "build_l_shape",
    "build_annulus_holes",
    "build_channel_obstacle",
    "build_box_cavity",
    "generate",
    "main",
]

HERE = Path(__file__).resolve().parent


def _com(dim: int, tag: int):
    """Centre of mass of an OCC entity (x, y, z)."""
    import gmsh

    return gmsh.model.occ.getCenterOfMass(dim, tag)


def _boundary(dim: int, tags: Sequence[int]) -> list[int]:
    """Tags of the (dim-1)-entities on the outer boundary of the union of ``tags``."""
    import gmsh

    bnd = gmsh.model.getBoundary([(dim, t) for t in tags], combined=True, oriented=False, recursive=False)
    return sorted({abs(t) for _, t in bnd})


def _physical(dim: int, tags: Sequence[int], tag: int, name: str) -> None:
    import gmsh

    if not tags:
        raise RuntimeError(f"physical group {name!r} (dim {dim}, tag {tag}) would be empty")
    gmsh.model.addPhysicalGroup(dim, list(tags), tag, name=name)


def _threshold_field(
    entities: dict[str, list[int]], size_min: float, size_max: float, dist_min: float, dist_max: float
) -> None:
    """Background mesh size: ``size_min`` within ``dist_min`` of ``entities``, growing to ``size_max`` at ``dist_max``.

    Args:
        entities: Distance field inputs, e.g. ``{"CurvesList": [...]}``.
        size_min: Mesh size near the entities.
        size_max: Mesh size far from them.
        dist_min: Distance up to which ``size_min`` applies.
        dist_max: Distance from which ``size_max`` applies.
    """
    import gmsh

    f = gmsh.model.mesh.field
    d = f.add("Distance")
    for key, val in entities.items():
        f.setNumbers(d, key, val)
    if "CurvesList" in entities:
        f.setNumber(d, "Sampling", 100)
    t = f.add("Threshold")
    f.setNumber(t, "InField", d)
    f.setNumber(t, "SizeMin", size_min)
    f.setNumber(t, "SizeMax", size_max)
    f.setNumber(t, "DistMin", dist_min)
    f.setNumber(t, "DistMax", dist_max)
    f.setAsBackgroundMesh(t)
    gmsh.option.setNumber("Mesh.MeshSizeFromPoints", 0)
    gmsh.option.setNumber("Mesh.MeshSizeFromCurvature", 0)
    gmsh.option.setNumber("Mesh.MeshSizeExtendFromBoundary", 0)


def build_l_shape() -> int:
    """L-shaped domain [0,1]² minus [0.5,1]², refined at the re-entrant corner.

    Facet tags: 1 outer walls, 2 the two re-entrant edges.  Cell tags: 2 the
    observation square [0,0.25]², 1 the rest of the domain.

    Returns:
        The topological dimension (2).
    """
    import gmsh

    occ = gmsh.model.occ
    square = occ.addRectangle(0, 0, 0, 1, 1)
    notch = occ.addRectangle(0.5, 0.5, 0, 0.5, 0.5)
    (ell, _) = occ.cut([(2, square)], [(2, notch)])
    obs = occ.addRectangle(0, 0, 0, 0.25, 0.25)
    occ.fragment(ell, [(2, obs)])
    occ.synchronize()
    surfaces = [t for _, t in gmsh.model.getEntities(2)]
    in_obs = [s for s in surfaces if max(_com(2, s)[:2]) < 0.25]
    _physical(2, [s for s in surfaces if s not in in_obs], 1, "domain")
    _physical(2, in_obs, 2, "observation")
    curves = _boundary(2, surfaces)
    reentrant = []
    for c in curves:
        x, y, _ = _com(1, c)
        if (abs(x - 0.5) < 1e-9 and y > 0.5) or (abs(y - 0.5) < 1e-9 and x > 0.5):
            reentrant.append(c)
    _physical(1, [c for c in curves if c not in reentrant], 1, "outer_walls")
    _physical(1, reentrant, 2, "reentrant_edges")
    corner = [t for _, t in gmsh.model.getEntitiesInBoundingBox(0.49, 0.49, -1, 0.51, 0.51, 1, 0)]
    _threshold_field({"PointsList": corner}, 0.012, 0.045, 0.02, 0.3)
    return 2


def build_annulus_holes() -> int:
    """Annulus 0.3 < r < 1 with two holes (radius 0.12 at (±0.6, 0)) and a sensor ring 0.8 < r < 0.9.

    Facet tags: 1 outer circle, 2 inner circle, 3 the two holes.  Cell tags:
    2 the sensor ring, 1 the rest.

    Returns:
        The topological dimension (2).
    """
    import gmsh

    occ = gmsh.model.occ
    disk = occ.addDisk(0, 0, 0, 1.0, 1.0)
    holes = [occ.addDisk(0, 0, 0, 0.3, 0.3), occ.addDisk(0.6, 0, 0, 0.12, 0.12), occ.addDisk(-0.6, 0, 0, 0.12, 0.12)]
    (body, _) = occ.cut([(2, disk)], [(2, h) for h in holes])
    ring_out = occ.addDisk(0, 0, 0, 0.9, 0.9)
    ring_in = occ.addDisk(0, 0, 0, 0.8, 0.8)
    (ring, _) = occ.cut([(2, ring_out)], [(2, ring_in)])
    occ.fragment(body, ring)
    occ.synchronize()
    surfaces = [t for _, t in gmsh.model.getEntities(2)]
    in_ring = []
    for s in surfaces:
        # The ring's centre of mass is the origin; tell it apart by its area.
        if abs(occ.getMass(2, s) - 3.141592653589793 * (0.9**2 - 0.8**2)) < 1e-6:
            in_ring.append(s)
    _physical(2, [s for s in surfaces if s not in in_ring], 1, "domain")
    _physical(2, in_ring, 2, "sensor_ring")
    curves = _boundary(2, surfaces)
    outer, inner, hole = [], [], []
    for c in curves:
        xmin, ymin, _, xmax, ymax, _ = gmsh.model.getBoundingBox(1, c)
        radius = max(xmax - xmin, ymax - ymin) / 2
        if radius > 0.95:
            outer.append(c)
        elif abs(radius - 0.3) < 1e-3:
            inner.append(c)
        else:
            hole.append(c)
    _physical(1, outer, 1, "outer_circle")
    _physical(1, inner, 2, "inner_circle")
    _physical(1, hole, 3, "holes")
    _threshold_field({"CurvesList": inner + hole}, 0.035, 0.075, 0.02, 0.25)
    return 2


def build_channel_obstacle() -> int:
    """DFG-benchmark-like channel [0,2.2]×[0,0.41] with a disk obstacle (centre (0.2,0.2), radius 0.05).

    Facet tags: 1 inflow (x = 0), 2 outflow (x = 2.2), 3 walls (y = 0, 0.41),
    4 obstacle.  Cell tags: 2 the wake box [0.3,1.0]×[0.1,0.31], 1 the rest.

    Returns:
        The topological dimension (2).
    """
    import gmsh

    occ = gmsh.model.occ
    L, H, c, r = 2.2, 0.41, (0.2, 0.2), 0.05
    channel = occ.addRectangle(0, 0, 0, L, H)
    obstacle = occ.addDisk(c[0], c[1], 0, r, r)
    (body, _) = occ.cut([(2, channel)], [(2, obstacle)])
    wake = occ.addRectangle(0.3, 0.1, 0, 0.7, 0.21)
    occ.fragment(body, [(2, wake)])
    occ.synchronize()
    surfaces = [t for _, t in gmsh.model.getEntities(2)]
    in_wake = []
    for s in surfaces:
        xmin, ymin, _, xmax, ymax, _ = gmsh.model.getBoundingBox(2, s)
        if xmin > 0.3 - 1e-6 and xmax < 1.0 + 1e-6 and ymin > 0.1 - 1e-6 and ymax < 0.31 + 1e-6:
            in_wake.append(s)
    _physical(2, [s for s in surfaces if s not in in_wake], 1, "fluid")
    _physical(2, in_wake, 2, "wake")
    inflow, outflow, walls, obst = [], [], [], []
    for cv in _boundary(2, surfaces):
        x, y, _ = _com(1, cv)
        if abs(x) < 1e-9:
            inflow.append(cv)
        elif abs(x - L) < 1e-9:
            outflow.append(cv)
        elif abs(y) < 1e-9 or abs(y - H) < 1e-9:
            walls.append(cv)
        else:
            obst.append(cv)
    _physical(1, inflow, 1, "inflow")
    _physical(1, outflow, 2, "outflow")
    _physical(1, walls, 3, "walls")
    _physical(1, obst, 4, "obstacle")
    _threshold_field({"CurvesList": obst}, 0.012, 0.045, 0.01, 0.4)
    return 2


def build_box_cavity() -> int:
    """Unit cube with a spherical cavity (centre (0.5,0.5,0.5), radius 0.2).

    Facet tags: 1 the six outer faces, 2 the cavity surface.  Cell tags: 2 the
    octant [0,0.5]³ (minus the cavity), 1 the rest.

    Returns:
        The topological dimension (3).
    """
    import gmsh

    occ = gmsh.model.occ
    box = occ.addBox(0, 0, 0, 1, 1, 1)
    ball = occ.addSphere(0.5, 0.5, 0.5, 0.2)
    # Turn the sphere's poles and seam away from the octant's cutting planes
    # (cutting through them leaves degenerate curves gmsh cannot mesh).
    occ.rotate([(3, ball)], 0.5, 0.5, 0.5, 1, 1, 0, 0.6)
    occ.rotate([(3, ball)], 0.5, 0.5, 0.5, 0, 0, 1, 0.3)
    (body, _) = occ.cut([(3, box)], [(3, ball)])
    octant = occ.addBox(0, 0, 0, 0.5, 0.5, 0.5)
    (pieces, _) = occ.fragment(body, [(3, octant)])
    # The octant box also covers an eighth of the cavity: drop that piece.
    inside = [p for p in pieces if occ.getMass(*p) < 0.01]  # the others weigh ~0.12 and ~0.84
    occ.remove(inside, recursive=True)
    occ.synchronize()
    volumes = [t for _, t in gmsh.model.getEntities(3)]
    in_octant = []
    for v in volumes:
        if max(_com(3, v)) < 0.5:
            in_octant.append(v)
    _physical(3, [v for v in volumes if v not in in_octant], 1, "solid")
    _physical(3, in_octant, 2, "octant")
    outer, cavity = [], []
    for s in _boundary(3, volumes):
        xmin, ymin, zmin, xmax, ymax, zmax = gmsh.model.getBoundingBox(2, s)
        lo, hi = min(xmin, ymin, zmin), max(xmax, ymax, zmax)
        # A face of the cube lies in a coordinate plane x_i = 0 or 1.
        on_face = any(
            (abs(a) < 1e-6 and abs(b) < 1e-6) or (abs(a - 1) < 1e-6 and abs(b - 1) < 1e-6)
            for a, b in ((xmin, xmax), (ymin, ymax), (zmin, zmax))
        )
        (outer if on_face and lo > -1e-6 and hi < 1 + 1e-6 else cavity).append(s)
    _physical(2, outer, 1, "outer_faces")
    _physical(2, cavity, 2, "cavity")
    _threshold_field({"SurfacesList": cavity}, 0.075, 0.17, 0.02, 0.35)
    return 3


#: Mesh name -> builder (adds the geometry and physical groups to the current gmsh model, returns its dimension).
MESHES: dict[str, Callable[[], int]] = {
    "l_shape": build_l_shape,
    "annulus_holes": build_annulus_holes,
    "channel_obstacle": build_channel_obstacle,
    "box_cavity": build_box_cavity,
}


def generate(name: str, out_dir: Path = HERE, xdmf: bool = True) -> Path:
    """Build mesh ``name`` and write ``out_dir/NAME.msh`` (and its XDMF twin).

    Args:
        name: One of :data:`MESHES`.
        out_dir: Output folder.
        xdmf: Also write ``NAME.xdmf`` / ``NAME.h5`` (needs DOLFINx).

    Returns:
        The path of the ``.msh`` file.
    """
    import gmsh

    if name not in MESHES:
        raise ValueError(f"unknown mesh {name!r}; known meshes: {', '.join(MESHES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    msh = out_dir / f"{name}.msh"
    gmsh.initialize(readConfigFiles=False, interruptible=False)
    try:
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.option.setNumber("General.NumThreads", 1)
        gmsh.option.setNumber("Mesh.RandomSeed", 1)
        gmsh.option.setNumber("Mesh.MshFileVersion", 4.1)
        gmsh.option.setNumber("Mesh.Binary", 0)
        gmsh.option.setNumber("Mesh.SaveAll", 0)  # only the elements of physical groups
        gmsh.model.add(name)
        dim = MESHES[name]()
        gmsh.option.setNumber("Mesh.Algorithm", 6)
        gmsh.option.setNumber("Mesh.Algorithm3D", 1)
        gmsh.model.mesh.generate(dim)
        gmsh.write(str(msh))
    finally:
        gmsh.finalize()
    if xdmf:
        from mpi4py import MPI

        from femnpde.io.meshes import read_mesh, write_mesh_xdmf

        data = read_mesh(msh, MPI.COMM_SELF)
        write_mesh_xdmf(out_dir / f"{name}.xdmf", data)
    return msh


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: regenerate the named meshes (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"meshes to build (default: all of {', '.join(MESHES)})")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="output folder (default: this folder)")
    parser.add_argument("--no-xdmf", action="store_true", help="write only the .msh files")
    args = parser.parse_args(argv)
    names = args.names or list(MESHES)
    unknown = [n for n in names if n not in MESHES]
    if unknown:
        parser.error(f"unknown mesh(es) {', '.join(unknown)}; known: {', '.join(MESHES)}")
    root = str(HERE.parent)
    if root not in sys.path:  # run as a script from a checkout: make femnpde importable
        sys.path.insert(0, root)
    for name in names:
        path = generate(name, args.out_dir, xdmf=not args.no_xdmf)
        print(f"wrote {path}" + (" (+ .xdmf/.h5)" if not args.no_xdmf else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
