#!/usr/bin/env python3
"""History benchmark: the cost of recording bucket history at scale (seconds and bytes per epoch).

One synthetic run (``geko_state.simulate``, budget "trainable") of ``--n`` samples over
``--epochs`` epochs; after every repartition the same state is recorded by three writers, each into
its own run directory under ``--dir``:

* ``full``: a per-sample snapshot every epoch (``HistoryConfig()``);
* ``changed_only``: only the samples whose bucket or pruned flag changed since the previous
  snapshot (``HistoryConfig(changed_only=True)``; the writer's first snapshot holds every row);
* ``summary_only``: the epoch summary row alone (what ``every=k`` costs on the epochs it skips).

Each figure is one ``HistoryWriter.record`` call, fsyncs included (files are written under a
temporary name, fsynced and renamed). Bytes per sample per epoch = snapshot file size / N. The run
ends with the time DuckDB takes for two queries over the full history. The state lives in memory;
the history files are deleted at the end unless ``--keep``.

Run from the repository root (the table goes to stdout, progress to stderr)::

    python benchmarks/bench_history.py                          # 10M samples, 4 epochs
    python benchmarks/bench_history.py --n 1000000 --epochs 8 --json benchmarks/results/history.json
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Sequence


ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from geko_state import GEKO_BALANCED, HistoryConfig, HistoryWriter, StateStore, connect  # noqa: E402
from geko_state.io import atomic_write_json  # noqa: E402
from geko_state.simulate import SyntheticTask, simulate  # noqa: E402

MODES: dict[str, HistoryConfig] = {
    "full": HistoryConfig(),
    "changed_only": HistoryConfig(changed_only=True),
    "summary_only": HistoryConfig(every=1_000_000),
}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def run(n: int, epochs: int, base: Path) -> dict[str, Any]:
    config = GEKO_BALANCED.replace(prune_frozen_after=2, log_bucket_stats=False)
    store = StateStore.create(n, None, config)
    writers = {mode: HistoryWriter(base / mode, cfg) for mode, cfg in MODES.items()}
    rows: list[dict[str, Any]] = []
    t_sim = time.perf_counter()
    for r in simulate(store, epochs, SyntheticTask(seed=0), seed=0):
        sim_s = time.perf_counter() - t_sim
        for mode, w in writers.items():
            rec = w.record(store, r.stats, samples_trained=r.trained)
            rows.append({
                "mode": mode, "epoch": r.epoch, "rows": rec.rows, "seconds": rec.seconds, "bytes": rec.bytes,
                "bytes_per_sample": rec.bytes / n, "changed": r.stats.changed, "trained": r.trained,
            })
        log(f"epoch {r.epoch}: simulate {sim_s:.1f} s, " + ", ".join(
            f"{x['mode']} {x['seconds']:.2f} s" for x in rows[-len(writers):]))
        t_sim = time.perf_counter()
    store.close()

    queries = {
        "history rows per epoch and bucket": "SELECT epoch, bucket, count(*) FROM history GROUP BY ALL",
        "transitions per epoch (window over the history)": "SELECT epoch, count(*) FROM transitions GROUP BY 1",
    }
    con = connect(base / "full")
    query_s = {}
    for name, sql in queries.items():
        t = time.perf_counter()
        con.sql(sql).fetchall()
        query_s[name] = time.perf_counter() - t
    con.close()
    return {"rows": rows, "queries": query_s}


def table(n: int, res: dict[str, Any]) -> str:
    out = [f"History recording, N = {n:,} samples (one HistoryWriter.record call per epoch, fsync included)",
           "",
           f"{'mode':<13} {'epoch':>5} {'changed':>11} {'rows written':>13} {'seconds':>8} {'MB':>8} {'B/sample':>9}"]
    for r in res["rows"]:
        out.append(f"{r['mode']:<13} {r['epoch']:>5} {r['changed']:>11,} {r['rows']:>13,} {r['seconds']:>8.3f} "
                   f"{r['bytes'] / 1e6:>8.1f} {r['bytes_per_sample']:>9.2f}")
    out += ["", f"{'mode':<13} {'median s/epoch':>15} {'mean B/sample/epoch':>20}"]
    for mode in MODES:
        rs = [r for r in res["rows"] if r["mode"] == mode]
        out.append(f"{mode:<13} {statistics.median(r['seconds'] for r in rs):>15.3f} "
                   f"{statistics.fmean(r['bytes_per_sample'] for r in rs):>20.2f}")
    out += ["", "DuckDB over the full history:"]
    out += [f"  {name}: {s:.2f} s" for name, s in res["queries"].items()]
    return "\n".join(out)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=10_000_000, help="samples (default 10M)")
    p.add_argument("--epochs", type=int, default=4, help="epochs (default 4)")
    p.add_argument("--dir", type=Path, default=None, help="where to write the history (default: a temp folder)")
    p.add_argument("--keep", action="store_true", help="keep the history files")
    p.add_argument("--json", type=Path, help="write every figure to this file")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    base = Path(tempfile.mkdtemp(prefix="geko_hist_", dir=args.dir))
    try:
        res = run(args.n, args.epochs, base)
    finally:
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    print(table(args.n, res))
    if args.json:
        atomic_write_json(args.json, {
            "n": args.n, "epochs": args.epochs, "machine": platform.platform(), "cpus": os.cpu_count(),
            **res,
        })
        log(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
