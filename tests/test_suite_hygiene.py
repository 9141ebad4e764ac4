"""The suite keeps checking something: every test function asserts or expects an exception.

An AST scan of ``tests/``: a test function passes when its body (or a helper
it calls, defined in the same module or in ``conftest.py``) contains an
``assert``, a ``pytest.raises``/``pytest.warns``/``pytest.fail`` call or an
``assert_*`` call such as ``np.testing.assert_allclose``.  Helpers count
when they check themselves (followed transitively within the module).
"""

from __future__ import annotations

import ast
import pathlib

import pytest

pytestmark = pytest.mark.serial

TESTS = pathlib.Path(__file__).resolve().parent

#: Calls that make a test fail on their own (``pytest.raises`` and friends).
_CHECKING_CALLS = {"raises", "warns", "fail", "deprecated_call"}


def _called_names(node: ast.AST) -> set[str]:
    """Names of the functions called in ``node`` (``f(...)`` and ``obj.f(...)``)."""
    names = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Call):
            if isinstance(sub.func, ast.Name):
                names.add(sub.func.id)
            elif isinstance(sub.func, ast.Attribute):
                names.add(sub.func.attr)
    return names


def _checks_directly(node: ast.AST) -> bool:
    """An ``assert``, ``pytest.raises``/``warns``/``fail`` or an ``assert_*`` call (``np.testing``)."""
    for sub in ast.walk(node):
        if isinstance(sub, ast.Assert):
            return True
        if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute):
            func = sub.func
            if func.attr in _CHECKING_CALLS and isinstance(func.value, ast.Name) and func.value.id == "pytest":
                return True
            if func.attr.startswith("assert_"):
                return True
    return False


def _functions(tree: ast.Module) -> dict[str, ast.FunctionDef]:
    """Every function defined in the module (top level, nested, methods), by name."""
    return {n.name: n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}


def _checking_helpers(functions: dict[str, ast.FunctionDef]) -> set[str]:
    """Names of the non-test functions that check, directly or through other checking helpers."""
    checking = {name for name, fn in functions.items() if _checks_directly(fn)}
    changed = True
    while changed:
        changed = False
        for name, fn in functions.items():
            if name not in checking and _called_names(fn) & checking:
                checking.add(name)
                changed = True
    return checking


def unchecked_tests(source: str, shared_helpers: frozenset[str] = frozenset()) -> list[str]:
    """Names of the test functions in ``source`` that neither assert nor expect an exception."""
    tree = ast.parse(source)
    functions = _functions(tree)
    helpers = _checking_helpers(functions) | set(shared_helpers)
    bad = []
    for name, fn in functions.items():
        if not name.startswith("test"):
            continue
        if _checks_directly(fn) or _called_names(fn) & helpers:
            continue
        bad.append(f"{name} (line {fn.lineno})")
    return bad


def _conftest_helpers() -> frozenset[str]:
    path = TESTS / "conftest.py"
    if not path.is_file():
        return frozenset()
    return frozenset(_checking_helpers(_functions(ast.parse(path.read_text(encoding="utf-8")))))


def test_every_test_function_checks_something():
    shared = _conftest_helpers()
    offenders = {}
    for path in sorted(TESTS.rglob("test_*.py")):
        bad = unchecked_tests(path.read_text(encoding="utf-8"), shared)
        if bad:
            offenders[str(path.relative_to(TESTS))] = bad
    assert not offenders, f"test functions without an assertion or pytest.raises: {offenders}"


def test_the_scan_detects_unchecked_tests():
    """The scan itself can fail: it flags a test that only calls code, and accepts the ways of checking."""
    source = '''
import pytest

def _helper(x):
    assert x > 0

def _indirect(x):
    _helper(x)

def _quiet(x):
    return x + 1

def test_no_check():
    _quiet(1)

def test_asserts():
    assert _quiet(1) == 2

def test_raises():
    with pytest.raises(ValueError):
        int("a")

def test_numpy_testing():
    np.testing.assert_allclose(1.0, 1.0)

def test_through_helper():
    _indirect(3)

class TestGroup:
    def test_method_without_check(self):
        _quiet(2)
'''
    assert unchecked_tests(source) == ["test_no_check (line 13)", "test_method_without_check (line 30)"]
