"""The width study's scenarios and meshes, from one place, for the ``bench/width_*.py`` scripts.

Not a benchmark: ``bench/reproduce_paper.py`` owns ``SCENARIOS`` and ``MESHES``
and ``config_of``; the width_* scripts (run as ``python3 bench/width_X.py``, so
``bench/`` is on ``sys.path``) take their ``--scenario``/``--mesh`` choices and
the study module from here instead of typing the lists and an importlib block
each.
"""

from __future__ import annotations

import importlib.util
import pathlib
from types import ModuleType

__all__ = ["ROOT", "bench_module", "study", "SCENARIOS", "MESHES"]

ROOT = pathlib.Path(__file__).resolve().parents[1]


def bench_module(name: str, root: pathlib.Path = ROOT) -> ModuleType:
    """The module ``<root>/bench/<name>.py``, loaded afresh (``root``: another source tree, e.g. an old commit's)."""
    spec = importlib.util.spec_from_file_location(name, pathlib.Path(root) / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


study = bench_module("reproduce_paper")
SCENARIOS: list[str] = list(study.SCENARIOS)
MESHES: list[str] = list(study.MESHES)
