"""``femnpde info``: versions of the stack and of the MPI/PETSc set-up."""

from __future__ import annotations

from mpi4py import MPI

__all__ = ["environment_info", "format_info"]


def environment_info(comm: MPI.Comm = MPI.COMM_WORLD) -> dict[str, str]:
    """Versions and capabilities of the FEniCSx/PETSc/MPI stack, as strings."""
    import dolfinx
    import numpy as np
    import petsc4py
    import ufl
    from petsc4py import PETSc

    import femnpde

    solvers = [name for name in ("mumps", "superlu_dist", "superlu") if PETSc.Sys.hasExternalPackage(name)]
    major, minor, subminor = PETSc.Sys.getVersion()
    return {
        "femnpde": femnpde.__version__,
        "DOLFINx": dolfinx.__version__,
        "UFL": ufl.__version__,
        "PETSc": f"{major}.{minor}.{subminor}",
        "petsc4py": petsc4py.__version__,
        "mpi4py": __import__("mpi4py").__version__,
        "numpy": np.__version__,
        "MPI implementation": MPI.Get_library_version().splitlines()[0].strip(),
        "MPI world size": str(comm.size),
        "PETSc scalar type": np.dtype(PETSc.ScalarType).name,
        "direct solvers": ", ".join(solvers) if solvers else "PETSc LU only (serial)",
        "ADIOS2 (VTX output)": "yes" if dolfinx.has_adios2 else "no",
    }


def format_info(info: dict[str, str]) -> str:
    """The info as aligned ``key: value`` lines."""
    width = max(len(k) for k in info)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in info.items())
