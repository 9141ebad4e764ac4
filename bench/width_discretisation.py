"""How far apart are femnpde's and the reference code's discretisations of the paper's data? (issue 17)

Serial; forward solves only (a few seconds):

    scripts/env-run python3 bench/width_discretisation.py

Both codes fit the network to *their own* data h (each reaches loss 0 with
g*), so their relative RMSE figures at equal epochs belong to slightly
different problems.  This script measures how different: the data h of
``demos/paper_{heat,allen_cahn}.toml`` (P1 FEM, h = 0.025, 64 backward-Euler
steps) against

* an explicit finite-difference scheme (also with the source taken at the
  reference's network input times n/63) on the same 21 x 41 grid at the
  stability limit dt = dx^2 / (4 gamma) = 1/64, 64 levels, as described in
  ../shared/notes/paper-scenario.md (written here from that description, so
  its details, e.g. which level's source drives a step, are this script's
  choice: g* at t_n drives the step n -> n+1), and
* femnpde refined in time (256 steps) and in space and time (h/2, 256 steps),

each as the reference's relative RMSE definition, sqrt(1/2 sum_(n,i,j)
(h1 - h2)^2 dx dy dt) / max|h|, over the 21 x 41 grid points (the vertices
of the FEM mesh) and the common levels t = n/64, n = 0..63.  Writes
``bench/results/width/discretisation.json``.
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
from mpi4py import MPI

from femnpde.app.build import build_run
from femnpde.app.loading import load_config
from femnpde.app.scenarios import LX, LY, paper_initial_condition, target_source

ROOT = pathlib.Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "width" / "discretisation.json"
NX, NY, N_LEVELS = 21, 41, 64
DX = LX / (NX - 1)
DT = 1.0 / 64


def fem_data(config: pathlib.Path, overrides: list[str]) -> np.ndarray:
    """femnpde's data h at the 21 x 41 grid points and the levels t = n/64, n = 0..63: shape (64, 21, 41)."""
    cfg = load_config(config, [*overrides, "network.neurons=1"])
    with build_run(cfg, MPI.COMM_SELF) as run:
        h = run.field_data
        x = run.problem.V.tabulate_dof_coordinates()[: run.problem.n_owned]
        n_steps = run.problem.time.n_steps
    every = n_steps // 64
    i = np.rint(x[:, 0] / DX).astype(int)
    j = np.rint(x[:, 1] / DX).astype(int)
    on_grid = np.isclose(i * DX, x[:, 0], atol=1e-9) & np.isclose(j * DX, x[:, 1], atol=1e-9)
    grid = np.full((N_LEVELS, NX, NY), np.nan)
    grid[:, i[on_grid], j[on_grid]] = h[: N_LEVELS * every : every][:, on_grid]
    assert not np.isnan(grid).any(), "every grid point is a mesh vertex"
    return grid


def fd_data(gamma: float, epsilon: float | None, source_dt: float = DT) -> np.ndarray:
    """The explicit FD scheme (5-point Laplacian, u = 0 on the boundary) on the 21 x 41 grid: (64, 21, 41).

    Step n -> n+1 is driven by g*(n * source_dt): ``DT`` (the level's time) or
    1/63 (the reference's network input times, linspace(0, 1, 64)).
    """
    xx, yy = np.meshgrid(np.linspace(0, LX, NX), np.linspace(0, LY, NY), indexing="ij")
    pts = np.stack([xx.ravel(), yy.ravel(), np.zeros(xx.size)])
    g = target_source("difficult")
    u = paper_initial_condition(pts).reshape(NX, NY)
    out = np.empty((N_LEVELS, NX, NY))
    out[0] = u
    for n in range(N_LEVELS - 1):
        lap = np.zeros_like(u)
        lap[1:-1, 1:-1] = (u[2:, 1:-1] + u[:-2, 1:-1] + u[1:-1, 2:] + u[1:-1, :-2] - 4 * u[1:-1, 1:-1]) / DX**2
        rhs = gamma * lap + g(n * source_dt, pts).reshape(NX, NY)
        if epsilon is not None:
            rhs -= (u**3 - u) / epsilon**2
        u = u + DT * rhs
        u[0, :] = u[-1, :] = u[:, 0] = u[:, -1] = 0.0
        out[n + 1] = u
    return out


def relative_rmse(a: np.ndarray, b: np.ndarray, scale: float) -> float:
    return float(np.sqrt(0.5 * np.sum((a - b) ** 2) * DX * DX * DT) / scale)


def main() -> None:
    if MPI.COMM_WORLD.size != 1:
        raise SystemExit("bench/width_discretisation.py runs serially")
    results = {"definition": __doc__.split("each as")[1].split("Writes")[0].strip().replace("\n", " ")}
    for scenario, config, eps in (("heat", "paper_heat.toml", None), ("allen-cahn", "paper_allen_cahn.toml", 0.32)):
        path = ROOT / "demos" / config
        base = fem_data(path, [])
        scale = float(np.abs(base).max())
        rows = {
            "explicit FD (the reference's scheme, as described)": fd_data(0.01, eps),
            "explicit FD, source at t = n/63": fd_data(0.01, eps, 1.0 / 63),
            "femnpde, 256 time steps": fem_data(path, ["time.n_steps=256"]),
            "femnpde, h/2 and 256 time steps": fem_data(path, ["time.n_steps=256", "mesh.cells=[40, 80]"]),
        }
        results[scenario] = {"max_abs_h": scale, **{k: relative_rmse(base, v, scale) for k, v in rows.items()}}
        results[scenario]["explicit FD vs femnpde h/2, 256 steps"] = relative_rmse(
            rows["explicit FD (the reference's scheme, as described)"], rows["femnpde, h/2 and 256 time steps"], scale)
        for k, v in results[scenario].items():
            print(f"{scenario}: {k}: {v:.4g}", flush=True)
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
