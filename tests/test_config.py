"""Tests for femnpde.app.config: schema validation, overrides, TOML round trip, build_run."""

from __future__ import annotations

import copy
import pathlib
import tomllib

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.config import DEFAULTS, ConfigError, Run, build_run, dump_config, load_config, validate

DEMOS = pathlib.Path(__file__).resolve().parent.parent / "demos"
DEMO_FILES = ["paper_heat.toml", "paper_allen_cahn.toml", "quickstart.toml"]

#: A tiny run: 4 x 8 mesh, 4 time steps, 6 neurons.
TINY = {"mesh": {"cells": [4, 8]}, "time": {"n_steps": 4}, "network": {"neurons": 6}}


def _tiny(**sections) -> dict:
    cfg = copy.deepcopy(TINY)
    for name, table in sections.items():
        if isinstance(table, dict):
            cfg.setdefault(name, {}).update(table)
        else:
            cfg[name] = table
    return cfg


def _write(path: pathlib.Path, text: str) -> pathlib.Path:
    path.write_text(text, encoding="utf-8")
    return path


def _raises(cfg, *fragments: str) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        validate(cfg)
    for frag in fragments:
        assert frag in str(info.value), (frag, str(info.value))
    return info.value


def _global_sum_of_squares(run: Run) -> float:
    return run.problem.comm.allreduce(float(np.sum(run.misfit.data**2)), op=MPI.SUM)


# ---------------------------------------------------------------------------
# defaults and demos
# ---------------------------------------------------------------------------


@pytest.mark.serial
def test_defaults_validate_to_themselves():
    before = copy.deepcopy(DEFAULTS)
    assert validate({}) == DEFAULTS
    assert validate(DEFAULTS) == DEFAULTS
    assert DEFAULTS == before
    resolved = validate({})
    resolved["time"]["T"] = 3.0
    assert DEFAULTS["time"]["T"] == 1.0  # no shared state


@pytest.mark.serial
def test_validate_does_not_modify_its_input():
    cfg = {"time": {"T": 2}, "mesh": {"cells": [2, 2]}}
    snapshot = copy.deepcopy(cfg)
    out = validate(cfg)
    assert cfg == snapshot
    assert out["time"]["T"] == 2.0 and isinstance(out["time"]["T"], float)


@pytest.mark.serial
@pytest.mark.parametrize("name", DEMO_FILES)
def test_demo_files_load(name):
    cfg = load_config(DEMOS / name)
    assert validate(cfg) == cfg
    assert cfg["mesh"]["kind"] == "rectangle"
    assert tomllib.loads(dump_config(cfg)) == cfg


@pytest.mark.serial
def test_demo_contents():
    heat = load_config(DEMOS / "paper_heat.toml")
    assert heat["pde"]["preset"] == "heat" and heat["pde"]["gamma"] == 0.01
    assert heat["data"]["target"] == "difficult" and heat["network"]["neurons"] == 100
    assert heat["run"]["iterations"] == 5000 and heat["time"]["n_steps"] == 64
    assert heat["optimizer"]["kind"] == "adam" and heat["optimizer"]["scale_lr"]
    sch = heat["optimizer"]["schedule"]
    assert (sch["kind"], sch["factor"], sch["patience"], sch["threshold"], sch["min_lr"]) == (
        "plateau", 0.95, 100, 1e-8, 1e-8,
    )
    ac = load_config(DEMOS / "paper_allen_cahn.toml")
    assert ac["pde"]["preset"] == "allen-cahn" and ac["pde"]["epsilon"] == 0.32
    assert ac["network"]["neurons"] == 100
    quick = load_config(DEMOS / "quickstart.toml")
    assert quick["pde"]["preset"] == "heat" and quick["run"]["iterations"] <= 300


@pytest.mark.serial
def test_dependent_defaults():
    box = validate({"mesh": {"kind": "box"}})["mesh"]
    assert box["cell_type"] == "tetrahedron" and len(box["lower"]) == 3 and len(box["cells"]) == 3
    quad = validate({"pde": {"source": "quadrature", "degree": 2}})["pde"]
    assert quad["source_degree"] == 6
    assert validate({"pde": {"degree": 2}})["pde"]["source_degree"] == 2
    cfg = validate({"time": {"T": 2.0}, "run": {"iterations": 7}})
    assert cfg["run"]["plot_times"] == [0.5, 1.0, 2.0]
    assert cfg["optimizer"]["schedule"]["T_max"] == 7


# ---------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------


@pytest.mark.serial
def test_unknown_key_suggests():
    err = _raises({"time": {"n_step": 8}}, "time.n_step", "did you mean 'time.n_steps'")
    assert err.key == "time.n_step"
    _raises({"optimizer": {"schedule": {"patiense": 3}}}, "optimizer.schedule.patiense", "optimizer.schedule.patience")
    _raises({"netwrok": {}}, "netwrok", "did you mean 'network'")
    _raises({"time": {"gamma": 0.1}}, "time.gamma", "did you mean 'pde.gamma'")
    _raises({"boundary": [{"where": "boundary", "valeu": 1.0}]}, "boundary[0].valeu", "boundary[0].value")


@pytest.mark.parametrize(
    ("cfg", "key", "value"),
    [
        ({"time": {"n_steps": 2.5}}, "time.n_steps", "2.5"),
        ({"time": {"n_steps": True}}, "time.n_steps", "true"),
        ({"time": {"T": "1"}}, "time.T", '"1"'),
        ({"network": {"neurons": 10.0}}, "network.neurons", "10.0"),
        ({"loss": {"include_initial": 1}}, "loss.include_initial", "1"),
        ({"mesh": {"cells": [4, "8"]}}, "mesh.cells[1]", '"8"'),
        ({"mesh": {"lower": 0.0}}, "mesh.lower", "0.0"),
        ({"time": 3}, "time", "3"),
        ({"boundary": {"where": "boundary"}}, "boundary", "where"),
        ({"solver": {"petsc_options": {"ksp_type": [1]}}}, "solver.petsc_options.ksp_type", "[1]"),
    ],
)
@pytest.mark.serial
def test_wrong_type(cfg, key, value):
    _raises(cfg, key, value)


@pytest.mark.serial
def test_int_accepted_for_float():
    cfg = validate({"time": {"T": 2}, "mesh": {"upper": [1, 2]}, "optimizer": {"betas": [0, 0.5]}})
    assert cfg["time"]["T"] == 2.0 and type(cfg["time"]["T"]) is float
    assert all(type(x) is float for x in cfg["mesh"]["upper"] + cfg["optimizer"]["betas"])


@pytest.mark.serial
def test_programmatic_values():
    cfg = validate({"time": {"T": np.float64(2.0), "n_steps": np.int32(4)}, "mesh": {"cells": (2, 3)}})
    assert cfg["time"] == {"T": 2.0, "n_steps": 4, "theta": 1.0, "nonlinear": "implicit"}
    assert type(cfg["time"]["n_steps"]) is int and cfg["mesh"]["cells"] == [2, 3]
    assert tomllib.loads(dump_config(cfg)) == cfg


@pytest.mark.parametrize(
    ("cfg", "key", "value"),
    [
        ({"time": {"T": -1.0}}, "time.T", "-1.0"),
        ({"time": {"T": float("inf")}}, "time.T", "inf"),
        ({"time": {"theta": 0.4}}, "time.theta", "0.4"),
        ({"time": {"n_steps": 0}}, "time.n_steps", "0"),
        ({"pde": {"gamma": 0}}, "pde.gamma", "0"),
        ({"pde": {"degree": 0}}, "pde.degree", "0"),
        ({"network": {"beta": 0.5}}, "network.beta", "0.5"),
        ({"network": {"beta": 1.0}}, "network.beta", "1.0"),
        ({"network": {"seed": -1}}, "network.seed", "-1"),
        ({"optimizer": {"lr": 0.0}}, "optimizer.lr", "0.0"),
        ({"optimizer": {"betas": [0.9, 1.0]}}, "optimizer.betas[1]", "1.0"),
        ({"optimizer": {"betas": [0.9]}}, "optimizer.betas", "[0.9]"),
        ({"optimizer": {"schedule": {"factor": 1.5}}}, "optimizer.schedule.factor", "1.5"),
        ({"data": {"noise": -0.1}}, "data.noise", "-0.1"),
        ({"run": {"plot_times": [0.5, 1.5]}}, "run.plot_times[1]", "1.5"),
        ({"run": {"checkpoint_every": 0}}, "run.checkpoint_every", "0"),
        ({"mesh": {"cells": [4, 0]}}, "mesh.cells[1]", "0"),
        ({"mesh": {"cells": [4, 4, 4]}}, "mesh.cells", "[4, 4, 4]"),
        ({"mesh": {"upper": [0.5, -1.0]}}, "mesh.upper", "[0.5, -1.0]"),
        ({"boundary": [{"where": 3}]}, "boundary[0].where", "facet tags need a mesh file with tags"),
        ({"pde": {"source_degree": 0}}, "pde.source_degree", "0"),
    ],
)
@pytest.mark.serial
def test_out_of_range(cfg, key, value):
    _raises(cfg, key, value)


@pytest.mark.parametrize(
    ("cfg", "key", "value", "allowed"),
    [
        ({"pde": {"preset": "heet"}}, "pde.preset", '"heet"', '"allen-cahn"'),
        ({"mesh": {"kind": "disk"}}, "mesh.kind", '"disk"', '"file"'),
        ({"mesh": {"cell_type": "tetrahedron"}}, "mesh.cell_type", '"tetrahedron"', '"quadrilateral"'),
        ({"network": {"activation": "relu"}}, "network.activation", '"relu"', '"softplus"'),
        ({"data": {"target": "easy"}}, "data.target", '"easy"', '"difficult"'),
        ({"optimizer": {"kind": "sgd"}}, "optimizer.kind", '"sgd"', '"lbfgs"'),
        ({"optimizer": {"schedule": {"kind": "exp"}}}, "optimizer.schedule.kind", '"exp"', '"cosine"'),
        ({"run": {"field_format": "vtk"}}, "run.field_format", '"vtk"', '"xdmf"'),
        ({"loss": {"time_rule": "simpson"}}, "loss.time_rule", '"simpson"', '"trapezoid"'),
        ({"boundary": [{"where": "left"}]}, "boundary[0].where", '"left"', '"boundary"'),
        ({"pde": {"residual": "not a spec"}}, "pde.residual", '"not a spec"', "module:function"),
        ({"solver": {"forward_guess": "zero"}}, "solver.forward_guess", '"zero"', '"projection"'),
    ],
)
@pytest.mark.serial
def test_bad_choice(cfg, key, value, allowed):
    _raises(cfg, key, value, allowed)


@pytest.mark.serial
def test_forward_projection_needs_all_levels_in_memory():
    _raises({"solver": {"forward_guess": "projection"}, "run": {"state_storage": {"snapshots": 4}}},
            "solver.forward_guess", "needs every level in memory", '"previous"')
    assert validate({"solver": {"forward_guess": "projection"}})["solver"]["forward_guess"] == "projection"
    # A budget alone may hold every level: the solver decides (before: refused here, whatever the budget).
    cfg = validate({"solver": {"forward_guess": "projection"}, "run": {"state_storage": {"budget": "100GB"}}})
    assert cfg["solver"]["forward_guess"] == "projection"


@pytest.mark.serial
def test_missing_files(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(ConfigError, match="nope.toml"):
        load_config(missing)
    _raises({"mesh": {"kind": "file", "path": str(tmp_path / "m.msh")}}, "mesh.path", "m.msh", "not found")
    _raises({"mesh": {"kind": "file", "path": str(tmp_path / "m.vtu")}}, "mesh.path", "m.vtu", ".msh", ".xdmf")
    _raises({"mesh": {"kind": "file"}}, "mesh.path")
    _raises({"data": {"kind": "file", "path": str(tmp_path / "d.npz")}}, "data.path", "d.npz", "not found")
    _raises({"data": {"kind": "file", "path": str(tmp_path / "d.txt")}}, "data.path", "d.txt", ".npz")
    _raises({"data": {"kind": "file"}}, "data.path")


@pytest.mark.serial
def test_toml_syntax_error_names_file_and_line(tmp_path):
    path = _write(tmp_path / "bad.toml", '[time]\nT = 1.0\nn_steps = = 3\n')
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert f"{path}:3" in str(info.value) and "syntax" in str(info.value)


@pytest.mark.parametrize(
    ("override", "fragment"),
    [
        ("time.T", "time.T"),
        ("=1.0", "=1.0"),
        ("time..T=1", "time..T"),
        ("time.T=[1,", "[1,"),
        ("time.T=", "time.T"),
        ("time.T.x=1", "time.T"),
        ("boundary.3.value=1", "boundary.3"),
        ("time.n_steps=2.5", "2.5"),
        ("pde.presett=heat", "did you mean 'pde.preset'"),
    ],
)
@pytest.mark.serial
def test_bad_override(tmp_path, override, fragment):
    path = _write(tmp_path / "c.toml", "[time]\nT = 1.0\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, [override])
    assert fragment in str(info.value), str(info.value)


# ---------------------------------------------------------------------------
# overrides and round trip
# ---------------------------------------------------------------------------


@pytest.mark.serial
def test_overrides_are_typed(tmp_path):
    path = _write(tmp_path / "c.toml", '[time]\nT = 1.0\n[pde]\npreset = "heat"\n')
    cfg = load_config(
        path,
        [
            "time.T=2",
            "time.n_steps = 8",
            "pde.preset=allen-cahn",
            'network.activation="sigmoid"',
            "optimizer.betas=[0.8, 0.99]",
            "loss.include_initial=false",
            "boundary.0.value=1.5",
            "solver.petsc_options.ksp_type=cg",
            "solver.petsc_options.ksp_rtol=1e-10",
            "optimizer.schedule.kind=none",
            "run.plot_times=[0, 2]",
        ],
    )
    assert cfg["time"]["T"] == 2.0 and type(cfg["time"]["T"]) is float
    assert cfg["time"]["n_steps"] == 8 and type(cfg["time"]["n_steps"]) is int
    assert cfg["pde"]["preset"] == "allen-cahn"
    assert cfg["network"]["activation"] == "sigmoid"
    assert cfg["optimizer"]["betas"] == [0.8, 0.99]
    assert cfg["loss"]["include_initial"] is False
    assert cfg["boundary"] == [{"where": "boundary", "value": 1.5, "time_function": "constant"}]
    assert cfg["solver"]["petsc_options"] == {"ksp_type": "cg", "ksp_rtol": 1e-10}
    assert cfg["optimizer"]["schedule"]["kind"] == "none"
    assert cfg["run"]["plot_times"] == [0.0, 2.0]
    # A later override wins.
    assert load_config(path, ["time.T=2", "time.T=3"])["time"]["T"] == 3.0


@pytest.mark.serial
def test_dump_round_trip():
    cfgs = [
        validate({}),
        validate(
            {
                "boundary": [],
                "pde": {"residual": "femnpde.fem.problem:heat", "source": "quadrature"},
                "solver": {"petsc_options": {"ksp_type": "cg", "pc_type": "hypre", "ksp_rtol": 1e-12,
                                             "ksp_max_it": 100, "ksp_monitor": False, "ksp_odd_value": 'a "q"\\\n'}},
                "network": {"beta": 0.7123456789012345},
                "run": {"plot_times": [0.1, 1.0 / 3.0, 1.0]},
            }
        ),
        validate({"boundary": [{"where": "boundary", "value": 1.0}, {"value": -2.5}]}),
    ]
    for cfg in cfgs:
        text = dump_config(cfg)
        assert tomllib.loads(text) == cfg
        assert validate(tomllib.loads(text)) == cfg
    with pytest.raises(ConfigError, match="time.T"):
        dump_config({"time": {"T": None}})


@pytest.mark.serial
def test_relative_paths_follow_the_file(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.npz").write_bytes(b"")
    path = _write(
        tmp_path / "sub" / "c.toml",
        '[data]\nkind = "file"\npath = "d.npz"\n[observation]\nkind = "sensors"\nsensors = [[0.1, 0.2]]\n',
    )
    monkeypatch.chdir(tmp_path)
    cfg = load_config("sub/c.toml")
    assert pathlib.Path(cfg["data"]["path"]) == (tmp_path / "sub" / "d.npz").resolve()
    with pytest.raises(ConfigError, match="d.npz"):  # an empty file is not valid sensor data
        build_run(cfg, comm=MPI.COMM_SELF)
    assert load_config(path)["data"]["path"] == cfg["data"]["path"]


# ---------------------------------------------------------------------------
# build_run
# ---------------------------------------------------------------------------


def test_build_run_tiny(comm):
    run = build_run(_tiny(), comm=comm, petsc_options_prefix="cfgtest_tiny_")
    try:
        theta = run.network.params.copy()
        J, grad = run.rf.value_and_gradient(theta)
        assert np.isfinite(J) and J > 0
        assert grad.shape == (run.rf.n_params,) and np.all(np.isfinite(grad)) and np.any(grad != 0)
        assert run.rf.n_params == 6 * (3 + 2)
        assert run.lr == pytest.approx(0.01 * 6 ** (2 * (2 / 3) - 1))
        assert run.target is not None
        assert run.target_values.shape == (5, run.problem.n_owned_source)
        assert run.misfit.data.shape == (5, run.problem.n_owned)
        assert run.cfg == validate(_tiny())
        # The data is the forward solution with the target source: J(g*) = 0.
        run.solver.forward(run.target_values)
        assert run.misfit.value(run.solver.states) < 1e-20
    finally:
        run.destroy()


def test_build_run_forward_guess(comm):
    """[solver] forward_guess reaches the solver: with CG the projection saves forward iterations and the
    gradient agrees with the default guess's to the Krylov tolerance."""
    cg = {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": 1e-12}
    grads, its = {}, {}
    for guess in ("previous", "projection"):
        run = build_run(_tiny(solver={"petsc_options": cg, "forward_guess": guess}, time={"n_steps": 8}),
                        comm=comm, petsc_options_prefix=f"cfgtest_fg_{guess[:4]}_")
        try:
            assert run.solver.forward_guess == guess
            _, grads[guess] = run.rf.value_and_gradient(run.network.params.copy())
            its[guess] = sum(run.solver.linear_iterations.forward)
        finally:
            run.destroy()
    assert its["projection"] < its["previous"], its
    err = np.linalg.norm(grads["projection"] - grads["previous"]) / np.linalg.norm(grads["previous"])
    assert err < 1e-8, err


def test_build_run_options(comm):
    cfg = _tiny(
        pde={"preset": "allen-cahn", "source": "quadrature"},
        time={"n_steps": 16},  # dt / epsilon^2 < 1: the implicit Allen-Cahn step is well posed
        initial_condition={"kind": "constant", "value": 0.1},
        optimizer={"scale_lr": False, "lr": 0.02},
        loss={"time_rule": "trapezoid", "include_initial": False},
        solver={"petsc_options": {"ksp_type": "preonly", "pc_type": "lu"}},
    )
    run = build_run(cfg, comm=comm, petsc_options_prefix="cfgtest_opts_")
    try:
        assert run.lr == 0.02
        assert run.problem.source_kind == "quadrature"
        J, grad = run.rf.value_and_gradient(run.network.params.copy())
        assert np.isfinite(J) and grad.shape == (run.rf.n_params,)
        assert run.misfit.w[0] == 0.0
    finally:
        run.destroy()


def test_custom_residual(comm):
    cfg = _tiny(pde={"residual": "femnpde.fem.problem:heat", "gamma": 0.02})
    run = build_run(cfg, comm=comm, petsc_options_prefix="cfgtest_res_")
    ref = build_run(_tiny(pde={"gamma": 0.02}), comm=comm, petsc_options_prefix="cfgtest_ref_")
    try:
        theta = run.network.params.copy()
        assert run.rf(theta) == pytest.approx(ref.rf(theta), rel=1e-12)
    finally:
        run.destroy()
        ref.destroy()
    for spec, fragment in [("femnpde.no_such_module:f", "no_such_module"), ("femnpde.fem.problem:nope", "nope")]:
        with pytest.raises(ConfigError) as info:
            build_run(_tiny(pde={"residual": spec}), comm=comm)
        assert "pde.residual" in str(info.value) and fragment in str(info.value)


def test_synthetic_noise_is_rank_independent(comm):
    cfg = _tiny(data={"noise": 0.05, "noise_seed": 7})
    world = build_run(cfg, comm=comm, petsc_options_prefix="cfgtest_world_")
    single = build_run(cfg, comm=MPI.COMM_SELF, petsc_options_prefix="cfgtest_self_")
    clean = build_run(_tiny(), comm=MPI.COMM_SELF, petsc_options_prefix="cfgtest_clean_")
    try:
        s_world = _global_sum_of_squares(world)
        s_single = float(np.sum(single.misfit.data**2))
        s_clean = float(np.sum(clean.misfit.data**2))
        assert s_world == pytest.approx(s_single, rel=1e-12)
        assert abs(s_single - s_clean) > 1e-6 * s_clean  # the noise is there
        diff = single.misfit.data - clean.misfit.data
        scale = np.max(np.abs(clean.misfit.data))
        assert np.std(diff) == pytest.approx(0.05 * scale, rel=0.2)
        # Another seed gives other data.
        other = build_run(_tiny(data={"noise": 0.05, "noise_seed": 8}), comm=MPI.COMM_SELF,
                          petsc_options_prefix="cfgtest_other_")
        try:
            assert not np.allclose(other.misfit.data, single.misfit.data)
        finally:
            other.destroy()
    finally:
        world.destroy()
        single.destroy()
        clean.destroy()


def test_mesh_file_xdmf_with_facet_tags(comm, shared_tmp_path):
    import dolfinx.io
    import dolfinx.mesh

    mesh = dolfinx.mesh.create_rectangle(comm, [np.array([0.0, 0.0]), np.array([0.5, 1.0])], [4, 8])
    tdim = mesh.topology.dim
    mesh.topology.create_connectivity(tdim - 1, tdim)
    facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
    mid = dolfinx.mesh.compute_midpoints(mesh, tdim - 1, facets)
    values = np.where(np.isclose(mid[:, 0], 0.0), 1, 2).astype(np.int32)
    order = np.argsort(facets)
    tags = dolfinx.mesh.meshtags(mesh, tdim - 1, facets[order], values[order])
    tags.name = "ft"
    path = shared_tmp_path / "plate.xdmf"
    with dolfinx.io.XDMFFile(comm, str(path), "w") as f:
        f.write_mesh(mesh)
        f.write_meshtags(tags, mesh.geometry)
    comm.Barrier()
    toml = shared_tmp_path / "plate.toml"
    if comm.rank == 0:
        _write(
            toml,
            '[mesh]\nkind = "file"\npath = "plate.xdmf"\nfacet_tags = "ft"\n'
            "[time]\nn_steps = 4\n[network]\nneurons = 5\n"
            "[[boundary]]\nwhere = 1\nvalue = 0.0\n[[boundary]]\nwhere = 2\nvalue = 0.0\n",
        )
    comm.Barrier()
    cfg = load_config(toml)
    assert cfg["mesh"]["path"] == str(path.resolve())
    run = build_run(cfg, comm=comm, petsc_options_prefix="cfgtest_xdmf_")
    try:
        ref = build_run(_tiny(network={"neurons": 5}), comm=comm, petsc_options_prefix="cfgtest_xdmfref_")
        try:
            theta = run.network.params.copy()
            assert run.rf(theta) == pytest.approx(ref.rf(theta), rel=1e-10)
        finally:
            ref.destroy()
    finally:
        run.destroy()
    with pytest.raises(ConfigError, match=r"boundary\[0\]\.where"):
        build_run(load_config(toml, ["boundary.0.where=9"]), comm=comm)
    with pytest.raises(ConfigError, match="mesh.path"):
        build_run(load_config(toml, ["mesh.name=nomesh"]), comm=comm)


def test_mesh_file_msh(comm, shared_tmp_path):
    gmsh = pytest.importorskip("gmsh")
    path = shared_tmp_path / "square.msh"
    if comm.rank == 0:
        gmsh.initialize()
        gmsh.option.setNumber("General.Terminal", 0)
        try:
            gmsh.model.add("square")
            gmsh.model.occ.addRectangle(0, 0, 0, 0.5, 1.0)
            gmsh.model.occ.synchronize()
            gmsh.model.addPhysicalGroup(2, [s[1] for s in gmsh.model.getEntities(2)], 1)
            gmsh.model.addPhysicalGroup(1, [c[1] for c in gmsh.model.getEntities(1)], 7)
            gmsh.option.setNumber("Mesh.MeshSizeMax", 0.2)
            gmsh.model.mesh.generate(2)
            gmsh.write(str(path))
        finally:
            gmsh.finalize()
    comm.Barrier()
    cfg = _tiny(boundary=[{"where": 7, "value": 0.0}])
    cfg["mesh"] = {"kind": "file", "path": str(path)}
    run = build_run(cfg, comm=comm, petsc_options_prefix="cfgtest_msh_")
    try:
        assert run.problem.mesh.geometry.dim == 2
        J, grad = run.rf.value_and_gradient(run.network.params.copy())
        assert np.isfinite(J) and grad.shape == (run.rf.n_params,)
    finally:
        run.destroy()


def test_mesh_file_msh_unreadable(comm, shared_tmp_path):
    pytest.importorskip("gmsh")
    path = shared_tmp_path / "garbage.msh"
    if comm.rank == 0:
        _write(path, "this is not a gmsh file\n")
    comm.Barrier()
    cfg = _tiny()
    cfg["mesh"] = {"kind": "file", "path": str(path)}
    with pytest.raises(ConfigError, match="mesh.path"):
        build_run(cfg, comm=comm)


def test_allen_cahn_large_step_warns(comm):
    cfg = _tiny()
    cfg["pde"] = {"preset": "allen-cahn", "epsilon": 0.2}
    cfg["time"] = {"n_steps": 2}
    if comm.rank == 0:
        with pytest.warns(UserWarning, match="epsilon"):
            run = build_run(cfg, comm=comm, petsc_options_prefix="cfgtest_acwarn_")
    else:
        run = build_run(cfg, comm=comm, petsc_options_prefix="cfgtest_acwarn_")
    run.destroy()
