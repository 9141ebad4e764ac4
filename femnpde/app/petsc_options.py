"""PETSc options of a run: every option given is used or rejected.

``[solver] petsc_options`` holds per-solver keys (``ksp_type``,
``pc_type``, ``snes_*``, ...) of the forward solver, read under
``{prefix}forward_`` (``femnpde_forward_ksp_type``; see
:class:`femnpde.fem.solver.ThetaSolver`: the adjoint reuses the forward
factorisation, and keeps its own Krylov method, ``{prefix}adjoint_ksp_*``, for
nonlinear problems).  :func:`check_key` rejects keys that cannot
be such a key (a leading ``-``, spaces, a solver prefix written out) without
PETSc; :class:`RunOptions` inserts the options under the forward prefix before the
solvers call ``setFromOptions``, then rejects any option -- from the
configuration or from the command line under ``{prefix}`` -- that no solver
read, and turns PETSc's errors about invalid values into messages that name
the option and PETSc's reason.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from femnpde.app.schema import ConfigError, format_value

__all__ = ["SOLVER_PREFIXES", "RunOptions", "check_key", "petsc_reason"]

#: The sub-prefixes of the solvers of a run (after the run's prefix); ``[solver] petsc_options`` go to the first.
SOLVER_PREFIXES = ("forward_", "adjoint_")

_KEY = re.compile(r"[A-Za-z][A-Za-z0-9_]*")
_VALID_FORM = (
    "per-solver keys without '-' and without a solver prefix, e.g. ksp_type, pc_type, ksp_rtol, "
    "pc_factor_mat_solver_type, snes_rtol; they apply to the forward solver (prefix femnpde_forward_); the adjoint "
    "solver's own options go in PETSC_OPTIONS as -femnpde_adjoint_KEY VALUE"
)


def check_key(key: str) -> None:
    """Reject a ``solver.petsc_options`` key that no solver can read (no PETSc needed).

    Raises:
        ConfigError: The key has a leading ``-``, spaces or other characters
            PETSc option names cannot hold, or starts with a solver prefix.
    """
    name = f"solver.petsc_options.{key}" if _KEY.fullmatch(key) else "solver.petsc_options"
    if not _KEY.fullmatch(key):
        raise ConfigError(f"{name}: the key {format_value(key)} is not a PETSc option name; allowed: {_VALID_FORM}",
                          name, key)
    for prefix in ("femnpde_", *SOLVER_PREFIXES):
        if key.startswith(prefix):
            raise ConfigError(
                f"{name}: the key starts with {prefix!r}, so it would be read as "
                f"femnpde_forward_{key} and never used; write {key.removeprefix('femnpde_').split('_', 1)[-1]!r} "
                f"instead; allowed: {_VALID_FORM}", name, key)


def petsc_reason(err: BaseException) -> str:
    """PETSc's reason in a ``petsc4py.PETSc.Error`` (its message lines without the call stack)."""
    lines = [re.sub(r"^\[\d+\]\s*", "", line).strip() for line in str(err).splitlines()]
    reason = [line for line in lines if line and " at ./" not in line and " at /" not in line
              and not line.startswith("error code")]
    return "; ".join(reason) or str(err)


class RunOptions:
    """The PETSc options of one run's solvers, inserted for their ``setFromOptions`` and checked after.

    Use as a context manager around the construction of the solvers: the
    options of the configuration are set under the forward prefix (an
    option already given on the command line wins) and removed on exit; on a
    normal exit, an option the solvers never read is an error.

    Args:
        prefix: The run's options prefix (``"femnpde_"``).
        options: ``[solver] petsc_options`` (per-solver keys), or None.
    """

    def __init__(self, prefix: str, options: Mapping[str, str] | None) -> None:
        from petsc4py import PETSc

        self.prefix = prefix
        self.options = dict(options or {})
        self._db = PETSc.Options()
        self._inserted: list[str] = []

    def __enter__(self) -> RunOptions:
        given = self._db.getAll()  # (hasName would mark an option as used)
        for key, value in self.options.items():
            name = f"{self.prefix}{SOLVER_PREFIXES[0]}{key}"
            if name not in given:
                self._db[name] = value
                self._inserted.append(name)
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        try:
            if exc is None:
                self.check_used()
        finally:
            for name in self._inserted:
                self._db.delValue(name)
            self._inserted = []

    def check_used(self) -> None:
        """Raise if an option of the configuration, or one under the run's prefix, was never read.

        Raises:
            ConfigError: Naming the option and the valid forms.
        """
        used = self._db.used
        for key in self.options:
            if not used(f"{self.prefix}{SOLVER_PREFIXES[0]}{key}"):
                raise ConfigError(
                    f"solver.petsc_options.{key} = {format_value(self.options[key])} was not read by any solver "
                    f"(as {self.prefix}forward_{key}): it is not an option of the configured solver; "
                    f"allowed: {_VALID_FORM}",
                    f"solver.petsc_options.{key}", self.options[key],
                )
        inserted = set(self._inserted)
        for name in sorted(self._db.getAll()):
            if name.startswith(self.prefix) and name not in inserted and not used(name):
                raise ConfigError(
                    f"PETSc option -{name} (command line or PETSC_OPTIONS) was not read by any solver of this run "
                    f"(the forward solver reads -{self.prefix}forward_KEY, the adjoint solver "
                    f"-{self.prefix}adjoint_KEY; problems whose step matrix is constant solve the adjoint with the "
                    "forward solver, so adjoint options are not read)",
                    name,
                )
