"""Tiny real models and datasets for the geko_torch tests (built from configs: no hub access)."""
from __future__ import annotations

import torch

from geko_state import GEKOConfig


def tiny_gpt2(seed: int = 0, vocab: int = 101, dropout: float = 0.0):
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=vocab, n_positions=64, bos_token_id=0,
                     eos_token_id=0, resid_pdrop=dropout, embd_pdrop=dropout, attn_pdrop=dropout)
    return GPT2LMHeadModel(cfg)


def tiny_llama(seed: int = 0, vocab: int = 101):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                      num_key_value_heads=2, vocab_size=vocab, max_position_embeddings=64,
                      bos_token_id=0, eos_token_id=0, pad_token_id=0)
    return LlamaForCausalLM(cfg)


def tiny_bert_classifier(seed: int = 0, vocab: int = 50, num_labels: int = 2):
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(seed)
    cfg = BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     vocab_size=vocab, max_position_embeddings=64, num_labels=num_labels,
                     hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    return BertForSequenceClassification(cfg)


class TinyClassifier(torch.nn.Module):
    """A custom nn.Module (not transformers): mean of token embeddings -> linear head, returns a
    dict with logits."""

    def __init__(self, vocab: int = 50, dim: int = 16, num_labels: int = 2, seed: int = 0, dropout: float = 0.0):
        super().__init__()
        torch.manual_seed(seed)
        self.emb = torch.nn.Embedding(vocab, dim)
        self.drop = torch.nn.Dropout(dropout)
        self.head = torch.nn.Linear(dim, num_labels)

    def forward(self, input_ids, attention_mask=None):
        h = self.emb(input_ids)
        if attention_mask is not None:
            h = h * attention_mask.unsqueeze(-1)
            h = h.sum(1) / attention_mask.sum(1, keepdim=True).clamp(min=1)
        else:
            h = h.mean(1)
        return {"logits": self.head(self.drop(h))}


def lm_items(n: int = 48, seed: int = 1, vocab: int = 101, prompt: int = 2) -> list[dict]:
    """Random token sequences of varying length; the first ``prompt`` tokens are masked (-100)."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for _ in range(n):
        k = int(torch.randint(4, 12, (1,), generator=g))
        ids = torch.randint(1, vocab, (k,), generator=g)
        labels = ids.clone()
        labels[:prompt] = -100
        items.append({"input_ids": ids, "labels": labels})
    return items


def cls_items(n: int = 64, seed: int = 1, vocab: int = 50, length: int = 8, noise: float = 0.0) -> list[dict]:
    """Easy task: label 1 when token 5 is in the sequence. ``noise`` flips that share of labels."""
    g = torch.Generator().manual_seed(seed)
    items = []
    for i in range(n):
        ids = torch.randint(6, vocab, (length,), generator=g)
        y = i % 2
        if y:
            ids[int(torch.randint(0, length, (1,), generator=g))] = 5
        if noise and float(torch.rand(1, generator=g)) < noise:
            y = 1 - y
        items.append({"input_ids": ids, "attention_mask": torch.ones(length, dtype=torch.int64),
                      "labels": torch.tensor(y)})
    return items


# Freezes learnable samples from the second epoch on, so GEKO's epochs shrink and its plans depend on
# the state.
SHRINKING = GEKOConfig(log_bucket_stats=False, use_curriculum=False, bucket_weights=(3, 2, 1), q_value_lr=0.5,
                       freeze_confidence=0.6, freeze_quality=0.5, min_q_for_freeze=0.5)
