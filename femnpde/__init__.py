"""femnpde: finite-element neural-network PDE models with exact discrete adjoints.

The public API, in one import::

    from femnpde import ParabolicProblem, TimeGrid, Dirichlet, ThetaSolver, L2Misfit, \
        ShallowNetwork, NetworkSource, ReducedFunctional, taylor_test

The names are resolved on first use (PEP 562), so ``import femnpde`` itself
loads neither DOLFINx nor PETSc: the configuration schema (``femnpde.app``)
can be validated on a machine without them.

Subpackages, with dependencies pointing one way
(``fem`` <- ``obs`` <- ``model`` <- ``optim`` <- ``app``; ``io`` holds file
formats and is used by ``app``):

* :mod:`femnpde.fem`: the PDE problem, the theta-scheme solver and its adjoint, state storage;
* :mod:`femnpde.obs`: observation operators and misfits;
* :mod:`femnpde.model`: networks, sources, the reduced functional, gradient verification;
* :mod:`femnpde.optim`: optimisers and learning-rate schedules;
* :mod:`femnpde.io`: meshes, data files, checkpoints, field output, plots;
* :mod:`femnpde.app`: configuration, run building, training, the command line.
"""

from importlib import import_module
from importlib.metadata import PackageNotFoundError, version
from typing import Any

try:
    __version__ = version("femnpde")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0+unknown"

#: public name -> module that defines it
_API = {
    "TimeGrid": "femnpde.fem.problem",
    "Dirichlet": "femnpde.fem.problem",
    "ParabolicProblem": "femnpde.fem.problem",
    "heat": "femnpde.fem.problem",
    "allen_cahn": "femnpde.fem.problem",
    "ThetaSolver": "femnpde.fem.solver",
    "SolverError": "femnpde.fem.solver",
    "MemoryStorage": "femnpde.fem.storage",
    "CheckpointStorage": "femnpde.fem.checkpointing",
    "StoragePlan": "femnpde.fem.checkpointing",
    "plan_storage": "femnpde.fem.checkpointing",
    "TimeWeights": "femnpde.obs.misfit",
    "L2Misfit": "femnpde.obs.misfit",
    "PointMisfit": "femnpde.obs.points",
    "ShallowNetwork": "femnpde.model.network",
    "reference_learning_rate": "femnpde.model.network",
    "NetworkSource": "femnpde.model.reduced",
    "FunctionSource": "femnpde.model.reduced",
    "ReducedFunctional": "femnpde.model.reduced",
    "TaylorResult": "femnpde.model.verification",
    "taylor_test": "femnpde.model.verification",
    "read_mesh": "femnpde.io.meshes",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str) -> Any:
    try:
        module = _API[name]
    except KeyError:
        raise AttributeError(f"module 'femnpde' has no attribute {name!r}") from None
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
