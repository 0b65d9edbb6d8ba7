"""Dataset wrapper that tags every item with its int64 ``sample_id``, and a padding collator."""
from __future__ import annotations

import operator
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import Dataset

from geko_state.errors import ConfigError, InputError, SampleIndexError
from geko_state.validate import check_int

__all__ = ["SAMPLE_ID", "GEKODataset", "PadCollator", "SampleIndexError"]

SAMPLE_ID = "sample_id"


def _check_item(item: Any, index: int) -> Mapping:
    if not isinstance(item, Mapping):
        raise InputError(
            f"dataset[{index}] is a {type(item).__name__}; GEKO expects each item to be a dict with "
            "at least an 'input_ids' key (e.g. {'input_ids': [...], 'labels': [...]})"
        )
    # inputs_embeds: models fed precomputed embeddings or hidden states (transformers' alternative input)
    if "input_ids" not in item and "inputs_embeds" not in item:
        raise InputError(
            f"dataset[{index}] has keys {sorted(map(str, item))[:8]} but no 'input_ids'; GEKO expects "
            "each item to be a dict with at least an 'input_ids' key (or 'inputs_embeds')"
        )
    return item


class GEKODataset(Dataset):
    """A map-style dataset of dict items, each returned with an int64 ``sample_id`` (its index).

    The sample id is the row of the item in the state store, so the tracker can route each
    sample's loss back to its own state. The first item is checked on construction so a wrong
    dataset fails before training starts.
    """

    def __init__(self, dataset: Any) -> None:
        if isinstance(dataset, GEKODataset):
            dataset = dataset.dataset
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise InputError(
                f"train_dataset must be a map-style dataset (__getitem__ and __len__), got {type(dataset).__name__}"
            )
        n = len(dataset)
        if n == 0:
            raise InputError("train_dataset is empty; expected at least one item")
        self.dataset = dataset
        _check_item(dataset[0], 0)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> dict[str, Any]:
        n = len(self.dataset)
        try:
            if isinstance(index, bool):
                raise TypeError
            index = operator.index(index)  # ints, numpy integers, integer scalar tensors
        except TypeError:
            raise InputError(f"GEKODataset index must be an integer sample id in [0, {n}), got {index!r}") from None
        if not 0 <= index < n:
            # A negative index would come back tagged with a negative sample_id; IndexError too, so
            # Python's sequence iteration still stops at the end.
            raise SampleIndexError(f"GEKODataset index must be a sample id in [0, {n}), got {index}")
        item = _check_item(self.dataset[index], index)
        if SAMPLE_ID in item:
            raise InputError(f"dataset[{index}] already has a {SAMPLE_ID!r} key; GEKO adds it itself")
        out = dict(item)
        out[SAMPLE_ID] = torch.tensor(index, dtype=torch.int64)
        return out


_PAD_KEYS = {"input_ids", "attention_mask", "labels", "token_type_ids", "position_ids", "inputs_embeds"}


@dataclass(frozen=True)
class PadCollator:
    """Batches dict items: sequence fields of unequal length are padded (``input_ids`` with
    ``pad_token_id``, ``labels`` with ``label_pad_id`` so padding never counts in the loss,
    ``attention_mask`` and ``inputs_embeds`` ``[T, d]`` with 0), everything else is stacked. An
    ``attention_mask`` is added when padding was needed and none was given.
    """

    pad_token_id: int = 0
    label_pad_id: int = -100
    padding_side: str = "right"

    def __post_init__(self) -> None:
        for name in ("pad_token_id", "label_pad_id"):
            v = getattr(self, name)
            check_int(v, name, error=ConfigError, form="an integer token id")
        if self.padding_side not in ("right", "left"):
            raise ConfigError(f"padding_side must be 'right' or 'left', got {self.padding_side!r}")

    def _pad(self, key: str, seqs: Sequence[torch.Tensor]) -> torch.Tensor:
        longest = max(int(s.shape[0]) for s in seqs)
        fill = {"labels": self.label_pad_id, "attention_mask": 0, "input_ids": self.pad_token_id}.get(key, 0)
        # inputs_embeds items are [T, d]: padded along T like the token fields.
        out = torch.full((len(seqs), longest, *seqs[0].shape[1:]), fill, dtype=seqs[0].dtype)
        for i, s in enumerate(seqs):
            n = int(s.shape[0])
            if self.padding_side == "right":
                out[i, :n] = s
            else:
                out[i, longest - n:] = s
        return out

    def __call__(self, items: Sequence[Mapping[str, Any]]) -> dict[str, torch.Tensor]:
        if not items:
            raise InputError("cannot collate an empty batch")
        batch: dict[str, torch.Tensor] = {}
        keys = list(items[0].keys())
        for key in keys:
            try:
                values = [torch.as_tensor(it[key]) for it in items]
            except KeyError:
                raise InputError(f"batch items disagree on keys: {key!r} is missing from some items") from None
            if key in _PAD_KEYS and values[0].ndim >= 1 and len({int(v.shape[0]) for v in values}) > 1:
                batch[key] = self._pad(key, values)
            else:
                try:
                    batch[key] = torch.stack(values)
                except RuntimeError as e:
                    raise InputError(f"cannot batch field {key!r}: items have different shapes ({e})") from None
        if "attention_mask" not in batch and "input_ids" in items[0]:
            lengths = [int(torch.as_tensor(it["input_ids"]).shape[0]) for it in items]
            if len(set(lengths)) > 1:
                ones = [torch.ones(n, dtype=torch.int64) for n in lengths]
                batch["attention_mask"] = self._pad("attention_mask", ones)
        return batch
