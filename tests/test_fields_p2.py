"""Field output a ParaView user expects: P2 runs write VTX and XDMF; fields of one space share one VTX file."""

import os
import pathlib

import pytest
from mpi4py import MPI

from femnpde.app.training import train

DEMOS = pathlib.Path(__file__).resolve().parents[1] / "demos"
QUICK = ["run.iterations=2", "time.n_steps=4", "mesh.cells=[6, 12]", "network.neurons=5"]


def _variables(bp: pathlib.Path) -> set[str]:
    os.environ.setdefault("ADIOS2_ALWAYS_USE_MPI", "1")
    import adios2

    with adios2.FileReader(str(bp), MPI.COMM_WORLD) as reader:
        return set(reader.available_variables())


@pytest.mark.parametrize("fmt", ["vtx", "xdmf"])
@pytest.mark.parametrize("degree", [1, 2])
def test_fields_of_a_run(shared_tmp_path, fmt, degree):
    out = shared_tmp_path / f"p{degree}_{fmt}"
    train(DEMOS / "paper_heat.toml", out=out, quiet=True,
          overrides=[*QUICK, f"pde.degree={degree}", f'run.field_format="{fmt}"'])
    fields = out / "fields"
    assert (out / "history.png").is_file() and (fields / "u.bp").is_dir()
    if fmt == "vtx":
        # One file per function space: u, h, adjoint on the state space; g_theta, g_star on the source space.
        files = sorted(p.name for p in fields.glob("fields_*.bp"))
        assert files == ["fields_g_theta-g_star.bp", "fields_u-h-adjoint.bp"]
        assert {"u", "h", "adjoint"} <= _variables(fields / "fields_u-h-adjoint.bp")
        found = set().union(*(_variables(fields / f) for f in files))
        assert {"u", "h", "adjoint", "g_theta", "g_star"} <= found, found
    else:
        text = (fields / "fields.xdmf").read_text()
        n_levels = 5
        for name in ("u", "h", "adjoint", "g_theta", "g_star"):
            assert text.count(f'<Attribute Name="{name}"') == n_levels, name
        assert (fields / "fields.h5").stat().st_size > 0
    MPI.COMM_WORLD.Barrier()
