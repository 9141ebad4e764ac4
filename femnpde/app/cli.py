"""The ``femnpde`` command line.

Subcommands: ``info``, ``smoke``, ``mesh``, ``gradcheck``, ``train``, ``forward``,
``sweep``, ``config``.  ``femnpde config check CONFIG`` and ``femnpde train
--dry-run CONFIG`` validate a configuration without importing DOLFINx, PETSc
or mpi4py; ``femnpde config reference`` prints every key with its choices and
default, generated from :mod:`femnpde.app.schema`.  All work under ``mpirun -n K``; only rank 0 prints.  Bad input
(a config key, a value, a file) exits with code 2 and a message naming what
was wrong; a failed solve exits with code 3.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Sequence

from femnpde import defaults as D

__all__ = ["main", "build_parser"]


def _comm():
    from mpi4py import MPI

    return MPI.COMM_WORLD


def _rank() -> int:
    """This process's rank: from MPI once mpi4py is loaded, else from the launcher's environment.

    Commands that only validate a configuration never load mpi4py, so under
    ``mpirun`` they read the rank the launcher exports.
    """
    if "mpi4py.MPI" in sys.modules:
        return _comm().rank
    import os

    for var in ("OMPI_COMM_WORLD_RANK", "PMI_RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def _print0(*args, **kwargs) -> None:
    if _rank() == 0:
        print(*args, **kwargs, flush=True)


def _check_config(path: str, overrides: Sequence[str]) -> int:
    """Validate a configuration (no DOLFINx, PETSc or mpi4py) and print a summary."""
    from femnpde.app.loading import load_config

    cfg = load_config(path, overrides)
    mesh = cfg["mesh"]["kind"] if cfg["mesh"]["kind"] != "file" else cfg["mesh"]["path"]
    pde = cfg["pde"].get("residual") or cfg["pde"]["preset"]
    _print0(
        f"femnpde config: {path} is valid: mesh {mesh}, pde {pde}, {cfg['time']['n_steps']} steps, "
        f"N={cfg['network']['neurons']}, data {cfg['data']['kind']}, observation {cfg['observation']['kind']}, "
        f"{cfg['optimizer']['kind']} for {cfg['run']['iterations']} iterations"
    )
    return 0


def _cmd_config(args: argparse.Namespace) -> int:
    if args.action == "reference":
        from femnpde.app.schema import config_reference

        _print0(config_reference(), end="")
        return 0
    if args.config is None:
        raise ValueError("femnpde config check: give the configuration file, e.g. femnpde config check demos/quickstart.toml")
    return _check_config(args.config, args.set)


def _cmd_info(args: argparse.Namespace) -> int:
    from femnpde.app.info import environment_info, format_info

    info = environment_info(_comm())
    _print0(format_info(info))
    return 0


def _cmd_smoke(args: argparse.Namespace) -> int:
    from femnpde.app.smoke import smoke_solve

    comm = _comm()
    norm = smoke_solve(comm, n=args.n, n_steps=args.steps)
    _print0(f"smoke: backward Euler heat on the unit square ({args.n}x{args.n}, {args.steps} steps, {comm.size} rank(s))")
    _print0(f"smoke: final L2 norm = {norm:.15e}")
    return 0


def _cmd_gradcheck(args: argparse.Namespace) -> int:
    from femnpde.model.verification import check_gradient

    comm = _comm()
    if not args.fd_tol > 0:
        raise ValueError(f"gradcheck: --fd-tol {args.fd_tol!r} is not valid; give a positive tolerance, e.g. 1e-7")
    if args.config is not None:
        from femnpde.app.config import build_run, load_config

        cfg = load_config(args.config, args.set)
        run = build_run(cfg, comm)
        rf, theta0 = run.rf, run.network.params.copy()
        label = f"config {args.config}"
    else:
        from femnpde.obs.misfit import L2Misfit
        from femnpde.model.network import ShallowNetwork
        from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
        from femnpde.app.scenarios import paper_problem, target_source
        from femnpde.fem.solver import ThetaSolver

        problem = paper_problem(
            args.pde, comm=comm, degree=args.degree, theta=args.theta, nonlinear=args.nonlinear, n_steps=args.steps,
            nx=args.nx, ny=args.ny,
        )
        solver = ThetaSolver(problem, "femnpde_gradcheck_")
        gstar = FunctionSource(problem, target_source(args.target, problem.time.T)).values()
        data = solver.forward(gstar).to_array()[:, : problem.n_owned].copy()
        net = ShallowNetwork(args.N, problem.mesh.geometry.dim, seed=args.seed)
        rf = ReducedFunctional(solver, NetworkSource(problem, net), L2Misfit(problem, data))
        theta0 = net.params.copy()
        label = (
            f"{args.pde}, P{args.degree}, theta={args.theta}, nonlinear {args.nonlinear}, {args.nx}x{args.ny} cells, "
            f"{args.steps} steps, "
            f"N={args.N}, target {args.target}"
        )
    try:
        result = check_gradient(rf, theta0, seed=args.seed, h0=args.h0, taylor_steps=args.taylor_steps, tol=args.fd_tol)
    finally:
        rf.solver.destroy()
        rf.misfit.destroy()
    _print0(f"gradcheck: {label}, {comm.size} rank(s)")
    _print0(result.report())
    return 0 if result.passed else 1


def _cmd_mesh(args: argparse.Namespace) -> int:
    from femnpde.io.meshes import format_mesh_info, mesh_info, read_mesh

    data = read_mesh(args.path, _comm())
    _print0(format_mesh_info(mesh_info(data, degree=args.degree)))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    if args.dry_run:
        return _check_config(args.config, args.set)
    from femnpde.app.loading import load_config

    load_config(args.config, args.set)  # bad configurations fail before DOLFINx is imported (seconds)
    if args.resume is not None and args.overwrite:
        raise ValueError("--resume and --overwrite exclude each other: --resume continues the run in DIR, "
                         "--overwrite replaces the run in --out")
    from femnpde.app.trainer import TrainingInterrupted
    from femnpde.app.training import train

    try:
        train(args.config, out=args.out, resume=args.resume, overrides=args.set, quiet=args.quiet,
              overwrite=args.overwrite, check_gradient=True if args.check_gradient else None)
    except TrainingInterrupted as err:  # SIGUSR1/SIGTERM: a checkpoint was written
        _print0(f"femnpde: error: {err}", file=sys.stderr)
        return 128 + err.signum
    return 0


def _cmd_forward(args: argparse.Namespace) -> int:
    from femnpde.app.training import forward

    forward(args.config, out=args.out, overrides=args.set, params=args.params)
    return 0


def _cmd_sweep(args: argparse.Namespace) -> int:
    widths = _parse_widths(args.N)
    seeds = _parse_seeds(args.seeds) if args.seeds is not None else None
    from femnpde.app.sweep import sweep

    sweep(args.config, widths, out=args.out, overrides=args.set, quiet=args.quiet, overwrite=args.overwrite,
          seeds=seeds, write_outputs=not args.no_outputs)
    return 0


def _parse_widths(text: str) -> list[int]:
    try:
        widths = [int(w) for w in text.split(",") if w.strip()]
    except ValueError:
        raise ValueError(f"--N {text!r} is not valid; give comma-separated neuron counts, e.g. --N 10,100,500") from None
    if not widths or min(widths) < 1:
        raise ValueError(f"--N {text!r} is not valid; give positive neuron counts, e.g. --N 10,100,500")
    return widths


def _parse_seeds(text: str) -> list[int]:
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ValueError(f"--seeds {text!r} is not valid; give comma-separated integers >= 0, e.g. --seeds 0,1,2") from None
    if not seeds or min(seeds) < 0 or len(set(seeds)) != len(seeds):
        raise ValueError(f"--seeds {text!r} is not valid; give distinct integers >= 0, e.g. --seeds 0,1,2")
    return seeds


def _single_threaded_blas_under_mpi() -> None:
    """Under mpirun/srun, default to one BLAS/OpenMP thread per rank (ranks already fill the cores).

    Only sets variables the user has not set, and only before numpy is imported.
    """
    import os

    launched = any(
        int(os.environ.get(var, "1") or 1) > 1 for var in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "SLURM_NTASKS")
    )
    if launched and "numpy" not in sys.modules:
        for var in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(var, "1")


class _Parser(argparse.ArgumentParser):
    """An argument parser that prints (usage, errors, help) on rank 0 only and without colour.

    Every rank parses the same arguments and exits with the same code; only
    rank 0's message reaches the terminal, once.
    """

    def __init__(self, *args: object, **kwargs: object) -> None:
        if "color" in inspect.signature(argparse.ArgumentParser).parameters:  # Python >= 3.14 colours by default
            kwargs.setdefault("color", False)
        super().__init__(*args, **kwargs)

    def _print_message(self, message: str, file=None) -> None:
        if _rank() == 0:
            super()._print_message(message, file)


def _positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer; give an integer >= 1") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give an integer >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``femnpde`` command."""
    from femnpde import __version__
    from femnpde.model.verification import FD_TOLERANCE

    parser = _Parser(
        prog="femnpde",
        description="Finite-element neural-network PDE models trained with exact discrete adjoints.",
    )
    parser.add_argument("--version", action="version", version=f"femnpde {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("info", help="print versions of femnpde, DOLFINx, UFL, PETSc, MPI")
    p.set_defaults(func=_cmd_info)

    p = sub.add_parser("smoke", help="a minimal heat solve whose norm must not depend on the rank count")
    p.add_argument("--n", type=_positive_int, default=32, help="cells per side (default 32)")
    p.add_argument("--steps", type=_positive_int, default=20, help="time steps (default 20)")
    p.set_defaults(func=_cmd_smoke)

    p = sub.add_parser("mesh", help="report cells, vertices, dofs, tags and bounding box of a mesh file")
    p.add_argument("path", help="a .msh or .xdmf file (or a path without suffix)")
    p.add_argument("--degree", type=int, default=1, help="Lagrange degree for the dof count (default 1)")
    p.set_defaults(func=_cmd_mesh)

    p = sub.add_parser(
        "gradcheck",
        help="Taylor test and finite-difference check of the adjoint gradient (exit 1 if a rate is outside "
        "[1.9, 2.1], the best FD agreement is worse than --fd-tol, or the gradient is zero)",
    )
    p.add_argument("config", nargs="?", help="a run configuration (TOML); default: the paper's rectangle")
    p.add_argument("--pde", choices=["heat", "allen-cahn"], default="heat")
    p.add_argument("--N", type=_positive_int, default=20, help="neurons (default 20)")
    p.add_argument("--degree", type=int, choices=[1, 2], default=1, help="Lagrange degree")
    p.add_argument("--theta", type=float, choices=[1.0, 0.5], default=1.0, help="1 backward Euler, 0.5 Crank-Nicolson")
    p.add_argument("--nonlinear", choices=list(D.TIME_NONLINEAR_CHOICES), default=D.TIME_NONLINEAR,
                   help="the nonlinear remainder at u^n (implicit) or u^{n-1} (explicit, IMEX); as time.nonlinear")
    p.add_argument("--nx", type=_positive_int, default=20, help="cells in x (default 20: h = 0.025)")
    p.add_argument("--ny", type=_positive_int, default=40, help="cells in y (default 40)")
    p.add_argument("--steps", type=_positive_int, default=64, help="time steps (default 64)")
    p.add_argument("--target", default="difficult", help="target source of the synthetic data")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--h0", type=float, default=1e-2, help="largest Taylor step")
    p.add_argument("--taylor-steps", type=_positive_int, default=5, help="number of Taylor steps (halving)")
    p.add_argument("--fd-tol", type=float, default=FD_TOLERANCE,
                   help=f"largest accepted best relative FD error (default FD_TOLERANCE = {FD_TOLERANCE:g})")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.set_defaults(func=_cmd_gradcheck)

    p = sub.add_parser("train", help="train a neural PDE model from a TOML configuration")
    p.add_argument("config")
    p.add_argument("--out", help="run directory (default runs/<config name>)")
    p.add_argument("--resume", metavar="DIR", help="continue the run in DIR from its last checkpoint")
    p.add_argument("--overwrite", action="store_true", help="replace the run held in a non-empty --out directory")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.add_argument("--quiet", action="store_true", help="no progress bar (batch jobs)")
    p.add_argument("--check-gradient", action="store_true",
                   help="check the gradient (Taylor + finite differences) at the initial theta before the first "
                   "epoch; exit 3 with the figures if it fails (also: [run] check_gradient = true)")
    p.add_argument("--dry-run", action="store_true", help="only validate the configuration (no DOLFINx needed)")
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser("forward", help="solve the configured problem and write the fields")
    p.add_argument("config")
    p.add_argument("--out", help="output directory (default runs/<config name>-forward)")
    p.add_argument("--params", help="a checkpoint (.npz) whose network parameters to use")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.set_defaults(func=_cmd_forward)

    p = sub.add_parser(
        "sweep",
        help="the paper's width study: one training run per N (and seed); re-running resumes",
        description="One training run per N (and seed) in OUT/N<N>[-seed<s>]. Re-run with the same arguments, "
        "a sweep skips finished runs, resumes unfinished ones from their checkpoints and extends finished runs "
        "to a larger run.iterations; a run of another configuration is an error (exit 2) unless --overwrite.",
    )
    p.add_argument("config")
    p.add_argument("--N", required=True, help="comma-separated neuron counts, e.g. 10,100,500")
    p.add_argument("--seeds", help="comma-separated network seeds, one run per (N, seed), e.g. 0,1,2,3,4")
    p.add_argument("--out", help="output directory (default runs/<config name>-sweep)")
    p.add_argument("--overwrite", action="store_true", help="replace runs of another configuration held in OUT")
    p.add_argument("--no-outputs", action="store_true", help="write no fields or plots of the runs")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_cmd_sweep)

    from femnpde.app.schema import config_reference

    p = sub.add_parser(
        "config",
        help="validate a configuration (without DOLFINx) or print the configuration reference",
        description="femnpde config check CONFIG validates a run configuration; femnpde config reference "
        "prints the reference below.",
        epilog=config_reference(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("action", choices=["check", "reference"])
    p.add_argument("config", nargs="?", help="the TOML configuration (for check)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override a config value")
    p.set_defaults(func=_cmd_config)
    return parser


def _exit_code(err: BaseException) -> tuple[int, str]:
    """The exit code and message of an exception that reached the command line.

    2: bad input (ValueError, TypeError, OSError: the message names the key,
    file or option); 3: a solver failure; 130: interrupted; 1: a bug
    (the message is the traceback).
    """
    solver = sys.modules.get("femnpde.fem.solver")  # only a command that loaded it can fail in a solve
    if solver is not None and isinstance(err, solver.SolverError):
        return 3, f"femnpde: error: {err}"
    if isinstance(err, (ValueError, TypeError, OSError)):  # OSError: a file or directory that cannot be used
        return 2, f"femnpde: error: {err}"
    if isinstance(err, KeyboardInterrupt):
        return 130, "femnpde: error: interrupted"
    if isinstance(err, SystemExit):
        return 1, (
            f"femnpde: error: the command ended through SystemExit({err.code!r}) before finishing "
            "(does user code call sys.exit()?)"
        )
    import traceback

    return 1, "".join(traceback.format_exception(err)).rstrip() + "\nfemnpde: error: internal error (a bug)"


def _needs_mpi(args: argparse.Namespace) -> bool:
    """Whether the command loads MPI (validating a configuration does not)."""
    return not (args.command == "config" or getattr(args, "dry_run", False))


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``femnpde`` command; returns the exit code.

    Under MPI an error on any rank ends every rank with the message printed
    once (:class:`femnpde._mpi.ErrorGuard`).
    """
    _single_threaded_blas_under_mpi()
    parser = build_parser()
    args = parser.parse_args(argv)
    guard = None
    if _needs_mpi(args):
        from femnpde._mpi import ErrorGuard

        guard = ErrorGuard(_comm())
    try:
        code = int(args.func(args) or 0)
    except BaseException as err:  # noqa: BLE001 - every failure becomes an exit code on every rank
        code, message = _exit_code(err)
        if guard is None:
            if _rank() == 0:
                print(message, file=sys.stderr, flush=True)
            return code
        return guard.fail(message, code)
    if guard is not None:
        guard.close()
    return code
