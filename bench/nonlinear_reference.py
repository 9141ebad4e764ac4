"""Record (or compare with) loss, gradient and Taylor remainders of the nonlinear test cases.

    scripts/env-run python3 bench/nonlinear_reference.py --record bench/results/nonlinear_reference_1.json
    scripts/env-run python3 bench/nonlinear_reference.py --compare bench/results/nonlinear_reference_1.json

The recorded file of the solver before issue 12 is the reference: the new
solver's values must agree with it to 1e-9 relative.  ``--compare`` also
prints the largest change of a Taylor remainder as a fraction of J: a
remainder ``|J(θ + hδ) − J(θ) − h dJ·δ|`` is a difference of J values, so a
relative change of a small remainder that is only of the size of the J
values' own agreement is their round-off.  Comparing the 2-rank run with the
1-rank file (``mpirun -n 2 ... --compare bench/results/nonlinear_reference_1.json``)
gives the 1 vs 2 ranks agreement.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np
from mpi4py import MPI

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests"))
from nonlinear_cases import CASES, checks  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--record")
    p.add_argument("--compare")
    p.add_argument("--cases", nargs="+", default=list(CASES))
    args = p.parse_args()
    comm = MPI.COMM_WORLD
    out = {name: checks(name, comm) for name in args.cases}
    if comm.rank != 0:
        return
    if args.record:
        with open(args.record, "w") as f:
            json.dump(out, f, indent=1)
    if args.compare:
        with open(args.compare) as f:
            ref = json.load(f)
        print(f"{'case':<24} {'rel dJ':>9} {'rel J':>9} {'rel FD':>9} {'rel rem[0]':>10} {'rel rem[1]':>10} "
              f"{'rel rem[2]':>10} {'max|drem|/J':>11}")
        for name, new in out.items():
            old = ref[name]
            g0, g1 = np.array(old["dJ"]), np.array(new["dJ"])
            print(f"{name:<24} {np.linalg.norm(g1 - g0) / np.linalg.norm(g0):9.1e} "
                  f"{abs(new['J'] - old['J']) / abs(old['J']):9.1e} "
                  f"{abs(new['fd'] - old['fd']) / abs(old['fd']):9.1e} "
                  + " ".join(f"{abs(a - b) / abs(b):10.1e}" for a, b in zip(new["remainders"], old["remainders"]))
                  + f" {max(abs(a - b) for a, b in zip(new['remainders'], old['remainders'])) / abs(old['J']):11.1e}")
        print("# max|drem|/J: the remainders' change as a fraction of J. A remainder is a difference of J values,\n"
              "# so a change of about the J values' own agreement (rel J) is their round-off, not a gradient change.")


if __name__ == "__main__":
    main()
