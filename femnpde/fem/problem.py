"""The state equation: a parabolic PDE written once in UFL.

The user describes the spatial part of

    ∂t u + A(u; g, t, x) = 0   in D × (0, T],

as a weak residual ``residual(u, v, g, t, x) -> ufl.Form`` (``g`` is the neural
source coefficient, ``t`` a UFL constant holding the time, ``x`` the spatial
coordinate).  :class:`ParabolicProblem` discretises it in time with a
theta-scheme,

    F^n = ∫ (u^n − u^{n−1})/Δt v dx + θ a(u^n, v; g^n, t_n) + (1 − θ) a(u^{n−1}, v; g^{n−1}, t_{n−1}),

and compiles, once, the residual, its Jacobian and every derivative the
discrete adjoint needs (``ufl.derivative`` / ``ufl.adjoint``).  With
``nonlinear="explicit"`` (IMEX) the nonlinear remainder of ``F^n``
(:func:`~femnpde.fem.forms.split_residual`) is evaluated at ``u^{n−1}``
instead of ``u^n`` (:func:`~femnpde.fem.forms.explicit_remainder`): the step
is linear in ``u^n`` with a constant matrix, and the adjoint of that scheme
follows from the same derivatives.
"""

from __future__ import annotations

import inspect
import numbers
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import basix
import basix.ufl
import dolfinx
import dolfinx.fem
import dolfinx.fem.petsc
import dolfinx.mesh
import ufl
from petsc4py import PETSc

from femnpde import defaults as D
from femnpde._mpi import tags_present
from femnpde.fem.forms import explicit_remainder
from femnpde.fem.presets import PRESETS, Residual, allen_cahn, heat
from femnpde.fem.records import Dirichlet, TimeGrid
from femnpde.fem.quadrature import _with_quadrature_degree, pin_quadrature_degrees

__all__ = [
    "TimeGrid",
    "Dirichlet",
    "ParabolicProblem",
    "Residual",
    "pin_quadrature_degrees",
    "heat",
    "allen_cahn",
    "PRESETS",
]

def _derivative_wrt_constant(form: ufl.Form, const: dolfinx.fem.Constant) -> ufl.Form:
    """``∂form/∂const`` (UFL differentiates forms only with respect to coefficients).

    The constant is wrapped in a ``ufl.variable`` and every integrand is
    differentiated with ``ufl.diff``; the integrals keep their metadata.
    """
    cv = ufl.variable(const)
    integrals = [
        itg.reconstruct(integrand=ufl.diff(ufl.replace(itg.integrand(), {const: cv}), cv))
        for itg in form.integrals()
    ]
    return ufl.algorithms.expand_derivatives(ufl.Form(integrals))


@dataclass
class _Forms:
    """Compiled forms of one theta-step (all compiled once)."""

    residual: dolfinx.fem.Form
    jacobian: dolfinx.fem.Form
    adj_prev: dolfinx.fem.Form | None  # (∂F/∂u^{n-1})^T λ, a linear form on V
    adj_g: dolfinx.fem.Form | None  # (∂F/∂g^n)^T λ, a linear form on G
    adj_gprev: dolfinx.fem.Form | None  # (∂F/∂g^{n-1})^T λ, a linear form on G
    jacobian_constant: bool  # ∂F/∂u^n depends on neither state, source nor time
    affine: bool  # F is affine in u^n
    # When F is affine in all of (u^n, u^{n-1}, g^n, g^{n-1}) with constant
    # derivatives and no explicit time: the bilinear forms ∂F/∂u^{n-1},
    # ∂F/∂g^n, ∂F/∂g^{n-1} (absent keys: F does not depend on it); else None.
    linear: dict[str, dolfinx.fem.Form] | None = None
    # The derivative blocks (of "u_prev", "g", "g_prev") that are constant.
    constant_blocks: dict[str, dolfinx.fem.Form] | None = None
    # Per named constant c: the functional λ · ∂F/∂c (a scalar form).
    constant_adjoints: dict[str, dolfinx.fem.Form] | None = None


class ParabolicProblem:
    """A parabolic PDE ``∂t u + A(u; g, t, x) = 0`` on a DOLFINx mesh.

    The object owns the function spaces, the coefficient Functions of one
    time step (``u``, ``u_prev``, ``g``, ``g_prev``, the adjoint ``lam``),
    the Dirichlet conditions and the compiled forms.  It is the *PDE problem*
    piece; the time stepping lives in :class:`femnpde.fem.solver.ThetaSolver`, the
    loss in :mod:`femnpde.obs.misfit` and the network coupling in
    :mod:`femnpde.model.reduced`.

    Every integral of the theta-step residual :attr:`F_ufl` carries a fixed
    quadrature degree (:func:`~femnpde.fem.quadrature.pin_quadrature_degrees`), shared by the Jacobian
    and all adjoint forms, so the gradient is exact for any residual.

    Point arrays passed to callbacks (``initial_condition``, Dirichlet
    values, :class:`femnpde.model.reduced.FunctionSource`) have DOLFINx's
    layout ``(3, npts)``: ``x[0]``, ``x[1]``, ``x[2]``.

    Args:
        mesh: Any DOLFINx mesh (2D or 3D, serial or distributed).
        residual: The spatial residual ``a(u, v, g, t, x)`` in UFL; nonlinear
            in ``u`` and ``g`` allowed.  See :func:`~femnpde.fem.presets.heat`, :func:`~femnpde.fem.presets.allen_cahn`.
        degree: Lagrange degree of the solution space (>= 1).
        time: The time grid.
        theta: Theta of the time scheme, in [1/2, 1]: 1 backward Euler
            (default), 1/2 Crank–Nicolson.
        initial_condition: A number, a callable ``x -> values`` with ``x`` of
            shape ``(3, npts)`` (as for ``Function.interpolate``) or a Function
            on the solution space.
        dirichlet: Dirichlet conditions.
        source: Where the network is sampled: ``"lagrange"`` (the dofs of a
            Lagrange space of the solution's degree) or ``"quadrature"`` (the
            quadrature points of a quadrature space; all integrals then use
            that quadrature degree).
        source_degree: Degree of the source space (Lagrange degree, or
            quadrature degree for ``"quadrature"``; default ``degree`` and
            ``2 * degree + 2`` respectively).
        n_sources: Number of network-fed coefficients: with ``m > 1`` the
            source space has ``m`` components and the residual indexes them
            as ``g[0], .., g[m-1]`` (e.g. a source and a diffusion factor).
        nonlinear: How the nonlinear remainder ``N`` of ``F^n`` (the terms
            that are not affine in ``(u^n, u^{n-1}, g^n, g^{n-1})`` with
            constant coefficients, and that contain ``u^n``) is treated:
            ``"implicit"`` (default: a nonlinear solve per step) or
            ``"explicit"`` (IMEX: ``u^n`` is replaced by ``u^{n-1}`` in ``N``,
            so backward Euler reads ``(u^n − u^{n−1})/Δt + L u^n +
            N(u^{n−1}, g^n, t_n) = 0``; first order in time for ``N``, stable
            for ``Δt · max|∂N/∂u|`` small).
        constants: Named scalar constants ``{name: value}`` of the residual
            (e.g. ``{"gamma": 0.01}``), held in :attr:`constants` as
            ``dolfinx.fem.Constant`` and passed to the residual as keyword
            arguments, ``residual(u, v, g, t, x, gamma=...)``; the adjoint
            sweep can give the loss gradient with respect to them
            (:attr:`forms` ``.constant_adjoints``: ``λ · ∂F/∂c``).
    """

    def __init__(
        self,
        mesh: dolfinx.mesh.Mesh,
        residual: Residual,
        *,
        degree: int = D.PDE_DEGREE,
        time: TimeGrid | None = None,
        theta: float = D.TIME_THETA,
        nonlinear: str = D.TIME_NONLINEAR,
        initial_condition: float | Callable[[np.ndarray], np.ndarray] | dolfinx.fem.Function = 0.0,
        dirichlet: Sequence[Dirichlet] = (),
        source: str = D.PDE_SOURCE,
        source_degree: int | None = None,
        n_sources: int = 1,
        constants: Mapping[str, float] | None = None,
        form_compiler_options: dict | None = None,
        jit_options: dict | None = None,
    ) -> None:
        if not isinstance(degree, numbers.Integral) or degree < 1:
            raise ValueError(f"ParabolicProblem: degree={degree!r} is not valid; use an integer >= 1")
        if not isinstance(theta, numbers.Real) or not (0.5 <= theta <= 1.0):
            raise ValueError(
                f"ParabolicProblem: theta={theta!r} is not valid; use a number in [0.5, 1] "
                "(1 backward Euler, 0.5 Crank-Nicolson)"
            )
        if nonlinear not in D.TIME_NONLINEAR_CHOICES:
            raise ValueError(
                f"ParabolicProblem: nonlinear={nonlinear!r} is not valid; use one of {D.TIME_NONLINEAR_CHOICES}"
            )
        if source not in ("lagrange", "quadrature"):
            raise ValueError(f"ParabolicProblem: source={source!r} is not valid; use 'lagrange' or 'quadrature'")
        if not isinstance(n_sources, numbers.Integral) or isinstance(n_sources, bool) or n_sources < 1:
            raise ValueError(f"ParabolicProblem: n_sources={n_sources!r} is not valid; use an integer >= 1")
        constants = dict(constants or {})
        for name, value in constants.items():
            if not (isinstance(name, str) and name.isidentifier()) or name in ("u", "v", "g", "t", "x"):
                raise ValueError(
                    f"ParabolicProblem: constant name {name!r} is not valid; use a Python identifier other than "
                    "u, v, g, t, x (it is passed to the residual as a keyword argument)"
                )
            if not (isinstance(value, numbers.Real) and np.isfinite(value)):
                raise ValueError(f"ParabolicProblem: constant {name} = {value!r} is not a finite number")
        if not callable(residual):
            raise TypeError("ParabolicProblem: residual must be a callable residual(u, v, g, t, x) -> ufl.Form")
        self.mesh = mesh
        self.comm = mesh.comm
        self.degree = int(degree)
        self.time = time if time is not None else TimeGrid()
        self.theta = float(theta)
        #: The treatment of the nonlinear remainder: "implicit" or "explicit" (IMEX).
        self.nonlinear = nonlinear
        self.source_kind = source

        self.V = dolfinx.fem.functionspace(mesh, ("Lagrange", self.degree))
        if source == "lagrange":
            sdeg = self.degree if source_degree is None else int(source_degree)
            shape = () if n_sources == 1 else (int(n_sources),)
            self.G = dolfinx.fem.functionspace(mesh, ("Lagrange", sdeg, shape))
            self.quadrature_degree = None
        else:
            qdeg = 2 * self.degree + 2 if source_degree is None else int(source_degree)
            shape = () if n_sources == 1 else (int(n_sources),)
            qe = basix.ufl.quadrature_element(mesh.basix_cell(), value_shape=shape, degree=qdeg)
            self.G = dolfinx.fem.functionspace(mesh, qe)
            self.quadrature_degree = qdeg

        V, G = self.V, self.G
        self.u = dolfinx.fem.Function(V, name="u")
        self.u_prev = dolfinx.fem.Function(V, name="u_prev")
        self.lam = dolfinx.fem.Function(V, name="adjoint")
        self.g = dolfinx.fem.Function(G, name="g")
        self.g_prev = dolfinx.fem.Function(G, name="g_prev")
        self.t = dolfinx.fem.Constant(mesh, PETSc.ScalarType(0.0))
        self.t_prev = dolfinx.fem.Constant(mesh, PETSc.ScalarType(0.0))
        self.dt = dolfinx.fem.Constant(mesh, PETSc.ScalarType(self.time.dt))
        self.x = ufl.SpatialCoordinate(mesh)
        self.n_sources = int(n_sources)
        #: Named scalar constants of the residual (passed to it as keyword arguments).
        self.constants: dict[str, dolfinx.fem.Constant] = {
            name: dolfinx.fem.Constant(mesh, PETSc.ScalarType(value)) for name, value in constants.items()
        }
        v = ufl.TestFunction(V)

        F = (self.u - self.u_prev) / self.dt * v * ufl.dx
        try:
            a_new = residual(self.u, v, self.g, self.t, self.x, **self.constants)
            a_old = None
            if self.theta < 1.0:
                a_old = residual(self.u_prev, v, self.g_prev, self.t_prev, self.x, **self.constants)
        except Exception as err:  # the user's UFL raised: say where it came from
            raise ValueError(f"ParabolicProblem: calling the residual(u, v, g, t, x) failed: {err}") from err
        if not isinstance(a_new, ufl.Form):
            raise TypeError(
                f"ParabolicProblem: the residual returned {type(a_new).__name__}, expected a ufl.Form "
                "linear in v (e.g. inner(grad(u), grad(v))*dx - g*v*dx)"
            )
        F = F + self.theta * a_new
        if a_old is not None:
            F = F + (1.0 - self.theta) * a_old
        if self.quadrature_degree is not None:
            F = _with_quadrature_degree(F, self.quadrature_degree)
        # One quadrature rule per integral for F and all its derivatives.
        F = pin_quadrature_degrees(F)
        if nonlinear == "explicit":
            F = explicit_remainder(F, self.u, self.u_prev, {self.u, self.u_prev, self.g, self.g_prev},
                                   {self.t, self.t_prev})
        self.F_ufl = F
        #: The compiler options of the forms (the nonlinear step compiles its pieces with them).
        self.form_compiler_options = form_compiler_options
        self.jit_options = jit_options
        self._forms = self._compile(F, form_compiler_options, jit_options)

        # Initial condition.
        self.u0 = dolfinx.fem.Function(V, name="u0")
        self._set_initial_condition(initial_condition)

        # Dirichlet conditions.
        self._dirichlet_specs = list(dirichlet)
        self.bcs: list[dolfinx.fem.DirichletBC] = []
        self._bc_values: list[tuple[Dirichlet, dolfinx.fem.Function]] = []
        self._bc_dofs: list[np.ndarray] = []
        for k, spec in enumerate(self._dirichlet_specs):
            self._add_dirichlet(k, spec)
        self._bc_owned = (
            np.unique(np.concatenate(self._bc_dofs)).astype(np.int32) if self._bc_dofs else np.zeros(0, np.int32)
        )

    # ------------------------------------------------------------------ forms
    def _compile(self, F: ufl.Form, fco: dict | None, jit: dict | None) -> _Forms:
        u, up, g, gp, lam = self.u, self.u_prev, self.g, self.g_prev, self.lam
        V = self.V
        J = ufl.derivative(F, u, ufl.TrialFunction(V))

        def compile_(form):
            return dolfinx.fem.form(form, form_compiler_options=fco, jit_options=jit)

        def coefficients(form) -> set:
            return set(ufl.algorithms.expand_derivatives(form).coefficients())

        def constants(form) -> set:
            return set(ufl.algorithms.expand_derivatives(form).constants())

        def adjoint_action(wrt):
            if wrt not in coefficients(F):
                return None
            dF = ufl.derivative(F, wrt, ufl.TrialFunction(wrt.function_space))
            dF = ufl.algorithms.expand_derivatives(dF)
            if dF.empty():
                return None
            return compile_(ufl.action(ufl.adjoint(dF), lam))

        state = {u, up, g, gp}
        j_coeffs = coefficients(J)
        j_consts = constants(J)
        jacobian_constant = not (j_coeffs & state) and not ({self.t, self.t_prev} & j_consts)
        # F is affine in u^n iff its Jacobian does not depend on u^n.
        affine = u not in j_coeffs
        # Blocks ∂F/∂u_prev, ∂F/∂g, ∂F/∂g_prev that depend on neither state nor
        # time are assembled once as matrices: the adjoint actions become
        # mat-vecs even when the Jacobian is not constant (Allen–Cahn).
        times = {self.t, self.t_prev}
        constant_blocks = {}
        for name, wrt in (("u_prev", up), ("g", g), ("g_prev", gp)):
            if wrt not in coefficients(F):
                continue
            dF = ufl.algorithms.expand_derivatives(ufl.derivative(F, wrt, ufl.TrialFunction(wrt.function_space)))
            if dF.empty() or (coefficients(dF) & state) or (constants(dF) & times):
                continue
            constant_blocks[name] = compile_(dF)
        # Fully affine: F = A u + B u_prev + C g + C' g_prev + f0 with constant
        # A, B, C, C', f0.  Then residuals are mat-vecs too.
        all_present = {name for name, wrt in (("u_prev", up), ("g", g), ("g_prev", gp)) if wrt in coefficients(F)}
        linear = None
        if jacobian_constant and not (constants(F) & times) and set(constant_blocks) == all_present:
            linear = constant_blocks
        constant_adjoints = {}
        for name, const in self.constants.items():
            dF = _derivative_wrt_constant(F, const)
            if not dF.empty():
                constant_adjoints[name] = compile_(ufl.replace(dF, {ufl.TestFunction(V): lam}))
        return _Forms(
            constant_adjoints=constant_adjoints,
            residual=compile_(F),
            jacobian=compile_(J),
            adj_prev=adjoint_action(up),
            adj_g=adjoint_action(g),
            adj_gprev=adjoint_action(gp),
            jacobian_constant=jacobian_constant,
            affine=affine,
            linear=linear,
            constant_blocks=constant_blocks,
        )

    @property
    def forms(self) -> _Forms:
        """The compiled forms."""
        return self._forms

    # ------------------------------------------------------ initial condition
    def _set_initial_condition(self, ic: Any) -> None:
        if isinstance(ic, dolfinx.fem.Function):
            if ic.function_space == self.V:
                self.u0.x.array[:] = ic.x.array
            else:
                self.u0.interpolate(ic)
        elif isinstance(ic, numbers.Real):
            self.u0.x.array[:] = float(ic)
        elif callable(ic):
            try:
                self.u0.interpolate(ic)
            except Exception as err:
                raise ValueError(
                    f"ParabolicProblem: interpolating the initial condition failed: {err}. "
                    "A callable initial condition takes x of shape (3, npts) and returns npts values."
                ) from err
        else:
            raise TypeError(
                f"ParabolicProblem: initial_condition of type {type(ic).__name__} is not valid; "
                "use a number, a callable x -> values, or a dolfinx Function"
            )
        self.u0.x.scatter_forward()

    # ------------------------------------------------------------- Dirichlet
    def _locate(self, k: int, spec: Dirichlet) -> np.ndarray:
        mesh = self.mesh
        tdim = mesh.topology.dim
        fdim = tdim - 1
        mesh.topology.create_connectivity(fdim, tdim)
        where = spec.where
        label = spec.name or f"dirichlet[{k}]"
        if isinstance(where, str):
            if where != "boundary":
                raise ValueError(
                    f"{label}: where={where!r} is not valid; use 'boundary', a callable x -> bool, "
                    "or (facet_tags, tag)"
                )
            facets = dolfinx.mesh.exterior_facet_indices(mesh.topology)
        elif isinstance(where, tuple) and len(where) == 2 and isinstance(where[0], dolfinx.mesh.MeshTags):
            tags, tag = where
            wanted = np.atleast_1d(np.asarray(tag, dtype=np.int32))
            present = tags_present(tags, self.comm)
            missing = [int(t) for t in wanted if int(t) not in present]
            if missing:
                raise ValueError(f"{label}: facet tag(s) {missing} not found in the mesh; tags present: {present}")
            facets = tags.indices[np.isin(tags.values, wanted)]
        elif callable(where):
            facets = dolfinx.mesh.locate_entities_boundary(mesh, fdim, where)
        else:
            raise TypeError(
                f"{label}: where of type {type(where).__name__} is not valid; use 'boundary', "
                "a callable x -> bool, or (facet_tags, tag)"
            )
        return dolfinx.fem.locate_dofs_topological(self.V, fdim, facets)

    def _add_dirichlet(self, k: int, spec: Dirichlet) -> None:
        dofs = self._locate(k, spec)
        value = dolfinx.fem.Function(self.V, name=f"bc{k}")
        bc = dolfinx.fem.dirichletbc(value, dofs)
        self.bcs.append(bc)
        self._bc_values.append((spec, value))
        self._bc_dofs.append(dofs)
        self._update_bc(spec, value, 0.0, first=True)

    def _update_bc(self, spec: Dirichlet, value: dolfinx.fem.Function, t: float, first: bool = False) -> None:
        val = spec.value
        td = spec.time_dependent if spec.time_dependent is not None else callable(val)
        if not first and not td:
            return
        if isinstance(val, numbers.Real):
            value.x.array[:] = float(val)
            return
        if not callable(val):
            raise TypeError(f"Dirichlet value {val!r} is not valid; use a number, value(t) or value(t, x)")
        try:
            n_args = len(inspect.signature(val).parameters)
        except (TypeError, ValueError):
            n_args = 2
        if n_args == 1:
            value.x.array[:] = float(val(t))
        else:
            value.interpolate(lambda x: np.broadcast_to(np.asarray(val(t, x), dtype=np.float64), x.shape[1:]))
        value.x.scatter_forward()

    def update_dirichlet(self, t: float) -> None:
        """Set the time-dependent Dirichlet values to time ``t``."""
        for spec, value in self._bc_values:
            self._update_bc(spec, value, t)

    @property
    def bc_dofs(self) -> np.ndarray:
        """Local indices (owned and ghost) of all Dirichlet dofs."""
        return self._bc_owned

    # --------------------------------------------------------------- helpers
    @property
    def n_owned(self) -> int:
        """Number of owned dofs of the solution space on this rank."""
        return self.V.dofmap.index_map.size_local

    @property
    def n_owned_source(self) -> int:
        """Number of owned source values on this rank: owned dofs of the source space × ``n_sources``.

        With several sources the values of one point are consecutive
        (``(n_points, n_sources)`` in C order, the blocked layout of ``G``).
        """
        return self.G.dofmap.index_map.size_local * self.G.dofmap.index_map_bs

    def source_points(self) -> np.ndarray:
        """Coordinates of the owned source-space dofs (points), shape ``(n_owned_source / n_sources, gdim)``."""
        gdim = self.mesh.geometry.dim
        n = self.G.dofmap.index_map.size_local
        if self.source_kind == "lagrange":
            return np.ascontiguousarray(self.G.tabulate_dof_coordinates()[:n, :gdim])
        # Quadrature space: dofs are (cell, point) in cell order.
        ref_points, _ = basix.make_quadrature(self.mesh.basix_cell(), self.quadrature_degree)
        expr = dolfinx.fem.Expression(self.x, ref_points)
        tdim = self.mesh.topology.dim
        cmap = self.mesh.topology.index_map(tdim)
        cells = np.arange(cmap.size_local + cmap.num_ghosts, dtype=np.int32)
        pts = expr.eval(self.mesh, cells).reshape(len(cells), -1, gdim)
        dofmap = self.G.dofmap.list
        coords = np.empty((self.G.dofmap.index_map.size_local + self.G.dofmap.index_map.num_ghosts, gdim))
        coords[dofmap.reshape(-1)] = pts.reshape(-1, gdim)
        return np.ascontiguousarray(coords[:n])
