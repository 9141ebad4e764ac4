"""State-storage specifications and plans: what a storage will hold, decided before the run.

``"memory"`` keeps every state; ``{snapshots = K}`` / ``{budget = "2GB"}``
(optionally ``disk_snapshots``, ``directory``) select checkpointing
(:class:`femnpde.fem.checkpointing.CheckpointStorage`).  :func:`plan_storage`
turns a specification into a :class:`StoragePlan`: the snapshots in memory
and on disk, the predicted peak memory and the recomputation factor of the
multistage schedule (``checkpoint_schedules``), the same on every rank.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from checkpoint_schedules import EndReverse, Forward, MultistageCheckpointSchedule

__all__ = ["StoragePlan", "parse_bytes", "plan_storage", "recomputes", "schedule", "validate_state_storage",
           "EXTRA_STATES"]

_UNITS = {"": 1, "B": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12,
          "KIB": 2**10, "MIB": 2**20, "GIB": 2**30, "TIB": 2**40}
#: arrays held besides the RAM snapshots: two adjoint dependencies and the
#: level last handed to the caller (or the working copy of a snapshot)
EXTRA_STATES = 3


def parse_bytes(text: str | int, key: str = "run.state_storage.budget") -> int:
    """``"2GB"``, ``"512 MiB"``, ``"1.5e9"`` or an int -> bytes.

    Raises:
        ValueError: naming ``key`` and the accepted forms.
    """
    if isinstance(text, bool):
        raise ValueError(f"{key}: expected a size such as \"2GB\", got {text!r}")
    if isinstance(text, int):
        value = float(text)
    else:
        m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([A-Za-z]*)\s*", str(text))
        unit = m.group(2).upper() if m else None
        if m is None or unit not in _UNITS:
            raise ValueError(
                f"{key}: cannot read {text!r} as a size; use a number with a unit "
                f"(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. \"2GB\""
            )
        value = float(m.group(1)) * _UNITS[unit]
    if not value > 0:
        raise ValueError(f"{key}: the size must be positive, got {text!r}")
    return int(value)


def validate_state_storage(spec: Any, key: str = "run.state_storage") -> str | dict[str, Any]:
    """Check a state-storage specification; return it normalised.

    Valid: ``"memory"``; a table with ``budget`` (a size, per rank) or
    ``snapshots`` (int >= 1, in memory), optionally ``disk_snapshots``
    (int >= 0, per-rank ``.npy`` files) and ``directory`` (for the disk
    files; default: the system's temporary directory).

    Raises:
        ValueError: naming the key, the value and what is allowed.
    """
    allowed = ("budget", "snapshots", "disk_snapshots", "directory")
    if isinstance(spec, str):
        if spec != "memory":
            raise ValueError(
                f"{key}: unknown value {spec!r}; use \"memory\", {{budget = \"2GB\"}} or {{snapshots = 8}}"
            )
        return "memory"
    if not isinstance(spec, Mapping):
        raise ValueError(
            f"{key}: expected \"memory\" or a table such as {{snapshots = 8}}, got {type(spec).__name__} {spec!r}"
        )
    unknown = sorted(set(spec) - set(allowed))
    if unknown:
        raise ValueError(f"{key}: unknown key {unknown[0]!r}; allowed keys: {', '.join(allowed)}")
    if ("budget" in spec) == ("snapshots" in spec):
        raise ValueError(f"{key}: give exactly one of 'budget' (e.g. \"2GB\") and 'snapshots' (e.g. 8)")
    out: dict[str, Any] = {}
    if "budget" in spec:
        out["budget"] = parse_bytes(spec["budget"], f"{key}.budget")
    else:
        k = spec["snapshots"]
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"{key}.snapshots: expected an integer >= 1, got {k!r}")
        out["snapshots"] = k
    d = spec.get("disk_snapshots", 0)
    if isinstance(d, bool) or not isinstance(d, int) or d < 0:
        raise ValueError(f"{key}.disk_snapshots: expected an integer >= 0, got {d!r}")
    out["disk_snapshots"] = d
    if "directory" in spec:
        if not isinstance(spec["directory"], str) or not spec["directory"]:
            raise ValueError(f"{key}.directory: expected a directory path (string), got {spec['directory']!r}")
        out["directory"] = spec["directory"]
    return out


@dataclass(frozen=True)
class StoragePlan:
    """What a state storage will hold, decided before the run.

    Attributes:
        kind: ``"memory"`` (all levels) or ``"checkpointing"``.
        n_steps: Time steps N (levels 0..N).
        state_bytes: Bytes of one local state on the largest rank.
        snapshots_in_ram: Restart snapshots kept in memory.
        snapshots_on_disk: Restart snapshots kept in per-rank files.
        predicted_peak_bytes: Peak memory of the storage on the largest rank.
        forward_steps: Forward steps of one forward + adjoint (N without
            checkpointing).
        directory: Parent directory of the disk snapshots (None: system temp).
    """

    kind: str
    n_steps: int
    state_bytes: int
    snapshots_in_ram: int = 0
    snapshots_on_disk: int = 0
    predicted_peak_bytes: int = 0
    forward_steps: int = 0
    directory: str | None = None

    @property
    def recomputation_factor(self) -> float:
        """Forward steps of one forward + adjoint pair divided by N."""
        return self.forward_steps / self.n_steps

    @property
    def memory_bytes(self) -> int:
        """What keeping every level in memory would take (per rank)."""
        return (self.n_steps + 1) * self.state_bytes

    def describe(self) -> str:
        """One line for the run log."""
        mb = 1e-6
        if self.kind == "memory":
            return (f"state storage: all {self.n_steps + 1} levels in memory, "
                    f"{self.predicted_peak_bytes * mb:.1f} MB per rank (recomputation factor 1.00)")
        disk = f" + {self.snapshots_on_disk} on disk" if self.snapshots_on_disk else ""
        return (f"state storage: checkpointing, {self.snapshots_in_ram} snapshots in memory{disk} for "
                f"{self.n_steps} steps; predicted peak {self.predicted_peak_bytes * mb:.1f} MB per rank "
                f"(all levels: {self.memory_bytes * mb:.1f} MB); recomputation factor "
                f"{self.recomputation_factor:.2f}")


def schedule(n_steps: int, ram: int, disk: int) -> MultistageCheckpointSchedule:
    return MultistageCheckpointSchedule(n_steps, ram, disk)


def _count_forward_steps(n_steps: int, ram: int, disk: int) -> int:
    total = 0
    for action in schedule(n_steps, ram, disk):
        if isinstance(action, Forward):
            total += len(action)
        elif isinstance(action, EndReverse):
            break
    return total


def recomputes(spec: str | Mapping[str, Any], n_steps: int) -> bool | None:
    """Whether the storage ``spec`` recomputes states, as far as it is known before the mesh.

    ``False``: every level is kept (``"memory"``, or fewer than two steps); ``True``: a
    checkpointing schedule (``snapshots``, or disk snapshots); ``None``: a ``budget`` alone,
    which keeps every level when they fit (:func:`plan_storage` decides, with the state size).
    """
    spec = validate_state_storage(spec)
    if spec == "memory" or n_steps < 2:
        return False
    if "budget" in spec and spec["disk_snapshots"] == 0:
        return None
    return True


def plan_storage(spec: str | Mapping[str, Any], n_steps: int, n_local_max: int) -> StoragePlan:
    """Decide the storage for ``spec`` (see :func:`validate_state_storage`).

    Args:
        spec: ``"memory"`` or a table with ``budget``/``snapshots``.
        n_steps: Time steps N.
        n_local_max: The largest local state length (owned + ghosts) over the
            ranks, so that every rank chooses the same schedule.

    Raises:
        ValueError: the budget cannot hold the minimum of the schedule.
    """
    spec = validate_state_storage(spec)
    s = int(n_local_max) * 8
    all_levels = StoragePlan("memory", n_steps, s, predicted_peak_bytes=(n_steps + 1) * s, forward_steps=n_steps)
    if spec == "memory":
        return all_levels
    disk = spec["disk_snapshots"]
    if "budget" in spec:
        budget = spec["budget"]
        if disk == 0 and budget >= all_levels.predicted_peak_bytes:
            return all_levels
        ram = budget // max(s, 1) - EXTRA_STATES
        if ram < 1 and disk == 0:
            raise ValueError(
                f"run.state_storage.budget: {budget} bytes per rank hold fewer than {EXTRA_STATES + 1} states of "
                f"{s} bytes; the minimum is {(EXTRA_STATES + 1) * s} bytes (or add disk_snapshots)"
            )
        ram = max(ram, 0)
    else:
        ram = spec["snapshots"]
    # The schedule never uses more than N - 1 restart snapshots.
    ram = min(ram, max(n_steps - 1, 0))
    disk = min(disk, max(n_steps - 1 - ram, 0))
    if n_steps < 2:
        return all_levels
    return StoragePlan(
        "checkpointing", n_steps, s, ram, disk,
        predicted_peak_bytes=(ram + EXTRA_STATES) * s,
        forward_steps=_count_forward_steps(n_steps, ram, disk),
        directory=spec.get("directory"),
    )
