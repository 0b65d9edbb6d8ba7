"""The efficiency report of a run: per-epoch buckets, compute actually saved, accuracy, pruning.

Pure data and text; :mod:`geko_state.plots` draws it.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from .errors import InputError
from .history import SNAPSHOT_FILE, TRANSITION_COLUMNS, count_column, read_summary
from .historyfile import read_history_file
from .run import Run, open_run
from .schema import BUCKET_NAMES, Bucket

__all__ = ["Distributions", "EfficiencyReport", "build_report", "sample_distributions"]


def _fmt_int(v: int) -> str:
    return f"{v:,}"


def _fmt_bytes(n: float) -> str:
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"  # pragma: no cover


@dataclass(frozen=True)
class EfficiencyReport:
    """A run's epoch summary (``epochs``, one row per epoch) and the size of its history."""

    run_dir: Path
    epochs: pl.DataFrame
    snapshots: int  # history files on disk
    history_bytes: int

    @property
    def n_samples(self) -> int:
        return int(self.epochs["n_samples"][0])

    @property
    def n_epochs(self) -> int:
        return self.epochs.height

    @property
    def samples_trained(self) -> int:
        """Sample passes over all epochs."""
        return int(self.epochs["samples_trained"].sum())

    @property
    def full_data_passes(self) -> int:
        """N x epochs: what uniform full-data training would have spent."""
        return self.n_samples * self.n_epochs

    @property
    def skipped_nonfinite(self) -> int:
        """Observations dropped for a non-finite loss or confidence (``nan_policy="skip"``)."""
        return int(self.epochs["skipped_nonfinite"].sum())

    @property
    def compute_saved(self) -> float:
        """Share of the full-data sample passes not spent."""
        return 1.0 - self.samples_trained / self.full_data_passes

    @property
    def bytes_per_sample_epoch(self) -> float:
        """History bytes on disk per sample per epoch (skipped epochs included)."""
        return self.history_bytes / self.full_data_passes

    def transition_counts(self) -> pl.DataFrame:
        """Exact moves per epoch, long form: ``epoch, from_bucket, to_bucket, count`` (count null
        when the buckets before the epoch are unknown)."""
        return pl.concat(
            [
                self.epochs.select(
                    pl.col("epoch"),
                    pl.lit(a.name).alias("from_bucket"),
                    pl.lit(b.name).alias("to_bucket"),
                    pl.col(col).alias("count"),
                )
                for a, b, col in TRANSITION_COLUMNS
            ]
        ).sort("epoch", "from_bucket", "to_bucket")

    def transition_matrix(self) -> np.ndarray:
        """int64 ``[4, 4]`` moves summed over epochs, indexed ``[from, to]`` by Bucket value
        (diagonal 0: staying is not a move)."""
        m = np.zeros((4, 4), dtype=np.int64)
        for a, b, col in TRANSITION_COLUMNS:
            m[a, b] = int(self.epochs[col].fill_null(0).sum())
        return m

    def __str__(self) -> str:
        return self.format()

    def format(self) -> str:
        """The report as text (what ``geko report`` prints)."""
        e = self.epochs
        width = max(14, max((len(p) for p in e["phase"].drop_nulls().to_list()), default=0))
        head = (
            f"{'epoch':>5}  {'phase':<{width}} {'trained':>12} "
            + " ".join(f"{b:>7}" for b in BUCKET_NAMES)
            + f" {'pruned':>10} {'changed':>10} {'acc':>6}"
        )
        lines = [
            f"GEKO efficiency report: {self.run_dir}",
            f"{_fmt_int(self.n_samples)} samples, {self.n_epochs} epochs",
            "",
            head,
        ]
        for r in e.iter_rows(named=True):
            active = max(r["active"], 1)
            shares = " ".join(f"{100 * r[count_column(b)] / active:6.1f}%" for b in Bucket)
            acc = "   n/a" if r["accuracy"] is None else f"{100 * r['accuracy']:5.1f}%"
            lines.append(
                f"{r['epoch']:>5}  {(r['phase'] or '-'):<{width}} {_fmt_int(r['samples_trained']):>12} "
                f"{shares} {_fmt_int(r['pruned']):>10} {_fmt_int(r['changed']):>10} {acc}"
            )
        lines.append("(bucket shares are of unpruned samples; changed: samples whose bucket moved)")
        lines += [
            "",
            f"compute: {_fmt_int(self.samples_trained)} sample passes of {_fmt_int(self.full_data_passes)} "
            f"for N x epochs -> {100 * self.compute_saved:.1f}% saved",
        ]
        if self.skipped_nonfinite:
            per_epoch = ", ".join(
                f"epoch {r['epoch']}: {_fmt_int(r['skipped_nonfinite'])}"
                for r in e.iter_rows(named=True) if r["skipped_nonfinite"]
            )
            lines.append(f"non-finite results skipped (nan_policy='skip'): {_fmt_int(self.skipped_nonfinite)} "
                         f"({per_epoch})")
        last = e.row(-1, named=True)
        n = self.n_samples
        acc = "n/a" if last["accuracy"] is None else f"{100 * last['accuracy']:.1f}%"
        lines.append(
            "final: " + " | ".join(f"{b.name} {_fmt_int(last[count_column(b)])}" for b in Bucket)
            + f" | pruned {_fmt_int(last['pruned'])} ({100 * last['pruned'] / n:.1f}% of N)"
            + f" | accuracy {acc}" + (" | mastered" if last["mastered"] else "")
        )
        m = self.transition_matrix()
        lines += ["", "bucket moves over all epochs (rows: from, columns: to):",
                  "        " + "".join(f"{b:>12}" for b in BUCKET_NAMES)]
        for a in Bucket:
            cells = "".join(f"{'.':>12}" if a is b else f"{_fmt_int(int(m[a, b])):>12}" for b in Bucket)
            lines.append(f"  {a.name:<6}{cells}")
        unknown = e.filter(pl.col(TRANSITION_COLUMNS[0][2]).is_null())["epoch"].to_list()
        if unknown:
            lines.append(f"  (moves unknown for epochs {unknown}: first epochs recorded after a resume)")
        lines += [
            "",
            f"history: {self.snapshots} snapshot(s), {_fmt_int(int(e['history_rows'].sum()))} rows, "
            f"{_fmt_bytes(self.history_bytes)} on disk -> {self.bytes_per_sample_epoch:.2f} bytes per "
            "sample per epoch",
        ]
        return "\n".join(lines)


def build_report(run_dir: str | os.PathLike) -> EfficiencyReport:
    """Read a run directory's epoch summary and history size."""
    run = open_run(run_dir)
    epochs = read_summary(run.root).sort("epoch")
    if epochs.height == 0:
        raise InputError(
            f"{run.root}: no epoch summary (epochs.parquet); record one with HistoryWriter.record() "
            "after each repartition, or run geko simulate --out"
        )
    return EfficiencyReport(run.root, epochs, len(run.history_files()), run.history_bytes())


@dataclass(frozen=True)
class Distributions:
    """Per-bucket samples of Q-values and last losses (unpruned samples only)."""

    frame: pl.DataFrame  # bucket (Enum), q_value, last_loss: at most per_bucket rows per bucket
    totals: dict[str, int]  # unpruned samples per bucket before subsampling
    source: str  # where the values come from


def sample_distributions(run_dir: str | os.PathLike, *, per_bucket: int = 50_000, seed: int = 0) -> Distributions:
    """Q-values and last losses of unpruned samples, at most ``per_bucket`` random rows per bucket,
    from the current state file (or the latest full history snapshot when there is none).
    """
    from .store import StateStore

    run: Run = open_run(run_dir)
    rng = np.random.default_rng(seed)
    if run.state_path.is_file():
        with StateStore.open(run.state_path, mode="r") as store:
            # Only the sampled rows are copied out of the memory map.
            idx, totals = _pick(store.column("bucket"), store.column("pruned") == 0, per_bucket, rng)
            bucket, q, loss = (store.column(c)[idx] for c in ("bucket", "q_value", "last_loss"))
            source = f"current state, epoch {store.epoch}"
    else:
        s = read_summary(run.root)
        full = s.filter(pl.col("snapshot") & (pl.col("history_rows") == pl.col("n_samples")))["epoch"].to_list()
        if not full:
            raise InputError(f"{run.root}: no state file and no full history snapshot to draw distributions from")
        epoch = full[-1]
        table, _ = read_history_file(run.epoch_path(epoch), SNAPSHOT_FILE, expected_n=int(s["n_samples"][0]))
        df = pl.from_arrow(table.select(["bucket", "q_value", "last_loss", "pruned"]))
        codes = df["bucket"].cast(pl.Enum(list(BUCKET_NAMES))).to_physical().to_numpy().astype(np.int8)
        idx, totals = _pick(codes, ~df["pruned"].to_numpy(), per_bucket, rng)
        bucket, q, loss = codes[idx], df["q_value"].to_numpy()[idx], df["last_loss"].to_numpy()[idx]
        source = f"history snapshot of epoch {epoch}"
    frame = pl.DataFrame(
        {
            "bucket": pl.Series(np.array(BUCKET_NAMES)[bucket]).cast(pl.Enum(list(BUCKET_NAMES))),
            "q_value": q,
            "last_loss": loss,
        }
    )
    return Distributions(frame, totals, source)


def _pick(bucket: np.ndarray, live: np.ndarray, per_bucket: int, rng: np.random.Generator) -> tuple[np.ndarray, dict[str, int]]:
    """Sorted row indices, at most ``per_bucket`` random live rows per bucket, and live counts per bucket."""
    picks, totals = [], {}
    for b in Bucket:
        idx = np.flatnonzero(live & (bucket == int(b)))
        totals[b.name] = int(idx.size)
        if idx.size > per_bucket:
            idx = rng.choice(idx, per_bucket, replace=False)
        picks.append(idx)
    return np.sort(np.concatenate(picks)), totals

