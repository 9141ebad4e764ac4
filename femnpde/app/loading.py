"""Reading a run configuration: a TOML file, ``--set key=value`` overrides, relative paths.

Imports neither DOLFINx nor PETSc nor mpi4py.
"""

from __future__ import annotations

import copy
import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from femnpde.app.schema import DEFAULTS, ConfigError, format_value
from femnpde.app.validation import validate

__all__ = ["load_config"]

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_MISSING = object()


def _parse_override(text: str) -> tuple[list[str], Any]:
    """``"a.b.c=value"`` -> (["a", "b", "c"], parsed value)."""
    form = 'KEY=VALUE with a dotted KEY, e.g. time.T=2.0, pde.preset=allen-cahn or optimizer.betas=[0.9, 0.99]'
    if not isinstance(text, str) or "=" not in text:
        raise ConfigError(f"override {text!r} is not valid: expected {form}", str(text), text)
    key, raw = (s.strip() for s in text.split("=", 1))
    parts = key.split(".")
    if not key or not all(_BARE_KEY.fullmatch(p) for p in parts):
        raise ConfigError(
            f"override {text!r}: key {key!r} is not valid: expected {form} (key parts are letters, digits, _ and -)",
            key, raw,
        )
    if not raw:
        raise ConfigError(f'override {text!r}: the value is empty; use {key}="" for an empty string', key, raw)
    try:
        value = tomllib.loads(f"v = {raw}")["v"]
    except tomllib.TOMLDecodeError as err:
        if raw[0] in "[{\"'" or "\n" in raw:
            raise ConfigError(f"override {text!r}: the value {raw!r} is not a valid TOML value ({err})", key, raw) from None
        value = raw  # a bare word: a string
    return parts, value


def _apply_override(cfg: dict[str, Any], text: str) -> None:
    parts, value = _parse_override(text)
    node: Any = cfg
    default: Any = DEFAULTS
    for depth, part in enumerate(parts):
        last = depth == len(parts) - 1
        here = ".".join(parts[: depth + 1])
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise ConfigError(
                    f"override {text!r}: {'.'.join(parts[:depth])} is an array of {len(node)} entries; "
                    f"{part!r} is not an index 0..{len(node) - 1}",
                    here, value,
                )
            idx = int(part)
            default = default[idx] if isinstance(default, list) and idx < len(default) else _MISSING
            if last:
                node[idx] = value
                return
            node = node[idx]
            continue
        if not isinstance(node, dict):
            raise ConfigError(
                f"override {text!r}: {'.'.join(parts[:depth])} = {format_value(node)} is not a table", here, value
            )
        default = default.get(part, _MISSING) if isinstance(default, Mapping) else _MISSING
        if last:
            node[part] = value
            return
        if part not in node:
            node[part] = copy.deepcopy(default) if isinstance(default, list) else {}
        node = node[part]


def load_config(path: str | os.PathLike, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read, override, resolve and validate a TOML run configuration.

    Relative ``mesh.path`` and ``data.path`` values in the file are taken
    relative to the file's directory (and made absolute); values given as
    overrides are taken relative to the working directory.

    Args:
        path: The TOML file.
        overrides: ``"a.b.c=value"`` strings applied after reading the file.
            The value is parsed as a TOML value (``0.02``, ``true``, ``"x"``,
            ``[1, 2]``); a bare word that is not valid TOML (``allen-cahn``,
            ``mesh.msh``) is taken as a string.  A numeric part indexes an
            array of tables, e.g. ``boundary.0.value=1.0``.

    Returns:
        The resolved configuration (see :func:`validate`).

    Raises:
        ConfigError: If the file is missing or unreadable (naming the file),
            has a TOML syntax error (naming the file and line), an override
            is malformed, or the configuration is invalid.
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"configuration file {str(p)!r} not found", str(p), str(p)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"configuration file {str(p)!r} cannot be read: {err}", str(p), str(p)) from None
    try:
        cfg = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        line = getattr(err, "lineno", None)
        where = f"{p}:{line}" if line is not None else str(p)
        msg = getattr(err, "msg", None) or str(err)
        raise ConfigError(f"{where}: TOML syntax error: {msg} (in configuration file {str(p)!r})", str(p), None) from None
    base = p.resolve().parent
    for section in ("mesh", "data"):
        sec = cfg.get(section)
        if isinstance(sec, dict) and isinstance(sec.get("path"), str) and sec["path"]:
            q = Path(sec["path"]).expanduser()
            sec["path"] = str(q if q.is_absolute() else base / q)
    if isinstance(overrides, str):
        overrides = [overrides]
    for text in overrides:
        _apply_override(cfg, text)
    return validate(cfg)

