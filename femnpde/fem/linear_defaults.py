"""Linear solver defaults that scale, and what the adjoint needs from them.

:func:`default_linear_solver_options` picks the step solver from the problem
size, its dimension, the rank count and whether the step Jacobian is
symmetric and constant:

======================================  =====================================================
case                                    default
======================================  =====================================================
serial, <= 50 000 unknowns (3D: 5 000)  LU, PETSc's own (nested dissection): lowest latency
the same sizes on several ranks         the same LU on every rank (``pc_type redundant``): a
                                        distributed solver's per-solve latency dominates there
2D <= 1 000 000, 3D <= 50 000          LU with MUMPS (else SuperLU_dist): one factorisation
                                        reused by every step when the Jacobian is constant
3D > 50 000, 2D > 1 000 000            Krylov + algebraic multigrid: CG (symmetric) or GMRES,
                                        BoomerAMG (symmetric, if PETSc has hypre) else GAMG,
                                        ``ksp_rtol = 1e-10``; the AMG set-up is reused as long
                                        as the operator is (a constant Jacobian: every step,
                                        sweep and iteration)
======================================  =====================================================

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
``‖s^n‖ <= rtol ‖rhs^n‖``.  The computed gradient is then the exact gradient
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
"""

from __future__ import annotations

import numpy as np
from petsc4py import PETSc

__all__ = [
    "DIRECT_SERIAL_SMALL",
    "DIRECT_SERIAL_SMALL_3D",
    "DIRECT_2D_MAX",
    "NO_TRANSPOSE",
    "default_linear_solver_options",
    "is_symmetric",
    "check_adjoint_capable",
    "uses_krylov",
]

#: Serial systems up to this size use PETSc's own LU (lowest per-solve overhead).
DIRECT_SERIAL_SMALL = 50_000
#: ... in 3D only up to this size (PETSc's LU has no supernodes: MUMPS
#: factorises a 3D Jacobian several times faster).
DIRECT_SERIAL_SMALL_3D = 5_000
#: 2D systems up to this size use a parallel direct solver.
DIRECT_2D_MAX = 1_000_000
#: Preconditioners whose transpose application is missing or ineffective:
#: BoomerAMG's transposed cycle (HYPRE_BoomerAMGSolveT) took 107-124 GMRES
#: iterations per adjoint step where the forward took 6-7 (a 2D Burgers step,
#: 29 000 unknowns).
NO_TRANSPOSE = frozenset({"hypre"})


def default_linear_solver_options(
    comm_size: int = 1, n_dofs: int = 0, gdim: int = 2, symmetric: bool = True
) -> dict[str, str]:
    """The default step solver (see the module docstring for the table).

    Args:
        comm_size: Number of ranks.
        n_dofs: Global number of unknowns.
        gdim: Geometric dimension of the mesh.
        symmetric: Whether the step Jacobian is symmetric.

    Returns:
        PETSc options without prefix.
    """
    if n_dofs <= DIRECT_SERIAL_SMALL and (gdim <= 2 or n_dofs <= DIRECT_SERIAL_SMALL_3D):
        lu = {"pc_type": "lu", "pc_factor_mat_solver_type": "petsc", "pc_factor_mat_ordering_type": "nd"}
        if comm_size == 1:
            return {"ksp_type": "preonly", **lu}
        # Small systems on several ranks: each rank factorises and solves the whole system
        # (measured on 2 ranks against MUMPS, paper rectangle, 64 steps: heat loss+grad 8.9x
        # faster at 861 dofs, 1.7x at 13 041; Allen-Cahn 2.7x and 1.6x).
        return {"ksp_type": "preonly", "pc_type": "redundant", **{f"redundant_{k}": v for k, v in lu.items()}}
    if (gdim <= 2 and n_dofs <= DIRECT_2D_MAX) or n_dofs <= DIRECT_SERIAL_SMALL:
        opts = {"ksp_type": "preonly", "pc_type": "lu"}
        if PETSc.Sys.hasExternalPackage("mumps"):
            opts["pc_factor_mat_solver_type"] = "mumps"
        elif PETSc.Sys.hasExternalPackage("superlu_dist"):
            opts["pc_factor_mat_solver_type"] = "superlu_dist"
        elif comm_size == 1:
            opts["pc_factor_mat_solver_type"] = "petsc"
        else:  # no parallel direct solver: fall through to Krylov
            return _krylov(symmetric)
        return opts
    return _krylov(symmetric)


def _krylov(symmetric: bool) -> dict[str, str]:
    opts = {"ksp_type": "cg" if symmetric else "gmres", "ksp_rtol": "1e-10", "ksp_atol": "1e-50",
            "ksp_max_it": "1000"}
    if symmetric and PETSc.Sys.hasExternalPackage("hypre"):
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

    Raises:
        ValueError: naming the options prefix, the preconditioner and the
            choices that work.
    """
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
