"""Forward and adjoint theta-scheme sweeps on DOLFINx assemblers.

:class:`ThetaSolver` owns the PETSc objects of the time stepping (Jacobian
matrices, work vectors, the forward and adjoint KSPs) and runs the forward
sweep: when the Jacobian depends on neither the state, the source nor the
time (the residual is affine in ``u^n``: heat), one linear solve per step
with a matrix assembled and factorised once and reused across steps, sweeps
and training iterations; otherwise one PETSc SNES solve per step
(:class:`~femnpde.fem.newton.NonlinearStep`: constant matrices for the linear
part of the residual, only the nonlinear remainder assembled per iteration, a
lagged Jacobian factorised rarely).  The constant-Jacobian step, its KSP and
Krylov guesses are :mod:`femnpde.fem.linear_step`.  The adjoint sweep is
:func:`femnpde.fem.adjoint.adjoint_sweep`.  Everything is derived from the
UFL residual in :class:`~femnpde.fem.problem.ParabolicProblem`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc
from petsc4py import PETSc

from femnpde import defaults as D
from femnpde.fem.linear_defaults import (
    check_adjoint_capable,
    default_linear_solver_options,
    uses_krylov,
)
from femnpde.fem.adjoint import adjoint_sweep, probe_symmetry
from femnpde.fem.krylov_guess import FORWARD_GUESSES, KRYLOV_GUESSES, KrylovGuesses, check_forward_guess
from femnpde.fem.linear_step import LinearIterations, LinearStepMixin, SolverError, StackedBlocks
from femnpde.fem.newton import METHODS, NonlinearStep, default_nonlinear_method
from femnpde.fem.problem import ParabolicProblem
from femnpde.fem.split_assembly import SplitAssembly
from femnpde.fem.storage import MemoryStorage, StateStorage, plan_state_storage, storage_for

__all__ = ["ThetaSolver", "SolverError", "LinearIterations", "default_linear_solver_options", "KRYLOV_GUESSES",
           "FORWARD_GUESSES"]


class _Recompute:
    """The :class:`~femnpde.fem.checkpointing.Stepper` of one sweep: the solver's step with its source."""

    def __init__(self, solver: "ThetaSolver", source: np.ndarray) -> None:
        self._solver = solver
        self._source = source

    def step(self, n: int, u_prev: np.ndarray) -> np.ndarray:
        self._solver._recomputing = True  # its solves count as recomputed (linear_iterations)
        try:
            self._solver.forward_step(n, self._source, u_prev)
        finally:
            self._solver._recomputing = False
        return self._solver.problem.u.x.array

    def begin(self) -> None:
        """Before recomputing: keep the nonlinear step's lagged Newton matrix (the adjoint's preconditioner)."""
        step = self._solver._step
        self._saved = step.save_lag() if step is not None else None

    def end(self) -> None:
        """After recomputing: restore it, so the adjoint sees what it would without recomputation."""
        if self._saved is not None:
            self._solver._step.restore_lag(self._saved)
            self._saved = None


class ThetaSolver(LinearStepMixin):
    """Forward and adjoint sweeps of a :class:`ParabolicProblem`.

    Args:
        problem: The PDE problem.
        petsc_options_prefix: Required options prefix (e.g. ``"femnpde_"``);
            the forward solvers (SNES and its KSP for nonlinear problems)
            read ``{prefix}forward_``, the adjoint ``{prefix}adjoint_``.
        petsc_options: Options for the linear solvers (default: direct LU).
            For nonlinear problems they define the factorisation of the lagged
            Newton matrix; the adjoint shares its preconditioner and keeps
            its own Krylov method (GMRES, rtol 1e-13; ``{prefix}adjoint_ksp_*``).
        newton_rtol: Relative tolerance of Newton (residual norm; ``snes_rtol``).
        newton_atol: Absolute tolerance of Newton (residual norm; ``snes_atol``).
        newton_max_it: Maximum Newton iterations per step (``snes_max_it``).
        fast_affine: For fully affine problems (e.g. heat), precompute the
            step matrices and replace assembly by matrix-vector products.
        jacobian_refresh_ratio: Nonlinear problems: refresh (reassemble and
            refactorise) the lagged Newton matrix when the residual falls by
            less than this factor in one iteration; 0 gives exact Newton.
        state_storage: Where the forward sweep keeps the states for the
            adjoint: ``"memory"`` (all levels) or a checkpointing budget,
            ``{"snapshots": K}`` or ``{"budget": "2GB"}`` (per rank), with
            optional ``"disk_snapshots"`` (see
            :func:`femnpde.fem.storage_plan.validate_state_storage`); the
            chosen plan is :attr:`storage_plan`.
        krylov_guess: Initial guess of the adjoint's Krylov solves of a
            constant step Jacobian (the stopping test stays ``rtol · ‖b‖``):
            ``"previous"`` (``λ^{n+1}``), ``"extrapolate"`` (``2 λ^{n+1} − λ^{n+2}``)
            or ``"projection"`` (symmetric Jacobians: the energy-norm projection
            onto the sweep's last adjoints,
            :class:`~femnpde.fem.krylov_guess.ProjectedGuess`; otherwise
            "extrapolate").  The forward's guess is ``forward_guess``, whatever
            this choice.
        forward_guess: Initial guess of the forward's Krylov solves of a
            constant symmetric step Jacobian: ``"previous"`` (``u^{n-1}``, the
            default) or ``"projection"`` (the energy-norm projection onto the
            sweep's earlier corrections; about half the forward iterations
            of the 3D defaults; with every level in memory only (``"memory"``,
            or a budget that holds them), since recomputed states would not
            be bitwise the stored ones; losses and gradients then differ from
            the default's at the Krylov tolerance).  No effect with a direct
            solver; refused (``ValueError``, before any PETSc object exists)
            for a step Jacobian that is not constant (Newton) or not symmetric.
        nonlinear_method: Nonlinear problems: how the Newton and adjoint
            systems are solved (:data:`femnpde.fem.newton.METHODS`):
            ``"chord"`` (a lagged Newton matrix, factorised when the residual
            falls slowly), ``"krylov"`` (GMRES preconditioned by the
            constant linear part, factorised once; ``petsc_options`` then
            configure that preconditioner) or ``"auto"`` (``"krylov"`` from
            :data:`femnpde.fem.newton.KRYLOV_MIN_DOFS` unknowns when
            ``petsc_options`` is None; the chosen one is :attr:`nonlinear_method`).
    """

    def __init__(
        self,
        problem: ParabolicProblem,
        petsc_options_prefix: str,
        petsc_options: dict[str, str] | None = None,
        *,
        newton_rtol: float = D.NEWTON_RTOL,
        newton_atol: float = D.NEWTON_ATOL,
        newton_max_it: int = D.NEWTON_MAX_IT,
        fast_affine: bool = True,
        jacobian_refresh_ratio: float = 0.03,
        state_storage: str | dict = "memory",
        krylov_guess: str = "projection",
        forward_guess: str = D.FORWARD_GUESS,
        nonlinear_method: str = D.NONLINEAR_METHOD,
    ) -> None:
        if not isinstance(petsc_options_prefix, str) or not petsc_options_prefix:
            raise ValueError("ThetaSolver: petsc_options_prefix must be a non-empty string, e.g. 'femnpde_'")
        if nonlinear_method not in METHODS:
            raise ValueError(f"ThetaSolver: nonlinear_method {nonlinear_method!r} is not one of {list(METHODS)}")
        self.problem = problem
        self.prefix = petsc_options_prefix
        forms = problem.forms
        comm = problem.comm
        imap = problem.V.dofmap.index_map
        #: Whether the step Jacobian is symmetric: the adjoint then solves
        #: with the untransposed operator (any preconditioner works).
        self.symmetric = probe_symmetry(problem)
        check_forward_guess(forward_guess, "ThetaSolver: ")
        # Planned (and checked) before any PETSc object exists; the storage is built below.
        n_local = imap.size_local + imap.num_ghosts
        self.n_levels = problem.time.n_steps + 1
        plan = plan_state_storage(state_storage, self.n_levels, n_local, comm)
        if forward_guess != "previous":
            if not (forms.jacobian_constant and self.symmetric):
                why = "is not constant (a nonlinear step: Newton)" if not forms.jacobian_constant else "is not symmetric"
                raise ValueError(
                    f"ThetaSolver: forward_guess = {forward_guess!r} starts the Krylov solves of a constant symmetric "
                    f"step Jacobian, and this step's Jacobian {why}; use forward_guess = 'previous'")
            if plan.kind != "memory":
                raise ValueError(
                    f"ThetaSolver: forward_guess = {forward_guess!r} needs every level in memory (state_storage = "
                    f"{state_storage!r} plans {plan.kind}): a checkpointing storage recomputes states, which only the "
                    "guess 'previous' reproduces bitwise")
        options = (
            default_linear_solver_options(comm.size, imap.size_global, problem.mesh.geometry.dim, self.symmetric,
                                          constant=forms.jacobian_constant)
            if petsc_options is None
            else dict(petsc_options)
        )
        self.newton_rtol = float(newton_rtol)
        self.newton_atol = float(newton_atol)
        self.newton_max_it = int(newton_max_it)
        self.max_backtracks = 10

        self._b = dolfinx.fem.petsc.create_vector(problem.V)
        self._du = dolfinx.fem.petsc.create_vector(problem.V)
        self._A_current = False
        self._step: NonlinearStep | None = None
        #: The nonlinear step's method (``"chord"`` / ``"krylov"``; None when the Jacobian is constant).
        self.nonlinear_method: str | None = None
        if forms.jacobian_constant:
            self._setup_constant_jacobian(options)
        else:
            method = nonlinear_method
            if method == "auto":
                method = default_nonlinear_method(imap.size_global, petsc_options is None)
            self.nonlinear_method = method
            if method == "krylov" and petsc_options is None:
                # The preconditioner is the constant linear part: the constant matrices' default
                # (Cholesky on one rank, the Schur-complement solver on several in 2D, when symmetric).
                options = default_linear_solver_options(comm.size, imap.size_global, problem.mesh.geometry.dim,
                                                        self.symmetric, constant=True)
            self._make_step = lambda: NonlinearStep(
                problem,
                self.prefix,
                options,
                rtol=self.newton_rtol,
                atol=self.newton_atol,
                max_it=self.newton_max_it,
                refresh_ratio=jacobian_refresh_ratio,
                symmetric=self.symmetric,
                method=method,
            )
            self._step = self._make_step()
            self._A = None
            self._ksp = self._step.snes.getKSP()
            self._ksp_adj = self._step.adjoint_ksp
        check_adjoint_capable(self._ksp_adj, self.symmetric)
        # Krylov adjoints of constant Jacobians start from λ^{n+1} (zero at the start of each sweep).
        self._adjoint_warm = self._step is None and uses_krylov(self._ksp_adj)
        self._ksp_adj.setInitialGuessNonzero(self._adjoint_warm)
        self._guesses: KrylovGuesses | None = None
        self._forward_guess = forward_guess
        self.krylov_guess = krylov_guess
        self._rhs = dolfinx.fem.petsc.create_vector(problem.V)
        self._c = dolfinx.fem.petsc.create_vector(problem.V)
        self._r = dolfinx.fem.petsc.create_vector(problem.G)
        self._have_c = False
        self._n_local = n_local
        self.storage_plan = plan
        self.states: StateStorage = storage_for(plan, self.n_levels, n_local)
        self.adjoints: MemoryStorage | None = None
        self.newton_iterations = np.zeros(self.n_levels, dtype=np.int32)
        #: Krylov iterations of each linear solve of the last forward and adjoint sweeps (constant Jacobians).
        self.linear_iterations = LinearIterations()
        self._recomputing = False
        #: ``dJ/dc`` of the constants named in the last :meth:`adjoint` call.
        self.constant_gradient: dict[str, float] = {}
        owned = problem.bc_dofs
        self._bc_owned = owned[owned < problem.n_owned]
        # Persistent views of the coefficient arrays (the property access is slow).
        self._arrays = {
            "u": problem.u.x.array,
            "u_prev": problem.u_prev.x.array,
            "g": problem.g.x.array,
            "g_prev": problem.g_prev.x.array,
        }
        self._times = problem.time.times
        self._need_g_prev = forms.adj_gprev is not None or problem.theta < 1.0
        # IMEX (problem.nonlinear = "explicit"): the residual is affine in u^n with a constant
        # Jacobian; its linear part becomes matrices, only the per-step part (holding the
        # remainder at u^{n-1}) is assembled, once per step, and once per adjoint step.
        imex = fast_affine and self._step is None and forms.linear is None and problem.nonlinear == "explicit"
        self._imex: SplitAssembly | None = SplitAssembly(problem) if imex else None
        # Its per-step constant (not the adjoint's coupling vector: a checkpointing storage
        # recomputes forward steps in the middle of the adjoint sweep).
        self._c_step = dolfinx.fem.petsc.create_vector(problem.V) if imex else None
        # Constant derivative blocks (∂F/∂u_prev, ∂F/∂g, ∂F/∂g_prev), assembled once, side by side.
        blocks = fast_affine and self._step is None and not imex
        self._block_names: tuple[str, ...] = tuple(forms.constant_blocks or {}) if blocks else ()
        self._fast_linear = forms.linear is not None and fast_affine
        self._lin: StackedBlocks | None = None
        self._adj_blocks: StackedBlocks | None = None
        self._f0: PETSc.Vec | None = None
        self._setup_blocks()

    def set_constants(self, values: dict[str, float]) -> None:
        """Set named constants of the residual (``problem.constants``); reassemble what depends on them.

        The matrices assembled once (constant Jacobian and its factorisation,
        constant derivative blocks, the affine fast path) are rebuilt only
        when a value actually changes.

        Raises:
            KeyError: A name is not a constant of the problem.
        """
        consts = self.problem.constants
        changed = False
        for name, value in values.items():
            if name not in consts:
                raise KeyError(f"ThetaSolver.set_constants: {name!r} is not a constant of the problem; "
                               f"constants: {sorted(consts)}")
            if float(consts[name].value) != float(value):
                consts[name].value = value
                changed = True
        if not changed:
            return
        self.reset()  # the constant Jacobian and its factorisation
        if self._step is not None:
            # The nonlinear step assembled the constant (linear) parts of F once: rebuild it.
            self._step.destroy()
            self._step = self._make_step()
            self._ksp = self._step.snes.getKSP()
            self._ksp_adj = self._step.adjoint_ksp
        self._destroy_blocks()
        self._setup_blocks()
        if self._imex is not None:
            self._imex.destroy()
            self._imex = SplitAssembly(self.problem)

    # ----------------------------------------------------------- properties
    @property
    def A(self) -> PETSc.Mat | None:
        """The forward step Jacobian (constant-Jacobian problems; None for nonlinear ones)."""
        return self._A

    @property
    def ksp(self) -> PETSc.KSP:
        """The forward linear solver (the SNES's KSP for nonlinear problems)."""
        return self._ksp

    @property
    def snes(self) -> PETSc.SNES | None:
        """The forward nonlinear solver (None when the Jacobian is constant)."""
        return self._step.snes if self._step is not None else None

    @property
    def statistics(self) -> dict[str, int]:
        """Nonlinear-solver counters since the last :meth:`reset_statistics` (empty for constant Jacobians)."""
        return self._step.stats.as_dict() if self._step is not None else {}

    def reset_statistics(self) -> None:
        """Zero the counters of :attr:`statistics`."""
        if self._step is not None:
            self._step.stats.reset()

    @property
    def adjoint_ksp(self) -> PETSc.KSP:
        """The adjoint linear solver (the forward one when the Jacobian is constant)."""
        return self._ksp_adj

    def reset(self) -> None:
        """Forget the assembled constant Jacobian (call after changing coefficients in the form)."""
        self._A_current = False
        if self._step is not None:
            self._step.invalidate()

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        objs = [self._b, self._du, self._rhs, self._c, self._r, self._c_step]
        if self._step is not None:
            self._step.destroy()
            self._step = None
        else:
            objs += [self._A, self._ksp]
        if self._guesses is not None:
            self._guesses.destroy()
            self._guesses = None
        self._destroy_blocks()
        if self._imex is not None:
            self._imex.destroy()
            self._imex = None
        for obj in objs:
            if obj is not None:
                obj.destroy()
        self._A = self._ksp = self._ksp_adj = None

    # ------------------------------------------------------------- helpers
    def _set_step(
        self, n: int, source: np.ndarray, u_n: np.ndarray | None, u_prev: np.ndarray | None = None
    ) -> None:
        """Load the coefficients of step n: u_prev = u^{n-1}, g, g_prev, times (and u = u^n if given)."""
        p = self.problem
        a = self._arrays
        a["u_prev"][:] = self.states.load(n - 1) if u_prev is None else u_prev
        if u_n is not None:
            a["u"][:] = u_n
        ng = p.n_owned_source
        a["g"][:ng] = source[n]
        if self._need_g_prev:
            a["g_prev"][:ng] = source[n - 1]
        if self._lin is None:
            # Assembled forms read ghost values and the time constants; the
            # matrix-vector fast path needs neither (see _sync_coefficients).
            self._sync_coefficients(n)

    def _sync_coefficients(self, n: int) -> None:
        """Ghost values of g, g_prev and the time constants of step n, as any assembly expects."""
        p = self.problem
        p.g.x.scatter_forward()
        if self._need_g_prev:
            p.g_prev.x.scatter_forward()
        p.t.value = self._times[n]
        p.t_prev.value = self._times[n - 1]

    @staticmethod
    def _assemble_action(vec: PETSc.Vec, form) -> None:
        """Assemble a linear form into ``vec`` (owned entries complete)."""
        with vec.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(vec, form)
        vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)

    # ------------------------------------------------------------- forward
    def forward_step(self, n: int, source: np.ndarray, u_prev: np.ndarray | None = None) -> int:
        """Solve time level ``n`` from ``u^{n-1}``; ``problem.u`` then holds ``u^n``.

        Args:
            n: The level, 1 <= n <= n_steps.
            source: Source values of all levels (as for :meth:`forward`).
            u_prev: Local array (owned and ghost entries) of ``u^{n-1}``;
                default: level n - 1 of :attr:`states`.

        Returns:
            The number of Newton iterations.

        Raises:
            SolverError: Newton or the linear solver failed.
        """
        p = self.problem
        self._set_step(n, source, None, u_prev)
        # Initial guess: the previous state with this step's Dirichlet values.
        p.u.x.array[:] = self._arrays["u_prev"]
        p.update_dirichlet(self._times[n])
        for bc in p.bcs:
            bc.set(p.u.x.array)
        if self._step is not None:
            it = self._step.solve(n, self._times[n])
        else:
            it = self._linear_step(n)
        self.newton_iterations[n] = it
        return it

    def forward(self, source: np.ndarray, step_callback: Callable[[int], None] | None = None) -> StateStorage:
        """Run the forward sweep.

        Args:
            source: Source values on the owned source dofs at every level,
                shape ``(n_steps + 1, n_owned_source)``.
            step_callback: Called as ``step_callback(n)`` after step n, with
                ``problem.u`` holding ``u^n``.

        Returns:
            The storage holding ``u^0 .. u^N`` (local arrays with ghosts).
            Afterwards the problem's coefficients (``u``, ``u_prev``, ``g``,
            ``g_prev`` with ghosts, ``t``, ``t_prev``) are those of the last step.

        Raises:
            SolverError: Newton or the linear solver failed at some step.
        """
        p = self.problem
        source = np.asarray(source)
        expected = (self.n_levels, p.n_owned_source)
        if source.shape != expected:
            raise ValueError(f"ThetaSolver.forward: source has shape {source.shape}, expected {expected}")
        if hasattr(self.states, "attach"):
            self.states.attach(_Recompute(self, source))
        self.linear_iterations.forward = []
        if self._guesses is not None:
            self._guesses.forward_start()
        self.states.store(0, p.u0.x.array)
        p.u.x.array[:] = p.u0.x.array
        for n in range(1, self.n_levels):
            self.forward_step(n, source, p.u.x.array)
            self.states.store(n, p.u.x.array)
            if step_callback is not None:
                step_callback(n)
        if self._lin is not None:
            self._sync_coefficients(self.n_levels - 1)
        return self.states

    # ------------------------------------------------------------- adjoint
    def adjoint(
        self,
        source: np.ndarray,
        misfit_gradient: Callable[[int, np.ndarray, np.ndarray], None],
        keep_adjoint: bool = False,
        constants: tuple[str, ...] = (),
    ) -> np.ndarray:
        """Run the adjoint sweep backwards in time.

        Args:
            source: The source values of the forward sweep, shape
                ``(n_steps + 1, n_owned_source)``.
            misfit_gradient: ``misfit_gradient(n, u_owned, out_owned)`` adds
                ``∂J/∂u^n`` (owned entries) to ``out_owned``.
            keep_adjoint: Keep ``λ^n`` of every level in :attr:`adjoints`.
            constants: Names of residual constants whose gradient
                ``dJ/dc = Σ_n λ^n · ∂F^n/∂c`` is accumulated during the sweep
                into :attr:`constant_gradient` (summed over ranks).

        Returns:
            ``dJ/dg`` on the owned source dofs at every level,
            shape ``(n_steps + 1, n_owned_source)``: the sensitivity of the
            discrete loss to the source values the network provides.
        """
        return adjoint_sweep(self, source, misfit_gradient, keep_adjoint, constants)
