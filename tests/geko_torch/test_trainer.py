import json
import sys

import numpy as np
import polars as pl
import pytest
import torch

from geko_state import GEKOConfig, HistoryConfig, StateStore, read_summary
from geko_state.errors import ConfigError, InputError
from geko_state.plots import MissingDependencyError
from geko_state.schema import COLUMN_NAMES, Bucket
from geko_torch.trainer import GEKOTrainer
from geko_torch.training_args import GEKOTrainingArgs

from .models import (
    TinyClassifier,
    cls_items,
    lm_items,
    tiny_bert_classifier,
    tiny_gpt2,
    tiny_llama,
)


def _args(tmp_path, name="run", **kw):
    base = {"output_dir": str(tmp_path / name), "num_epochs": 2, "batch_size": 8, "learning_rate": 5e-3, "warmup_steps": 2,
                "logging_steps": 1, "save_steps": 10_000, "eval_steps": 10_000, "dataloader_num_workers": 0,
                "report": False, "save_at_end": False}
    base.update(kw)
    return GEKOTrainingArgs(**base)


def _quiet_cfg(**kw):
    return GEKOConfig(log_bucket_stats=False, **kw)


def _state_bytes(store: StateStore) -> dict[str, bytes]:
    return {c: np.ascontiguousarray(store.column(c)).tobytes() for c in COLUMN_NAMES}


def _weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


# ---------------------------------------------------------------------- exact resume
def test_stopped_and_resumed_run_ends_bit_identical(tmp_path):
    items = lm_items(24)
    kw = {"num_epochs": 3, "gradient_accumulation_steps": 2, "seed": 7, "history": HistoryConfig(changed_only=True)}
    full = GEKOTrainer(tiny_gpt2(dropout=0.1), items, config=_quiet_cfg(), args=_args(tmp_path, "full", **kw))
    full.train()

    first = GEKOTrainer(tiny_gpt2(dropout=0.1), items, config=_quiet_cfg(), args=_args(tmp_path, "split", max_steps=3, **kw))
    out = first.train()  # stops after the first optimizer step of epoch 2 (2 steps per epoch)
    assert out["stopped_at_max_steps"] and (tmp_path / "split" / "checkpoint-3" / "trainer_state.json").is_file()
    first.close()
    # A different initialisation: everything must come from the checkpoint.
    resumed = GEKOTrainer(tiny_gpt2(seed=99, dropout=0.1), items, config=_quiet_cfg(), args=_args(tmp_path, "split", **kw))
    resumed.load_checkpoint(tmp_path / "split" / "checkpoint-3")
    assert resumed.global_step == 3 and resumed.store.epoch == 1 and resumed.sampler.global_position == 16
    resumed.train()

    a, b = _weights(full.model), _weights(resumed.model)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _state_bytes(full.store) == _state_bytes(resumed.store)
    assert full.global_step == resumed.global_step
    sa = read_summary(tmp_path / "full")
    sb = read_summary(tmp_path / "split")
    diff = [c for c in sa.columns if not sa[c].equals(sb[c])]
    assert diff == []
    for name in ("history/epoch=000002.parquet", "history/epoch=000003.parquet"):
        assert pl.read_parquet(tmp_path / "full" / name).equals(pl.read_parquet(tmp_path / "split" / name))
    # the log was trimmed to the checkpoint and continued: one line per step, no duplicates
    steps = [r["step"] for r in map(json.loads, (tmp_path / "split" / "trainer_log.jsonl").read_text().splitlines())
             if "learning_rate" in r]
    assert steps == list(range(1, resumed.global_step + 1))


def test_resume_into_another_output_dir_carries_the_run_history(tmp_path):
    items = cls_items(24)
    kw = {"num_epochs": 3, "seed": 1}
    first = GEKOTrainer(TinyClassifier(), items, config=_quiet_cfg(), args=_args(tmp_path, "a", max_steps=4, **kw))
    first.train()
    t = GEKOTrainer(TinyClassifier(), items, config=_quiet_cfg(), args=_args(tmp_path, "b", **kw))
    t.load_checkpoint(tmp_path / "a" / "checkpoint-4")
    t.train()
    assert read_summary(tmp_path / "b")["epoch"].to_list() == [1, 2, 3]


def test_checkpoint_of_another_dataset_is_refused(tmp_path):
    first = GEKOTrainer(TinyClassifier(), cls_items(24), config=_quiet_cfg(), args=_args(tmp_path, "a", max_steps=1))
    first.train()
    other = GEKOTrainer(TinyClassifier(), cls_items(30), config=_quiet_cfg(), args=_args(tmp_path, "b"))
    with pytest.raises(InputError, match="24 samples"):
        other.load_checkpoint(tmp_path / "a" / "checkpoint-1")
    with pytest.raises(InputError, match="not a GEKO checkpoint"):
        other.load_checkpoint(tmp_path / "a")
    with pytest.raises(InputError, match="no such checkpoint directory"):
        other.load_checkpoint(tmp_path / "a" / "checkpoint-99")


def test_resuming_a_finished_run_says_so(tmp_path):
    first = GEKOTrainer(TinyClassifier(), cls_items(16), config=_quiet_cfg(),
                        args=_args(tmp_path, "a", num_epochs=1, save_at_end=True))
    first.train()
    final = max((tmp_path / "a").glob("checkpoint-*"), key=lambda p: int(p.name.split("-")[1]))
    again = GEKOTrainer(TinyClassifier(), cls_items(16), config=_quiet_cfg(), args=_args(tmp_path, "a", num_epochs=1))
    again.load_checkpoint(final)
    with pytest.raises(InputError, match="final checkpoint of a finished run: there is nothing to resume"):
        again.train()
    again.close()


# ---------------------------------------------------------------------- GEKO behaviour
def test_samples_trained_per_epoch_shrink_as_samples_freeze(tmp_path):
    items = cls_items(64)
    cfg = _quiet_cfg(q_value_lr=0.5, use_curriculum=False, bucket_weights=(3.0, 1.0, 1.0))
    t = GEKOTrainer(TinyClassifier(), items, config=cfg,
                    args=_args(tmp_path, num_epochs=8, learning_rate=0.05, batch_size=16))
    m = t.train()
    summary = read_summary(tmp_path / "run")
    trained = summary["samples_trained"].to_list()
    assert trained[0] == 64 and min(trained) < 64
    assert m["samples_trained"] == sum(trained) and m["full_data_passes"] == 64 * 8
    assert m["compute_saved"] == pytest.approx(1 - sum(trained) / (64 * 8))
    frozen = t.get_frozen_samples()
    assert frozen.dtype == np.int64 and len(frozen) == t.store.bucket_counts()[Bucket.FREEZE] > 0
    hard = t.get_hard_samples()
    assert np.all(t.store.column("bucket")[hard] == int(Bucket.HARD))
    assert t.get_pruned_count() == 0
    report = t.get_efficiency_report()
    assert report.samples_trained == sum(trained) and "saved" in str(report)


def test_pruning_is_counted(tmp_path):
    cfg = _quiet_cfg(q_value_lr=0.5, use_curriculum=False, bucket_weights=(3.0, 1.0, 1.0), prune_frozen_after=1)
    t = GEKOTrainer(TinyClassifier(), cls_items(64), config=cfg,
                    args=_args(tmp_path, num_epochs=8, learning_rate=0.05, batch_size=16))
    t.train()
    assert t.get_pruned_count() == int(t.store.column("pruned").sum()) > 0


def test_header_summary_and_printed_figures_match_the_run(tmp_path, capsys):
    t = GEKOTrainer(TinyClassifier(), cls_items(32), eval_dataset=cls_items(16, seed=5), config=_quiet_cfg(),
                    args=_args(tmp_path, report=True, disable_progress_bar=True, save_at_end=True))
    m = t.train()
    out = capsys.readouterr().out
    for line in ("GEKO Training", "Samples           : 32", "Precision         : FP32", "Curriculum        : ON",
                 "[Epoch 1] Average Loss:", "[GEKO] Epoch 2 Partition:", "Training Complete",
                 f"Compute saved     : {100 * m['compute_saved']:.1f}%",
                 f"[GEKO] Checkpoint saved to {tmp_path / 'run' / ('checkpoint-' + str(t.global_step))}"):
        assert line in out
    assert (tmp_path / "run" / "plots").is_dir()


def test_eval_loop_matches_a_manual_computation(tmp_path):
    ev = cls_items(12, seed=9)
    t = GEKOTrainer(TinyClassifier(), cls_items(16), eval_dataset=ev, config=_quiet_cfg(),
                    args=_args(tmp_path, eval_batch_size=5))
    res = t.evaluate()
    x = torch.stack([i["input_ids"] for i in ev])
    y = torch.stack([i["labels"] for i in ev])
    with torch.no_grad():
        logits = t.model(x, torch.ones_like(x))["logits"]
    loss = torch.nn.functional.cross_entropy(logits, y)
    acc = (logits.argmax(-1) == y).float().mean()
    assert res["eval_loss"] == pytest.approx(float(loss), abs=1e-5)
    assert res["eval_accuracy"] == pytest.approx(float(acc)) and res["eval_samples"] == 12


# ---------------------------------------------------------------------- models and settings
def test_bert_classifier_and_llama_with_lora(tmp_path, capsys):
    from peft import LoraConfig

    GEKOTrainer(tiny_bert_classifier(), cls_items(16), config=_quiet_cfg(), args=_args(tmp_path, "bert")).train()
    base = tiny_llama()
    before = {k: v.clone() for k, v in base.state_dict().items()}
    lora = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM")
    t = GEKOTrainer(base, lm_items(16), config=_quiet_cfg(), lora_config=lora,
                    args=_args(tmp_path, "llama", report=True, disable_progress_bar=True, save_at_end=True))
    assert "[GEKO] LoRA applied" in capsys.readouterr().out
    assert t.param_counts.trainable < t.param_counts.total
    t.train()
    after = {k.replace(".base_layer", ""): v for k, v in t.model.get_base_model().state_dict().items()
             if "lora_" not in k}
    assert after.keys() == before.keys() and all(torch.equal(before[k], after[k]) for k in before)
    ckpt = tmp_path / "llama" / f"checkpoint-{t.global_step}"
    assert (ckpt / "adapter" / "adapter_config.json").is_file()


@pytest.mark.parametrize("kw", [{"bf16": True}, {"fp16": True}, {"gradient_checkpointing": True},
                                {"gradient_accumulation_steps": 3}])
def test_precision_and_efficiency_settings_train(tmp_path, kw):
    model = tiny_gpt2()
    t = GEKOTrainer(model, lm_items(16), config=_quiet_cfg(), args=_args(tmp_path, num_epochs=1, **kw))
    before = _weights(t.model)
    m = t.train()
    assert m["samples_trained"] == 16
    assert any(not torch.equal(before[k], v) for k, v in _weights(t.model).items())
    if kw.get("gradient_checkpointing"):
        assert getattr(t.model, "is_activation_checkpointing", None) or t.model.is_gradient_checkpointing
    if kw.get("fp16"):
        assert t.scaler is not None


def test_compile_failure_falls_back_to_eager(tmp_path, monkeypatch):
    class Broken(torch.nn.Module):
        def forward(self, *a, **k):
            raise RuntimeError("no compiler here")

    monkeypatch.setattr(torch, "compile", lambda model, **kw: Broken())
    t = GEKOTrainer(TinyClassifier(), cls_items(16), config=_quiet_cfg(), args=_args(tmp_path, compile_model=True))
    with pytest.warns(UserWarning, match="eager"):
        t.train()
    assert t._forward_model is t.model


def test_8bit_optimizer_without_bitsandbytes_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # absent, whatever this machine has
    with pytest.raises(MissingDependencyError, match="pip install bitsandbytes"):
        GEKOTrainer(TinyClassifier(), cls_items(16), args=_args(tmp_path, use_8bit_optimizer=True))


def test_save_total_limit_keeps_the_newest(tmp_path):
    t = GEKOTrainer(TinyClassifier(), cls_items(32), config=_quiet_cfg(),
                    args=_args(tmp_path, save_steps=1, save_total_limit=2, num_epochs=1))
    t.train()
    assert sorted(p.name for p in (tmp_path / "run").glob("checkpoint-*")) == ["checkpoint-3", "checkpoint-4"]


def test_model_without_logits_and_no_labels_are_clear_errors(tmp_path):
    class NoLogits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 2)

        def forward(self, input_ids):
            return {"loss": self.w.weight.sum()}

    with pytest.raises(InputError, match="logits"):
        GEKOTrainer(NoLogits(), cls_items(8), config=_quiet_cfg(), args=_args(tmp_path, "a")).train()
    items = [{"input_ids": torch.arange(6, 12)} for _ in range(8)]
    with pytest.raises(InputError, match="labels"):
        GEKOTrainer(TinyClassifier(), items, config=_quiet_cfg(), args=_args(tmp_path, "b")).train()


@pytest.mark.parametrize("kw, name", [
    ({"num_epochs": 0}, "num_epochs"), ({"batch_size": 0}, "batch_size"), ({"learning_rate": 0}, "learning_rate"),
    ({"bf16": True, "fp16": True}, "bf16 and fp16"), ({"warmup_steps": -1}, "warmup_steps"),
    ({"gradient_accumulation_steps": 0}, "gradient_accumulation_steps"), ({"budget": "lots"}, "budget"),
    ({"task": "regression"}, "task"), ({"token_accuracy": 1.5}, "token_accuracy"),
    ({"dataloader_num_workers": -2}, "dataloader_num_workers"), ({"max_grad_norm": float("nan")}, "max_grad_norm"),
    ({"save_at_end": "yes"}, "save_at_end"), ({"max_steps": 0}, "max_steps"),
])
def test_args_are_validated(kw, name):
    with pytest.raises(ConfigError, match=name):
        GEKOTrainingArgs(**kw)


def test_constructor_errors(tmp_path):
    with pytest.raises(InputError, match="nn.Module"):
        GEKOTrainer("model", cls_items(4))
    with pytest.raises(ConfigError, match="GEKOTrainingArgs"):
        GEKOTrainer(TinyClassifier(), cls_items(4), args={"num_epochs": 1})
    with pytest.raises(InputError, match="empty"):
        GEKOTrainer(TinyClassifier(), [], args=_args(tmp_path))
    with pytest.raises(InputError, match="input_ids"):
        GEKOTrainer(TinyClassifier(), [{"text": "a"}], args=_args(tmp_path))


def test_dataloader_workers_persist_across_epochs_and_match_in_process_loading(tmp_path):
    kw = {"num_epochs": 2, "seed": 3}
    inline = GEKOTrainer(TinyClassifier(), cls_items(24), config=_quiet_cfg(), args=_args(tmp_path, "a", **kw))
    inline.train()
    workers = GEKOTrainer(TinyClassifier(), cls_items(24), config=_quiet_cfg(),
                          args=_args(tmp_path, "b", dataloader_num_workers=1, dataloader_persistent_workers=True,
                                     dataloader_prefetch_factor=2, **kw))
    workers.train()
    assert workers._loader.num_workers == 1 and workers._loader.persistent_workers
    assert _state_bytes(inline.store) == _state_bytes(workers.store)
    a, b = _weights(inline.model), _weights(workers.model)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_warmup_defaults_to_a_share_of_the_planned_steps(tmp_path):
    items = cls_items(48)
    base = {"warmup_steps": None, "num_epochs": 10, "batch_size": 4}  # 12 steps an epoch, 120 planned
    t = GEKOTrainer(TinyClassifier(), items, config=_quiet_cfg(use_curriculum=False), args=_args(tmp_path, "a", **base))
    assert t.warmup_steps == 6  # 0.05 x 120: a small run reaches its learning rate
    assert t._lr_factor(0) == pytest.approx(1 / 6) and t._lr_factor(5) == 1.0
    t.close()
    t = GEKOTrainer(TinyClassifier(), items, config=_quiet_cfg(),
                    args=_args(tmp_path, "b", **base, warmup_ratio=0.25, max_steps=20, gradient_accumulation_steps=2))
    assert t.warmup_steps == 5  # of max_steps
    t.close()
    t = GEKOTrainer(TinyClassifier(), items, config=_quiet_cfg(), args=_args(tmp_path, "c", **{**base, "warmup_steps": 7}))
    assert t.warmup_steps == 7
    t.close()
    with pytest.raises(ConfigError, match="warmup_ratio"):
        GEKOTrainingArgs(warmup_ratio=1.0)
