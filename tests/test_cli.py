"""The command line: exit codes and messages."""

import pytest

from femnpde.app.cli import main


def test_info_exit_code(capsys):
    assert main(["info"]) == 0


def test_gradcheck_passes_small(capsys):
    code = main(["gradcheck", "--pde", "allen-cahn", "--N", "5", "--nx", "4", "--ny", "8", "--steps", "8",
                 "--taylor-steps", "5"])
    assert code == 0


def test_gradcheck_bad_target_is_exit_2(capsys):
    code = main(["gradcheck", "--target", "nonsense", "--nx", "2", "--ny", "2", "--steps", "1"])
    assert code == 2
    err = capsys.readouterr().err
    from mpi4py import MPI

    if MPI.COMM_WORLD.rank == 0:
        assert "nonsense" in err and "difficult" in err


def test_unknown_command_is_exit_2():
    with pytest.raises(SystemExit) as exc:
        main(["nonsense"])
    assert exc.value.code == 2


def test_bad_widths_is_exit_2():
    assert main(["sweep", "demos/quickstart.toml", "--N", "10,abc"]) == 2
