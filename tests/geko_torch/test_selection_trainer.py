"""Selection policies through the sampler and GEKOTrainer: baselines on the same engine."""
import numpy as np
import polars as pl
import pytest
import torch

from geko_state import (
    Bucket,
    GEKOConfig,
    HistoryConfig,
    SelectionConfig,
    SelectionKind,
    StateStore,
    plan_selection,
    read_summary,
)
from geko_state.errors import ConfigError, InputError
from geko_state.schema import COLUMN_NAMES
from geko_torch.sampler import GEKOSampler
from geko_torch.serialization import load_tree, save_tree
from geko_torch.trainer import GEKOTrainer
from geko_torch.training_args import GEKOTrainingArgs

from .models import TinyClassifier, cls_items


def _args(tmp_path, name="run", **kw):
    base = {"output_dir": str(tmp_path / name), "num_epochs": 3, "batch_size": 8, "learning_rate": 5e-2,
            "warmup_steps": 2, "logging_steps": 1, "save_steps": 10_000, "eval_steps": 10_000,
            "dataloader_num_workers": 0, "report": False, "save_at_end": False}
    base.update(kw)
    return GEKOTrainingArgs(**base)


# Masters the easy task within a couple of epochs, so GEKO's epochs would shrink.
_FAST = GEKOConfig(log_bucket_stats=False, q_value_lr=0.5, use_curriculum=False, bucket_weights=(3.0, 1.0, 1.0))


def _trained_per_epoch(run_dir) -> list[int]:
    return read_summary(run_dir)["samples_trained"].to_list()


def _state_bytes(store: StateStore) -> dict[str, bytes]:
    return {c: np.ascontiguousarray(store.column(c)).tobytes() for c in COLUMN_NAMES}


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


class RecordingClassifier(TinyClassifier):
    """Keeps each training forward's inputs, logits and the gradient that reaches the logits."""

    def __init__(self, **kw):
        super().__init__(**kw)
        self.records: list[dict] = []

    def forward(self, input_ids, attention_mask=None):
        out = super().forward(input_ids, attention_mask)
        if self.training:
            rec = {"input_ids": input_ids.detach().clone(), "logits": out["logits"].detach().clone()}
            out["logits"].register_hook(lambda g: rec.__setitem__("grad", g.detach().clone()))
            self.records.append(rec)
        return out


# ---------------------------------------------------------------------- trainer
def test_uniform_trains_every_sample_every_epoch(tmp_path, capsys):
    items = cls_items(40)
    geko = GEKOTrainer(TinyClassifier(), items, config=_FAST, args=_args(tmp_path, "geko", num_epochs=6))
    geko.train()
    assert min(_trained_per_epoch(tmp_path / "geko")) < 40  # the same setup shrinks GEKO's epochs

    t = GEKOTrainer(TinyClassifier(), items, config=_FAST,
                    args=_args(tmp_path, "uni", num_epochs=6, selection="uniform", report=True,
                               disable_progress_bar=True))
    m = t.train()
    assert _trained_per_epoch(tmp_path / "uni") == [40] * 6
    epochs = [r for r in t.log_history if "samples_trained" in r]
    assert [r["samples_trained"] for r in epochs] == [40] * 6
    assert m["samples_trained"] == 240 and m["compute_saved"] == 0
    assert np.array_equal(t.store.column("times_seen"), np.full(40, 6))  # each sample once per epoch
    out = capsys.readouterr().out
    assert "Selection         : uniform" in out and "Curriculum        : OFF" in out
    assert t.sampler.phase() is None


def test_baselines_train_with_the_plain_warmup_schedule(tmp_path):
    cfg = GEKOConfig(log_bucket_stats=False)  # curriculum on
    # constant: the warmup alone (the default linear decay is tested in test_lr_schedule.py)
    kw = {"warmup_steps": 2, "learning_rate": 1e-2, "num_epochs": 2, "lr_scheduler_type": "constant"}
    geko = GEKOTrainer(TinyClassifier(), cls_items(16), config=cfg, args=_args(tmp_path, "g", **kw))
    uni = GEKOTrainer(TinyClassifier(), cls_items(16), config=cfg, args=_args(tmp_path, "u", selection="uniform", **kw))
    assert geko._lr_factor(10) == pytest.approx(0.5)  # WARMUP phase multiplier at progress 0
    assert uni._lr_factor(10) == 1.0 and uni._lr_factor(0) == 0.5  # warmup only
    uni.train()
    lrs = [r["learning_rate"] for r in uni.log_history if "learning_rate" in r]
    assert lrs[1:] == [1e-2] * (len(lrs) - 1)
    assert all(r["phase"] is None for r in uni.log_history if "learning_rate" in r)


def test_infobatch_prunes_the_middle_epochs_and_anneals_the_last(tmp_path):
    t = GEKOTrainer(TinyClassifier(), cls_items(40), config=_FAST,
                    args=_args(tmp_path, num_epochs=4, selection="infobatch"))
    t.train()
    trained = _trained_per_epoch(tmp_path / "run")
    # epoch 1: nothing observed yet (all kept); 2-3: low-loss samples dropped; 4: annealed, full data
    assert trained[0] == 40 and trained[-1] == 40
    assert all(k < 40 for k in trained[1:3])


@pytest.mark.parametrize("selection", ["infobatch", SelectionConfig(keep_fraction=0.5)])
def test_loss_weights_reach_backward_and_raw_losses_reach_the_state(tmp_path, selection):
    items = cls_items(40)
    row = {tuple(it["input_ids"].tolist()): i for i, it in enumerate(items)}
    assert len(row) == 40
    model = RecordingClassifier()
    t = GEKOTrainer(model, items, config=_FAST, args=_args(tmp_path, selection=selection, max_steps=7))
    t.train()  # epoch 1: 5 full batches; steps 6 and 7 are the first two batches of epoch 2
    plan = t.sampler.plan
    assert t.store.epoch == 1 and plan.loss_weights is not None
    # InfoBatch: kept low-loss samples weigh 1 / (1 - 0.5); keep_fraction: the kept mastered (here
    # LIGHT) samples weigh pool / kept, about 1 / 0.5, and only they weigh more than 1
    bucket = t.store.column("bucket")  # the partition the plan was drawn from (it changes at the epoch's end)
    mastered = (bucket == Bucket.LIGHT) | (bucket == Bucket.FREEZE)
    if isinstance(selection, SelectionConfig):
        pool = int(mastered.sum())
        assert pool > 10 and plan.extra["keep"] == round(pool / 2)
        np.testing.assert_array_equal(plan.loss_weights > 1, np.isin(np.arange(40), plan.ids) & mastered)
    seen_weight_2, seen_mastered = False, 0
    for rec in model.records[5:7]:
        ids = np.array([row[tuple(x)] for x in rec["input_ids"].tolist()])
        logits, grad = rec["logits"], rec["grad"]
        y = torch.tensor([int(items[i]["labels"]) for i in ids])
        # d(sum_i w_i CE_i / B) / d logits_i = w_i / B * (softmax_i - onehot_i)
        resid = torch.softmax(logits, -1) - torch.nn.functional.one_hot(y, 2).float()
        w_seen = (grad * resid).sum(-1) / (resid * resid).sum(-1) * len(ids)
        np.testing.assert_allclose(w_seen.numpy(), plan.loss_weights[ids], rtol=1e-4)
        seen_weight_2 |= bool((np.abs(plan.loss_weights[ids] - 2.0) < 0.1).any())
        # the state holds the raw, unweighted per-sample losses
        raw = torch.nn.functional.cross_entropy(logits, y, reduction="none").numpy()
        np.testing.assert_allclose(t.store.column("last_loss")[ids], raw, rtol=1e-5)
        seen_mastered += int(mastered[ids].sum())
        assert (t.store.column("times_seen")[ids] == 2).all()  # kept mastered samples are observed again
    assert seen_weight_2 and seen_mastered > 0


# Both anneal the last epoch of 4 to full data with weight 1.
@pytest.mark.parametrize("selection", ["infobatch", SelectionConfig(keep_fraction=0.5, anneal_fraction=0.25)])
def test_stopped_and_resumed_reweighting_run_ends_bit_identical(tmp_path, selection):
    items = cls_items(40)
    kw = {"num_epochs": 4, "seed": 7, "selection": selection, "history": HistoryConfig(changed_only=True)}
    full = GEKOTrainer(TinyClassifier(dropout=0.1), items, config=_FAST, args=_args(tmp_path, "full", **kw))
    full.train()

    first = GEKOTrainer(TinyClassifier(dropout=0.1), items, config=_FAST,
                        args=_args(tmp_path, "split", max_steps=7, **kw))
    assert first.train()["stopped_at_max_steps"]  # inside epoch 2, a pruned and re-weighted one
    stopped_plan = first.sampler.plan
    assert stopped_plan.loss_weights is not None and len(stopped_plan) < 40
    first.close()
    ckpt = tmp_path / "split" / "checkpoint-7"
    assert (ckpt / "geko_sampler.safetensors").is_file() and not list(ckpt.glob("*.pkl"))

    resumed = GEKOTrainer(TinyClassifier(seed=99, dropout=0.1), items, config=_FAST,
                          args=_args(tmp_path, "split", **kw))
    resumed.load_checkpoint(ckpt)
    plan = resumed.sampler.plan
    assert plan.ids.tobytes() == stopped_plan.ids.tobytes()
    assert plan.loss_weights.dtype == np.float32
    assert plan.loss_weights.tobytes() == stopped_plan.loss_weights.tobytes()
    resumed.train()

    a, b = _weights(full.model), _weights(resumed.model)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert _state_bytes(full.store) == _state_bytes(resumed.store)
    sa, sb = read_summary(tmp_path / "full"), read_summary(tmp_path / "split")
    assert [c for c in sa.columns if not sa[c].equals(sb[c])] == []
    assert sa["samples_trained"][-1] == 40 and sa["samples_trained"][1] < 40
    name = "history/epoch=000004.parquet"
    assert pl.read_parquet(tmp_path / "full" / name).equals(pl.read_parquet(tmp_path / "split" / name))


def test_resuming_with_another_policy_is_refused_before_anything_changes(tmp_path):
    items = cls_items(24)
    first = GEKOTrainer(TinyClassifier(), items, config=_FAST,
                        args=_args(tmp_path, "a", selection="infobatch", max_steps=4))
    first.train()
    first.close()
    other = GEKOTrainer(TinyClassifier(), items, config=_FAST, args=_args(tmp_path, "b", selection="uniform"))
    before = _state_bytes(other.store)
    with pytest.raises(InputError, match="selection='infobatch'"):
        other.load_checkpoint(tmp_path / "a" / "checkpoint-4")
    assert _state_bytes(other.store) == before and other.store.epoch == 0


# ---------------------------------------------------------------------- args and sampler
def test_training_args_selection():
    a = GEKOTrainingArgs(selection="infobatch")
    assert a.selection == SelectionConfig(policy=SelectionKind.INFOBATCH)
    assert a.to_dict()["selection"] == {"policy": "infobatch", "prune_probability": 0.5,
                                        "anneal_fraction": None, "recheck_fraction": 0.0, "keep_fraction": None,
                                        "suspect_threshold": None}
    keep = GEKOTrainingArgs(selection=SelectionConfig(keep_fraction=0.25))
    assert keep.to_dict()["selection"]["keep_fraction"] == 0.25 and keep.geko_settings().selection == keep.selection
    cfg = SelectionConfig(policy="geko", recheck_fraction=0.02)
    assert GEKOTrainingArgs(selection=cfg).selection is cfg
    assert GEKOTrainingArgs().selection.policy is SelectionKind.GEKO
    with pytest.raises(ConfigError, match="selection: SelectionConfig.policy must be one of"):
        GEKOTrainingArgs(selection="random")
    with pytest.raises(ConfigError, match="selection"):
        GEKOTrainingArgs(selection=3)


def _store(n=60):
    store = StateStore.create(n, config=GEKOConfig(log_bucket_stats=False))
    rng = np.random.default_rng(0)
    store.observe(np.arange(n), rng.random(n) * 3, rng.random(n), rng.random(n) < 0.5)
    store.repartition()
    return store


def test_sampler_default_is_the_engine_plan_and_baselines_yield_their_plans():
    store = _store()
    s = GEKOSampler(store, seed=3, total_epochs=4)
    assert list(s) == store.plan_epoch(3, total_epochs=4, replacement=False).tolist() and s.policy is SelectionKind.GEKO
    u = GEKOSampler(store, seed=3, total_epochs=4, selection="uniform")
    assert sorted(u) == list(range(60)) and u.loss_weights_for(torch.arange(5)) is None
    assert u.phase() is None and u.phase_label() is None
    ib = GEKOSampler(store, seed=3, total_epochs=4, selection=SelectionConfig(policy="infobatch"))
    w = ib.plan.loss_weights
    assert len(ib) < 60 and w is not None
    ids = torch.tensor(list(ib)[:6])
    got = ib.loss_weights_for(ids)
    assert got.dtype == torch.float32 and torch.equal(got, torch.from_numpy(w[ids.numpy()]))
    assert torch.equal(ib.loss_weights_for(ids.numpy()), got)
    with pytest.raises(ConfigError, match="policy"):  # a setting of the sampler (geko_state.errors)
        GEKOSampler(store, selection="bogus")


def test_sampler_state_round_trips_weights_and_refuses_another_policy(tmp_path):
    store = _store()
    s = GEKOSampler(store, seed=1, total_epochs=4, selection="infobatch")
    s.advance(5)
    state = s.state_dict()
    assert state["policy"] == "infobatch" and state["loss_weights"].dtype == np.float32
    save_tree(state, tmp_path, "sampler")
    assert not list(tmp_path.glob("*.pkl"))
    loaded = load_tree(tmp_path, "sampler")
    r = GEKOSampler(store, seed=1, total_epochs=4, selection="infobatch")
    r.load_state_dict(loaded)
    assert r.plan.loss_weights.tobytes() == s.plan.loss_weights.tobytes()
    assert list(r) == list(s) and len(list(s)) == len(s.plan) - 5 and r.global_position == 5
    with pytest.raises(InputError, match="'infobatch' selection run"):
        GEKOSampler(store, seed=1, total_epochs=4, selection="uniform").load_state_dict(loaded)
    bad = dict(loaded, loss_weights=np.ones(3, np.float32))
    with pytest.raises(InputError, match="loss weights"):
        GEKOSampler(store, seed=1, total_epochs=4, selection="infobatch").load_state_dict(bad)
    # a state without weights (every sample weighs 1) and without a policy (older checkpoints: GEKO)
    g = GEKOSampler(store, seed=1, total_epochs=4)
    old = {k: v for k, v in g.state_dict().items() if k not in ("policy", "selection")}
    assert "loss_weights" not in g.state_dict()
    g2 = GEKOSampler(store, seed=1, total_epochs=4)
    g2.load_state_dict(old)
    assert g2.plan.loss_weights is None and list(g2) == list(g)


def test_the_state_holds_the_mean_margin_of_every_training_forward(tmp_path):
    items = cls_items(40)
    row = {tuple(it["input_ids"].tolist()): i for i, it in enumerate(items)}
    model = RecordingClassifier()
    t = GEKOTrainer(model, items, config=_FAST, args=_args(tmp_path, selection="uniform", num_epochs=2))
    t.train()
    margins: dict[int, list[float]] = {}
    for rec in model.records:
        logits = rec["logits"]
        for x, lg in zip(rec["input_ids"].tolist(), logits):
            i = row[tuple(x)]
            y = int(items[i]["labels"])
            margins.setdefault(i, []).append(float(lg[y] - lg[1 - y]))  # 2 classes: the other logit
    assert len(margins) == 40 and all(len(m) == 2 for m in margins.values())
    aum = t.store.column("aum")
    np.testing.assert_allclose(aum, [np.mean(margins[i]) for i in range(40)], rtol=1e-5, atol=1e-6)
    # wrong_streak: wrong at the last observation <=> margin <= 0 there
    last_wrong = np.array([margins[i][-1] < 0 for i in range(40)])
    assert ((t.store.column("wrong_streak") > 0) == last_wrong).all()
    t.close()


def test_geko_with_suspect_threshold_trains_and_reports_what_it_set_aside(tmp_path):
    items = cls_items(40)
    for it in items[:8]:  # mislabeled: the task's rule says the other class
        it["labels"] = 1 - it["labels"]
    sel = SelectionConfig(suspect_threshold=0.6)
    t = GEKOTrainer(TinyClassifier(), items, config=_FAST, args=_args(tmp_path, selection=sel, num_epochs=4))
    t.train()
    trained = _trained_per_epoch(tmp_path / "run")
    assert trained[0] == 40
    assert min(trained[2:]) < 40
    # the plan of one more epoch, from the state the real training left: mislabeled samples are the
    # suspects it sets aside
    from geko_state.noise import suspect_mask

    plan = plan_selection(t.store, sel, seed=0, epoch=t.store.epoch)
    aside = suspect_mask(t.store.column("aum"), t.store.column("wrong_streak"), t.store.column("times_seen"), 0.6)
    base = plan_selection(t.store, SelectionConfig(), seed=0, epoch=t.store.epoch)
    assert aside.any() and plan.extra["suspects"] == int(aside[base.ids].sum()) > 0
    np.testing.assert_array_equal(plan.ids, base.ids[~aside[base.ids]])
    assert aside[:8].mean() > aside[8:].mean()
    t.close()
