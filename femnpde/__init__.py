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

* :mod:`femnpde.fem`: the PDE problem, the theta-scheme solver and its adjoint, state storage, L2 projection;
* :mod:`femnpde.obs`: the :class:`Misfit` contract, observation operators (field/subdomain, points), one quadratic misfit over them, time weights, noise;
* :mod:`femnpde.model`: networks, sources, the reduced functional, gradient verification;
* :mod:`femnpde.optim`: gradient descent, Adam, schedules, L-BFGS;
* :mod:`femnpde.io`: meshes, point and field data, checkpoints, history, field output, plots;
* :mod:`femnpde.app`: configuration schema and validation, run building, synthetic data, training, the command line;
* :mod:`femnpde._mpi`: root-then-broadcast, rank-0 printing, global tag lists, bounding boxes.
"""

from importlib import import_module
from typing import Any

#: The version (pyproject.toml reads it from here): right for a checkout run
#: from its source tree (scripts/env-run) as well as for an installed one.
__version__ = "0.1.0"

#: public name -> module that defines it
_API = {
    "TimeGrid": "femnpde.fem.problem",
    "Dirichlet": "femnpde.fem.problem",
    "ParabolicProblem": "femnpde.fem.problem",
    "heat": "femnpde.fem.presets",
    "allen_cahn": "femnpde.fem.presets",
    "ThetaSolver": "femnpde.fem.solver",
    "SolverError": "femnpde.fem.solver",
    "MemoryStorage": "femnpde.fem.storage",
    "StateStorage": "femnpde.fem.storage",
    "CheckpointStorage": "femnpde.fem.checkpointing",
    "StoragePlan": "femnpde.fem.storage_plan",
    "plan_storage": "femnpde.fem.storage_plan",
    "QuadratureProjector": "femnpde.fem.projection",
    "TimeWeights": "femnpde.obs.weights",
    "Misfit": "femnpde.obs.misfit",
    "QuadraticMisfit": "femnpde.obs.misfit",
    "ObservationOperator": "femnpde.obs.operators",
    "FieldObservation": "femnpde.obs.operators",
    "PointObservation": "femnpde.obs.operators",
    "L2Misfit": "femnpde.obs.misfit",
    "PointMisfit": "femnpde.obs.points",
    "synthetic_point_data": "femnpde.obs.points",
    "add_noise": "femnpde.obs.noise",
    "add_field_noise": "femnpde.obs.noise",
    "Model": "femnpde.model.base",
    "ShallowNetwork": "femnpde.model.network",
    "MLP": "femnpde.model.mlp",
    "JaxModel": "femnpde.model.jax_model",
    "PhysicalParameter": "femnpde.model.parameters",
    "reference_learning_rate": "femnpde.model.scaling",
    "NetworkSource": "femnpde.model.reduced",
    "FunctionSource": "femnpde.model.reduced",
    "ReducedFunctional": "femnpde.model.reduced",
    "TaylorResult": "femnpde.model.verification",
    "taylor_test": "femnpde.model.verification",
    "FDResult": "femnpde.model.verification",
    "finite_difference_check": "femnpde.model.verification",
    "check_gradient": "femnpde.model.verification",
    "GradientDescent": "femnpde.optim.gd",
    "Adam": "femnpde.optim.adam",
    "ReduceLROnPlateau": "femnpde.optim.schedules",
    "StepLR": "femnpde.optim.schedules",
    "CosineAnnealingLR": "femnpde.optim.schedules",
    "make_optimizer": "femnpde.optim.factory",
    "make_schedule": "femnpde.optim.schedules",
    "minimize_lbfgs": "femnpde.optim.lbfgs",
    "read_mesh": "femnpde.io.meshes",
    "load_point_data": "femnpde.io.pointdata",
    "save_point_data": "femnpde.io.pointdata",
    "read_field_data": "femnpde.io.fielddata",
    "write_field_data": "femnpde.io.fielddata",
    "History": "femnpde.io.history",
    "save_checkpoint": "femnpde.io.checkpoint",
    "load_checkpoint": "femnpde.io.checkpoint",
    "write_fields": "femnpde.io.fields",
    "ConfigError": "femnpde.app.schema",
    "DEFAULTS": "femnpde.app.schema",
    "dump_config": "femnpde.app.schema",
    "validate": "femnpde.app.validation",
    "load_config": "femnpde.app.loading",
    "Run": "femnpde.app.build",
    "build_run": "femnpde.app.build",
    "TrainingLoop": "femnpde.app.trainer",
    "FirstOrderStep": "femnpde.app.trainer",
    "LBFGSStep": "femnpde.app.trainer",
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
