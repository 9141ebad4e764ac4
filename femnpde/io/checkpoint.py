"""Checkpoints: atomic ``.npz`` files of the parameters and nested optimizer/schedule states.

Arrays are restored bitwise; Python scalars, strings and ``None`` exactly
(a JSON manifest records the structure).  Rank 0 writes and reads; the
result or the error reaches every rank.
"""

from __future__ import annotations

import json
import numbers
import os
import pathlib
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from femnpde._mpi import on_root
from femnpde.io.files import atomic_write

__all__ = ['load_checkpoint', 'save_checkpoint']


_CHECKPOINT_FORMAT = "femnpde-checkpoint"
_CHECKPOINT_VERSION = 1
_MANIFEST_KEY = "__femnpde_manifest__"


class _Encoder:
    """Encodes a nested state into npz arrays plus a JSON manifest.

    Arrays (and numpy scalars) become npz members named by their key path
    (``optimizer_state/m``); the manifest records the structure and the
    exact Python scalars (JSON round-trips floats exactly, inf/nan included).
    """

    def __init__(self) -> None:
        self.arrays: dict[str, np.ndarray] = {}

    def _member(self, prefix: str) -> str:
        name = prefix or "value"
        if name == _MANIFEST_KEY or name in self.arrays:
            k = 1
            while f"{name}#{k}" in self.arrays:
                k += 1
            name = f"{name}#{k}"
        return name

    def _array(self, value: np.ndarray, prefix: str) -> str:
        if value.dtype.hasobject:
            raise TypeError(
                f"checkpoint: array at {prefix!r} has dtype object, which cannot be saved without pickle"
            )
        name = self._member(prefix)
        self.arrays[name] = value
        return name

    def encode(self, value: Any, prefix: str) -> Any:
        if value is None:
            return {"t": "none"}
        if isinstance(value, bool):
            return {"t": "bool", "v": value}
        if isinstance(value, np.ndarray):
            return {"t": "array", "k": self._array(value, prefix)}
        if isinstance(value, np.generic):
            return {"t": "npscalar", "k": self._array(np.asarray(value), prefix)}
        if isinstance(value, int):
            return {"t": "int", "v": int(value)}
        if isinstance(value, float):
            return {"t": "float", "v": float(value)}
        if isinstance(value, str):
            return {"t": "str", "v": value}
        if isinstance(value, Mapping):
            items = []
            for key, val in value.items():
                if not isinstance(key, (str, int, float, bool)) and key is not None:
                    raise TypeError(
                        f"checkpoint: key {key!r} at {prefix!r} is not a str, int, float, bool or None"
                    )
                sub = f"{prefix}/{key}" if prefix else str(key)
                items.append(
                    [
                        self.encode(key, "") if not isinstance(key, str) else key,
                        self.encode(val, sub),
                    ]
                )
            return {"t": "dict", "items": items}
        if isinstance(value, (list, tuple)):
            return {
                "t": "list" if isinstance(value, list) else "tuple",
                "items": [self.encode(v, f"{prefix}/{i}") for i, v in enumerate(value)],
            }
        raise TypeError(
            f"checkpoint: value at {prefix!r} of type {type(value).__name__} is not supported; use numpy arrays, "
            "numbers, str, bool, None, and dicts/lists/tuples of them"
        )


def _decode(node: Any, arrays: Mapping[str, np.ndarray]) -> Any:
    if not isinstance(node, dict):  # a plain str dict key
        return node
    t = node["t"]
    if t == "none":
        return None
    if t in ("bool", "int", "float", "str"):
        return {"bool": bool, "int": int, "float": float, "str": str}[t](node["v"])
    if t == "array":
        return arrays[node["k"]]
    if t == "npscalar":
        return arrays[node["k"]][()]
    if t == "dict":
        return {_decode(k, arrays): _decode(v, arrays) for k, v in node["items"]}
    if t in ("list", "tuple"):
        items = [_decode(v, arrays) for v in node["items"]]
        return items if t == "list" else tuple(items)
    raise ValueError(f"unknown node type {t!r}")


def _write_npz(fileobj: Any, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an (uncompressed) ``.npz`` to an open binary file."""
    np.savez(fileobj, **arrays)


def save_checkpoint(
    path: str | os.PathLike,
    comm: Any,
    *,
    epoch: int,
    params: np.ndarray,
    optimizer_state: Mapping[str, Any],
    schedule_state: Mapping[str, Any] | None,
    extra: Mapping[str, Any] | None = None,
) -> None:
    """Save a training checkpoint as an ``.npz`` file, atomically (rank 0; collective).

    The file is written to a temporary file in the same directory, fsynced
    and moved over ``path`` with :func:`os.replace`, so ``path`` is always
    either the previous checkpoint or the new one, never a partial file.
    Pass e.g. ``run / "checkpoint_latest.npz"`` to keep a rolling latest
    checkpoint.

    Arrays are stored bitwise as npz members named by their key path
    (``params``, ``optimizer_state/m``, ``extra/foo/0``, ...); the nesting
    and the Python scalars (int, float incl. inf/nan, str, bool, None) are
    stored exactly in a JSON manifest; numpy scalars keep their dtype.  No
    pickle is used.  Parameters are taken from rank 0 (they are replicated).
    A failure on rank 0 is raised on every rank (same kind of exception).

    Args:
        path: The ``.npz`` file.
        comm: The communicator.
        epoch: The number of completed epochs.
        params: The flat parameter vector.
        optimizer_state: ``optimizer.state_dict()`` (nested dicts, lists,
            tuples of arrays and scalars).
        schedule_state: ``schedule.state_dict()`` or None.
        extra: Anything else of the same kinds (e.g. the best loss, RNG state).

    Raises:
        TypeError: A value cannot be stored (object arrays, other types).
        OSError: Writing failed.
    """
    path = pathlib.Path(path)

    def write() -> None:
        enc = _Encoder()
        manifest = {
            "format": _CHECKPOINT_FORMAT,
            "version": _CHECKPOINT_VERSION,
            "data": enc.encode(
                {
                    "epoch": int(epoch),
                    "params": np.asarray(params),
                    "optimizer_state": dict(optimizer_state)
                    if optimizer_state is not None
                    else None,
                    "schedule_state": dict(schedule_state)
                    if schedule_state is not None
                    else None,
                    "extra": dict(extra) if extra is not None else None,
                },
                "",
            ),
        }
        arrays = dict(enc.arrays)
        arrays[_MANIFEST_KEY] = np.frombuffer(
            json.dumps(manifest).encode("utf-8"), dtype=np.uint8
        )
        atomic_write(path, lambda f: _write_npz(f, arrays))

    on_root(comm, write, f"save_checkpoint('{path}')", broadcast=False)


def _read_checkpoint(path: pathlib.Path) -> dict[str, Any]:
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        manifest = json.loads(bytes(arrays.pop(_MANIFEST_KEY)).decode("utf-8"))
        if manifest.get("format") != _CHECKPOINT_FORMAT:
            raise ValueError("not a femnpde checkpoint")
        if int(manifest.get("version", -1)) > _CHECKPOINT_VERSION:
            raise ValueError(
                f"checkpoint format version {manifest['version']} is newer than this femnpde"
            )
        data = _decode(manifest["data"], arrays)
    except FileNotFoundError as exc:
        raise ValueError(
            f"load_checkpoint: the checkpoint '{path}' does not exist"
        ) from exc
    except (
        OSError,
        ValueError,
        KeyError,
        TypeError,
        EOFError,
        zipfile.BadZipFile,
        UnicodeDecodeError,
    ) as exc:
        raise ValueError(
            f"load_checkpoint: '{path}' is not a readable femnpde checkpoint ({exc})"
        ) from exc
    return data


def load_checkpoint(path: str | os.PathLike, comm: Any) -> dict[str, Any]:
    """Load a checkpoint written by :func:`save_checkpoint` (rank 0 reads, broadcasts; collective).

    Args:
        path: The ``.npz`` file.
        comm: The communicator.

    Returns:
        ``{"epoch": int, "params": ndarray, "optimizer_state": dict,
        "schedule_state": dict | None, "extra": dict | None}``, with the
        values exactly as saved, on every rank.

    Raises:
        ValueError: On every rank, if the file is missing or corrupt (the
            message names the file).
    """
    path = pathlib.Path(path)
    return on_root(comm, lambda: _read_checkpoint(path), f"load_checkpoint('{path}')")
