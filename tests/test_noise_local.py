"""Synthetic field noise: O(local) per rank, no gather of global data, independent of the partition."""

import types

import numpy as np
from mpi4py import MPI

from femnpde.obs.noise import add_field_noise, coordinate_keys, keyed_normals
from femnpde.app.scenarios import paper_problem


class CountingComm:
    """Forwards to a communicator and records how many numbers each collective moves."""

    def __init__(self, comm):
        self._comm = comm
        self.moved = []

    def __getattr__(self, name):
        attr = getattr(self._comm, name)
        if not callable(attr):
            return attr

        def call(*args, **kwargs):
            for a in args:
                self.moved.append(np.asarray(a).size if isinstance(a, (np.ndarray, list, tuple)) else 1)
            return attr(*args, **kwargs)

        return call


def _problem_with(comm_proxy, problem):
    return types.SimpleNamespace(comm=comm_proxy, n_owned=problem.n_owned, mesh=problem.mesh, V=problem.V)


def test_field_noise_moves_no_global_data_and_is_keyed_per_dof():
    problem = paper_problem("heat", nx=8, ny=16, n_steps=3)
    n_global = problem.V.dofmap.index_map.size_global
    data = np.ones((4, problem.n_owned))
    proxy = CountingComm(problem.comm)
    add_field_noise(_problem_with(proxy, problem), data, 0.1, 5)
    # Only a handful of numbers are reduced (max|data|, the bounding box); nothing of size ~n_global.
    assert proxy.moved and max(proxy.moved) <= 3, proxy.moved
    assert max(proxy.moved) < n_global
    # Each dof's noise is a pure function of (seed, its coordinates, the level).
    x = problem.V.tabulate_dof_coordinates()[: problem.n_owned, :2]
    comm = problem.comm
    lo = np.array([comm.allreduce(float(x[:, d].min(initial=np.inf)), op=MPI.MIN) for d in range(2)])
    hi = np.array([comm.allreduce(float(x[:, d].max(initial=-np.inf)), op=MPI.MAX) for d in range(2)])
    keys = coordinate_keys(x, lo, hi)
    for n in range(4):
        assert np.array_equal(data[n], 1.0 + 0.1 * keyed_normals(5, keys, n))


def test_keyed_normals_statistics():
    k = np.arange(200_000)
    z = keyed_normals(3, np.stack([k, 7 * k], axis=1), 2)
    assert abs(z.mean()) < 0.01 and abs(z.std() - 1.0) < 0.01
    assert abs(np.corrcoef(z, keyed_normals(3, np.stack([k, 7 * k], axis=1), 3))[0, 1]) < 0.01
    assert abs(np.corrcoef(z, keyed_normals(4, np.stack([k, 7 * k], axis=1), 2))[0, 1]) < 0.01
    assert np.array_equal(z[10:20], keyed_normals(3, np.stack([k[10:20], 7 * k[10:20]], axis=1), 2))
