"""Checksums of the engine's files (state file, history snapshots, epoch summary).

CRC-32 (``zlib.crc32``): it ships with Python, runs at several GB/s on the raw column buffers
(hardware CRC instructions; about 0.1 s for 10M samples of state), and detects every single-bit
error and every error burst up to 32 bits, which is what a bit flip or a torn page looks like.
It is not a defence against deliberate tampering, which is not the threat here.

A checksum is stored as text, ``"crc32:1a2b3c4d"``, so a later algorithm can be told apart.
"""
from __future__ import annotations

import json
import zlib
from collections.abc import Iterable
from typing import Any

import numpy as np

__all__ = ["ALGORITHM", "crc32_arrays", "crc32_json", "format_checksum", "canonical_json"]

ALGORITHM = "crc32"


def crc32_arrays(arrays: Iterable[np.ndarray], crc: int = 0) -> int:
    """CRC-32 of the raw bytes of ``arrays`` in order (each C-contiguous; any shape and dtype)."""
    for a in arrays:
        # zlib reads the buffer in place: no copy for contiguous arrays, even memory-mapped ones.
        crc = zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8), crc)
    return crc


def canonical_json(value: Any) -> bytes:
    """The JSON text a checksum covers: sorted keys, so a parsed-and-dumped copy hashes the same."""
    return json.dumps(value, sort_keys=True, allow_nan=True, separators=(",", ":")).encode()


def crc32_json(value: Any, crc: int = 0) -> int:
    return zlib.crc32(canonical_json(value), crc)


def format_checksum(crc: int) -> str:
    return f"{ALGORITHM}:{crc & 0xFFFFFFFF:08x}"
