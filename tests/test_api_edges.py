"""API sharp edges of issue 9: L-BFGS history rows, pre-flight gradient check, docs of callbacks."""

import numpy as np
import pytest
from mpi4py import MPI

from femnpde.optim import LBFGSB
from femnpde.app.training import train
from conftest import history_columns, write_on_root

LBFGS = """
[mesh]
cells = [4, 8]
[time]
n_steps = 6
[network]
neurons = 6
[optimizer]
kind = "lbfgs"
[run]
iterations = 5
checkpoint_every = 10
"""


def test_lbfgs_history_rows_describe_the_accepted_iterate(shared_tmp_path, monkeypatch):
    """An evaluation after the accepted iterate (a line-search trial) must not leak into its history row."""
    cfg = write_on_root(shared_tmp_path / "lbfgs.toml", LBFGS)
    train(cfg, out=shared_tmp_path / "plain", quiet=True, write_outputs=False)
    real = LBFGSB.minimize

    def with_trial(self, fun_and_grad, x0, max_iterations, callback=None, **kwargs):
        def cb(k, params, J, grad):
            fun_and_grad(params + 0.05)  # another trial point evaluated before the row is written
            return callback(k, params, J, grad)

        return real(self, fun_and_grad, x0, max_iterations, callback=cb, **kwargs)

    monkeypatch.setattr(LBFGSB, "minimize", with_trial)
    train(cfg, out=shared_tmp_path / "trial", quiet=True, write_outputs=False)
    plain = history_columns(shared_tmp_path / "plain" / "history.csv")
    trial = history_columns(shared_tmp_path / "trial" / "history.csv")
    assert set(plain) == set(trial)
    for key in plain:
        np.testing.assert_allclose(trial[key], plain[key], rtol=1e-12, atol=0, err_msg=key, equal_nan=True)


HEAT = """
[mesh]
cells = [4, 8]
[time]
n_steps = 6
[network]
neurons = 5
[optimizer]
kind = "adam"
lr = 0.01
[run]
iterations = 2
checkpoint_every = 10
"""


def test_train_check_gradient(shared_tmp_path, monkeypatch, capsys):
    """--check-gradient / [run] check_gradient: passes on the run's problem; a wrong gradient stops with exit 3."""
    from femnpde.app.cli import main
    from femnpde.model.reduced import NetworkSource

    cfg = write_on_root(shared_tmp_path / "heat.toml", HEAT)
    assert main(["train", str(cfg), "--out", str(shared_tmp_path / "ok"), "--check-gradient"]) == 0
    out = capsys.readouterr().out
    if MPI.COMM_WORLD.rank == 0:
        assert "gradient check passed" in out, out
    original = NetworkSource.vjp
    monkeypatch.setattr(NetworkSource, "vjp", lambda self, R: original(self, R * (1 + 1e-5)))
    for extra in (["--check-gradient"], ["--set", "run.check_gradient=true"]):
        bad = shared_tmp_path / f"bad-{len(extra)}"  # a new directory each (a non-empty --out is refused)
        assert main(["train", str(cfg), "--out", str(bad), *extra]) == 3
        err = capsys.readouterr().err
        if MPI.COMM_WORLD.rank == 0:
            assert "gradient check before the first epoch failed" in err and "finite-difference" in err, err
        assert not (bad / "checkpoint.npz").exists()
    # Without the check the same (wrong) gradient trains silently.
    assert main(["train", str(cfg), "--out", str(shared_tmp_path / "bad2"), "--quiet"]) == 0
    assert main(["train", str(cfg), "--out", str(shared_tmp_path / "bad3"), "--set", "run.check_gradient=3"]) == 2


def test_function_source_takes_dolfinx_point_layout():
    """FunctionSource callbacks get x of shape (3, npts), as initial conditions and Dirichlet values do."""
    import dolfinx.mesh

    from femnpde.fem.problem import ParabolicProblem, TimeGrid, heat
    from femnpde.model.reduced import FunctionSource

    mesh = dolfinx.mesh.create_unit_square(MPI.COMM_WORLD, 3, 3)
    problem = ParabolicProblem(mesh, heat(), time=TimeGrid(1.0, 2))
    values = FunctionSource(problem, lambda t, x: x[0] + 10 * x[1] + 100 * x[2] + t).values()
    pts = problem.source_points()
    assert values.shape == (3, problem.n_owned_source)
    np.testing.assert_allclose(values[1], pts[:, 0] + 10 * pts[:, 1] + 0.5)
    with pytest.raises(ValueError, match=r"shape \(3, "):
        FunctionSource(problem, lambda t, x: x[:, 0]).values()


def test_time_weights_docstring_examples():
    """TimeWeights documents what time_weights does, with examples that run."""
    import doctest

    import femnpde.obs.weights as weights

    finder = doctest.DocTestFinder()
    tests = [t for t in finder.find(weights.TimeWeights, "TimeWeights", globs=vars(weights)) if t.examples]
    assert tests, "TimeWeights has no examples"
    runner = doctest.DocTestRunner()
    for t in tests:
        runner.run(t)
    assert runner.failures == 0 and runner.tries >= 3


def test_docstring_module_references_exist():
    """Every femnpde module named in a docstring (:mod:, :class:, :func:) exists."""
    import importlib
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1] / "femnpde"
    missing = []
    for path in sorted(root.rglob("*.py")):
        for name in re.findall(r":(?:mod|class|func|meth|data):`~?(femnpde(?:\.\w+)+)`", path.read_text()):
            parts = name.split(".")
            for k in range(len(parts), 1, -1):  # the longest importable module prefix
                try:
                    obj = importlib.import_module(".".join(parts[:k]))
                except ImportError:
                    continue
                try:
                    for attr in parts[k:]:
                        obj = getattr(obj, attr)
                except AttributeError:
                    missing.append(f"{path.relative_to(root.parent)}: {name}")
                break
            else:
                missing.append(f"{path.relative_to(root.parent)}: {name}")
    assert not missing, missing


def test_readme_python_api_example_runs(monkeypatch):
    """The README's Python API example (boundary terms on tags, data layout) runs as written and is exact."""
    import pathlib
    import re

    root = pathlib.Path(__file__).resolve().parents[1]
    text = (root / "README.md").read_text()
    section = text[text.index("## Python API") :]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    monkeypatch.chdir(root)
    scope: dict = {}
    exec(compile(code, "README.md (Python API)", "exec"), scope)
    assert np.all(scope["rates"] > 1.9) and np.all(scope["rates"] < 2.1), scope["rates"]
    assert scope["fd"].worst <= 1e-9, scope["fd"].best
    assert scope["data"].shape == (scope["problem"].time.n_steps + 1, scope["problem"].n_owned)
    assert np.array_equal(scope["net"].params, scope["theta"])
