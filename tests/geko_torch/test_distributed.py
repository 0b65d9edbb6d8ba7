"""torch.distributed: replicated state, the observation exchange, DDP runs against one process.

The multi-process tests start real gloo process groups with ``torchrun`` (2 processes on the CPU):
the scenarios live in ``dist_worker.py`` and ``examples/ddp_custom_loop.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist

from geko_state import COLUMN_NAMES, GEKO_DEFAULT, StateStore
from geko_state.errors import InputError
from geko_torch import GEKOSampler, GEKOTracker
from geko_torch.distributed import (
    BYTES_PER_SLOT,
    HEADER_BYTES,
    ObservationExchange,
    decode_gathered,
    pack_observations,
    replica_path,
)
from geko_torch.serialization import load_tree
from geko_torch.signals import SampleSignals

from .dist import ROOT, assert_same_model, assert_same_state, torchrun

WORKER = Path(__file__).with_name("dist_worker.py")
EXAMPLE = ROOT / "examples" / "ddp_custom_loop.py"



@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> Path:
    """Two ranks, then one rank (which also resumes the two-rank run stopped mid-epoch)."""
    out = tmp_path_factory.mktemp("dist")
    torchrun(2, WORKER, str(out / "w2"), "exchange", "trainer", "trainer_stop")
    torchrun(1, WORKER, str(out / "w1"), "trainer", f"trainer_resume={out / 'w2' / 'trainer_stop' / 'checkpoint-21'}")
    torchrun(2, EXAMPLE, "--epochs", "4", "--out", str(out / "loop2"))
    torchrun(1, EXAMPLE, "--epochs", "4", "--out", str(out / "loop1"))
    return out




# ---------------------------------------------------------------------- multi-process (torchrun, gloo)
def test_two_rank_trainer_equals_one_rank_with_the_same_global_batch(runs):
    two, one = runs / "w2" / "trainer", runs / "w1" / "trainer"
    ckpt = "checkpoint-63"
    assert_same_state(two / ckpt / "geko_state.arrow", one / ckpt / "geko_state.arrow")
    assert_same_state(two / "state.arrow", one / "state.arrow")
    assert_same_model(two / ckpt / "model.safetensors", one / ckpt / "model.safetensors")
    m2, m1 = (json.loads((d / "metrics.json").read_text()) for d in (two, one))
    assert m2["global_step"] == m1["global_step"] == 63
    assert m2["samples_mastered"] == m1["samples_mastered"] > 0  # plans shrank: shards were padded
    # A padding draw is trained (it keeps the ranks in step) but not observed.
    assert m1["samples_trained"] <= m2["samples_trained"] <= m1["samples_trained"] + 4
    assert abs(m2["eval_accuracy"] - m1["eval_accuracy"]) < 1e-9
    # Rank 0 alone wrote the history: one summary row per epoch, the same bucket counts.
    import polars as pl

    e2, e1 = (pl.read_parquet(d / "epochs.parquet") for d in (two, one))
    assert e2["epoch"].to_list() == [1, 2, 3, 4]
    for col in ("freeze_count", "light_count", "focus_count", "hard_count"):
        assert e2[col].to_list() == e1[col].to_list()
    assert sorted(p.name for p in two.iterdir() if p.name.startswith(".")) == []  # no temporary leftovers


def test_two_rank_run_resumed_on_one_rank_finishes_like_the_uninterrupted_run(runs):
    resumed = runs / "w1" / "trainer_resume"
    ckpt = "checkpoint-63"
    for reference in (runs / "w2" / "trainer", runs / "w1" / "trainer"):
        assert_same_state(resumed / ckpt / "geko_state.arrow", reference / ckpt / "geko_state.arrow")
        assert_same_model(resumed / ckpt / "model.safetensors", reference / ckpt / "model.safetensors")
    stopped = load_tree(runs / "w2" / "trainer_stop" / "checkpoint-21", "geko_sampler")
    assert stopped["world_size"] == 2 and stopped["epoch"] == 1 and stopped["global_position"] == 5 * 32
    import polars as pl

    assert pl.read_parquet(resumed / "epochs.parquet")["epoch"].to_list() == [1, 2, 3, 4]


def test_ddp_custom_loop_example_two_ranks_equals_one_rank(runs):
    two, one = runs / "loop2", runs / "loop1"
    assert_same_state(two / "checkpoint" / "geko_state.arrow", one / "checkpoint" / "geko_state.arrow", atol=1e-4)
    # GPT-2's attention key biases (c_attn.bias[64:128] here) have a zero gradient in exact
    # arithmetic (softmax does not change when every key logit moves by q.b); AdamW turns the float
    # noise of that zero into lr-sized steps, so they differ between any two float orders.
    skip = {f"transformer.h.{i}.attn.c_attn.bias": slice(64, 128) for i in range(2)}
    assert_same_model(two / "checkpoint" / "model.safetensors", one / "checkpoint" / "model.safetensors",
                      atol=1e-5, skip=skip)
    assert (two / "epochs.parquet").is_file()


def test_exchange_edge_cases_agree_on_every_rank(runs):
    d = runs / "w2" / "exchange"
    reports = [json.loads((d / "exchange.json").read_text()), json.loads((d / "exchange-1.json").read_text())]
    for r in reports:
        assert r["uneven_observed"] == r["uneven_expected"] == 34
        assert r["uneven_identical"] and r["sync_every_identical"]
        assert r["ids_above_2_24_exact"]
        assert r["sync_every_pending_before_flush"] == 2  # one exchange in flight, one batch waiting
        assert r["sync_every_observed"] == 7 * 4 * 2
        assert r["sync_every_exchanges"] == 3  # 7 batches, every 3, and the flush
        assert "rank 1" in r["bad_id_error"] and "[0, 100)" in r["bad_id_error"]
        assert r["bad_id_store_untouched"]
    assert reports[0] == reports[1]


# ---------------------------------------------------------------------- the packing (pure functions)
def _values(n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    v = torch.rand(5, n, generator=g)
    v[2] = (v[2] > 0.5).float()
    v[3] = (v[3] > 0.2).float()
    v[4] = (v[4] - 0.5) * 20  # margins: signed logits
    if n:
        v[4, 0] = float("nan")  # an unknown margin travels as NaN
    return v


def _gather(bufs: list[torch.Tensor]) -> np.ndarray:
    return torch.stack(bufs).numpy()


def test_pack_then_decode_keeps_ids_above_2_24_and_float_bits():
    ids = torch.tensor([0, 2**24 + 1, 2**40 + 3, 7], dtype=torch.int64)
    v = _values(4, 0)
    buf = pack_observations(ids, v, start=0, slots=6, bad=-1)
    assert buf.dtype == torch.uint8 and buf.numel() == HEADER_BYTES + BYTES_PER_SLOT * 6
    res = decode_gathered([_gather([buf])])
    assert res.ids.tolist() == ids.tolist()
    bits = [0, 1, 4]  # loss, confidence, margin: bit-exact
    assert np.array_equal(res.values.view(np.uint32)[bits], v[bits].numpy().view(np.uint32))
    assert np.array_equal(res.values[2:4], v[2:4].numpy())
    assert res.counts.tolist() == [4] and res.bad.tolist() == [-1]


def test_decode_puts_equal_counts_back_in_plan_order_and_unequal_in_rank_order():
    # rank r's j-th entry is global plan position j * W + r
    plan = torch.arange(100, 112, dtype=torch.int64)
    bufs = [pack_observations(plan[r::3], _values(4, r), start=0, slots=4) for r in range(3)]
    assert decode_gathered([_gather(bufs)]).ids.tolist() == plan.tolist()
    uneven = [torch.tensor([1, 2]), torch.tensor([3]), torch.tensor([4, 5, 6])]
    bufs = [pack_observations(x, _values(len(x), 0), start=0, slots=3) for x in uneven]
    assert decode_gathered([_gather(bufs)]).ids.tolist() == [1, 2, 3, 4, 5, 6]


def test_decode_joins_a_second_round_when_a_rank_sent_more_than_the_slots():
    a, b = torch.arange(5, dtype=torch.int64), torch.arange(10, 13, dtype=torch.int64)
    va, vb = _values(5, 1), _values(3, 2)
    first = _gather([pack_observations(a, va, start=0, slots=2), pack_observations(b, vb, start=0, slots=2)])
    second = _gather([pack_observations(a, va, start=2, slots=3), pack_observations(b, vb, start=2, slots=3)])
    res = decode_gathered([first, second])
    assert res.ids.tolist() == [0, 1, 2, 3, 4, 10, 11, 12]
    np.testing.assert_array_equal(res.values[:, :5], va.numpy())
    np.testing.assert_array_equal(res.values[:, 5:], vb.numpy())


def test_padding_mask_marks_draws_past_the_end_of_the_plan():
    store = StateStore.create(5, None, GEKO_DEFAULT)
    s1 = GEKOSampler(store, seed=0, replacement=False, rank=1, world_size=2)
    assert len(s1.plan) == 5 and len(s1) == 3  # padded to 6: rank 1's last draw is padding
    assert s1.padding_mask(3).tolist() == [False, False, True]
    s1.advance(2)
    assert s1.padding_mask(1).tolist() == [True]
    s0 = GEKOSampler(store, seed=0, replacement=False, rank=0, world_size=2)
    assert not s0.padding_mask(3).any()


def test_replica_path_is_the_file_on_a_single_process():
    assert replica_path("x/state.arrow") == "x/state.arrow"


def test_exchange_needs_an_initialised_process_group():
    with pytest.raises(InputError, match="init_process_group"):
        ObservationExchange()


# ---------------------------------------------------------------------- one-rank process group, in process
@pytest.fixture
def one_rank_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def _sig(n: int, seed: int) -> SampleSignals:
    g = torch.Generator().manual_seed(seed)
    loss = torch.rand(n, generator=g) * 2
    return SampleSignals(loss=loss, confidence=torch.rand(n, generator=g), correct=loss < 1,
                         valid=torch.rand(n, generator=g) > 0.1)


def test_tracker_through_the_exchange_matches_the_local_tracker(one_rank_group):
    local = GEKOTracker(StateStore.create(64, None, GEKO_DEFAULT))
    store = StateStore.create(64, None, GEKO_DEFAULT)
    synced = GEKOTracker(store, process_group=dist.group.WORLD, sync_every=2)
    assert synced.exchange is not None and synced.world_size == 1
    for step, n in enumerate([8, 8, 3, 12, 10, 10]):  # exchanges of 16, 15, 20: the slots grow mid-run
        ids = torch.randint(0, 64, (n,), generator=torch.Generator().manual_seed(step))
        for t in (local, synced):
            t.record(ids, _sig(n, step))
    synced.flush()
    assert synced.pending == 0 and synced.exchange.slots == 20
    for c in COLUMN_NAMES:
        np.testing.assert_array_equal(local.store.column(c), store.column(c), err_msg=c)
    a, b = synced.epoch_stats, local.epoch_stats
    assert (a.samples, a.observed) == (b.samples, b.observed) == (51, int(store.column("times_seen").sum()))
    assert a.loss_sum == pytest.approx(b.loss_sum, rel=1e-12)
    with pytest.raises(InputError, match="queued"):
        synced.record(torch.arange(2), _sig(2, 0))
        synced.state_dict()


def test_global_mean_is_the_mean_over_samples_with_a_label_token():
    tracker = GEKOTracker(StateStore.create(8, None, GEKO_DEFAULT))
    sig = _sig(6, 3)
    tracker.record(torch.arange(6), sig)
    losses = sig.loss.clone().requires_grad_()
    expected = sig.loss[sig.valid].sum() / sig.valid.sum()
    torch.testing.assert_close(tracker.global_mean(losses), expected)
    with pytest.raises(InputError, match="batch just recorded"):
        tracker.global_mean(losses[:3])
