"""The mesh collection in meshes/ and femnpde.io.meshes: loading, tags, sizes, errors, PDE solves, gradients."""

import math
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
import ufl
import dolfinx.fem
from mpi4py import MPI

from femnpde.io.meshes import (
    MeshData,
    format_mesh_info,
    mesh_info,
    read_mesh,
    tags_present,
    write_mesh_xdmf,
)
from femnpde.obs.misfit import L2Misfit
from femnpde.model.network import ShallowNetwork
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, heat
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.fem.solver import ThetaSolver
from femnpde.model.verification import taylor_test
from conftest import write_on_root

MESH_DIR = Path(__file__).resolve().parent.parent / "meshes"

try:
    import gmsh  # noqa: F401

    HAVE_GMSH = True
except ImportError:
    HAVE_GMSH = False

PI = math.pi
#: The documented tags of each mesh (meshes/README.md) with the measure of
#: every tagged part (area/volume of cell tags, length/area of facet tags),
#: the relative tolerance for those measures (curved boundaries are polygonal),
#: and two facet tags used for Dirichlet conditions ("hot" = 1, "cold" = 0).
EXPECTED = {
    "l_shape": dict(
        gdim=2,
        cell_measures={1: 0.75 - 0.0625, 2: 0.0625},
        facet_measures={1: 3.0, 2: 1.0},
        rtol=1e-10,
        hot=2,
        cold=1,
    ),
    "annulus_holes": dict(
        gdim=2,
        cell_measures={1: PI * (1 - 0.3**2 - 2 * 0.12**2 - (0.9**2 - 0.8**2)), 2: PI * (0.9**2 - 0.8**2)},
        facet_measures={1: 2 * PI, 2: 2 * PI * 0.3, 3: 2 * 2 * PI * 0.12},
        rtol=1e-2,
        hot=2,
        cold=1,
    ),
    "channel_obstacle": dict(
        gdim=2,
        cell_measures={1: 2.2 * 0.41 - PI * 0.05**2 - 0.7 * 0.21, 2: 0.7 * 0.21},
        facet_measures={1: 0.41, 2: 0.41, 3: 4.4, 4: 2 * PI * 0.05},
        rtol=1e-2,
        hot=1,
        cold=3,
    ),
    "box_cavity": dict(
        gdim=3,
        cell_measures={1: 1 - 4 / 3 * PI * 0.2**3 * 7 / 8 - 0.125, 2: 0.125 - 4 / 3 * PI * 0.2**3 / 8},
        facet_measures={1: 6.0, 2: 4 * PI * 0.2**2},
        rtol=4e-2,
        hot=2,
        cold=1,
    ),
}
NAMES = list(EXPECTED)
NAMES_2D = [n for n in NAMES if EXPECTED[n]["gdim"] == 2]
SUFFIXES = [".xdmf", pytest.param(".msh", marks=pytest.mark.skipif(not HAVE_GMSH, reason="gmsh not installed"))]


def _measure(data: MeshData, kind: str, tag: int) -> float:
    tags = data.cell_tags if kind == "dx" else data.facet_tags
    measure = ufl.Measure(kind, domain=data.mesh, subdomain_data=tags)(tag)
    one = dolfinx.fem.Constant(data.mesh, 1.0)
    local = dolfinx.fem.assemble_scalar(dolfinx.fem.form(one * measure))
    return data.mesh.comm.allreduce(local, op=MPI.SUM)


# ---------------------------------------------------------------- collection
@pytest.mark.serial
def test_collection_is_complete_and_documented():
    xdmf = {p.stem for p in MESH_DIR.glob("*.xdmf")}
    msh = {p.stem for p in MESH_DIR.glob("*.msh")}
    assert xdmf == msh == set(EXPECTED)
    for name in EXPECTED:
        assert (MESH_DIR / f"{name}.h5").is_file()
    readme = (MESH_DIR / "README.md").read_text()
    for name in EXPECTED:
        assert f"`{name}`" in readme
    total = sum(p.stat().st_size for p in MESH_DIR.iterdir() if p.is_file())
    assert total < 3 * 2**20


@pytest.mark.parametrize("suffix", SUFFIXES)
@pytest.mark.parametrize("name", NAMES)
def test_mesh_loads_with_documented_tags(name, suffix):
    exp = EXPECTED[name]
    data = read_mesh(MESH_DIR / f"{name}{suffix}")
    comm = data.mesh.comm
    assert data.path == MESH_DIR / f"{name}{suffix}"
    assert data.mesh.geometry.dim == exp["gdim"] == data.mesh.topology.dim
    assert data.cell_tags is not None and data.facet_tags is not None
    assert data.cell_tags.dim == exp["gdim"] and data.facet_tags.dim == exp["gdim"] - 1
    assert tags_present(data.cell_tags, comm) == sorted(exp["cell_measures"])
    assert tags_present(data.facet_tags, comm) == sorted(exp["facet_measures"])
    for tag, value in exp["cell_measures"].items():
        assert _measure(data, "dx", tag) == pytest.approx(value, rel=exp["rtol"]), ("cell tag", tag)
    for tag, value in exp["facet_measures"].items():
        assert _measure(data, "ds", tag) == pytest.approx(value, rel=exp["rtol"]), ("facet tag", tag)
    # Every cell is tagged (1 and 2 partition the domain); facet tags are on the boundary only.
    info = mesh_info(data)
    assert sum(info.cell_tags.values()) == info.n_cells


def test_path_without_suffix_prefers_xdmf():
    data = read_mesh(MESH_DIR / "l_shape")
    assert data.path == MESH_DIR / "l_shape.xdmf"


@pytest.mark.parametrize("name", NAMES)
def test_mesh_info_is_rank_independent(name):
    comms = (MPI.COMM_SELF, MPI.COMM_WORLD)
    infos = [mesh_info(read_mesh(MESH_DIR / f"{name}.xdmf", comm), degree=2) for comm in comms]
    if HAVE_GMSH:
        infos.append(mesh_info(read_mesh(MESH_DIR / f"{name}.msh", MPI.COMM_WORLD), degree=2))
    ref = infos[0]
    assert 300 <= ref.n_cells <= 5000
    assert ref.gdim == EXPECTED[name]["gdim"]
    assert ref.cell_type == ("triangle" if ref.gdim == 2 else "tetrahedron")
    assert ref.n_dofs > ref.n_vertices  # P2
    for info in infos[1:]:
        assert (info.n_cells, info.n_vertices, info.n_dofs) == (ref.n_cells, ref.n_vertices, ref.n_dofs)
        assert info.cell_tags == ref.cell_tags and info.facet_tags == ref.facet_tags
        np.testing.assert_allclose(info.bbox[0], ref.bbox[0])
        np.testing.assert_allclose(info.bbox[1], ref.bbox[1])
    # The same on every rank.
    gathered = MPI.COMM_WORLD.allgather((infos[-1].n_cells, infos[-1].cell_tags, infos[-1].facet_tags))
    assert all(g == gathered[0] for g in gathered)
    text = format_mesh_info(ref)
    assert str(ref.n_cells) in text and f"{name}.xdmf" in text


def test_tags_present_without_tags():
    assert tags_present(None, MPI.COMM_WORLD) == []


def test_write_xdmf_round_trip(shared_tmp_path):
    data = read_mesh(MESH_DIR / "channel_obstacle.xdmf")
    data.cell_tags.name = "my_cells"
    out = shared_tmp_path / "copy"
    write_mesh_xdmf(out, data)
    assert data.cell_tags.name == "my_cells"  # names are restored
    back = read_mesh(out.with_suffix(".xdmf"))
    a, b = mesh_info(data), mesh_info(back)
    assert (a.n_cells, a.n_vertices, a.cell_tags, a.facet_tags) == (b.n_cells, b.n_vertices, b.cell_tags, b.facet_tags)
    no_tags = shared_tmp_path / "bare.xdmf"
    write_mesh_xdmf(no_tags, MeshData(data.mesh))
    bare = read_mesh(no_tags)
    assert bare.cell_tags is None and bare.facet_tags is None
    with pytest.raises(ValueError, match=r"\.xdmf"):
        write_mesh_xdmf(shared_tmp_path / "copy.vtk", data)


# -------------------------------------------------------------------- errors
def test_missing_file_is_named_with_the_folder_listing():
    with pytest.raises(FileNotFoundError, match=r"nope\.xdmf.*l_shape\.xdmf"):
        read_mesh(MESH_DIR / "nope.xdmf")
    with pytest.raises(FileNotFoundError, match=r"nope\.xdmf.*nope\.msh"):
        read_mesh(MESH_DIR / "nope")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        read_mesh(MESH_DIR / "no_such_folder" / "mesh.msh")


@pytest.mark.serial
def test_unknown_suffix_lists_supported_formats():
    with pytest.raises(ValueError, match=r"README\.md.*\.xdmf/\.msh"):
        read_mesh(MESH_DIR / "README.md")
    with pytest.raises(ValueError, match=r"mesh\.vtk.*\.xdmf/\.msh"):
        read_mesh(MESH_DIR / "mesh.vtk")


def test_corrupt_xdmf_is_named(shared_tmp_path):
    bad = shared_tmp_path / "broken.xdmf"
    write_on_root(bad, "<Xdmf><Domain><Grid Name='mesh'>")
    with pytest.raises(ValueError, match=r"broken\.xdmf"):
        read_mesh(bad)
    other = shared_tmp_path / "other.xdmf"
    write_on_root(other, "<Xdmf><Domain><Grid Name='something'/></Domain></Xdmf>")
    with pytest.raises(ValueError, match=r"other\.xdmf.*no grid named 'mesh'"):
        read_mesh(other)
    # An XDMF file whose HDF5 data is missing.
    orphan = shared_tmp_path / "orphan.xdmf"
    if MPI.COMM_WORLD.rank == 0:
        shutil.copy(MESH_DIR / "l_shape.xdmf", orphan)
    MPI.COMM_WORLD.Barrier()
    with pytest.raises(FileNotFoundError, match=r"l_shape\.h5.*orphan\.xdmf"):
        read_mesh(orphan)


@pytest.mark.skipif(not HAVE_GMSH, reason="gmsh not installed")
def test_corrupt_msh_is_named(shared_tmp_path):
    bad = shared_tmp_path / "garbage.msh"
    write_on_root(bad, "this is not\na gmsh file\n")
    with pytest.raises(ValueError, match=r"garbage\.msh"):
        read_mesh(bad)
    truncated = shared_tmp_path / "truncated.msh"
    text = (MESH_DIR / "l_shape.msh").read_text()
    write_on_root(truncated, text[: len(text) // 3])
    with pytest.raises(ValueError, match=r"truncated\.msh"):
        read_mesh(truncated)
    # Reading still works afterwards (gmsh was left in a clean state).
    assert read_mesh(MESH_DIR / "l_shape.msh").mesh.topology.dim == 2


@pytest.mark.skipif(not HAVE_GMSH, reason="gmsh not installed")
def test_msh_keeps_an_open_gmsh_session():
    import gmsh

    if MPI.COMM_WORLD.rank == 0:
        gmsh.initialize(readConfigFiles=False, interruptible=False)
        gmsh.option.setNumber("General.Terminal", 0)
        gmsh.model.add("users_model")
    try:
        read_mesh(MESH_DIR / "l_shape.msh")
        if MPI.COMM_WORLD.rank == 0:
            assert gmsh.isInitialized() and gmsh.model.getCurrent() == "users_model"
    finally:
        if MPI.COMM_WORLD.rank == 0:
            gmsh.finalize()


def test_msh_without_gmsh_points_to_the_xdmf_twin(monkeypatch):
    monkeypatch.setitem(sys.modules, "gmsh", None)  # `import gmsh` now raises ImportError
    with pytest.raises(ValueError, match=r"l_shape\.msh.*gmsh.*l_shape\.xdmf"):
        read_mesh(MESH_DIR / "l_shape.msh")
    # A path without suffix does not need gmsh.
    assert read_mesh(MESH_DIR / "l_shape").path.suffix == ".xdmf"


# ------------------------------------------------------------- PDE on meshes
@pytest.mark.parametrize("name", NAMES_2D)
def test_heat_with_dirichlet_on_facet_tags(name):
    exp = EXPECTED[name]
    data = read_mesh(MESH_DIR / f"{name}.xdmf")
    problem = ParabolicProblem(
        data.mesh,
        heat(0.05),
        time=TimeGrid(0.1, 2),
        dirichlet=[Dirichlet((data.facet_tags, exp["hot"]), 1.0), Dirichlet((data.facet_tags, exp["cold"]), 0.0)],
    )
    solver = ThetaSolver(problem, f"mesh_heat_{name}_")
    states = solver.forward(np.zeros((3, problem.n_owned_source)))
    u = states.load(2)[: problem.n_owned]
    assert np.all(np.isfinite(u))
    V = problem.V
    fdim = data.mesh.topology.dim - 1
    hot = dolfinx.fem.locate_dofs_topological(V, fdim, data.facet_tags.find(exp["hot"]))
    cold = dolfinx.fem.locate_dofs_topological(V, fdim, data.facet_tags.find(exp["cold"]))
    cold = np.setdiff1d(cold, hot)  # dofs where the two parts meet take the last condition's value
    n = problem.n_owned
    np.testing.assert_allclose(states.load(2)[cold[cold < n]], 0.0, atol=1e-12)
    hot_only = np.setdiff1d(hot, dolfinx.fem.locate_dofs_topological(V, fdim, data.facet_tags.find(exp["cold"])))
    np.testing.assert_allclose(states.load(2)[hot_only[hot_only < n]], 1.0, atol=1e-12)
    # Heat has entered the domain.
    interior = np.setdiff1d(np.arange(n), np.concatenate([hot, cold]))
    local_max = float(np.max(u[interior], initial=0.0))
    assert MPI.COMM_WORLD.allreduce(local_max, op=MPI.MAX) > 0.01


@pytest.mark.parametrize("name", NAMES)
def test_gradcheck_on_mesh(name):
    """Taylor test of the exact discrete adjoint gradient: loss on cell tag 2, Dirichlet on a facet tag."""
    exp = EXPECTED[name]
    data = read_mesh(MESH_DIR / f"{name}.xdmf")
    gdim = data.mesh.geometry.dim
    problem = ParabolicProblem(
        data.mesh,
        heat(0.05),
        time=TimeGrid(0.2, 3),
        theta=0.5,
        initial_condition=lambda x: 0.2 * np.sin(2 * x[0]) * np.cos(3 * x[1]),
        dirichlet=[Dirichlet((data.facet_tags, exp["cold"]), 0.0)],
    )
    solver = ThetaSolver(problem, f"mesh_taylor_{name}_")

    gdim = problem.mesh.geometry.dim

    def target(t, x):  # x of shape (3, npts)
        return (1 + t) * np.exp(-np.sum((x[:gdim] - 0.3) ** 2, axis=0)) + 0.5 * x[1]

    gstar = FunctionSource(problem, target).values()
    observed = solver.forward(gstar).array[:, : problem.n_owned].copy()
    misfit = L2Misfit(problem, observed, subdomain=(data.cell_tags, 2))
    net = ShallowNetwork(5, gdim, seed=7)
    rf = ReducedFunctional(solver, NetworkSource(problem, net), misfit)
    theta0 = net.params.copy()
    dtheta = np.random.default_rng(11).standard_normal(theta0.size)
    result = taylor_test(rf, theta0, dtheta, n_steps=4)
    assert result.gradient_norm > 0
    assert np.all(result.rates > 1.9) and np.all(result.rates < 2.1), result.rates
