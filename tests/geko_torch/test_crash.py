"""Crash tests: a training process killed with SIGKILL at many moments resumes to the same end.

Each scenario runs ``crash_worker`` (a small GEKOTrainer run on the CPU) until it is SIGKILLed at a
chosen moment (see ``crash_worker.POINTS``), inspects the run directory as a reader would (nothing
partial may be visible: checkpoints, history, state, SQL views, log), then resumes from the newest
complete checkpoint (or afresh, when none was written) until the run ends, and checks that the final
state, weights, history and log are those of an uninterrupted run, bit for bit.

Every run is a real process that dies by SIGKILL: no cleanup, no flush, no ``finally``. To keep the
module fast, the processes are forked from two warm worker servers (``crash_worker --serve``: torch
and the task imported and built once), and scenarios run two at a time.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from geko_state import COLUMN_NAMES, StateStore, connect, read_summary, statefile
from geko_state.errors import StateFileError
from geko_state.history import verified_history
from geko_state.run import Run
from geko_torch.checkpoint import GEKO_STATE_FILE, checkpoint_dirs
from geko_torch.serialization import load_tree

from . import crash_worker

pytestmark = [pytest.mark.slow, pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork and SIGKILL (POSIX)")]

ROOT = Path(__file__).resolve().parents[2]

# (kill spec of the first run, kill specs of the resumed runs that die too...); a scenario ends
# with one more resumed run that finishes. Steps: 12 per epoch, 3 epochs; checkpoints every 4
# steps (the one of step 12k is written before epoch k ends), the newest 2 kept, and one at the end.
SCENARIOS: dict[str, tuple[str, ...]] = {
    "observe-before-first-checkpoint": ("observe:3",),
    "observe": ("observe:20",),
    "step": ("step:14",),
    "step-after-epoch-end-logged": ("step:25",),
    "epoch-end": ("epoch_end:2",),
    "repartition": ("repartition:1",),
    "flush-before-data": ("flush_before_data:5",),
    "flush-mid-data": ("flush_mid_data:11",),  # the live flush after checkpoint-28
    "flush-after-data": ("flush_after_data:7",),
    "history-snapshot-tmp": ("history_snapshot_tmp:2",),
    "history-between-snapshot-and-summary": ("history_between:2",),
    "history-summary-tmp": ("history_summary_tmp:3",),
    "history-after-summary": ("history_after_summary:1",),
    "checkpoint-first-model": ("ckpt_model:1",),
    "checkpoint-model": ("ckpt_model:4",),
    "checkpoint-state": ("ckpt_state:5",),
    "checkpoint-before-trainer-state": ("ckpt_trainer_state:6",),
    "checkpoint-replaced": ("ckpt_replace:1",),
    "checkpoint-published": ("ckpt_published:3",),
    "prune": ("prune:1",),
    "log-torn-epoch-line": ("log_torn:13",),
    "log-torn-step-line": ("log_torn:15",),
    "finished": ("finished:1",),
    # killed again once resumed: right after load_checkpoint (the run directory as the resumed
    # trainer leaves it), and while re-recording an epoch the killed run had recorded already
    "resumed-after-epoch-recorded": ("history_after_summary:1", "resumed:1"),
    "resumed-before-first-epoch": ("step:14", "resumed:1"),
    "killed-twice": ("history_after_summary:2", "history_between:1"),
}


# ---------------------------------------------------------------------- the worker servers
class Server:
    """One ``crash_worker --serve`` process: runs a job in a forked child, returns its exit status."""

    def __init__(self, logs: Path) -> None:
        path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH", "")) if p)
        env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=path)
        self.stderr = open(logs / f"server-{id(self)}.log", "w")  # noqa: SIM115 - closed in close()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.geko_torch.crash_worker", "--serve"], cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True,
        )

    def run(self, argv: list[str], log: Path) -> int:
        self.proc.stdin.write(json.dumps({"argv": [str(a) for a in argv], "log": str(log)}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the crash worker server died (exit status {self.proc.poll()})")
        answer = json.loads(line)
        if answer["timed_out"]:
            raise RuntimeError(f"{argv}: still running after the worker's time limit; see {log}")
        return answer["returncode"]

    def close(self) -> None:
        try:
            self.proc.stdin.close()
            self.proc.wait(timeout=60)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.stdout.close()
            self.stderr.close()


class Pool:
    def __init__(self, servers: list[Server]) -> None:
        self.free = list(servers)
        self.cv = threading.Condition()

    def run(self, argv: list[str], log: Path) -> tuple[int, str]:
        with self.cv:
            self.cv.wait_for(lambda: self.free)
            server = self.free.pop()
        try:
            rc = server.run(argv, log)
        finally:
            with self.cv:
                self.free.append(server)
                self.cv.notify()
        return rc, log.read_text() if log.is_file() else ""


@dataclass
class Outcome:
    kills: list[tuple[str, int, str, Path]] = field(default_factory=list)  # (spec, returncode, log, copy)
    final: tuple[int, str] | None = None
    run_dir: Path | None = None


def _scenario(pool: Pool, root: Path, name: str, specs: tuple[str, ...]) -> Outcome:
    out = Outcome(run_dir=root / name / "run")
    (root / name).mkdir()
    for i, spec in enumerate(specs):
        argv = [out.run_dir, "--kill", spec] + (["--resume"] if i else [])
        rc, log = pool.run(argv, root / name / f"kill{i}.log")
        copy = root / name / f"crashed{i}"
        shutil.copytree(out.run_dir, copy, symlinks=True)  # the directory as the killed process left it
        out.kills.append((spec, rc, log, copy))
        if rc != -9:
            return out
    out.final = pool.run([out.run_dir, "--resume"], root / name / "resume.log")
    return out


@pytest.fixture(scope="module")
def crashes(tmp_path_factory):
    """The reference run and every scenario, run two at a time on two warm worker servers."""
    root = tmp_path_factory.mktemp("crash")
    workers = 2
    servers = [Server(root) for _ in range(workers)]
    try:
        pool = Pool(servers)
        ref = root / "reference"
        rc, log = pool.run([ref / "run", "--counts", ref / "counts.json"], root / "reference.log")
        assert rc == 0, log
        counts = json.loads((ref / "counts.json").read_text())
        with ThreadPoolExecutor(workers) as ex:
            futures = {name: ex.submit(_scenario, pool, root, name, specs) for name, specs in SCENARIOS.items()}
            outcomes = {name: f.result() for name, f in futures.items()}
    finally:
        for s in servers:
            s.close()
    return ref / "run", counts, outcomes


# ---------------------------------------------------------------------- what a reader sees
def _log_records(run: Path, *, torn_ok: bool = False) -> list[dict]:
    """The log's records; every line is a whole JSON record, but for a last one cut short when
    ``torn_ok`` (the process was killed while appending it)."""
    f = run / "trainer_log.jsonl"
    if not f.is_file():
        return []
    lines = f.read_text().split("\n")
    assert lines[-1] == "" or torn_ok, f"{f}: the last line is cut short: {lines[-1]!r}"
    return [json.loads(line) for line in lines[:-1]]


def _check_checkpoint(path: Path) -> None:
    """A visible checkpoint is complete: every file there and readable."""
    state = json.loads((path / "trainer_state.json").read_text())
    load_file(path / "model.safetensors")
    for tree in ("optimizer", "scheduler", "rng", "geko_sampler", "geko_history"):
        load_tree(path, tree)
    store = StateStore.open(path / GEKO_STATE_FILE, storage="memory")  # verified against its checksum
    assert store.epoch == state["epoch"] == json.loads((path / "geko_state.json").read_text())["epoch"]
    if state["epoch"] == 0:
        assert not (path / "geko_epochs.parquet").exists(), path
        return
    # verified (the summary's reader takes a run directory: give it the checkpoint's copy)
    with tempfile.TemporaryDirectory() as view:
        shutil.copyfile(path / "geko_epochs.parquet", Path(view) / "epochs.parquet")
        summary = read_summary(view)
    assert summary["epoch"].to_list() == list(range(1, state["epoch"] + 1)), path


def _check_views(run: Path, last: int) -> None:
    """The SQL views work on what is there."""
    con = connect(run)
    try:
        assert con.sql("SELECT count(*) FROM samples").fetchall()[0][0] == crash_worker.N_TRAIN
        assert con.sql("SELECT count(DISTINCT epoch) FROM history").fetchall()[0][0] == last
        assert con.sql("SELECT count(*) FROM epochs").fetchall()[0][0] == last
        con.sql("SELECT * FROM transitions").fetchall()
        con.sql("SELECT * FROM transition_counts").fetchall()
    finally:
        con.close()


def _assert_nothing_partial(run: Path, spec: str) -> dict[str, bool]:
    """Read ``run`` as ``geko sql|report`` and a resume would, and check nothing partial shows.
    Returns what the live state did: ``refused`` (its data matched no checksum) or ``fell_back``
    (opened as of the flush before the one that was killed)."""
    point = spec.partition(":")[0]
    # 1. checkpoints: a directory under a visible checkpoint-<step> name is complete
    visible = sorted((p for p in run.iterdir() if p.name.startswith("checkpoint")), key=lambda p: p.name)
    for p in visible:
        assert p.is_dir() and p.name.partition("-")[2].isdigit(), p
        assert (p / "trainer_state.json").is_file(), f"{p}: a partial checkpoint is visible"
        _check_checkpoint(p)
    assert sorted(p for _, p in checkpoint_dirs(run)) == visible
    # 2. history: the summary verifies and every epoch it lists has its verified snapshot; a
    # snapshot it does not list can only be of a later epoch (being recorded when the process was
    # killed, or recorded after the checkpoint a resume goes back to)
    epochs = read_summary(run)["epoch"].to_list()
    assert epochs == list(range(1, len(epochs) + 1))
    hist = verified_history(run)
    assert sorted(hist.snapshots) == epochs
    last = len(epochs)
    extra = [e for e in Run(run).history_files() if e not in hist.snapshots]
    assert all(e > last for e in extra), (epochs, extra)
    if point == "resumed":  # the resumed trainer put the history back as it was at the checkpoint
        assert extra == [], f"snapshots of epochs after the checkpoint's are still there: {extra}"
    # 3. the live state opens as the state of a completed flush, or (only when killed while the
    # data itself was being written) is refused: never read as wrong data
    seen = {"refused": False, "fell_back": False}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            store = StateStore.open(run / "state.arrow", mode="r")
        except StateFileError:
            seen["refused"] = True
            with pytest.raises(StateFileError):
                connect(run)
        else:
            # flushed right after the epoch's history is recorded: at most one epoch behind it
            assert last - 1 <= store.epoch <= last, (store.epoch, last)
            if point == "resumed":
                assert store.epoch == last
            store.close()
            _check_views(run, last)
    seen["fell_back"] = any("stopped before writing the data" in str(w.message) for w in caught)
    # 4. the log: whole JSON lines, but for the last one when it was being written
    _log_records(run, torn_ok=point == "log_torn")
    return seen


# ---------------------------------------------------------------------- the end of a resumed run
def _state(run: Path, name: str = "state.arrow") -> tuple[int, dict[str, np.ndarray]]:
    store = StateStore.open(run / name, storage="memory")
    return store.epoch, {c: np.array(store.column(c)) for c in COLUMN_NAMES}


def _assert_same_end(run: Path, ref: Path) -> None:
    names = [p.name for _, p in checkpoint_dirs(run)]
    assert names == [p.name for _, p in checkpoint_dirs(ref)]
    last = names[-1]
    # weights: the same file, byte for byte (and so the same tensors)
    assert (run / last / "model.safetensors").read_bytes() == (ref / last / "model.safetensors").read_bytes()
    a, b = load_file(run / last / "model.safetensors"), load_file(ref / last / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    for ckpt in names:
        ea, sa = _state(run / ckpt, GEKO_STATE_FILE)
        eb, sb = _state(ref / ckpt, GEKO_STATE_FILE)
        assert ea == eb and all(np.array_equal(sa[c], sb[c]) for c in COLUMN_NAMES), ckpt
    # the live state
    ea, sa = _state(run)
    eb, sb = _state(ref)
    assert ea == eb == crash_worker.EPOCHS
    diff = [c for c in COLUMN_NAMES if not np.array_equal(sa[c], sb[c])]
    assert diff == []
    # history: the same summary and snapshots
    assert read_summary(run).equals(read_summary(ref))
    files, ref_files = Run(run).history_files(), Run(ref).history_files()
    assert files.keys() == ref_files.keys()
    for e in files:
        assert pl.read_parquet(files[e]).equals(pl.read_parquet(ref_files[e])), e
    # the log: the same records (but for their wall-clock times), each once
    strip = [{k: v for k, v in r.items() if k != "time"} for r in _log_records(run)]
    ref_strip = [{k: v for k, v in r.items() if k != "time"} for r in _log_records(ref)]
    assert strip == ref_strip
    # nothing left behind by the crashes: no temporary checkpoint directories or files
    left = sorted(str(p.relative_to(run)) for p in run.rglob(".*"))
    assert left == []


@pytest.fixture(autouse=True)
def _no_flush_wait(monkeypatch):
    # A state file whose data matches no checksum is refused at once instead of after waiting for
    # a writer that is dead.
    monkeypatch.setattr(statefile, "FLUSH_WAIT_S", 0.0)


def test_every_point_is_reached(crashes):
    _, counts, _ = crashes
    for name, specs in SCENARIOS.items():
        point, _, n = specs[0].partition(":")
        assert counts.get(point, 0) >= int(n), f"{name}: {point} is reached {counts.get(point, 0)} times"
    assert set(crash_worker.POINTS) - {"resumed"} <= counts.keys()


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_killed_run_resumes_to_the_same_end(crashes, name):
    ref, _, outcomes = crashes
    out = outcomes[name]
    for spec, rc, log, copy in out.kills:
        assert rc == -9, f"killed at {spec}: expected death by SIGKILL, got exit status {rc}\n{log}"
        seen = _assert_nothing_partial(copy, spec)
        # the live state is refused only when killed with its data half written, and opened as of
        # the flush before only when killed before that flush wrote any data
        assert seen["refused"] == spec.startswith("flush_mid_data"), seen
        assert seen["fell_back"] == spec.startswith("flush_before_data"), seen
    rc, log = out.final
    assert rc == 0, log
    _assert_same_end(out.run_dir, ref)


# ---------------------------------------------------------------------- the helpers, directly
def _dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _fake_checkpoint(path: Path, step: int) -> Path:
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    (path / "trainer_state.json").write_text(json.dumps({"step": step}))
    return path


def test_latest_checkpoint_skips_hidden_and_incomplete_directories(tmp_path):
    from geko_torch.checkpoint import latest_checkpoint

    assert latest_checkpoint(tmp_path) is None
    _fake_checkpoint(tmp_path / "checkpoint-8", 8)
    _fake_checkpoint(tmp_path / "checkpoint-12", 12)
    (tmp_path / "checkpoint-16").mkdir()  # no trainer_state.json: not complete
    _fake_checkpoint(tmp_path / ".checkpoint-20.tmp-1", 20)
    assert latest_checkpoint(tmp_path) == tmp_path / "checkpoint-12"
    assert [s for s, _ in checkpoint_dirs(tmp_path)] == [8, 12]


def test_replacing_a_checkpoint_without_an_atomic_swap_can_be_recovered(tmp_path, monkeypatch):
    """Where the system cannot swap two directories, the older checkpoint is moved aside first; a
    process killed right then leaves it hidden, and the next save or resume puts it back."""
    import geko_torch.checkpoint as ckpt

    monkeypatch.setattr(ckpt, "_exchange", lambda a, b: False)
    old = _fake_checkpoint(tmp_path / "checkpoint-4", 4)
    ckpt._replace_dir(_fake_checkpoint(tmp_path / ".checkpoint-4.tmp-1", 5), old)
    assert json.loads((old / "trainer_state.json").read_text()) == {"step": 5}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-4"]
    # killed between the two renames: the old one aside, the new one still under its temporary name
    pid = _dead_pid()
    aside = tmp_path / f".checkpoint-4.old-{pid}"
    os.rename(old, aside)
    _fake_checkpoint(tmp_path / f".checkpoint-4.tmp-{pid}", 6)
    _fake_checkpoint(tmp_path / f".checkpoint-8.trash-{pid}", 8)  # and a prune it did not finish
    alive = _fake_checkpoint(tmp_path / f".checkpoint-9.tmp-{os.getpid()}", 9)  # a save in progress
    ckpt.remove_leftovers(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["checkpoint-4", alive.name])
    assert json.loads((old / "trainer_state.json").read_text()) == {"step": 5}


def test_pruning_never_shows_a_half_deleted_checkpoint(tmp_path, monkeypatch):
    import geko_torch.checkpoint as ckpt

    path = _fake_checkpoint(tmp_path / "checkpoint-4", 4)
    seen = []
    rmtree = shutil.rmtree

    def spy(p, *a, **kw):
        seen.append((Path(p).name, path.exists()))
        return rmtree(p, *a, **kw)

    monkeypatch.setattr(ckpt.shutil, "rmtree", spy)
    ckpt.remove_checkpoint(path)
    assert not path.exists() and list(tmp_path.iterdir()) == []
    # the files are deleted under the hidden name only, once the visible one is gone
    assert seen[-1] == (f".checkpoint-4.trash-{os.getpid()}", False)
