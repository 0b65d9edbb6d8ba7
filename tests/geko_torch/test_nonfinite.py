"""Non-finite training results: ``nan_policy`` in the tracker and the trainer, and the fp16 overflow path."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from geko_state import COLUMN_NAMES, GEKOConfig, StateStore, build_report, read_summary
from geko_state.errors import InputError
from geko_torch import GEKOTracker, GEKOTrainer, GEKOTrainingArgs
from geko_torch.signals import SampleSignals

BLOWUP = 49  # the token whose embedding overflows float16 in the head


class OverflowClassifier(torch.nn.Module):
    """Mean of token embeddings -> linear head. Token 49's embedding is 1e6: under fp16 autocast the
    head's output of a sample containing it overflows (inf / nan logits), in fp32 it does not."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 8)
        self.head = torch.nn.Linear(8, 2)
        with torch.no_grad():
            self.emb.weight[BLOWUP] = 1e6

    def forward(self, input_ids, attention_mask=None):
        return {"logits": self.head(self.emb(input_ids).mean(1))}


def items(n: int = 64, blowups: tuple[int, ...] = (3, 17, 40, 41)) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(n):
        ids = torch.randint(1, 40, (6,), generator=g)
        if i in blowups:
            ids[2] = BLOWUP
        out.append({"input_ids": ids, "labels": torch.tensor(int(ids[0]) % 2)})
    return out


def trainer(tmp_path, policy: str, **kw) -> GEKOTrainer:
    args = GEKOTrainingArgs(output_dir=str(tmp_path / policy), num_epochs=2, batch_size=8, learning_rate=1e-2,
                            warmup_steps=0, fp16=True, device="cpu", report=False, disable_progress_bar=True,
                            dataloader_num_workers=0, save_at_end=True, plots=False, **kw)
    config = GEKOConfig(use_curriculum=False, nan_policy=policy)
    return GEKOTrainer(OverflowClassifier(), items(), config=config, args=args)


def test_fp16_overflow_with_nan_policy_skip_trains_on_and_counts_the_skipped_samples(tmp_path):
    t = trainer(tmp_path, "skip")
    metrics = t.train()
    # The 4 overflowing samples are never observed (so never leave their first bucket) and are
    # drawn, and skipped, in both epochs.
    assert metrics["skipped_nonfinite"] == t.store.skipped_total == 8
    assert read_summary(t.run.root)["skipped_nonfinite"].to_list() == [4, 4]
    seen = t.store.column("times_seen")
    assert seen[[3, 17, 40, 41]].tolist() == [0, 0, 0, 0]
    assert (np.delete(seen, [3, 17, 40, 41]) >= 1).all()
    assert t.store.observations_total + 8 == metrics["samples_trained"]
    report = build_report(t.run.root).format()
    assert "non-finite results skipped (nan_policy='skip'): 8 (epoch 1: 4, epoch 2: 4)" in report
    # GradScaler saw the overflow and skipped those optimizer steps: the weights stayed finite and
    # the scale went down from its initial 2^16.
    assert t.scaler.get_scale() < 2.0**16
    assert all(torch.isfinite(p).all() for p in t.model.parameters())
    fresh = StateStore.create(64, None, t.config)
    seen_mask = seen > 0
    for c in COLUMN_NAMES:
        col = t.store.column(c)
        if c not in ("bucket", "consecutive_frozen", "frozen_at_epoch", "pruned"):  # set by repartition
            np.testing.assert_array_equal(col[~seen_mask], fresh.column(c)[~seen_mask], err_msg=c)
    for c in ("last_loss", "confidence", "q_value", "quality"):
        assert np.isfinite(t.store.column(c)[seen_mask]).all(), c
    # The other samples trained: the model moved from its initial weights.
    assert not torch.equal(t.model.head.weight, OverflowClassifier().head.weight)


def test_fp16_overflow_with_nan_policy_raise_names_the_samples_and_applies_nothing(tmp_path):
    t = trainer(tmp_path, "raise")
    with pytest.raises(InputError) as err:
        t.train()
    msg = str(err.value)
    assert "non-finite loss or confidence for sample id(s)" in msg and "nan_policy='skip'" in msg
    bad = [int(x) for x in msg.split("sample id(s) [", 1)[1].split("]", 1)[0].split(",")]
    assert set(bad) <= {3, 17, 40, 41}
    assert t.store.column("times_seen")[bad].tolist() == [0] * len(bad)


def test_fp32_does_not_overflow(tmp_path):
    args = GEKOTrainingArgs(output_dir=str(tmp_path / "fp32"), num_epochs=1, batch_size=8, warmup_steps=0,
                            device="cpu", report=False, disable_progress_bar=True, dataloader_num_workers=0,
                            save_at_end=False, plots=False)
    t = GEKOTrainer(OverflowClassifier(), items(), config=GEKOConfig(use_curriculum=False), args=args)
    assert t.train()["skipped_nonfinite"] == 0


def _signals(loss: list[float]) -> SampleSignals:
    loss_t = torch.tensor(loss)
    n = len(loss)
    return SampleSignals(loss=loss_t, confidence=torch.full((n,), 0.5), correct=torch.zeros(n, dtype=torch.bool),
                         valid=torch.ones(n, dtype=torch.bool))


def test_skipped_results_weigh_zero_in_the_training_loss():
    tracker = GEKOTracker(StateStore.create(4, None, GEKOConfig(nan_policy="skip")))
    sig = _signals([1.0, float("nan"), 3.0, float("inf")])
    tracker.record(torch.arange(4), sig)
    losses = sig.loss.clone().requires_grad_()
    loss = tracker.global_mean(losses)
    assert loss.item() == pytest.approx(2.0)
    loss.backward()
    assert losses.grad.tolist() == [0.5, 0.0, 0.5, 0.0]
    tracker.end_epoch()
    assert tracker.store.last_stats.skipped_nonfinite == 2
    assert "skipped non-finite: 2" in tracker.store.last_stats.format_line()


def test_raise_policy_keeps_the_store_untouched():
    store = StateStore.create(4, None, GEKOConfig())
    tracker = GEKOTracker(store)
    with pytest.raises(InputError, match=r"sample id\(s\) \[2\]"):
        tracker.record(torch.tensor([0, 1, 2, 3]), _signals([1.0, 1.0, float("nan"), 1.0]))
    assert int(store.column("times_seen").sum()) == 0 and store.observations_total == 0
