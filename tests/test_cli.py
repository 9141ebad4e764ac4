"""The command line: exit codes and messages."""

import pytest
from mpi4py import MPI

from cli_output import gradcheck_figures
from femnpde.app.cli import main


def test_info_exit_code(capsys):
    assert main(["info"]) == 0


def test_gradcheck_passes_small(capsys):
    code = main(["gradcheck", "--pde", "allen-cahn", "--N", "5", "--nx", "4", "--ny", "8", "--steps", "8",
                 "--taylor-steps", "4", "--h0", "2.5e-3"])  # h0 = 1e-2 is pre-asymptotic here (rates 2.22, 2.15, 2.07)
    out = capsys.readouterr().out
    assert code == 0, out
    if MPI.COMM_WORLD.rank == 0:
        rates, norm = gradcheck_figures(out)
        assert len(rates) == 3 and all(1.9 < r < 2.1 for r in rates), out
        assert norm > 0, out


def test_gradcheck_bad_target_is_exit_2(capsys):
    code = main(["gradcheck", "--target", "nonsense", "--nx", "2", "--ny", "2", "--steps", "1"])
    assert code == 2
    err = capsys.readouterr().err
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank == 0:
        assert "nonsense" in err and "difficult" in err


@pytest.mark.serial
def test_unknown_command_is_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2


def test_bad_widths_is_exit_2():
    assert main(["sweep", "demos/quickstart.toml", "--N", "10,abc"]) == 2
