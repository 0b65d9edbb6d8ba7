#!/usr/bin/env python3
"""Engine benchmark: the GEKO columnar state against an object-per-sample baseline.

For every N given with ``--n`` (default 1M and 10M), in one run, this measures (medians over
``--repeats`` repetitions unless stated):

* state memory per sample: the numpy column bytes / N; the growth of the resident set (read from
  ``/proc/self/statm``) across ``StateStore.create`` plus touching every page; the state file
  size / N. The store is file-backed (an Arrow state file under ``--state-dir``), so the on-disk
  figure is real;
* ``StateStore.create`` and ``StateStore.checkpoint`` of the whole state, in seconds;
* ``observe`` throughput in batches of 4096 uniformly random ids (sample-updates per second over
  200 batches per repetition), and the latency of one ``observe`` call of 32 ids in microseconds:
  per repetition, 10 series of 200 consecutive calls (each timed alone with
  ``time.perf_counter_ns``), summarised by the median, the mean and the 99th percentile of its
  2000 calls. The mean is what a training loop pays per call (throughput follows it); the gap to
  the median is the tail. Measured twice:

  - warm (``batch32_us``, ``batch32_mean_us``, ``batch32_p99_us``): after the mixing passes, every
    page of the state is resident and private (the steady state of a run);
  - cold (``batch32_cold``): the first 200 calls after ``StateStore.close`` + ``StateStore.open``
    of the same file, its pages still in the page cache. With the copy-on-write mapping the first
    write to each 4 KiB page of a column faults and copies the page (a 32-id call touches up to
    32 x 7 pages); a run pays this once per page after every open, for about N x 59 / 4096 faults.
    Run at the end, once per repetition, so no other figure sees a cold state.

  Each series also records the involuntary context switches of this process while it ran
  (``preempted``): on a shared 2-core machine one preemption costs a call a whole scheduler
  slice (~3-4 ms), which moves the mean of 200 calls by ~20 us and is not the engine's doing;
* ``repartition``, after mixing passes that observe every sample 5 times (buckets mixed, loss
  windows full: the steady state of a long run);
* ``weights()`` + ``plan_epoch(budget="full")`` together (N draws, the worst case), and
  ``plan_epoch(budget="trainable")`` alone.

The baseline models the original library's design: a dict ``{sample_id: SampleState}`` of plain
Python objects (no ``__slots__``), each with a ``deque(maxlen=5)`` loss window, updated and
repartitioned by per-sample Python loops, and planned with ``random.choices`` (the pure-Python
analogue of torch's ``WeightedRandomSampler``). It uses the same formulas and thresholds
(DESIGN section 2) and is checked against GEKO on a small state before it is timed. It runs at
``--baseline-n`` samples (default 1M, or N when that is smaller); its size-dependent times are
extrapolated linearly to larger N and marked in the table.

The run ends by reporting how much CPU other processes took meanwhile: on a 2-core machine any
competing process skews the timings (parallel kernels wait for a descheduled thread).

Run from the repository root (the table goes to stdout, progress to stderr)::

    python benchmarks/bench_engine.py
    python benchmarks/bench_engine.py --n 1000000 10000000 --json benchmarks/results/engine.json
    python benchmarks/bench_engine.py --n 100000000 --repeats 3     # state on disk, ~6 GB
"""
from __future__ import annotations

import argparse
import collections
import enum
import gc
import json
import math
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import numba
import numpy as np
from tqdm import tqdm

# Lets the script run from a plain checkout, without installing the package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from geko_state import COLUMN_NAMES, GEKOConfig, StateStore, bytes_per_sample  # noqa: E402

OBSERVE_BATCH = 4096
OBSERVE_BATCHES = 200  # per repetition
SMALL_BATCH = 32
SMALL_CALLS = 200  # consecutive calls per series
SMALL_SERIES = 10  # series per repetition
BASELINE_SMALL_SERIES = 3
BASELINE_REPEATS = 3  # observe figures of the (slow) baseline
BASELINE_HEAVY_REPEATS = 2  # its repartition and plan, each a full pass over the objects
MIX_CHUNK = 1 << 20  # ids per observe call in the mixing pass
TARGET_N = 10_000_000  # the N that DESIGN section 5 states its size-dependent targets for
# Above this N, create and checkpoint (each writes and fsyncs the whole state) run only once.
LARGE_N = 20_000_000
PAGE = os.sysconf("SC_PAGE_SIZE")
CONFIG = GEKOConfig(use_curriculum=False)


# ---------------------------------------------------------------------------- small helpers
def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def summary(raw: Sequence[float]) -> dict[str, Any]:
    return {"raw": [float(v) for v in raw], "median": median(raw)}


def seconds(fn: Callable[[], Any]) -> float:
    t0 = time.perf_counter_ns()
    fn()
    return (time.perf_counter_ns() - t0) / 1e9


def rss_bytes() -> int:
    """Current resident set size (anonymous and file-backed pages) of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # ru_maxrss is KiB on Linux


def user_cpu_seconds() -> tuple[float, float]:
    """(user CPU seconds machine-wide since boot, user CPU seconds of this process).

    User time only: our own fsyncs and page writeback run in kernel threads, which would
    otherwise count as another process competing for the cores.
    """
    with open("/proc/stat") as f:
        user, nice = map(int, f.readline().split()[1:3])
    return (user + nice) / os.sysconf("SC_CLK_TCK"), os.times().user


def random_batch(rng: np.random.Generator, n: int, size: int) -> tuple[np.ndarray, ...]:
    """One batch of training results: uniform ids, losses in [0, 3), confidences in [0, 1]."""
    ids = rng.integers(0, n, size, dtype=np.int64)
    losses = (rng.random(size, dtype=np.float32) * np.float32(3.0)).astype(np.float32)
    confidences = rng.random(size, dtype=np.float32)
    return ids, losses, confidences, losses < 0.5


def heavy_repeats(n: int, repeats: int) -> int:
    """Repetitions of create / checkpoint: each writes the whole state, so keep them few."""
    return 1 if n > LARGE_N else min(repeats, 3)


# ---------------------------------------------------------------------------- object baseline
class ObjBucket(enum.Enum):
    FREEZE = 0
    LIGHT = 1
    FOCUS = 2
    HARD = 3


class SampleState:
    """One sample's state as the original library kept it: a plain object (no __slots__)."""

    def __init__(self) -> None:
        self.confidence = 0.0
        self.q_value = 0.5
        self.last_loss = math.nan
        self.quality = 1.0
        self.correct = False
        self.bucket = ObjBucket.FOCUS
        self.times_seen = 0
        self.consecutive_frozen = 0
        self.frozen_at_epoch = -1
        self.pruned = False
        self.loss_window: collections.deque[float] = collections.deque(maxlen=5)


def pstdev(values: Sequence[float]) -> float:
    # Hand-written rather than statistics.pstdev (exact Fractions, ~20x slower): the baseline
    # should be an honest, reasonably fast pure-Python implementation, not a strawman.
    m = sum(values) / len(values)
    return math.sqrt(sum((v - m) * (v - m) for v in values) / len(values))


class ObjectBaseline:
    """dict {sample_id: SampleState} with per-sample Python loops (DESIGN section 2 formulas)."""

    def __init__(self, n: int, config: GEKOConfig, progress: bool = True) -> None:
        self.config = config
        self.epoch = 0
        ids = tqdm(range(n), desc="baseline objects", unit="obj", unit_scale=True, file=sys.stderr,
                   mininterval=1.0, disable=None if progress else True)
        self.samples: dict[int, SampleState] = {i: SampleState() for i in ids}

    def observe(self, ids: np.ndarray, losses: np.ndarray, confidences: np.ndarray,
                correct: np.ndarray) -> int:
        a = self.config.q_value_lr
        scale = self.config.q_value_loss_scale
        samples = self.samples
        # The original received framework tensors and converted them per batch as well.
        rows = zip(ids.tolist(), losses.tolist(), confidences.tolist(), correct.tolist())
        for sid, loss, conf, ok in rows:
            s = samples[sid]
            s.times_seen += 1
            s.last_loss = loss
            s.confidence = conf
            s.correct = ok
            window = s.loss_window
            window.append(loss)
            if len(window) >= 2:
                s.quality = max(0.0, 1.0 - min(pstdev(window), 1.0))
            s.q_value = (1.0 - a) * s.q_value + a * (1.0 - min(loss / scale, 1.0))
        return len(ids)

    def repartition(self) -> dict[ObjBucket, int]:
        cfg = self.config
        self.epoch += 1
        counts = dict.fromkeys(ObjBucket, 0)
        for s in self.samples.values():
            if s.pruned:
                continue
            if s.correct:
                if (s.confidence > cfg.freeze_confidence and s.quality > cfg.freeze_quality
                        and s.q_value >= cfg.min_q_for_freeze):
                    new = ObjBucket.FREEZE
                else:
                    new = ObjBucket.LIGHT
            elif s.confidence <= cfg.focus_confidence:
                new = ObjBucket.FOCUS
            else:
                new = ObjBucket.HARD
            s.bucket = new
            if new is ObjBucket.FREEZE:
                if s.consecutive_frozen == 0:
                    s.frozen_at_epoch = self.epoch
                s.consecutive_frozen += 1
                if 0 < cfg.prune_frozen_after <= s.consecutive_frozen:
                    s.pruned = True
                    continue
            else:
                s.consecutive_frozen = 0
                s.frozen_at_epoch = -1
            counts[new] += 1
        return counts

    def full_plan(self, seed: int) -> list[int]:
        """Weights for every sample, then N weighted draws with replacement."""
        hard, focus, light = self.config.bucket_weights
        by_bucket = {ObjBucket.FREEZE: 0.0, ObjBucket.LIGHT: light,
                     ObjBucket.FOCUS: focus, ObjBucket.HARD: hard}
        max_seen = self.config.max_times_seen
        population: list[int] = []
        weights: list[float] = []
        for sid, s in self.samples.items():
            eligible = not s.pruned and s.times_seen < max_seen
            population.append(sid)
            weights.append(by_bucket[s.bucket] if eligible else 0.0)
        return random.Random(seed).choices(population, weights, k=len(population))


# ---------------------------------------------------------------------------- shared timings
# Enough observations per sample to fill the loss window (LOSS_WINDOW = 5).
MIX_PASSES = 5
Observe = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]


def mixing_pass(observe: Observe, n: int, rng: np.random.Generator, label: str, chunk: int,
                passes: int = MIX_PASSES) -> None:
    """Observe every sample ``passes`` times with random results so buckets are mixed and every
    loss window is full: the steady state of a long run. (With windows still filling, observe
    speeds drift from repeat to repeat as more samples start computing the window's std.)"""
    starts = [(p, lo) for p in range(passes) for lo in range(0, n, chunk)]
    for _, lo in tqdm(starts, desc=f"{label} mixing passes", unit="batch", disable=None,
                      file=sys.stderr, mininterval=1.0):
        hi = min(n, lo + chunk)
        _, losses, confidences, correct = random_batch(rng, 1, hi - lo)
        observe(np.arange(lo, hi, dtype=np.int64), losses, confidences, correct)


def time_observe_throughput(observe: Observe, n: int, rng: np.random.Generator, repeats: int,
                            batches: int = OBSERVE_BATCHES) -> list[float]:
    """Sample-updates per second over ``batches`` calls of OBSERVE_BATCH ids, per repetition."""
    rates = []
    for _ in range(repeats):
        data = [random_batch(rng, n, OBSERVE_BATCH) for _ in range(batches)]
        t0 = time.perf_counter_ns()
        for batch in data:
            observe(*batch)
        elapsed = (time.perf_counter_ns() - t0) / 1e9
        rates.append(batches * OBSERVE_BATCH / elapsed)
    return rates


def involuntary_switches() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def minor_faults() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def latency_stats(durations: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(durations, dtype=np.float64)
    return {"median": float(np.median(arr)), "mean": float(arr.mean()),
            "p99": float(np.percentile(arr, 99)), "max": float(arr.max())}


def time_call_series(observe: Observe, n: int, rng: np.random.Generator,
                     calls: int = SMALL_CALLS) -> tuple[list[float], int, int]:
    """Microseconds of each of ``calls`` consecutive observe calls of SMALL_BATCH ids, with the
    involuntary context switches and minor page faults of this process meanwhile."""
    data = [random_batch(rng, n, SMALL_BATCH) for _ in range(calls)]
    durations = []
    switches, faults = involuntary_switches(), minor_faults()
    for batch in data:
        t0 = time.perf_counter_ns()
        observe(*batch)
        durations.append((time.perf_counter_ns() - t0) / 1e3)
    return durations, involuntary_switches() - switches, minor_faults() - faults


def time_small_batches(observe: Observe, n: int, rng: np.random.Generator, repeats: int,
                       series: int) -> dict[str, list[float]]:
    """Per repetition: median, mean, p99 and max microseconds of one observe call of SMALL_BATCH
    ids over ``series`` x SMALL_CALLS consecutive calls, and the context switches meanwhile."""
    out: dict[str, list[float]] = {"median": [], "mean": [], "p99": [], "max": [], "preempted": []}
    for _ in range(repeats):
        durations: list[float] = []
        preempted = 0
        for _ in range(series):
            d, switches, _ = time_call_series(observe, n, rng)
            durations += d
            preempted += switches
        for key, value in latency_stats(durations).items():
            out[key].append(value)
        out["preempted"].append(float(preempted))
    return out


def small_batch_figures(raw: dict[str, list[float]]) -> dict[str, Any]:
    """``batch32_us`` (medians, the figure kept from earlier versions) and its mean / p99 siblings."""
    return {
        "batch32_us": summary(raw["median"]),
        "batch32_mean_us": summary(raw["mean"]),
        "batch32_p99_us": summary(raw["p99"]),
        "batch32_max_us": summary(raw["max"]),
        "batch32_preempted": summary(raw["preempted"]),
    }


def time_repeated(fn: Callable[[int], Any], repeats: int) -> list[float]:
    """Seconds per call of ``fn(repetition)``; results are dropped before the next call."""
    return [seconds(lambda: fn(r)) for r in range(repeats)]


# ---------------------------------------------------------------------------- GEKO measurements
def remove_state(path: Path) -> None:
    path.unlink(missing_ok=True)
    path.with_name(path.name + ".json").unlink(missing_ok=True)  # the live file's metadata sidecar


def touch_pages(store: StateStore) -> None:
    """Read one byte per page of every column, so the resident set holds the whole state."""
    for name in COLUMN_NAMES:
        col = store.column(name)
        int(col.reshape(-1).view(np.uint8)[::PAGE].sum())


def create_geko(n: int, path: Path, repeats: int) -> tuple[StateStore, dict[str, Any]]:
    """Create the store ``repeats`` times (keeping the last), timing it and its resident growth."""
    times, rss_growth = [], []
    store = None
    for r in range(repeats):
        if store is not None:
            store.close()
            del store
            gc.collect()
            remove_state(path)
        before = rss_bytes()
        t0 = time.perf_counter_ns()
        store = StateStore.create(n, path=path, config=CONFIG)
        times.append((time.perf_counter_ns() - t0) / 1e9)
        touch_pages(store)
        rss_growth.append(rss_bytes() - before)
    assert store is not None
    column_bytes = sum(store.column(name).nbytes for name in COLUMN_NAMES)
    memory = {
        "schema_bytes_per_sample": bytes_per_sample(),
        "column_bytes_per_sample": column_bytes / n,
        "rss_growth_bytes": [int(v) for v in rss_growth],
        "rss_bytes_per_sample": median(rss_growth) / n,
        "file_bytes": path.stat().st_size,
        "file_bytes_per_sample": path.stat().st_size / n,
    }
    return store, {"create_s": summary(times), "memory": memory}


def time_checkpoint(store: StateStore, path: Path, repeats: int) -> dict[str, Any]:
    times, size = [], 0
    for _ in range(repeats):
        times.append(seconds(lambda: store.checkpoint(path)))
        size = path.stat().st_size
        path.unlink()  # the next N may need the disk space
    return {**summary(times), "file_bytes": size}


def weights_and_full_plan(store: StateStore, seed: int) -> int:
    w = store.weights()
    ids = store.plan_epoch(seed=seed, budget="full")
    return int(w.shape[0]) + int(ids.shape[0])


def time_cold_small_batches(store: StateStore, path: Path, n: int, rng: np.random.Generator,
                            repeats: int) -> tuple[dict[str, Any], StateStore]:
    """The first SMALL_CALLS observe calls of 32 ids after closing and reopening the state file,
    per repetition; returns the figures and the (reopened) store."""
    out: dict[str, Any] = {"median": [], "mean": [], "p99": [], "max": [], "preempted": [],
                           "minor_faults_per_call": []}
    for _ in range(repeats):
        store.close()
        store = StateStore.open(path)
        durations, switches, faults = time_call_series(store.observe, n, rng)
        for key, value in latency_stats(durations).items():
            out[key].append(value)
        out["preempted"].append(float(switches))
        out["minor_faults_per_call"].append(faults / len(durations))
    return {key: summary(values) for key, values in out.items()}, store


def measure_geko(n: int, state_dir: Path, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    path = state_dir / f"state-{n}.arrow"
    log(f"GEKO N={n:,}: create x{heavy_repeats(n, repeats)}")
    store, out = create_geko(n, path, heavy_repeats(n, repeats))
    try:
        mixing_pass(store.observe, n, rng, "GEKO", MIX_CHUNK)
        # Warm-up: numba's first call loads compiled code (cache=True) and may compile.
        store.observe(*random_batch(rng, n, OBSERVE_BATCH))
        store.observe(*random_batch(rng, n, SMALL_BATCH))
        log(f"GEKO N={n:,}: observe")
        out["observe_updates_per_s"] = summary(time_observe_throughput(store.observe, n, rng, repeats))
        out.update(small_batch_figures(time_small_batches(store.observe, n, rng, repeats, SMALL_SERIES)))

        log(f"GEKO N={n:,}: repartition")
        warm = store.repartition()
        out["buckets_after_mixing"] = {"freeze": warm.freeze, "light": warm.light,
                                       "focus": warm.focus, "hard": warm.hard}
        times = time_repeated(lambda r: store.repartition(), repeats)
        out["repartition_ms"] = summary([1e3 * s for s in times])

        log(f"GEKO N={n:,}: weights + plan")
        weights_and_full_plan(store, seed=10_000)
        out["weights_plan_full_s"] = summary(
            time_repeated(lambda r: weights_and_full_plan(store, r), repeats))
        out["plan_trainable_draws"] = int(store.plan_epoch(seed=10_000, budget="trainable").shape[0])
        out["plan_trainable_s"] = summary(
            time_repeated(lambda r: store.plan_epoch(seed=r, budget="trainable"), repeats))

        log(f"GEKO N={n:,}: checkpoint x{heavy_repeats(n, repeats)}")
        out["checkpoint_s"] = time_checkpoint(store, state_dir / f"checkpoint-{n}.arrow",
                                              heavy_repeats(n, repeats))

        log(f"GEKO N={n:,}: observe, cold (reopened store) x{repeats}")
        out["batch32_cold"], store = time_cold_small_batches(store, path, n, rng, repeats)
    finally:
        store.close()
        del store
        gc.collect()
        remove_state(path)
    out["peak_rss_bytes_so_far"] = peak_rss_bytes()
    return out


# ---------------------------------------------------------------------------- baseline measurements
def check_baseline_agrees(n: int = 20_000, rounds: int = 12) -> tuple[float, dict[str, int]]:
    """Share of samples whose bucket is the same in GEKO and the baseline after the same results,
    and GEKO's bucket counts (so one can see every bucket was exercised).

    Guards the baseline's fidelity: both see identical batches (with duplicate ids) over several
    epochs. Tiny differences are possible where a float32 GEKO value sits on a threshold.
    """
    rng = np.random.default_rng(0)
    store = StateStore.create(n, config=CONFIG)
    base = ObjectBaseline(n, CONFIG, progress=False)
    for _ in range(rounds):
        for _ in range(2 * n // 256):
            ids, _, confidences, _ = random_batch(rng, n, 256)
            # Low losses and high confidences for a third of the ids so FREEZE is reachable.
            easy = ids % 3 == 0
            losses = np.where(easy, rng.random(256) * 0.2, rng.random(256) * 3).astype(np.float32)
            confidences = np.where(easy, 0.9 + 0.1 * confidences, confidences).astype(np.float32)
            correct = losses < 0.5
            store.observe(ids, losses, confidences, correct)
            base.observe(ids, losses, confidences, correct)
        stats = store.repartition()
        base.repartition()
    geko_buckets = store.column("bucket")
    base_buckets = np.array([s.bucket.value for s in base.samples.values()], dtype=np.int8)
    agreement = float(np.mean(geko_buckets == base_buckets))
    store.close()
    counts = {"freeze": stats.freeze, "light": stats.light, "focus": stats.focus, "hard": stats.hard}
    return agreement, counts


def measure_baseline(n: int, repeats: int) -> dict[str, Any]:
    rng = np.random.default_rng(0)
    random.seed(0)
    gc.collect()
    before = rss_bytes()
    log(f"baseline N={n:,}: build {n:,} objects")
    t0 = time.perf_counter_ns()
    base = ObjectBaseline(n, CONFIG)
    create_s = (time.perf_counter_ns() - t0) / 1e9
    gc.collect()
    rss_fresh = rss_bytes() - before
    # Training-sized batches: huge ones would leave freed float objects' arenas in the RSS.
    mixing_pass(base.observe, n, rng, "baseline", OBSERVE_BATCH)
    gc.collect()
    rss_observed = rss_bytes() - before
    out: dict[str, Any] = {
        "n": n,
        "create_s": summary([create_s]),
        "memory": {
            "rss_bytes_per_sample_fresh": rss_fresh / n,
            # Headline figure: after the mixing passes (every sample observed 5 times), as for GEKO.
            "rss_bytes_per_sample": rss_observed / n,
        },
    }
    obs_repeats = min(repeats, BASELINE_REPEATS)
    log(f"baseline N={n:,}: observe")
    out["observe_updates_per_s"] = summary(time_observe_throughput(base.observe, n, rng, obs_repeats))
    out.update(small_batch_figures(
        time_small_batches(base.observe, n, rng, obs_repeats, BASELINE_SMALL_SERIES)))
    heavy = min(repeats, BASELINE_HEAVY_REPEATS)
    log(f"baseline N={n:,}: repartition")
    base.repartition()
    times = time_repeated(lambda r: base.repartition(), heavy)
    out["repartition_ms"] = summary([1e3 * s for s in times])
    log(f"baseline N={n:,}: weights + plan")
    out["weights_plan_full_s"] = summary(time_repeated(base.full_plan, heavy))
    del base
    gc.collect()
    return out


# ---------------------------------------------------------------------------- table
@dataclass(frozen=True)
class Target:
    limit: float
    higher_is_better: bool
    only_at_n: int | None = None  # None: a per-sample / per-batch target judged at every N

    def text(self, unit: str) -> str:
        sign = ">=" if self.higher_is_better else "<="
        where = f" @{self.only_at_n // 1_000_000}M" if self.only_at_n else ""
        return f"{sign} {self.limit:g} {unit}{where}"

    def verdict(self, n: int, value: float | None) -> str:
        if value is None:
            return "n/a"
        if self.only_at_n is not None and n != self.only_at_n:
            return "-"
        ok = value >= self.limit if self.higher_is_better else value <= self.limit
        return "PASS" if ok else "FAIL"


@dataclass(frozen=True)
class Row:
    metric: str
    unit: str
    n: int
    geko: float | None
    baseline: float | None
    baseline_mark: str  # "", "*" (scaled linearly) or "~" (measured at the baseline's N)
    higher_is_better: bool
    target: Target | None

    def ratio(self) -> float | None:
        """How many times better GEKO is: a speed-up, or a memory saving."""
        if self.geko is None or self.baseline is None or self.geko == 0 or self.baseline == 0:
            return None
        return self.geko / self.baseline if self.higher_is_better else self.baseline / self.geko


def fmt(value: float | None) -> str:
    if value is None:
        return "-"
    if abs(value) >= 1000:
        return f"{value:,.0f}"
    if abs(value) >= 100:
        return f"{value:.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:.3g}" if abs(value) >= 0.01 else f"{value:.2g}"


TARGETS = {
    "memory": Target(64, higher_is_better=False),
    "observe": Target(10, higher_is_better=True),
    "batch32": Target(20, higher_is_better=False),  # judged on the median and on the mean
    "repartition": Target(30, higher_is_better=False, only_at_n=TARGET_N),
    "plan": Target(0.5, higher_is_better=False, only_at_n=TARGET_N),
}


def rows_for(n: int, g: dict[str, Any], b: dict[str, Any] | None) -> list[Row]:
    """Table rows for one N; ``b`` is the baseline measured at ``b['n']`` (<= n) or None."""
    scale = n / b["n"] if b else 1.0
    same_n = b is not None and b["n"] == n

    def base(key: str, per_sample: bool, factor: float = 1.0) -> tuple[float | None, str]:
        if b is None:
            return None, ""
        value = b[key]["median"] if key in b else b["memory"][key]
        if same_n:
            return value * factor, ""
        return (value * factor, "~") if per_sample else (value * factor * scale, "*")

    mem = g["memory"]
    specs: list[tuple[str, str, float | None, tuple[float | None, str], bool, Target | None]] = [
        ("state memory, columns", "B/sample", mem["column_bytes_per_sample"],
         (None, ""), False, TARGETS["memory"]),
        ("state memory, RSS growth", "B/sample", mem["rss_bytes_per_sample"],
         base("rss_bytes_per_sample", True), False, TARGETS["memory"]),
        ("state on disk", "B/sample", mem["file_bytes_per_sample"], (None, ""), False, None),
        ("create", "s", g["create_s"]["median"], base("create_s", False), False, None),
        ("observe, batches of 4096", "M upd/s", g["observe_updates_per_s"]["median"] / 1e6,
         base("observe_updates_per_s", True, 1e-6), True, TARGETS["observe"]),
        ("observe, one batch of 32", "us", g["batch32_us"]["median"],
         base("batch32_us", True), False, TARGETS["batch32"]),
        ("  same, mean", "us", g["batch32_mean_us"]["median"],
         base("batch32_mean_us", True), False, TARGETS["batch32"]),
        ("  same, p99", "us", g["batch32_p99_us"]["median"],
         base("batch32_p99_us", True), False, None),
        ("  same, cold: mean (reopened)", "us", g["batch32_cold"]["mean"]["median"],
         (None, ""), False, None),
        ("  same, cold: median (reopened)", "us", g["batch32_cold"]["median"]["median"],
         (None, ""), False, None),
        ("repartition", "ms", g["repartition_ms"]["median"],
         base("repartition_ms", False), False, TARGETS["repartition"]),
        ("weights + plan (full, N draws)", "s", g["weights_plan_full_s"]["median"],
         base("weights_plan_full_s", False), False, TARGETS["plan"]),
        ("plan (trainable)", "s", g["plan_trainable_s"]["median"], (None, ""), False, None),
        ("checkpoint", "s", g["checkpoint_s"]["median"], (None, ""), False, None),
    ]
    return [Row(metric, unit, n, gv, bv, mark, hib, target)
            for metric, unit, gv, (bv, mark), hib, target in specs]


def format_table(rows: Iterable[Row]) -> str:
    header = ("metric", "unit", "N", "GEKO", "objects", "ratio", "target", "vs target")
    lines = [header]
    previous_n = None
    for r in rows:
        if previous_n is not None and r.n != previous_n:
            lines.append(None)  # type: ignore[arg-type]  (a blank separator between sizes)
        previous_n = r.n
        ratio = r.ratio()
        lines.append((
            r.metric, r.unit, f"{r.n:,}", fmt(r.geko),
            fmt(r.baseline) + r.baseline_mark if r.baseline is not None else "-",
            f"{ratio:,.1f}x" if ratio is not None else "-",
            r.target.text(r.unit) if r.target else "-",
            r.target.verdict(r.n, r.geko) if r.target else "-",
        ))
    cells = [line for line in lines if line is not None]
    widths = [max(len(line[i]) for line in cells) for i in range(len(header))]
    left = {0, 1, 6}  # text columns; numbers are right-aligned

    def render(line: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in left else c.rjust(w)
                         for i, (c, w) in enumerate(zip(line, widths))).rstrip()

    out = [render(header), "  ".join("-" * w for w in widths)]
    out += ["" if line is None else render(line) for line in lines[1:]]
    return "\n".join(out)


def footnotes(baselines: dict[int, dict[str, Any]], skipped: bool,
              geko: dict[int, dict[str, Any]] | None = None) -> str:
    notes: list[str] = []
    if baselines:
        sizes = ", ".join(f"{n:,}" for n in sorted(baselines))
        notes += [
            "ratio: how many times better GEKO is (baseline time / GEKO time, GEKO rate / baseline",
            "       rate, baseline bytes / GEKO bytes).",
            "objects: dict of plain Python objects with per-sample loops; its memory is the RSS",
            "       growth after building the objects and observing every sample 5 times.",
            f"*  baseline measured at N = {sizes} and scaled linearly to this N.",
            f"~  baseline measured at N = {sizes} (a per-sample or per-batch figure, not scaled).",
        ]
    if skipped:
        notes.append("baseline skipped (--no-baseline).")
    notes += [
        f"batch of 32: {SMALL_SERIES} series of {SMALL_CALLS} consecutive calls per repetition; median, mean",
        "       and p99 of each repetition's calls, then the median over repetitions. warm: after the",
        "       mixing passes; cold: the first calls after close + open of the state file (each first",
        "       write to a page of the copy-on-write mapping faults; paid once per page per open).",
    ]
    for n, g in sorted((geko or {}).items()):
        warm, cold = g["batch32_preempted"]["raw"], g["batch32_cold"]["preempted"]["raw"]
        notes.append(
            f"       N = {n:,}: calls preempted (involuntary context switches) per repetition: warm "
            f"{', '.join(f'{v:.0f}' for v in warm)} of {SMALL_SERIES * SMALL_CALLS}; cold "
            f"{', '.join(f'{v:.0f}' for v in cold)} of {SMALL_CALLS}; cold minor faults per call "
            f"{g['batch32_cold']['minor_faults_per_call']['median']:.0f}.")
    notes += [
        "targets (DESIGN section 5): per-sample and per-batch ones are judged at every N;",
        f"       repartition and weights + plan only at N = {TARGET_N:,} ('-' elsewhere).",
    ]
    return "\n".join(notes)


# ---------------------------------------------------------------------------- machine, JSON, main
def machine_info() -> dict[str, Any]:
    import pyarrow

    mem_total = None
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem_total = int(line.split()[1]) * 1024
    return {
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)),
        "numba_threads": numba.get_num_threads(),
        "memory_total_bytes": mem_total,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "numba": numba.__version__,
        "pyarrow": pyarrow.__version__,
    }


def write_json(path: Path, data: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n")
    os.replace(tmp, path)  # readers never see a half-written file


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, nargs="+", default=[1_000_000, 10_000_000],
                   help="sample counts to measure (default: 1M 10M)")
    p.add_argument("--json", type=Path, help="write every figure (raw and medians) to this file")
    p.add_argument("--repeats", type=int, default=5, help="repetitions per figure (default 5)")
    p.add_argument("--state-dir", type=Path,
                   help="folder for the state files (default: a temporary folder, removed at the end)")
    p.add_argument("--baseline-n", type=int, default=1_000_000,
                   help="objects in the baseline (default 1M; N when smaller); "
                        "scaled linearly to larger N")
    p.add_argument("--no-baseline", action="store_true", help="skip the object baseline")
    p.add_argument("--history", action="store_true",
                   help="also time history recording per epoch at each N (benchmarks/bench_history.py)")
    p.add_argument("--history-epochs", type=int, default=3, help="epochs for --history (default 3)")
    args = p.parse_args(argv)
    if any(n < 1 for n in args.n) or args.repeats < 1 or args.baseline_n < 1:
        p.error("--n, --repeats and --baseline-n must be >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    random.seed(0)  # every numpy draw comes from np.random.default_rng(0) made per measurement
    started = time.perf_counter()
    busy_start, own_start = user_cpu_seconds()
    sizes = sorted(set(args.n))
    own_dir = args.state_dir is None
    state_dir = Path(tempfile.mkdtemp(prefix="geko-bench-")) if own_dir else args.state_dir
    state_dir.mkdir(parents=True, exist_ok=True)

    results: dict[str, Any] = {"machine": machine_info(), "args": {
        "n": sizes, "repeats": args.repeats, "baseline_n": args.baseline_n,
        "no_baseline": args.no_baseline, "state_dir": str(state_dir)}}
    baselines: dict[int, dict[str, Any]] = {}
    try:
        # The baseline runs first, in a fresh process, so its RSS growth is not blurred by freed
        # GEKO buffers (and GEKO's resident figures are unaffected: they are mapped file pages).
        if not args.no_baseline:
            agreement, counts = check_baseline_agrees()
            log(f"baseline agrees with GEKO on {agreement:.4%} of buckets "
                f"(20,000 samples, 12 epochs; GEKO buckets {counts})")
            results["baseline_check"] = {"bucket_agreement": agreement, "geko_buckets": counts}
            for bn in sorted({min(args.baseline_n, n) for n in sizes}):
                baselines[bn] = measure_baseline(bn, args.repeats)
        geko = {n: measure_geko(n, state_dir, args.repeats) for n in sizes}
        history: dict[int, dict[str, Any]] = {}
        if args.history:
            sys.path.insert(0, str(Path(__file__).resolve().parent))
            import bench_history  # noqa: PLC0415  (sibling script, only needed with --history)

            for n in sizes:
                history[n] = bench_history.run(n, args.history_epochs, state_dir / f"history-{n}")
    finally:
        if own_dir:
            shutil.rmtree(state_dir, ignore_errors=True)

    rows: list[Row] = []
    for n in sizes:
        b = baselines.get(min(args.baseline_n, n)) if baselines else None
        rows += rows_for(n, geko[n], b)
    print(format_table(rows))
    print()
    print(footnotes(baselines, args.no_baseline, geko))
    for n, res in history.items():
        print()
        print(bench_history.table(n, res))
    wall = time.perf_counter() - started
    busy_end, own_end = user_cpu_seconds()
    # CPU time other processes took during the run: on 2 cores, any of it skews the timings.
    others = max(0.0, (busy_end - busy_start) - (own_end - own_start))
    print(f"\ntotal wall time {wall:.1f} s; peak RSS {peak_rss_bytes() / 2**30:.2f} GiB; "
          f"other processes used {others:.1f} user CPU-s ({others / wall:.0%} of one core)"
          + (" -- timings may be skewed by contention" if others / wall > 0.05 else ""))

    results.update({
        "geko": {str(n): geko[n] for n in sizes},
        "baseline": {str(n): b for n, b in baselines.items()},
        "history": {str(n): h for n, h in history.items()},
        "table": [{**asdict(r), "ratio": r.ratio(),
                   "verdict": r.target.verdict(r.n, r.geko) if r.target else None} for r in rows],
        "total_wall_s": wall,
        "other_processes_user_cpu_s": others,
        "peak_rss_bytes": peak_rss_bytes(),
    })
    if args.json:
        write_json(args.json, results)
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
