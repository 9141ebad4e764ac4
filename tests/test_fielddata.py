"""Field data files: a run's fields/u.bp is the data of another run, on any number of ranks."""

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.cli import main
from femnpde.app.config import build_run, load_config
from femnpde.io.fielddata import read_field_data, write_field_data
from femnpde.model.reduced import FunctionSource
from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.solver import ThetaSolver
from conftest import write_on_root

SMALL = "[mesh]\ncells = [5, 10]\n[time]\nn_steps = 4\n[network]\nneurons = 5\n[run]\niterations = 2\n"


def test_round_trip_serial_writer_any_reader(shared_tmp_path):
    """Written on one rank (COMM_SELF), read on all ranks (COMM_WORLD)."""
    comm = MPI.COMM_WORLD
    path = shared_tmp_path / "h.bp"
    if comm.rank == 0:
        p = paper_problem("heat", comm=MPI.COMM_SELF, nx=5, ny=10, n_steps=4)
        states = ThetaSolver(p, "fd_w_").forward(FunctionSource(p, target_source("tanh_1")).values())
        write_field_data(path, p, states.array, name="h")
    comm.Barrier()
    p = paper_problem("heat", comm=comm, nx=5, ny=10, n_steps=4)
    h = read_field_data(path, p, name="h")
    ref = ThetaSolver(p, "fd_r_").forward(FunctionSource(p, target_source("tanh_1")).values())
    assert np.max(np.abs(h - ref.array[:, : p.n_owned])) < 1e-12


def test_run_output_is_data_of_another_run(shared_tmp_path):
    cfg = write_on_root(shared_tmp_path / "c.toml", SMALL)
    out = shared_tmp_path / "fwd"
    assert main(["forward", str(cfg), "--out", str(out)]) == 0
    assert (out / "fields" / "u.bp").exists()
    text = SMALL + f'[data]\nkind = "file"\npath = "{out / "fields" / "u.bp"}"\nname = "u"\n'
    run = build_run(load_config(write_on_root(shared_tmp_path / "d.toml", text)))
    try:
        J = run.rf(run.network.params.copy())
        # The data is the network's own forward solution: the loss at the same θ is 0.
        assert J < 1e-24
    finally:
        run.destroy()


@pytest.mark.parametrize(
    "extra,needle",
    [
        ('[data]\nkind = "file"\npath = "nothere.bp"\n', "nothere.bp"),
        ('[data]\nkind = "file"\npath = "{bp}"\nname = "nope"\n', "nope"),
        ('[data]\nkind = "file"\npath = "{bp}"\nname = "u"\n[time]\nn_steps = 7\n', "time grid"),
    ],
)
def test_bad_field_data_is_specific(shared_tmp_path, capsys, extra, needle):
    cfg = write_on_root(shared_tmp_path / "c.toml", SMALL)
    out = shared_tmp_path / "fwd"
    main(["forward", str(cfg), "--out", str(out)])
    text = SMALL.replace("[time]\nn_steps = 4\n", "") + extra.format(bp=out / "fields" / "u.bp")
    if "[time]" not in extra:
        text += "[time]\nn_steps = 4\n"
    bad = write_on_root(shared_tmp_path / "bad.toml", text)
    assert main(["train", str(bad), "--quiet", "--out", str(shared_tmp_path / "x")]) == 2
    if MPI.COMM_WORLD.rank == 0:
        err = capsys.readouterr().err
        assert needle in err and "Traceback" not in err, err
