"""Built-in offline fine-tuning tasks for ``geko demo`` and ``benchmarks/bench_training.py``.

Each task is shaped like real fine-tuning: a small model is first trained on a *base* task, then
fine-tuned on a new task whose training set mixes easy, hard and mislabeled samples; the eval set
is clean (no mislabeled samples). Everything is generated from a seed, offline, in seconds; the
models are built from configs (no hub access).

Tasks are registered in :data:`TASKS` by name; :func:`build_task` returns a :class:`TaskData`.
"""
from __future__ import annotations

import enum
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geko_state.errors import InputError
from geko_state.validate import check_int

from .data import PadCollator
from .training_args import GEKOTrainingArgs

__all__ = ["TASKS", "Metric", "SampleKind", "TaskData", "TaskSpec", "build_task", "pretrain"]


class SampleKind(enum.IntEnum):
    """What a fine-tuning sample was generated as (kept for analysis, never shown to GEKO)."""

    EASY = 0
    HARD = 1
    MISLABELED = 2


@dataclass(frozen=True)
class Metric:
    """The task's eval quality: a key of ``GEKOTrainer.evaluate()``'s result and its direction.

    ``tolerance``: how far from uniform training's final value still counts as equal quality
    (DESIGN section 5: 0.5 points of accuracy, or 1% of eval loss).
    """

    key: str
    higher_is_better: bool
    tolerance: float
    relative: bool = False

    def reached(self, value: float, target: float) -> bool:
        """Whether ``value`` is at least as good as ``target`` within the tolerance."""
        slack = self.tolerance * abs(target) if self.relative else self.tolerance
        return value >= target - slack if self.higher_is_better else value <= target + slack


ACCURACY = Metric("eval_accuracy", higher_is_better=True, tolerance=0.005)
EVAL_LOSS = Metric("eval_loss", higher_is_better=False, tolerance=0.01, relative=True)


@dataclass
class TaskData:
    """A base-trained model and the fine-tuning data.

    ``train``/``eval``: lists of dict items (``input_ids``, ``attention_mask``, ``labels``);
    ``kinds``: int8 ``[N]`` :class:`SampleKind` of each training sample.
    """

    name: str
    model: torch.nn.Module
    train: list[dict]
    eval: list[dict]
    kinds: np.ndarray
    metric: Metric
    task: str  # "classification" or "causal_lm": the trainer's task
    learning_rate: float
    batch_size: int
    epochs: int
    base_seconds: float = 0.0

    def training_args(self, output_dir: str | os.PathLike, *, seed: int, **overrides: Any) -> GEKOTrainingArgs:
        """The settings every comparison run of this task shares (demo and benchmark alike): the
        task's batch size, LR and epochs, 50 warmup steps, eval after every epoch only, quiet.
        ``overrides``: any other :class:`GEKOTrainingArgs` field (``selection``, ``num_epochs``, ...)."""
        settings: dict[str, Any] = {
            "output_dir": str(output_dir), "num_epochs": self.epochs, "batch_size": self.batch_size,
            "learning_rate": self.learning_rate, "warmup_steps": 50, "seed": seed, "task": self.task,
            "logging_steps": 10**9, "save_steps": 10**9, "eval_steps": 10**9, "save_at_end": False,
            "report": False, "dataloader_num_workers": 0,
        }
        settings.update(overrides)
        return GEKOTrainingArgs(**settings)


@dataclass(frozen=True)
class TaskSpec:
    name: str
    description: str
    build: Callable[..., TaskData]


def pretrain(model: torch.nn.Module, items: list[dict], *, steps: int, batch_size: int, lr: float,
             seed: int) -> torch.nn.Module:
    """Train ``model`` on ``items`` with a plain AdamW loop (the base task). Returns it in eval mode."""
    g = torch.Generator().manual_seed(seed)
    collate = PadCollator()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    # Warmup then cosine decay: tiny transformers trained at a flat high LR often stall.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: min(1.0, (s + 1) / 100) * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps)))
    model.train()
    for _ in range(steps):
        idx = torch.randint(0, len(items), (batch_size,), generator=g).tolist()
        batch = collate([items[i] for i in idx])
        labels = batch.pop("labels")
        out = model(**batch)
        logits = out["logits"] if isinstance(out, dict) else out.logits
        if logits.ndim == 3:  # causal LM: next-token loss over the label tokens
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].reshape(-1, logits.shape[-1]), labels[:, 1:].reshape(-1), ignore_index=-100)
        else:
            loss = torch.nn.functional.cross_entropy(logits, labels)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
    model.eval()
    return model


def _kinds(n: int, hard: float, mislabeled: float, rng: np.random.Generator) -> np.ndarray:
    u = rng.random(n)
    kinds = np.full(n, SampleKind.EASY, dtype=np.int8)
    kinds[u < hard + mislabeled] = SampleKind.HARD
    kinds[u < mislabeled] = SampleKind.MISLABELED
    return kinds


def _splits(sample: Callable[[int], dict], n: int, n_eval: int, hard: float, mislabeled: float,
            rng: np.random.Generator) -> tuple[list[dict], list[dict], np.ndarray]:
    """Training items (with mislabeled ones) and a clean eval set with the same easy/hard mix."""
    kinds = _kinds(n, hard, mislabeled, rng)
    train = [sample(int(k)) for k in kinds]
    eval_ = [sample(int(k)) for k in _kinds(n_eval, hard / (1 - mislabeled), 0.0, rng)]
    return train, eval_, kinds


def _wrong_label(y: int, classes: int, rng: np.random.Generator) -> int:
    """A class other than ``y``, uniformly."""
    return int((y + 1 + rng.integers(0, classes - 1)) % classes)


# ---------------------------------------------------------------------- topics (classification)
_T_VOCAB, _T_LEN, _T_TOPICS, _T_CLASSES, _T_KEYS = 256, 24, 8, 4, 20


def _topic_item(rng: np.random.Generator, topic: int, n_key: int, distract: int, other: int, label: int) -> dict:
    """``n_key`` keywords of ``topic``, ``distract`` of ``other``, the rest generic tokens."""
    generic = rng.integers(_T_TOPICS * _T_KEYS + 1, _T_VOCAB, _T_LEN)
    toks = generic.copy()
    pos = rng.permutation(_T_LEN)
    toks[pos[:n_key]] = 1 + topic * _T_KEYS + rng.integers(0, _T_KEYS, n_key)
    toks[pos[n_key:n_key + distract]] = 1 + other * _T_KEYS + rng.integers(0, _T_KEYS, distract)
    ids = torch.as_tensor(toks, dtype=torch.int64)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.tensor(label)}


def _topics(seed: int, n: int = 3000, n_eval: int = 1000, hard: float = 0.25, mislabeled: float = 0.08,
            base_steps: int = 300) -> TaskData:
    """A BERT-style encoder learns to tell 8 topics apart from keywords (base task), then is fine-tuned
    to 4 new classes (each a pair of topics, in a new order). Easy samples carry 5 keywords of their
    topic; hard ones 2, plus one keyword of a topic of another class; mislabeled ones are easy samples
    with a wrong class."""
    from transformers import BertConfig, BertForSequenceClassification

    rng = np.random.default_rng([seed, 1])
    # Fine-tune classes group topics in pairs the base task never grouped.
    topic_class = rng.permutation(np.arange(_T_TOPICS) % _T_CLASSES)

    def sample(kind: int) -> dict:
        topic = int(rng.integers(0, _T_TOPICS))
        y = int(topic_class[topic])
        other = int(rng.choice(np.flatnonzero(topic_class != y)))
        if kind == SampleKind.HARD:
            return _topic_item(rng, topic, 2, 1, other, y)
        item = _topic_item(rng, topic, 5, 0, other, y)
        if kind == SampleKind.MISLABELED:
            item["labels"] = torch.tensor(_wrong_label(y, _T_CLASSES, rng))
        return item

    train, eval_, kinds = _splits(sample, n, n_eval, hard, mislabeled, rng)

    base = []
    for _ in range(2000):
        t = int(rng.integers(0, _T_TOPICS))
        base.append(_topic_item(rng, t, int(rng.integers(2, 6)), 0, 0, t))
    torch.manual_seed(seed)
    cfg = BertConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                     vocab_size=_T_VOCAB, max_position_embeddings=_T_LEN, num_labels=_T_TOPICS,
                     hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.0)
    model = pretrain(BertForSequenceClassification(cfg), base, steps=base_steps, batch_size=32, lr=2e-3,
                     seed=seed)
    # A new head for the fine-tuning classes, as when fine-tuning a pretrained encoder.
    torch.manual_seed(seed + 1)
    model.classifier = torch.nn.Linear(cfg.hidden_size, _T_CLASSES)
    model.config.num_labels = _T_CLASSES
    model.num_labels = _T_CLASSES
    return TaskData("topics", model, train, eval_, kinds, ACCURACY, "classification",
                    learning_rate=1e-3, batch_size=32, epochs=8)


# ---------------------------------------------------------------------- rules (causal LM SFT)
_R_PAD, _R_SEP, _R_A, _R_B, _R_FIRST = 0, 1, 2, 3, 4
_R_VOCAB = 36  # symbols 4..35


def _rule_item(prompt: np.ndarray, response: np.ndarray, flag: int) -> dict:
    ids = np.concatenate([[flag], prompt, [_R_SEP], response, [_R_PAD]])
    t = torch.as_tensor(ids, dtype=torch.int64)
    labels = t.clone()
    labels[: len(prompt) + 2] = -100  # the prompt (flag, symbols, separator) is not trained on
    return {"input_ids": t, "attention_mask": torch.ones_like(t), "labels": labels}


def _rules(seed: int, n: int = 3000, n_eval: int = 600, hard: float = 0.25, mislabeled: float = 0.08,
           base_steps: int = 1000) -> TaskData:
    """A tiny GPT-2 learns to copy symbol strings (base task), then is fine-tuned (SFT, prompt
    masked) on two rules marked by a flag token, each mapping every symbol through its own fixed
    substitution: the common rule is easy, the rare one (a quarter of the samples) is hard, as the
    model sees it far less often; mislabeled samples have a random
    response. Quality is the eval loss on clean samples of both rules."""
    from transformers import GPT2Config, GPT2LMHeadModel

    rng = np.random.default_rng([seed, 2])
    n_sym = _R_VOCAB - _R_FIRST
    subst = _R_FIRST + rng.permutation(n_sym)
    subst_b = _R_FIRST + rng.permutation(n_sym)

    def sample(kind: int) -> dict:
        k = int(rng.integers(3, 7))
        x = rng.integers(_R_FIRST, _R_VOCAB, k)
        mapped = subst[x - _R_FIRST]
        if kind == SampleKind.HARD:
            return _rule_item(x, subst_b[x - _R_FIRST], _R_B)
        if kind == SampleKind.MISLABELED:
            return _rule_item(x, rng.integers(_R_FIRST, _R_VOCAB, k), _R_A)
        return _rule_item(x, mapped, _R_A)

    train, eval_, kinds = _splits(sample, n, n_eval, hard, mislabeled, rng)

    base = []
    for _ in range(2000):
        x = rng.integers(_R_FIRST, _R_VOCAB, int(rng.integers(3, 7)))
        item = _rule_item(x, x, _R_A)
        item["labels"] = item["input_ids"].clone()  # plain language modelling on copies
        base.append(item)
    torch.manual_seed(seed)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=64, vocab_size=_R_VOCAB, n_positions=32, bos_token_id=_R_PAD,
                     eos_token_id=_R_PAD, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    model = pretrain(GPT2LMHeadModel(cfg), base, steps=base_steps, batch_size=32, lr=3e-3, seed=seed)
    return TaskData("rules", model, train, eval_, kinds, EVAL_LOSS, "causal_lm",
                    learning_rate=1e-3, batch_size=32, epochs=8)


# ---------------------------------------------------------------------- clusters (plain nn.Module)
class ClusterMLP(torch.nn.Module):
    """An MLP over a feature vector carried in ``input_ids`` (float32), returns ``{"logits"}``."""

    def __init__(self, dim: int, hidden: int, classes: int) -> None:
        super().__init__()
        self.body = torch.nn.Sequential(torch.nn.Linear(dim, hidden), torch.nn.GELU(),
                                        torch.nn.Linear(hidden, hidden), torch.nn.GELU())
        self.head = torch.nn.Linear(hidden, classes)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> dict:
        return {"logits": self.head(self.body(input_ids))}


_C_DIM, _C_CENTRES, _C_CLASSES = 32, 24, 6


def _clusters(seed: int, n: int = 4000, n_eval: int = 2000, hard: float = 0.3, mislabeled: float = 0.08,
              base_steps: int = 300) -> TaskData:
    """An MLP learns which of 24 Gaussian clusters a point comes from (base task), then is fine-tuned
    to 6 classes (groups of clusters). Easy points lie near their centre; hard points lie between
    two centres of different classes (slightly nearer their own); mislabeled points are easy points
    with a wrong class."""
    rng = np.random.default_rng([seed, 3])
    centres = rng.normal(0, 1, (_C_CENTRES, _C_DIM)) * 2.0 / math.sqrt(_C_DIM) * 3
    cls_of = rng.permutation(np.arange(_C_CENTRES) % _C_CLASSES)

    def point(kind: int) -> tuple[np.ndarray, int]:
        c = int(rng.integers(0, _C_CENTRES))
        y = int(cls_of[c])
        if kind == SampleKind.HARD:
            o = int(rng.choice(np.flatnonzero(cls_of != y)))
            t = rng.uniform(0.52, 0.6)
            x = t * centres[c] + (1 - t) * centres[o] + rng.normal(0, 0.3, _C_DIM) / math.sqrt(_C_DIM) * 3
        else:
            x = centres[c] + rng.normal(0, 0.5, _C_DIM) / math.sqrt(_C_DIM) * 3
            if kind == SampleKind.MISLABELED:
                y = _wrong_label(y, _C_CLASSES, rng)
        return x.astype(np.float32), y

    def item(x: np.ndarray, y: int) -> dict:
        return {"input_ids": torch.from_numpy(x), "labels": torch.tensor(y)}

    train, eval_, kinds = _splits(lambda k: item(*point(k)), n, n_eval, hard, mislabeled, rng)

    base = []
    for _ in range(3000):
        c = int(rng.integers(0, _C_CENTRES))
        x = centres[c] + rng.normal(0, 0.5, _C_DIM) / math.sqrt(_C_DIM) * 3
        base.append(item(x.astype(np.float32), c))
    torch.manual_seed(seed)
    model = pretrain(ClusterMLP(_C_DIM, 64, _C_CENTRES), base, steps=base_steps, batch_size=64, lr=3e-3,
                     seed=seed)
    torch.manual_seed(seed + 1)
    model.head = torch.nn.Linear(64, _C_CLASSES)
    return TaskData("clusters", model, train, eval_, kinds, ACCURACY, "classification",
                    learning_rate=5e-4, batch_size=32, epochs=8)


TASKS: dict[str, TaskSpec] = {
    spec.name: spec
    for spec in (
        TaskSpec("rules", "causal-LM SFT on a tiny GPT-2 (transformers): two rules, one rare", _rules),
        TaskSpec("topics", "sequence classification with a tiny BERT (transformers): new classes", _topics),
        TaskSpec("clusters", "an MLP on Gaussian clusters (plain nn.Module): new class grouping", _clusters),
    )
}


def build_task(name: str, seed: int = 0, **sizes: int) -> TaskData:
    """Generate task ``name`` (see :data:`TASKS`) and train its base model; deterministic in ``seed``.

    ``sizes`` override the task's defaults (``n``, ``n_eval``, ``base_steps``, shares ``hard``,
    ``mislabeled``).
    """
    import time

    if name not in TASKS:
        raise InputError(f"unknown task {name!r}; expected one of {sorted(TASKS)}")
    check_int(seed, "seed", 0)
    t0 = time.perf_counter()
    data = TASKS[name].build(seed, **sizes)
    data.base_seconds = time.perf_counter() - t0
    return data
