import numpy as np
import polars as pl
import pytest
import torch
from torch.utils.data import DataLoader

from geko_state import GEKOConfig, StateStore, read_summary
from geko_state.errors import ConfigError, InputError
from geko_torch.data import GEKODataset, PadCollator
from geko_torch.sampler import GEKOSampler
from geko_torch.signals import causal_lm_signals
from geko_torch.tracker import GEKOTracker, _Pending

from .models import cls_items, lm_items, tiny_bert_classifier, tiny_gpt2


def _cfg():
    return GEKOConfig(log_bucket_stats=False)


def test_custom_loop_observes_exactly_the_per_sample_signals(tmp_path):
    items = lm_items(24)
    items[5]["labels"][:] = -100  # no label token: trained on, never observed
    store = StateStore.create(len(items), config=_cfg())
    sampler = GEKOSampler(store, seed=0, total_epochs=2)
    tracker = GEKOTracker(store, sampler=sampler, run_dir=tmp_path)
    model = tiny_gpt2()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = DataLoader(GEKODataset(items), batch_size=8, sampler=sampler, collate_fn=PadCollator())
    expected = {}
    for batch in loader:
        ids = batch.pop("sample_id")
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        ref = causal_lm_signals(logits.detach(), batch["labels"])
        for i, sid in enumerate(ids.tolist()):
            if ref.valid[i]:
                expected[sid] = (float(ref.loss[i]), float(ref.confidence[i]), bool(ref.correct[i]))
        loss = tracker.loss(ids, logits, batch["labels"])
        assert loss.shape == (len(ids),) and loss.requires_grad
        loss.mean().backward()
        opt.step()
        opt.zero_grad()
    assert sampler.consumed == len(sampler)
    label = sampler.phase_label()
    stats = tracker.end_epoch()
    assert stats.epoch == 1 and store.epoch == 1
    seen = store.column("times_seen")
    assert seen[5] == 0
    for sid, (lo, co, cr) in expected.items():
        assert store.column("last_loss")[sid] == np.float32(lo)
        assert store.column("confidence")[sid] == np.float32(co)
        assert bool(store.column("correct")[sid]) == cr
    summary = read_summary(tmp_path)
    assert summary.height == 1 and summary["samples_trained"][0] == len(sampler.plan)
    assert summary["phase"][0] == label == "WARMUP>ASCENT>PEAK"
    assert (tmp_path / "history").is_dir()


def test_classification_and_custom_callables():
    items = cls_items(16)
    store = StateStore.create(16, config=_cfg())
    calls = []

    def conf(outputs, batch):
        calls.append(batch is not None)
        return torch.full((outputs.logits.shape[0],), 0.25)

    def corr(outputs, batch):
        return torch.ones(outputs.logits.shape[0], dtype=torch.bool)

    tracker = GEKOTracker(store, compute_confidence=conf, compute_correctness=corr)
    model = tiny_bert_classifier()
    batch = PadCollator()([GEKODataset(items)[i] for i in range(8)])
    ids = batch.pop("sample_id")
    out = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    loss = tracker.loss(ids, out.logits, batch["labels"], outputs=out, batch=batch)
    ref = torch.nn.functional.cross_entropy(out.logits, batch["labels"], reduction="none")
    assert torch.allclose(loss, ref, atol=1e-6)
    tracker.flush()
    assert calls == [True]
    assert np.all(store.column("confidence")[:8] == np.float32(0.25))
    assert np.all(store.column("correct")[:8] == 1) and np.all(store.column("times_seen")[8:] == 0)


def test_observations_wait_for_their_device_copy_and_keep_order():
    store = StateStore.create(4, config=_cfg())
    tracker = GEKOTracker(store, max_pending=2)

    class FakeEvent:
        def __init__(self):
            self.done = False
            self.synced = 0

        def query(self):
            return self.done

        def synchronize(self):
            self.synced += 1
            self.done = True

    events = [FakeEvent() for _ in range(4)]
    for k, ev in enumerate(events):
        vals = torch.tensor([[0.5 + k], [0.5], [1.0], [1.0], [2.0 + k]], dtype=torch.float32)
        tracker._pending.append(_Pending(torch.tensor([0]), vals, ev))
    tracker._drain(block=False)
    assert tracker.pending == 4 and store.column("times_seen")[0] == 0  # nothing landed: nothing applied
    events[0].done = True
    tracker._drain(block=False)
    assert tracker.pending == 3 and store.column("last_loss")[0] == np.float32(0.5)
    tracker._drain(block=True)  # too many queued: wait for the oldest only
    assert tracker.pending == 2 and events[1].synced == 1 and events[2].synced == 0
    tracker.flush()
    assert tracker.pending == 0 and store.column("last_loss")[0] == np.float32(3.5)
    assert store.column("times_seen")[0] == 4
    assert store.column("aum")[0] == np.float32(3.5)  # the margins 2..5 arrived in order: their mean


def test_state_dict_needs_a_flush_and_round_trips():
    store = StateStore.create(4, config=_cfg())
    tracker = GEKOTracker(store)
    sig = causal_lm_signals(torch.randn(2, 3, 5), torch.tensor([[1, 2, 3], [1, 1, 1]]))
    tracker._pending.append(_Pending(torch.tensor([0, 1]), torch.zeros(5, 2), type("E", (), {"query": lambda s: False})()))
    with pytest.raises(InputError, match="flush"):
        tracker.state_dict()
    tracker._pending.clear()
    tracker.record(torch.tensor([0, 1]), sig)
    state = tracker.state_dict()
    other = GEKOTracker(store)
    other.load_state_dict(state)
    assert other.state_dict() == state and state["samples"] == 2 and state["samples_total"] == 2


@pytest.mark.parametrize("kwargs, error, words", [
    # settings: ConfigError, as GEKOSettings raises for the same values; the objects worked on: InputError
    ({"task": "regression"}, ConfigError, "task"),
    ({"compute_confidence": 3}, ConfigError, "compute_confidence"),
    ({"max_pending": 0}, ConfigError, "max_pending"),
    ({"sync_every": 0}, ConfigError, "sync_every must be an integer >= 1"),
    ({"token_accuracy": 1.5}, ConfigError, r"token_accuracy must be None or a share in \(0, 1\]"),
    ({"correct_loss_below": float("nan")}, ConfigError, "correct_loss_below must be a finite number > 0"),
    ({"sampler": "x"}, InputError, "sampler"),
])
def test_constructor_errors(kwargs, error, words):
    with pytest.raises(error, match=words):
        GEKOTracker(StateStore.create(4, config=_cfg()), **kwargs)


def test_sampler_of_another_store_is_refused():
    a, b = StateStore.create(4, config=_cfg()), StateStore.create(4, config=_cfg())
    with pytest.raises(InputError, match="another StateStore"):
        GEKOTracker(a, sampler=GEKOSampler(b))


def test_bad_sample_ids_are_refused_before_anything_is_queued():
    store = StateStore.create(4, config=_cfg())
    tracker = GEKOTracker(store)
    logits, labels = torch.randn(2, 3), torch.tensor([0, 1])
    with pytest.raises(InputError, match="sample_ids"):
        tracker.loss(torch.tensor([0.0, 1.0]), logits, labels)
    with pytest.raises(InputError, match=r"sample_ids must have shape \[B\]"):
        tracker.loss(torch.tensor([0, 1, 2]), logits, labels)
    assert tracker.pending == 0
    with pytest.raises(InputError, match=r"sample_ids holds 9; expected ids in \[0, 4\)"):
        tracker.loss(torch.tensor([0, 9]), logits, labels)
    assert tracker.pending == 0 and store.column("times_seen").sum() == 0 and tracker.state_dict()["samples"] == 0


def test_history_rows_match_the_store_after_each_epoch(tmp_path):
    items = cls_items(12)
    store = StateStore.create(12, config=_cfg())
    sampler = GEKOSampler(store, seed=0, total_epochs=2)
    tracker = GEKOTracker(store, sampler=sampler, run_dir=tmp_path)
    model = tiny_bert_classifier()
    for _ in range(2):
        for batch in DataLoader(GEKODataset(items), batch_size=4, sampler=sampler, collate_fn=PadCollator()):
            ids = batch.pop("sample_id")
            with torch.no_grad():
                logits = model(input_ids=batch["input_ids"]).logits
            tracker.loss(ids, logits, batch["labels"])
        tracker.end_epoch()
    hist = pl.read_parquet(tmp_path / "history" / "epoch=000002.parquet").sort("sample_id")
    assert hist["times_seen"].to_numpy().tolist() == store.column("times_seen").tolist()
