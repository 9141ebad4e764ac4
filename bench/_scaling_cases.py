"""The cases and the solver table of ``bench/scaling.py`` (also read by ``bench/dd_profile.py``).

``SOLVERS``: named PETSc option sets (``--solver NAME``; ``default`` is not here: it is
:func:`femnpde.fem.linear_defaults.default_linear_solver_options`); :func:`build`: the case's
problem (the paper's rectangle in 2D, the refined box with a cavity in 3D); :func:`target`: its source.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from mpi4py import MPI

from femnpde.app.scenarios import paper_problem, target_source
from femnpde.fem.problem import Dirichlet, ParabolicProblem, TimeGrid, allen_cahn, heat
from femnpde.io.meshes import read_mesh
from femnpde.io.refine import refine_uniformly
from femnpde.model.reduced import FunctionSource

__all__ = ["SOLVERS", "build", "target"]

HERE = Path(__file__).resolve().parent
SOLVERS = {
    "lu": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "mumps"},
    "petsclu": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "petsc",
                "pc_factor_mat_ordering_type": "nd"},
    "cg-hypre": {"ksp_type": "cg", "pc_type": "hypre", "pc_hypre_type": "boomeramg", "ksp_rtol": "1e-10"},
    "cg-gamg": {"ksp_type": "cg", "pc_type": "gamg", "ksp_rtol": "1e-10"},
    "redundant": {"ksp_type": "preonly", "pc_type": "redundant", "redundant_pc_type": "lu",
                  "redundant_pc_factor_mat_solver_type": "petsc", "redundant_pc_factor_mat_ordering_type": "nd"},
    "cg-bjacobi": {"ksp_type": "cg", "pc_type": "bjacobi", "sub_pc_type": "icc", "ksp_rtol": "1e-10"},
    "cg-hypre3d": {"ksp_type": "cg", "pc_type": "hypre", "pc_hypre_type": "boomeramg", "ksp_rtol": "1e-10",
                   "pc_hypre_boomeramg_strong_threshold": "0.5", "pc_hypre_boomeramg_coarsen_type": "HMIS",
                   "pc_hypre_boomeramg_interp_type": "ext+i", "pc_hypre_boomeramg_P_max": "4"},
    "cg-jacobi": {"ksp_type": "cg", "pc_type": "jacobi", "ksp_rtol": "1e-10"},
    "superlu-dist": {"ksp_type": "preonly", "pc_type": "lu", "pc_factor_mat_solver_type": "superlu_dist"},
    # what session 4's 3D default ran (its sub_pc_type icc was lost: the sub-solvers were set up after the
    # defaults had left the options database, so block Jacobi's own default ILU(0) ran); with --guess previous
    "s4-default": {"ksp_type": "cg", "pc_type": "bjacobi", "sub_pc_type": "ilu", "ksp_rtol": "1e-10"},
    # 3D candidates (session 5): fill levels, sub-block ordering, overlap, norm type, inner-product-free
    "cg-bjacobi-icc1": {"ksp_type": "cg", "pc_type": "bjacobi", "sub_pc_type": "icc", "sub_pc_factor_levels": "1",
                        "ksp_rtol": "1e-10"},
    "cg-bjacobi-icc2": {"ksp_type": "cg", "pc_type": "bjacobi", "sub_pc_type": "icc", "sub_pc_factor_levels": "2",
                        "ksp_rtol": "1e-10"},
    "cg-bjacobi-rcm": {"ksp_type": "cg", "pc_type": "bjacobi", "sub_pc_type": "icc",
                       "sub_pc_factor_mat_ordering_type": "rcm", "ksp_rtol": "1e-10"},
    "cg-bjacobi-unp": {"ksp_type": "cg", "pc_type": "bjacobi", "sub_pc_type": "icc",
                       "ksp_norm_type": "unpreconditioned", "ksp_rtol": "1e-10"},
    "cg-asm-icc": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_overlap": "1", "sub_pc_type": "icc",
                   "ksp_rtol": "1e-10"},
    "cg-asm-ilu": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_overlap": "1", "sub_pc_type": "ilu",
                   "ksp_rtol": "1e-10"},
    "cg-asm-icc1": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_overlap": "1", "sub_pc_type": "icc",
                    "sub_pc_factor_levels": "1", "ksp_rtol": "1e-10"},
    "cg-asm2-icc1": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_overlap": "2", "sub_pc_type": "icc",
                     "sub_pc_factor_levels": "1", "ksp_rtol": "1e-10"},
    "cg-asmb-icc1": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_type": "basic", "pc_asm_overlap": "1",
                     "sub_pc_type": "icc", "sub_pc_factor_levels": "1", "ksp_rtol": "1e-10"},
    # the 3D default with two ASM blocks on one rank: the block split's iterations without a second rank
    "cg-asmb2-icc1": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_type": "basic", "pc_asm_overlap": "1",
                      "pc_asm_blocks": "2", "sub_pc_type": "icc", "sub_pc_factor_levels": "1",
                      "ksp_norm_type": "unpreconditioned", "ksp_rtol": "1e-10"},
    # session 6: the 3D default itself, with overlap 2, with single-reduction CG; two-level: GAMG with two levels and
    # ICC(1) smoothing (a coarse space built once)
    "asm3d": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_type": "basic", "pc_asm_overlap": "1", "sub_pc_type": "icc",
              "sub_pc_factor_levels": "1", "ksp_norm_type": "unpreconditioned", "ksp_rtol": "1e-10"},
    "asm3d-o2": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_type": "basic", "pc_asm_overlap": "2",
                 "sub_pc_type": "icc", "sub_pc_factor_levels": "1", "ksp_norm_type": "unpreconditioned",
                 "ksp_rtol": "1e-10"},
    "asm3d-sr": {"ksp_type": "cg", "ksp_cg_single_reduction": "1", "pc_type": "asm", "pc_asm_type": "basic",
                 "pc_asm_overlap": "1", "sub_pc_type": "icc", "sub_pc_factor_levels": "1",
                 "ksp_norm_type": "unpreconditioned", "ksp_rtol": "1e-10"},
    "asm3d-pnorm": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_type": "basic", "pc_asm_overlap": "1",
                    "sub_pc_type": "icc", "sub_pc_factor_levels": "1", "ksp_rtol": "1e-10"},
    **{f"asm3d-b2-o{k}": {"ksp_type": "cg", "pc_type": "asm", "pc_asm_type": "basic", "pc_asm_overlap": str(k),
                          "pc_asm_blocks": "2", "sub_pc_type": "icc", "sub_pc_factor_levels": "1",
                          "ksp_norm_type": "unpreconditioned", "ksp_rtol": "1e-10"} for k in (2, 3, 4)},
    # restricted additive Schwarz (PETSc's default ASM type; not symmetric, hence GMRES / FGMRES-free: right-preconditioned);
    # session 8: its transpose "ash" (interpolate: owned residual in, whole overlapping solutions added), what
    # KSPSolveTranspose applies with a restricted ASM, and the symmetric "asb" (basic), overlap 1 or 2
    **{f"gmres-{kind}{'-o2' if overlap == 2 else ''}{'-b2' if b2 else ''}": {
        "ksp_type": "gmres", "ksp_pc_side": "right", "ksp_rtol": "1e-10", "pc_type": "asm", "pc_asm_type": asm_type,
        "pc_asm_overlap": str(overlap), "sub_pc_type": "icc", "sub_pc_factor_levels": "1",
        **({"pc_asm_blocks": "2"} if b2 else {})}
       for kind, asm_type in (("ras", "restrict"), ("ash", "interpolate"), ("asb", "basic"))
       for overlap in (1, 2) for b2 in (False, True)},
    # two-level: the ASM(1)/ICC(1) smoother plus a coarse correction on GAMG's aggregates (set up once)
    **{f"tl-{mg}-{agg}{'-b2' if b2 else ''}": {
        "ksp_type": "cg", "ksp_norm_type": "unpreconditioned", "ksp_rtol": "1e-10",
        "pc_type": "gamg", "pc_gamg_coarse_eq_limit": "20000", "pc_mg_type": mg, "pc_gamg_agg_nsmooths": "1" if "sm" in agg else "0",
        "pc_gamg_aggressive_coarsening": "1" if "agg" in agg else "0",
        "mg_levels_ksp_type": "preonly" if mg == "additive" else "richardson",
        "mg_levels_ksp_max_it": "1", "mg_levels_ksp_norm_type": "none",
        "mg_levels_pc_type": "asm", "mg_levels_pc_asm_type": "basic", "mg_levels_pc_asm_overlap": "1",
        "mg_levels_sub_pc_type": "icc", "mg_levels_sub_pc_factor_levels": "1",
        **({"mg_levels_pc_asm_blocks": "2"} if b2 else {}),
        "mg_coarse_ksp_type": "preonly", "mg_coarse_pc_type": "redundant", "mg_coarse_redundant_pc_type": "cholesky",
    } for mg in ("additive", "multiplicative") for agg in ("pc", "sm", "pc-agg", "sm-agg") for b2 in (False, True)},
    # session 9: flexible CG (Notay's truncated FCG, mmax vectors kept) with the restricted ASM: CG's per-iteration
    # cost, tolerant of the non-symmetric preconditioner; and CG with ASM type "none" (owned residual in, owned part
    # of the overlapping solution out: symmetric, a block Jacobi whose blocks see one layer beyond the partition)
    **{f"fcg{m}-ras": {"ksp_type": "fcg", "ksp_fcg_mmax": str(m), "ksp_norm_type": "unpreconditioned",
                       "ksp_rtol": "1e-10", "pc_type": "asm", "pc_asm_type": "restrict", "pc_asm_overlap": "1",
                       "sub_pc_type": "icc", "sub_pc_factor_levels": "1"} for m in (1, 2, 4)},
    "cg-asmn-icc1": {"ksp_type": "cg", "ksp_norm_type": "unpreconditioned", "ksp_rtol": "1e-10", "pc_type": "asm",
                     "pc_asm_type": "none", "pc_asm_overlap": "1", "sub_pc_type": "icc", "sub_pc_factor_levels": "1"},
    "gcr-ras": {"ksp_type": "gcr", "ksp_rtol": "1e-10", "pc_type": "asm", "pc_asm_type": "restrict",
                "pc_asm_overlap": "1", "sub_pc_type": "icc", "sub_pc_factor_levels": "1"},
    "cg-sor": {"ksp_type": "cg", "pc_type": "sor", "pc_sor_symmetric": "1", "ksp_rtol": "1e-10"},
    "cheby-jacobi": {"ksp_type": "chebyshev", "pc_type": "jacobi", "ksp_norm_type": "unpreconditioned",
                     "ksp_chebyshev_esteig": "0,0.1,0,1.1", "ksp_rtol": "1e-10"},
    "cholesky": {"ksp_type": "preonly", "pc_type": "cholesky", "pc_factor_mat_solver_type": "petsc",
                 "pc_factor_mat_ordering_type": "nd"},
    "dd": {"ksp_type": "preonly", "pc_type": "python", "pc_python_type": "femnpde.fem.schur_dd.SchurDD"},
}


def build(case: str, comm: MPI.Comm, n_steps: int, small: bool = False, nonlinear: str = "implicit") -> ParabolicProblem:
    pde = "heat" if case.startswith("heat") else "allen-cahn"
    if case.endswith("2d"):
        nx = 40 if small else 320
        return paper_problem(pde, comm=comm, nx=nx, ny=2 * nx, n_steps=n_steps, nonlinear=nonlinear)
    data = read_mesh(HERE.parent / "meshes" / "box_cavity.xdmf", comm, gdim=3)
    mesh, _, facets = refine_uniformly(data.mesh, 1 if small else 3, None, data.facet_tags)
    residual = heat(0.01) if pde == "heat" else allen_cahn(0.02, 0.5)
    return ParabolicProblem(
        mesh, residual, time=TimeGrid(1.0, n_steps),
        initial_condition=lambda x: 0.2 * np.sin(np.pi * x[0]) * np.sin(np.pi * x[1]) * np.sin(np.pi * x[2]),
        dirichlet=[Dirichlet((facets, 1), 0.0)], nonlinear=nonlinear,
    )


def target(problem: ParabolicProblem) -> np.ndarray:
    if problem.mesh.geometry.dim == 2:
        return FunctionSource(problem, target_source("difficult")).values()
    return FunctionSource(problem, lambda t, x: 2.0 * np.exp(-10 * ((x[0] - t) ** 2 + (x[1] - 0.5) ** 2))).values()
