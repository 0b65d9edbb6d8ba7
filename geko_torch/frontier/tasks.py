"""The frontier's real fine-tuning tasks: pretrained models, WordNet 3.0's human-written glosses.

* ``wordnet-supersense``: all-MiniLM-L6-v2 (BERT, 22.7M parameters) classifies a noun's gloss into
  its lexicographer file (26 classes: ``noun.animal``, ``noun.act``, ...). Eval metric: accuracy.
* ``wordnet-definitions``: SmolLM2-135M-Instruct answers ``What does the noun "X" mean?`` with the
  gloss (supervised fine-tuning, chat template, prompt masked from the labels). Eval metric: loss.
  To keep CPU cost sane only the top ``train_layers`` decoder layers train; the frozen layers below
  them see the same input every epoch, so their output is computed once and the items carry it as
  ``inputs_embeds`` (the model keeps only its top layers). The loss and gradients are exactly those
  of the full model with the lower layers frozen.

The data split and the noise are fixed by ``data_seed`` (the training seed varies per run, so
policies compare on the same samples). Noise goes into the training split only: symmetric label
flips for classification, shuffled responses for SFT; ``TaskData.kinds`` marks the corrupted
samples ``MISLABELED``. Registered by name in :data:`FRONTIER_TASKS`.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from geko_state.errors import InputError

from ..tasks import ACCURACY, EVAL_LOSS, SampleKind, TaskData
from .noise import flip_labels, shuffle_targets
from .resources import minilm_dir, smollm2_dir
from .wordnet import Synset, noun_synsets

__all__ = [
    "FRONTIER_TASKS", "FrontierTask", "TaskSize", "build_frontier_task", "cache_lower_layers", "definition_prompt",
    "keep_top_layers",
]


@dataclass(frozen=True)
class TaskSize:
    """A task's split sizes and training settings. ``epochs``: the most epochs any policy trains."""

    n_train: int
    n_eval: int
    epochs: int
    batch_size: int
    learning_rate: float
    max_length: int


@dataclass(frozen=True)
class FrontierTask:
    name: str
    description: str
    build: Callable[..., TaskData]
    full: TaskSize
    quick: TaskSize


def _split(synsets: list[Synset], n_train: int, n_eval: int, rng: np.random.Generator
           ) -> tuple[list[Synset], list[Synset]]:
    if n_train + n_eval > len(synsets):
        raise InputError(f"asked for {n_train} + {n_eval} samples, WordNet has {len(synsets)} usable synsets")
    order = rng.permutation(len(synsets))
    return [synsets[i] for i in order[:n_train]], [synsets[i] for i in order[n_train:n_train + n_eval]]


def _kinds(n: int, corrupted: np.ndarray) -> np.ndarray:
    kinds = np.full(n, SampleKind.EASY, dtype=np.int8)
    kinds[corrupted] = SampleKind.MISLABELED
    return kinds


# ------------------------------------------------------------------------------ supersense
def _supersense(size: TaskSize, noise: float, data_seed: int) -> TaskData:
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    synsets = noun_synsets()
    classes = sorted({s.lexname for s in synsets})
    index = {name: i for i, name in enumerate(classes)}
    rng = np.random.default_rng([data_seed, 14, 1])
    train, eval_ = _split(synsets, size.n_train, size.n_eval, rng)
    clean = np.array([index[s.lexname] for s in train], dtype=np.int64)
    labels, flipped = flip_labels(clean, len(classes), noise, rng)
    path = minilm_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def items(rows: list[Synset], ys: np.ndarray) -> list[dict]:
        enc = tokenizer([s.definition for s in rows], truncation=True, max_length=size.max_length)
        return [{"input_ids": torch.tensor(ids), "attention_mask": torch.tensor(mask), "labels": torch.tensor(int(y))}
                for ids, mask, y in zip(enc["input_ids"], enc["attention_mask"], ys)]

    torch.manual_seed(data_seed)  # the new classification head
    model = AutoModelForSequenceClassification.from_pretrained(
        path, num_labels=len(classes), id2label=dict(enumerate(classes)), label2id=index)
    model.eval()
    eval_labels = np.array([index[s.lexname] for s in eval_], dtype=np.int64)
    return TaskData("wordnet-supersense", model, items(train, labels), items(eval_, eval_labels),
                    _kinds(len(train), flipped), ACCURACY, "classification",
                    learning_rate=size.learning_rate, batch_size=size.batch_size, epochs=size.epochs)


# ------------------------------------------------------------------------------ definitions
def definition_prompt(word: str) -> str:
    return f'What does the noun "{word}" mean?'


def _response(definition: str, max_words: int) -> str:
    words = definition.split()
    return " ".join(words[:max_words])


def cache_lower_layers(model: torch.nn.Module, items: list[dict], cut: int, batch_size: int = 32) -> None:
    """Replace each causal-LM item's ``input_ids`` by ``inputs_embeds``: the hidden state entering
    decoder layer ``cut`` of ``model`` (a transformers decoder-only model), float32 ``[T, d]``."""
    from ..data import PadCollator

    collate = PadCollator()
    with torch.inference_mode():
        for start in range(0, len(items), batch_size):
            chunk = items[start:start + batch_size]
            batch = collate([{"input_ids": it["input_ids"], "attention_mask": it["attention_mask"]} for it in chunk])
            out = model.model(**batch, output_hidden_states=True, use_cache=False)
            hidden = out.hidden_states[cut]
            for it, h, n in zip(chunk, hidden, batch["attention_mask"].sum(1).tolist()):
                it["inputs_embeds"] = h[:n].clone()
                del it["input_ids"]


def keep_top_layers(model: torch.nn.Module, keep: int) -> torch.nn.Module:
    """``model`` with only its top ``keep`` decoder layers, the only trainable part with the final
    norm; it then takes the ``inputs_embeds`` of :func:`cache_lower_layers` (cut = layers - keep)."""
    layers = list(model.model.layers)
    if not 0 < keep <= len(layers):
        raise InputError(f"keep must be in 1..{len(layers)}, got {keep}")
    model.model.layers = torch.nn.ModuleList(layers[len(layers) - keep:])
    # The kept layers index a KV cache by their original layer_idx: training needs no cache.
    model.config.use_cache = False
    model.requires_grad_(False)
    for p in [*model.model.layers.parameters(), *model.model.norm.parameters()]:
        p.requires_grad_(True)
    return model


def _definitions(size: TaskSize, noise: float, data_seed: int, train_layers: int = 2) -> TaskData:
    import polars as pl
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..text_data import tokenize_chat

    # One-word nouns keep prompts short; the definition is the response, cut to max_length words.
    synsets = [s for s in noun_synsets() if " " not in s.words[0]]
    rng = np.random.default_rng([data_seed, 14, 2])
    train, eval_ = _split(synsets, size.n_train, size.n_eval, rng)
    source, shuffled = shuffle_targets(len(train), noise, rng)
    path = smollm2_dir()
    tokenizer = AutoTokenizer.from_pretrained(path)

    def items(rows: list[Synset], responses: list[str]) -> list[dict]:
        chats = [[{"role": "user", "content": definition_prompt(s.words[0])}, {"role": "assistant", "content": r}]
                 for s, r in zip(rows, responses)]
        data = tokenize_chat(pl.DataFrame({"messages": chats}), tokenizer, messages_field="messages",
                             max_length=4 * size.max_length + 64, progress=False, source="wordnet-definitions")
        return [dict(data[i]) for i in range(len(data))]

    answers = [_response(s.definition, size.max_length) for s in train]
    train_items = items(train, [answers[j] for j in source])
    eval_items = items(eval_, [_response(s.definition, size.max_length) for s in eval_])
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model.eval()
    cache_lower_layers(model, train_items + eval_items, len(model.model.layers) - train_layers)
    keep_top_layers(model, train_layers)
    return TaskData("wordnet-definitions", model, train_items, eval_items, _kinds(len(train), shuffled),
                    EVAL_LOSS, "causal_lm", learning_rate=size.learning_rate, batch_size=size.batch_size,
                    epochs=size.epochs)


FRONTIER_TASKS: dict[str, FrontierTask] = {
    t.name: t
    for t in (
        FrontierTask("wordnet-supersense", "all-MiniLM-L6-v2 classifies WordNet noun glosses into 26 lexicographer files",
                     _supersense,
                     full=TaskSize(2000, 1000, epochs=4, batch_size=32, learning_rate=1e-4, max_length=40),
                     quick=TaskSize(400, 300, epochs=3, batch_size=32, learning_rate=1e-4, max_length=40)),
        FrontierTask("wordnet-definitions", "SmolLM2-135M-Instruct learns to define WordNet nouns (SFT, top 2 layers)",
                     _definitions,
                     full=TaskSize(600, 200, epochs=3, batch_size=16, learning_rate=2e-4, max_length=20),
                     quick=TaskSize(120, 60, epochs=3, batch_size=16, learning_rate=2e-4, max_length=20)),
    )
}


def build_frontier_task(name: str, *, noise: float = 0.0, quick: bool = False, data_seed: int = 0,
                        size: TaskSize | None = None) -> TaskData:
    """Build task ``name`` of :data:`FRONTIER_TASKS` at label-noise rate ``noise`` (0.1 = 10%)."""
    if name not in FRONTIER_TASKS:
        raise InputError(f"unknown frontier task {name!r}; expected one of {sorted(FRONTIER_TASKS)}")
    task = FRONTIER_TASKS[name]
    return task.build(size or (task.quick if quick else task.full), noise, data_seed)
