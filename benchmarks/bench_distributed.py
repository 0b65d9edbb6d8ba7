#!/usr/bin/env python3
"""Distributed tracker cost: the observation exchange against the single-process tracker.

Each of ``--world`` processes (gloo on the CPU, started with torch.multiprocessing) holds a
replica of an ``--n``-sample state and records batches of ``B`` observations per step:

* single: a tracker built before the process group exists (no exchange; what one process pays);
* distributed: a tracker on the process group (every rank's observations all-gathered and applied
  on every rank, one exchange in flight).

Both trackers live in the same processes and alternate in blocks of ``--block`` steps, so they see
the same machine load. Between steps each rank "computes" for ``--compute-ms`` (a sleep, as a rank
waiting on its GPU would): the exchange runs in gloo's threads meanwhile. Figures are medians over
steps (rank 0's; both ranks are reported in the JSON):

* ``record_us``: mean time inside ``tracker.record`` per step (for the distributed tracker:
  packing, launching this step's exchange, waiting for the previous one and applying every rank's
  observations);
* ``exchange_ms``: one exchange alone, launch to applied, with nothing to overlap (a blocking
  all-gather: the latency a step would pay if it had no compute to hide it behind);
* ``bytes_per_step``: bytes each rank sends and receives per exchange;
* ``global_mean_us``: the scalar all-reduce of :meth:`GEKOTracker.global_mean`;
* ``end_epoch_ms``: flush + repartition of the replica (every rank repartitions its own copy);
* ``replica_and_plan_mib``: resident memory each rank gains by its replica and one epoch plan.

Run from the repository root::

    python benchmarks/bench_distributed.py --json benchmarks/results/distributed.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def _signals(batch: int, step: int):
    from geko_torch.signals import SampleSignals

    g = torch.Generator().manual_seed(step)
    loss = torch.rand(batch, generator=g) * 3
    return SampleSignals(loss=loss, confidence=torch.rand(batch, generator=g), correct=loss < 1,
                         valid=torch.ones(batch, dtype=torch.bool))


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _median_us(xs: list[float]) -> float:
    return 1e6 * statistics.median(xs)


def _rank_main(rank: int, world: int, args: argparse.Namespace, init_file: str, out_dir: str) -> None:
    from geko_state import GEKO_DEFAULT, StateStore
    from geko_torch import GEKOSampler, GEKOTracker

    torch.set_num_threads(1)
    n = args.n
    single = GEKOTracker(StateStore.create(n, None, GEKO_DEFAULT))  # before the group: no exchange
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    rss_before = _rss_mib()
    store = StateStore.create(n, None, GEKO_DEFAULT)
    sampler = GEKOSampler(store, seed=0, replacement=False)
    len(sampler)  # build the epoch's plan and this rank's shard: part of what a rank holds
    tracker = GEKOTracker(store)
    results: dict[str, object] = {
        "rank": rank, "replica_and_plan_mib": _rss_mib() - rss_before, "plan_draws": len(sampler.plan),
    }
    g = torch.Generator().manual_seed(rank)
    for batch in args.batches:
        for every in args.sync_every:
            tracker.sync_every = every
            single_t: list[float] = []
            dist_t: list[float] = []
            mean_t: list[float] = []
            step = 0
            for block in range(2 * args.steps // args.block):
                t = single if block % 2 == 0 else tracker
                for _ in range(args.block):
                    ids = torch.randint(0, n, (batch,), generator=g)
                    sig = _signals(batch, step)
                    t0 = time.perf_counter()
                    t.record(ids, sig)
                    dt = time.perf_counter() - t0
                    if t is tracker:
                        dist_t.append(dt)
                        losses = sig.loss.clone().requires_grad_()
                        t0 = time.perf_counter()
                        tracker.global_mean(losses)
                        mean_t.append(time.perf_counter() - t0)
                    else:
                        single_t.append(dt)
                    step += 1
                    time.sleep(args.compute_ms / 1e3)
                tracker.flush()
                single.flush()
            # One exchange on its own: launch and apply with nothing to overlap.
            lat: list[float] = []
            for i in range(args.steps // 4):
                ids = torch.randint(0, n, (batch * every,), generator=g)
                sig = _signals(batch * every, 10_000 + i)
                dist.barrier()
                t0 = time.perf_counter()
                tracker.record(ids, sig)
                tracker.flush()
                lat.append(time.perf_counter() - t0)
            slots = tracker.exchange.slots
            sent = 16 + 17 * slots
            results[f"B{batch}_every{every}"] = {
                "batch_per_rank": batch, "sync_every": every,
                # means: with sync_every > 1 most records only queue, one in k exchanges
                "single_record_us": 1e6 * statistics.fmean(single_t),
                "distributed_record_us": 1e6 * statistics.fmean(dist_t),
                "ratio": statistics.fmean(dist_t) / statistics.fmean(single_t),
                "exchange_ms": 1e3 * statistics.median(lat),
                "global_mean_us": _median_us(mean_t),
                "bytes_sent_per_exchange": sent, "bytes_received_per_exchange": world * sent,
                "bytes_per_sample": sent / max(slots, 1),
            }
    t0 = time.perf_counter()
    tracker.end_epoch()
    results["end_epoch_ms"] = 1e3 * (time.perf_counter() - t0)
    t0 = time.perf_counter()
    single.end_epoch()
    results["single_end_epoch_ms"] = 1e3 * (time.perf_counter() - t0)
    Path(out_dir, f"rank{rank}.json").write_text(json.dumps(results))
    dist.barrier()
    dist.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--world", type=int, default=2)
    p.add_argument("--n", type=int, default=1_000_000, help="samples in each rank's replica")
    p.add_argument("--batches", type=int, nargs="+", default=[32, 512, 4096], help="observations per rank per step")
    p.add_argument("--sync-every", type=int, nargs="+", default=[1, 8])
    p.add_argument("--steps", type=int, default=256, help="timed steps per tracker and setting")
    p.add_argument("--block", type=int, default=16)
    p.add_argument("--compute-ms", type=float, default=5.0, help="simulated step compute between records")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="geko-bench-dist-") as tmp:
        mp.spawn(_rank_main, args=(args.world, args, os.path.join(tmp, "pg"), tmp), nprocs=args.world)
        ranks = [json.loads(Path(tmp, f"rank{r}.json").read_text()) for r in range(args.world)]
    r0 = ranks[0]
    print(f"world {args.world} (gloo, CPU), N = {args.n:,} per replica, {args.compute_ms} ms simulated compute per step")
    print(f"{'B/rank':>7} {'every':>5} | {'single record':>13} {'dist record':>12} {'ratio':>6} | "
          f"{'exchange':>9} {'sent B':>8} {'recv B':>8} | {'global_mean':>11}")
    for key, v in r0.items():
        if not key.startswith("B"):
            continue
        print(f"{v['batch_per_rank']:>7} {v['sync_every']:>5} | {v['single_record_us']:>11.0f}us "
              f"{v['distributed_record_us']:>10.0f}us {v['ratio']:>6.2f} | {v['exchange_ms']:>7.2f}ms "
              f"{v['bytes_sent_per_exchange']:>8,} {v['bytes_received_per_exchange']:>8,} | "
              f"{v['global_mean_us']:>9.0f}us")
    print(f"end_epoch: {r0['end_epoch_ms']:.1f} ms distributed, {r0['single_end_epoch_ms']:.1f} ms single; "
          f"replica + plan per rank: {r0['replica_and_plan_mib']:.0f} MiB "
          f"({2**20 * r0['replica_and_plan_mib'] / args.n:.1f} B/sample, plan of {r0['plan_draws']:,} draws)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
            "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__},
            "ranks": ranks,
        }, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
