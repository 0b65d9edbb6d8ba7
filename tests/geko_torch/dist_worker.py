"""Scenarios run under ``torchrun`` by tests/geko_torch/test_distributed.py (gloo on the CPU).

``python -m torch.distributed.run --standalone --nproc-per-node W dist_worker.py OUT SCENARIO...``

Scenarios (``OUT/<scenario>/`` holds each one's run directory):

* ``trainer``: GEKOTrainer on the built-in ``clusters`` task, global batch 32, 3 epochs.
* ``trainer_stop``: the same run stopped by ``max_steps`` (it leaves ``checkpoint-<step>``), with
  observations exchanged every 4 batches (``sync_every=4``).
* ``trainer_resume=DIR``: the same run resumed from checkpoint ``DIR``, to the end.
* ``exchange``: edge cases of the observation exchange: ranks sending different counts, ids above
  2^24, an invalid id on one rank (raised on every rank), ``sync_every`` > 1; writes ``exchange.json``.
"""
from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from geko_state import COLUMN_NAMES, GEKO_DEFAULT, StateStore
from geko_state.errors import InputError
from geko_torch import GEKOTracker, GEKOTrainer
from geko_torch.signals import SampleSignals
from geko_torch.tasks import build_task

GLOBAL_BATCH = 32
STOP_STEPS = 21  # inside epoch 2 (epoch 1 has 16 steps of the 512 samples)


def _trainer(out: Path, *, max_steps: int | None = None, resume: str | None = None, sync_every: int = 1) -> None:
    world = dist.get_world_size()
    task = build_task("clusters", seed=0, n=512, n_eval=256, base_steps=300)
    args = task.training_args(out, seed=0, num_epochs=4, batch_size=GLOBAL_BATCH // world, warmup_steps=5, learning_rate=3e-3,
                              max_steps=max_steps, save_at_end=True, eval_steps=10, disable_progress_bar=True,
                              sync_every=sync_every)
    trainer = GEKOTrainer(task.model, task.train, eval_dataset=task.eval, args=args)
    if resume is not None:
        trainer.load_checkpoint(resume)
    metrics = trainer.train()
    if dist.get_rank() == 0:
        (out / "metrics.json").write_text(json.dumps(metrics))
    trainer.close()


def _digest(store: StateStore) -> str:
    h = hashlib.sha256()
    for c in COLUMN_NAMES:
        h.update(np.ascontiguousarray(store.column(c)).tobytes())
    return h.hexdigest()


def _same_everywhere(text: str) -> bool:
    mine = torch.frombuffer(bytearray(hashlib.sha256(text.encode()).digest()), dtype=torch.uint8)
    out = [torch.zeros_like(mine) for _ in range(dist.get_world_size())]
    dist.all_gather(out, mine)
    return all(torch.equal(o, out[0]) for o in out)


def _signals(n: int, seed: int) -> SampleSignals:
    g = torch.Generator().manual_seed(seed)
    loss = torch.rand(n, generator=g) * 3
    return SampleSignals(loss=loss, confidence=torch.rand(n, generator=g), correct=loss < 1,
                         valid=torch.ones(n, dtype=torch.bool))


def _exchange(out: Path) -> None:
    rank, world = dist.get_rank(), dist.get_world_size()
    report: dict[str, object] = {}
    big = 2**24 + 10  # float32 cannot tell 2^24 + 1 from 2^24: ids must travel as int64
    store = StateStore.create(big + 64, None, GEKO_DEFAULT)
    tracker = GEKOTracker(store)
    counts = [3, 5, 2, 7]
    for step in range(4):  # different counts per rank, growing past the agreed slots
        n = counts[(step + rank) % 4]
        tracker.record(torch.arange(n, dtype=torch.int64) + big + 8 * rank, _signals(n, seed=100 * step + rank))
    tracker.flush()
    seen = store.column("times_seen")
    report["uneven_observed"] = int(seen.sum())
    report["uneven_expected"] = sum(counts) * world
    expected_ids = [big + 8 * r + j for r in range(world) for j in range(max(counts))]
    report["ids_above_2_24_exact"] = np.flatnonzero(seen).tolist() == expected_ids
    report["uneven_identical"] = _same_everywhere(_digest(store))

    store2 = StateStore.create(1000, None, GEKO_DEFAULT)
    tracker2 = GEKOTracker(store2, sync_every=3)
    for step in range(7):
        tracker2.record(torch.arange(4, dtype=torch.int64) + 4 * (step * world + rank), _signals(4, seed=step + 10 * rank))
    report["sync_every_pending_before_flush"] = tracker2.pending
    tracker2.flush()
    report["sync_every_observed"] = int(store2.column("times_seen").sum())
    report["sync_every_exchanges"] = tracker2.exchange.exchanges
    report["sync_every_identical"] = _same_everywhere(_digest(store2))

    tracker3 = GEKOTracker(StateStore.create(100, None, GEKO_DEFAULT))
    bad_ids = torch.tensor([1, 2, 100 if rank == world - 1 else 3])
    try:
        tracker3.record(bad_ids, _signals(3, seed=rank))
        tracker3.flush()
        report["bad_id_error"] = None
    except InputError as e:
        report["bad_id_error"] = str(e)
    report["bad_id_store_untouched"] = int(tracker3.store.column("times_seen").sum()) == 0
    if rank == 0:
        (out / "exchange.json").write_text(json.dumps(report))
    else:
        (out / f"exchange-{rank}.json").write_text(json.dumps(report))


def main() -> None:
    out = Path(sys.argv[1])
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    for scenario in sys.argv[2:]:
        name, _, value = scenario.partition("=")
        d = out / name
        if name == "trainer":
            _trainer(d)
        elif name == "trainer_stop":
            _trainer(d, max_steps=STOP_STEPS, sync_every=4)  # when, never what, is exchanged changes
        elif name == "trainer_resume":
            _trainer(d, resume=value)
        elif name == "exchange":
            d.mkdir(parents=True, exist_ok=True)
            _exchange(d)
        else:
            raise SystemExit(f"unknown scenario {name!r}")
        dist.barrier()
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
