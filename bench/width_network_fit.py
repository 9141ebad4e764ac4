"""What relative RMSE does a network of width N allow? (issue 17: the expressiveness floor)

Serial; network evaluations plus one forward solve per N:

    scripts/env-run python3 bench/width_network_fit.py --scenario heat --N 10,100,500
    scripts/env-run python3 bench/width_network_fit.py --scenario allen-cahn-imex --mesh annulus --N 10,100,500

The target source g* reaches loss 0 on femnpde's discretisation by
construction, so the error left after training comes from the network's
width (how well g_θ can represent g*) and from the optimisation.  This script
fits g_θ directly to g* (scipy L-BFGS-B on ½ Σ_(n,j) (g_θ(t_n, x_j) − g*(t_n, x_j))²
over the source dofs and all 65 levels, from seed 42's initial θ, at most
``--iterations`` iterations) and reports the PDE's relative RMSE sqrt(J)/max|h|
at the fitted θ: a width of N reaches at least this value (the best θ for J
does at least as well as the best fit of g*), so it bounds the floor from
above.  Writes ``bench/results/width/network_fit-<scenario>[-<mesh>].json``
(the mesh only off the rectangle).
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import scipy.optimize
from mpi4py import MPI

from femnpde.app.build import build_run
from femnpde.app.loading import load_config
from _paper import MESHES, SCENARIOS, study

ROOT = pathlib.Path(__file__).resolve().parents[1]


def fit(scenario: str, N: int, iterations: int, mesh: str = "rectangle") -> dict:
    config, overrides = study.config_of(scenario, mesh)
    cfg = load_config(config, [*overrides, f"network.neurons={N}"])
    with build_run(cfg, MPI.COMM_SELF) as run:
        target = run.target_values
        source = run.rf.source
        theta0 = run.rf.initial_theta()

        def f(theta):
            r = source.values(theta) - target
            return 0.5 * float(np.sum(r * r)), source.vjp(r)

        t0 = time.perf_counter()
        res = scipy.optimize.minimize(f, theta0, jac=True, method="L-BFGS-B",
                                      options={"maxiter": iterations, "maxfun": 2 * iterations, "gtol": 0.0, "ftol": 0.0})
        wall = time.perf_counter() - t0
        g_rel = float(np.sqrt(np.sum((source.values(res.x) - target) ** 2) / np.sum(target**2)))
        rmse0 = run.misfit.relative_rmse(run.rf(theta0))
        rmse = run.misfit.relative_rmse(run.rf(res.x))
        max_h = float(run.misfit.max_abs_data())
    return {"N": N, "iterations": int(res.nit), "fit_wall_time_s": wall, "relative_l2_error_of_g": g_rel,
            "relative_rmse_at_start": rmse0, "relative_rmse_at_fit": rmse,
            "max_abs_h": max_h, "max_abs_target_source": float(np.max(np.abs(target)))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", choices=SCENARIOS, default="heat")
    parser.add_argument("--mesh", choices=MESHES, default="rectangle",
                        help="the study's mesh (off the rectangle the target is 'moving_gaussian')")
    parser.add_argument("--N", default="10,100,500")
    parser.add_argument("--iterations", type=int, default=3000)
    args = parser.parse_args()
    stem = f"network_fit-{args.scenario}" + ("" if args.mesh == "rectangle" else f"-{args.mesh}")
    out = ROOT / "bench" / "results" / "width" / f"{stem}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = []
    for N in (int(n) for n in args.N.split(",")):
        row = fit(args.scenario, N, args.iterations, args.mesh)
        rows.append(row)
        out.write_text(json.dumps({"scenario": args.scenario, "mesh": args.mesh, "seed": 42,  # after each width
                                   "max_iterations": args.iterations, "rows": rows}, indent=1) + "\n")
        print(f"{args.scenario} N={N}: g fit {row['relative_l2_error_of_g']:.4g} (relative l2) after {row['iterations']} "
              f"L-BFGS iterations ({row['fit_wall_time_s']:.0f} s); PDE relative RMSE at the fit "
              f"{row['relative_rmse_at_fit']:.4g} (start {row['relative_rmse_at_start']:.4g})", flush=True)


if __name__ == "__main__":
    main()
