"""Type and range checks of configuration values, each raising a :class:`ConfigError` that names the key.

The building blocks of :mod:`femnpde.app.validation`; the allowed keys of
every table come from :mod:`femnpde.app.schema`.
"""

from __future__ import annotations

import difflib
import math
import numbers
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from femnpde.app.schema import DEFAULTS, OPTIONAL_DEFAULTS, ConfigError, default, format_value

__all__: list[str] = []  # internal helpers of femnpde.app.validation


def _error(key: str, value: Any, problem: str, allowed: str) -> ConfigError:
    return ConfigError(f"{key} = {format_value(value)} {problem}; allowed: {allowed}", key, value)


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _is_int(v: Any) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, (bool, np.bool_))


def _type_name(v: Any) -> str:
    if isinstance(v, (bool, np.bool_)):
        return "a boolean"
    if isinstance(v, numbers.Integral):
        return "an integer"
    if isinstance(v, numbers.Real):
        return "a float"
    if isinstance(v, str):
        return "a string"
    if isinstance(v, (list, tuple)):
        return "an array"
    if isinstance(v, Mapping):
        return "a table"
    return f"a {type(v).__name__}"


def _float(key: str, v: Any, ok: Callable[[float], bool] = lambda f: True, allowed: str = "a number") -> float:
    if not _is_number(v):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    f = float(v)
    if not math.isfinite(f):
        raise _error(key, v, "is not finite", allowed)
    if not ok(f):
        raise _error(key, v, "is out of range", allowed)
    return f


def _int(key: str, v: Any, minimum: int | None = None, allowed: str | None = None) -> int:
    allowed = allowed or ("an integer" if minimum is None else f"an integer >= {minimum}")
    if not _is_int(v):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    if minimum is not None and v < minimum:
        raise _error(key, v, "is out of range", allowed)
    return int(v)


def _bool(key: str, v: Any) -> bool:
    if not isinstance(v, (bool, np.bool_)):
        raise _error(key, v, f"is {_type_name(v)}", "true or false")
    return bool(v)


def _str(key: str, v: Any, allowed: str = "a string") -> str:
    if not isinstance(v, str):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    return v


def _choice(key: str, v: Any, choices: Sequence[str]) -> str:
    allowed = ", ".join(format_value(c) for c in choices)
    if not isinstance(v, str):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    if v not in choices:
        close = difflib.get_close_matches(v, list(choices), n=1) if len(v) <= 100 else []
        hint = f" (did you mean {format_value(close[0])}?)" if close else ""
        raise _error(key, v, f"is not valid{hint}", allowed)
    return v


def _list(key: str, v: Any, allowed: str, lengths: Sequence[int] | None = None) -> list:
    if not isinstance(v, (list, tuple)):
        raise _error(key, v, f"is {_type_name(v)}", allowed)
    if lengths is not None and len(v) not in lengths:
        raise _error(key, v, f"has {len(v)} entries", allowed)
    return v


def _floats(
    key: str,
    v: Any,
    allowed: str,
    lengths: Sequence[int] | None = None,
    ok: Callable[[float], bool] = lambda f: True,
) -> list[float]:
    items = _list(key, v, allowed, lengths)
    return [_float(f"{key}[{i}]", x, ok, allowed) for i, x in enumerate(items)]


def _ints(key: str, v: Any, allowed: str, lengths: Sequence[int] | None = None, minimum: int = 1) -> list[int]:
    items = _list(key, v, allowed, lengths)
    return [_int(f"{key}[{i}]", x, minimum, allowed) for i, x in enumerate(items)]


def _extra_keys(section: str) -> list[str]:
    return [key.rsplit(".", 1)[1] for key in OPTIONAL_DEFAULTS if key.rsplit(".", 1)[0] == section]


def _all_keys() -> dict[str, list[str]]:
    """Section name -> allowed keys (``optimizer.schedule`` is its own section), from the schema."""
    out: dict[str, list[str]] = {}
    for section, table in DEFAULTS.items():
        if isinstance(table, dict):
            out[section] = [k for k in table if not isinstance(table[k], dict)] + _extra_keys(section)
            for k, sub in table.items():
                if isinstance(sub, dict):
                    out[section].append(k)
                    out[f"{section}.{k}"] = list(sub)
        else:
            out[section] = _extra_keys(section)
    return out


def _unknown(key: str, name: str, allowed: Sequence[str], where: str) -> ConfigError:
    close = difflib.get_close_matches(name, list(allowed), n=1, cutoff=0.6) if len(name) <= 100 else []
    if close:
        prefix = key.rsplit(".", 1)[0] if "." in key else ""
        suggestion = f"{prefix}.{close[0]}" if prefix else close[0]
        hint = f" (did you mean {suggestion!r}?)"
    else:
        # The key may belong to another section.
        homes = [f"{s}.{name}" for s, keys in _all_keys().items() if name in keys and s != where]
        hint = f" (did you mean {homes[0]!r}?)" if homes else ""
    listing = ", ".join(allowed)
    title = f"[{where}]" if where else "the top level"
    return ConfigError(f"unknown key {format_value(key)}{hint}; allowed keys in {title}: {listing}", key, None)


def _section(cfg: Mapping[str, Any], name: str) -> dict[str, Any]:
    """The user's table ``name`` (dotted for sub-tables), checked for unknown keys."""
    node: Any = cfg
    for part in name.split("."):
        node = node.get(part, {}) if isinstance(node, Mapping) else node
    if not isinstance(node, Mapping):
        raise _error(name, node, f"is {_type_name(node)}", f"a table [{name}]")
    allowed = _all_keys()[name]
    for k in node:
        if k not in allowed:
            raise _unknown(f"{name}.{k}", str(k), allowed, name)
    return dict(node)


def _get(sec: Mapping[str, Any], key: str) -> Any:
    """The user's value of the dotted ``key`` in its table ``sec``, else the schema's default."""
    leaf = key.rsplit(".", 1)[1]
    return sec[leaf] if leaf in sec else default(key)


#: The form of pde.residual and network.factory: ``module.path:function.path``.
_RESIDUAL_SPEC = re.compile(r"[A-Za-z_]\w*(\.[A-Za-z_]\w*)*:[A-Za-z_]\w*(\.[A-Za-z_]\w*)*")


def _reject_keys(sec: Mapping[str, Any], section: str, keys: Sequence[str], problem: str, fix: str) -> None:
    """Raise for the first of ``keys`` given in ``sec`` (keys of another kind); ``fix`` may name ``{key}``."""
    for k in keys:
        if k in sec:
            key = f"{section}.{k}"
            raise _error(key, sec[k], problem, fix.format(key=key))
