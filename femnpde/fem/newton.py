"""One nonlinear theta step at nearly the cost of a linear one.

:class:`NonlinearStep` solves ``F^n(u^n) = 0`` for one time level with PETSc
SNES (``newtonls``, backtracking line search; options under
``{prefix}forward_snes_*``) and solves the adjoint step
``(∂F^n/∂u^n)^T λ = r``.  The residual is split once
(:func:`femnpde.fem.forms.split_residual`):

* the linear part is a set of matrices assembled once (``A_u u + A_{u'} u^{n-1}
  + A_g g^n + A_{g'} g^{n-1} + f_0``);
* the per-step part is assembled once per time step;
* only the nonlinear remainder (Allen–Cahn: ``ε⁻² u³ v``) is assembled per
  Newton iteration.

The Newton matrix is a *lagged* Jacobian ``P = A_u + ∂N/∂u`` at some earlier
iterate, factorised once and kept across iterations, steps, sweeps and
training iterations; it is refreshed only when the residual contracts by less
than ``refresh_ratio`` per iteration.  Newton converges to the same tolerances
as an exact Newton (the residual is always exact), so the discrete adjoint
stays exact.  The adjoint assembles the exact Jacobian at the stored state
(constant part copied, remainder assembled) and solves its transpose with
GMRES preconditioned by the same factorisation (``PCApplyTranspose``; plain
solves when the Jacobian is symmetric, as for Allen–Cahn), under
``{prefix}adjoint_ksp_*``.

With ``method="krylov"`` (:mod:`femnpde.fem.newton_krylov`) nothing is factorised per step or per
iteration: the Newton and adjoint systems are solved by GMRES preconditioned by the constant
linear part.
"""

from __future__ import annotations

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc
from dolfinx import cpp as _cpp
from dolfinx.fem import pack_coefficients, pack_constants
from petsc4py import PETSc

from femnpde.fem.chord import AcceleratedChord
from femnpde.fem.csr_jacobian import make_csr_jacobian
from femnpde.fem.newton_krylov import (
    KRYLOV_MIN_DOFS,
    METHODS,
    AdjointExtrapolation,
    default_nonlinear_method,
    krylov_adjoint_options,
    krylov_options,
)
from femnpde.fem.split_assembly import SplitAssembly

__all__ = [
    "KRYLOV_MIN_DOFS",
    "METHODS",
    "NonlinearStep",
    "StepStatistics",
    "default_nonlinear_method",
    "krylov_options",
    "options_with_defaults",
    "snes_reason",
    "ksp_reason",
]

_SNES_REASONS = {getattr(PETSc.SNES.ConvergedReason, k): k for k in dir(PETSc.SNES.ConvergedReason) if k.isupper()}
_KSP_REASONS = {getattr(PETSc.KSP.ConvergedReason, k): k for k in dir(PETSc.KSP.ConvergedReason) if k.isupper()}


def snes_reason(reason: int) -> str:
    """The name of a SNES converged reason (e.g. ``DIVERGED_LINE_SEARCH``)."""
    return _SNES_REASONS.get(int(reason), str(int(reason)))


def ksp_reason(reason: int) -> str:
    """The name of a KSP converged reason."""
    return _KSP_REASONS.get(int(reason), str(int(reason)))


def options_with_defaults(obj, prefix: str, options: dict[str, str], setup=None) -> None:
    """``obj.setFromOptions()`` under ``prefix`` with ``options`` as defaults the command line overrides.

    ``setup``: called as ``setup(obj)`` after ``setFromOptions`` while the defaults are still in the
    database (e.g. checks, then ``obj.setUp()``, so that solvers created during the set-up -- block
    Jacobi / ASM sub-solvers, ``sub_*`` -- read them too).
    """
    obj.setOptionsPrefix(prefix)
    opts = PETSc.Options()
    added = []
    for key, val in options.items():
        name = f"{prefix}{key}"
        if not opts.hasName(name):
            opts[name] = val
            added.append(name)
    try:
        obj.setFromOptions()
        if setup is not None:
            setup(obj)
    except PETSc.Error as err:
        # A Python preconditioner's option check (a ValueError naming the option and its valid
        # choices) reaches here wrapped in PETSc's error 101: give it to the caller as the
        # ValueError it is (bad input, exit code 2).
        if isinstance(err.__cause__, ValueError):
            raise err.__cause__ from None
        raise
    finally:
        for name in added:
            opts.delValue(name)


class StepStatistics:
    """Counters of the nonlinear solver (reset with :meth:`reset`)."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Zero all counters."""
        self.newton_iterations = 0
        self.forward_steps = 0
        self.forward_krylov_iterations = 0
        self.residual_evaluations = 0
        self.factorisations = 0
        self.forward_linear_solves = 0
        self.jacobian_assemblies = 0
        self.adjoint_steps = 0
        self.adjoint_krylov_iterations = 0

    def as_dict(self) -> dict[str, int]:
        """The counters as a dict."""
        return dict(vars(self))


class NonlinearStep:
    """Newton (SNES) for one nonlinear theta step, and the step's adjoint solve.

    The caller loads the step's coefficients into the problem's Functions
    (``u_prev``, ``g``, ``g_prev`` with ghosts, times) and the initial guess
    with the Dirichlet values into ``problem.u``; :meth:`solve` then leaves
    ``u^n`` in ``problem.u``.  For the adjoint, the caller loads ``u^n`` too.

    Args:
        problem: The :class:`~femnpde.fem.problem.ParabolicProblem`.
        prefix: The solver's options prefix; SNES and its KSP read
            ``{prefix}forward_``, the adjoint KSP ``{prefix}adjoint_``.
        linear_options: Options of the forward linear solver (the
            factorisation of the lagged Jacobian); ``pc_*`` options also define
            the adjoint's preconditioner, which is shared.
        rtol: Relative residual tolerance of Newton (``snes_rtol``).
        atol: Absolute residual tolerance (``snes_atol``).
        max_it: Maximum Newton iterations per step (``snes_max_it``).
        refresh_ratio: Refresh the lagged Jacobian when ‖F_k‖/‖F_{k-1}‖
            exceeds this (0: exact Newton, a new Jacobian every iteration).
        adjoint_refresh_its: Refactorise at the adjoint's state when its
            Krylov solve needs more iterations than this.
        anderson_depth: Depth of the Anderson acceleration of the chord
            iterations (0, the default: plain chord; measured on Allen–Cahn,
            depth 3 saves 7-10 % of the iterations but costs more than that
            in Python at 861 unknowns).
        symmetric: Whether the step Jacobian is symmetric (the
            :class:`~femnpde.fem.solver.ThetaSolver` probes it once): the
            adjoint then solves with the untransposed operator.
        method: ``"chord"`` or ``"krylov"`` (:data:`METHODS`; see the module
            docstring): with ``"krylov"``, ``linear_options`` configure the
            preconditioner (the constant linear part's solver).
        adjoint_rtol: The adjoint's Krylov tolerance with ``"krylov"``
            (``{prefix}adjoint_ksp_rtol`` overrides it).
    """

    def __init__(
        self,
        problem,
        prefix: str,
        linear_options: dict[str, str],
        *,
        rtol: float,
        atol: float,
        max_it: int,
        refresh_ratio: float = 0.03,
        adjoint_refresh_its: int = 12,
        anderson_depth: int = 0,
        symmetric: bool = False,
        method: str = "chord",
        adjoint_rtol: float = 1e-12,
    ) -> None:
        if method not in METHODS[1:]:
            raise ValueError(f"NonlinearStep: method {method!r} is not one of {list(METHODS[1:])}")
        self.method = method
        self.krylov = method == "krylov"
        p = problem
        self.problem = p
        self.prefix = prefix
        self.refresh_ratio = float(refresh_ratio)
        self.adjoint_refresh_its = int(adjoint_refresh_its)
        self.stats = StepStatistics()
        comm = p.comm
        parts = SplitAssembly(p)
        self._parts = parts
        self.split = parts.split
        self._bcs_cpp = [bc._cpp_object for bc in p.bcs]
        owned = p.bc_dofs
        self._bc_owned = owned[owned < p.n_owned]

        # Jacobians: the constant part with Dirichlet rows/columns (identity on
        # them), the lagged Newton matrix P and the adjoint's exact Jacobian,
        # all on the sparsity of the full Jacobian.
        self._A_bc = dolfinx.fem.petsc.create_matrix(p.forms.jacobian)
        if parts.nl_jac is not None:
            # The first final assembly fixes the stored pattern to the entries inserted (MPIAIJ drops
            # the others): insert every entry of the full Jacobian, which holds the linear part's and
            # the remainder's (the remainder alone missed the linear part's entries under MPI when it
            # lives on fewer cells or facets, e.g. a nonlinear boundary term).
            form = p.forms.jacobian
            _cpp.fem.petsc.assemble_matrix(self._A_bc, form._cpp_object, pack_constants(form),
                                           pack_coefficients(form), self._bcs_cpp)
            self._A_bc.assemble()
            self._A_bc.zeroEntries()
        if parts.lin_u is not None:
            dolfinx.fem.petsc.assemble_matrix(self._A_bc, parts.lin_u, bcs=p.bcs)
        else:
            _cpp.fem.petsc.insert_diagonal(self._A_bc, p.V._cpp_object, self._bcs_cpp, 1.0)
        self._A_bc.assemble()
        # ∂N/∂u through DOLFINx's CSR assembly and one MatSetValuesCOO (fem/csr_jacobian.py).
        self._csr_jac = make_csr_jacobian(self._A_bc, parts.nl_jac, self._bc_owned, p.V)
        if self._csr_jac is not None:
            self._P = self._csr_jac.create_matrix(f"{prefix}forward_")
            self._J = self._csr_jac.create_matrix(f"{prefix}adjoint_")
        else:
            self._P = self._A_bc.duplicate(copy=True)
            self._P.setOptionsPrefix(f"{prefix}forward_")
            self._J = self._A_bc.duplicate(copy=True)
            self._J.setOptionsPrefix(f"{prefix}adjoint_")
        self._N = None  # ∂N/∂u without boundary conditions (PETSc's path; created when first needed)
        self._bc_rows = (self._bc_owned + self._A_bc.getOwnershipRange()[0]).astype(PETSc.IntType)
        self._P_valid = False
        self._stale = True

        self._b = dolfinx.fem.petsc.create_vector(p.V)
        self._c = dolfinx.fem.petsc.create_vector(p.V)  # the step's constant part of F
        self._uvec = p.u.x.petsc_vec
        # SNES iterates on its own vector: trial points are copied into problem.u.
        self._x = dolfinx.fem.petsc.create_vector(p.V)
        self._x0 = dolfinx.fem.petsc.create_vector(p.V)

        # SNES with the forward linear solver.
        self._d = dolfinx.fem.petsc.create_vector(p.V)
        snes = PETSc.SNES().create(comm)
        snes.setFunction(self._snes_function, self._b)
        # The preconditioning matrix: the lagged Newton matrix, or (krylov) the constant linear part.
        self._pmat = self._A_bc if self.krylov else self._P
        snes.setJacobian(self._snes_jacobian, self._P, self._pmat)
        snes.setType(PETSc.SNES.Type.PYTHON)
        snes.setPythonContext(AcceleratedChord(self, anderson_depth))
        defaults = {
            "snes_linesearch_type": "bt",
            "snes_rtol": repr(float(rtol)),
            "snes_atol": repr(float(atol)),
            "snes_stol": "0",
            "snes_max_it": str(int(max_it)),
            **(krylov_options(linear_options, symmetric) if self.krylov else linear_options),
        }
        options_with_defaults(snes, f"{prefix}forward_", defaults)
        self._snes = snes
        self._ksp = snes.getKSP()
        #: The smallest relative tolerance of a Newton system's Krylov solve (krylov; each
        #: iteration asks for what its next iterate needs, never less than this).
        self.newton_ksp_rtol_min = self._ksp.getTolerances()[0]
        # Adjoint: GMRES on the exact Jacobian with the forward's factorisation (chord) or
        # GMRES preconditioned by the linear part (krylov).
        ksp_adj = PETSc.KSP().create(comm)
        if self.krylov:
            adj_defaults = krylov_adjoint_options(symmetric, adjoint_rtol)
        else:
            adj_defaults = {"ksp_type": "gmres", "ksp_rtol": "1e-13", "ksp_atol": "1e-50", "ksp_max_it": "300",
                            "ksp_gmres_restart": "60"}
        options_with_defaults(ksp_adj, f"{prefix}adjoint_", adj_defaults)
        ksp_adj.setPC(self._ksp.getPC())
        self._ksp_adj = ksp_adj
        # krylov: the adjoint solves start from 2 λ^{n+1} − λ^{n+2} (λ^{n+1} at the second step of a sweep).
        self._lam_guess = AdjointExtrapolation()
        # A symmetric step Jacobian (Allen–Cahn, nonlinear diffusion is not;
        # probed once by the ThetaSolver) lets the adjoint use plain solves,
        # cheaper than transpose solves.
        self.symmetric = bool(symmetric)
        self._last_norm = 0.0
        self._exact = False
        self._refreshed = False
        self.refreshed_now = False

    # ----------------------------------------------------------- assembly
    def _jacobian_into(self, M: PETSc.Mat) -> None:
        """M = constant part (Dirichlet rows identity) + ∂N/∂u at the current coefficients.

        Through DOLFINx's CSR assembly and one ``MatSetValuesCOO``
        (:mod:`femnpde.fem.csr_jacobian`) where it applies, else through
        PETSc's: ∂N/∂u assembled cell by cell without boundary conditions
        (faster than DOLFINx's per-entry Dirichlet skipping), its Dirichlet
        rows and columns zeroed afterwards.
        """
        if self._csr_jac is not None:
            self._csr_jac.assemble_into(M)
            return
        self._A_bc.copy(M, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        if self._parts.nl_jac is not None:
            if self._N is None:
                self._N = self._A_bc.duplicate(copy=False)
            form, Nm = self._parts.nl_jac, self._N
            Nm.zeroEntries()
            _cpp.fem.petsc.assemble_matrix(Nm, form._cpp_object, pack_constants(form), pack_coefficients(form), [])
            Nm.assemble()
            Nm.zeroRowsColumns(self._bc_rows, diag=0.0)
            M.axpy(1.0, Nm, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)

    def _load(self, x: PETSc.Vec) -> None:
        """Make problem.u (with ghosts) equal to x."""
        x.copy(self._uvec)
        self.problem.u.x.scatter_forward()

    # ---------------------------------------------------------- callbacks
    def _snes_function(self, snes, x: PETSc.Vec, b: PETSc.Vec) -> None:
        self._load(x)
        self.stats.residual_evaluations += 1
        self._parts.residual(x, self._c, b)
        # The iterate carries the Dirichlet values: those rows (u − u_D) vanish.
        b.array_w[self._bc_owned] = 0.0

    def _snes_jacobian(self, snes, x: PETSc.Vec, J: PETSc.Mat, P: PETSc.Mat) -> None:
        if self.krylov:  # the exact Jacobian at every iteration; the preconditioner is constant
            self._load(x)
            self._jacobian_into(self._P)
            self.refreshed_now = True
            self.stats.jacobian_assemblies += 1
            return
        it = snes.getIterationNumber()
        norm = snes.getFunctionNorm()
        if it == 0:
            refresh = self._stale or not self._P_valid
        else:
            # Refresh when the residual falls slowly; not while polishing a
            # converged iterate, whose contraction is limited by round-off.
            # Slow contraction: refresh once per step; if even then the residual
            # falls by less than 4x per iteration, refresh at every iteration
            # (exact Newton) for the rest of the step.
            iterating = snes.getConvergedReason() == 0
            ratio = norm / self._last_norm if self._last_norm > 0 else 0.0
            slow = ratio > self.refresh_ratio
            refresh = iterating and (slow and (not self._refreshed or ratio > 0.25) or self.refresh_ratio <= 0)
        self._last_norm = norm
        self.refreshed_now = bool(refresh or self._exact)
        if refresh or self._exact:
            self._load(x)
            self._jacobian_into(self._P)
            self._P_valid = True
            self._stale = False
            self._refreshed = True
            self.stats.factorisations += 1

    # -------------------------------------------------------------- solve
    def _step_constant(self) -> None:
        """c = A_{u'} u^{n-1} + A_g g^n + A_{g'} g^{n-1} + f0 + per-step terms."""
        self._parts.step_constant(self._c)

    def solve(self, n: int, t: float) -> int:
        """Solve step n (coefficients and initial guess loaded); return the Newton iterations.

        Raises:
            femnpde.fem.solver.SolverError: SNES did not converge, even with
                an exact Jacobian at every iteration.
        """
        from femnpde.fem.solver import SolverError

        self._step_constant()
        self._refreshed = False
        x = self._x
        self._uvec.copy(self._x0)  # the initial guess
        try:
            for attempt in range(2):
                self._x0.copy(x)
                self._snes.solve(None, x)
                reason = self._snes.getConvergedReason()
                self._count_forward()
                if reason > 0 or self._exact or self.refresh_ratio <= 0:
                    break
                # The lagged Jacobian may be too far off: retry with exact Newton.
                self._exact = True
        finally:
            self._exact = False
        self._load(x)
        if reason <= 0:
            ksp_r = self._ksp.getConvergedReason()
            raise SolverError(
                f"Newton (SNES) did not converge at time step {n} (t = {t:.6g}): converged reason "
                f"{snes_reason(reason)} ({int(reason)}) after {self._snes.getIterationNumber()} iterations, "
                f"residual {self._snes.getFunctionNorm():.3e}; last linear solve: KSP reason {ksp_reason(ksp_r)}; "
                f"reduce the time step or tune -{self.prefix}forward_snes_* / -{self.prefix}forward_ksp_* options"
            )
        return self._snes.getIterationNumber()

    def _count_forward(self) -> None:
        s = self.stats
        s.forward_steps += 1
        s.newton_iterations += self._snes.getIterationNumber()
        if self._snes.getType() != PETSc.SNES.Type.PYTHON:
            s.forward_krylov_iterations += self._snes.getLinearSolveIterations()

    def adjoint_solve(self, rhs: PETSc.Vec, lam: PETSc.Vec, n: int, t: float) -> None:
        """Solve ``(∂F^n/∂u^n)^T lam = rhs`` at the loaded state ``u^n`` (exact Jacobian)."""
        from femnpde.fem.solver import SolverError

        self._jacobian_into(self._J)
        self.stats.jacobian_assemblies += 1
        if not self.krylov and not self._P_valid:
            self._J.copy(self._P, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
            self._P_valid = True
            self.stats.factorisations += 1
        ksp = self._ksp_adj
        ksp.setOperators(self._J, self._pmat)
        if self.krylov:
            ksp.setInitialGuessNonzero(self._lam_guess.guess(lam))
        if self.symmetric:
            ksp.solve(rhs, lam)
        else:
            ksp.solveTranspose(rhs, lam)
        reason = ksp.getConvergedReason()
        its = ksp.getIterationNumber()
        self.stats.adjoint_steps += 1
        self.stats.adjoint_krylov_iterations += its
        if reason < 0:
            raise SolverError(
                f"adjoint linear solve at time step {n} (t = {t:.6g}) failed: KSP converged reason {ksp_reason(reason)} "
                f"({int(reason)}) after {its} iterations; check the options under '{self.prefix}adjoint_'"
            )
        if self.krylov:
            self._lam_guess.add(lam)
        if its > self.adjoint_refresh_its and not self.krylov:
            # Precondition the next (earlier) steps with this step's Jacobian.
            self._J.copy(self._P, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
            self.stats.factorisations += 1

    def adjoint_start(self) -> None:
        """Start an adjoint sweep: forget the previous sweep's adjoints (the guesses depend on this sweep only)."""
        self._lam_guess.reset()

    def coupling(self, name: str, lam: PETSc.Vec, out: PETSc.Vec) -> bool:
        """``out = (∂F^n/∂w)^T lam`` for w = ``name`` (u_prev, g, g_prev); False if F does not depend on w."""
        return self._parts.coupling(name, lam, out)

    def invalidate(self) -> None:
        """Refresh the lagged Jacobian at the next Newton iteration."""
        self._stale = True

    def save_lag(self) -> tuple:
        """The lagged Newton matrix and its refresh state (a copy), for :meth:`restore_lag`.

        Checkpointing recomputes forward steps in the middle of the adjoint
        sweep; restoring afterwards keeps the preconditioner the adjoint
        sees, hence the gradient, as without recomputation.
        """
        if self.krylov:  # nothing lagged: the preconditioner is the constant linear part
            return None
        return (self._P.copy(), self._P_valid, self._stale, self._last_norm)

    def restore_lag(self, saved: tuple) -> None:
        """Put back what :meth:`save_lag` returned (the factorisation follows the restored values)."""
        if saved is None:
            return
        P, self._P_valid, self._stale, self._last_norm = saved
        P.copy(self._P, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN)
        P.destroy()

    @property
    def snes(self) -> PETSc.SNES:
        """The forward SNES."""
        return self._snes

    @property
    def adjoint_ksp(self) -> PETSc.KSP:
        """The adjoint KSP."""
        return self._ksp_adj

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        if self._csr_jac is not None:
            self._csr_jac.forget(self._P)
            self._csr_jac.forget(self._J)
        objs = [self._snes, self._ksp_adj, self._A_bc, self._P, self._J, self._N, self._b, self._c, self._d, self._x,
                self._x0]
        for obj in objs:
            if obj is not None:
                obj.destroy()
        self._parts.destroy()
        self._lam_guess.destroy()
        self._snes = self._ksp_adj = None
