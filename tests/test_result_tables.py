"""benchmarks/bench_frontier.py's and bench_noise.py's figures, and the README's result tables being generated
from their JSON files."""
import importlib.util
import math
import sys
from pathlib import Path

import numpy as np
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
noise = _load("bench_noise")  # imports bench_frontier, loaded above
noise_report = _load("noise_report")
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


def test_the_savings_table_shows_per_epoch_savings_of_the_selecting_policies_only():
    def curve(per_epoch):
        cum = [sum(per_epoch[:i + 1]) for i in range(len(per_epoch))]
        return [{"epoch": e, "passes": p, "value": 0.5} for e, p in enumerate(cum, 1)]

    runs = []
    for seed, late in ((0, 60), (1, 40)):
        runs += [{**_run("uniform-e3", "uniform", seed, 300, 0.8), "curve": curve([100, 100, 100])},
                 {**_run("rs2-0.5", "rs2", seed, 150, 0.7), "curve": curve([50, 50, 50])},
                 {**_run("geko", "geko", seed, 300, 0.8), "curve": curve([100, 100, 100])},
                 {**_run("geko_keep", "geko_keep", seed, 240, 0.8), "curve": curve([100, 90, late])},
                 {**_run("geko_stop", "geko_stop", seed, 200, 0.8), "curve": curve([100, 100, 100][:2 + seed])}]
    lines = report.savings_table({"runs": runs, "n_train": 100, "emax": 3})
    rows = [x for x in lines if x.startswith("| ")]
    # rs2 saves by construction and geko saved nothing: neither has a row
    assert rows[1:] == ["| geko_keep | 0.0% | 10.0% | 50.0% |", "| geko_stop | 0.0% | 0.0% | – |"]
    assert report.savings_table({"runs": runs[:3], "n_train": 100, "emax": 3}) == []


def test_the_stop_table_shows_epochs_trained_and_the_longest_uniform_runs_progress():
    def prog(shares):
        return [{"epoch": e, "improving_share": x, "open_share": 0.5, "suspects": 10} for e, x in enumerate(shares, 1)]

    runs = []
    for seed in (0, 1):
        runs += [{**_run("uniform-e1", "uniform", seed, 100, 0.70), "progress": prog([float("nan")])},
                 {**_run("uniform-e2", "uniform", seed, 200, 0.80), "progress": prog([float("nan"), 0.4])},
                 {**_run("uniform-e3", "uniform", seed, 300, 0.81), "progress": prog([float("nan"), 0.3, 0.05 + seed / 10])},
                 {**_run("uniform_stop", "uniform_stop", seed, 300 - 100 * seed, 0.79),
                  "progress": prog([float("nan"), 0.3, 0.05])[:3 - seed]}]
    res = {"runs": runs, "emax": 3, "seeds": [0, 1], "metric": "eval_accuracy"}
    lines = report.stop_table(res)
    assert lines[0].endswith("uniform_stop 3, 2.")
    assert "| 1 | – | 50.0% | 10 | 70.0% |" in lines and "| 3 | 10.0% | 50.0% | 10 | 81.0% |" in lines
    assert report.stop_table({**res, "runs": runs[:3]}) == []  # no *_stop runs: no table


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
    with pytest.raises(SystemExit, match="repeats a run"):
        bench.merge([payload(0, 0.0), payload(0, 0.0)])


def test_merging_adds_policies_run_later_for_the_same_seeds():
    def payload(runs):
        res = {"task": "t", "noise": 0.2, "metric": "eval_accuracy", "higher_is_better": True, "tolerance": 0.005,
               "relative": False, "n_train": 100, "emax": 2, "seeds": sorted({r["seed"] for r in runs}),
               "corrupted": [1], "runs": runs, "summary": {}}
        return {"command": "c", "settings": {"t": {}}, "lr_scheduler": "linear", "total_s": 1.0, "results": [res]}

    uniform = [_run(f"uniform-e{e}", "uniform", s, 100 * e, 0.70 + 0.1 * e) for s in (0, 1) for e in (1, 2)]
    later = [_run("geko_keep", "geko_keep", s, 150, 0.90) for s in (0, 1)]
    alone = bench.summarise(later, ACC, emax=2)  # written on its own before the merge: no target yet
    assert alone["target"] is None and not alone["policies"]["geko_keep"]["reaches_target"]
    (res,) = bench.merge([payload(uniform), payload(later)])["results"]
    assert res["seeds"] == [0, 1] and len(res["runs"]) == 6
    assert res["summary"]["policies"]["geko_keep"]["compute_share_at_target"] == pytest.approx(0.75)
    with pytest.raises(SystemExit, match="repeats a run"):
        bench.merge([payload(uniform), payload(later[:1] + uniform[:1])])


def test_merge_files_records_its_command_after_the_earlier_merges(tmp_path):
    import json

    res = {"task": "t", "noise": 0.2, "metric": "eval_accuracy", "higher_is_better": True, "tolerance": 0.005,
           "relative": False, "n_train": 100, "emax": 1, "corrupted": [1], "summary": {}}
    files = []
    for seed, extra in ((0, {"merge_commands": ["first merge"]}), (1, {})):
        f = tmp_path / f"s{seed}.json"
        f.write_text(json.dumps({"command": f"run {seed}", "settings": {}, "lr_scheduler": "linear", "total_s": 1.0,
                                 **extra, "results": [{**res, "seeds": [seed],
                                                       "runs": [_run("uniform-e1", "uniform", seed, 100, 0.5)]}]}))
        files.append(f)
    bench.merge_files(files, tmp_path / "both.json", command="second merge")
    both = json.loads((tmp_path / "both.json").read_text())
    assert both["command"] == "run 0 && run 1" and both["merge_commands"] == ["first merge", "second merge"]


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



# ---------------------------------------------------------------------- bench_noise
def _mask(n, ids):
    m = np.zeros(n, dtype=bool)
    m[ids] = True
    return m


def test_top_k_figures_count_the_corrupted_among_the_first_k():
    corrupted = _mask(50, range(10))
    ranking = np.array([0, 1, 2, 3, 4, 5, 6, 40, 41, 42, 7, 8, 9])  # 7 of the first 10 corrupted
    assert noise.at_k(ranking, corrupted, 10) == pytest.approx({"p_at_k": 0.7, "r_at_k": 0.7, "f1_at_k": 0.7})
    # Fewer ranked than k: precision over those returned, recall over all corrupted.
    short = noise.at_k(np.array([0, 1, 2, 3, 45]), corrupted, 10)
    assert short == pytest.approx({"p_at_k": 0.8, "r_at_k": 0.4, "f1_at_k": 8 / 15})


def test_a_cut_that_flags_nothing_has_no_precision_and_zero_recall():
    corrupted = _mask(20, [1, 2])
    cut = noise.at_cut(np.array([], dtype=np.int64), corrupted, "score > 0.5")
    assert cut["size"] == 0 and math.isnan(cut["precision"]) and cut["recall"] == 0.0 and cut["f1"] == 0.0
    cut = noise.at_cut(np.array([5, 2]), corrupted, "x")
    assert cut["ids"] == [2, 5] and cut["precision"] == 0.5 and cut["recall"] == 0.5


def test_auroc_counts_unranked_samples_as_least_suspicious():
    pytest.importorskip("sklearn")
    corrupted = _mask(6, [0, 1])
    assert noise.auroc(np.array([0.9, 0.8, 0.1, 0.2, 0.3, 0.4]), corrupted) == 1.0
    # Sample 1 never ranked: below every clean sample, so it loses all 4 of its pairs.
    assert noise.auroc(np.array([0.9, np.nan, 0.1, 0.2, 0.3, 0.4]), corrupted) == pytest.approx(0.5)
    assert math.isnan(noise.auroc(np.ones(6), np.zeros(6, dtype=bool)))


def test_cross_validation_costs_k_runs_on_four_fifths_plus_forward_passes_at_a_third():
    n, emax = 1000, 3
    cost = noise.extra_compute([800 * emax] * noise.CV_FOLDS, n, n, emax)
    assert cost["extra_passes"] == 12000 and cost["extra_forward_passes"] == 1000
    assert cost["extra_compute_share"] == pytest.approx(4 + 1 / (3 * emax))
    assert noise.extra_compute([], 0, n, emax)["extra_compute_share"] == 0.0


def test_state_scores_are_indexed_by_sample_id():
    cols = {"sample_id": np.array([2, 0, 1]), "aum": np.array([-3.0, 2.0, 0.0], dtype=np.float32),
            "wrong_streak": np.array([3, 0, 1], dtype=np.uint8), "times_seen": np.array([3, 3, 3], dtype=np.int32),
            "last_loss": np.array([4.0, 0.1, 1.0], dtype=np.float32),
            # ring heads at 3 % 5: the previous loss sits at index 1
            "loss_window": np.array([[0, 3.0, 4.0, 0, 0], [0, 0.5, 0.1, 0, 0], [0, 2.0, 1.0, 0, 0]], dtype=np.float32)}
    scores = noise.state_scores(cols)
    assert list(np.argsort(-scores["geko"])) == [2, 1, 0] and list(scores["aum"]) == [-2.0, -0.0, 3.0]
    assert scores["geko"][0] == pytest.approx(0.1 + 0.5 * (0.1 - 0.5))  # sample 0 is the row with id 0
    assert list(scores["loss"]) == pytest.approx([0.1, 1.0, 4.0])


def test_equal_step_retrains_pad_the_cleaned_set_back_to_n_rows_from_its_own_samples():
    keep = np.arange(0, 100, 3)  # 34 of 100 kept: the padding (66) needs repeats
    rows = noise.equal_steps_rows(keep, 100, seed=0)
    assert rows.shape == (100,) and set(rows.tolist()) == set(keep.tolist())
    assert list(rows[:34]) == list(keep)  # every kept sample is in, the padding after it
    few = noise.equal_steps_rows(np.arange(80), 100, seed=1)  # 20 padded rows: no sample thrice
    assert np.bincount(few).max() == 2 and (np.bincount(few) == 2).sum() == 20
    assert list(noise.equal_steps_rows(np.arange(80), 100, seed=1)) == list(few)  # seeded
    assert list(noise.equal_steps_rows(np.arange(100), 100, seed=0)) == list(range(100))  # nothing removed


def test_a_set_retrained_for_other_epochs_is_compared_with_all_data_at_those_epochs():
    assert noise.reference_set("geko_cleaned_equal_steps") == "all"
    assert noise.reference_set("geko_cleaned_equal_steps_e6") == noise.reference_set("all_e6") == "all_e6"
    payload = _noise_payload(0, 0.02)
    (res,) = payload["results"]
    down = res["runs"][0]["downstream"]
    down["all_e6"] = {**down["all"], "final": 0.6}
    down["geko_cleaned_equal_steps_e6"] = {**down["geko_cleaned"], "final": 0.65}
    s = noise.summarise_result(res)["downstream"]
    assert s["geko_cleaned_equal_steps_e6"]["vs_all_mean"] == pytest.approx(0.05)
    assert s["all_e6"]["vs_all_mean"] == 0.0


def _noise_payload(seed, clean_gain):
    cut = {"rule": "score > 0.5", "size": 10, "precision": 0.6, "recall": 0.75, "f1": 0.667, "ids": []}
    det = {"k": 8, "p_at_k": 0.5 + seed / 10, "r_at_k": 0.5 + seed / 10, "f1_at_k": 0.5 + seed / 10,
           "auroc": 0.8, "cut": cut, **noise.extra_compute([], 0, 40, 2)}
    down = {name: {"n_train": 40 - removed, "removed": removed, "removed_corrupted": removed // 2,
                   "final": 0.5 + gain, "compute_share": 1.0, "train_wall_s": 1.0}
            for name, removed, gain in (("all", 0, 0.0), ("geko_cleaned", 10, clean_gain))}
    run = {"seed": seed, "geko_run": {}, "detectors": {"geko": det, "loss": {**det, "cut": None}}, "cv": None,
           "downstream": down}
    res = {"task": "t", "noise": 0.2, "task_kind": "classification", "metric": "eval_accuracy",
           "higher_is_better": True, "n_train": 40, "emax": 2, "k": 8, "corrupted": list(range(8)), "seeds": [seed],
           "note": None, "runs": [run]}
    res["summary"] = noise.summarise_result(res)
    return {"command": f"seed {seed}", "settings": {"t": {}}, "lr_scheduler": "linear", "total_s": 10.0,
            "results": [res]}


def test_noise_results_merge_by_seed_and_resummarise():
    both = bench.merge([_noise_payload(0, 0.02), _noise_payload(1, 0.04)], noise.summarise_result)
    (res,) = both["results"]
    s = res["summary"]
    assert res["seeds"] == [0, 1] and s["detectors"]["geko"]["p_at_k_mean"] == pytest.approx(0.55)
    assert s["detectors"]["loss"]["cut_rule"] is None and s["detectors"]["loss"]["cut_size_mean"] is None
    assert s["downstream"]["geko_cleaned"]["vs_all_mean"] == pytest.approx(0.03)
    assert not math.isnan(s["downstream"]["geko_cleaned"]["vs_all_ci95"])
    text = noise_report.table(both)
    assert "| geko | 0.00 | 0.00 | 55.0% ± " in text and "| geko_cleaned | 10 (5) | 53.0% ± " in text


def test_the_readme_noise_table_is_generated_from_its_json():
    text = (ROOT / "README.md").read_text()
    block = text[text.index(noise_report.NOISE.begin):text.index(noise_report.NOISE.end) + len(noise_report.NOISE.end)]
    sources = report.readme_sources(block=noise_report.NOISE)
    assert sources and all(p.is_file() for p in sources)
    assert block == report.readme_block(sources, noise_report.NOISE)
