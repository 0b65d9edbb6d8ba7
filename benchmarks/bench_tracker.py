#!/usr/bin/env python3
"""Tracker overhead: a GEKO training step against a plain PyTorch step, same model, same run.

Both loops train the same GPT-2-shaped model (built from a config) on the same token batches:

* plain: ``model(input_ids, labels=labels).loss`` (the Hugging Face batch-mean loss), backward,
  AdamW step;
* GEKO: ``model(input_ids).logits`` -> ``tracker.loss(sample_ids, logits, labels).mean()`` (per-sample
  signals, observations queued for the store, sampler position advanced), backward, AdamW step;
  ``tracker.end_epoch()`` (repartition + history) once per pass over the data, timed on its own.

The loops alternate in blocks of ``--block`` steps so both see the same machine load; the figure
is the ratio of median step times. ``tracker.record`` alone (signals precomputed) and the loss
alone (HF's fused cross-entropy against GEKO's signals, forward + backward) are also timed.

Run from the repository root::

    python benchmarks/bench_tracker.py
    python benchmarks/bench_tracker.py --json benchmarks/results/tracker.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch


def build_model(args: argparse.Namespace, device: torch.device) -> torch.nn.Module:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=args.layers, n_head=4, n_embd=args.dim, vocab_size=args.vocab,
                     n_positions=args.seq, bos_token_id=0, eos_token_id=0)
    return GPT2LMHeadModel(cfg).to(device)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=256, help="samples in the dataset / state store")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--seq", type=int, default=64)
    p.add_argument("--vocab", type=int, default=4096)
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--layers", type=int, default=2)
    p.add_argument("--steps", type=int, default=64, help="timed steps per loop")
    p.add_argument("--block", type=int, default=8, help="steps per alternating block")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--json", type=Path, default=None)
    args = p.parse_args(argv)

    from geko_state import GEKOConfig, StateStore
    from geko_torch import GEKOSampler, GEKOTracker

    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(1, args.vocab, (args.n, args.seq), generator=g)
    labels_all = data.clone()
    labels_all[:, : args.seq // 4] = -100  # a masked prompt, as in SFT

    plain_model = build_model(args, device)
    geko_model = build_model(args, device)
    plain_opt = torch.optim.AdamW(plain_model.parameters(), lr=1e-4)
    geko_opt = torch.optim.AdamW(geko_model.parameters(), lr=1e-4)
    run_dir = Path(tempfile.mkdtemp(prefix="geko-bench-tracker-"))
    store = StateStore.create(args.n, run_dir / "state.arrow", GEKOConfig(log_bucket_stats=False))
    sampler = GEKOSampler(store, seed=0, total_epochs=1000)
    tracker = GEKOTracker(store, sampler=sampler, run_dir=run_dir)

    order = torch.randperm(args.n, generator=g)
    cursor = {"plain": 0, "geko": 0}

    def next_ids(kind: str) -> torch.Tensor:
        lo = cursor[kind] % args.n
        cursor[kind] += args.batch
        ids = order[lo: lo + args.batch]
        if ids.shape[0] < args.batch:
            ids = torch.cat([ids, order[: args.batch - ids.shape[0]]])
        return ids

    def plain_step() -> None:
        ids = next_ids("plain")
        x, y = data[ids].to(device, non_blocking=True), labels_all[ids].to(device, non_blocking=True)
        loss = plain_model(input_ids=x, labels=y).loss
        loss.backward()
        plain_opt.step()
        plain_opt.zero_grad(set_to_none=True)

    end_epoch_times: list[float] = []

    def geko_step() -> None:
        ids = next_ids("geko")
        x, y = data[ids].to(device, non_blocking=True), labels_all[ids].to(device, non_blocking=True)
        logits = geko_model(input_ids=x).logits
        loss = tracker.loss(ids, logits, y).mean()
        loss.backward()
        geko_opt.step()
        geko_opt.zero_grad(set_to_none=True)
        if cursor["geko"] % args.n < args.batch:  # one pass over the data: end the epoch
            t0 = time.perf_counter()
            tracker.end_epoch()
            end_epoch_times.append(time.perf_counter() - t0)

    for fn in (plain_step, geko_step, plain_step, geko_step):  # warm-up: allocator, numba cache
        fn()
    sync()
    times: dict[str, list[float]] = {"plain": [], "geko": []}
    done = 0
    while done < args.steps:
        for kind, fn in (("plain", plain_step), ("geko", geko_step)):
            for _ in range(args.block):
                sync()
                t0 = time.perf_counter()
                fn()
                sync()
                times[kind].append(time.perf_counter() - t0)
        done += args.block
        print(f"\r{done}/{args.steps} steps per loop", end="", file=sys.stderr)
    print(file=sys.stderr)
    tracker.flush()

    # tracker.record alone, signals precomputed (what the tracker adds beyond the loss itself)
    with torch.no_grad():
        logits = geko_model(input_ids=data[: args.batch].to(device)).logits
    sig = tracker.signals(logits, labels_all[: args.batch].to(device))
    ids = torch.arange(args.batch)
    record = []
    for _ in range(200):
        sync()
        t0 = time.perf_counter()
        tracker.record(ids, sig)
        record.append(time.perf_counter() - t0)
    tracker.flush()

    # The loss alone, forward + backward on random logits of the same shape: HF's fused
    # cross-entropy against GEKO's per-sample signals (which also give confidence and hits).
    import torch.nn.functional as F

    from geko_torch.signals import causal_lm_signals

    lab = labels_all[: args.batch].to(device)
    loss_times: dict[str, list[float]] = {"hf_cross_entropy": [], "geko_signals": []}

    def hf_loss(x: torch.Tensor) -> None:
        F.cross_entropy(x[:, :-1].reshape(-1, args.vocab), lab[:, 1:].reshape(-1), ignore_index=-100).backward()

    def geko_loss(x: torch.Tensor) -> None:
        causal_lm_signals(x, lab).loss.mean().backward()

    for _ in range(3):
        for kind, fn in (("hf_cross_entropy", hf_loss), ("geko_signals", geko_loss)):
            for _ in range(20):
                x = torch.randn(args.batch, args.seq, args.vocab, device=device, requires_grad=True)
                sync()
                t0 = time.perf_counter()
                fn(x)
                sync()
                loss_times[kind].append(time.perf_counter() - t0)

    med = {k: statistics.median(v) for k, v in times.items()}
    result = {
        "device": str(device), "torch": torch.__version__, "machine": platform.machine(),
        "threads": torch.get_num_threads(), "config": vars(args) | {"json": None},
        "plain_step_ms": 1e3 * med["plain"], "geko_step_ms": 1e3 * med["geko"],
        "ratio": med["geko"] / med["plain"],
        "plain_step_ms_quartiles": [1e3 * q for q in statistics.quantiles(times["plain"], n=4)],
        "geko_step_ms_quartiles": [1e3 * q for q in statistics.quantiles(times["geko"], n=4)],
        "record_us": 1e6 * statistics.median(record),
        "end_epoch_ms": 1e3 * statistics.median(end_epoch_times) if end_epoch_times else None,
        "epochs_ended": len(end_epoch_times),
        "loss_only_ms": {k: 1e3 * statistics.median(v) for k, v in loss_times.items()},
    }
    print(f"| {device.type} B={args.batch} T={args.seq} V={args.vocab} | median step | quartiles |")
    print("|---|---|---|")
    print(f"| plain loop (HF loss) | {result['plain_step_ms']:.1f} ms | "
          f"{result['plain_step_ms_quartiles'][0]:.1f}-{result['plain_step_ms_quartiles'][2]:.1f} |")
    print(f"| GEKO loop (tracker) | {result['geko_step_ms']:.1f} ms | "
          f"{result['geko_step_ms_quartiles'][0]:.1f}-{result['geko_step_ms_quartiles'][2]:.1f} |")
    print(f"ratio GEKO / plain: {result['ratio']:.3f}; tracker.record alone: {result['record_us']:.0f} us; "
          f"end_epoch (repartition + history, N={args.n}): "
          + (f"{result['end_epoch_ms']:.1f} ms" if result["end_epoch_ms"] is not None else "n/a"))
    lo = result["loss_only_ms"]
    print(f"loss alone (fwd + bwd, B x T x V logits): HF cross-entropy {lo['hf_cross_entropy']:.2f} ms, "
          f"GEKO signals {lo['geko_signals']:.2f} ms")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
