"""bench/reproduce_paper.py: the width study's sweeps, JSON and generated README block (tiny budgets)."""

import importlib.util
import json
import pathlib

import numpy as np
import pytest

from femnpde.io.history import History

ROOT = pathlib.Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.serial


@pytest.fixture
def study(monkeypatch):
    spec = importlib.util.spec_from_file_location("reproduce_paper", ROOT / "bench" / "reproduce_paper.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "MARKS", (2, 3))
    monkeypatch.setattr(module, "REFERENCE", {"heat": {2: {0: 0.5, 2: 1e-9, 3: 0.5}}})
    return module


def test_sweeps_json_and_readme_block(study, tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text("before\n<!-- width-study:begin -->\nold text 0.123\n<!-- width-study:end -->\nafter\n")
    where = ["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), "--readme", str(readme)]
    assert study.main(["run", "--N", "2,3", "--seeds", "0,1", "--epochs", "3", *where]) == 0
    data = json.loads((tmp_path / "res" / "heat-rectangle.json").read_text())
    assert sorted(data["summary"]) == ["2", "3"]
    best = {}
    for seed in (0, 1):
        rmse = History.read(tmp_path / "runs" / "heat-rectangle" / f"N2-seed{seed}" / "history.csv")["relative_rmse"]
        best[seed] = np.minimum.accumulate(rmse)
    at3 = data["summary"]["2"]["at"]["3"]
    assert at3["n"] == 2
    assert at3["median"] == pytest.approx(np.median([best[0][2], best[1][2]]))
    assert at3["min"] == pytest.approx(min(best[0][2], best[1][2]))
    assert data["summary"]["2"]["reference"]["3"] == 0.5
    text = readme.read_text()
    assert text.startswith("before\n<!-- width-study:begin -->") and text.endswith("<!-- width-study:end -->\nafter\n")
    assert "old text" not in text
    assert f"{at3['median']:.4f} [{at3['min']:.4f}, {at3['max']:.4f}] (n=2) / 0.5000" in text
    assert "2 of 2 seeds at or below it" in text  # at mark 3 both runs are below the patched 0.5
    assert (tmp_path / "res" / "heat-rectangle_rmse_vs_N.png").is_file()
    # L-BFGS: iterations to the (patched) reference; 'report' regenerates the same block
    monkeypatch_ref = study.REFERENCE["heat"][2]
    monkeypatch_ref[1000] = 1.0  # reached at the first iteration
    assert study.main(["run", "--N", "2", "--seeds", "0", "--epochs", "2", "--lbfgs", *where]) == 0
    data = json.loads((tmp_path / "res" / "heat-rectangle.json").read_text())
    (lb,) = data["lbfgs"]
    assert lb["to_reference"]["1000"]["iterations"] == 1 and "5000" not in lb["to_reference"]
    first = readme.read_text()
    assert "| 2 | 2 |" in first and "1.0000: 1 iterations" in first
    assert study.main(["report", *where]) == 0
    assert readme.read_text() == first


def test_report_keeps_runs_recorded_only_in_the_json(study, tmp_path):
    """A new runs directory extends the record: runs known only from the JSON stay, longer new runs replace them."""
    readme = tmp_path / "README.md"
    readme.write_text("<!-- width-study:begin -->\n<!-- width-study:end -->\n")
    res = tmp_path / "res"
    first = ["--runs", str(tmp_path / "old"), "--results", str(res), "--readme", str(readme)]
    assert study.main(["run", "--N", "2", "--seeds", "0,1", "--epochs", "2", *first]) == 0
    old = json.loads((res / "heat-rectangle.json").read_text())
    assert [(e["N"], e["seed"], e["epochs"]) for e in old["runs"]] == [(2, 0, 2), (2, 1, 2)]
    # the old runs directory is gone; a new one holds a longer run of seed 1 and a new width
    second = ["--runs", str(tmp_path / "new"), "--results", str(res), "--readme", str(readme)]
    assert study.main(["run", "--N", "2", "--seeds", "1", "--epochs", "3", *second]) == 0
    assert study.main(["run", "--N", "3", "--seeds", "0", "--epochs", "2", *second]) == 0
    data = json.loads((res / "heat-rectangle.json").read_text())
    runs = {(e["N"], e["seed"]): e for e in data["runs"]}
    assert sorted(runs) == [(2, 0), (2, 1), (3, 0)]
    assert runs[(2, 0)]["archived"] and runs[(2, 0)]["best_at"] == old["runs"][0]["best_at"]
    assert runs[(2, 1)]["epochs"] == 3 and "archived" not in runs[(2, 1)]
    assert data["summary"]["2"]["at"]["2"]["n"] == 2 and sorted(data["summary"]) == ["2", "3"]
    text = readme.read_text()
    assert study.main(["report", *second]) == 0
    assert readme.read_text() == text


def test_imex_scenario_is_its_own_study(study, tmp_path):
    """allen-cahn-imex runs Allen–Cahn with time.nonlinear = 'explicit' and is reported apart from the implicit runs."""
    import tomllib

    from femnpde.app.sweep import read_result

    readme = tmp_path / "README.md"
    readme.write_text("<!-- width-study:begin -->\n<!-- width-study:end -->\n")
    where = ["--runs", str(tmp_path / "runs"), "--results", str(tmp_path / "res"), "--readme", str(readme)]
    assert study.main(["run", "--scenario", "allen-cahn-imex", "--N", "2", "--epochs", "2", *where]) == 0
    run = tmp_path / "runs" / "allen-cahn-imex-rectangle" / "N2-seed42"
    cfg = tomllib.loads(read_result(run).config)
    assert cfg["time"]["nonlinear"] == "explicit" and cfg["pde"]["preset"] == "allen-cahn"
    assert (tmp_path / "res" / "allen-cahn-imex-rectangle.json").is_file()
    assert not (tmp_path / "res" / "allen-cahn-rectangle.json").exists()
    assert "**allen-cahn-imex, the paper's rectangle" in readme.read_text()
