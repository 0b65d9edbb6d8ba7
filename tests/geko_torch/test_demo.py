"""geko demo: both runs are real GEKOTrainer run directories and every printed figure is theirs."""
from __future__ import annotations

import json
import re

import numpy as np
import polars as pl
import pytest

from geko_state import StateStore, build_report, query
from geko_torch.cli import main
from geko_torch.demo import COMPARISON_FILE, KINDS_FILE, format_demo, run_demo
from geko_torch.demo_wall import wall_lines
from geko_torch.tasks import TASKS, SampleKind, build_task


def _int(text: str) -> int:
    return int(text.replace(",", ""))


def test_demo_command_prints_what_the_run_directories_hold(tmp_path, capsys):
    out = tmp_path / "demo"
    rc = main(["demo", "--out", str(out), "--task", "clusters", "--samples", "400", "--epochs", "3", "--no-progress"])
    assert rc == 0
    text = capsys.readouterr().out

    geko, uniform = build_report(out / "geko"), build_report(out / "uniform")
    assert uniform.samples_trained == 400 * 3  # uniform: every sample every epoch
    row = re.search(r"samples trained\s+([\d,]+)\s+([\d,]+)", text)
    assert (_int(row.group(1)), _int(row.group(2))) == (geko.samples_trained, uniform.samples_trained)
    saved = float(re.search(r"Compute actually saved by GEKO: ([\d.]+)%", text).group(1))
    assert saved == pytest.approx(100 * (1 - geko.samples_trained / uniform.samples_trained), abs=0.051)

    # per-epoch table rows: trained and buckets from GEKO's history, trained from uniform's
    rows = re.findall(r"^\s+(\d+) \|\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+([\d,]+)\s+\S+%?\s+\|\s+([\d,]+)",
                      text, flags=re.MULTILINE)
    assert len(rows) == 3
    for r, e, u in zip(rows, geko.epochs.iter_rows(named=True), uniform.epochs["samples_trained"]):
        assert [_int(x) for x in r[1:6]] == [e["samples_trained"], e["freeze_count"], e["light_count"],
                                            e["focus_count"], e["hard_count"]]
        assert _int(r[6]) == u

    # final eval figures are the trainers' logged evaluations
    summary = json.loads((out / COMPARISON_FILE).read_text())
    logged = [json.loads(line) for line in (out / "geko" / "trainer_log.jsonl").read_text().splitlines()]
    evals = [r["eval_accuracy"] for r in logged if "eval_accuracy" in r]
    assert summary["geko"]["eval_curve"] == evals
    final = re.search(r"final eval accuracy\s+([\d.]+)%\s+([\d.]+)%", text)
    assert float(final.group(1)) == pytest.approx(100 * summary["geko"]["final_eval"], abs=0.051)
    assert float(final.group(2)) == pytest.approx(100 * summary["uniform"]["final_eval"], abs=0.051)

    # wall times: the printed rows are comparison.json's, GEKO's work and evaluation are parts of the
    # run, and the verdict says saved or more (no assertion on the times themselves: they are noise)
    for key, label in (("wall_s", "wall time"), ("geko_work_s", "of it GEKO work"), ("eval_s", "of it evaluation")):
        row = re.search(rf"{label}\s+([\d.]+)s\s+([\d.]+)s", text)
        for i, name in enumerate(("geko", "uniform")):
            assert float(row.group(i + 1)) == pytest.approx(summary[name][key], abs=0.051)
    for name in ("geko", "uniform"):
        assert 0 < summary[name]["geko_work_s"] + summary[name]["eval_s"] <= summary[name]["wall_s"]
        assert summary[name]["cpu_s"] > 0 and summary[name]["threads"] >= 1
    assert re.search(r"^(Wall time saved by GEKO: [\d.]+%|GEKO took [\d.]+% more wall time than uniform) \(",
                     text, flags=re.MULTILINE)

    # the files the printed commands use exist and work
    for f in ("comparison.png", KINDS_FILE, "geko/state.arrow", "geko/plots/bucket_shares.png"):
        assert (out / f).is_file(), f
    kinds = pl.read_parquet(out / KINDS_FILE)
    assert kinds.height == 400 and kinds["sample_id"].dtype == pl.Int64
    found = re.search(r'geko sql \S+ "(SELECT k\.kind.*)" --table kinds=(\S+)', text)
    joined = query(out / "geko", found.group(1), tables={"kinds": found.group(2)})
    assert joined["n"].sum() == 400
    assert "geko report" in text and "geko export" in text


def test_demo_summary_matches_state_and_kinds(tmp_path):
    res = run_demo(tmp_path / "d", task="clusters", epochs=2, progress=False, say=lambda t: None,
                   sizes={"n": 300, "n_eval": 200, "base_steps": 50})
    text = format_demo(res)
    with StateStore.open(res.runs["geko"] / "state.arrow", mode="r") as store:
        bucket = store.column("bucket").copy()
    kinds = res.task.kinds
    m = kinds == SampleKind.MISLABELED
    line = next(line for line in text.splitlines() if line.strip().startswith("mislabeled:"))
    share = float(re.search(r"FREEZE (\d+)%", line).group(1))
    assert share == pytest.approx(100 * np.mean(bucket[m] == 0), abs=0.5)


def test_demo_refuses_an_output_path_that_is_a_file(tmp_path, capsys):
    f = tmp_path / "file"
    f.write_text("x")
    assert main(["demo", "--out", str(f)]) == 2
    assert "--out" in capsys.readouterr().err


@pytest.mark.parametrize("name", sorted(TASKS))
def test_tasks_are_deterministic_and_shaped_like_fine_tuning(name):
    a = build_task(name, seed=3, n=120, n_eval=40, base_steps=5)
    b = build_task(name, seed=3, n=120, n_eval=40, base_steps=5)
    assert len(a.train) == 120 and len(a.eval) == 40
    assert np.array_equal(a.kinds, b.kinds)
    assert all(x["input_ids"].equal(y["input_ids"]) for x, y in zip(a.train, b.train))
    for pa_, pb in zip(a.model.parameters(), b.model.parameters()):
        assert pa_.equal(pb)
    assert set(np.unique(a.kinds)) <= {0, 1, 2} and (a.kinds == SampleKind.EASY).mean() > 0.4
    c = build_task(name, seed=4, n=120, n_eval=40, base_steps=5)
    assert not np.array_equal(a.kinds, c.kinds)


def test_build_task_rejects_unknown_names():
    from geko_state.errors import InputError

    with pytest.raises(InputError, match="unknown task 'nope'"):
        build_task("nope")


def _wall_summary(geko_wall: float, uniform_wall: float, *, cpu_share: float = 1.0, device: str = "cpu") -> dict:
    def run(wall: float) -> dict:
        work = 1.0
        return {"wall_s": wall, "geko_work_s": work, "eval_s": 0.5, "threads": 2,
                "cpu_s": cpu_share * ((wall - work) * 2 + work)}
    return {"geko": run(geko_wall), "uniform": run(uniform_wall), "device": device}


def test_wall_lines_say_more_wall_time_when_geko_is_slower():
    _, after = wall_lines(_wall_summary(12.0, 11.0))  # against uniform without its bookkeeping: 10.0 s
    assert after[0].startswith("GEKO took 20.0% more wall time than uniform (12.0s")
    _, after = wall_lines(_wall_summary(8.0, 11.0))
    assert after[0].startswith("Wall time saved by GEKO: 20.0% (8.0s")


def test_wall_lines_note_a_busy_machine_on_cpu_only():
    assert not any(line.startswith("Note:") for line in wall_lines(_wall_summary(8.0, 11.0))[1])
    busy = wall_lines(_wall_summary(8.0, 11.0, cpu_share=0.5))[1]
    assert busy[-1].startswith("Note: the runs got 50% (GEKO) and 50% (uniform)")
    # a GPU run leaves the host's cores idle while it waits: its CPU share says nothing
    assert not any(line.startswith("Note:") for line in wall_lines(_wall_summary(8.0, 11.0, cpu_share=0.5,
                                                                                  device="cuda"))[1])
