"""benchmarks/bench_frontier.py's figures, and the README's result tables being generated from their JSON files."""
import importlib.util
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


bench = _load("bench_frontier")
report = _load("frontier_report")
engine = _load("engine_report")
ACC = {"key": "eval_accuracy", "higher_is_better": True, "tolerance": 0.005, "relative": False}


def _run(policy, family, seed, compute, final):
    return {"policy": policy, "family": family, "seed": seed, "compute": compute, "compute_share": compute / 300,
            "final": final, "train_wall_s": 1.0}


def _runs():
    runs = []
    for seed, bump in ((0, 0.0), (1, 0.01)):
        runs += [_run("uniform-e1", "uniform", seed, 100, 0.70 + bump), _run("uniform-e2", "uniform", seed, 200, 0.80 + bump),
                 _run("uniform-e3", "uniform", seed, 300, 0.802 + bump), _run("rs2-0.5", "rs2", seed, 150, 0.74 + bump),
                 _run("geko", "geko", seed, 150, 0.80 + bump)]
    return runs


def test_target_cheapest_uniform_and_compute_share():
    s = bench.summarise(_runs(), ACC, emax=3)
    assert s["target"] == pytest.approx(0.807)
    assert s["cheapest_uniform"] == "uniform-e2"  # 0.805 is within 0.5 points of 0.807
    geko = s["policies"]["geko"]
    assert geko["reaches_target"] and geko["compute_share_at_target"] == pytest.approx(0.75)
    assert not s["policies"]["rs2-0.5"]["reaches_target"]
    assert s["policies"]["rs2-0.5"]["compute_share_at_target"] is None


def test_quality_against_rs2_at_equal_compute_is_paired_by_seed():
    s = bench.summarise(_runs(), ACC, emax=3)
    # RS2 at 150 passes is its own run (0.74); geko at 150 is 6 points above it in both seeds.
    geko = s["policies"]["geko"]
    assert geko["vs_rs2_mean"] == pytest.approx(0.06)
    assert geko["vs_rs2_ci95"] == pytest.approx(0.0, abs=1e-12)
    # uniform-e2 at 200: between RS2 (150, 0.74) and uniform-e3 as RS2 at f=1 (300, 0.802).
    assert s["policies"]["uniform-e2"]["vs_rs2_mean"] == pytest.approx(0.80 - (0.74 + 0.062 / 3) + 0.0, abs=1e-9)


def test_lower_is_better_metrics_flip_the_sign():
    loss = {"key": "eval_loss", "higher_is_better": False, "tolerance": 0.01, "relative": True}
    runs = [_run("uniform-e1", "uniform", 0, 100, 2.0), _run("uniform-e2", "uniform", 0, 200, 1.5),
            _run("rs2-0.5", "rs2", 0, 100, 1.9), _run("geko", "geko", 0, 100, 1.8)]
    s = bench.summarise(runs, loss, emax=2)
    assert s["target"] == 1.5 and s["cheapest_uniform"] == "uniform-e2"
    assert s["policies"]["geko"]["vs_rs2_mean"] == pytest.approx(0.1)  # 0.1 lower loss than RS2: better
    assert math.isnan(s["policies"]["geko"]["final_ci95"])  # one seed: no interval


def test_the_readme_frontier_table_is_generated_from_its_json():
    text = (ROOT / "README.md").read_text()
    block = text[text.index(report.BEGIN):text.index(report.END) + len(report.END)]
    sources = report.readme_sources()
    assert sources and all(p.is_file() for p in sources)
    assert block == report.readme_block(sources)


def test_the_engine_tables_are_generated_from_engine_json():
    import json

    payload = json.loads(engine.ENGINE_JSON.read_text())
    for path in engine.FILES:
        text = path.read_text()
        assert text[text.index(engine.BEGIN):text.index(engine.END) + len(engine.END)] == engine.block(payload), path


def test_merging_result_files_adds_seeds_and_resummarises():
    def payload(seed, bump):
        runs = [_run("uniform-e1", "uniform", seed, 100, 0.70 + bump), _run("uniform-e2", "uniform", seed, 200, 0.80 + bump),
                _run("geko", "geko", seed, 150, 0.80 + bump)]
        res = {"task": "t", "noise": 0.2, "metric": "eval_accuracy", "higher_is_better": True, "tolerance": 0.005,
               "relative": False, "n_train": 100, "emax": 2, "seeds": [seed], "corrupted": [1, 2], "runs": runs}
        res["summary"] = bench.summarise(runs, ACC, emax=2)
        return {"command": f"seed {seed}", "settings": {"t": {}}, "lr_scheduler": "linear", "total_s": 60.0,
                "results": [res]}

    both = bench.merge([payload(0, 0.0), payload(1, 0.02)])
    (res,) = both["results"]
    assert res["seeds"] == [0, 1] and len(res["runs"]) == 6 and both["total_s"] == 120.0
    assert res["summary"]["policies"]["geko"]["final_mean"] == pytest.approx(0.81)
    assert not math.isnan(res["summary"]["policies"]["geko"]["final_ci95"])  # two seeds: an interval
    with pytest.raises(SystemExit, match="repeats a seed"):
        bench.merge([payload(0, 0.0), payload(0, 0.0)])


def test_rs2_is_not_extrapolated_below_its_smallest_run():
    s = bench.summarise(_runs(), ACC, emax=3)
    assert s["policies"]["uniform-e1"]["vs_rs2_mean"] is None  # 100 passes: below RS2's 150


def test_geko_keep_runs_geko_with_a_keep_fraction():
    from geko_state.selection import SelectionConfig

    (spec,) = bench.run_specs(3, [0.5], {"geko_keep"})
    assert spec.family == "geko_keep" and spec.match is None
    overrides = bench.trainer_overrides(spec.args, None)
    assert overrides == {"selection": SelectionConfig(policy="geko", keep_fraction=0.5)}
    plain = {"selection": "rs2"}
    assert bench.trainer_overrides(plain, 0.4) == {"selection": "rs2", "budget": 0.4} and plain == {"selection": "rs2"}
