"""Where one exact step-Jacobian assembly of the Allen–Cahn implicit step spends its time, 1 or 2 ranks.

The step Jacobian ``M = A_bc + ∂N/∂u`` (``NonlinearStep._jacobian_into``,
about 270 per loss + gradient of ``bench/scaling.py --case ac2d --method
krylov``) at a random state, on the benchmark's rectangle (205 761 dofs)::

    scripts/env-run python3 bench/jacobian_assembly.py
    scripts/env-run mpirun -n 2 python3 bench/jacobian_assembly.py

Printed on rank 0, CPU ms per call (``time.process_time``, median of
``--repeats``, the largest rank's; a barrier before each timed call, so a
piece's time excludes waiting for the other rank to finish the previous one):

* the default path (whatever ``_jacobian_into`` takes in this checkout);
* PETSc's path (``MatSetValuesLocal`` cell by cell) and its pieces: copy of
  ``A_bc``, zeroing of ``Nm``, the cell-by-cell insertion, the final assembly
  (the stash exchange of the ghost rows' entries), ``zeroRowsColumns`` of the
  Dirichlet rows and columns, ``M += Nm``;
* the CSR + COO path (:mod:`femnpde.fem.csr_jacobian`, when this checkout has
  its ``assemble_csr`` / ``set_values``) and its pieces.

The two paths' matrices are compared (max |difference| / max |entry|).  Quote
the load average printed with the figures (the machine is shared).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from mpi4py import MPI
from petsc4py import PETSc
from dolfinx import cpp as _cpp
from dolfinx.fem import pack_coefficients, pack_constants

sys.path.insert(0, str(Path(__file__).resolve().parent))
import scaling  # noqa: E402  (the benchmark's case)

from femnpde.fem.solver import ThetaSolver  # noqa: E402


def _cpu_ms(fn, comm: MPI.Comm, k: int) -> tuple[float, float]:
    """(CPU, wall) ms per call, medians over ``k`` calls, the largest rank's."""
    cpu, wall = [], []
    for _ in range(k):
        comm.Barrier()
        c0, t0 = time.process_time(), time.perf_counter()
        fn()
        cpu.append(time.process_time() - c0)
        wall.append(time.perf_counter() - t0)
    return (comm.allreduce(1e3 * float(np.median(cpu)), op=MPI.MAX),
            comm.allreduce(1e3 * float(np.median(wall)), op=MPI.MAX))


def _random_state(problem, seed: int = 0) -> None:
    rng = np.random.default_rng(seed + problem.comm.rank)
    problem.u.x.array[:] = 0.5 * rng.standard_normal(problem.u.x.array.size)
    problem.u.x.scatter_forward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="the 40 x 80 rectangle (to try the script)")
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    comm = MPI.COMM_WORLD
    problem = scaling.build("ac2d", comm, 2, args.small)
    solver = ThetaSolver(problem, "jab_", nonlinear_method="krylov")
    step = solver._step
    _random_state(problem)
    A_bc, form = step._A_bc, step._parts.nl_jac
    M = A_bc.duplicate(copy=True)
    Nm = A_bc.duplicate(copy=False)
    k = args.repeats
    rows: dict[str, tuple[float, float]] = {}
    default = "fem/csr_jacobian" if step._csr_jac is not None else "PETSc"
    rows[f"default path ({default})"] = _cpu_ms(lambda: step._jacobian_into(step._J), comm, k)

    coo, step._csr_jac = step._csr_jac, None
    rows["PETSc path"] = _cpu_ms(lambda: step._jacobian_into(M), comm, k)
    step._csr_jac = coo
    rows["  copy A_bc -> M"] = _cpu_ms(lambda: A_bc.copy(M, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN),
                                       comm, k)
    rows["  Nm.zeroEntries"] = _cpu_ms(Nm.zeroEntries, comm, k)

    def insert_assemble() -> tuple[float, float]:
        comm.Barrier()
        c0 = time.process_time()
        Nm.zeroEntries()
        _cpp.fem.petsc.assemble_matrix(Nm, form._cpp_object, pack_constants(form), pack_coefficients(form), [])
        c1 = time.process_time()
        comm.Barrier()
        c2 = time.process_time()
        Nm.assemble()
        return c1 - c0, time.process_time() - c2

    ts = np.array([insert_assemble() for _ in range(k)])
    for j, name in enumerate(["  zero + cell-by-cell insertion", "  Nm.assemble (stash exchange)"]):
        rows[name] = (comm.allreduce(1e3 * float(np.median(ts[:, j])), op=MPI.MAX), float("nan"))
    rows["  Nm.zeroRowsColumns"] = _cpu_ms(lambda: Nm.zeroRowsColumns(step._bc_rows, diag=0.0), comm, k)
    rows["  M.axpy(1, Nm, SAME)"] = _cpu_ms(lambda: M.axpy(1.0, Nm, structure=PETSc.Mat.Structure.SAME_NONZERO_PATTERN),
                                            comm, k)
    step._csr_jac = None
    step._jacobian_into(M)
    step._csr_jac = coo
    diff = None
    if coo is not None and hasattr(coo, "set_values"):
        J = coo.create_matrix("jab_coo_")
        rows["CSR + COO path"] = _cpu_ms(lambda: coo.assemble_into(J), comm, k)
        rows["  zero + CSR assembly (owned + ghost rows)"] = _cpu_ms(coo.assemble_csr, comm, k)
        rows["  setValuesCOO (+ copy of the values)"] = _cpu_ms(lambda: coo.set_values(J), comm, k)
        D = J.copy()
        D.axpy(-1.0, M, structure=PETSc.Mat.Structure.DIFFERENT_NONZERO_PATTERN)
        diff = D.norm(PETSc.NormType.INFINITY) / M.norm(PETSc.NormType.INFINITY)
        D.destroy()
        J.destroy()
    if comm.rank == 0:
        n = problem.V.dofmap.index_map.size_global
        print(f"# step Jacobian of ac2d, {n} dofs, {comm.size} rank(s), load {os.getloadavg()[0]:.2f}; "
              f"ms per call, median of {k}, largest rank")
        print(f"{'':<46} {'CPU':>8} {'wall':>8}")
        for name, (c, w) in rows.items():
            print(f"{name:<46} {c:8.2f} {w:8.2f}")
        if diff is not None:
            print(f"# ||CSR + COO - PETSc||_inf / ||PETSc||_inf = {diff:.2e}")
    for obj in (M, Nm):
        obj.destroy()
    solver.destroy()


if __name__ == "__main__":
    main()
