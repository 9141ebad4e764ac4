"""Parsing of ``femnpde`` command output for the tests (not a test module)."""

from __future__ import annotations

import re

__all__ = ["gradcheck_figures"]


def gradcheck_figures(out: str) -> tuple[list[float], float]:
    """The Taylor rates and |dJ/dtheta| printed by ``femnpde gradcheck``."""
    rates = [float(m) for m in re.findall(r"^\s*\S+\s+\S+\s+(-?\d+\.\d{4})\s*$", out, flags=re.M)]
    norm = re.search(r"\|dJ/dtheta\|\s*=\s*(\S+)", out)
    assert norm is not None, f"no gradient norm in the gradcheck output:\n{out}"
    return rates, float(norm.group(1))
