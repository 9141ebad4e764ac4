"""Building a run from a resolved configuration: mesh, residual, problem, solver, source, misfit, reduced functional.

:func:`build_run` owns the PETSc objects it creates until it returns them in
a :class:`Run`: if a later step fails (a bad data file, a missing tag), the
solver and misfit built so far are destroyed (collectively) before the error
propagates.  A :class:`Run` is a context manager that destroys them on exit.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

import numpy as np
from mpi4py import MPI

from femnpde._mpi import FailureAgreement
from femnpde.app.build_observation import _field_misfit, _point_misfit
from femnpde.app.build_problem import _build_mesh, _build_residual, _dirichlet, _with_neumann
from femnpde.app.petsc_options import RunOptions, petsc_reason
from femnpde.app.resources import check_memory, estimate_memory, memory_budget
from femnpde.app.scenarios import paper_initial_condition
from femnpde.app.schema import ConfigError
from femnpde.app.synthetic import synthetic_field, target_for
from femnpde.app.validation import validate
from femnpde.fem.problem import ParabolicProblem, TimeGrid
from femnpde.fem.solver import ThetaSolver
from femnpde.model.base import Model
from femnpde.model.build import build_model
from femnpde.model.network import reference_learning_rate
from femnpde.model.parameters import PhysicalParameter
from femnpde.model.reduced import FunctionSource, NetworkSource, ReducedFunctional
from femnpde.obs.misfit import Misfit, TimeWeights

__all__ = ["Run", "build_run"]


@dataclass
class Run:
    """Everything a training run needs, built from a validated configuration.

    Attributes:
        cfg: The resolved configuration.
        problem: The PDE problem.
        solver: The forward/adjoint time stepper.
        network: The neural network (parameters at their initial values).
        source: The network sampled at the source dofs.
        misfit: The L2 loss against the data.
        rf: The reduced functional θ ↦ J(θ) with its adjoint gradient.
        target: The target source g* (synthetic data), else None.
        target_values: g* at the owned source dofs of every level, shape
            ``(n_steps + 1, n_owned_source)`` (synthetic data), else None.
        lr: The effective learning rate (scaled by ``N^(2β−1)`` if
            ``optimizer.scale_lr``).
    """

    cfg: dict[str, Any]
    problem: ParabolicProblem
    solver: ThetaSolver
    network: Model
    source: NetworkSource
    misfit: Misfit  # L2Misfit (field, subdomain) or PointMisfit (sensors)
    rf: ReducedFunctional
    target: FunctionSource | None
    target_values: np.ndarray | None
    lr: float
    field_data: np.ndarray | None = None  # synthetic data: the full-field solution h (owned dofs, before noise)
    agreement: FailureAgreement | None = None  # decides whether a failure's cleanup may be collective

    def destroy(self) -> None:
        """Destroy the PETSc objects of the solver and the misfit (collective)."""
        self.solver.destroy()
        self.misfit.destroy()
        if self.agreement is not None:
            self.agreement.free()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        """Destroy the PETSc objects; after an error only if every rank failed (else the others would wait)."""
        if exc is None or self.agreement is None or self.agreement.all_failed():
            self.destroy()


def build_run(
    cfg: Mapping[str, Any],
    comm: MPI.Comm = MPI.COMM_WORLD,
    petsc_options_prefix: str = "femnpde_",
) -> Run:
    """Build the problem, solver, network, data, loss and reduced functional of a run.

    Synthetic data (``data.kind = "synthetic"``) is the discrete solution of
    the same problem with the target source ``g*`` (same mesh, time grid and
    solver), plus the optional noise.  The noise is drawn from
    ``np.random.default_rng(data.noise_seed)`` for the whole global array,
    level by level, in an order of the dofs that does not depend on the
    partition, so the data is the same on any number of ranks.
    ``data.kind = "file"`` reads sensor values (``.npz``/``.csv``, with
    ``observation.kind = "sensors"``) or a space-time field (an adios4dolfinx
    ``.bp`` checkpoint, function ``data.name``, see :mod:`femnpde.io.fielddata`).

    Args:
        cfg: A configuration (validated and resolved here; may be partial).
        comm: The communicator the mesh is distributed over.
        petsc_options_prefix: PETSc options prefix of the solver.

    Returns:
        The :class:`Run`; the network holds its initial parameters.

    Raises:
        ConfigError: If the configuration is invalid, a file cannot be read,
            ``pde.residual`` cannot be imported, a facet tag is missing, or
            ``data.kind = "file"``.
    """
    cfg = validate(cfg)
    agreement = FailureAgreement(comm)
    try:
        return _build(cfg, comm, petsc_options_prefix, agreement)
    except BaseException:
        if agreement.all_failed():  # else another rank is elsewhere: no collective call
            agreement.free()
        raise


def _build(cfg: dict[str, Any], comm: MPI.Comm, petsc_options_prefix: str, agreement: FailureAgreement) -> Run:
    """:func:`build_run` for a validated configuration."""
    mcfg, pcfg, tcfg, obs = cfg["mesh"], cfg["pde"], cfg["time"], cfg["observation"]
    step = tcfg["theta"] * tcfg["T"] / tcfg["n_steps"]
    allen_cahn = "residual" not in pcfg and pcfg["preset"] == "allen-cahn"
    dt = tcfg["T"] / tcfg["n_steps"]
    if allen_cahn and tcfg["nonlinear"] == "explicit" and dt >= pcfg["epsilon"] ** 2 and comm.rank == 0:
        # IMEX: -u/eps^2 is implicit (the step matrix M/dt - M/eps^2 + gamma K is indefinite for dt >= eps^2),
        # u^3/eps^2 explicit (its slope 3u^2 dt/eps^2 is about 3 dt/eps^2 near u = +-1).
        warnings.warn(
            f"Allen-Cahn with time.nonlinear = \"explicit\" and dt = {dt:.4g} >= epsilon^2 = {pcfg['epsilon'] ** 2:.4g}: "
            "the step matrix is indefinite and the explicit cubic term may be unstable (a blow-up stops the run "
            "with exit code 3); "
            f"use time.n_steps > {int(tcfg['T'] / pcfg['epsilon'] ** 2)} or time.nonlinear = \"implicit\"",
            stacklevel=2,
        )
    if allen_cahn and tcfg["nonlinear"] == "implicit" and step >= pcfg["epsilon"] ** 2 and comm.rank == 0:
        warnings.warn(
            f"Allen-Cahn with theta*dt = {step:.4g} >= epsilon^2 = {pcfg['epsilon'] ** 2:.4g}: a time step may have "
            "several solutions, Newton may not converge and the loss may be non-smooth in the parameters; "
            f"use time.n_steps > {int(tcfg['theta'] * tcfg['T'] / pcfg['epsilon'] ** 2)}",
            stacklevel=2,
        )
    need_tags = any(not isinstance(b["where"], str) for b in cfg["boundary"]) or bool(cfg["neumann"])
    budget = memory_budget(comm)
    if mcfg["kind"] != "file":  # before the mesh: its size is known from the configuration
        cells = [int(c) for c in mcfg["cells"]]
        simplex = mcfg["cell_type"] in ("triangle", "tetrahedron")
        n_cells = math.prod(cells) * (math.factorial(len(cells)) if simplex else 1)
        check_memory(estimate_memory(cfg, n_cells, math.prod(c + 1 for c in cells), len(cells), comm.size), budget,
                     comm.size, f"mesh.cells = {cells}")
    mesh, facet_tags, cell_tags = _build_mesh(mcfg, comm, need_tags, obs["kind"] == "subdomain")
    tdim = mesh.topology.dim
    mesh.topology.create_entities(0)
    check_memory(estimate_memory(cfg, mesh.topology.index_map(tdim).size_global,
                                 mesh.topology.index_map(0).size_global, tdim, comm.size), budget, comm.size,
                 f"{mesh.topology.index_map(tdim).size_global} cells")
    pars = cfg.get("parameters", {})
    residual = _with_neumann(_build_residual(pcfg, tuple(pars)), cfg["neumann"], mesh, facet_tags, mesh.comm)
    # The problem holds the values the synthetic data are made with; the
    # reduced functional sets the [parameters] values for training.
    constants = {n: float(pcfg[n]) if "residual" not in pcfg else p.get("true", p["initial"]) for n, p in pars.items()}
    icfg = cfg["initial_condition"]
    ic: Any = paper_initial_condition if icfg["kind"] == "paper" else float(icfg["value"])
    problem = ParabolicProblem(
        mesh,
        residual,
        degree=pcfg["degree"],
        time=TimeGrid(tcfg["T"], tcfg["n_steps"]),
        theta=tcfg["theta"],
        nonlinear=tcfg["nonlinear"],
        initial_condition=ic,
        dirichlet=_dirichlet(cfg["boundary"], facet_tags, mesh.comm, tcfg["T"]),
        source=pcfg["source"],
        source_degree=pcfg["source_degree"],
        n_sources=cfg["network"].get("outputs", 1),
        constants=constants,
    )
    scfg = cfg["solver"]
    petsc_options = None
    if "petsc_options" in scfg:
        petsc_options = {
            k: ("true" if v else "false") if isinstance(v, bool) else str(v) for k, v in scfg["petsc_options"].items()
        }
    from petsc4py import PETSc

    try:
        with RunOptions(petsc_options_prefix, petsc_options):
            solver = ThetaSolver(  # the solvers read the options RunOptions set ({}: no defaults added)
                problem,
                petsc_options_prefix,
                None if petsc_options is None else {},
                newton_rtol=scfg["newton_rtol"],
                newton_atol=scfg["newton_atol"],
                newton_max_it=scfg["newton_max_it"],
                nonlinear_method=scfg["nonlinear_method"],
                forward_guess=scfg["forward_guess"],
                state_storage=cfg["run"]["state_storage"],
            )
    except PETSc.Error as err:
        raise _petsc_options_error(err, petsc_options) from err
    try:  # from here on, a failure must not leak the solver's PETSc objects
        run = _finish_run(cfg, problem, solver, cell_tags)
    except BaseException as err:
        if agreement.all_failed():  # destroying is collective: only if no rank is elsewhere
            solver.destroy()
        if isinstance(err, PETSc.Error):  # the first solve (synthetic data) sets the solvers up
            raise _petsc_options_error(err, petsc_options) from err
        raise
    run.agreement = agreement
    return run


def _petsc_options_error(err: BaseException, options: Mapping[str, str] | None) -> ConfigError:
    """A PETSc error while the solvers read or apply their options: bad input, with PETSc's reason."""
    given = ", ".join(f"{k} = {v}" for k, v in (options or {}).items()) or "the defaults"
    return ConfigError(
        f"solver.petsc_options ({given}, plus any -femnpde_* command-line options): PETSc rejected the solver "
        f"options: {petsc_reason(err)}", "solver.petsc_options")


def _finish_run(cfg: dict[str, Any], problem: ParabolicProblem, solver: ThetaSolver, cell_tags) -> Run:
    """The network, data, misfit and reduced functional of :func:`build_run` (the solver exists)."""
    ncfg, dcfg, lcfg, obs, mesh = cfg["network"], cfg["data"], cfg["loss"], cfg["observation"], problem.mesh
    try:
        network = build_model(ncfg, mesh.geometry.dim)
    except (ImportError, ValueError) as err:  # ModuleNotFoundError (no JAX) included
        raise ConfigError(f"[network]: {err}", "network.factory" if ncfg.get("kind") == "jax" else "network") from err
    source = NetworkSource(problem, network)
    weights = TimeWeights(
        rule=lcfg["time_rule"],
        include_initial=lcfg["include_initial"],
        levels=tuple(obs["levels"]) if "levels" in obs else None,
    )
    target = target_values = field_data = None
    if dcfg["kind"] == "synthetic":
        target = target_for(problem, dcfg["target"])
        target_values = target.values()  # one target per output (data.target)
        field_data = synthetic_field(solver, problem, target_values)
    if obs["kind"] == "sensors":
        misfit = _point_misfit(cfg, problem, field_data, weights)
    else:
        misfit = _field_misfit(cfg, problem, field_data, weights, cell_tags)
    parameters = [
        PhysicalParameter(n, p["initial"], p["trainable"], tuple(p.get("bounds", (None, None))), p.get("scale"))
        for n, p in cfg.get("parameters", {}).items()
    ]
    try:
        # The adjoint of every level is kept (for output) only when the states are.
        rf = ReducedFunctional(solver, source, misfit, keep_adjoint=solver.states.keeps_all_levels,
                               parameters=parameters)
    except BaseException:
        misfit.destroy()
        raise
    ocfg = cfg["optimizer"]
    scaled = ocfg["scale_lr"] and ncfg.get("kind", "shallow") == "shallow"  # the mean-field rate of the paper's network
    lr = reference_learning_rate(ocfg["lr"], ncfg["neurons"], ncfg["beta"]) if scaled else ocfg["lr"]
    return Run(
        cfg=cfg,
        problem=problem,
        solver=solver,
        network=network,
        source=source,
        misfit=misfit,
        rf=rf,
        target=target,
        target_values=target_values,
        lr=float(lr),
        field_data=field_data,
    )


