"""Replicated GEKO state under torch.distributed.

Every rank holds the whole state and applies every rank's observations, in the same order, so
repartitions and epoch plans are identical everywhere and each rank trains its own shard of the
plan (:class:`~geko_torch.sampler.GEKOSampler`). Observations travel in one collective per exchange
(an ``all_gather`` of one byte buffer per rank), every ``every`` recorded batches:

=========  ================  ===================================================================
bytes      field             why
=========  ================  ===================================================================
8          count ``n``       ranks may send different counts; the receiver knows what is real
8          bad id position   an invalid id on one rank is raised on every rank, at the same step
8 x C      ids, int64        never cast through float (float32 is exact only up to 2^24)
4 x C      loss, float32     raw bits: every replica applies bit-identical values
4 x C      confidence
1 x C      flags             bit 0 correct, bit 1 valid (has a label token and is not padding)
=========  ================  ===================================================================

``C`` (the slots per rank) is agreed from the exchanges themselves: every rank learns every rank's
count from the headers, so when a count exceeds ``C`` (the first exchange, or a longer batch) all
ranks send the remainder in a second round and raise ``C`` for the next exchanges, in the same step.
In steady state an exchange is a single collective of ``16 + 21 * C`` bytes per rank.

Ranks fill their shards in lockstep (the sampler pads every shard to the same length), so
exchange ``k`` holds global plan positions ``[s * W, (s + n) * W)`` from every rank: the gathered
observations are put back in plan order before they are applied, so the state equals that of one
process training the same global batches. Draws that only pad a shard (positions past the end of
the plan) are trained but not observed: they would count one sample twice.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from geko_state.errors import InputError

__all__ = [
    "ExchangeResult",
    "ObservationExchange",
    "barrier",
    "broadcast_json",
    "collective_device",
    "decode_gathered",
    "dist_rank_world",
    "is_main_process",
    "pack_observations",
    "replica_path",
    "share_engine_cores",
]

HEADER_BYTES = 16
BYTES_PER_SLOT = 21  # id 8 + loss 4 + confidence 4 + margin 4 + flags 1
_CORRECT, _VALID = 1, 2


def _dist():
    try:
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch builds without distributed
        return None
    return dist if dist.is_available() and dist.is_initialized() else None


def dist_rank_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` without one."""
    dist = _dist()
    return (dist.get_rank(), dist.get_world_size()) if dist is not None else (0, 1)


def is_main_process() -> bool:
    """Rank 0, or no process group: the process that writes history and checkpoints."""
    return dist_rank_world()[0] == 0


def collective_device(group: Any = None) -> torch.device:
    """Where tensors for ``group``'s collectives live: the current GPU under NCCL, else the CPU."""
    dist = _dist()
    if dist is not None and "nccl" in str(dist.get_backend(group)).lower():
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def broadcast_json(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s JSON-ready ``value`` on every rank (as UTF-8 bytes: nothing is pickled);
    ``value`` itself without a process group of more than one rank."""
    rank, world = dist_rank_world()
    if world == 1:
        return value
    import json

    dist, dev = _dist(), collective_device()
    data = json.dumps(value, allow_nan=True).encode() if rank == src else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=dev)
    dist.broadcast(size, src)
    buf = torch.zeros(int(size), dtype=torch.uint8, device=dev)
    if rank == src:
        buf.copy_(torch.frombuffer(bytearray(data), dtype=torch.uint8))
    dist.broadcast(buf, src)
    return json.loads(bytes(buf.cpu().numpy()).decode())


def barrier() -> None:
    """Wait for every rank (no-op without a process group of more than one rank)."""
    dist = _dist()
    if dist is not None and dist.get_world_size() > 1:
        dist.barrier()


def replica_path(path: str | os.PathLike | None) -> str | os.PathLike | None:
    """``path`` on rank 0 and None (an in-memory replica) on every other rank.

    Only rank 0's state is a file (the one ``geko sql|report`` read); the other replicas must not
    write to it. Use it for ``StateStore.create(n, replica_path(path), ...)`` and
    ``restore_state(checkpoint, replica_path(live_path))``.
    """
    return path if is_main_process() else None


# ---------------------------------------------------------------------- pure packing
def pack_observations(
    ids: torch.Tensor, values: torch.Tensor, *, start: int, slots: int, bad: int = -1,
) -> torch.Tensor:
    """One rank's exchange buffer, uint8 ``[16 + 21 * slots]`` on ``values.device``.

    ``ids`` int64 ``[n]``; ``values`` float32 ``[5, n]`` (loss, confidence, correct, valid, margin);
    entries ``[start, start + slots)`` go in the slots (fewer when ``n`` runs out; the rest is
    zero). The header holds ``n`` and ``bad`` (position of the first invalid id, or -1).
    """
    n = int(ids.shape[0])
    m = max(0, min(n - start, slots))
    dev = values.device
    if dev.type == "cpu":  # numpy: a tenth of the cost of a dozen small torch ops
        return torch.from_numpy(_pack_numpy(ids.numpy(), values.numpy(), n, m, start, slots, bad))
    buf = torch.zeros(HEADER_BYTES + BYTES_PER_SLOT * slots, dtype=torch.uint8, device=dev)
    buf[:HEADER_BYTES] = torch.tensor([n, bad], dtype=torch.int64).view(torch.uint8).to(dev)
    if m:
        sl = slice(start, start + m)
        o = HEADER_BYTES
        buf[o:o + 8 * m] = ids[sl].to(dev, torch.int64).contiguous().view(torch.uint8)
        o += 8 * slots
        buf[o:o + 4 * m] = values[0, sl].contiguous().view(torch.uint8)
        o += 4 * slots
        buf[o:o + 4 * m] = values[1, sl].contiguous().view(torch.uint8)
        o += 4 * slots
        buf[o:o + 4 * m] = values[4, sl].contiguous().view(torch.uint8)
        o += 4 * slots
        flags = (values[2, sl] > 0).to(torch.uint8) * _CORRECT + (values[3, sl] > 0).to(torch.uint8) * _VALID
        buf[o:o + m] = flags
    return buf


def _pack_numpy(ids: np.ndarray, values: np.ndarray, n: int, m: int, start: int, slots: int, bad: int) -> np.ndarray:
    buf = np.zeros(HEADER_BYTES + BYTES_PER_SLOT * slots, dtype=np.uint8)
    buf[:HEADER_BYTES].view(np.int64)[:] = (n, bad)
    if m:
        sl = slice(start, start + m)
        o = HEADER_BYTES
        buf[o:o + 8 * m].view(np.int64)[:] = ids[sl]
        o += 8 * slots
        buf[o:o + 4 * m].view(np.float32)[:] = values[0, sl]
        o += 4 * slots
        buf[o:o + 4 * m].view(np.float32)[:] = values[1, sl]
        o += 4 * slots
        buf[o:o + 4 * m].view(np.float32)[:] = values[4, sl]
        o += 4 * slots
        buf[o:o + m] = (values[2, sl] > 0) * np.uint8(_CORRECT) + (values[3, sl] > 0) * np.uint8(_VALID)
    return buf


@dataclass
class ExchangeResult:
    """The gathered observations of one exchange, in the order every replica applies them."""

    ids: np.ndarray  # int64 [m]
    values: np.ndarray  # float32 [5, m]: loss, confidence, correct, valid, margin
    counts: np.ndarray  # int64 [W]: entries each rank sent
    bad: np.ndarray  # int64 [W]: each rank's first invalid id position, or -1


def decode_gathered(rounds: list[np.ndarray]) -> ExchangeResult:
    """Observations from the gathered buffers of one exchange (uint8 ``[W, 16 + 21 * C_r]`` per
    round, rounds in order). Equal counts are interleaved rank by rank (plan order: rank ``r``'s
    ``j``-th entry is global position ``j * W + r``); unequal ones are concatenated in rank order.
    """
    first = rounds[0]
    world = first.shape[0]
    header = np.ascontiguousarray(first[:, :HEADER_BYTES]).view(np.int64).reshape(world, 2)
    counts, bad = header[:, 0].copy(), header[:, 1].copy()
    ids = [[] for _ in range(world)]
    vals = [[] for _ in range(world)]
    start = 0
    for buf in rounds:
        slots = (buf.shape[1] - HEADER_BYTES) // BYTES_PER_SLOT
        for r in range(world):
            m = int(max(0, min(counts[r] - start, slots)))
            if m == 0:
                continue
            row = buf[r]
            o = HEADER_BYTES
            ids[r].append(np.ascontiguousarray(row[o:o + 8 * m]).view(np.int64))
            o += 8 * slots
            loss = np.ascontiguousarray(row[o:o + 4 * m]).view(np.float32)
            o += 4 * slots
            conf = np.ascontiguousarray(row[o:o + 4 * m]).view(np.float32)
            o += 4 * slots
            margin = np.ascontiguousarray(row[o:o + 4 * m]).view(np.float32)
            o += 4 * slots
            flags = row[o:o + m]
            vals[r].append(np.stack([loss, conf, (flags & _CORRECT) > 0, (flags & _VALID) > 0, margin]).astype(np.float32))
        start += slots
    per_ids = [np.concatenate(x) if x else np.zeros(0, np.int64) for x in ids]
    per_vals = [np.concatenate(x, axis=1) if x else np.zeros((5, 0), np.float32) for x in vals]
    if world > 1 and (counts == counts[0]).all():
        out_ids = np.stack(per_ids, axis=1).reshape(-1)
        out_vals = np.stack(per_vals, axis=2).reshape(5, -1)
    else:
        out_ids = np.concatenate(per_ids)
        out_vals = np.concatenate(per_vals, axis=1)
    return ExchangeResult(out_ids, out_vals, counts, bad)


# ---------------------------------------------------------------------- the exchange
def _gather_fn(dist):
    # torch 2.13 renamed all_gather_into_tensor (the old name warns)
    return getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor


class _InFlight:
    """One exchange: its first round is in flight; :meth:`result` completes it."""

    def __init__(self, owner: ObservationExchange, ids: torch.Tensor, values: torch.Tensor, bad: int) -> None:
        self.owner, self.ids, self.values, self.bad = owner, ids, values, bad
        self.slots = owner.slots
        self.out, self.work = owner._launch(ids, values, 0, self.slots, bad)

    def result(self) -> ExchangeResult:
        self.work.wait()
        rounds = [self.owner._host(self.out)]
        header = np.ascontiguousarray(rounds[0][:, :HEADER_BYTES]).view(np.int64).reshape(-1, 2)
        longest = int(header[:, 0].max())
        if longest > self.slots:
            # Some rank sent more than the agreed slots: every rank knows it from the headers, so
            # all send the rest now and use the larger size from the next exchange on.
            extra = longest - self.slots
            out, work = self.owner._launch(self.ids, self.values, self.slots, extra, self.bad)
            work.wait()
            rounds.append(self.owner._host(out))
            self.owner.slots = max(self.owner.slots, longest)
        return decode_gathered(rounds)


def share_engine_cores(local_world_size: int) -> int:
    """Cap the engine's numba threads at this rank's share of the node's cores; returns the count.

    Every rank applies every observation, so the engine runs on all ranks of a node at once; each
    one's parallel kernels would otherwise start a thread per core and spin against the others
    (measured on 2 ranks x 2 cores: a 1,024-observation apply took ~5 ms instead of ~0.3 ms).
    """
    import numba

    share = max(1, (os.cpu_count() or 1) // max(1, local_world_size))
    if numba.get_num_threads() > share:
        numba.set_num_threads(share)
    return numba.get_num_threads()


class ObservationExchange:
    """All-gathers observations among the ranks of ``group`` (default: a new group over every
    rank; creating it is collective, so build the exchange on every rank at the same point).
    The engine's numba threads are capped at this rank's share of the node's cores
    (:func:`share_engine_cores`; ``LOCAL_WORLD_SIZE`` from torchrun, else the group's size)."""

    def __init__(self, group: Any = None) -> None:
        dist = _dist()
        if dist is None:
            raise InputError("ObservationExchange needs torch.distributed to be initialised (init_process_group)")
        self._dist = dist
        # A private group: GEKO's collectives never queue behind (or in front of) DDP's all-reduces.
        self.group = dist.new_group() if group is None else group
        self.rank = dist.get_rank(self.group)
        self.world_size = dist.get_world_size(self.group)
        self.device = collective_device(self.group)
        self.engine_threads = share_engine_cores(int(os.environ.get("LOCAL_WORLD_SIZE", self.world_size)))
        self.slots = 0  # agreed per-rank capacity; grows with the largest count seen
        self.exchanges = 0
        self.bytes_sent = 0

    def start(self, ids: torch.Tensor, values: torch.Tensor, bad: int = -1) -> _InFlight:
        """Launch the exchange of ``ids`` int64 ``[n]`` and ``values`` float32 ``[4, n]``."""
        self.exchanges += 1
        return _InFlight(self, ids, values.to(self.device), bad)

    def _launch(self, ids: torch.Tensor, values: torch.Tensor, start: int, slots: int, bad: int):
        buf = pack_observations(ids, values, start=start, slots=slots, bad=bad)
        out = torch.empty(self.world_size * buf.numel(), dtype=torch.uint8, device=self.device)
        self.bytes_sent += buf.numel()
        work = _gather_fn(self._dist)(out, buf, group=self.group, async_op=True)
        return out, work

    def _host(self, out: torch.Tensor) -> np.ndarray:
        return out.cpu().numpy().reshape(self.world_size, -1)
