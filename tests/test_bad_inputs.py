"""The bad-input matrix (DESIGN section 6): every kind of bad input, through the Python API and the
``geko`` command line, fails with a specific :class:`GekoError` whose message names the argument
(or file, column, option) and the form that was expected, and changes nothing.

"Nothing" is checked byte for byte: every case runs against a fresh run directory (a state file
with its sidecar, per-epoch history and epoch summary) plus an in-memory store, a closed store, a
sampler in mid-epoch, a tiny torch model and a few stray data files, all fingerprinted before and
after the failed call (every file under the temporary directory, every state column, the counters,
the sampler's position and the model's weights).
"""
from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import pyarrow as pa
import pytest
import torch
from pyarrow import ipc

from geko_state import (
    COLUMN_NAMES,
    GEKOConfig,
    HistoryConfig,
    HistoryWriter,
    SelectionConfig,
    StateStore,
    export_rows,
    kept_ids,
    plan_selection,
    query,
)
from geko_state.config import preset
from geko_state.errors import (
    ConfigError,
    GekoError,
    InputError,
    StateFileError,
    StoreClosedError,
)
from geko_state.sql import QueryError
from geko_torch import cli
from geko_torch.data import GEKODataset, PadCollator, SampleIndexError
from geko_torch.lora import apply_lora
from geko_torch.sampler import GEKOSampler
from geko_torch.signals import causal_lm_signals, classification_signals
from geko_torch.training_args import GEKOTrainingArgs
from tests.geko_state.runs import make_run

N_RUN = 120  # samples of the run directory's state
N_MEM = 64  # samples of the in-memory store
REPO = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the world a case may touch
@dataclass
class World:
    tmp: Path
    run: Path  # run directory: state.arrow (+ .json sidecar), history/, epochs.parquet
    live: StateStore  # the run's state, open read-write
    mem: StateStore  # in memory, mid-epoch (observations after a repartition)
    closed: StateStore  # a file-backed store, closed
    sampler: GEKOSampler  # over ``mem``, a few ids into its epoch
    model: torch.nn.Module
    files: dict[str, Path] = field(default_factory=dict)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run directory and stray files, built once and copied for every case."""
    root = tmp_path_factory.mktemp("template")
    run = root / "run"
    run.mkdir()
    make_run(run, n=N_RUN, epochs=2).store.close()  # flushed, history recorded
    StateStore.create(10, root / "closed.arrow", GEKOConfig(log_bucket_stats=False)).close()

    d = root / "files"
    d.mkdir()
    pl.DataFrame({"a": [1, 2, 3], "b": ["x", "y", "z"]}).write_parquet(d / "random.parquet")
    (d / "notes.txt").write_text("not a state file\n")
    with ipc.new_file(d / "other.arrow", pa.schema([("sample_id", pa.int64())])) as w:
        w.write_table(pa.table({"sample_id": [0, 1, 2]}))
    state = (run / "state.arrow").read_bytes()
    (d / "truncated.arrow").write_bytes(state[: len(state) // 2])
    pl.DataFrame({"text": ["a", "b", "c"]}).write_ndjson(d / "small.jsonl")
    pl.DataFrame({"prompt": ["1 + 1 ?", "2 + 2 ?"], "response": ["2", "4"]}).write_ndjson(d / "train.jsonl")
    # Enough of a model directory to pass the path checks: geko train must refuse bad options
    # before it reads the model.
    (d / "model").mkdir()
    (d / "model" / "config.json").write_text("{}")
    return root


@pytest.fixture
def world(template: Path, tmp_path: Path) -> Iterator[World]:
    root = tmp_path / "w"
    shutil.copytree(template, root)
    live = StateStore.open(root / "run" / "state.arrow")
    closed = StateStore.open(root / "closed.arrow")
    closed.close()

    cfg = GEKOConfig(use_curriculum=False, log_bucket_stats=False)
    mem = StateStore.create(N_MEM, None, cfg)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, N_MEM, 200)
    mem.observe(ids, rng.random(200) * 2, rng.random(200), rng.random(200) < 0.6)
    mem.repartition()
    mem.observe(ids[:40], rng.random(40), rng.random(40), rng.random(40) < 0.5)

    sampler = GEKOSampler(mem, seed=1, rank=0, world_size=1, total_epochs=4)
    sampler.advance(3)

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))

    d = root / "files"
    files = {
        "parquet": d / "random.parquet",
        "text": d / "notes.txt",
        "arrow": d / "other.arrow",
        "truncated": d / "truncated.arrow",
        "small_jsonl": d / "small.jsonl",
        "train_jsonl": d / "train.jsonl",
        "model_dir": d / "model",
    }
    w = World(root, root / "run", live, mem, closed, sampler, model, files)
    yield w
    live.close()


def _tree(root: Path) -> dict[str, str]:
    """Relative path -> sha256 of every file (and ``dir`` for every directory) under ``root``."""
    out = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
    return out


def _store(store: StateStore) -> dict[str, Any]:
    cols = {c: np.ascontiguousarray(store.column(c)).tobytes() for c in COLUMN_NAMES}
    stats = store.last_stats
    return {
        "columns": cols, "epoch": store.epoch, "observations": store.observations_total,
        "skipped": store.skipped_total, "last_stats": None if stats is None else stats.to_dict(),
    }


def fingerprint(w: World) -> dict[str, Any]:
    s = w.sampler
    return {
        "files": _tree(w.tmp),
        "live": _store(w.live),
        "mem": _store(w.mem),
        "closed_epoch": w.closed.epoch,
        "sampler": (s.epoch, s.consumed, s.global_position, s.plan.ids.tobytes()),
        "model": {k: v.detach().clone() for k, v in w.model.state_dict().items()},
        "model_repr": repr(w.model),
    }


def _same(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert a.keys() == b.keys()
    for k, va in a.items():
        vb = b[k]
        if k == "model":
            assert va.keys() == vb.keys() and all(torch.equal(va[n], vb[n]) for n in va), k
        else:
            assert va == vb, f"{k} changed by a failed call"


# ---------------------------------------------------------------------- Python API cases
@dataclass(frozen=True)
class Case:
    id: str
    call: Callable[[World], Any]
    error: type[GekoError]
    needles: tuple[str, ...]  # the argument (or file / column) and the expected form


def _obs(ids, losses=None, conf=None, correct=None, *, store: str = "mem"):
    """observe() on the world's ``store`` with a valid first element, so a partly applied batch shows."""
    k = len(ids)
    losses = [0.5] * k if losses is None else losses
    conf = [0.5] * k if conf is None else conf
    correct = [True] * k if correct is None else correct
    return lambda w: getattr(w, store).observe(ids, losses, conf, correct)


def _sampler_state(w: World, **changes: Any) -> None:
    w.sampler.load_state_dict({**w.sampler.state_dict(), **changes})


def _record_other_store(w: World) -> None:
    HistoryWriter(w.run).record(w.mem, w.mem.last_stats, samples_trained=10)


API_CASES = [
    # observe: ids
    Case("observe-id-past-the-end", _obs([0, N_MEM]), InputError, ("ids[1] = 64", f"[0, {N_MEM})")),
    Case("observe-id-negative-file-store", _obs([3, -1], store="live"), InputError, ("ids[1] = -1", f"[0, {N_RUN})")),
    Case("observe-ids-float-dtype", _obs(np.array([1.0, 2.0])), InputError, ("ids", "integer sample ids", "float64")),
    Case("observe-ids-2d-shape", _obs(np.zeros((2, 2), dtype=np.int64)), InputError, ("ids", "1-D array", "(2, 2)")),
    Case("observe-ids-uint64-overflow", _obs(np.array([1, 2**63 + 5], dtype=np.uint64)), InputError,
         ("ids[1] = 9223372036854775813", "int64 sample ids")),
    # observe: losses, confidences, correct, lengths
    Case("observe-loss-nan", _obs([1, 2], [0.3, float("nan")]), InputError,
         ("losses[1] = nan", "finite losses", "nan_policy='skip'")),
    Case("observe-loss-inf-file-store", _obs([1, 2], [0.3, float("inf")], store="live"), InputError,
         ("losses[1] = inf", "finite losses")),
    Case("observe-loss-negative", _obs([1, 2], [0.3, -1.0]), InputError, ("losses[1] = -1.0", "losses >= 0")),
    Case("observe-confidence-above-1", _obs([1, 2], conf=[0.2, 1.5]), InputError,
         ("confidences[1] = 1.5", "confidences in [0, 1]")),
    Case("observe-confidence-negative", _obs([1, 2], conf=[0.2, -0.25]), InputError,
         ("confidences[1] = -0.25", "confidences in [0, 1]")),
    Case("observe-correct-not-boolean", _obs([1, 2], correct=[1, 2]), InputError,
         ("correct[1] = 2", "booleans or 0/1 integers")),
    Case("observe-mismatched-lengths", _obs([1, 2, 3], [0.1, 0.2]), InputError,
         ("ids, losses, confidences and correct", "same length", "3, 2, 3, 3")),
    Case("observe-read-only-store", lambda w: StateStore.open(w.run / "state.arrow", mode="r").observe(
        [1], [0.1], [0.5], [True]), InputError, ("read-only", "mode='r+'")),
    # configs
    Case("config-freeze-confidence-above-1", lambda w: GEKOConfig(freeze_confidence=1.5), ConfigError,
         ("freeze_confidence", "[0, 1]", "1.5")),
    Case("config-repartition-every-wrong-type", lambda w: GEKOConfig(repartition_every="2"), ConfigError,
         ("repartition_every", "integer >= 1", "'2'")),
    Case("config-bucket-weights-negative", lambda w: GEKOConfig(bucket_weights=(3, -1, 0)), ConfigError,
         ("bucket_weights", "3 finite non-negative numbers")),
    Case("config-nan-policy-unknown", lambda w: GEKOConfig(nan_policy="ignore"), ConfigError,
         ("nan_policy", "['raise', 'skip']", "'ignore'")),
    Case("config-mastered-fraction-wrong-type", lambda w: GEKOConfig(mastered_fraction="most"), ConfigError,
         ("mastered_fraction", "(0, 1]")),
    Case("config-from-dict-unknown-key", lambda w: GEKOConfig.from_dict({"freeze_conf": 0.9}), ConfigError,
         ("freeze_conf", "expected names from", "freeze_confidence")),
    Case("config-unknown-preset", lambda w: preset("fast"), ConfigError, ("preset", "'balanced'", "'fast'")),
    Case("selection-config-from-dict-unknown-key", lambda w: SelectionConfig.from_dict({"policy": "geko", "p": 1}),
         ConfigError, ("['p']", "prune_probability")),
    Case("selection-prune-probability-1", lambda w: SelectionConfig(policy="infobatch", prune_probability=1.0),
         ConfigError, ("prune_probability", "[0, 1)")),
    Case("history-config-every-zero", lambda w: HistoryConfig(every=0), ConfigError, ("every", "integer >= 1")),
    # creating and opening state files
    Case("create-zero-samples", lambda w: StateStore.create(0), InputError, ("n_samples", "integer >= 1")),
    Case("create-config-not-a-config", lambda w: StateStore.create(5, None, "balanced"), ConfigError,
         ("config", "GEKOConfig")),
    Case("create-unknown-storage", lambda w: StateStore.create(5, storage="s3"), InputError,
         ("storage", "'arrow-shared'", "'s3'")),
    Case("create-over-an-existing-state", lambda w: StateStore.create(N_RUN, w.run / "state.arrow"),
         StateFileError, ("state.arrow", "already exists", "overwrite=True")),
    Case("open-missing-file", lambda w: StateStore.open(w.tmp / "nope.arrow"), StateFileError,
         ("nope.arrow", "no such state file")),
    Case("open-random-parquet", lambda w: StateStore.open(w.files["parquet"]), StateFileError,
         ("random.parquet", "not a readable GEKO state file")),
    Case("open-text-file", lambda w: StateStore.open(w.files["text"], mode="r"), StateFileError,
         ("notes.txt", "not a readable GEKO state file")),
    Case("open-arrow-without-geko-metadata", lambda w: StateStore.open(w.files["arrow"]), StateFileError,
         ("other.arrow", "geko.schema_version")),
    Case("open-truncated-state", lambda w: StateStore.open(w.files["truncated"]), StateFileError,
         ("truncated.arrow", "not a readable GEKO state file")),
    Case("open-other-sample-count", lambda w: StateStore.open(w.run / "state.arrow", mode="r", n_samples=7),
         StateFileError, ("state.arrow", f"holds {N_RUN} samples, expected 7")),
    Case("open-bad-mode", lambda w: StateStore.open(w.run / "state.arrow", mode="w"), InputError,
         ("mode", "'r' or 'r+'")),
    # plans, budgets, selection
    Case("plan-on-closed-store", lambda w: w.closed.plan_epoch(), StoreClosedError, ("closed", "StateStore.open")),
    Case("budget-negative", lambda w: w.mem.plan_epoch(budget=-5), InputError, ("budget", "int >= 0", "-5")),
    Case("budget-zero-fraction", lambda w: w.live.plan_epoch(budget=0.0, total_epochs=4), InputError, ("budget", "(0, 1]", "0.0")),
    Case("budget-fraction-above-1", lambda w: w.mem.plan_epoch(budget=1.5), InputError, ("budget", "(0, 1]", "1.5")),
    Case("budget-text", lambda w: w.mem.plan_epoch(budget="abc"), InputError, ("budget", "'trainable', 'full'", "'abc'")),
    Case("plan-rank-out-of-range", lambda w: w.mem.plan_epoch(rank=2, world_size=2), InputError,
         ("rank", "[0, world_size=2)")),
    Case("plan-seed-negative", lambda w: w.mem.plan_epoch(seed=-1), InputError, ("seed", "integer >= 0")),
    Case("selection-unknown-policy", lambda w: plan_selection(w.mem, "greedy", seed=0), InputError,
         ("policy", "'greedy'", "'infobatch'")),
    # SQL and exports
    Case("sql-syntax-error", lambda w: query(w.run, "SELEC bucket FROM samples"), QueryError,
         ("syntax error", "SELEC")),
    Case("sql-unknown-table", lambda w: query(w.run, "SELECT * FROM nope"), QueryError, ("nope", "does not exist")),
    Case("sql-unknown-column", lambda w: query(w.run, "SELECT nope FROM samples"), QueryError,
         ("nope", "not found")),
    Case("sql-empty-query", lambda w: query(w.run, "  "), QueryError, ("query", "expected a SQL statement")),
    Case("sql-missing-run-dir", lambda w: query(w.tmp / "nope", "SELECT 1"), InputError,
         ("nope", "no such run directory")),
    Case("export-unknown-bucket", lambda w: kept_ids(w.mem, "HARD,WARM"), InputError,
         ("keep", "'WARM'", "expected names from ['FREEZE', 'LIGHT', 'FOCUS', 'HARD']")),
    Case("export-keep-not-names", lambda w: kept_ids(w.mem, 3), InputError, ("keep", "bucket names", "3")),
    Case("export-rows-of-another-dataset", lambda w: export_rows(
        w.run, w.files["small_jsonl"], w.tmp / "kept.jsonl"), InputError,
         ("small.jsonl", "has 3 rows", f"{N_RUN} samples")),
    Case("export-unsupported-output-format", lambda w: export_rows(
        w.run, w.files["small_jsonl"], w.tmp / "kept.xlsx"), InputError, ("kept.xlsx", "'.xlsx'", ".parquet")),
    # history
    Case("history-record-store-of-another-size", _record_other_store, InputError, ("record", f"{N_RUN} samples")),
    # sampler
    Case("sampler-rank-out-of-range", lambda w: GEKOSampler(w.mem, rank=2, world_size=2), ConfigError,
         ("rank", "[0, world_size=2)")),
    Case("sampler-world-size-zero", lambda w: GEKOSampler(w.mem, rank=0, world_size=0), ConfigError,
         ("world_size", "integer >= 1")),
    Case("sampler-rank-without-world-size", lambda w: GEKOSampler(w.mem, rank=0), ConfigError,
         ("rank and world_size", "or neither")),
    Case("sampler-load-other-epoch", lambda w: _sampler_state(w, epoch=5), InputError,
         ("epoch 5", "at epoch 1", "restore the store")),
    Case("sampler-load-malformed", lambda w: w.sampler.load_state_dict({"epoch": 1}), InputError,
         ("malformed", "'global_position'", "GEKOSampler.state_dict()")),
    Case("sampler-load-not-a-dict", lambda w: w.sampler.load_state_dict([1, 2]), InputError,
         ("sampler state", "dict", "GEKOSampler.state_dict()")),
    Case("sampler-load-ids-outside-store", lambda w: _sampler_state(w, plan_ids=np.append(w.sampler.plan.ids, 999)),
         InputError,
         ("plan_ids", f"[0, {N_MEM})")),
    Case("sampler-load-2d-ids", lambda w: _sampler_state(w, plan_ids=np.zeros((2, 2), dtype=np.int64)), InputError,
         ("plan_ids", "1-D integer array")),
    Case("sampler-load-seed-not-an-int", lambda w: _sampler_state(w, seed="x"), InputError,
         ("seed", "integer")),
    Case("sampler-load-position-past-plan", lambda w: _sampler_state(w, global_position=10**6), InputError,
         ("global_position", "[0, ")),
    Case("sampler-advance-negative", lambda w: w.sampler.advance(-3), InputError, ("advance", "n", ">= 0")),
    Case("sampler-set-epoch-other", lambda w: w.sampler.set_epoch(3), InputError, ("set_epoch(3)", "epoch 1")),
    # datasets and collation
    Case("dataset-non-dict-items", lambda w: GEKODataset([1, 2]), InputError, ("dataset[0]", "dict", "'input_ids'")),
    Case("dataset-item-without-input-ids", lambda w: GEKODataset([{"text": "a"}]), InputError,
         ("dataset[0]", "['text']", "'input_ids'")),
    Case("dataset-empty", lambda w: GEKODataset([]), InputError, ("train_dataset", "at least one item")),
    Case("dataset-negative-index", lambda w: GEKODataset([{"input_ids": [1]}])[-1], SampleIndexError,
         ("index", "[0, 1)", "-1")),
    Case("collator-bad-padding-side", lambda w: PadCollator(padding_side="middle"), ConfigError,
         ("padding_side", "'right' or 'left'")),
    Case("collator-pad-id-not-int", lambda w: PadCollator(pad_token_id="[PAD]"), ConfigError,
         ("pad_token_id", "integer token id")),
    # training args
    Case("training-args-negative-lr", lambda w: GEKOTrainingArgs(learning_rate=-1e-4), ConfigError,
         ("learning_rate", "> 0")),
    Case("training-args-batch-size-zero", lambda w: GEKOTrainingArgs(batch_size=0), ConfigError,
         ("batch_size", ">= 1")),
    Case("training-args-bf16-and-fp16", lambda w: GEKOTrainingArgs(bf16=True, fp16=True), ConfigError,
         ("bf16", "fp16", "choose one")),
    Case("training-args-bad-budget", lambda w: GEKOTrainingArgs(budget="lots"), ConfigError,
         ("budget", "'trainable'", "'lots'")),
    Case("training-args-unknown-selection", lambda w: GEKOTrainingArgs(selection="greedy"), ConfigError,
         ("selection", "policy", "'uniform'")),
    Case("training-args-replace-unknown-field", lambda w: GEKOTrainingArgs().replace(lr=1e-3), ConfigError,
         ("['lr']", "learning_rate")),
    # signals and LoRA
    Case("signals-label-out-of-range", lambda w: classification_signals(torch.zeros(2, 3), torch.tensor([0, 7])),
         InputError, ("labels", "[0, 3)", "7")),
    Case("signals-logits-wrong-shape", lambda w: classification_signals(torch.zeros(2, 3, 4), torch.tensor([0, 1])),
         InputError, ("logits", "[B, C]", "(2, 3, 4)")),
    Case("signals-token-accuracy-not-a-number", lambda w: causal_lm_signals(
        torch.zeros(1, 3, 5), torch.zeros(1, 3, dtype=torch.long), token_accuracy="most"), InputError,
         ("token_accuracy", "[0, 1]")),
    Case("lora-rank-zero", lambda w: apply_lora(w.model, r=0, target_modules=["0"]), ConfigError, ("r", ">= 1")),
    Case("lora-dropout-one", lambda w: apply_lora(w.model, dropout=1.0), ConfigError, ("dropout", "[0, 1)")),
]


def _case_id(case: Any) -> str:
    return case.id


@pytest.mark.parametrize("case", API_CASES, ids=_case_id)
def test_api_bad_input(case: Case, world: World) -> None:
    before = fingerprint(world)
    with pytest.raises(GekoError) as info:
        case.call(world)
    err = info.value
    assert type(err) is case.error, f"{type(err).__name__}: {err}"
    msg = str(err)
    for needle in case.needles:
        assert needle in msg, f"{needle!r} not in {msg!r}"
    _same(before, fingerprint(world))


# ---------------------------------------------------------------------- command-line cases
@dataclass(frozen=True)
class CliCase:
    id: str
    argv: Callable[[World], list[Any]]
    needles: tuple[str, ...]


def _train(*extra: Any) -> Callable[[World], list[Any]]:
    return lambda w: ["train", w.files["model_dir"], w.files["train_jsonl"], "--output-dir", w.tmp / "out",
                      "--no-progress", *extra]


CLI_CASES = [
    CliCase("sql-missing-run-dir", lambda w: ["sql", w.tmp / "nope", "SELECT 1"], ("nope", "no such run directory")),
    CliCase("sql-bad-sql", lambda w: ["sql", w.run, "SELEC bucket FROM samples"], ("syntax error", "SELEC")),
    CliCase("sql-binary-format-without-output", lambda w: ["sql", w.run, "SELECT 1", "--format", "parquet"],
            ("--format parquet", "--output FILE")),
    CliCase("inspect-non-geko-file", lambda w: ["inspect", w.files["parquet"]],
            ("random.parquet", "not a readable GEKO state file")),
    CliCase("export-missing-run-dir", lambda w: ["export", w.tmp / "nope", "--ids-out", w.tmp / "kept.txt"],
            ("nope", "no such state file")),
    CliCase("export-bad-keep-list", lambda w: ["export", w.run, "--keep", "HARD,WARM", "--ids-out", w.tmp / "k.txt"],
            ("'WARM'", "expected names from")),
    CliCase("export-bad-ids-suffix", lambda w: ["export", w.run, "--ids-out", w.tmp / "kept.csv"],
            ("--ids-out", "'.csv'", ".txt")),
    CliCase("export-dataset-of-another-size", lambda w: [
        "export", w.run, "--dataset", w.files["small_jsonl"], "--output", w.tmp / "kept.jsonl"],
            ("has 3 rows", f"{N_RUN} samples")),
    CliCase("report-missing-run-dir", lambda w: ["report", w.tmp / "nope", "--no-plots"],
            ("nope", "no such run directory")),
    CliCase("simulate-bad-budget", lambda w: ["simulate", "--n", "10", "--epochs", "1", "--budget", "abc",
                                              "--out", w.tmp / "sim"], ("--budget 'abc'", "'trainable', 'full'")),
    CliCase("simulate-negative-budget", lambda w: ["simulate", "--n", "10", "--budget", "-5", "--out", w.tmp / "sim"],
            ("--budget '-5'", "int >= 0")),
    CliCase("simulate-unknown-preset", lambda w: ["simulate", "--n", "10", "--preset", "fast"],
            ("--preset", "invalid choice: 'fast'", "'balanced'")),
    CliCase("simulate-negative-seed", lambda w: ["simulate", "--n", "10", "--seed", "-1", "--out", w.tmp / "sim"],
            ("--seed", "integer >= 0")),
    CliCase("simulate-zero-samples", lambda w: ["simulate", "--n", "0", "--out", w.tmp / "sim"],
            ("--n", "integer >= 1")),
    CliCase("simulate-history-every-zero", lambda w: ["simulate", "--n", "10", "--history-every", "0",
                                                      "--out", w.tmp / "sim"], ("--history-every", "integer >= 1")),
    CliCase("simulate-out-is-a-file", lambda w: ["simulate", "--n", "10", "--epochs", "1", "--out", w.files["text"]],
            ("--out", "notes.txt", "not a directory")),
    CliCase("train-missing-model-dir", lambda w: ["train", w.tmp / "no-model", w.files["train_jsonl"],
                                                  "--text-field", "prompt", "--output-dir", w.tmp / "out"],
            ("MODEL", "no-model", "no such directory", "config.json")),
    CliCase("train-missing-data-file", lambda w: ["train", w.files["model_dir"], w.tmp / "missing.jsonl",
                                                  "--text-field", "prompt", "--output-dir", w.tmp / "out"],
            ("DATA_FILE", "missing.jsonl", "no such file")),
    CliCase("train-unknown-field", _train("--text-field", "question"),
            ("--text-field 'question'", "available columns: prompt, response")),
    CliCase("train-bad-budget", _train("--text-field", "prompt", "--budget", "1.5"),
            ("--budget '1.5'", "(0, 1]")),
    CliCase("train-unknown-preset", _train("--text-field", "prompt", "--preset", "fast"),
            ("--preset", "invalid choice: 'fast'")),
    CliCase("train-batch-size-zero", _train("--text-field", "prompt", "--batch-size", "0"),
            ("--batch-size", "integer >= 1")),
    CliCase("train-prompt-without-response", _train("--prompt-field", "prompt"),
            ("--prompt-field needs --response-field",)),
    CliCase("train-output-dir-is-a-file", lambda w: ["train", w.files["model_dir"], w.files["train_jsonl"],
                                                     "--text-field", "prompt", "--output-dir", w.files["text"]],
            ("--output-dir", "not a directory")),
]


@pytest.mark.parametrize("case", CLI_CASES, ids=_case_id)
def test_cli_bad_input(case: CliCase, world: World, capsys: pytest.CaptureFixture[str]) -> None:
    before = fingerprint(world)
    argv = [str(a) for a in case.argv(world)]
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse refusing an option value
        code = e.code
    except Exception as e:  # noqa: BLE001  (the console script would print a traceback)
        pytest.fail(f"geko {argv[0]} raised {type(e).__name__}: {e}")
    err = capsys.readouterr().err
    assert code not in (0, None), err
    assert "Traceback" not in err
    for needle in case.needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    _same(before, fingerprint(world))


# The console script in a real process: the exit status and stderr a user sees.
SUBPROCESS_CASES = [
    CliCase("module-sql-bad-sql", lambda w: ["sql", w.run, "SELECT nope FROM samples"], ("nope", "not found")),
    CliCase("module-simulate-negative-seed", lambda w: ["simulate", "--n", "10", "--seed", "-1",
                                                        "--out", w.tmp / "sim"], ("--seed", "integer >= 0")),
]


@pytest.mark.parametrize("case", SUBPROCESS_CASES, ids=_case_id)
def test_console_bad_input(case: CliCase, world: World) -> None:
    before = fingerprint(world)
    argv = [str(a) for a in case.argv(world)]
    r = subprocess.run([sys.executable, "-m", "geko_state.cli", *argv], capture_output=True, text=True,
                       cwd=REPO, timeout=120, check=False)
    assert r.returncode != 0, r.stderr
    assert "Traceback" not in r.stderr, r.stderr
    for needle in case.needles:
        assert needle in r.stderr, f"{needle!r} not in {r.stderr!r}"
    _same(before, fingerprint(world))


def test_case_count() -> None:
    """The matrix covers at least 30 cases, 8 of them on the command line."""
    assert len(API_CASES) + len(CLI_CASES) + len(SUBPROCESS_CASES) >= 30
    assert len(CLI_CASES) + len(SUBPROCESS_CASES) >= 8
