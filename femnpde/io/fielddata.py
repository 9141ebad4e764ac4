"""Space-time field data in files: write and read ``h^n`` for every time level.

DOLFINx's XDMF and VTX writers are for visualisation: they cannot read a
Function back.  Field data therefore uses `adios4dolfinx
<https://github.com/jorgensd/adios4dolfinx>`_ checkpoints (ADIOS2 ``.bp``
folders), written in the mesh's *input ordering*: the file can be read onto
the same mesh (same file or same built-in mesh parameters) on any number of
ranks.  One function name, one time stamp per level ``t_n``.

``femnpde train`` / ``forward`` write the state as ``fields/u.bp`` (name
``"u"``), so the output of one run is the field data of another
(``data.kind = "file"``, ``data.path = ".../fields/u.bp"``, ``data.name = "u"``).
"""

from __future__ import annotations

import os
import pathlib

import numpy as np
import dolfinx.fem

from femnpde.fem.problem import ParabolicProblem

__all__ = ["write_field_data", "read_field_data"]


def _adios():
    """Import adios2 and adios4dolfinx.

    Debian's python3-adios2 picks its serial bindings unless it sees an MPI
    launcher, and ships only the MPI ones; DOLFINx runs under MPI anyway, so
    ask for the MPI bindings (unless the user decided otherwise).
    """
    os.environ.setdefault("ADIOS2_ALWAYS_USE_MPI", "1")
    import adios2
    import adios4dolfinx

    return adios2, adios4dolfinx


def write_field_data(
    path: str | os.PathLike, problem: ParabolicProblem, values: np.ndarray, name: str = "h"
) -> pathlib.Path:
    """Write a space-time field on the solution space as an adios4dolfinx checkpoint (collective).

    Args:
        path: The ``.bp`` folder to write (replaced if it exists).
        problem: The problem whose solution space and time grid the field lives on.
        values: Local arrays (owned and ghost entries, as in
            ``ThetaSolver.states.to_array()``), shape ``(n_steps + 1, n_local)``.
        name: Function name in the file.

    Returns:
        The path written.
    """
    adios2, adios4dolfinx = _adios()
    path = pathlib.Path(path)
    times = problem.time.times
    if values.shape[0] != len(times):
        raise ValueError(f"write_field_data: {values.shape[0]} levels given, the time grid has {len(times)}")
    comm = problem.comm
    if comm.rank == 0:
        path.parent.mkdir(parents=True, exist_ok=True)
    comm.Barrier()
    adios4dolfinx.write_mesh_input_order(path, problem.mesh)
    f = dolfinx.fem.Function(problem.V, name=name)
    for n, t in enumerate(times):
        f.x.array[:] = values[n]
        adios4dolfinx.write_function_on_input_mesh(path, f, mode=adios2.Mode.Append, time=float(t), name=name)
    return path


def read_field_data(path: str | os.PathLike, problem: ParabolicProblem, name: str = "h") -> np.ndarray:
    """Read a space-time field written by :func:`write_field_data` (collective).

    Args:
        path: The ``.bp`` folder.
        problem: The problem (its mesh must be the mesh the data were written on).
        name: Function name in the file.

    Returns:
        ``h^n`` on the owned dofs, shape ``(n_steps + 1, n_owned)``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: The file is not a field checkpoint, has no function
            ``name``, its time stamps are not the problem's time grid, or it
            was written on another mesh; the message names the file.
    """
    _, adios4dolfinx = _adios()
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"field data {str(path)!r} does not exist")
    comm = problem.comm
    times = problem.time.times
    try:
        stamps = np.asarray(adios4dolfinx.read_timestamps(path, comm, name), dtype=np.float64)
    except Exception as err:
        raise ValueError(
            f"field data {str(path)!r}: cannot read the time stamps of a function {name!r} ({err}); expected an "
            "adios4dolfinx checkpoint written by femnpde (e.g. fields/u.bp of a run, with data.name = 'u')"
        ) from err
    if stamps.shape != times.shape or not np.allclose(stamps, times, rtol=1e-10, atol=1e-12 * max(times[-1], 1.0)):
        raise ValueError(
            f"field data {str(path)!r}: function {name!r} has {stamps.size} time stamps "
            f"({stamps[:3].tolist()}...), the run's time grid has {times.size} levels "
            f"({times[:3].tolist()}...); the data must be written on the same time grid"
        )
    out = np.empty((times.size, problem.n_owned))
    f = dolfinx.fem.Function(problem.V, name=name)
    for n, t in enumerate(stamps):
        try:
            adios4dolfinx.read_function(path, f, time=float(t), name=name)
        except Exception as err:
            raise ValueError(
                f"field data {str(path)!r}: reading {name!r} at t = {t:g} failed ({err}); was it written on "
                "this mesh and with this Lagrange degree?"
            ) from err
        out[n] = f.x.array[: problem.n_owned]
    return out
