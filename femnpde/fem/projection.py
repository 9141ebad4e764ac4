"""L2 projection of source values on a quadrature space onto continuous P1 (for output and plots)."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import dolfinx.fem
import dolfinx.fem.petsc
import ufl
from petsc4py import PETSc

__all__ = ["QuadratureProjector"]


class QuadratureProjector:
    """L2 projection of quadrature-space values onto P1 (consistent mass, CG + Jacobi).

    The mass matrix is assembled and the solver set up once; :meth:`project`
    then costs one vector assembly and one CG solve.  Owns PETSc objects:
    :meth:`destroy` (collective) or use as a context manager.

    Args:
        problem: A problem whose source space ``G`` is a quadrature space.
        petsc_options_prefix: Options prefix of the CG solver (``-<prefix>ksp_rtol ...``).
        space: The scalar quadrature space of the values (default ``problem.G``;
            e.g. one component of a vector source space, collapsed).
    """

    def __init__(self, problem: Any, petsc_options_prefix: str, space: Any = None) -> None:
        if not isinstance(petsc_options_prefix, str) or not petsc_options_prefix:
            raise ValueError("QuadratureProjector: petsc_options_prefix must be a non-empty string, e.g. 'femnpde_projection_'")
        mesh = problem.mesh
        self.W = dolfinx.fem.functionspace(mesh, ("Lagrange", 1))
        self.g = dolfinx.fem.Function(problem.G if space is None else space)
        w, v = ufl.TrialFunction(self.W), ufl.TestFunction(self.W)
        dx = ufl.dx(metadata={"quadrature_degree": int(problem.quadrature_degree)})
        self.a = dolfinx.fem.form(ufl.inner(w, v) * dx)
        self.L = dolfinx.fem.form(ufl.inner(self.g, v) * dx)
        self.A = dolfinx.fem.petsc.assemble_matrix(self.a)
        self.A.assemble()
        self.b = dolfinx.fem.petsc.create_vector(self.W)
        self.ksp = PETSc.KSP().create(mesh.comm)
        self.ksp.setOperators(self.A)
        self.ksp.setType("cg")
        self.ksp.getPC().setType("jacobi")
        self.ksp.setTolerances(rtol=1e-12, atol=1e-30, max_it=1000)
        self.ksp.setOptionsPrefix(petsc_options_prefix)
        self.ksp.setFromOptions()

    def project(self, owned_values: np.ndarray, out: Any) -> None:
        """Project the owned source values ``owned_values`` into the P1 function ``out`` (collective)."""
        n = self.g.function_space.dofmap.index_map.size_local
        self.g.x.array[:n] = owned_values
        self.g.x.scatter_forward()
        with self.b.localForm() as loc:
            loc.set(0.0)
        dolfinx.fem.petsc.assemble_vector(self.b, self.L)
        self.b.ghostUpdate(addv=PETSc.InsertMode.ADD, mode=PETSc.ScatterMode.REVERSE)
        self.ksp.solve(self.b, out.x.petsc_vec)
        out.x.scatter_forward()

    def destroy(self) -> None:
        """Destroy the solver, matrix and vector (collective)."""
        for obj in (self.ksp, self.A, self.b):
            obj.destroy()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.destroy()


