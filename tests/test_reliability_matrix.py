"""The bad-input matrix (issue 14): input, ranks, expected exit code, expected words in the message.

One row per bad input: every configuration section, every file kind the
tool reads (configuration, mesh .msh/.xdmf, sensor data .npz/.csv, field
data .bp, checkpoint, user module), PETSc options, overrides and resume.
Each row runs on 1 rank and on 2 ranks (rows marked ``slow`` on 2 ranks are
run with ``-m slow``: the default suite keeps a representative of every kind
on 2 ranks).  On 2 ranks ``femnpde`` runs in a subprocess (``mpirun``) under
a timeout, so a hang fails the row.  On 1 rank the command runs in the test
process (:func:`femnpde.app.cli.main`, its exit code and stderr): one rank
cannot wait for another, and starting a process per row (about 5 s each)
dominated the suite; a row whose input is only read at process start
(``PETSC_OPTIONS``, read by PetscInitialize) keeps its subprocess.  Every
message must be printed once, with no traceback.
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import pytest

from test_reliability import femnpde, tiny

pytestmark = pytest.mark.serial

MESHES = pathlib.Path(__file__).parent.parent / "meshes"
RELIABILITY = pathlib.Path(__file__).parent / "reliability"


@dataclasses.dataclass
class Case:
    """A bad input: ``femnpde train CONFIG ARGS`` (or ``command``) with files written first."""

    id: str
    words: list[str]
    sets: list[str] = dataclasses.field(default_factory=list)
    extra: str = ""  # appended to the tiny configuration
    files: dict[str, bytes | str] = dataclasses.field(default_factory=dict)
    args: list[str] = dataclasses.field(default_factory=list)  # {tmp} is the test directory
    command: list[str] | None = None  # instead of "train CONFIG --out {tmp}/run --quiet"
    code: int = 2
    env: dict[str, str] | None = None
    prepare: str | None = None  # "run": train the tiny run into {tmp}/run first (then write the run/ files)
    mesh: bool = True  # the tiny configuration keeps its [mesh] section
    two_ranks_default: bool = False  # also on 2 ranks in the default suite


def _npz(**arrays) -> bytes:
    import io

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return buf.getvalue()


CASES = [
    # --- every configuration section
    Case("mesh.kind", ["mesh.kind", '"disk"', '"rectangle"'], ["mesh.kind=disk"], two_ranks_default=True),
    Case("mesh.cells", ["mesh.cells[0]", "integers >= 1"], ["mesh.cells=[0, 4]"]),
    Case("pde.preset", ["pde.preset", '"heta"', "did you mean"], ["pde.preset=heta"]),
    Case("pde.gamma type", ["pde.gamma", "a string"], ['pde.gamma="x"']),
    Case("time.n_steps", ["time.n_steps", "integer >= 1"], ["time.n_steps=0"]),
    Case("time.theta", ["time.theta"], ["time.theta=2.0"]),
    Case("initial_condition.kind", ["initial_condition.kind"], ["initial_condition.kind=wave"]),
    Case("boundary.where", ["boundary[0].where", "facet tags"], extra="[[boundary]]\nwhere = 3\n"),
    Case("neumann.where", ["neumann[0].where"], extra="[[neumann]]\nwhere = 2\nflux = 1.0\n"),
    Case("network key typo", ["network.neurns", "did you mean 'network.neurons'"], ["network.neurns=3"],
         two_ranks_default=True),
    Case("network.activation", ["network.activation"], ["network.activation=relu6"]),
    Case("data.target", ["data.target"], ["data.target=nosuch"]),
    Case("data.noise", ["data.noise"], ["data.noise=-1.0"]),
    Case("observation.kind", ["observation.kind"], ["observation.kind=everything"]),
    Case("observation.sensors outside", ["observation.sensors"],
         ["observation.kind=sensors", "observation.sensors=[[5.0, 5.0]]"]),
    Case("loss.time_rule", ["loss.time_rule"], ["loss.time_rule=simpson"]),
    Case("optimizer.lr", ["optimizer.lr"], ["optimizer.lr=-1.0"]),
    Case("optimizer.schedule.factor", ["optimizer.schedule.factor"], ["optimizer.schedule.factor=2.0"]),
    Case("run.iterations", ["run.iterations"], ["run.iterations=-3"]),
    Case("run.field_format", ["run.field_format"], ["run.field_format=png"]),
    Case("solver.newton_max_it", ["solver.newton_max_it"], ["solver.newton_max_it=0"]),
    Case("unknown section", ['unknown key "netwrok"', "did you mean 'network'"], extra="[netwrok]\nneurons = 3\n"),
    Case("huge integer", ["time.n_steps", "GiB"], ["time.n_steps=99999999999999999999"], two_ranks_default=True),
    # --- overrides and the command line
    Case("override without =", ["override", "network.neurons", "expected"], ["network.neurons"]),
    Case("override bad index", ["boundary", "is not an index"], ["boundary.7.value=1.0"]),
    Case("resume and overwrite", ["--resume and --overwrite"], args=["--overwrite", "--resume", "{tmp}/run"]),
    # --- configuration files
    Case("config missing", ["configuration file", "not found"], command=["train", "{tmp}/nosuch.toml"]),
    Case("config syntax", ["TOML syntax error", "bad.toml:3"], files={"bad.toml": "[mesh]\ncells = [4,\n"},
         command=["train", "{tmp}/bad.toml", "--out", "{tmp}/run"], two_ranks_default=True),
    # --- mesh files
    Case("mesh file missing", ["mesh.path", "does not exist"], ['mesh.kind="file"', 'mesh.path="{tmp}/none.msh"'], mesh=False),
    Case("mesh .msh garbage", ["mesh.path", "junk.msh"], ['mesh.kind="file"', 'mesh.path="{tmp}/junk.msh"'],
         files={"junk.msh": "this is not gmsh\n"}, two_ranks_default=True, mesh=False),
    Case("mesh .xdmf garbage", ["mesh.path", "reading the XDMF file failed"],
         ['mesh.kind="file"', 'mesh.path="{tmp}/junk.xdmf"'], files={"junk.xdmf": "<Xdmf><broken"}, mesh=False),
    Case("mesh facet tag missing", ["boundary[0].where", "not a facet tag"],
         ['mesh.kind="file"', f'mesh.path="{MESHES / "annulus_holes.xdmf"}"'],
         extra="[[boundary]]\nwhere = 999\n", mesh=False),
    # --- sensor data files
    Case("point data .npz garbage", ["data.path", "junk.npz"],
         ['data.kind="file"', 'data.path="{tmp}/junk.npz"', "observation.kind=sensors"],
         files={"junk.npz": b"PK\x03\x04 not a zip"}, two_ranks_default=True),
    Case("point data .npz shape", ["data.path", "values"],
         ['data.kind="file"', 'data.path="{tmp}/pts.npz"', "observation.kind=sensors"],
         files={"pts.npz": _npz(points=np.array([[0.1, 0.1]]), values=np.zeros((3, 1)))}),
    Case("point data .csv text", ["data.path", "bad.csv"],
         ['data.kind="file"', 'data.path="{tmp}/bad.csv"', "observation.kind=sensors",
          "observation.sensors=[[0.1, 0.1]]"], files={"bad.csv": "t,s0\n0.0,abc\n"}),
    # --- field data files
    Case("field data .bp missing", ["data.path"], ['data.kind="file"', 'data.path="{tmp}/none.bp"']),
    Case("field data .bp garbage", ["data.path", "junk.bp"], ['data.kind="file"', 'data.path="{tmp}/junk.bp"'],
         files={"junk.bp/md.idx": b"garbage"}, two_ranks_default=True),
    # --- checkpoints
    Case("resume without checkpoint", ["--resume", "no config.toml"], args=["--resume", "{tmp}/empty"],
         files={"empty/.keep": ""}),
    Case("resume changed config", ["--resume", "differs", "network.neurons"], ["network.neurons=4"],
         args=["--resume", "{tmp}/run"], prepare="run", two_ranks_default=True),
    Case("resume corrupt checkpoint", ["checkpoint.npz", "not a readable femnpde checkpoint"],
         args=["--resume", "{tmp}/run"], prepare="run", files={"run/checkpoint.npz": b"garbage"}),
    Case("forward params missing", ["nosuch.npz", "does not exist"],
         command=["forward", "{cfg}", "--out", "{tmp}/f", "--params", "{tmp}/nosuch.npz"]),
    Case("out holds another run", ["is not empty", "--overwrite"], prepare="run", two_ranks_default=True),
    # --- user modules
    Case("user module missing", ["pde.residual", "No module named 'nosuchmod'"], ["pde.residual=nosuchmod:f"]),
    Case("user module syntax error", ["pde.residual", "invalid syntax (brokenmod.py, line 1)"], ["pde.residual=brokenmod:f"],
         files={"brokenmod.py": "def f(:\n"}, env={"PYTHONPATH": "{tmp}"}, two_ranks_default=True),
    Case("user factory missing", ["pde.residual", "has no attribute 'nosuch'"], ["pde.residual=usermod:nosuch"]),
    Case("user factory exits", ["pde.residual", "sys.exit"], ["pde.residual=usermod:calls_sys_exit"]),
    # --- PETSc options
    Case("petsc key with prefix", ["forward_ksp_type", "write 'ksp_type'"],
         ['solver.petsc_options={forward_ksp_type = "nosuchksp"}'], two_ranks_default=True),
    Case("petsc key with dash", ["not a PETSc option name"], ['solver.petsc_options={"-malloc_dump" = true}']),
    Case("petsc unused", ["was not read by any solver"], ["solver.petsc_options={malloc_dump = true}"]),
    Case("petsc bad type", ["PETSc rejected", "nosuchksp"], ['solver.petsc_options={ksp_type = "nosuchksp"}'],
         two_ranks_default=True),
    Case("petsc bad value", ["PETSc rejected", "no numeric value"], ['solver.petsc_options={ksp_rtol = "abc"}']),
    Case("PETSC_OPTIONS unused", ["-femnpde_adjoint_ksp_type", "not read"],
         env={"PETSC_OPTIONS": "-femnpde_adjoint_ksp_type cg"}),
]

assert len({c.id for c in CASES}) == len(CASES)


def _rows():
    for case in CASES:
        yield pytest.param(case, 1, id=f"{case.id}-1rank")
        marks = [] if case.two_ranks_default else [pytest.mark.slow]
        yield pytest.param(case, 2, id=f"{case.id}-2ranks", marks=marks)


def _in_process(args, env: dict[str, str], monkeypatch, capsys) -> tuple[int, str, str]:
    """``femnpde ARGS`` in this process: (exit code, stdout, stderr); no PETSc option of the run is left."""
    from petsc4py import PETSc

    from femnpde.app.cli import main

    monkeypatch.syspath_prepend(str(RELIABILITY))  # usermod, as the subprocess's PYTHONPATH has it
    for key, value in env.items():
        if key == "PYTHONPATH":
            for entry in reversed(value.split(":")):
                monkeypatch.syspath_prepend(entry)
        else:
            monkeypatch.setenv(key, value)
    capsys.readouterr()
    try:
        code = main([str(a) for a in args])
    except SystemExit as err:  # argparse's usage errors
        code = err.code
    out, err = capsys.readouterr()
    leftover = [k for k in PETSc.Options().getAll() if k.startswith("femnpde_")]
    assert not leftover, f"the run left PETSc options {leftover}"
    return code, out, err


def _needs_process(case: Case, ranks: int) -> bool:
    """Whether the row runs in its own process (several ranks, or input read at process start)."""
    return ranks > 1 or "PETSC_OPTIONS" in (case.env or {})


@pytest.mark.parametrize("case,ranks", _rows())
def test_bad_input(tmp_path, case, ranks, monkeypatch, capsys):
    def fill(text: str) -> str:
        return text.replace("{tmp}", str(tmp_path)).replace("{cfg}", str(tmp_path / "c.toml"))

    cfg = tiny(tmp_path / "c.toml", iterations=1, extra=case.extra, mesh=case.mesh)
    for name, content in case.files.items():
        if case.prepare == "run" and name.startswith("run/"):
            continue  # written into the prepared run below
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content)
    if case.prepare == "run":
        prepared = {n: c for n, c in case.files.items() if n.startswith("run/")}
        code, _, err = _in_process(["train", tiny(tmp_path / "prep.toml", iterations=1), "--out", tmp_path / "run",
                                    "--quiet"], {}, monkeypatch, capsys)
        assert code == 0, err
        for name, content in prepared.items():
            (tmp_path / name).write_bytes(content if isinstance(content, bytes) else content.encode())
        cfg = tmp_path / "prep.toml"
    if case.command is not None:
        args = [fill(a) for a in case.command]
    else:
        args = ["train", cfg, "--out", tmp_path / "run", "--quiet", *[fill(a) for a in case.args]]
        if "--resume" in case.args:
            args.remove("--out")
            args.remove(tmp_path / "run")
    for s in case.sets:
        args += ["--set", fill(s)]
    env = {k: fill(v) for k, v in (case.env or {}).items()}
    if _needs_process(case, ranks):
        if "PYTHONPATH" in env:
            env["PYTHONPATH"] += ":" + str(RELIABILITY)
        code, out, err, _ = femnpde(args, ranks, env=env, timeout=90)
    else:
        code, out, err = _in_process(args, env, monkeypatch, capsys)
    assert code == case.code, err
    for w in case.words:
        assert w in err, (w, err)
    assert err.count("femnpde: error:") == 1, err
    assert "Traceback" not in err, err
