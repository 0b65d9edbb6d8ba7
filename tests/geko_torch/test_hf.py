"""GEKOHFTrainer: transformers.Trainer with GEKO sample selection (tiny models built from configs)."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    Trainer,
    TrainerCallback,
    TrainingArguments,
)

from geko_state import GEKOConfig, query, read_summary
from geko_state.errors import InputError
from geko_state.schema import COLUMN_NAMES
from geko_torch.data import PadCollator
from geko_torch.hf import (
    GEKO_META_FILE,
    GEKO_STATE_FILE,
    GEKOHFTrainer,
    GEKOTrainerMixin,
)
from geko_torch.session import GEKOSettings

from .hf_callbacks import StopAt

QUIET = GEKOConfig(log_bucket_stats=False)
# Classifier setup that masters samples within a few epochs: LIGHT keeps a draw weight so correct
# samples are seen again, and q moves fast enough to pass min_q_for_freeze after two passes.
FAST = GEKOConfig(log_bucket_stats=False, use_curriculum=False, bucket_weights=(3, 2, 1), q_value_lr=0.5)



pytestmark = pytest.mark.usefixtures("one_torch_thread")


# --------------------------------------------------------------------------- tiny models and data


def tiny_gpt2(seed: int = 0, dropout: float = 0.0) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=101, n_positions=64, bos_token_id=0, eos_token_id=0,
        resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout,
    ))


def tiny_bert(seed: int = 0, dropout: float = 0.0) -> BertForSequenceClassification:
    torch.manual_seed(seed)
    return BertForSequenceClassification(BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2, vocab_size=50,
        max_position_embeddings=64, num_labels=2, hidden_dropout_prob=dropout, attention_probs_dropout_prob=dropout,
    ))


def lm_items(n: int = 64, seed: int = 1, prompt: int = 2, unlabelled: tuple[int, ...] = ()) -> list[dict]:
    """Random sequences of 4..11 tokens, the first ``prompt`` masked; rows in ``unlabelled`` have no label token."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        k = int(torch.randint(4, 12, (1,), generator=g))
        ids = torch.randint(1, 101, (k,), generator=g)
        labels = ids.clone()
        labels[:prompt] = -100
        if i in unlabelled:
            labels[:] = -100
        items.append({"input_ids": ids, "labels": labels})
    return items


def cls_items(n: int = 64, seed: int = 1) -> list[dict]:
    """label = 1 when token 5 is in the sequence; HF-style 'label' key and an unused string column."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        ids = torch.randint(6, 50, (8,), generator=g)
        y = i % 2
        if y:
            ids[int(torch.randint(0, 8, (1,), generator=g))] = 5
        items.append({"input_ids": ids, "label": y, "text": f"sample {i}"})
    return items


def hf_args(out, **kw) -> TrainingArguments:
    base = {
        "output_dir": str(out), "report_to": "none", "use_cpu": True, "disable_tqdm": True,
        "dataloader_num_workers": 0, "per_device_train_batch_size": 8, "save_strategy": "no",
        "logging_strategy": "no", "seed": 0, "learning_rate": 1e-3,
    }
    return TrainingArguments(**{**base, **kw})


class PlanRecorder(TrainerCallback):
    """The GEKO plan of every epoch, read at HF's epoch begin (set ``trainer`` after construction)."""

    def __init__(self) -> None:
        self.trainer = None
        self.plans: list[np.ndarray] = []
        self.epoch_end_steps: list[int] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.plans.append(self.trainer.geko_sampler.plan.ids.copy())

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch_end_steps.append(state.global_step)


class StopAtEpochEnd(TrainerCallback):
    """Stop training at the end of the epoch that ends at step ``k`` (HF saves there itself)."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_epoch_end(self, args, state, control, **kwargs):
        if state.global_step == self.k:
            control.should_training_stop = True


def columns(store) -> dict[str, bytes]:
    return {c: np.ascontiguousarray(store.column(c)).tobytes() for c in COLUMN_NAMES}


# --------------------------------------------------------------------------- causal LM


def test_causal_lm_state_history_and_eval(tmp_path):
    n, epochs = 64, 3
    rec = PlanRecorder()
    eval_items = lm_items(16, seed=7)
    trainer = GEKOHFTrainer(
        model=tiny_gpt2(), args=hf_args(tmp_path, num_train_epochs=epochs), train_dataset=lm_items(n),
        eval_dataset=eval_items, data_collator=PadCollator(), callbacks=[rec], geko_args=GEKOSettings(config=QUIET),
    )
    rec.trainer = trainer
    out = trainer.train()

    store = trainer.geko_store
    assert store.n_samples == n and store.epoch == epochs
    assert trainer.geko_run_dir == tmp_path / "geko"
    assert len(rec.plans) == epochs
    drawn = np.concatenate(rec.plans)
    # every drawn sample was observed, once per draw (all items have label tokens)
    np.testing.assert_array_equal(store.column("times_seen"), np.bincount(drawn, minlength=n))
    summary = read_summary(trainer.geko_run_dir)
    assert summary.height == epochs
    assert summary["samples_trained"].to_list() == [len(p) for p in rec.plans]
    assert out.global_step == sum(math.ceil(len(p) / 8) for p in rec.plans)
    assert trainer.get_efficiency_report().n_epochs == epochs
    assert query(trainer.geko_run_dir, "SELECT count(*) AS n FROM epochs")["n"].item() == epochs
    assert torch.get_num_threads() == 1  # the engine's numba kernels did not leave torch's count changed
    assert len(trainer.train_dataset) == n and "sample_id" not in trainer.train_dataset[0]  # the user's dataset

    # evaluation is plain Trainer's: same eval loss on the same weights
    geko_eval = trainer.evaluate()
    plain = Trainer(model=trainer.model, args=hf_args(tmp_path / "plain"), eval_dataset=eval_items,
                    data_collator=PadCollator())
    assert geko_eval["eval_loss"] == pytest.approx(plain.evaluate()["eval_loss"], rel=1e-6)


def test_gradient_accumulation_weighs_samples_not_micro_batches(tmp_path):
    """bs 4 x 2 accumulation steps trains like bs 8, although the micro-batches hold different
    numbers of samples with label tokens."""
    items = lm_items(32, unlabelled=(0, 1, 2, 5, 9, 17))
    cfg = QUIET.replace(use_curriculum=False)
    weights = []
    for bs, ga in ((8, 1), (4, 2)):
        t = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path / f"bs{bs}", num_train_epochs=1,
                                                          per_device_train_batch_size=bs,
                                                          gradient_accumulation_steps=ga, optim="sgd",
                                                          learning_rate=0.5),
                          train_dataset=items, data_collator=PadCollator(), geko_args=GEKOSettings(config=cfg))
        assert t.train().global_step == 4
        times_seen = t.geko_store.column("times_seen")
        assert (times_seen[[0, 1, 2, 5, 9, 17]] == 0).all()  # no label token: never observed
        weights.append({k: v.clone() for k, v in t.model.state_dict().items()})
    # (plain SGD keeps the comparison linear; weighting each micro-batch's mean equally, HF's
    # default for a per-batch loss, ends about 2e-2 away)
    for name, w in weights[0].items():
        torch.testing.assert_close(weights[1][name], w, rtol=0, atol=1e-5)


def test_each_epoch_steps_on_its_own_length(tmp_path):
    """10 draws per epoch in micro-batches of 4 with 2 accumulation steps: (4, 4) then (2), so two
    optimizer steps per epoch. HF's step arithmetic, computed once for the full data (16 samples,
    4 micro-batches), would never step on the last, incomplete group of a shorter epoch."""
    t = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path, num_train_epochs=2, per_device_train_batch_size=4,
                                                       gradient_accumulation_steps=2),
                      train_dataset=lm_items(16), data_collator=PadCollator(), geko_args=GEKOSettings(config=QUIET, budget=10))
    assert t.train().global_step == 4
    assert read_summary(t.geko_run_dir)["samples_trained"].to_list() == [10, 10]
    assert t.state.epoch == 2.0


# --------------------------------------------------------------------------- classification


@pytest.fixture(scope="module")
def bert_run(tmp_path_factory):
    """One uninterrupted classifier run (dropout on), shared by the tests below."""
    out = tmp_path_factory.mktemp("bert_full")
    rec = PlanRecorder()
    trainer = GEKOHFTrainer(
        model=tiny_bert(dropout=0.1), args=hf_args(out, num_train_epochs=6, learning_rate=5e-3),
        train_dataset=cls_items(), callbacks=[rec], geko_args=GEKOSettings(config=FAST, replacement=True),
    )
    rec.trainer = trainer
    trainer.train()
    return trainer, rec


def test_classifier_freezes_samples_and_epochs_shrink(bert_run):
    trainer, rec = bert_run
    n = len(trainer.train_dataset)
    summary = read_summary(trainer.geko_run_dir)
    trained = summary["samples_trained"].to_list()
    assert summary.height == 6
    assert trained == [len(p) for p in rec.plans]
    assert trained[0] == n
    assert summary["freeze_count"].max() > 0  # some samples were mastered...
    assert trained[-1] < n and sum(trained) < 6 * n  # ...and later epochs really train fewer samples
    # HF ran exactly the batches of the shrinking plans, no empty update steps
    assert trainer.state.global_step == sum(math.ceil(t / 8) for t in trained) < 6 * math.ceil(n / 8)
    assert np.diff(rec.epoch_end_steps).tolist() == [math.ceil(t / 8) for t in trained[1:]]
    assert trainer.get_efficiency_report().compute_saved > 0


def _shrunk_epoch_step(rec: PlanRecorder, n: int) -> int:
    """A step in the middle of the first epoch that trains fewer than n samples."""
    for e, plan in enumerate(rec.plans):
        if 0 < len(plan) < n and math.ceil(len(plan) / 8) > 1:
            return rec.epoch_end_steps[e - 1] + 1
    pytest.fail(f"no shrunk epoch with 2+ steps: plans {[len(p) for p in rec.plans]}")


@pytest.mark.parametrize("where", ["mid_shrunk_epoch", "last_step_of_epoch", "epoch_end_save"])
def test_stop_and_resume_is_exact(bert_run, tmp_path, where):
    """Stopped (with a checkpoint) and resumed ends bit-identical to the uninterrupted run: state
    columns, model weights (dropout on) and history. Checkpoints: inside an epoch that trains fewer
    than N samples; after an epoch's last step but before its end (save_steps); at an epoch end."""
    full, rec = bert_run
    n = len(full.train_dataset)
    # the same training arguments as the full run (max_steps would change the LR schedule)
    args = hf_args(tmp_path, num_train_epochs=6, learning_rate=5e-3)
    if where == "mid_shrunk_epoch":
        k, stop = _shrunk_epoch_step(rec, n), None
    elif where == "last_step_of_epoch":
        k, stop = rec.epoch_end_steps[0], None
    else:
        k = rec.epoch_end_steps[1]
        stop = StopAtEpochEnd(k)
        args = hf_args(tmp_path, num_train_epochs=6, learning_rate=5e-3, save_strategy="epoch")
    stopped = GEKOHFTrainer(model=tiny_bert(dropout=0.1), args=args, train_dataset=cls_items(),
                            callbacks=[stop or StopAt(k)], geko_args=GEKOSettings(config=FAST, replacement=True))
    assert stopped.train().global_step == k
    ckpt = tmp_path / f"checkpoint-{k}"
    assert (ckpt / GEKO_STATE_FILE).is_file() and (ckpt / GEKO_META_FILE).is_file()
    assert (ckpt / "model.safetensors").is_file()

    # another initialisation: the weights must come from the checkpoint
    resumed = GEKOHFTrainer(model=tiny_bert(seed=5, dropout=0.1), args=args, train_dataset=cls_items(),
                            geko_args=GEKOSettings(config=FAST, replacement=True))
    resumed.train(resume_from_checkpoint=True)

    assert resumed.state.global_step == full.state.global_step
    assert columns(resumed.geko_store) == columns(full.geko_store)  # bit-identical state
    want = full.model.state_dict()
    for name, w in resumed.model.state_dict().items():
        assert torch.equal(w, want[name]), name
    a, b = read_summary(full.geko_run_dir), read_summary(resumed.geko_run_dir)
    for col in ("epoch", "samples_trained", "freeze_count", "light_count", "focus_count", "hard_count", "observations"):
        assert a[col].to_list() == b[col].to_list(), col


def test_empty_epochs_do_not_stop_training(tmp_path):
    """A plan with no draws (here a budget of 0) is an epoch without steps, not the end of training
    (plain Trainer stops at an empty epoch)."""
    t = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path, num_train_epochs=3), train_dataset=lm_items(16),
                      data_collator=PadCollator(), geko_args=GEKOSettings(config=QUIET, budget=0))
    assert t.train().global_step == 0
    summary = read_summary(t.geko_run_dir)
    assert summary["epoch"].to_list() == [1, 2, 3] and summary["samples_trained"].to_list() == [0, 0, 0]


def test_training_stops_when_mastered(tmp_path):
    everything_right = GEKOConfig(log_bucket_stats=False, freeze_confidence=0.0, freeze_quality=0.0,
                                  min_q_for_freeze=0.0)
    t = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path, num_train_epochs=3), train_dataset=lm_items(16),
                      data_collator=PadCollator(),
                      geko_args=GEKOSettings(config=everything_right, replacement=False,
                                             compute_correctness=lambda outputs, batch: torch.ones(batch["labels"].shape[0])))
    t.train()
    summary = read_summary(t.geko_run_dir)
    assert summary.height == 1 and summary["freeze_count"].to_list() == [16] and summary["mastered"].item()
    assert t.state.global_step == 2


def test_resume_from_a_checkpoint_without_geko_state_is_refused(tmp_path):
    plain = Trainer(model=tiny_gpt2(), args=hf_args(tmp_path, max_steps=1, save_strategy="steps", save_steps=1),
                    train_dataset=lm_items(16), data_collator=PadCollator())
    plain.train()
    trainer = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path, max_steps=1), train_dataset=lm_items(16),
                            data_collator=PadCollator(), geko_args=GEKOSettings(config=QUIET))
    with pytest.raises(InputError, match=GEKO_META_FILE):
        trainer.train(resume_from_checkpoint=str(tmp_path / "checkpoint-1"))


# --------------------------------------------------------------------------- drop-in use


class LabelFreeClassifier(torch.nn.Module):
    """A custom module whose forward takes no labels (HF's column removal would drop them)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.emb = torch.nn.Embedding(50, 16)
        self.head = torch.nn.Linear(16, 2)

    def forward(self, input_ids, attention_mask=None):
        return {"logits": self.head(self.emb(input_ids).mean(1))}


@pytest.mark.parametrize("remove_unused_columns", [True, False])
def test_column_removal_keeps_sample_ids_and_labels(tmp_path, remove_unused_columns):
    items = [{"input_ids": it["input_ids"], "labels": it["label"]} for it in cls_items(24)]
    if remove_unused_columns:  # a column the model does not take, which the collator cannot batch
        items = [{**it, "text": "x"} for it in items]
    trainer = GEKOHFTrainer(model=LabelFreeClassifier(), args=hf_args(tmp_path, num_train_epochs=1,
                            remove_unused_columns=remove_unused_columns), train_dataset=items, geko_args=GEKOSettings(config=QUIET))
    trainer.train()
    assert trainer.geko_store.column("times_seen").sum() == 24
    assert read_summary(trainer.geko_run_dir)["samples_trained"].to_list() == [24]


def test_same_arguments_as_trainer(tmp_path):
    """The one-class-name change: whatever Trainer accepts, GEKOHFTrainer accepts too."""
    def kwargs(out):
        model = tiny_bert()
        return {
            "model": model, "args": hf_args(out, num_train_epochs=1, eval_strategy="epoch"),
            "data_collator": None, "train_dataset": cls_items(16), "eval_dataset": cls_items(8, seed=3),
            "processing_class": None, "model_init": None, "compute_loss_func": None,
            "compute_metrics": lambda p: {"acc": float((p.predictions.argmax(-1) == p.label_ids).mean())},
            "callbacks": [TrainerCallback()], "optimizers": (torch.optim.SGD(model.parameters(), lr=0.1), None),
            "optimizer_cls_and_kwargs": None, "preprocess_logits_for_metrics": None,
        }

    plain = Trainer(**kwargs(tmp_path / "plain"))
    plain.train()
    geko = GEKOHFTrainer(**kwargs(tmp_path / "geko"), geko_args=GEKOSettings(config=QUIET))
    geko.train()
    assert geko.state.global_step == plain.state.global_step == 2
    assert "eval_acc" in geko.evaluate()
    assert read_summary(geko.geko_run_dir).height == 1

    # positional arguments, as Trainer(model, args, data_collator, train_dataset)
    pos = GEKOHFTrainer(tiny_gpt2(), hf_args(tmp_path / "pos", num_train_epochs=1), PadCollator(), lm_items(16),
                        geko_args=GEKOSettings(run_dir=tmp_path / "elsewhere", config=QUIET))
    pos.train()
    assert pos.geko_run_dir == tmp_path / "elsewhere"
    assert read_summary(tmp_path / "elsewhere")["samples_trained"].to_list() == [16]


def test_mixin_composes_with_another_trainer_subclass(tmp_path):
    seen: list[dict] = []

    class LoggingTrainer(Trainer):
        def log(self, logs, *args, **kwargs):
            seen.append(dict(logs))
            super().log(logs, *args, **kwargs)

    class GEKOLoggingTrainer(GEKOTrainerMixin, LoggingTrainer):
        pass

    t = GEKOLoggingTrainer(model=tiny_gpt2(), args=hf_args(tmp_path, num_train_epochs=2, logging_strategy="epoch"),
                           train_dataset=lm_items(16), data_collator=PadCollator(), geko_args=GEKOSettings(config=QUIET))
    t.train()
    assert t.geko_store.epoch == 2
    assert [r["geko_samples_trained"] for r in seen if "geko_samples_trained" in r] == [16, 16]


def test_bad_train_dataset_fails_at_construction(tmp_path):
    with pytest.raises(InputError, match="input_ids"):
        GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path), train_dataset=[{"text": "no ids"}])


# --------------------------------------------------------------------------- selection policies


def test_infobatch_selection_prunes_reweights_and_anneals(tmp_path):
    items = cls_items()
    t = GEKOHFTrainer(model=tiny_bert(), args=hf_args(tmp_path, num_train_epochs=4, learning_rate=5e-3),
                      train_dataset=items, geko_args=GEKOSettings(config=FAST, selection="infobatch"))
    t.train()
    trained = read_summary(t.geko_run_dir)["samples_trained"].to_list()
    assert trained[0] == 64 and trained[-1] == 64 and all(k < 64 for k in trained[1:3])
    # the training loss weighs each sample by the plan's loss weight (here: a re-weighted plan)
    store = t.geko_store
    w = np.where(np.arange(64) % 3 == 0, 2.0, 1.0).astype(np.float32)
    from geko_state import EpochPlan

    t.geko_sampler._plan = EpochPlan(  # a known re-weighted plan for the current epoch
        ids=np.arange(64, dtype=np.int64), seed=0, epoch=store.epoch, segment_ends=np.array([64]),
        phases=(None,), loss_weights=w)
    t.geko_sampler._ids = None
    t.model.train()
    ids = torch.arange(8)
    batch = {"input_ids": torch.stack([items[i]["input_ids"] for i in range(8)]),
             "labels": torch.tensor([items[i]["label"] for i in range(8)]), "sample_id": ids}
    with torch.no_grad():
        loss = t.compute_loss(t.model, batch)
        logits = t.model(input_ids=batch["input_ids"]).logits
    raw = torch.nn.functional.cross_entropy(logits, batch["labels"], reduction="none")
    assert float(loss) == pytest.approx(float((raw * torch.from_numpy(w[:8])).mean()), rel=1e-5)
    t.geko_tracker.flush()
    np.testing.assert_allclose(store.column("last_loss")[:8], raw.numpy(), rtol=1e-5)  # raw losses recorded


def test_baselines_do_not_stop_when_mastered_and_bad_selection_is_refused(tmp_path):
    everything_right = GEKOConfig(log_bucket_stats=False, freeze_confidence=0.0, freeze_quality=0.0,
                                  min_q_for_freeze=0.0)
    t = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path, num_train_epochs=3), train_dataset=lm_items(16),
                      data_collator=PadCollator(),
                      geko_args=GEKOSettings(config=everything_right, selection="uniform",
                                             compute_correctness=lambda outputs, batch: torch.ones(batch["labels"].shape[0])))
    t.train()
    assert read_summary(t.geko_run_dir)["samples_trained"].to_list() == [16, 16, 16]
    from geko_state.errors import ConfigError

    with pytest.raises(ConfigError, match="selection"):
        GEKOSettings(selection="greedy")
    with pytest.warns(DeprecationWarning), pytest.raises(ConfigError, match="geko_selection"):
        GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path), train_dataset=lm_items(16),
                      data_collator=PadCollator(), geko_selection="greedy")


def test_the_loose_geko_keywords_still_work_with_a_deprecation_warning(tmp_path):
    """GEKOHFTrainer(geko_<field>=...) of earlier versions: the same settings as geko_args=."""
    with pytest.warns(DeprecationWarning, match=r"geko_args=GEKOSettings\(budget=, config=, run_dir=\)"):
        old = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path / "old"), train_dataset=lm_items(16),
                            data_collator=PadCollator(), geko_config=QUIET, geko_budget=10,
                            geko_run_dir=tmp_path / "old_run")
    new = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path / "new"), train_dataset=lm_items(16),
                        data_collator=PadCollator(),
                        geko_args=GEKOSettings(config=QUIET, budget=10, run_dir=tmp_path / "old_run"))
    assert old.geko_args == new.geko_args and old.geko_run_dir == tmp_path / "old_run"
    with pytest.warns(DeprecationWarning):  # None was the old keywords' default for config and history
        nones = GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path / "nones"), train_dataset=lm_items(16),
                              data_collator=PadCollator(), geko_config=None, geko_history=None, geko_selection=None)
    assert nones.geko_args == GEKOSettings()
    from geko_state.errors import ConfigError

    with pytest.raises(ConfigError, match="not both"):
        GEKOHFTrainer(model=tiny_gpt2(), args=hf_args(tmp_path), train_dataset=lm_items(16),
                      data_collator=PadCollator(), geko_args=GEKOSettings(), geko_budget=10)
