"""The observation part of :func:`femnpde.app.build.build_run`: the misfit of ``[observation]`` and ``[data]``.

Sensor data (from a file, or sampled from the synthetic field) for a
:class:`~femnpde.obs.points.PointMisfit`; field data (the synthetic field or a
``.bp`` file) for an :class:`~femnpde.obs.misfit.L2Misfit` over the domain or a
cell-tagged subdomain; optional noise.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from femnpde._mpi import tags_present
from femnpde.app.checks import _error
from femnpde.app.schema import ConfigError, format_value
from femnpde.fem.problem import ParabolicProblem
from femnpde.obs.misfit import L2Misfit, TimeWeights
from femnpde.obs.noise import add_field_noise

__all__: list[str] = []  # used by femnpde.app.build only


def _point_misfit(cfg: dict[str, Any], problem: ParabolicProblem, field_data, weights: TimeWeights):
    """The sensor misfit: data from a file or sampled from the synthetic field, plus noise."""
    from femnpde.io.pointdata import load_point_data
    from femnpde.obs.noise import add_noise
    from femnpde.obs.points import PointMisfit, synthetic_point_data

    dcfg, obs = cfg["data"], cfg["observation"]
    points = np.array(obs["sensors"]) if "sensors" in obs else None
    if dcfg["kind"] == "file":
        try:
            file_points, data = load_point_data(
                dcfg["path"], problem.time.n_steps + 1, None if points is None else len(points),
                times=problem.time.times, comm=problem.comm,
            )
        except (OSError, ValueError) as err:
            raise ConfigError(f"data.path = {format_value(dcfg['path'])}: {err}", "data.path", dcfg["path"]) from err
        if points is None:
            if file_points is None:
                raise ConfigError(
                    f"data.path = {format_value(dcfg['path'])} has no sensor coordinates; give observation.sensors",
                    "observation.sensors",
                )
            points = file_points
    try:
        if dcfg["kind"] != "file":
            data = synthetic_point_data(problem, field_data, points)
        if dcfg["noise"] > 0:
            data = add_noise(data, dcfg["noise"], dcfg["noise_seed"])
        return PointMisfit(problem, points, data, weights)
    except ValueError as err:
        raise ConfigError(f"observation.sensors: {err}", "observation.sensors") from err


def _field_misfit(cfg: dict[str, Any], problem: ParabolicProblem, field_data, weights: TimeWeights, cell_tags):
    """The L2 misfit over the domain or a cell-tagged subdomain: data from the synthetic field or a file."""
    dcfg, obs = cfg["data"], cfg["observation"]
    if dcfg["kind"] == "file":
        from femnpde.io.fielddata import read_field_data

        try:
            field_data = read_field_data(dcfg["path"], problem, dcfg["name"])
        except (OSError, ValueError) as err:
            raise ConfigError(f"data.path = {format_value(dcfg['path'])}: {err}", "data.path", dcfg["path"]) from err
    data = field_data.copy()
    if dcfg["noise"] > 0:
        add_field_noise(problem, data, dcfg["noise"], dcfg["noise_seed"])
    subdomain = None
    if obs["kind"] == "subdomain":
        present = tags_present(cell_tags, problem.comm)
        if cell_tags is None or obs["subdomain"] not in present:
            raise _error("observation.subdomain", obs["subdomain"], "is not a cell tag of the mesh",
                         f"one of the cell tags {present}")
        subdomain = (cell_tags, obs["subdomain"])
    return L2Misfit(problem, data, weights, subdomain=subdomain)
