#!/usr/bin/env python3
"""Signals benchmark: peak memory and time of per-sample causal-LM signals, GEKO against naive code.

Each variant computes per-sample loss (and, except ``hf_loss_only``, per-sample confidence) from
causal-LM logits ``[B, T, V]`` and runs ``loss.sum().backward()`` into a logits leaf:

* ``geko``: :func:`geko_torch.signals.causal_lm_signals` (chunked log-sum-exp in a custom autograd
  function; saves only the logits and one float per token);
* ``naive_softmax``: what the original library's style of code does: upcast and shift the
  logits, ``F.log_softmax`` for the loss and ``softmax`` for the confidence, both full ``[B, T, V]``;
* ``hf_loss_only``: the Hugging Face recipe (upcast, shift, ``F.cross_entropy(reduction="none")``)
  that yields per-sample losses only, no confidence: the floor of standard tooling.

Every measurement runs in a fresh subprocess, so one variant's allocator state cannot flatter
another. Memory: growth of the peak resident set (``ru_maxrss``) during the first forward+backward,
over the resident set just after the logits and labels were allocated; it includes the logits'
gradient (one ``[B, T, V]`` tensor in the logits' dtype), which every variant must produce. Time:
median of two further forward+backward calls in the same process. Medians over ``--repeats``
processes. With CUDA available, the same runs on the GPU report ``torch.cuda.max_memory_allocated``
growth too. A quarter of each sequence is a prompt (labels -100), as in instruction tuning.

The RSS figure is what a user sees, allocator included: glibc keeps freed chunk buffers in its
arenas, so ``geko``'s CPU peak varies between processes (about 1.1x to 1.9x the logits for float32
on the reference 2-core box); with ``MALLOC_MMAP_THRESHOLD_=1048576`` (every large buffer returned
at once) it is a steady 1.11x, i.e. the gradient plus ~57 MiB of chunk scratch. The baselines' peaks
are live ``[B, T, V]`` float32 copies and do not move. ``--threads 1`` gives steadier times on a
busy machine: a 2-thread worker spins at every op's barrier when the other core is taken.

Run from the repository root (the table goes to stdout, progress to stderr)::

    python benchmarks/bench_signals.py --json benchmarks/results/signals.json
    python benchmarks/bench_signals.py --threads 0 1 --json benchmarks/results/signals.json  # + 1 thread
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

# Lets the script run from a plain checkout, without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geko_torch.signals import causal_lm_signals

IGN = -100
PAGE = os.sysconf("SC_PAGE_SIZE")
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
TIMED_CALLS = 2


# ---------------------------------------------------------------------------- variants
def geko(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    s = causal_lm_signals(logits, labels)
    return s.loss, s.confidence


def naive_softmax(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    shift = logits[:, :-1].float()
    target = labels[:, 1:]
    mask = target != IGN
    count = mask.sum(1).clamp(min=1)
    log_probs = F.log_softmax(shift, dim=-1)
    nll = -log_probs.gather(-1, target.clamp(min=0)[..., None]).squeeze(-1)
    loss = (nll * mask).sum(1) / count
    probs = shift.softmax(dim=-1)
    confidence = (probs.max(-1).values * mask).sum(1) / count
    return loss, confidence.detach()


def hf_loss_only(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, None]:
    shift = logits.float()[:, :-1].contiguous()
    target = labels[:, 1:].contiguous()
    nll = F.cross_entropy(shift.view(-1, shift.shape[-1]), target.view(-1), reduction="none", ignore_index=IGN)
    count = (target != IGN).sum(1).clamp(min=1)
    return nll.view(target.shape).sum(1) / count, None


VARIANTS: dict[str, Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, Any]]] = {
    "geko": geko,
    "naive_softmax": naive_softmax,
    "hf_loss_only": hf_loss_only,
}


# ---------------------------------------------------------------------------- worker (one process)
def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def make_inputs(b: int, t: int, v: int, dtype: torch.dtype, device: str) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(b, t, v, generator=gen, dtype=dtype).to(device).requires_grad_(True)
    labels = torch.randint(0, v, (b, t), generator=gen)
    labels[:, : t // 4] = IGN
    return logits, labels.to(device)


def step(fn: Callable, logits: torch.Tensor, labels: torch.Tensor) -> None:
    logits.grad = None
    loss, _ = fn(logits, labels)
    loss.sum().backward()


def worker(variant: str, dtype: str, b: int, t: int, v: int, device: str, threads: int) -> dict[str, Any]:
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    fn = VARIANTS[variant]
    logits, labels = make_inputs(b, t, v, DTYPES[dtype], device)
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    out: dict[str, Any] = {"logits_bytes": logits.numel() * logits.element_size(),
                           "threads": torch.get_num_threads()}
    if device == "cuda":
        sync()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_bytes()
    cpu0 = os.times()
    t0 = time.perf_counter()
    step(fn, logits, labels)
    sync()
    out["first_s"] = time.perf_counter() - t0
    if device == "cuda":
        out["peak_growth_bytes"] = torch.cuda.max_memory_allocated() - base
    else:
        out["peak_growth_bytes"] = peak_rss_bytes() - base
    times = []
    for _ in range(TIMED_CALLS):
        t0 = time.perf_counter()
        step(fn, logits, labels)
        sync()
        times.append(time.perf_counter() - t0)
    cpu1 = os.times()
    out["time_s"] = statistics.median(times)
    # CPU seconds per call (user + system): spin-waiting threads on a busy machine show up here.
    out["cpu_s_per_call"] = max(0.0, cpu1.user + cpu1.system - cpu0.user - cpu0.system) / (1 + TIMED_CALLS)
    return out


# ---------------------------------------------------------------------------- driver
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def run_worker(variant: str, dtype: str, device: str, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--worker", variant, dtype, device, str(threads),
           "--B", str(args.B), "--T", str(args.T), "--V", str(args.V)]
    done = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--B", type=int, default=8, help="batch size (default 8)")
    p.add_argument("--T", type=int, default=512, help="sequence length (default 512)")
    p.add_argument("--V", type=int, default=32000, help="vocabulary size (default 32000)")
    p.add_argument("--repeats", type=int, default=3, help="fresh processes per figure (default 3)")
    p.add_argument("--dtypes", nargs="+", default=list(DTYPES), choices=list(DTYPES))
    p.add_argument("--threads", type=int, nargs="+", default=[0],
                   help="CPU threads per worker, one table block each (default 0: torch's default)")
    p.add_argument("--json", type=Path, help="write every figure (raw and medians) to this file")
    p.add_argument("--worker", nargs=4, metavar=("VARIANT", "DTYPE", "DEVICE", "THREADS"), help=argparse.SUPPRESS)
    args = p.parse_args(argv)

    if args.worker:
        variant, dtype, device, threads = args.worker
        print(json.dumps(worker(variant, dtype, args.B, args.T, args.V, device, int(threads))))
        return 0

    configs = [("cpu", n) for n in args.threads] + ([("cuda", 0)] if torch.cuda.is_available() else [])
    load_before = os.getloadavg()
    results: list[dict[str, Any]] = []
    for device, threads in configs:
        for dtype in args.dtypes:
            for variant in VARIANTS:
                raw = []
                for r in range(args.repeats):
                    log(f"{device} threads={threads or 'default'} {dtype} {variant} run {r + 1}/{args.repeats}")
                    raw.append(run_worker(variant, dtype, device, threads, args))
                results.append({
                    "device": device, "threads": raw[0]["threads"], "dtype": dtype, "variant": variant,
                    "logits_bytes": raw[0]["logits_bytes"],
                    **{key: {"raw": [x[key] for x in raw], "median": statistics.median(x[key] for x in raw)}
                       for key in ("peak_growth_bytes", "time_s", "cpu_s_per_call")},
                    "first_call_s": [x["first_s"] for x in raw],
                })
    load_after = os.getloadavg()

    metric = {"cpu": "peak RSS growth", "cuda": "max_memory_allocated growth"}
    print(f"\nB={args.B} T={args.T} V={args.V}, forward + backward, medians of {args.repeats} fresh processes\n")
    print("| device | threads | dtype | variant | logits MiB | peak growth MiB | x logits | vs geko | time s | CPU s |")
    print("|---|---:|---|---|---:|---:|---:|---:|---:|---:|")
    geko_peak = {(r["device"], r["threads"], r["dtype"]): r["peak_growth_bytes"]["median"]
                 for r in results if r["variant"] == "geko"}
    for r in results:
        peak = r["peak_growth_bytes"]["median"]
        ratio = peak / geko_peak[(r["device"], r["threads"], r["dtype"])]
        print(f"| {r['device']} | {r['threads']} | {r['dtype']} | {r['variant']} | {mib(r['logits_bytes'])} | "
              f"{mib(peak)} | {peak / r['logits_bytes']:.2f} | {ratio:.2f} | {r['time_s']['median']:.3f} | "
              f"{r['cpu_s_per_call']['median']:.2f} |")
    devices = sorted({d for d, _ in configs})
    print("\npeak growth: " + "; ".join(f"{d}: {metric[d]}" for d in devices)
          + ". It includes the logits' gradient (1.00 x logits), which every variant allocates.")
    # Times on a shared machine are only as good as its idle cores: say how busy it was.
    print(f"load average (1 min) before / after: {load_before[0]:.2f} / {load_after[0]:.2f} "
          f"on {os.cpu_count()} CPUs")

    if args.json:
        data = {
            "machine": {
                "cpu_count": os.cpu_count(),
                "torch_default_threads": torch.get_num_threads(),
                "platform": platform.platform(),
                "python": platform.python_version(),
                "torch": torch.__version__,
                "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
                "load_average_1min_before_after": [load_before[0], load_after[0]],
            },
            "args": {"B": args.B, "T": args.T, "V": args.V, "repeats": args.repeats, "dtypes": args.dtypes,
                     "threads": args.threads, "prompt_fraction": 0.25, "timed_calls_per_process": TIMED_CALLS},
            "metric": metric,
            "results": results,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2) + "\n")
        tmp.replace(args.json)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
