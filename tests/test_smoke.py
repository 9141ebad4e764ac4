"""Environment smoke tests: the stack imports and a heat solve is rank independent."""

from mpi4py import MPI

from femnpde.app.info import environment_info
from femnpde.app.smoke import smoke_solve


def test_info_reports_versions():
    info = environment_info(MPI.COMM_WORLD)
    major, minor = (int(p) for p in info["DOLFINx"].split(".")[:2])
    assert (major, minor) >= (0, 10)
    assert info["MPI world size"] == str(MPI.COMM_WORLD.size)
    assert info["PETSc scalar type"] == "float64"


def test_smoke_norm_independent_of_rank_count():
    serial = smoke_solve(MPI.COMM_SELF, n=16, n_steps=5)
    parallel = smoke_solve(MPI.COMM_WORLD, n=16, n_steps=5)
    assert 0.01 < serial < 1.0
    assert abs(serial - parallel) <= 1e-12 * serial
