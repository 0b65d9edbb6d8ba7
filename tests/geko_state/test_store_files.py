import json
import os

import duckdb
import numpy as np
import polars as pl
import pyarrow as pa
import pytest

from geko_state import (
    GEKOConfig, InputError, SCHEMA_VERSION, SchemaVersionError, StateFileError, StateStore, StoreClosedError, bytes_per_sample,
)
from geko_state import statefile
from tests.conftest import snapshot


def _trained(path=None, n=500, seed=0, **kw):
    s = StateStore.create(n, path, GEKOConfig(use_curriculum=False, log_bucket_stats=False, bucket_weights=(3, 2, 1)), **kw)
    rng = np.random.default_rng(seed)
    for _ in range(3):
        ids = s.plan_epoch(seed=seed, budget="full")
        loss = (rng.random(ids.size) * 2).astype(np.float32)
        s.observe(ids, loss, rng.random(ids.size).astype(np.float32), loss < 0.5)
        s.repartition()
    return s


def test_state_is_compact():
    assert bytes_per_sample() <= 64


def test_mmap_file_reopens_equal_and_is_readable_by_arrow_polars_duckdb(tmp_path):
    path = tmp_path / "state.arrow"
    mem = _trained()
    disk = _trained(path)
    assert snapshot(mem) == snapshot(disk)
    disk.flush()
    # other readers see the flushed state through the file itself
    table = pa.ipc.open_file(pa.memory_map(str(path))).read_all()
    assert table.num_rows == 500 and table.schema.metadata[b"geko.schema_version"] == str(SCHEMA_VERSION).encode()
    np.testing.assert_array_equal(table["q_value"].to_numpy(), mem.column("q_value"))
    df = pl.read_ipc(path)
    assert df["bucket"].cast(pl.String).to_list() == mem.to_polars()["bucket"].cast(pl.String).to_list()
    con = duckdb.connect()
    con.register("samples", disk.to_arrow())
    counts = dict(con.execute("SELECT bucket, count(*) FROM samples WHERE NOT pruned GROUP BY 1").fetchall())
    assert counts == {b.name: c for b, c in disk.bucket_counts().items() if c}
    disk.close()
    with pytest.raises(StoreClosedError):
        disk.observe([0], [0.1], [0.1], [True])
    again = StateStore.open(path)
    assert snapshot(again) == snapshot(mem)
    assert again.epoch == 3 and again.config == mem.config
    assert again.last_stats == mem.last_stats
    # plans continue identically after reopening
    np.testing.assert_array_equal(again.plan_epoch(seed=5), mem.plan_epoch(seed=5))
    again.close()


def test_in_place_updates_persist(tmp_path):
    path = tmp_path / "s.arrow"
    s = StateStore.create(10, path, GEKOConfig(use_curriculum=False))
    s.observe([3], [0.2], [0.9], [True])
    s.close()
    r = StateStore.open(path, mode="r")
    assert r.column("times_seen")[3] == 1
    with pytest.raises(InputError, match="read-only"):
        r.observe([3], [0.2], [0.9], [True])
    r.close()


def test_create_refuses_to_overwrite(tmp_path):
    path = tmp_path / "s.arrow"
    StateStore.create(10, path).close()
    with pytest.raises(StateFileError, match="already exists"):
        StateStore.create(10, path)
    StateStore.create(12, path, overwrite=True).close()
    assert StateStore.open(path).n_samples == 12


def test_checkpoint_roundtrip_and_memory_open(tmp_path):
    s = _trained()
    ck = s.checkpoint(tmp_path / "ck.arrow")
    r = StateStore.open(ck, storage="memory")
    assert snapshot(r) == snapshot(s) and r.epoch == s.epoch
    r.observe([0], [0.1], [0.1], [True])  # private copy: the checkpoint file is untouched
    assert snapshot(StateStore.open(ck, mode="r")) == snapshot(s)
    assert not list(tmp_path.glob(".*tmp"))


def test_checkpoint_is_atomic_when_writing_fails(tmp_path, monkeypatch):
    s = _trained()
    ck = tmp_path / "ck.arrow"
    s.checkpoint(ck)
    good = ck.read_bytes()
    s.observe([1], [0.5], [0.5], [False])

    class Boom(RuntimeError):
        pass

    def failing_writer(sink, schema):
        class W:
            def __enter__(self):
                return self

            def __exit__(self, *a):
                return False

            def write_batch(self, batch):
                sink.write(b"partial garbage" * 100)
                raise Boom()

        return W()

    monkeypatch.setattr(statefile.pa.ipc, "new_file", failing_writer)
    with pytest.raises(Boom):
        s.checkpoint(ck)
    assert ck.read_bytes() == good
    assert not list(tmp_path.glob(".*tmp"))


def test_open_errors(tmp_path):
    with pytest.raises(StateFileError, match="no such state file"):
        StateStore.open(tmp_path / "missing.arrow")
    s = _trained()
    ck = s.checkpoint(tmp_path / "ck.arrow")
    data = ck.read_bytes()

    truncated = tmp_path / "truncated.arrow"
    truncated.write_bytes(data[: len(data) // 2])
    with pytest.raises(StateFileError, match="truncated.arrow"):
        StateStore.open(truncated)

    garbage = tmp_path / "garbage.arrow"
    garbage.write_bytes(os.urandom(4096))
    with pytest.raises(StateFileError, match="garbage.arrow"):
        StateStore.open(garbage)

    with pytest.raises(StateFileError, match="holds 500 samples, expected 10"):
        StateStore.open(ck, n_samples=10)

    other = tmp_path / "other.arrow"
    with pa.OSFile(str(other), "wb") as f, pa.ipc.new_file(f, pa.schema([("x", pa.int64())])) as w:
        w.write_table(pa.table({"x": [1, 2]}))
    with pytest.raises(StateFileError, match="schema_version"):
        StateStore.open(other)


def test_other_schema_version_is_refused(tmp_path):
    s = _trained(n=20)
    batch = statefile.columns_to_batch(s._storage.columns, s._meta_for_write())
    md = dict(batch.schema.metadata)
    md[b"geko.schema_version"] = b"99"
    path = tmp_path / "v99.arrow"
    with pa.OSFile(str(path), "wb") as f, pa.ipc.new_file(f, batch.schema.with_metadata(md)) as w:
        w.write_batch(batch.replace_schema_metadata(md))
    with pytest.raises(SchemaVersionError, match="version 99"):
        StateStore.open(path)


def test_corrupt_sidecar_is_refused(tmp_path):
    path = tmp_path / "s.arrow"
    StateStore.create(5, path).close()
    side = tmp_path / "s.arrow.json"
    doc = json.loads(side.read_text())
    side.write_text("{not json")
    with pytest.raises(StateFileError, match="s.arrow.json"):
        StateStore.open(path)
    doc["meta"]["n_samples"] = 6  # metadata no longer matches the checksum
    side.write_text(json.dumps(doc))
    with pytest.raises(StateFileError, match="s.arrow: state data does not match its checksum"):
        StateStore.open(path)


def test_to_arrow_types_and_column_selection():
    s = _trained(n=50)
    t = s.to_arrow(["sample_id", "bucket", "correct"])
    assert t.schema.types == [pa.int64(), pa.dictionary(pa.int8(), pa.string()), pa.bool_()]
    with pytest.raises(InputError, match="unknown column"):
        s.to_arrow(["nope"])
    with pytest.raises(InputError, match="unknown column"):
        s.column("nope")
    ro = s.column("q_value")
    with pytest.raises(ValueError):
        ro[0] = 1.0


def test_create_validates_arguments():
    for bad in (0, -5, 2.5, True):
        with pytest.raises(InputError, match="n_samples"):
            StateStore.create(bad)
    from geko_state import ConfigError

    with pytest.raises(ConfigError, match="config"):
        StateStore.create(5, config={"q_value_lr": 0.1})
    with pytest.raises(ConfigError, match="kernel backend"):
        StateStore.create(5, kernels="cuda")


def test_written_files_get_umask_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        ck = _trained(n=10).checkpoint(tmp_path / "ck.arrow")
    finally:
        os.umask(old)
    assert ck.stat().st_mode & 0o777 == 0o644


@pytest.mark.parametrize("storage", ["arrow", "arrow-shared"])
def test_file_storages_write_back_and_agree(tmp_path, storage):
    path = tmp_path / "s.arrow"
    s = _trained(path, storage=storage)
    mem = _trained()
    assert snapshot(s) == snapshot(mem)
    s.flush()
    # another reader sees exactly the flushed state through the file
    other = StateStore.open(path, mode="r")
    assert snapshot(other) == snapshot(mem)
    other.close()
    s.observe([7], [0.25], [0.5], [True])
    s.close()
    again = StateStore.open(path, storage=storage)
    assert again.column("times_seen")[7] == mem.column("times_seen")[7] + 1
    again.close()
    with pytest.raises(InputError, match="storage"):
        StateStore.create(5, tmp_path / "x.arrow", storage="memory")
