"""The adjoint sweep of the theta scheme, and the symmetry probe that lets it use plain solves.

:func:`adjoint_sweep` runs backwards in time for a
:class:`~femnpde.fem.solver.ThetaSolver` (whose :meth:`~femnpde.fem.solver.ThetaSolver.adjoint`
calls it): one solve per step with the transpose of the step Jacobian at the
stored state (the forward matrix and its factorisation when the Jacobian is
constant, IMEX steps included; GMRES on the exact Jacobian preconditioned by
the lagged Newton matrix for nonlinear steps), the coupling to the next step from
``(∂F^{n+1}/∂u^n)^T λ^{n+1}``, and the source sensitivities
``(∂F^n/∂g^n)^T λ^n + (∂F^{n+1}/∂g^n)^T λ^{n+1}`` on the source space.
:func:`probe_symmetry` tests once whether the step Jacobian is symmetric: the
adjoint then solves with the untransposed operator.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc

from femnpde.fem.linear_defaults import is_symmetric
from femnpde.fem.storage import MemoryStorage

if TYPE_CHECKING:
    from femnpde.fem.problem import ParabolicProblem
    from femnpde.fem.solver import ThetaSolver

__all__ = ["adjoint_sweep", "probe_symmetry"]


def probe_symmetry(problem: "ParabolicProblem") -> bool:
    """Assemble the step Jacobian once at a random state and test its symmetry (collective).

    A random state (not u^0, where e.g. a convection term may vanish)
    exposes any non-symmetric dependence on the coefficients; the
    coefficients are restored.
    """
    p = problem
    fs = (p.u, p.u_prev, p.g, p.g_prev)
    saved = [f.x.array.copy() for f in fs]
    rng = np.random.default_rng(1234 + p.comm.rank)
    for f in fs:
        f.x.array[:] = rng.uniform(-1.0, 1.0, f.x.array.size)
        f.x.scatter_forward()
    t_saved = (p.t.value.copy(), p.t_prev.value.copy())
    p.t.value, p.t_prev.value = float(p.time.times[1]), float(p.time.times[0])
    A = dolfinx.fem.petsc.assemble_matrix(p.forms.jacobian, bcs=p.bcs)
    A.assemble()
    symmetric = is_symmetric(A)
    A.destroy()
    for f, a in zip(fs, saved):
        f.x.array[:] = a
    p.t.value, p.t_prev.value = t_saved
    return symmetric


def adjoint_sweep(
    solver: "ThetaSolver",
    source: np.ndarray,
    misfit_gradient: Callable[[int, np.ndarray, np.ndarray], None],
    keep_adjoint: bool = False,
    constants: tuple[str, ...] = (),
) -> np.ndarray:
    """The adjoint sweep of ``solver`` (see :meth:`femnpde.fem.solver.ThetaSolver.adjoint`)."""
    p = solver.problem
    forms = p.forms
    n_owned = p.n_owned
    ng = p.n_owned_source
    N = solver.n_levels - 1
    R = np.zeros((solver.n_levels, ng))
    if keep_adjoint:
        if solver.adjoints is None:
            solver.adjoints = MemoryStorage(solver.n_levels, solver._n_local)
        solver.adjoints.store(0, np.zeros(solver._n_local))
    rhs, c, r = solver._rhs, solver._c, solver._r
    lam_vec = p.lam.x.petsc_vec
    # Krylov adjoints of constant Jacobians start from λ^{n+1}, 2 λ^{n+1} − λ^{n+2} or a projection
    # onto the sweep's earlier adjoints (ThetaSolver's krylov_guess).
    guesses = solver._guesses
    if guesses is not None:
        lam_vec.zeroEntries()  # the warm start must not depend on the previous sweep
        guesses.adjoint_start()
    step = solver._step
    if step is not None:
        step.adjoint_start()  # its Krylov adjoints' warm starts come from this sweep only
    # The split's couplings (constant blocks + assembled remainder): nonlinear and IMEX steps.
    split = step if step is not None else solver._imex
    have_c = False
    const_forms = forms.constant_adjoints or {}
    unknown = [name for name in constants if name not in p.constants]
    if unknown:
        raise KeyError(f"ThetaSolver.adjoint: {unknown} are not constants of the problem; "
                       f"constants: {sorted(p.constants)}")
    dc = np.zeros(len(constants))
    transpose = not solver.symmetric
    record = solver.linear_iterations
    record.adjoint, record.recomputed, record.transposed = [], [], transpose and step is None
    # The couplings that are constant blocks: one transposed product of the blocks side by side.
    adjoint_forms = {"u_prev": forms.adj_prev, "g": forms.adj_g, "g_prev": forms.adj_gprev}
    fused = solver._adj_blocks if split is None else None
    fused_names = solver._block_names if fused is not None else ()
    # λ's ghost values are read only by assembly (couplings that are forms, the constants'
    # sensitivities, the split's remainder) and by the kept adjoints: else updated once, at the end.
    lam_ghosts = (keep_adjoint or bool(constants) or split is not None
                  or any(f is not None and name not in fused_names for name, f in adjoint_forms.items()))
    for n in range(N, 0, -1):
        # u^{n-1} first: a checkpointing storage may recompute both levels then.
        u_prev = solver.states.load(n - 1)
        u_n = solver.states.load(n)
        solver._set_step(n, source, u_n, u_prev)
        if step is None and not solver._A_current:
            solver._assemble_A(solver._A)
            solver._ksp.setOperators(solver._A)
            solver._A_current = True
        rhs_arr = rhs.array_w
        rhs_arr[:] = 0.0
        misfit_gradient(n, u_n[:n_owned], rhs_arr)
        if have_c:
            rhs_arr += c.array_r
        rhs_arr *= -1.0
        rhs_arr[solver._bc_owned] = 0.0
        if step is None:
            if guesses is not None:
                guesses.adjoint(n, N, rhs, lam_vec)
            solver._solve(solver._ksp_adj, rhs, lam_vec, n, transpose=transpose, adjoint=True)
            record.adjoint.append(solver._ksp_adj.getIterationNumber())
            if guesses is not None:
                guesses.adjoint_solved(lam_vec)
        else:
            step.adjoint_solve(rhs, lam_vec, n, solver._times[n])
        if lam_ghosts:
            p.lam.x.scatter_forward()
        if fused is not None:  # read right away: a recomputed forward step may use the same vector
            fused.mult_transpose(lam_vec)
        if keep_adjoint:
            solver.adjoints.store(n, p.lam.x.array)
        if constants:
            if solver._lin is not None:  # the mat-vec path skipped what assembly reads
                solver._sync_coefficients(n)
            for k, name in enumerate(constants):
                if name in const_forms:
                    dc[k] += dolfinx.fem.assemble_scalar(const_forms[name])
        # Coupling to the previous step, (∂F^n/∂u^{n-1})^T λ^n, for step n-1.
        if split is not None:
            have_c = n > 1 and split.coupling("u_prev", lam_vec, c)
        elif n > 1 and forms.adj_prev is not None:
            have_c = True
            if "u_prev" in fused_names:
                c.array_w[:] = fused.part("u_prev")
            else:
                solver._assemble_action(c, forms.adj_prev)
        # Source sensitivities (∂F^n/∂g^n)^T λ^n and (∂F^n/∂g^{n-1})^T λ^n.
        for name, level in (("g", n), ("g_prev", n - 1)):
            if split is not None:
                if split.coupling(name, lam_vec, r):
                    R[level] += r.array_r[:ng]
                continue
            if name in fused_names:
                R[level] += fused.part(name)[:ng]
            elif adjoint_forms[name] is not None:
                solver._assemble_action(r, adjoint_forms[name])
                R[level] += r.array_r[:ng]
    if constants:
        total = np.empty_like(dc)
        p.comm.Allreduce(dc, total)
        solver.constant_gradient = dict(zip(constants, total.tolist()))
    if not lam_ghosts:
        p.lam.x.scatter_forward()
    if solver._lin is not None:
        solver._sync_coefficients(1)
    return R
