"""A tiny offline GPT-2 model directory and SFT data files for the app tests (no hub access)."""
from __future__ import annotations

import random
from pathlib import Path

EOS, UNK = "[EOS]", "[UNK]"


def sft_rows(n: int, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        rows.append({"prompt": f"question : add {a} and {b} ? answer :", "response": f"{a + b} done",
                     "topic": "sum"})
    return rows


def make_model_dir(path: Path, *, n_embd: int = 32, n_layer: int = 2) -> Path:
    """save_pretrained of a random tiny GPT-2 with a word-level tokenizer trained here."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    texts = [str(v) for r in sft_rows(300) for v in r.values()]
    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=[UNK, EOS]))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, eos_token=EOS, bos_token=EOS)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=n_layer, n_head=2, n_embd=n_embd, vocab_size=len(fast), n_positions=64,
                     bos_token_id=fast.eos_token_id, eos_token_id=fast.eos_token_id,
                     pad_token_id=fast.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    fast.save_pretrained(path)
    return path


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
