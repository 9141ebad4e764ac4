"""Run ``femnpde`` with a failure injected in one phase on some ranks (for tests/test_reliability.py).

Usage: ``python inject.py PHASE RANK ARGS...`` where PHASE is one of
``config``, ``mesh``, ``data``, ``solver``, ``outputs``, ``none``, RANK a rank
or ``all``, and ARGS the ``femnpde`` arguments.  The user-code phase needs no
injection: tests/reliability/usermod.py fails by itself on ``FAIL_RANK``.
"""

import sys

from mpi4py import MPI


def _fails(rank: str) -> bool:
    return rank == "all" or MPI.COMM_WORLD.rank == int(rank)


def _inject(phase: str, rank: str) -> None:
    import femnpde.app.build as build
    import femnpde.app.loading as loading
    import femnpde.app.training as training
    from femnpde.fem.solver import SolverError, ThetaSolver

    def wrap(owner, name, error, after: int = 0):
        real = getattr(owner, name)
        calls = {"n": 0}

        def patched(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] > after and _fails(rank):
                raise error
            return real(*args, **kwargs)

        setattr(owner, name, patched)

    if phase == "config":
        wrap(loading, "load_config", ValueError("injected config error"))
    elif phase == "mesh":
        wrap(build, "_build_mesh", ValueError("injected mesh error"))
    elif phase == "data":
        wrap(build, "_field_misfit", ValueError("injected data error"))
    elif phase == "solver":  # the 1st forward solve is epoch 0 (synthetic data use forward_step); fail in epoch 1
        wrap(ThetaSolver, "forward", SolverError("injected solver error"), after=1)
    elif phase == "outputs":
        wrap(training, "_write_outputs", OSError("injected output error"))
    elif phase != "none":
        raise SystemExit(f"inject.py: unknown phase {phase!r}")


if __name__ == "__main__":
    _inject(sys.argv[1], sys.argv[2])
    from femnpde.app.cli import main

    sys.exit(main(sys.argv[3:]))
