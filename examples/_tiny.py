"""Tiny offline models and data for the examples: built from configs, nothing downloaded."""
from __future__ import annotations

import torch


def tiny_gpt2(vocab: int = 32, seed: int = 0):
    """A 2-layer GPT-2 with random weights (a stand-in for your pretrained model)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    return GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=vocab, n_positions=64,
                                      bos_token_id=0, eos_token_id=0, pad_token_id=0))


def copy_items(n: int = 128, vocab: int = 32, seed: int = 0) -> list[dict]:
    """Toy SFT items: a 3-token prompt (masked from the loss) and a response that repeats it."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        prompt = torch.randint(1, vocab, (3,), generator=g)
        ids = torch.cat([prompt, prompt])
        labels = ids.clone()
        labels[:3] = -100
        items.append({"input_ids": ids, "labels": labels})
    return items
