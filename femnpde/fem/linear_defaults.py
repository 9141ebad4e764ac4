"""Linear solver defaults that scale, and what the adjoint needs from them.

:func:`default_linear_solver_options` picks the step solver from the problem
size, its dimension, the rank count and whether the step Jacobian is
symmetric and constant:

==========================================  =================================================
case                                        default
==========================================  =================================================
serial, 2D <= 300 000 unknowns, 3D <= 5 000  LU, PETSc's own (nested dissection); Cholesky
                                            (the same, half the factor) when the Jacobian
                                            is symmetric and constant
2D <= 300 000 on several ranks, symmetric,  the exact Schur-complement solver
constant Jacobian                           :class:`~femnpde.fem.schur_dd.SchurDD`: each
                                            rank factorises its interior (Cholesky), a
                                            dense Schur complement on the separator
                                            (n_S <= 3 000, else the redundant LU below)
the same sizes on several ranks, otherwise  the same LU on every rank (``pc_type redundant``)
2D <= 1 000 000, 3D <= 50 000               LU with MUMPS (else SuperLU_dist): one
                                            factorisation reused by every step when the
                                            Jacobian is constant
3D > 50 000, 2D > 1 000 000                 Krylov: CG (symmetric) or GMRES, ``ksp_rtol =
                                            1e-10``; 3D symmetric: one rank CG + ICC(1)
                                            (additive Schwarz ``basic``, overlap 1, one block),
                                            unpreconditioned norm; several ranks FGMRES
                                            (right-preconditioned) + restricted additive Schwarz
                                            (overlap 1) with ICC(1) blocks; 3D otherwise block
                                            Jacobi with ILU(0) blocks;
                                            2D: BoomerAMG (symmetric, if PETSc has hypre) else
                                            GAMG; a preconditioner is set up once (when the
                                            solver is built) as long as the operator is
==========================================  =================================================

Why (measured at 205 761 unknowns in 2D and 249 000 in 3D, the heat step
matrix ``M + dt γ K``, ``bench/scaling.py`` and its ``--solvers`` mode): this
PETSc links the reference (netlib) BLAS, so the dense kernels of the
multifrontal and supernodal solvers are unoptimised: a MUMPS triangular
solve took 50 ms on one rank and 52 ms on two (its solve phase does not
scale here), SuperLU_dist's 160 ms, PETSc's own sparse LU (no BLAS) 27 ms
(factorisation 1.6 s against MUMPS' 2.6 s).  On several ranks each rank
factorises and solves the whole system (``pc_type redundant``), which costs
what one rank costs and beats MUMPS' distributed solve.  In 3D the step
matrix ``M + dt γ K`` has ``dt γ / h^2`` of order 1 on the refined box, so a
cheap local preconditioner wins: per solve on one rank (a random right-hand
side, ``bench/scaling.py --case heat3d --solvers ...``, session 5) CG +
ICC(0) needed 24 iterations and 0.40 s, ICC(1) 12 and 0.35 s, ICC(2) 8 and
0.44 s, SSOR 27 and 0.39 s, Jacobi 68 and 0.46 s, GAMG 12 and 0.63 s
(session 4: BoomerAMG 6 iterations and 2.0 s, 0.83 s with 3D-tuned HMIS
coarsening; MUMPS 0.46 s per solve after a 436 s factorisation).  On two
ranks one ICC block per rank needs 33 (ICC(0)) and 29 (ICC(1)) iterations, the
interface being where the blocks miss the coupling; additive Schwarz with
overlap 1 needs 25 and 13, i.e. what one block needs: hence ASM(1)/ICC(1).
But the sweep's own systems are not random (session 6, ``bench/scaling.py
--case heat3d --solvers ... --rhs sweep``, which replays every 8th forward and
adjoint system of a heat loss + gradient from the guesses the sweep used, on
the one-rank mesh): the forward solves for the correction from ``u^{n-1}``,
so its initial residual *is* ``b`` (relative initial residual 1; the stopping
test ``‖b − A x‖ <= rtol ‖b‖`` is relative to it, on any rank count), and
``b = F(u^{n-1})`` is smooth.  On it CG + the symmetric ``basic`` ASM (which
adds both subdomains' corrections in the overlap) needs 11.6 / 10.2
iterations per forward / adjoint solve with one block and 16.7 / 14.6 with
two blocks on one rank, what two ranks needed in the sweep (16.9 / 14.9), so
the split, not the other mesh or the adjoint's guess, is the growth; more
overlap makes it worse (17.6 / 17.8 / 18.0 forward iterations for overlap
2 / 3 / 4).  Restricted ASM (PETSc's default ``restrict``, each overlap value
taken from one subdomain) needs 11.6 / 10.0 with one block and 11.7 / 10.2
with two (CPU per solve 385 ms against 459 ms for ``basic``, two blocks on one
rank, load 10).  It is not symmetric, so CG does not apply; GMRES with right
preconditioning keeps the true-residual stopping test, and on two ranks the
heat sweep took 12.5 / 8.5 iterations (load 12).  On one rank ``basic`` and
``restrict`` are the same single ICC(1) factor, and CG is cheaper per
iteration than GMRES (301 ms CPU per solve at load 7 against 350 ms at load 10),
so one rank keeps CG.  Several ranks run FGMRES, not GMRES (session 10): with
a fixed preconditioner its iterates are GMRES's, but it keeps the preconditioned
basis vectors, so the solution update costs a multi-axpy instead of the one
preconditioner application more per solve that right-preconditioned GMRES
needs (heat 3D sweep, 2 ranks, ``-log_view``: 419 against 483 applications
for 64 forward solves of 6.5 iterations).
Coarse spaces measured on the same replay (two blocks; GAMG's aggregates as
the coarse level, ``bench/scaling.py`` ``tl-*``): the additive two-level
correction needed 21–27 iterations, the multiplicative one (ASM smoothing
before and after) 6, but 467 ms CPU per solve, more than restricted ASM.
For diffusion-dominated steps (large ``dt``, coarse meshes) AMG's
mesh-independent iteration count wins; pass ``pc_type hypre`` / ``gamg`` then.

The KSP is set up when the solver is built, while these defaults are in the
options database: block Jacobi and ASM create their sub-solvers in the set-up
and read ``sub_*`` options only then (before session 5 the set-up came at the
first solve, so session 4's ``sub_pc_type icc`` never reached the blocks, which
ran block Jacobi's own default, ILU(0)).

Why the Schur-complement solver on several ranks (2D): the redundant LU's
triangular solve (27 ms at 205 761 unknowns, 73 % of a heat sweep) costs on
two ranks what it costs on one, and so does every exact parallel solver here
(reference BLAS).  :class:`~femnpde.fem.schur_dd.SchurDD` splits the
substitutions: each rank runs one triangular pair of its own half, plus
products with the sparse coupling and one allgather of the ``n_S`` separator
values (``n_S`` = 1 053 on the 321 x 641 rectangle on 2 ranks).  It is
exact (a direct solver), so losses and gradients agree with LU and across
rank counts to round-off.  It needs a symmetric positive definite matrix
that stays the same over many solves (its set-up, one forward substitution
per separator column and a dense ``n_S^3/3`` Cholesky, costs about three
factorisations), hence *symmetric and constant*: heat, the IMEX step, any
linear symmetric step; for a changing or possibly indefinite Newton matrix
the redundant LU stays the default (``constant = False``).  Above
:data:`~femnpde.fem.schur_dd.MAX_SEPARATOR` separator unknowns (many
ranks, long cuts) the dense Schur complement would dominate and the solver
falls back, inside the preconditioner, to the redundant LU
(``-{prefix}schur_dd_max_separator`` moves the bound).

What keeps the 2D DD below half of the serial step (session 6, under load, CPU
time; ``bench/dd_profile.py``; session 11's machine: forward 14.8, backward
9.4, fused 20.8 ms, the forward substitution latency-bound, the DD's apply
29 ms against the serial solve's 47 ms at 205 761 unknowns): PETSc's separate forward and backward
Cholesky substitutions cost ~1.8 ms per half-size solve more than its fused
solve (13.0–13.7 against 11.2–11.7 ms at 102 831 unknowns), and applying
the nested-dissection ordering to the matrix once so that the natural-ordering
kernels run does not change that (13.6–14.3 / 11.4–11.8 ms), so the factor keeps its own
ordering; the rest is the separator work (two ``V_r`` products, the dense
``n_s x n_S`` product, one allgather) and the parallel matrix-vector products
of the residual, the adjoint couplings and the misfit, each with a ghost
update.

Every choice is a default only: ``{prefix}forward_*`` / ``{prefix}adjoint_*``
command-line options and ``[solver] petsc_options`` override it.

The adjoint solves ``(∂F^n/∂u^n)^T λ = r``.  When the step Jacobian is
symmetric (heat, Allen–Cahn and every residual whose u-dependence is
symmetric in test and trial function) this *is* the forward system, so the
adjoint uses a plain solve and any preconditioner works; otherwise it needs
the transpose of the preconditioner, which some lack or apply poorly
(:data:`NO_TRANSPOSE`): :func:`check_adjoint_capable` says so before the run.

**Krylov tolerance and the gradient.** With an iterative solver each forward
step leaves a residual ``‖r^n‖ <= rtol ‖b^n‖`` and each adjoint step
``‖s^n‖ <= rtol ‖rhs^n‖`` (in the norm of ``ksp_norm_type``: the 3D default's
is the 2-norm of the true residual, on several ranks GMRES's with right
preconditioning).  Here ``b^n = F(u^{n-1})`` is the
residual of the step at the previous state (the forward solves for the
correction ``u^{n-1} − u^n``) and ``rhs^n`` the adjoint's right-hand side,
whatever the initial guess (the forward starts from ``u^{n-1}``; the adjoint,
``ThetaSolver(krylov_guess=...)``, from a projection onto the sweep's earlier
adjoints by default, :mod:`femnpde.fem.krylov_guess`):
PETSc's test with a nonzero initial guess is relative to ``‖b‖``, not to the
initial residual, so a better guess saves iterations and leaves the bound as it
is.  The computed gradient is then the exact gradient
of the discrete loss up to terms linear in these residuals: the state error
is ``δu^n = A^{-1} r^n`` (amplified at most by the step's condition number
κ, and damped by the stable time stepping), and the gradient error is
``O(κ · rtol · ‖dJ/dg‖)``.  Newton removes the forward part for nonlinear
steps (it iterates until ``‖F‖`` meets its own tolerance), the adjoint's
part remains.  Measured (``bench/scaling.py --accuracy``, 13 041 dofs, 32
steps, against MUMPS LU): the relative error of ``dJ/dg`` is 0.3-3 x
``ksp_rtol`` for rtol = 1e-6 ... 1e-12 with BoomerAMG and GAMG, heat and
Allen–Cahn (e.g. 3.4e-11 / 1.4e-10 at the default 1e-10).  The documented
tolerance of the iterative defaults is therefore a relative gradient error
<= 1e-8 (the tests check it, and 1 vs 2 ranks agree to it); the Taylor
test's rates stay at 2 and central finite differences agree to 1e-5.

**Nonlinear steps preconditioned by their linear part**
(``ThetaSolver(nonlinear_method="krylov")``, the default from
:data:`femnpde.fem.newton.KRYLOV_MIN_DOFS` unknowns): the Newton and adjoint
systems ``J x = b`` are solved by GMRES preconditioned by the constant linear
part ``P = A_lin`` (this module's default solver for it, set up once).  The
forward is exact to Newton's tolerance whatever the Krylov tolerance (the
residual ‖F‖ is evaluated exactly; measured: losses equal to the chord path's
bitwise at 861 and 13 041 dofs).  The adjoint stops on the preconditioned
residual, ``‖P⁻¹(b − J λ)‖ <= rtol ‖P⁻¹ b‖``, and ``P⁻¹ J`` is close to the
identity (Allen–Cahn with ``dt ε⁻² ≈ 0.15``: eigenvalues in about
[0.85, 1.3]), so that norm is within that spectrum's bounds of the error
``‖λ − λ_exact‖``: each adjoint step's relative error is about ``rtol``, and
``dJ/dg`` inherits it.  Measured (``bench/nonlinear_cost.py --accuracy``,
13 041 dofs, 64 steps, against the chord's adjoint): relative ``dJ/dg``
difference 8.5e-7 / 6.7e-9 / 6.8e-11 / 5.8e-13 for adjoint rtol 1e-6 / 1e-8 /
1e-10 / 1e-12 (5.5 / 7.3 / 9.1 / 10.9 GMRES iterations per adjoint step).
The default adjoint rtol is 1e-12: a relative gradient error <= 1e-10 (the
tests check it against the chord path and between 1 and 2 ranks).
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

__all__ = [
    "PETSC_LU_2D_MAX",
    "DIRECT_SERIAL_SMALL_3D",
    "DIRECT_2D_MAX",
    "DIRECT_3D_MAX",
    "NO_TRANSPOSE",
    "SCHUR_DD",
    "default_linear_solver_options",
    "is_symmetric",
    "check_adjoint_capable",
    "uses_krylov",
]

#: 2D systems up to this size use PETSc's own LU (on several ranks: on every rank);
#: measured faster than MUMPS up to 205 761 unknowns, on 1 and 2 ranks.
PETSC_LU_2D_MAX = 300_000
#: ... 3D systems only up to this size (PETSc's LU has no supernodes: MUMPS
#: factorises a 3D Jacobian several times faster).
DIRECT_SERIAL_SMALL_3D = 5_000
#: 2D systems up to this size use a direct solver (MUMPS above PETSC_LU_2D_MAX).
DIRECT_2D_MAX = 1_000_000
#: 3D systems up to this size use MUMPS; larger ones a Krylov method.
DIRECT_3D_MAX = 50_000
#: The exact Schur-complement solver (femnpde/fem/schur_dd.py): 2D, several ranks,
#: symmetric constant matrices up to PETSC_LU_2D_MAX unknowns.
SCHUR_DD = {"ksp_type": "preonly", "pc_type": "python", "pc_python_type": "femnpde.fem.schur_dd.SchurDD"}
#: Preconditioners whose transpose application is missing or ineffective:
#: BoomerAMG's transposed cycle (HYPRE_BoomerAMGSolveT) took 107-124 GMRES
#: iterations per adjoint step where the forward took 6-7 (a 2D Burgers step,
#: 29 000 unknowns).
NO_TRANSPOSE = frozenset({"hypre"})


def default_linear_solver_options(
    comm_size: int = 1, n_dofs: int = 0, gdim: int = 2, symmetric: bool = True, constant: bool = False
) -> dict[str, str]:
    """The default step solver (see the module docstring for the table).

    Args:
        comm_size: Number of ranks.
        n_dofs: Global number of unknowns.
        gdim: Geometric dimension of the mesh.
        symmetric: Whether the step Jacobian is symmetric.
        constant: Whether the matrix is the same for every solve of the
            sweep (heat, IMEX; a nonlinear step's constant linear part) and
            positive definite when symmetric: then a Cholesky factorisation
            (1 rank) or the Schur-complement solver (several ranks, 2D).

    Returns:
        PETSc options without prefix.
    """
    if n_dofs <= (PETSC_LU_2D_MAX if gdim <= 2 else DIRECT_SERIAL_SMALL_3D):
        lu = {"pc_type": "lu", "pc_factor_mat_solver_type": "petsc", "pc_factor_mat_ordering_type": "nd"}
        spd = symmetric and constant
        if comm_size == 1:
            return {"ksp_type": "preonly", **lu, **({"pc_type": "cholesky"} if spd else {})}
        if spd and gdim <= 2:
            return dict(SCHUR_DD)
        # On several ranks each rank factorises and solves the whole system (measured on 2
        # ranks against MUMPS, paper rectangle, 64 steps: heat loss+grad 8.9x faster at 861
        # dofs, 1.7x at 13 041; Allen-Cahn 2.7x and 1.6x; per solve 27 ms against 52 ms at
        # 205 761 dofs).
        return {"ksp_type": "preonly", "pc_type": "redundant", **{f"redundant_{k}": v for k, v in lu.items()}}
    if n_dofs <= (DIRECT_2D_MAX if gdim <= 2 else DIRECT_3D_MAX):
        opts = {"ksp_type": "preonly", "pc_type": "lu"}
        if PETSc.Sys.hasExternalPackage("mumps"):
            opts["pc_factor_mat_solver_type"] = "mumps"
        elif PETSc.Sys.hasExternalPackage("superlu_dist"):
            opts["pc_factor_mat_solver_type"] = "superlu_dist"
        elif comm_size == 1:
            opts["pc_factor_mat_solver_type"] = "petsc"
        else:  # no parallel direct solver: fall through to Krylov
            return _krylov(symmetric, gdim, comm_size)
        return opts
    return _krylov(symmetric, gdim, comm_size)


def _krylov(symmetric: bool, gdim: int, comm_size: int = 1) -> dict[str, str]:
    opts = {"ksp_type": "cg" if symmetric else "gmres", "ksp_rtol": "1e-10", "ksp_atol": "1e-50",
            "ksp_max_it": "1000"}
    if gdim == 3 and symmetric and comm_size > 1:
        # Restricted additive Schwarz (overlap 1, ICC(1) blocks): its iterations do not grow with the
        # subdomains on the sweep's smooth right-hand sides, where the symmetric "basic" variant's (which
        # adds both corrections in the overlap) grow by 44 %; it is not symmetric, hence GMRES, right-
        # preconditioned, so that the stopping test is ‖b − A x‖₂ <= rtol ‖b‖₂ as on one rank; flexible GMRES
        # (GMRES's iterates with a fixed preconditioner) saves the preconditioner application that GMRES's
        # solution update x = x0 + M⁻¹ V y costs.
        opts.update({"ksp_type": "fgmres", "ksp_pc_side": "right", "pc_type": "asm", "pc_asm_type": "restrict",
                     "pc_asm_overlap": "1", "sub_pc_type": "icc", "sub_pc_factor_levels": "1"})
    elif gdim == 3 and symmetric:
        # Additive Schwarz, overlap 1, symmetric ("basic": CG needs a symmetric preconditioner), ICC(1)
        # blocks; on one rank a single ICC(1) factor.  The unpreconditioned norm makes the stopping test
        # ‖b − A x‖₂ <= rtol ‖b‖₂ (and saves the preconditioner application that the preconditioned norm
        # of b costs with a nonzero initial guess).
        opts.update({"pc_type": "asm", "pc_asm_type": "basic", "pc_asm_overlap": "1", "sub_pc_type": "icc",
                     "sub_pc_factor_levels": "1", "ksp_norm_type": "unpreconditioned"})
    elif gdim == 3:
        opts.update({"pc_type": "bjacobi", "sub_pc_type": "ilu"})
    elif symmetric and PETSc.Sys.hasExternalPackage("hypre"):
        opts.update({"pc_type": "hypre", "pc_hypre_type": "boomeramg"})
    else:
        opts.update({"pc_type": "gamg"})
    return opts


def uses_krylov(ksp: PETSc.KSP) -> bool:
    """Whether the KSP iterates (anything but ``preonly``)."""
    return ksp.getType() != PETSc.KSP.Type.PREONLY


def is_symmetric(A: PETSc.Mat, rtol: float = 1e-12) -> bool:
    """Whether an assembled matrix is symmetric to ``rtol · ‖A‖_∞`` (collective)."""
    tol = rtol * max(A.norm(PETSc.NormType.INFINITY), np.finfo(float).tiny)
    return bool(A.isSymmetric(tol))


def check_adjoint_capable(ksp: PETSc.KSP, symmetric: bool) -> None:
    """Raise before the run if the adjoint would need a transpose the preconditioner lacks.

    Also refuses the Schur-complement solver (:data:`SCHUR_DD`) for a step
    Jacobian that is not symmetric: it is a Cholesky-based solver.

    Raises:
        ValueError: naming the options prefix, the preconditioner and the
            choices that work.
    """
    pc = ksp.getPC()
    if not symmetric and pc.getType() == "python" and type(pc.getPythonContext()).__name__ == "SchurDD":
        prefix = ksp.getOptionsPrefix()
        raise ValueError(
            f"the step Jacobian is not symmetric, but the solver under options prefix '{prefix}' is "
            f"femnpde.fem.schur_dd.SchurDD, which needs a symmetric positive definite matrix; use an LU, "
            f"e.g. -{prefix}pc_type lu -{prefix}pc_factor_mat_solver_type mumps, or -{prefix}pc_type redundant"
        )
    if symmetric:
        return
    pc_type = ksp.getPC().getType()
    if pc_type in NO_TRANSPOSE:
        raise ValueError(
            f"the step Jacobian is not symmetric, so the adjoint needs the transpose of the preconditioner, "
            f"but pc_type {pc_type!r} (options prefix '{ksp.getOptionsPrefix()}') has no effective transpose "
            f"(BoomerAMG's transposed cycle needs ~20x the forward iterations); use one that has, "
            f"e.g. -{ksp.getOptionsPrefix()}pc_type gamg, asm, bjacobi, ilu or lu"
        )
