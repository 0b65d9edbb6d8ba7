"""Corrupt, truncated and mismatched state and history files are refused, naming the file.

Every corruption below is a real file on disk; each test counts what it tried and asserts that all
of it was refused, or, for bytes outside the data that no reader uses (Arrow padding, the IPC
stream's leading copy of the schema, Parquet's ``created_by``), that the file still reads back
exactly as written. Nothing may ever be read back as different data.
"""
import json
import re
import shutil
import threading
import time
import warnings

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from geko_state import (
    GEKOConfig, HistoryConfig, HistoryFileError, HistoryWriter, SchemaVersionError, StateFileError, StateStore,
    connect, read_summary,
)
from geko_state import statefile
from geko_state.backends.arrow_file import ArrowFileStorage
from geko_state.history import SNAPSHOT_FILE, SUMMARY_FILE, verified_history
from geko_state.historyfile import HistoryDigest, read_history_file
from geko_state.run import Run
from geko_state.schema import COLUMNS
from tests.conftest import snapshot

N = 64
STORAGES = [("arrow", "r+"), ("arrow", "r"), ("arrow-shared", "r+"), ("memory", "r+")]


def _config() -> GEKOConfig:
    return GEKOConfig(use_curriculum=False, log_bucket_stats=False, bucket_weights=(3, 2, 1))


def _train(store: StateStore, epochs: int, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        ids = rng.integers(0, store.n_samples, store.n_samples // 2)  # some samples never seen: NaN losses
        loss = (rng.random(ids.size) * 2).astype(np.float32)
        store.observe(ids, loss, rng.random(ids.size).astype(np.float32), loss < 0.5)
        store.repartition()


@pytest.fixture(scope="module")
def state_files(tmp_path_factory):
    """A live state file (its checksum in the sidecar) and a checkpoint (checksum inside the file)."""
    root = tmp_path_factory.mktemp("state")
    live = StateStore.create(N, root / "live.arrow", _config())
    _train(live, 3)
    ck = live.checkpoint(root / "ck.arrow")
    _train(live, 1, seed=1)  # the live file now differs from what create() wrote into it
    live.close()
    expected = {}
    for p in (root / "live.arrow", ck):
        with StateStore.open(p, mode="r") as s:
            expected[p.name] = (snapshot(s), s._meta)
    return root, expected


def _place(root, src_name, dst, data: bytes) -> None:
    """Write ``data`` as state file ``dst``, with a copy of the source's sidecar when it has one."""
    dst.write_bytes(data)
    side = root / f"{src_name}.json"
    if side.exists():
        shutil.copyfile(side, dst.with_name(dst.name + ".json"))


def _open_outcome(path, expected, storage, mode) -> str:
    """'refused' (StateFileError naming the file) or 'same' (reads back exactly as written)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # falling back to an older state would warn: not allowed here
            s = StateStore.open(path, storage=storage, mode=mode)
    except StateFileError as e:
        assert path.name in str(e), str(e)
        return "refused"
    try:
        assert (snapshot(s), s._meta) == expected, f"{path.name} read back as different data"
    finally:
        s._storage.columns = {}  # drop without flushing: the corrupt file stays as it is
    return "same"


def _agrees(read, expected: pl.DataFrame) -> bool:
    """Another reader of a corrupted file either fails or gets exactly the original values."""
    try:
        got = read()
    except Exception:  # noqa: BLE001  (any refusal will do)
        return True
    except BaseException as e:  # polars reports some corrupt files with a Rust panic
        if type(e).__name__ != "PanicException":
            raise
        return True
    return got.equals(expected)


def _column_regions(path):
    layout = statefile.read_layout(path)
    return {c.name: (layout.offsets[c.name], N * c.itemsize) for c in COLUMNS}


@pytest.mark.parametrize("name", ["live.arrow", "ck.arrow"])
@pytest.mark.parametrize("storage,mode", STORAGES)
def test_state_bit_flips_in_column_data_are_refused(state_files, tmp_path, name, storage, mode):
    root, expected = state_files
    data = (root / name).read_bytes()
    tried = 0
    for col, (off, size) in _column_regions(root / name).items():
        for pos in (off, off + size // 2, off + size - 1):
            for bit in (0, 3, 7):
                bad = bytearray(data)
                bad[pos] ^= 1 << bit
                dst = tmp_path / f"{col}_{pos}_{bit}.arrow"
                _place(root, name, dst, bytes(bad))
                assert _open_outcome(dst, expected[name], storage, mode) == "refused", (col, pos, bit)
                tried += 1
    assert tried == len(COLUMNS) * 9
    print(f"state {name} {storage}/{mode}: column-data bit flips tried {tried}, detected {tried}")


@pytest.mark.parametrize("name", ["live.arrow", "ck.arrow"])
def test_state_bit_flips_anywhere_are_refused_or_harmless(state_files, tmp_path, name):
    root, expected = state_files
    data = (root / name).read_bytes()
    in_data = [(o, o + s) for o, s in _column_regions(root / name).values()]
    as_read = pl.from_arrow(pa.ipc.open_file(pa.memory_map(str(root / name))).read_all())
    outcomes = {"refused": 0, "same": 0}
    for pos in range(0, len(data), 4):
        bad = bytearray(data)
        bad[pos] ^= 1 << (pos % 8)
        dst = tmp_path / f"sweep_{pos}.arrow"
        _place(root, name, dst, bytes(bad))
        got = _open_outcome(dst, expected[name], "memory", "r+")
        if any(lo <= pos < hi for lo, hi in in_data):
            assert got == "refused", pos
        if got == "same":  # and other readers of the file see the same values too
            assert _agrees(lambda: pl.from_arrow(pa.ipc.open_file(pa.memory_map(str(dst))).read_all()), as_read), pos
        outcomes[got] += 1
        dst.unlink()
    print(f"state {name} whole-file sweep: tried {sum(outcomes.values())}, refused {outcomes['refused']}, "
          f"read back identical {outcomes['same']}")
    assert outcomes["refused"] > outcomes["same"]


def test_state_sidecar_bit_flips_and_truncation_are_refused(state_files, tmp_path):
    root, expected = state_files
    side = (root / "live.arrow.json").read_bytes()
    state = (root / "live.arrow").read_bytes()
    outcomes = {"refused": 0, "same": 0}
    variants = [(f"flip{pos}", bytes(side[:pos]) + bytes([side[pos] ^ (1 << (pos % 7))]) + side[pos + 1:])
                for pos in range(len(side))]
    variants += [(f"cut{k}", side[:k]) for k in (0, 1, len(side) // 3, len(side) // 2, len(side) - 2)]
    for tag, bad in variants:
        dst = tmp_path / f"{tag}.arrow"
        dst.write_bytes(state)
        dst.with_name(dst.name + ".json").write_bytes(bad)
        outcomes[_open_outcome(dst, expected["live.arrow"], "arrow", "r")] += 1
    print(f"state sidecar: corruptions tried {len(variants)}, refused {outcomes['refused']}, harmless {outcomes['same']}")
    # a flip may only be harmless where JSON ignores it (none found so far): never different data
    assert outcomes["refused"] == len(variants)


@pytest.mark.parametrize("storage,mode", STORAGES)
def test_truncated_state_files_are_refused(state_files, tmp_path, storage, mode):
    root, expected = state_files
    tried = 0
    for name in ("live.arrow", "ck.arrow"):
        data = (root / name).read_bytes()
        cuts = {0, 4, 8, 100, len(data) // 4, len(data) // 2, len(data) - 10, len(data) - 1}
        cuts |= {o + 1 for o, _ in _column_regions(root / name).values()}
        for k in sorted(cuts):
            dst = tmp_path / f"cut{k}_{name}"
            _place(root, name, dst, data[:k])
            assert _open_outcome(dst, expected[name], storage, mode) == "refused", (name, k)
            tried += 1
    print(f"state truncations {storage}/{mode}: tried {tried}, detected {tried}")


def _rewrite_state(src, dst, **changes: bytes) -> None:
    """Copy a state file with some schema metadata values replaced (``geko_x`` for ``geko.x``)."""
    table = pa.ipc.open_file(pa.memory_map(str(src))).read_all()
    md = dict(table.schema.metadata)
    md.update({k.replace("_", ".", 1).encode(): v for k, v in changes.items()})
    table = table.replace_schema_metadata(md)
    with pa.OSFile(str(dst), "wb") as f, pa.ipc.new_file(f, table.schema) as w:
        w.write_table(table)


def test_other_state_schema_versions_are_refused(state_files, tmp_path):
    root, _ = state_files
    for v in (b"1", b"2", b"99"):
        dst = tmp_path / f"v{v.decode()}.arrow"
        _rewrite_state(root / "ck.arrow", dst, geko_schema_version=v)
        with pytest.raises(SchemaVersionError, match=rf"v{v.decode()}\.arrow: state schema version {v.decode()}, "
                                                     r"this GEKO reads version 3"):
            StateStore.open(dst)
    # metadata of another version with a checksum that matches it (what another release would write)
    dst = tmp_path / "meta_v1.arrow"
    shutil.copyfile(root / "live.arrow", dst)
    s = StateStore.open(root / "live.arrow", storage="memory")
    meta = dict(s._meta, schema_version=1)
    statefile.write_sidecar(dst, statefile.seal(s._storage.columns, meta))
    with pytest.raises(SchemaVersionError, match="meta_v1.arrow: metadata of schema version 1"):
        StateStore.open(dst)


def test_wrong_state_sample_counts_are_refused(state_files, tmp_path):
    root, _ = state_files
    with pytest.raises(StateFileError, match=rf"ck\.arrow: holds {N} samples, expected {N + 1}"):
        StateStore.open(root / "ck.arrow", n_samples=N + 1)
    dst = tmp_path / "n_meta.arrow"
    _rewrite_state(root / "ck.arrow", dst, geko_n_samples=str(N + 1).encode())
    with pytest.raises(StateFileError, match=rf"n_meta\.arrow: not a readable GEKO state file \({N} rows, metadata says {N + 1}"):
        StateStore.open(dst)
    # sidecar metadata for another count, checksummed as if it were right
    dst = tmp_path / "n_side.arrow"
    shutil.copyfile(root / "live.arrow", dst)
    s = StateStore.open(root / "live.arrow", storage="memory")
    statefile.write_sidecar(dst, statefile.seal(s._storage.columns, dict(s._meta, n_samples=N + 1)))
    with pytest.raises(StateFileError, match=rf"n_side\.arrow: metadata missing or for another sample count \({N + 1}"):
        StateStore.open(dst)
    # a state file written without a checksum
    dst = tmp_path / "nosum.arrow"
    table = pa.ipc.open_file(pa.memory_map(str(root / "ck.arrow"))).read_all()
    md = {k: v for k, v in table.schema.metadata.items() if k != b"geko.checksum"}
    with pa.OSFile(str(dst), "wb") as f, pa.ipc.new_file(f, table.schema.with_metadata(md)) as w:
        w.write_table(table.replace_schema_metadata(md))
    with pytest.raises(StateFileError, match=r"nosum\.arrow: .*no geko\.checksum"):
        StateStore.open(dst)


class _Crash(RuntimeError):
    pass


def _flushed(path, epochs=2):
    s = StateStore.create(N, path, _config())
    _train(s, epochs)
    s.flush()
    return s


def test_a_flush_stopped_before_the_data_opens_the_previous_state(tmp_path, monkeypatch):
    path = tmp_path / "s.arrow"
    s = _flushed(path)
    before, epoch = snapshot(s), s.epoch
    _train(s, 1, seed=5)

    def stop(self, include_immutable=False):
        raise _Crash()

    monkeypatch.setattr(ArrowFileStorage, "flush", stop)
    with pytest.raises(_Crash):
        s.flush()
    monkeypatch.undo()
    assert "previous" in json.loads((tmp_path / "s.arrow.json").read_text())
    with pytest.warns(UserWarning, match=r"s\.arrow: the last flush\(\) stopped before writing the data"):
        r = StateStore.open(path, storage="memory")
    assert snapshot(r) == before and r.epoch == epoch
    s._storage.columns = {}


def test_a_flush_stopped_while_writing_the_data_is_refused(tmp_path, monkeypatch):
    path = tmp_path / "s.arrow"
    s = _flushed(path)
    _train(s, 1, seed=5)
    real = ArrowFileStorage.flush

    def half(self, include_immutable=False):
        offsets = self.layout.offsets
        with open(self.path, "r+b") as f:  # the first changed column reaches the file, then the process dies
            f.seek(offsets["times_seen"])
            f.write(self.columns["times_seen"].tobytes())
        raise _Crash()

    monkeypatch.setattr(ArrowFileStorage, "flush", half)
    with pytest.raises(_Crash):
        s.flush()
    monkeypatch.setattr(statefile, "FLUSH_WAIT_S", 0.2)
    t0 = time.monotonic()
    with pytest.raises(StateFileError, match=r"s\.arrow: state data does not match its checksum.*checkpoint"):
        StateStore.open(path, mode="r")
    assert time.monotonic() - t0 >= 0.2  # it waited for a flush that might still be running
    # a reader that arrives during another process's flush waits for it, then opens the new state
    monkeypatch.setattr(statefile, "FLUSH_WAIT_S", 10.0)
    monkeypatch.setattr(ArrowFileStorage, "flush", real)
    finish = threading.Timer(0.3, s.flush)
    finish.start()
    r = StateStore.open(path, mode="r")
    finish.join()
    assert snapshot(r) == snapshot(s) and r.epoch == s.epoch
    s.close()


def test_a_checkpoint_copied_over_the_live_file_opens_despite_the_stale_sidecar(tmp_path):
    path = tmp_path / "s.arrow"
    s = _flushed(path)
    ck = s.checkpoint(tmp_path / "ck.arrow")
    want = snapshot(s)
    _train(s, 2, seed=9)
    s.close()
    shutil.copyfile(ck, path)  # what restoring a checkpoint does, before it removes the old sidecar
    r = StateStore.open(path)
    assert snapshot(r) == want
    r.close()


def test_every_file_the_code_writes_opens_in_every_storage(tmp_path):
    for storage in ("arrow", "arrow-shared"):
        path = tmp_path / f"{storage}.arrow"
        s = StateStore.create(N, path, _config(), storage=storage)
        for _ in range(3):
            _train(s, 1)
            s.flush()
            for st, mode in STORAGES:
                other = StateStore.open(path, storage=st, mode=mode)
                assert snapshot(other) == snapshot(s) and other._meta == s._meta
                other._storage.columns = {}  # never flushed: the writer's file stays as it is
        want = snapshot(s)
        s.close()
        again = StateStore.open(path, storage=storage)
        again.close()  # flush of an unchanged store
        assert snapshot(StateStore.open(path, storage="memory")) == want


# ---------------------------------------------------------------------------------------- history
H_N = 500


@pytest.fixture(scope="module")
def history_run(tmp_path_factory):
    """A run with a state file and three recorded epochs in several row groups, and a run of
    another sample count."""
    root = tmp_path_factory.mktemp("hist")
    runs = {}
    for name, n in (("run", H_N), ("other", 200)):
        store = StateStore.create(n, root / name / "state.arrow", _config())
        w = HistoryWriter(root / name, HistoryConfig(row_group_size=128))
        rng = np.random.default_rng(0)
        for _ in range(3):
            ids = rng.integers(0, n, n // 3)  # some samples unseen: NaN losses in the snapshots
            loss = (rng.random(ids.size) * 2).astype(np.float32)
            store.observe(ids, loss, rng.random(ids.size).astype(np.float32), loss < 0.5)
            w.record(store, store.repartition(), samples_trained=ids.size, phase="PEAK")
        store.close()
        runs[name] = Run(root / name)
    return runs


def _kinds(run):
    return [("epoch=000002.parquet", run.epoch_path(2), SNAPSHOT_FILE), ("epochs.parquet", run.epochs_path, SUMMARY_FILE)]


def _same(a: pa.Table, b: pa.Table) -> bool:
    if a.schema != b.schema or a.num_rows != b.num_rows:
        return False
    for x, y in zip(a.columns, b.columns):
        if pa.types.is_dictionary(x.type):
            x, y = x.cast(pa.string()), y.cast(pa.string())
        if pa.types.is_string(x.type):
            if x.to_pylist() != y.to_pylist():
                return False
            continue
        xa, ya = x.to_numpy(zero_copy_only=False), y.to_numpy(zero_copy_only=False)
        if not np.array_equal(xa.astype(float), ya.astype(float), equal_nan=True):
            return False
    return True


def _outcome(path, kind, good: pa.Table) -> str:
    try:
        table, _ = read_history_file(path, kind)
    except StateFileError as e:  # HistoryFileError, or SchemaVersionError for an altered version
        assert str(path) in str(e), str(e)
        return "refused"
    assert _same(table, good), f"{path.name} read back as different data"
    return "same"


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def _skip_struct(buf: bytes, pos: int, want: int | None = None) -> tuple[int, int | None]:
    """Skip a Thrift compact-protocol struct at ``pos``; returns the end and the i32 field ``want``."""
    fid, found = 0, None
    while True:
        head = buf[pos]
        pos += 1
        if head == 0:
            return pos, found
        delta, ftype = head >> 4, head & 0x0F
        if delta:
            fid += delta
        else:
            z, pos = _varint(buf, pos)
            fid = (z >> 1) ^ -(z & 1)
        pos, value = _skip_value(buf, pos, ftype)
        if fid == want:
            found = value
    return pos, found


def _skip_value(buf: bytes, pos: int, ftype: int) -> tuple[int, int | None]:
    if ftype in (1, 2):
        return pos, None
    if ftype == 3:
        return pos + 1, None
    if ftype in (4, 5, 6):
        z, pos = _varint(buf, pos)
        return pos, (z >> 1) ^ -(z & 1)
    if ftype == 7:
        return pos + 8, None
    if ftype == 8:
        n, pos = _varint(buf, pos)
        return pos + n, None
    if ftype in (9, 10):
        head = buf[pos]
        pos += 1
        n, etype = head >> 4, head & 0x0F
        if n == 15:
            n, pos = _varint(buf, pos)
        for _ in range(n):
            pos, _ = _skip_value(buf, pos, etype)
        return pos, None
    if ftype == 12:
        return _skip_struct(buf, pos)[0], None
    raise AssertionError(f"thrift type {ftype} not expected in a page header")


def _chunk_ranges(path, payload_only: bool = False):
    """Byte ranges of the column chunks, or (``payload_only``) of the pages' values alone: each page
    is a Thrift header (with optional min/max statistics that no reader uses to produce values)
    followed by ``compressed_page_size`` bytes of values."""
    data = path.read_bytes()
    md = pq.ParquetFile(path).metadata
    out = []
    for i in range(md.num_row_groups):
        for j in range(md.num_columns):
            c = md.row_group(i).column(j)
            start = c.dictionary_page_offset if c.dictionary_page_offset is not None else c.data_page_offset
            end = start + c.total_compressed_size
            if not payload_only:
                out.append((start, end))
                continue
            pos = start
            while pos < end:
                pos, size = _skip_struct(data, pos, want=3)  # field 3: compressed_page_size
                out.append((pos, pos + size))
                pos += size
            assert pos == end
    return out


def test_history_bit_flips_in_column_data_are_refused(history_run, tmp_path):
    run = history_run["run"]
    for label, src, kind in _kinds(run):
        data = src.read_bytes()
        good, _ = read_history_file(src, kind)
        tried = refused = 0
        for lo, hi in _chunk_ranges(src, payload_only=True):
            for pos in sorted({lo, lo + (hi - lo) // 3, (lo + hi) // 2, max(lo, hi - 5), hi - 1}):
                for bit in (1, 6):
                    bad = bytearray(data)
                    bad[pos] ^= 1 << bit
                    dst = tmp_path / f"{pos}_{bit}_{label}"
                    dst.write_bytes(bytes(bad))
                    got = _outcome(dst, kind, good)
                    tried += 1
                    refused += got == "refused"
                    dst.unlink()
        print(f"history {label}: bit flips in page data tried {tried}, detected {refused}")
        assert refused == tried


def test_history_bit_flips_anywhere_are_refused_or_harmless(history_run, tmp_path):
    run = history_run["run"]
    for label, src, kind in _kinds(run):
        data = src.read_bytes()
        good, _ = read_history_file(src, kind)
        pages = _chunk_ranges(src, payload_only=True)
        outcomes = {"refused": 0, "same": 0}
        in_pages = 0
        for pos in range(0, len(data), 9):
            bad = bytearray(data)
            bad[pos] ^= 1 << (pos % 8)
            dst = tmp_path / f"sweep{pos}_{label}"
            dst.write_bytes(bytes(bad))
            got = _outcome(dst, kind, good)
            if any(lo <= pos < hi for lo, hi in pages):
                assert got == "refused", (label, pos)
                in_pages += 1
            if got == "same":  # Polars' own Parquet reader sees the same values too
                assert _agrees(lambda: pl.read_parquet(dst), pl.read_parquet(src)), (label, pos)
            outcomes[got] += 1
            dst.unlink()
        # "same": footer and page-header fields pyarrow does not need for the values (sizes,
        # encodings lists, created_by, page statistics); the values read back are identical
        print(f"history {label} whole-file sweep: tried {sum(outcomes.values())} ({in_pages} in page data, all "
              f"refused), refused {outcomes['refused']}, harmless {outcomes['same']}")
        assert in_pages > len(pages)


def _copy_run(run, dst) -> Run:
    shutil.copytree(run.root, dst)
    return Run(dst)


def test_truncated_history_files_are_refused_by_every_reader(history_run, tmp_path):
    run = history_run["run"]
    for label, src, kind in _kinds(run):
        data = src.read_bytes()
        good, _ = read_history_file(src, kind)
        cuts = [0, 4, 100, len(data) // 2, len(data) - 9, len(data) - 8, len(data) - 4, len(data) - 1]
        cuts += [hi - 1 for _, hi in _chunk_ranges(src)][:4]
        for k in cuts:
            dst = tmp_path / f"cut{k}_{label}"
            dst.write_bytes(data[:k])
            assert _outcome(dst, kind, good) == "refused", (label, k)
        print(f"history {label}: truncations tried {len(cuts)}, detected {len(cuts)}")
        # and through the public readers, on a copy of the run with that file cut in half
        copy = _copy_run(run, tmp_path / f"run_{label}")
        target = copy.root / src.relative_to(run.root)
        target.write_bytes(data[: len(data) // 2])
        for read in (verified_history, connect, *((read_summary,) if kind is SUMMARY_FILE else ())):
            with pytest.raises(HistoryFileError, match=re.escape(str(target))):
                read(copy.root)
        if kind is SUMMARY_FILE:
            with pytest.raises(HistoryFileError, match="epochs.parquet"):
                HistoryWriter(copy.root)


def _rewrite_history(src, dst, kind, *, forge: bool = False, **changes: str) -> None:
    """Copy a history file with some ``geko.*`` metadata values replaced; ``forge`` recomputes its
    checksum so that only the consistency checks can tell."""
    pf = pq.ParquetFile(src)
    kv = {k.decode(): v.decode() for k, v in pf.metadata.metadata.items() if k.startswith(b"geko.")}
    kv.update({k.replace("_", ".", 1): v for k, v in changes.items()})
    table = pf.read()
    if forge:
        d = HistoryDigest(kind)
        d.update(table)
        header = {k: v for k, v in kv.items() if k != "geko.checksum"}
        kv["geko.checksum"] = d.checksum(header)
    with pq.ParquetWriter(str(dst), kind.schema) as w:
        w.write_table(table.replace_schema_metadata(None))
        w.add_key_value_metadata(kv)


def test_the_history_checksum_covers_values_not_their_encoding(history_run, tmp_path):
    run = history_run["run"]
    for label, src, kind in _kinds(run):
        pf = pq.ParquetFile(src)
        kv = {k: v for k, v in pf.metadata.metadata.items() if k.startswith(b"geko.")}
        dst = tmp_path / f"recoded_{label}"
        with pq.ParquetWriter(str(dst), kind.schema, compression="gzip", use_dictionary=False) as w:
            for i in range(pf.num_row_groups):  # other row groups, codec and encodings: same values
                t = pf.read_row_group(i).replace_schema_metadata(None)
                step = 50 if kind is SNAPSHOT_FILE else 2
                for lo in range(0, t.num_rows, step):
                    w.write_table(t.slice(lo, step))
            w.add_key_value_metadata(kv)
        assert pq.ParquetFile(dst).num_row_groups > pf.num_row_groups
        table, _ = read_history_file(dst, kind)
        assert _same(table, read_history_file(src, kind)[0])


def test_other_history_versions_are_refused(history_run, tmp_path):
    run = history_run["run"]
    for label, src, kind in _kinds(run):
        for v in ("0", "1", "99"):
            dst = tmp_path / f"v{v}_{label}"
            _rewrite_history(src, dst, kind, geko_schema_version=v)
            with pytest.raises(SchemaVersionError, match=rf"v{v}_{label}: history format version {v}, this GEKO reads version 2"):
                read_history_file(dst, kind)
        # a file written before checksums existed: plain Parquet, no geko.* metadata
        dst = tmp_path / f"old_{label}"
        pq.write_table(pq.read_table(src), dst)
        with pytest.raises(HistoryFileError, match=rf"old_{label}: not a readable GEKO history"):
            read_history_file(dst, kind)


def test_wrong_history_sample_counts_are_refused(history_run, tmp_path):
    run, other = history_run["run"], history_run["other"]
    for label, src, kind in _kinds(run):
        # edited without updating the checksum
        dst = tmp_path / f"n_{label}"
        _rewrite_history(src, dst, kind, geko_n_samples=str(H_N + 1))
        with pytest.raises(HistoryFileError, match=rf"n_{label}: history data does not match its checksum"):
            read_history_file(dst, kind)
        # edited consistently: the values contradict it
        dst = tmp_path / f"forged_{label}"
        _rewrite_history(src, dst, kind, forge=True, geko_n_samples="100")
        with pytest.raises(HistoryFileError, match=rf"forged_{label}: .*(past the 100 samples|rows for \[{H_N}\] samples)"):
            read_history_file(dst, kind)
        # a well-formed file of another run (another sample count) dropped into this one
        copy = _copy_run(run, tmp_path / f"mixed_{label}")
        target = copy.root / src.relative_to(run.root)
        shutil.copyfile(other.root / src.relative_to(run.root), target)
        msg = re.escape(f"{target}: history of 200 samples, expected {H_N}")
        with pytest.raises(HistoryFileError, match=msg):
            connect(copy.root)
        with pytest.raises(HistoryFileError, match=msg):
            verified_history(copy.root, n_samples=H_N)
    with pytest.raises(HistoryFileError, match=rf"epochs.parquet: history of {H_N} samples, expected 7"):
        read_summary(run.root, n_samples=7)


def test_a_snapshot_that_disagrees_with_the_summary_is_refused(history_run, tmp_path):
    run = history_run["run"]
    copy = _copy_run(run, tmp_path / "swapped")
    shutil.copyfile(run.epoch_path(3), copy.epoch_path(2))  # a valid snapshot, of another epoch
    with pytest.raises(HistoryFileError, match=r"epoch=000002\.parquet: holds epoch 3, its name says 2"):
        connect(copy.root)
    copy.epoch_path(2).unlink()
    with pytest.raises(HistoryFileError, match=r"epoch=000002\.parquet: missing, but .*epochs\.parquet lists"):
        verified_history(copy.root)


def test_a_summary_of_another_sample_count_cannot_be_appended_to(history_run, tmp_path):
    copy = _copy_run(history_run["run"], tmp_path / "append")
    store = StateStore.create(10, None, _config())
    _train(store, 2)  # epoch 2: the summary's epoch 1 (of 500 samples) would be kept
    from geko_state import InputError

    w = HistoryWriter(copy.root)
    with pytest.raises(InputError, match=rf"epochs\.parquet holds the history of {H_N} samples, this store has 10"):
        w.record(store, store.last_stats, samples_trained=1)
