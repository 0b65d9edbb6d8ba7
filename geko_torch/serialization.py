"""Pickle-free persistence of nested state dicts (optimizer, scheduler, RNG, sampler).

A tree of dicts / lists / tuples is split into its tensors and arrays, stored in one safetensors
file, and a JSON skeleton that records everything else (and where each tensor goes), with dict
keys kept with their types (optimizer state is keyed by int).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from geko_state.errors import StateFileError
from geko_state.io import atomic_path

__all__ = ["load_tree", "save_tree"]

_FORMAT = 1


def _encode(obj: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(obj, torch.Tensor):
        key = f"t{len(tensors)}"
        # clone: safetensors refuses tensors that share storage (e.g. views of one buffer)
        tensors[key] = obj.detach().cpu().contiguous().clone()
        return {"__tensor__": key}
    if isinstance(obj, np.ndarray):
        # raw bytes + dtype: torch/safetensors lack some numpy dtypes (numpy's RNG state is uint32)
        key = f"t{len(tensors)}"
        raw = np.ascontiguousarray(obj).reshape(-1).view(np.uint8).copy()
        tensors[key] = torch.from_numpy(raw)
        return {"__ndarray__": key, "dtype": obj.dtype.str, "shape": list(obj.shape)}
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, dict):
        items = []
        for k, v in obj.items():
            if not isinstance(k, (str, int, float, bool)) and k is not None:
                raise TypeError(f"{path}: cannot store a dict key of type {type(k).__name__}")
            items.append([k, _encode(v, tensors, f"{path}.{k}")])
        return {"__dict__": items}
    if isinstance(obj, tuple):
        return {"__tuple__": [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]}
    if isinstance(obj, list):
        return [_encode(v, tensors, f"{path}[{i}]") for i, v in enumerate(obj)]
    if obj is None or isinstance(obj, (bool, int, float, str)):
        return obj
    raise TypeError(f"{path}: cannot store a value of type {type(obj).__name__} without pickle")


def _decode(obj: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(obj, list):
        return [_decode(v, tensors) for v in obj]
    if isinstance(obj, dict):
        if "__tensor__" in obj:
            return tensors[obj["__tensor__"]]
        if "__ndarray__" in obj:
            raw = tensors[obj["__ndarray__"]].numpy()
            return raw.view(np.dtype(obj["dtype"])).reshape(obj["shape"]).copy()
        if "__tuple__" in obj:
            return tuple(_decode(v, tensors) for v in obj["__tuple__"])
        if "__dict__" in obj:
            return {k: _decode(v, tensors) for k, v in obj["__dict__"]}
    return obj


def save_tree(tree: Any, directory: str | os.PathLike, name: str) -> None:
    """Write ``tree`` as ``<name>.json`` (+ ``<name>.safetensors`` when it holds tensors/arrays)."""
    directory = Path(directory)
    tensors: dict[str, torch.Tensor] = {}
    skeleton = {"format": _FORMAT, "tree": _encode(tree, tensors, name)}
    if tensors:
        with atomic_path(directory / f"{name}.safetensors") as tmp:
            save_file(tensors, str(tmp))
    with atomic_path(directory / f"{name}.json") as tmp:
        tmp.write_text(json.dumps(skeleton, allow_nan=True))


def load_tree(directory: str | os.PathLike, name: str) -> Any:
    """Read back what :func:`save_tree` wrote (tensors on the CPU)."""
    directory = Path(directory)
    meta = directory / f"{name}.json"
    try:
        skeleton = json.loads(meta.read_text())
    except FileNotFoundError:
        raise StateFileError(f"{meta}: missing from the checkpoint") from None
    except (OSError, ValueError) as e:
        raise StateFileError(f"{meta}: unreadable ({e})") from None
    if not isinstance(skeleton, dict) or skeleton.get("format") != _FORMAT:
        raise StateFileError(f"{meta}: not a GEKO checkpoint part (format {_FORMAT} expected)")
    blob = directory / f"{name}.safetensors"
    tensors: dict[str, torch.Tensor] = {}
    if blob.exists():
        try:
            tensors = load_file(str(blob))
        except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for corrupt headers
            raise StateFileError(f"{blob}: unreadable safetensors file ({e})") from None
    try:
        return _decode(skeleton["tree"], tensors)
    except KeyError as e:
        raise StateFileError(f"{blob}: tensor {e} missing") from None
