"""The wall-time side of ``geko demo``: a fair start for both runs, their clocks, and the summary lines.

Sample passes are exact; wall time is not, and the demo's two runs are timed one after the other in
one process. So: everything a first run would pay alone (numba compilation, matplotlib's import and
font cache) is paid before either; GEKO's wall time includes all its own work (per-sample signals,
recording, plans, epoch ends, history, plots) and that work is shown; uniform's run records the same
history only so that the demo can print its table, so that bookkeeping is taken out of uniform's
time for the comparison. A busy machine is said to be busy rather than blamed on either run.
"""
from __future__ import annotations

import io
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["RunClock", "cpu_share", "wall_lines", "warm_up"]

# Below this share of the CPU time a run could have used, the machine was busy: on an idle 2-core
# machine the demo's runs get about 1.0, under a second process 0.5 to 0.7.
BUSY_SHARE = 0.8


def warm_up() -> None:
    """Pay the first-call costs before the timed runs, so that they are not charged to the first."""
    from geko_state import StateStore

    from .threads import torch_threads_kept

    n = 4096
    rng = np.random.default_rng(0)
    with torch_threads_kept(), StateStore.create(n, None) as store:  # numba compiles (or loads its cache)
        for replacement in (True, False):
            ids = np.arange(n, dtype=np.int64)
            store.observe(ids, rng.random(n).astype(np.float32), rng.random(n).astype(np.float32), rng.random(n) < 0.5)
            store.observe(ids[:32], np.ones(32, np.float32), np.ones(32, np.float32), np.ones(32, bool))
            store.repartition()
            store.build_plan(0, replacement=replacement, total_epochs=4)
    try:  # the runs' plots: matplotlib's import and font cache take about half a second
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        return
    fig = Figure(figsize=(1, 1))
    FigureCanvasAgg(fig)
    fig.add_subplot().set_title("warm-up")
    fig.savefig(io.BytesIO(), format="png")


@dataclass
class RunClock:
    """Wall and process CPU seconds from construction to :meth:`stop`."""

    wall0: float = 0.0
    cpu0: float = 0.0

    def __post_init__(self) -> None:
        self.wall0, self.cpu0 = time.perf_counter(), time.process_time()

    def stop(self) -> tuple[float, float]:
        return time.perf_counter() - self.wall0, time.process_time() - self.cpu0


def cpu_share(run: dict[str, Any]) -> float:
    """The share of the CPU time the run could have used that it got. GEKO's work and the plots are
    taken as single-threaded, the rest as using every torch thread (idle threads spin, so they count)."""
    parallel = max(run["wall_s"] - run["geko_work_s"], 0.0)
    usable = parallel * run["threads"] + run["geko_work_s"]
    return run["cpu_s"] / usable if usable > 0 else 1.0


def wall_lines(summary: dict[str, Any]) -> tuple[list[str], list[str]]:
    """The wall-time rows of the side-by-side table, and the lines that follow the compute line."""
    g, u = summary["geko"], summary["uniform"]
    rows = [
        f"{'wall time':22}{g['wall_s']:>13.1f}s{u['wall_s']:>13.1f}s",
        f"{'  of it GEKO work':22}{g['geko_work_s']:>13.1f}s{u['geko_work_s']:>13.1f}s",
        f"{'  of it evaluation':22}{g['eval_s']:>13.1f}s{u['eval_s']:>13.1f}s",
    ]
    # Uniform's run records GEKO's history only for this printout; plain uniform training would not.
    plain = u["wall_s"] - u["geko_work_s"]
    change = g["wall_s"] / plain - 1 if plain > 0 else float("inf")
    verdict = (f"Wall time saved by GEKO: {-100 * change:.1f}%" if change <= 0
               else f"GEKO took {100 * change:.1f}% more wall time than uniform")
    after = [
        f"{verdict} ({g['wall_s']:.1f}s, all its own work included, vs {plain:.1f}s: uniform's run without the "
        f"{u['geko_work_s']:.1f}s of GEKO bookkeeping it did only for this comparison).",
        (f"GEKO work: per-sample signals, recording, plans, epoch ends, history and plots "
         f"({100 * g['geko_work_s'] / g['wall_s']:.0f}% of GEKO's run). Evaluation and plots do not shrink with "
         "the passes saved, so on a model this small wall time saves less than passes do."),
    ]
    if summary.get("device") == "cpu":
        shares = [cpu_share(r) for r in (g, u)]
        if min(shares) < BUSY_SHARE:
            after.append(
                f"Note: the runs got {100 * shares[0]:.0f}% (GEKO) and {100 * shares[1]:.0f}% (uniform) of the CPU "
                f"time their {g['threads']} torch threads could use: the machine was busy, and torch's threads "
                "wait for each other when another process takes a core, so these wall times say more about "
                "the other load than about GEKO. Compare sample passes, or rerun on an idle machine.")
    return rows, after
