"""GEKOHFTrainer under torchrun: two ranks train like one process with the same global batch.

The two-rank runs start a real gloo process group with ``torchrun`` (2 processes on the CPU,
scenarios in ``dist_hf_worker.py``); the one-rank runs (the reference, and the resume of the
two-rank run that was stopped mid-epoch) run in this process.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.numpy import load_file

from geko_torch.hf import GEKO_META_FILE, GEKO_SAMPLER, GEKO_STATE_FILE
from geko_torch.serialization import load_tree

from . import dist_hf_worker as worker
from .dist import assert_same_model, assert_same_state, torchrun
from .models import tiny_bert_classifier

WORKER = Path(worker.__file__)



@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path]:
    """``(two, one)``: two ranks (``full``, ``stop``, ``sgd`` with and without
    average_tokens_across_devices), then one rank in this process (``full``, ``resume`` of the
    two-rank ``stop``, ``sgd``)."""
    two = tmp_path_factory.mktemp("hf_w2")
    one = tmp_path_factory.mktemp("hf_w1")
    torchrun(2, WORKER, str(two), "full", f"stop={two / 'full'}", "sgd=avg", "sgd=noavg")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        worker.run_scenario(one, "full")
        worker.run_scenario(one, f"resume={two / 'stop'}")
        worker.run_scenario(one, "sgd=ref")
    finally:
        torch.set_num_threads(threads)
    return two, one


def result(d: Path, rank: int = 0) -> dict:
    return json.loads((d / ("result.json" if rank == 0 else f"result-{rank}.json")).read_text())




def tree(d: Path) -> list[str]:
    return sorted(str(p.relative_to(d)) for p in d.rglob("*"))


def test_two_ranks_train_like_one_process_with_the_same_global_batch(runs):
    two, one = runs[0] / "full", runs[1] / "full"
    r2, r1 = result(two), result(one)
    assert r2["world_size"] == 2 and r1["world_size"] == 1
    # The same plans, hence the same step arithmetic: HF ran each epoch's real length on both.
    assert r2["plans"] == r1["plans"] and r2["epoch_end_steps"] == r1["epoch_end_steps"]
    assert r2["global_step"] == r1["global_step"] == r1["epoch_end_steps"][-1]
    # HF's schedule length is plain Trainer's: full-data epochs of ceil(N / global batch) batches.
    full_data_steps = worker.EPOCHS * math.ceil(math.ceil(worker.N / worker.GLOBAL_BATCH) / worker.GA)
    assert r2["max_steps"] == r1["max_steps"] == full_data_steps
    plans = r1["plans"]
    n, batch = worker.N, worker.GLOBAL_BATCH
    assert plans[0] == n and min(plans) < n  # samples froze, plans shrank...
    assert any(p % 2 for p in plans[1:] if p < n)  # ...to odd lengths: rank 1's shard was padded
    assert any(p % batch for p in plans)  # and epochs ended on incomplete (global) batches
    assert_same_state(two / "geko" / "state.arrow", one / "geko" / "state.arrow")
    assert_same_model(two / "model.safetensors", one / "model.safetensors")
    # Every rank holds the same state; rank 0's is the run directory's file, rank 1's in memory.
    other = result(two, rank=1)
    assert r2["digests"][0] == r2["digests"][1] == other["digests"][0]
    assert r2["state_path"] == str(two / "geko" / "state.arrow") and other["state_path"] is None


def test_only_rank_zero_wrote_the_history(runs):
    two, one = runs[0] / "full", runs[1] / "full"
    assert tree(two / "geko") == tree(one / "geko")  # the same files, nothing from rank 1, no leftovers
    e2, e1 = (pl.read_parquet(d / "geko" / "epochs.parquet") for d in (two, one))
    plans = result(one)["plans"]
    assert e2["epoch"].to_list() == e1["epoch"].to_list() == list(range(1, len(plans) + 1))
    for col in ("freeze_count", "light_count", "focus_count", "hard_count", "observations"):
        assert e2[col].to_list() == e1[col].to_list(), col
    assert e1["samples_trained"].to_list() == plans
    # A padding draw is trained (it keeps the ranks in step) but neither observed nor in the loss.
    assert e2["samples_trained"].to_list() == [p + p % 2 for p in plans]


def test_two_rank_run_resumed_on_one_rank_finishes_like_the_uninterrupted_run(runs):
    stop = runs[0] / "stop"
    k = result(stop)["stop_step"]
    ckpt = stop / f"checkpoint-{k}"
    for name in (GEKO_STATE_FILE, GEKO_META_FILE, f"{GEKO_SAMPLER}.json"):
        assert (ckpt / name).is_file(), name
    # Stopped inside an epoch that trains fewer than N samples, two global steps into it.
    saved = load_tree(ckpt, GEKO_SAMPLER)
    full = result(runs[1] / "full")
    epoch = full["epoch_end_steps"].index(k - 2) + 1
    assert saved["world_size"] == 2 and saved["epoch"] == epoch
    assert len(saved["plan_ids"]) == full["plans"][epoch] < worker.N
    assert saved["global_position"] == 2 * worker.GA * worker.GLOBAL_BATCH

    resumed = runs[1] / "resume"
    r = result(resumed)
    assert r["global_step"] == full["global_step"] and r["max_steps"] == full["max_steps"]
    assert r["plans"] == full["plans"][epoch:]  # the resumed epoch (continued) and the ones after it
    for reference in (runs[0] / "full", runs[1] / "full"):
        assert_same_state(resumed / "geko" / "state.arrow", reference / "geko" / "state.arrow")
        assert_same_model(resumed / "model.safetensors", reference / "model.safetensors")
    e = pl.read_parquet(resumed / "geko" / "epochs.parquet")
    ref = pl.read_parquet(runs[0] / "full" / "geko" / "epochs.parquet")
    assert e["epoch"].to_list() == ref["epoch"].to_list()
    for col in ("freeze_count", "light_count", "focus_count", "hard_count", "observations"):
        assert e[col].to_list() == ref[col].to_list(), col


@pytest.mark.parametrize("average_tokens", ["avg", "noavg"])
def test_loss_normalisation_gives_the_one_process_gradient(runs, average_tokens):
    """Plain SGD (linear in the gradient, unlike AdamW, which hides a constant factor on the loss):
    the weights after two epochs equal the one-process run's whatever average_tokens_across_devices
    says, though the ranks' micro-batches hold different numbers of samples with a label and
    rank 1's last micro-batch of each epoch holds a padding draw. HF's logged loss (the mean of the
    ranks' reported losses) is the one-process loss too."""
    two, one = runs[0] / f"sgd_{average_tokens}", runs[1] / "sgd_ref"
    r2, r1 = result(two), result(one)
    assert r2["plans"] == r1["plans"] == [worker.N, worker.N]
    assert r2["global_step"] == r1["global_step"]
    init = {k: v.numpy() for k, v in tiny_bert_classifier(seed=0).state_dict().items()}
    w1 = load_file(str(one / "model.safetensors"))
    assert max(float(np.abs(w1[k] - init[k]).max()) for k in w1) > 0.05  # a scale error would show
    assert_same_model(two / "model.safetensors", one / "model.safetensors")
    np.testing.assert_allclose(r2["losses"], r1["losses"], rtol=0, atol=1e-5)
    assert len(r1["losses"]) == r1["global_step"]
    # GEKO's epoch-end log counts every batch of the epoch (the last exchange applied first).
    assert r1["logged_samples_trained"] == [worker.N, worker.N]
    assert r2["logged_samples_trained"] == [worker.N + 1, worker.N + 1]
