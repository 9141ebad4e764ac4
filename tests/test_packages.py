"""Every module femnpde imports is declared: pyproject.toml, environment.yml, the Debian environment.

A static check (AST over femnpde/): an import of a package that no list
declares is how a conda run once ended with ``ModuleNotFoundError`` for
adios4dolfinx.  A new third-party import must be added to ``PACKAGES``
below *and* to the lists.
"""

import ast
import pathlib
import re
import sys
import tomllib
from dataclasses import dataclass

import pytest

pytestmark = pytest.mark.serial

ROOT = pathlib.Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Package:
    """Where one import name comes from.

    Attributes:
        pypi: The PyPI requirement name in pyproject.toml (dependencies or an
            extra), or None for the FEniCSx platform packages that are not on PyPI.
        conda: The conda-forge name in environment.yml.
        debian: The package of scripts/debian-packages.txt (or the PyPI name in
            scripts/pip-requirements.txt) that provides it in the env-run
            environment and the Docker image.
        optional: Listed as a comment (an optional extra) in environment.yml.
    """

    pypi: str | None
    conda: str
    debian: str
    optional: bool = False


#: import name -> its packages.  Packages pulled in by python3-dolfinx-real /
#: python3-adios4dolfinx in Debian are named by the package that brings them.
PACKAGES = {
    "dolfinx": Package(None, "fenics-dolfinx", "python3-dolfinx-real"),
    "basix": Package(None, "fenics-basix", "python3-dolfinx-real"),
    "ufl": Package(None, "fenics-ufl", "python3-dolfinx-real"),
    "petsc4py": Package(None, "petsc4py", "python3-dolfinx-real"),
    "mpi4py": Package(None, "mpi4py", "python3-dolfinx-real"),
    "numpy": Package("numpy", "numpy", "python3-dolfinx-real"),
    "scipy": Package("scipy", "scipy", "python3-scipy"),
    "adios2": Package("adios2", "adios2", "python3-adios4dolfinx"),
    "adios4dolfinx": Package("adios4dolfinx", "adios4dolfinx", "python3-adios4dolfinx"),
    "gmsh": Package("gmsh", "python-gmsh", "python3-gmsh"),
    "matplotlib": Package("matplotlib", "matplotlib", "python3-matplotlib"),
    "tqdm": Package("tqdm", "tqdm", "python3-tqdm"),
    "tomli_w": Package("tomli-w", "tomli-w", "python3-tomli-w"),
    "checkpoint_schedules": Package("checkpoint_schedules", "checkpoint_schedules", "checkpoint_schedules"),
    "jax": Package("jax", "jax", "jax", optional=True),
    "jaxlib": Package("jax", "jaxlib", "jaxlib", optional=True),
    "pytest": Package("pytest", "pytest", "python3-pytest"),
}


def imported_modules(package_dir: pathlib.Path) -> dict[str, set[str]]:
    """Top-level modules imported anywhere in a package (absolute imports), with the files."""
    found: dict[str, set[str]] = {}
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                found.setdefault(name.split(".")[0], set()).add(str(path.relative_to(ROOT)))
    return found


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirement_name(req: str) -> str:
    return _norm(re.match(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)", req).group(1))


def pyproject_names() -> set[str]:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(meta.get("dependencies", []))
    for extra in meta.get("optional-dependencies", {}).values():
        reqs += extra
    return {_requirement_name(r) for r in reqs}


def conda_names() -> tuple[set[str], set[str]]:
    """(listed, listed only as an optional comment) names of environment.yml."""
    listed, optional = set(), set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s*-\s+([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if m and m.group(1) != "pip":
            listed.add(_norm(m.group(1)))
        m = re.match(r"\s*#\s*-\s+([A-Za-z0-9][A-Za-z0-9._-]*)", line)
        if m:
            optional.add(_norm(m.group(1)))
    return listed, optional


def debian_names() -> set[str]:
    names = set()
    for name in ("debian-packages.txt", "pip-requirements.txt"):
        for line in (ROOT / "scripts" / name).read_text().splitlines():
            line = line.split("#")[0].strip()
            if line:
                names.add(_requirement_name(line))
    return names


IMPORTS = imported_modules(ROOT / "femnpde")
THIRD_PARTY = sorted(m for m in IMPORTS if m not in sys.stdlib_module_names and m != "femnpde")


def test_the_scan_sees_the_imports():
    # The scan itself: it must see the FEniCSx stack and adios4dolfinx (femnpde/io/fielddata.py).
    assert {"dolfinx", "ufl", "petsc4py", "mpi4py", "numpy", "adios4dolfinx"} <= set(THIRD_PARTY)


@pytest.mark.parametrize("module", THIRD_PARTY)
def test_import_is_declared(module):
    where = ", ".join(sorted(IMPORTS[module]))
    assert module in PACKAGES, (
        f"femnpde imports '{module}' ({where}), which tests/test_packages.py does not know: add it to PACKAGES "
        "and declare it in pyproject.toml, environment.yml and scripts/debian-packages.txt (or pip-requirements.txt)"
    )
    pkg = PACKAGES[module]
    if pkg.pypi is not None:
        assert _norm(pkg.pypi) in pyproject_names(), (
            f"'{module}' ({where}) is not declared in pyproject.toml: add '{pkg.pypi}' to dependencies or an extra"
        )
    listed, optional = conda_names()
    ok = _norm(pkg.conda) in listed or (pkg.optional and _norm(pkg.conda) in optional)
    assert ok, f"'{module}' ({where}) is not in environment.yml: add '{pkg.conda}' (conda-forge name)"
    assert _norm(pkg.debian) in debian_names(), (
        f"'{module}' ({where}) is not provided by scripts/debian-packages.txt or scripts/pip-requirements.txt: "
        f"add '{pkg.debian}'"
    )


def test_conda_list_is_named_only_in_environment_yml():
    # README, the Slurm script and env-run point to environment.yml instead of repeating a package list.
    for name in ("README.md", "scripts/slurm-train.sh", "scripts/env-run"):
        text = (ROOT / name).read_text()
        assert "environment.yml" in text, f"{name} does not point to environment.yml"
        assert not re.search(r"conda (create|install)[^\n]*fenics-dolfinx", text), (
            f"{name} repeats a conda package list; point to environment.yml"
        )


def test_readme_command_table_lists_every_command():
    from femnpde.app.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if a.__class__.__name__ == "_SubParsersAction")
    readme = (ROOT / "README.md").read_text()
    table = readme[readme.index("| command | what it does |"):]
    table = table[: table.index("\n\n")]
    missing = [name for name in sub.choices if f"`femnpde {name}" not in table]
    assert not missing, f"README.md's command table lacks: {missing}"


def test_dockerfile_is_pinned_and_uses_the_rootfs_package_lists():
    text = (ROOT / "Dockerfile").read_text()
    tag = re.search(r"^ARG DEBIAN_TAG=(\S+)$", text, re.M)
    assert tag and re.fullmatch(r"sid-\d{8}", tag.group(1)), "the base image must be a dated sid tag"
    assert re.search(r"^FROM debian:\$\{DEBIAN_TAG\}$", text, re.M)
    snap = re.search(r"^ARG DEBIAN_SNAPSHOT=(\d{8})T\d{6}Z$", text, re.M)
    assert snap and snap.group(1) == tag.group(1).removeprefix("sid-"), "apt snapshot and base tag differ"
    assert text.count('--snapshot "$DEBIAN_SNAPSHOT"') == 2  # apt-get update and install
    assert "COPY scripts/debian-packages.txt scripts/pip-requirements.txt" in text
    assert "/tmp/femnpde/debian-packages.txt" in text and "/tmp/femnpde/pip-requirements.txt" in text


def test_one_oversubscription_setting():
    # env-run, the image and the Slurm script use the variable this Open MPI reads (the old name is deprecated).
    for name in ("scripts/env-run", "Dockerfile", "scripts/slurm-train.sh"):
        text = (ROOT / name).read_text()
        assert re.search(r"PRTE_MCA_mapby[=:\"${}-]*:oversubscribe", text), name
