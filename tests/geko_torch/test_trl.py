"""GEKOTrainerMixin composed with TRL's SFTTrainer: ``class GEKOSFT(GEKOTrainerMixin, SFTTrainer)``."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from datasets import Dataset
from tokenizers import Tokenizer, models, pre_tokenizers, trainers
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
from trl import SFTConfig, SFTTrainer

from geko_state import GEKOConfig, StateStore, read_summary
from geko_state.errors import ConfigError
from geko_torch.hf import GEKOTrainerMixin
from geko_torch.session import GEKOSettings

N = 24


class GEKOSFT(GEKOTrainerMixin, SFTTrainer):
    """What a TRL user writes."""


def _rows(n: int = N, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        rows.append({"prompt": f"add {a} and {b} ?", "completion": f" {a + b} done"})
    return rows


def _tokenizer(rows: list[dict]) -> PreTrainedTokenizerFast:
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator([r["prompt"] + r["completion"] for r in rows],
                            trainers.WordLevelTrainer(special_tokens=["[UNK]", "[EOS]", "[PAD]"]))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]", pad_token="[PAD]")


def _model(tok: PreTrainedTokenizerFast) -> GPT2LMHeadModel:
    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tok), n_positions=64,
                                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id))


def _config(tmp_path, **kw) -> SFTConfig:
    base = {"output_dir": str(tmp_path / "out"), "num_train_epochs": 2, "per_device_train_batch_size": 4,
            "report_to": [], "use_cpu": True, "logging_steps": 1, "save_strategy": "no", "max_length": 32,
            "seed": 0, "dataloader_num_workers": 0, "learning_rate": 5e-3}
    return SFTConfig(**{**base, **kw})


def test_sft_trainer_with_the_mixin_trains_one_row_per_sample(tmp_path):
    rows = _rows()
    tok = _tokenizer(rows)
    trainer = GEKOSFT(model=_model(tok), args=_config(tmp_path), train_dataset=Dataset.from_list(rows),
                      processing_class=tok, geko_args=GEKOSettings(config=GEKOConfig(log_bucket_stats=False)))
    trainer.train()
    run = tmp_path / "out" / "geko"
    summary = read_summary(run)
    assert summary["epoch"].to_list() == [1, 2]
    with StateStore.open(run / "state.arrow", mode="r") as store:
        seen = store.column("times_seen").copy()
        losses = store.column("last_loss").copy()
    # every row is one sample: each of the N ids was observed in the first (full) epoch
    assert seen.shape == (N,) and (seen >= 1).all()
    assert int(seen.sum()) == int(summary["samples_trained"].sum())
    assert np.isfinite(losses).all() and (losses > 0).all()


@pytest.mark.parametrize("option", ["packing", "padding_free"])
def test_row_merging_is_refused_with_the_reason(tmp_path, option):
    rows = _rows()
    tok = _tokenizer(rows)
    with pytest.raises(ConfigError, match=f"{option}=True merges several samples into one training row"):
        GEKOSFT(model=_model(tok), args=_config(tmp_path, **{option: True}), train_dataset=Dataset.from_list(rows),
                processing_class=tok)
