"""Local dataset files -> tokenised items for :class:`~geko_torch.GEKOTrainer` (``geko train``).

Three pure steps, each usable alone::

    table = read_table("data.jsonl")                                   # file -> polars.DataFrame
    require_columns(table, {"prompt_field": "prompt", "response_field": "response"}, "data.jsonl")
    train = tokenize_causal_lm(table, tokenizer, prompt_field="prompt", response_field="response")

Row ``i`` of the file is item ``i`` (and GEKO sample id ``i``): no row is ever dropped, so
``geko export RUN --dataset FILE`` can write the kept rows of the very same file.

Items are dicts of int64 tensors: ``input_ids`` ``[T]``, ``attention_mask`` ``[T]`` and
``labels``: ``[T]`` for causal LM (-100 on prompt tokens), a scalar class id for classification.
"""
from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from geko_state.datafiles import DATA_FORMATS, check_data_path, read_table
from geko_state.errors import InputError
from geko_state.io import atomic_write_json
from geko_state.validate import check_int

__all__ = [
    "DATA_FORMATS",
    "DEFAULT_MAX_LENGTH",
    "IGNORE_INDEX",
    "LABEL_MAP_FILE",
    "TokenizedDataset",
    "check_data_path",
    "class_labels",
    "num_classes",
    "read_label_map",
    "read_table",
    "require_columns",
    "row_label",
    "text_column",
    "tokenize_causal_lm",
    "tokenize_chat",
    "tokenize_classification",
    "write_label_map",
]

DEFAULT_MAX_LENGTH = 512
IGNORE_INDEX = -100  # label of tokens that do not count in the loss (prompt, padding)
LABEL_MAP_FILE = "label_map.json"
# Below this many rows tokenising takes well under a second: no progress bar unless asked.
_PROGRESS_MIN_ROWS = 5_000
_CHUNK = 1_024  # rows per tokenizer call: large enough for the Rust batch path, small enough for a live bar


def require_columns(table: pl.DataFrame, columns: Mapping[str, str | None], source: str = "dataset") -> None:
    """Check that every named column exists. ``columns``: role (e.g. ``"--text-field"``) -> column
    name (None: not used). The error lists the table's columns."""
    missing = [(role, col) for role, col in columns.items() if col is not None and col not in table.columns]
    if missing:
        what = "; ".join(f"{role} {col!r}" for role, col in missing)
        raise InputError(
            f"{source}: no column for {what}; available columns: {', '.join(table.columns)}"
        )


def row_label(index: int) -> str:
    """A row as users count it (1-based: line N of a JSONL file, data row N of a CSV file after its
    header) and as GEKO names it (the 0-based sample id that ``geko sql`` and exports use)."""
    return f"row {index + 1} (sample id {index})"


def _text_series(table: pl.DataFrame, column: str, source: str) -> pl.Series:
    s = table.get_column(column)
    if s.dtype != pl.String:
        if s.dtype.is_numeric() or s.dtype == pl.Boolean:
            s = s.cast(pl.String)
        else:
            raise InputError(f"{source}: column {column!r} holds {s.dtype} values; expected text")
    nulls = s.null_count()
    if nulls:
        first = int(s.is_null().arg_true()[0])
        raise InputError(
            f"{source}: column {column!r} has {nulls} missing (null) value(s), the first in {row_label(first)}; "
            "every row needs a text"
        )
    return s


def text_column(table: pl.DataFrame, column: str, source: str = "dataset") -> list[str]:
    """The column as Python strings ``[rows]``: numbers and booleans are converted, nulls and
    nested values (lists, structs) are refused."""
    return _text_series(table, column, source).to_list()


@dataclass
class _Ragged:
    """Variable-length int sequences in one flat array: ``values[offsets[i]:offsets[i+1]]``."""

    values: np.ndarray
    offsets: np.ndarray

    @classmethod
    def build(cls, seqs: Sequence[Sequence[int]]) -> _Ragged:
        b = _RaggedBuilder()
        b.extend(seqs)
        return b.build()

    def __getitem__(self, i: int) -> np.ndarray:
        return self.values[self.offsets[i]:self.offsets[i + 1]]


class _RaggedBuilder:
    """Collects sequences chunk by chunk as int32 arrays, so only one chunk at a time exists as
    Python lists (a token id as a Python int in a list costs ~10x its int32)."""

    def __init__(self) -> None:
        self._values: list[np.ndarray] = []
        self._lengths: list[np.ndarray] = []

    def extend(self, seqs: Sequence[Sequence[int]]) -> None:
        lengths = np.fromiter(map(len, seqs), dtype=np.int64, count=len(seqs))
        self._lengths.append(lengths)
        self._values.append(np.fromiter(itertools.chain.from_iterable(seqs), dtype=np.int32,
                                        count=int(lengths.sum())))

    def build(self) -> _Ragged:
        lengths = np.concatenate(self._lengths) if self._lengths else np.zeros(0, dtype=np.int64)
        offsets = np.zeros(lengths.size + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        values = np.concatenate(self._values) if self._values else np.zeros(0, dtype=np.int32)
        return _Ragged(values, offsets)


class _CausalItems:
    """Causal-LM (input_ids, labels) pairs collected chunk by chunk, each cut at ``max_length``
    tokens (from the end)."""

    def __init__(self, max_length: int) -> None:
        self.max_length = max_length
        self.truncated = 0
        self._ids, self._labels = _RaggedBuilder(), _RaggedBuilder()

    def add(self, pairs: Iterable[tuple[list[int], list[int]]]) -> int:
        """Add one chunk; returns its row count."""
        ids_c, labels_c = [], []
        for ids, labels in pairs:
            if len(ids) > self.max_length:
                self.truncated += 1
                ids, labels = ids[:self.max_length], labels[:self.max_length]
            ids_c.append(ids)
            labels_c.append(labels)
        self._ids.extend(ids_c)
        self._labels.extend(labels_c)
        return len(ids_c)

    def dataset(self, source: str) -> TokenizedDataset:
        return TokenizedDataset("causal_lm", self._ids.build(), self._labels.build(), max_length=self.max_length,
                                n_truncated=self.truncated, source=source)


class TokenizedDataset(Dataset):
    """Tokenised samples kept in flat int32 arrays (a few bytes per token, not a Python object
    per token), handed out as dicts of int64 tensors.

    ``task``: ``"causal_lm"`` (``labels`` ``[T]``, -100 where not trained) or
    ``"classification"`` (``labels``: scalar class id). ``n_truncated``: samples cut at
    ``max_length``; ``n_without_labels``: causal LM samples left without any trained token (the
    trainer does not observe those). ``source`` names the data in error messages.
    """

    def __init__(self, task: str, input_ids: Sequence[Sequence[int]] | _Ragged, labels: Any,
                 *, max_length: int, n_truncated: int = 0, source: str = "dataset") -> None:
        if task not in ("causal_lm", "classification"):
            raise InputError(f"task must be 'causal_lm' or 'classification', got {task!r}")
        self.task = task
        self.max_length = max_length
        self.n_truncated = n_truncated
        self._ids = input_ids if isinstance(input_ids, _Ragged) else _Ragged.build(input_ids)
        empty = np.flatnonzero(np.diff(self._ids.offsets) == 0)
        if empty.size:
            raise InputError(
                f"{source}: {empty.size} sample(s) give no tokens at all (first: {row_label(int(empty[0]))}); every row needs "
                "a non-empty text"
            )
        if task == "causal_lm":
            self._labels: _Ragged | None = labels if isinstance(labels, _Ragged) else _Ragged.build(labels)
            if not np.array_equal(self._labels.offsets, self._ids.offsets):
                raise InputError("labels must have the same length as input_ids in every sample")
            self._class: np.ndarray | None = None
            trained = np.concatenate([[0], np.cumsum(self._labels.values != IGNORE_INDEX)])
            per_sample = trained[self._labels.offsets[1:]] - trained[self._labels.offsets[:-1]]
            self.n_without_labels = int(np.count_nonzero(per_sample == 0))
        else:
            self._labels = None
            self._class = np.asarray(labels, dtype=np.int64)
            if self._class.shape != (len(self),):
                raise InputError(f"labels must hold one class id per sample, got shape {self._class.shape}")
            self.n_without_labels = 0

    def __len__(self) -> int:
        return len(self._ids.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        """Tokens per sample, int64 ``[N]``."""
        return np.diff(self._ids.offsets)

    @property
    def class_labels(self) -> np.ndarray | None:
        """Class id per sample, int64 ``[N]`` (classification), else None."""
        return self._class

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        i = int(index)
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        i %= len(self)
        ids = torch.from_numpy(self._ids[i].astype(np.int64))
        item = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        if self._labels is not None:
            item["labels"] = torch.from_numpy(self._labels[i].astype(np.int64))
        else:
            item["labels"] = torch.tensor(int(self._class[i]), dtype=torch.int64)  # type: ignore[index]
        return item


def _check_max_length(max_length: int) -> None:
    check_int(max_length, "max_length", 2)


def _progress(progress: bool | None, n: int) -> bool:
    return n >= _PROGRESS_MIN_ROWS if progress is None else bool(progress)


def _encode(tokenizer: Any, texts: list[str], **kw: Any) -> list[list[int]]:
    return tokenizer(texts, return_attention_mask=False, return_token_type_ids=False, **kw)["input_ids"]


def _eos_id(tokenizer: Any) -> int | None:
    eos = getattr(tokenizer, "eos_token_id", None)
    return eos if isinstance(eos, int) else None


def tokenize_causal_lm(
    table: pl.DataFrame,
    tokenizer: Any,
    *,
    prompt_field: str | None = None,
    response_field: str | None = None,
    text_field: str | None = None,
    max_length: int = DEFAULT_MAX_LENGTH,
    add_eos: bool = True,
    progress: bool | None = None,
    source: str = "dataset",
) -> TokenizedDataset:
    """Causal-LM items, one per row.

    With ``prompt_field`` + ``response_field`` (supervised fine-tuning):
    ``input_ids = tokens(prompt) + tokens(response) [+ eos]`` and ``labels`` is -100 on the prompt
    tokens and the token ids on the response, so only the response is trained. The prompt gets the
    tokenizer's special tokens (e.g. BOS), the response none. With ``text_field``: the whole text
    is trained (``labels == input_ids``). ``eos`` is appended when ``add_eos`` and the tokenizer
    has one. Sequences are cut at ``max_length`` tokens (from the end).
    """
    _check_max_length(max_length)
    sft = prompt_field is not None or response_field is not None
    if sft and (prompt_field is None or response_field is None or text_field is not None):
        raise InputError("give prompt_field and response_field together, or text_field alone")
    if not sft and text_field is None:
        raise InputError("give prompt_field and response_field, or text_field")
    require_columns(table, {"prompt_field": prompt_field, "response_field": response_field,
                            "text_field": text_field}, source)
    eos = _eos_id(tokenizer) if add_eos else None
    n = table.height
    if sft:
        prompts = _text_series(table, prompt_field, source)  # type: ignore[arg-type]
        responses = _text_series(table, response_field, source)  # type: ignore[arg-type]
    else:
        prompts, responses = None, _text_series(table, text_field, source)  # type: ignore[arg-type]
    items = _CausalItems(max_length)

    def pairs(prom: list[list[int]], resp: list[list[int]]) -> Iterator[tuple[list[int], list[int]]]:
        for p, r in zip(prom, resp):
            if eos is not None and p and p[-1] == eos:
                p = p[:-1]  # tokenizers whose template closes every text with EOS: the prompt goes on
            if eos is not None and (not r or r[-1] != eos):
                r = [*r, eos]
            yield p + r, [IGNORE_INDEX] * len(p) + r

    with tqdm(total=n, desc=f"tokenise {source}", unit="row", disable=not _progress(progress, n),
              leave=False) as bar:
        for start in range(0, n, _CHUNK):
            resp = _encode(tokenizer, responses.slice(start, _CHUNK).to_list(), add_special_tokens=not sft)
            prom = (_encode(tokenizer, prompts.slice(start, _CHUNK).to_list(), add_special_tokens=True)
                    if prompts is not None else [[] for _ in resp])
            bar.update(items.add(pairs(prom, resp)))
    return items.dataset(source)


def _messages(value: Any, row: int, column: str, source: str) -> list[dict[str, str]]:
    """One row's conversation as ``[{"role": ..., "content": ...}]``, checked."""
    if not isinstance(value, list) or not value:
        raise InputError(f"{source}: {row_label(row)} of column {column!r}: expected a non-empty list of "
                         "{role, content} messages")
    out = []
    for m in value:
        if not isinstance(m, dict) or not isinstance(m.get("role"), str) or not isinstance(m.get("content"), str):
            raise InputError(f"{source}: {row_label(row)} of column {column!r}: every message needs a text 'role' and "
                             f"'content', got {m!r}")
        out.append({"role": m["role"], "content": m["content"]})
    if not any(m["role"] == "assistant" for m in out):
        raise InputError(f"{source}: {row_label(row)} of column {column!r}: no assistant message, nothing to train on")
    return out


def _assistant_spans(tokenizer: Any, messages: list[dict[str, str]], row: int, source: str
                     ) -> tuple[str, list[tuple[int, int]]]:
    """The rendered conversation and the character spans of its assistant turns: each turn is
    what rendering up to it adds to the prompt rendered up to the turn before (with the template's
    generation prompt, which stays masked)."""
    render = tokenizer.apply_chat_template
    full = render(messages, tokenize=False)
    spans = []
    for i, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        before = render(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
        upto = render(messages[:i + 1], tokenize=False)
        if not (upto.startswith(before) and full.startswith(upto)):
            raise InputError(f"{source}: {row_label(row)}: the tokenizer's chat template does not render the "
                             "conversation turn by turn (a turn changes what came before it), so the assistant "
                             "turns cannot be told apart; use --prompt-field/--response-field instead")
        spans.append((len(before), len(upto)))
    return full, spans


def tokenize_chat(
    table: pl.DataFrame,
    tokenizer: Any,
    *,
    messages_field: str,
    max_length: int = DEFAULT_MAX_LENGTH,
    progress: bool | None = None,
    source: str = "dataset",
) -> TokenizedDataset:
    """Causal-LM items from conversations (a column of ``[{role, content}, ...]`` lists, as TRL's
    chat datasets hold them), rendered with the tokenizer's chat template. Only the assistant
    turns are trained: ``labels`` is -100 on system and user turns and on the template's own
    markup before each assistant turn. Sequences are cut at ``max_length`` tokens (from the end).
    """
    _check_max_length(max_length)
    require_columns(table, {"messages_field": messages_field}, source)
    if not getattr(tokenizer, "chat_template", None):
        raise InputError(f"{source}: column {messages_field!r} holds conversations, but the tokenizer has no chat "
                         "template to render them; use a model whose tokenizer has one (tokenizer.chat_template), "
                         "or give --prompt-field/--response-field")
    if not getattr(tokenizer, "is_fast", False):
        raise InputError("conversations need a fast tokenizer (character offsets tell which tokens are the "
                         "assistant's)")
    rows = table.get_column(messages_field).to_list()
    items = _CausalItems(max_length)

    def pairs(start: int, stop: int) -> Iterator[tuple[list[int], list[int]]]:
        for row in range(start, stop):
            text, spans = _assistant_spans(tokenizer, _messages(rows[row], row, messages_field, source), row, source)
            enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                            return_attention_mask=False, return_token_type_ids=False)
            ids = list(enc["input_ids"])
            yield ids, [t if any(a <= lo and hi <= b and hi > lo for a, b in spans) else IGNORE_INDEX
                        for t, (lo, hi) in zip(ids, enc["offset_mapping"])]

    n = len(rows)
    with tqdm(total=n, desc=f"tokenise {source}", unit="row", disable=not _progress(progress, n),
              leave=False) as bar:
        for start in range(0, n, _CHUNK):
            bar.update(items.add(pairs(start, min(n, start + _CHUNK))))
    return items.dataset(source)


def class_labels(
    table: pl.DataFrame,
    label_field: str,
    label_map: Mapping[str, int] | None = None,
    *,
    num_labels: int | None = None,
    source: str = "dataset",
) -> tuple[np.ndarray, dict[str, int] | None]:
    """Class ids int64 ``[rows]`` and the label map (label -> id) used.

    Integer (and boolean) labels are used as they are: ids must be >= 0 (and < ``num_labels``
    when given); the map is None. String labels are mapped to ids: with ``label_map`` (e.g. the
    training set's, for an eval set; an unknown label is refused), else the sorted unique labels
    get ids 0, 1, ... Floats are accepted when they are whole numbers.
    """
    require_columns(table, {"label_field": label_field}, source)
    s = table.get_column(label_field)
    if s.null_count():
        first = int(s.is_null().arg_true()[0])
        raise InputError(f"{source}: label column {label_field!r} has {s.null_count()} missing value(s), "
                         f"the first in {row_label(first)}")
    if s.dtype == pl.String:
        values = s.to_list()
        if label_map is None:
            label_map = {v: i for i, v in enumerate(sorted(set(values)))}
        else:
            label_map = dict(label_map)
            unknown = sorted(set(values) - set(label_map))
            if unknown:
                raise InputError(
                    f"{source}: label(s) {unknown[:5]} in column {label_field!r} are not among the training "
                    f"labels {sorted(label_map)[:10]}"
                )
        return np.array([label_map[v] for v in values], dtype=np.int64), label_map
    if s.dtype == pl.Boolean:
        s = s.cast(pl.Int64)
    if s.dtype.is_float():
        arr = s.to_numpy()
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"{source}: label column {label_field!r} holds non-integer numbers; "
                             "expected class ids (integers >= 0) or class names (strings)")
        s = s.cast(pl.Int64)
    if not s.dtype.is_integer():
        raise InputError(f"{source}: label column {label_field!r} holds {s.dtype} values; expected class ids "
                         "(integers >= 0) or class names (strings)")
    if label_map is not None:
        raise InputError(f"{source}: label column {label_field!r} holds class ids but the training labels "
                         "are names; use the same kind of labels in both files")
    ids = s.to_numpy().astype(np.int64)
    if ids.min() < 0:
        raise InputError(f"{source}: label column {label_field!r} has negative class ids (min {ids.min()}); "
                         "expected integers >= 0, or class names")
    if num_labels is not None and ids.max() >= num_labels:
        raise InputError(f"{source}: label column {label_field!r} has class id {ids.max()} but the training "
                         f"data has {num_labels} classes (0..{num_labels - 1})")
    return ids, None


def tokenize_classification(
    table: pl.DataFrame,
    tokenizer: Any,
    *,
    text_field: str,
    label_field: str,
    max_length: int = DEFAULT_MAX_LENGTH,
    label_map: Mapping[str, int] | None = None,
    num_labels: int | None = None,
    progress: bool | None = None,
    source: str = "dataset",
) -> tuple[TokenizedDataset, dict[str, int] | None]:
    """Sequence-classification items (``labels``: class id) and the label map (see
    :func:`class_labels`; None for integer labels). Texts get the tokenizer's special tokens and
    are cut at ``max_length`` tokens by the tokenizer (so a closing [SEP] stays)."""
    _check_max_length(max_length)
    require_columns(table, {"text_field": text_field, "label_field": label_field}, source)
    ids, label_map = class_labels(table, label_field, label_map, num_labels=num_labels, source=source)
    texts = _text_series(table, text_field, source)
    n = table.height
    ids_b = _RaggedBuilder()
    truncated = 0
    with tqdm(total=n, desc=f"tokenise {source}", unit="row", disable=not _progress(progress, n),
              leave=False) as bar:
        for start in range(0, n, _CHUNK):
            chunk = texts.slice(start, _CHUNK).to_list()
            enc = _encode(tokenizer, chunk, add_special_tokens=True, truncation=False)
            # Texts over max_length are tokenised again with the tokenizer's own truncation, which
            # keeps the closing special tokens ([SEP], </s>) that a plain cut would lose.
            long_rows = [i for i, t in enumerate(enc) if len(t) > max_length]
            if long_rows:
                cut = _encode(tokenizer, [chunk[i] for i in long_rows], add_special_tokens=True,
                              truncation=True, max_length=max_length)
                for i, t in zip(long_rows, cut):
                    enc[i] = t
                truncated += len(long_rows)
            ids_b.extend(enc)
            bar.update(len(chunk))
    ds = TokenizedDataset("classification", ids_b.build(), ids, max_length=max_length, n_truncated=truncated,
                          source=source)
    return ds, label_map


def num_classes(labels: np.ndarray, label_map: Mapping[str, int] | None) -> int:
    """Number of classes: the map's size, else the largest class id + 1."""
    return len(label_map) if label_map is not None else int(labels.max()) + 1


def write_label_map(path: str | os.PathLike, label_map: Mapping[str, int], label_field: str | None = None) -> Path:
    """Write ``{"label_field", "label2id", "id2label"}`` as JSON (atomically) and return the path."""
    path = Path(path)
    label2id = {str(k): int(v) for k, v in label_map.items()}
    atomic_write_json(path, {
        "label_field": label_field,
        "label2id": label2id,
        "id2label": {str(v): k for k, v in sorted(label2id.items(), key=lambda kv: kv[1])},
    })
    return path


def read_label_map(path: str | os.PathLike) -> dict[str, int]:
    """The label -> id map written by :func:`write_label_map`."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
        return {str(k): int(v) for k, v in data["label2id"].items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"{path}: not a label map written by geko train ({e})") from None

