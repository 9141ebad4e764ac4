"""Environment smoke tests: the stack imports and a heat solve is rank independent and right."""

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.app.info import environment_info
from femnpde.app.smoke import smoke_solve

#: ``smoke_solve(n=16, n_steps=5)`` as computed by femnpde 0.1 with DOLFINx 0.11 (1 and 2 ranks).
SMOKE_NORM_16_5 = 0.1259659102767048


def _series_norm(T=0.1, terms=400):
    """‖u(T)‖ of ∂t u − Δu = 1, u = 0 on ∂(0,1)², u⁰ = sin πx sin πy, from the sine series.

    u = Σ_{m,n odd} c_mn(T) sin mπx sin nπy with c_mn = 16/(π² m n) (1 − e^{−λT})/λ,
    λ = π²(m² + n²), plus e^{−2π²T} for (1, 1); ‖u‖² = Σ c_mn² / 4.
    """
    m = np.arange(1, terms, 2, dtype=float)
    M, N = np.meshgrid(m, m, indexing="ij")
    lam = np.pi**2 * (M**2 + N**2)
    c = 16.0 / (np.pi**2 * M * N) * (1.0 - np.exp(-lam * T)) / lam
    c[0, 0] += np.exp(-2.0 * np.pi**2 * T)
    return float(np.sqrt(np.sum(c**2) / 4.0))


def test_info_reports_versions():
    info = environment_info(MPI.COMM_WORLD)
    major, minor = (int(p) for p in info["DOLFINx"].split(".")[:2])
    assert (major, minor) >= (0, 10)
    assert info["MPI world size"] == str(MPI.COMM_WORLD.size)
    assert info["PETSc scalar type"] == "float64"


def test_smoke_norm_pinned_and_independent_of_rank_count():
    serial = smoke_solve(MPI.COMM_SELF, n=16, n_steps=5)
    parallel = smoke_solve(MPI.COMM_WORLD, n=16, n_steps=5)
    assert serial == pytest.approx(SMOKE_NORM_16_5, rel=1e-12)
    assert abs(serial - parallel) <= 1e-12 * serial


def test_smoke_norm_converges_to_the_series_solution():
    """Against the exact solution: the error falls by ~4 when h halves and Δt quarters (order 1 in Δt)."""
    exact = _series_norm()
    assert exact == pytest.approx(0.10489280795013084, rel=1e-12)  # the series itself converged
    coarse = abs(smoke_solve(MPI.COMM_WORLD, n=16, n_steps=5) - exact)
    fine = abs(smoke_solve(MPI.COMM_WORLD, n=32, n_steps=20) - exact)
    assert fine < 0.06 * exact
    assert 3.5 < coarse / fine < 4.5, (coarse, fine)
