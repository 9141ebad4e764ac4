"""The run configuration, in one import (a facade over its modules).

* :mod:`femnpde.app.schema` -- defaults, choices, key reference, TOML dump (no DOLFINx);
* :mod:`femnpde.app.validation` -- :func:`validate` (no DOLFINx);
* :mod:`femnpde.app.loading` -- :func:`load_config`: file, overrides, relative paths (no DOLFINx);
* :mod:`femnpde.app.build` -- :func:`build_run`: config -> problem, solver, misfit, reduced functional.

:func:`build_run` and :class:`Run` are loaded on first use, so importing this
module does not import DOLFINx.
"""

from __future__ import annotations

from typing import Any

from femnpde.app.loading import load_config
from femnpde.app.schema import DEFAULTS, ConfigError, dump_config
from femnpde.app.validation import validate

__all__ = ["DEFAULTS", "ConfigError", "Run", "build_run", "dump_config", "load_config", "validate"]


def __getattr__(name: str) -> Any:
    if name in ("Run", "build_run"):
        from femnpde.app import build

        return getattr(build, name)
    raise AttributeError(f"module 'femnpde.app.config' has no attribute {name!r}")
