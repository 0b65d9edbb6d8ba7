"""PNG plots of a run: bucket shares, bucket moves, Q and loss distributions per bucket.

matplotlib is optional (``pip install 'geko-engine[plots]'``) and imported on first use. Figures are drawn
on the Agg canvas directly, without pyplot, so the caller's matplotlib backend is left alone.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

# MissingDependencyError is re-exported here: its home was this module.
from .errors import MissingDependencyError
from .history import TRANSITION_COLUMNS, count_column
from .io import atomic_path
from .report import EfficiencyReport, build_report, sample_distributions
from .schema import BUCKET_NAMES, Bucket

__all__ = ["BUCKET_COLORS", "MissingDependencyError", "PLOT_FILES", "render_plots"]

BUCKET_COLORS: dict[str, str] = {
    "FREEZE": "#4C72B0", "LIGHT": "#55A868", "FOCUS": "#DD8452", "HARD": "#C44E52", "pruned": "#A0A0A0",
}
PLOT_FILES: tuple[str, ...] = ("bucket_shares.png", "transitions.png", "distributions.png")


def _mpl() -> Any:
    try:
        import matplotlib
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise MissingDependencyError("plots need matplotlib: pip install 'geko-engine[plots]'") from None
    return matplotlib, Figure, FigureCanvasAgg


def _new_figure(**kw: Any) -> Any:
    _, Figure, FigureCanvasAgg = _mpl()
    fig = Figure(**kw)
    FigureCanvasAgg(fig)
    return fig


def _save(fig: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110)
    return path


def plot_bucket_shares(report: EfficiencyReport, path: Path) -> Path:
    """Stacked bucket shares of N per epoch, and samples trained per epoch against N."""
    e = report.epochs
    n = report.n_samples
    x = e["epoch"].to_numpy()
    fig = _new_figure(figsize=(9, 7.5), layout="constrained")
    ax, ax2 = fig.subplots(2, 1, sharex=True, height_ratios=[3, 2])
    layers = {b.name: 100 * e[count_column(b)].to_numpy() / n for b in Bucket}
    layers["pruned"] = 100 * e["pruned"].to_numpy() / n
    colors = [BUCKET_COLORS[k] for k in layers]
    if len(x) >= 2:
        ax.stackplot(x, *layers.values(), labels=list(layers), colors=colors, alpha=0.9)
    else:  # an area needs two points
        bottom = np.zeros(len(x))
        for (name, v), c in zip(layers.items(), colors):
            ax.bar(x, v, bottom=bottom, label=name, color=c, width=0.6)
            bottom += v
    ax.set_ylim(0, 100)
    ax.set_ylabel("share of all samples (%)")
    ax.set_title(f"Bucket shares over epochs ({n:,} samples)")
    handles, labels = ax.get_legend_handles_labels()
    ax.legend(handles[::-1], labels[::-1], loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax.grid(axis="y", alpha=0.3)

    trained = e["samples_trained"].to_numpy()
    ax2.bar(x, trained, color="#6A6A9A", width=0.6, label="samples trained")
    ax2.axhline(n, color="black", linestyle="--", linewidth=1, label="full-data epoch (N)")
    ax2.set_ylim(0, max(n, int(trained.max(initial=0))) * 1.15)
    ax2.set_ylabel("sample passes")
    ax2.set_xlabel("epoch")
    ax2.set_title(
        f"Samples trained per epoch: {report.samples_trained:,} of {report.full_data_passes:,} "
        f"(N x epochs), {100 * report.compute_saved:.1f}% saved"
    )
    ax2.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False)
    ax2.grid(axis="y", alpha=0.3)
    ax2.set_xticks(x)
    return _save(fig, path)


def _annotate(ax: Any, data: np.ma.MaskedArray, norm: Any, fontsize: float) -> None:
    for (i, j), v in np.ndenumerate(data.astype(float).filled(np.nan)):
        if not np.isfinite(v):
            continue
        # viridis is dark at the low end: white text there, black on the light high end.
        ax.text(j, i, f"{int(v):,}", ha="center", va="center", fontsize=fontsize,
                color="white" if norm(v) < 0.55 else "black")


def plot_transitions(report: EfficiencyReport, path: Path) -> Path:
    """Bucket moves: the from x to matrix over all epochs, and each kind of move per epoch."""
    matplotlib, _, _ = _mpl()
    from matplotlib.colors import LogNorm

    e = report.epochs
    epochs = e["epoch"].to_list()
    total = report.transition_matrix().astype(float)
    per_epoch = np.array([e[col].cast(float).fill_null(np.nan).to_numpy() for _, _, col in TRANSITION_COLUMNS])
    used = [i for i, (a, b, _) in enumerate(TRANSITION_COLUMNS) if total[a, b] > 0]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="#EEEEEE")
    vmax = max(float(np.nanmax(per_epoch, initial=1)), float(total.max(initial=1)), 1.0)

    fig = _new_figure(figsize=(13, 5.5), layout="constrained")
    ax, ax2 = fig.subplots(1, 2, width_ratios=[1, max(1.4, min(3.0, len(epochs) / 4))])
    m = np.ma.masked_where(np.eye(4, dtype=bool) | (total == 0), total)
    norm = LogNorm(vmin=1, vmax=max(float(total.max(initial=1)), 2.0))
    ax.imshow(m, cmap=cmap, norm=norm)
    _annotate(ax, m, norm, 9)
    for i in range(4):
        ax.text(i, i, "stay", ha="center", va="center", fontsize=8, color="#777777")
    ax.set_xticks(range(4), BUCKET_NAMES)
    ax.set_yticks(range(4), BUCKET_NAMES)
    ax.set_xlabel("to bucket")
    ax.set_ylabel("from bucket")
    ax.set_title("Moves summed over all epochs")

    if used:
        data = np.ma.masked_invalid(per_epoch[used])
        data = np.ma.masked_where(data == 0, data)
        norm2 = LogNorm(vmin=1, vmax=max(vmax, 2.0))
        im = ax2.imshow(data, cmap=cmap, norm=norm2, aspect="auto", interpolation="nearest")
        if len(epochs) <= 16:
            _annotate(ax2, data, norm2, 8)
        labels = [f"{TRANSITION_COLUMNS[i][0].name} → {TRANSITION_COLUMNS[i][1].name}" for i in used]
        ax2.set_yticks(range(len(used)), labels)
        step = max(1, len(epochs) // 20)
        ax2.set_xticks(range(0, len(epochs), step), [str(v) for v in epochs[::step]])
        fig.colorbar(im, ax=ax2, label="samples moved (log scale)", shrink=0.9)
    else:
        ax2.text(0.5, 0.5, "no sample changed bucket", ha="center", va="center", transform=ax2.transAxes)
        ax2.set_yticks([])
    ax2.set_xlabel("epoch")
    ax2.set_title("Moves per epoch (grey: none, or unknown)")
    fig.suptitle("Bucket transitions")
    return _save(fig, path)


def plot_distributions(run_dir: Path, path: Path, *, per_bucket: int = 50_000) -> Path:
    """Histograms of Q-value and last loss per bucket, as shares of each bucket's samples."""
    d = sample_distributions(run_dir, per_bucket=per_bucket)
    fig = _new_figure(figsize=(12, 4.8), layout="constrained")
    axq, axl = fig.subplots(1, 2)
    frame = d.frame
    losses = frame["last_loss"].to_numpy()
    finite = losses[np.isfinite(losses) & (losses > 0)]
    lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (1e-3, 10.0)
    loss_bins = np.geomspace(lo, hi * 1.0001 if hi > lo else lo * 10, 50)
    q = frame["q_value"].to_numpy()
    q_lo = float(np.floor(20 * q.min()) / 20) if q.size else 0.0
    q_bins = np.linspace(min(q_lo, 0.5), 1, 51)
    for b in Bucket:
        sub = frame.filter(frame["bucket"] == b.name)
        if sub.height == 0:
            continue
        label = f"{b.name} (n={d.totals[b.name]:,})"
        color = BUCKET_COLORS[b.name]
        sq = sub["q_value"].to_numpy()
        # Shares rather than densities: with log-spaced loss bins a density would inflate the
        # narrow low-loss bins; shares read the same on both panels.
        axq.hist(sq, bins=q_bins, weights=np.full(sq.size, 100 / sq.size), histtype="step",
                 linewidth=1.8, color=color, label=label)
        sl = sub["last_loss"].to_numpy()
        sl = sl[np.isfinite(sl) & (sl > 0)]
        if sl.size:
            axl.hist(sl, bins=loss_bins, weights=np.full(sl.size, 100 / sl.size), histtype="step",
                     linewidth=1.8, color=color, label=label)
    axq.set_xlabel("Q-value")
    axq.set_ylabel("% of the bucket's samples")
    axq.set_title("Q-value per bucket")
    if frame.height:
        axq.legend(frameon=False)
    axl.set_xscale("log")
    axl.set_xlabel("last loss (log scale)")
    axl.set_ylabel("% of the bucket's seen samples")
    axl.set_title("Last loss per bucket (seen samples)")
    if finite.size:
        axl.legend(frameon=False)
    fig.suptitle(f"Distributions of unpruned samples ({d.source})")
    return _save(fig, path)


def render_plots(run_dir: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> list[Path]:
    """Write the run's PNG plots (:data:`PLOT_FILES`) to ``out_dir`` (default ``RUN_DIR/plots``)."""
    _mpl()
    report = build_report(run_dir)
    out = Path(out_dir) if out_dir is not None else report.run_dir / "plots"
    out.mkdir(parents=True, exist_ok=True)
    shares, moves, dists = (out / name for name in PLOT_FILES)
    return [
        plot_bucket_shares(report, shares),
        plot_transitions(report, moves),
        plot_distributions(report.run_dir, dists),
    ]
