"""Optional packages: which feature needs which, and one message when one is missing.

A missing optional package must not end a run with a traceback: the feature
that needs it is either refused before the run (field data from a ``.bp``
file) or skipped with one warning at the start (writing ``fields/u.bp``,
plots).  Availability is looked up without importing the package.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

__all__ = ["OptionalPackage", "OPTIONAL", "available", "missing_message"]


@dataclass(frozen=True)
class OptionalPackage:
    """An optional dependency.

    Attributes:
        module: The import name.
        feature: What needs it.
        conda: Its conda-forge name (it is in environment.yml).
        extra: The pip extra of femnpde that installs it.
    """

    module: str
    feature: str
    conda: str
    extra: str


#: import name -> the optional package.
OPTIONAL: dict[str, OptionalPackage] = {
    p.module: p
    for p in (
        OptionalPackage("adios4dolfinx", "field checkpoints (fields/u.bp, .bp field data)", "adios4dolfinx", "fields"),
        OptionalPackage("matplotlib", "plots (history.png, u_vs_h.png, g_vs_gstar.png)", "matplotlib", "plots"),
        OptionalPackage("gmsh", ".msh mesh files", "python-gmsh", "meshes"),
        OptionalPackage("tqdm", "the progress bar", "tqdm", "progress"),
    )
}


def available(module: str) -> bool:
    """Whether an (optional) package can be imported, without importing it."""
    return importlib.util.find_spec(module) is not None


def missing_message(module: str) -> str:
    """The message for a missing optional package: what needs it and how to install it."""
    p = OPTIONAL[module]
    return (
        f"{p.feature} need the Python package '{p.module}', which is not installed: "
        f"conda install -c conda-forge {p.conda} (it is in environment.yml) or pip install 'femnpde[{p.extra}]'"
    )
