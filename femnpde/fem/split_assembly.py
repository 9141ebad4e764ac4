"""The assembled pieces of a split theta-step residual.

:class:`SplitAssembly` splits the residual of a
:class:`~femnpde.fem.problem.ParabolicProblem` once
(:func:`femnpde.fem.forms.split_residual`) and holds what each piece costs
per step: the linear part as matrices assembled once (``A_u u + A_{u'}
u^{n-1} + A_g g^n + A_{g'} g^{n-1} + f_0``), the per-step and nonlinear
parts as compiled forms (integer powers expanded, ``-O3`` kernels), and the
adjoint actions ``(∂R/∂w)^T λ`` of the remainder ``R`` (per-step + nonlinear
parts) for w = u^{n-1}, g^n, g^{n-1}.  The nonlinear step
(:class:`~femnpde.fem.newton.NonlinearStep`) and the IMEX step of
:class:`~femnpde.fem.solver.ThetaSolver` (``nonlinear="explicit"``: the
remainder is a per-step term) share it.
"""

from __future__ import annotations

import dolfinx.fem
import dolfinx.fem.petsc
from dolfinx import cpp as _cpp
from dolfinx.fem import pack_coefficients, pack_constants
from petsc4py import PETSc

from femnpde.fem import forms as _forms

__all__ = ["SplitAssembly", "add_assembled"]

#: C compiler flags of the split's kernels (unless the problem's jit_options set their own).
_FAST_KERNEL_FLAGS = ("-O3", "-g0")


def add_assembled(vec: PETSc.Vec, form) -> None:
    """vec += assemble(form) (owned entries; ghosts of vec are used as scratch)."""
    n_owned = vec.getLocalSize()
    with vec.localForm() as loc:
        arr = loc.array_w
        arr[n_owned:] = 0.0
        _cpp.fem.assemble_vector(arr, form._cpp_object, pack_constants(form), pack_coefficients(form))
    vec.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)


class SplitAssembly:
    """Constant matrices, per-step and nonlinear forms of a problem's split residual.

    The caller loads the step's coefficients into the problem's Functions
    (with ghosts) and time constants before any assembly.

    Args:
        problem: The :class:`~femnpde.fem.problem.ParabolicProblem`.

    Attributes:
        split: The UFL pieces (:class:`~femnpde.fem.forms.SplitForms`).
        blocks: ``{name: ∂(linear part)/∂w}`` as assembled matrices (no
            boundary conditions), for the names u, u_prev, g, g_prev present.
        f0: The linear part at zero (None if it vanishes).
        step_form: The per-step part, compiled (None if empty).
        nl_form: The nonlinear part, compiled (None if empty).
        nl_jac: ``∂(nonlinear part)/∂u``, compiled (None if empty).
        lin_u: ``∂(linear part)/∂u``, compiled (None if empty).
    """

    def __init__(self, problem) -> None:
        p = problem
        self.problem = p
        split = _forms.split_residual(p.F_ufl, p.u, {p.u, p.u_prev, p.g, p.g_prev}, {p.t, p.t_prev})
        self.split = split
        # The pieces assembled per iteration or step are compiled with -O3 (measured 20-30 % faster
        # than DOLFINx's default -O2 for the Allen-Cahn remainder, bitwise equal results on x86-64).
        jit = {"cffi_extra_compile_args": list(_FAST_KERNEL_FLAGS), **(p.jit_options or {})}

        def compile_(form):
            return _forms.compile_form(form, p.form_compiler_options, jit)

        coeffs = {"u": p.u, "u_prev": p.u_prev, "g": p.g, "g_prev": p.g_prev}
        self.blocks: dict[str, PETSc.Mat] = {}
        for name, w in coeffs.items():
            form = compile_(_forms.derivative(split.linear, w))
            if form is not None:
                M = dolfinx.fem.petsc.assemble_matrix(form)
                M.assemble()
                self.blocks[name] = M
        self._vec_of = {"u_prev": p.u_prev.x.petsc_vec, "g": p.g.x.petsc_vec, "g_prev": p.g_prev.x.petsc_vec}
        self.f0 = self._assemble_at_zero(compile_(split.linear))
        self.step_form = compile_(split.step)
        self.nl_form = compile_(split.nonlinear)
        self.nl_jac = compile_(_forms.derivative(split.nonlinear, p.u))
        self.lin_u = compile_(_forms.derivative(split.linear, p.u))
        remainder = _forms.add_forms(split.step, split.nonlinear)
        self._adj_forms = {
            name: compile_(_forms.adjoint_action(remainder, w, p.lam)) for name, w in coeffs.items() if name != "u"
        }

    def _assemble_at_zero(self, form) -> PETSc.Vec | None:
        """The linear part at zero state: f0 (None if it vanishes)."""
        if form is None:
            return None
        p = self.problem
        fs = (p.u, p.u_prev, p.g, p.g_prev)
        saved = [f.x.array.copy() for f in fs]
        for f in fs:
            f.x.array[:] = 0.0
        f0 = dolfinx.fem.petsc.create_vector(p.V)
        with f0.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(f0, form)
        f0.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        for f, a in zip(fs, saved):
            f.x.array[:] = a
        if f0.norm() == 0.0:
            f0.destroy()
            return None
        return f0

    def step_constant(self, c: PETSc.Vec) -> None:
        """c = A_{u'} u^{n-1} + A_g g^n + A_{g'} g^{n-1} + f0 + per-step terms (owned entries)."""
        c.set(0.0)
        for name, vec in self._vec_of.items():
            if name in self.blocks:
                self.blocks[name].multAdd(vec, c, c)
        if self.f0 is not None:
            c.axpy(1.0, self.f0)
        if self.step_form is not None:
            add_assembled(c, self.step_form)

    def residual(self, x: PETSc.Vec, c: PETSc.Vec, b: PETSc.Vec) -> None:
        """b = A_u x + N(u) + c, with ``c`` from :meth:`step_constant` and ``problem.u`` = x loaded."""
        if "u" in self.blocks:
            self.blocks["u"].mult(x, b)
        else:
            b.set(0.0)
        if self.nl_form is not None:
            add_assembled(b, self.nl_form)
        b.axpy(1.0, c)

    def coupling(self, name: str, lam: PETSc.Vec, out: PETSc.Vec) -> bool:
        """``out = (∂F^n/∂w)^T lam`` for w = ``name`` (u_prev, g, g_prev); False if F does not depend on w."""
        form = self._adj_forms.get(name)
        block = self.blocks.get(name)
        if block is None and form is None:
            return False
        if block is not None:
            block.multTranspose(lam, out)
        else:
            out.set(0.0)
        if form is not None:
            add_assembled(out, form)
        return True

    def destroy(self) -> None:
        """Destroy the PETSc objects (collective)."""
        for obj in [*self.blocks.values(), self.f0]:
            if obj is not None:
                obj.destroy()
        self.blocks = {}
        self.f0 = None
