"""bench/reproduce_paper.py: the width study's sweeps, JSON and generated README block (tiny budgets)."""

import json
import pathlib
import sys

import numpy as np
import pytest

from femnpde.io.history import History

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT / "bench") not in sys.path:  # the width_* scripts import bench/_paper.py, as when run as scripts
    sys.path.insert(0, str(ROOT / "bench"))
from _paper import bench_module  # noqa: E402

pytestmark = pytest.mark.serial


@pytest.fixture
def study(monkeypatch):
    module = bench_module("reproduce_paper")  # afresh: the patches below stay in this test
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


def test_history_measures_of_the_why_scripts():
    """width_learning_rate's history summary and drift, width_reproducibility's comparison, on made-up histories."""
    lr = bench_module("width_learning_rate")
    rmse = np.array([0.5, 0.3, 0.4, 0.2, 0.25, 0.21])
    s = lr.history_summary(rmse, np.full(6, 0.01), [2, 4, 10], np.arange(6.0))
    assert s["best"] == 0.2 and s["best_epoch"] == 3 and s["final"] == 0.21
    assert s["best_at"] == {"2": 0.3, "4": 0.2} and s["rises_over_10_percent"] == 2  # 0.3 -> 0.4, 0.2 -> 0.25
    assert s["max_after_start"] == 0.4 and s["first_gradient_norms"][0] == 0.0
    rep = bench_module("width_reproducibility")
    other = rmse * np.array([1, 1, 1 + 1e-9, 1 + 1e-3, 1.1, 1.1])
    d = rep.divergence(rmse, other)
    assert d["first_epoch_above"] == {"1e-12": 2, "1e-06": 3, "0.01": 4}
    a = {"loss": rmse**2, "gradient_norm": np.ones(6), "relative_rmse": rmse}
    b = {**a, "gradient_norm": np.array([1, 1, 1, 1 + 2e-16, 1, 1])}  # one ulp above 1 at epoch 3
    assert rep.compare(a, a, 6)["first_differing_epoch"] is None
    assert rep.compare(a, b, 6)["first_differing_epoch"] == 3
    assert rep.compare(a, b, 3)["first_differing_epoch"] is None


def test_probe_differences(tmp_path):
    """width_reproducibility's probe comparison: 0 where bitwise equal, the largest relative difference elsewhere."""
    rep = bench_module("width_reproducibility")
    one = {"J": np.array(2.0), "G": np.ones(3), "vjp": np.array([1.0, -4.0]), "grad": np.array([1.0, 2.0])}
    np.savez(tmp_path / "a.npz", **one)
    np.savez(tmp_path / "b.npz", **{**one, "vjp": np.array([1.0, -4.0 + 4e-14])})
    d = rep._probe_differences(tmp_path / "a.npz", tmp_path / "b.npz")
    assert d["loss"] == 0.0 and d["source_grid_values"] == 0.0 and d["gradient"] == 0.0
    assert d["network_vjp"] == pytest.approx(1e-14, rel=0.1)


def test_report_renders_the_measured_explanations(study, tmp_path):
    """The learning-rate, reproducibility and off-rectangle network-fit JSON become 'Measured' bullets."""
    lr, rep = bench_module("width_learning_rate"), bench_module("width_reproducibility")
    res = tmp_path / "res"
    res.mkdir()
    run = {"N": 10, "seed": 42, "epochs": 3, "start": 0.9, "best_at": {"2": 0.2, "3": 0.1234}, "final_best": 0.1234,
           "s_per_epoch": 0.1, "wall_time_s": 0.3, "run": "x", "group": "adam", "load_average": 1.0}
    (res / "allen-cahn-imex-annulus.json").write_text(json.dumps(
        {"scenario": "allen-cahn-imex", "mesh": "annulus", "summary": {}, "runs": [run], "lbfgs": [], "matched": []}))
    rows = []
    for factor, curve in ((1.0, [1.0, 0.3, 0.5, 0.2]), (0.25, [1.0, 0.6, 0.4, 0.15])):
        rows.append({"factor": factor, "lr": 0.0464 * factor,
                     **lr.history_summary(np.array(curve), np.full(4, 0.0464 * factor), [3], np.array([2.5, 1, 1, 1]))})
    rows[0]["against_study_run"] = {"run": "allen-cahn-imex-annulus/N100-seed42",
                                    **rep.divergence(np.array([1.0, 0.3, 0.5, 0.2]), np.array([1.0, 0.3, 0.6, 0.3]))}
    (res / "learning_rate-allen-cahn-imex-annulus-N100.json").write_text(json.dumps(
        {"scenario": "allen-cahn-imex", "mesh": "annulus", "N": 100, "seed": 42, "epochs": 3, "rows": rows}))
    h = {"loss": np.ones(4), "gradient_norm": np.ones(4), "relative_rmse": np.ones(4)}
    h2 = {**h, "loss": np.array([1, 2, 1, 1.0])}
    (res / "reproducibility.json").write_text(json.dumps({
        "scenario": "allen-cahn-imex", "mesh": "rectangle", "N": 100, "seed": 42, "epochs": 4, "rows": [
            {"code": "aaaaaaa", "commit": "2026-12-02 old",
             "against": {"s/N100-seed42 (1000 epochs)": rep.compare(h, h, 4)}},
            {"code": "bbbbbbb (this checkout)", "commit": "2026-12-02 new",
             "against": {"s/N100-seed42 (1000 epochs)": rep.compare(h2, h, 4)}, "repeat": rep.compare(h, h, 4),
             "probe_vs_previous": {"loss": 0.0, "source_grid_values": 0.0, "network_vjp": 2.9e-14, "gradient": 3e-15}}],
        "pairs": [{"runs": ["s/N100-seed42 (1000 epochs)", "t/N100-seed42 (5000 epochs)"],
                   **rep.divergence(np.array([1, 1, 1.5, 2.0]), np.array([1, 1, 1.0, 1.0]))}]}))
    (res / "network_fit-allen-cahn-imex-annulus.json").write_text(json.dumps({
        "scenario": "allen-cahn-imex", "mesh": "annulus", "seed": 42, "rows": [
            {"N": 10, "iterations": 7, "relative_l2_error_of_g": 0.5, "relative_rmse_at_start": 0.95,
             "relative_rmse_at_fit": 0.0777, "max_abs_h": 1.2, "max_abs_target_source": 5.0}]}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- width-study:begin -->\n<!-- width-study:end -->\n")
    study.report(tmp_path / "no-runs", results_dir=res, readme=readme)
    text = readme.read_text()
    assert ("allen-cahn-imex, annulus, N = 100, seed 42, the learning rate (`bench/width_learning_rate.py`, 3 epochs"
            in text)
    assert "×1 (lr 0.0464): best 0.2000 at epoch 3, final 0.2000, 1 rises > 10 %" in text
    assert "×0.25 (lr 0.0116): best 0.1500 at epoch 3" in text and "Lowest with ×0.25, 25 % below ×1" in text
    assert "first epochs at ×1 0.3000, 0.5000, 0.2000 (gradient norm at the start 2.5)" in text
    assert "the study's other widths at 3 epochs (lr ×1): N = 10: 0.1234" in text
    assert "differs from ×1 by more than 1e-12 (relative) from epoch 2" in text
    assert "s/N100-seed42 (1000 epochs) is reproduced bitwise by aaaaaaa; it differs from bbbbbbb from epoch 1" in text
    assert "this checkout run twice: bitwise equal" in text
    assert "of the loss / the source's grid values / the network's VJP of a fixed cotangent / the gradient: bbbbbbb " \
           "0 / 0 / 2.9e-14 / 3e-15" in text
    assert ("over their 4 common epochs s/N100-seed42 (1000 epochs) and t/N100-seed42 (5000 epochs) differ in "
            "relative RMSE by more than "
            "1e-12 from epoch 2, 1e-06 from epoch 2, 0.01 from epoch 2 (largest 1, relative)") in text
    assert "allen-cahn-imex, annulus, expressiveness (`bench/width_network_fit.py --mesh annulus`)" in text
    assert "N = 10: 0.0777 after 7 iterations (g* to 0.500 relative l2, so the PDE error is 0.16× the source's" in text
    assert "max|h| 1.2" in text and "Adam at 1000 epochs" not in text  # no 1000-epoch run


def test_first_step_is_adams_and_is_rendered(study, tmp_path):
    """width_first_step's update equals femnpde's Adam's first step; its JSON becomes a 'Measured' bullet."""
    from femnpde.optim.adam import Adam

    fs = bench_module("width_first_step")
    rng = np.random.default_rng(0)
    theta, grad = rng.standard_normal(50), rng.standard_normal(50) * np.logspace(-6, 2, 50)
    stepped = theta.copy()
    Adam(lr=0.079).step(stepped, grad)
    assert np.allclose(fs.adam_first_step(theta, grad, 0.079), stepped, rtol=1e-14, atol=1e-15)
    res = tmp_path / "res"
    res.mkdir()
    (res / "first_step-allen-cahn-imex-box.json").write_text(json.dumps({
        "scenario": "allen-cahn-imex", "mesh": "box", "seed": 42, "widths": [
            {"N": 500, "lr": 0.079, "gradient_norm": 0.0861, "max_abs_target_source": 5.0, "max_abs_h": 1.1,
             "start": {"relative_rmse": 0.0969, "relative_max_error": 0.957},
             "steps": [{"factor": 1.0, "lr": 0.079, "max_abs_source_change": 3.21, "relative_source_change": 0.7,
                        "relative_rmse": 0.5512, "relative_max_error": 2.01},
                       {"factor": 0.0039, "lr": 0.0003, "max_abs_source_change": 0.01,
                        "relative_source_change": 0.002, "relative_rmse": 0.0950, "relative_max_error": 0.95}]}]}))
    readme = tmp_path / "README.md"
    readme.write_text("<!-- width-study:begin -->\n<!-- width-study:end -->\n")
    study.report(tmp_path / "no-runs", results_dir=res, readme=readme)
    text = readme.read_text()
    assert "allen-cahn-imex, box, seed 42, Adam's first step (`bench/width_first_step.py`" in text
    assert ("N = 500: lr ×1 changes the source by 0.7 of ‖g*‖ (max 3.21), relative RMSE 0.0969 → 0.5512, max "
            "error 0.96 → 2.01; the largest step that lowers the RMSE: ×0.0039 (→ 0.0950)") in text
