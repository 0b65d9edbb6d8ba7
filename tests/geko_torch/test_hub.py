"""MODEL and DATA_FILE as Hugging Face Hub ids: loaded from the local Hugging Face caches, offline; a
clear error naming the id and how to make a local copy when one is not cached."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import polars as pl

from ..app.tiny import make_model_dir, sft_rows, write_jsonl

ROOT = Path(__file__).resolve().parents[2]
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cache_repo(hf_home: Path, repo_id: str, files: Path) -> None:
    """The layout huggingface_hub's cache gives a downloaded model: refs/main names a snapshot."""
    repo = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(COMMIT)
    shutil.copytree(files, repo / "snapshots" / COMMIT)


def _cache_dataset(hf_home: Path, repo_id: str, splits: dict[str, list[dict]]) -> None:
    """The layout ``datasets`` gives a downloaded and prepared dataset: one Arrow file per split
    and its dataset_info.json, under HF_HOME/datasets/<org>___<name>/default/0.0.0/<hash>/."""
    import datasets
    import pyarrow as pa

    org, name = repo_id.split("/")
    d = hf_home / "datasets" / f"{org}___{name}" / "default" / "0.0.0" / "0123abcd"
    d.mkdir(parents=True)
    split_dict = datasets.SplitDict(dataset_name=name)
    features = None
    for split, rows in splits.items():
        ds = datasets.Dataset.from_list(rows)
        features = ds.features
        table = ds.data.table
        with pa.OSFile(str(d / f"{name}-{split}.arrow"), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as w:
            w.write_table(table)
        split_dict.add(datasets.SplitInfo(name=split, num_examples=len(rows), dataset_name=name))
    datasets.DatasetInfo(features=features, builder_name=name, dataset_name=name, config_name="default",
                         version="0.0.0", splits=split_dict).write_to_directory(str(d))


def _geko(args: list, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1",
           "HF_DATASETS_OFFLINE": "1"}
    for var in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        env.pop(var, None)
    return subprocess.run([sys.executable, "-m", "geko_torch.cli", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=600, check=False)


def test_a_hub_id_in_the_local_cache_trains_offline(tmp_path):
    hf_home = tmp_path / "hf"
    _cache_repo(hf_home, "geko-test/tiny-gpt2", make_model_dir(tmp_path / "built"))
    data = write_jsonl(tmp_path / "d.jsonl", sft_rows(16))
    out = tmp_path / "run"
    r = _geko(["train", "geko-test/tiny-gpt2", data, "--prompt-field", "prompt", "--response-field", "response",
               "--epochs", "1", "--batch-size", "8", "--workers", "0", "--no-progress", "--output-dir", out], hf_home)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pl.read_parquet(out / "epochs.parquet").height == 1
    assert (out / "final_model" / "config.json").is_file()


def test_a_hub_id_not_in_the_cache_says_how_to_get_it(tmp_path):
    hf_home = tmp_path / "hf"
    hf_home.mkdir()
    data = write_jsonl(tmp_path / "d.jsonl", sft_rows(4))
    r = _geko(["train", "geko-test/missing", data, "--text-field", "prompt", "--output-dir", tmp_path / "run"], hf_home)
    assert r.returncode == 2
    for needle in ("MODEL geko-test/missing", "not in the Hugging Face cache", str(hf_home), "HF_HUB_OFFLINE",
                   "hf download geko-test/missing --local-dir ./missing"):
        assert needle in r.stderr, r.stderr
    assert not (tmp_path / "run").exists()


def test_a_hub_dataset_in_the_local_cache_trains_offline(tmp_path):
    hf_home = tmp_path / "hf"
    _cache_repo(hf_home, "geko-test/tiny-gpt2", make_model_dir(tmp_path / "built"))
    _cache_dataset(hf_home, "geko-test/sums", {"train": sft_rows(16), "test": sft_rows(4, seed=1)})
    out = tmp_path / "run"
    common = ["--prompt-field", "prompt", "--response-field", "response", "--epochs", "1", "--batch-size", "8",
              "--workers", "0", "--no-progress"]
    r = _geko(["train", "geko-test/tiny-gpt2", "geko-test/sums", *common, "--output-dir", out], hf_home)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pl.read_parquet(out / "epochs.parquet")["samples_trained"].to_list() == [16]
    assert f"--ids-out {out / 'kept_ids.parquet'}" in r.stdout and "row i of geko-test/sums, split train" in r.stdout
    r = _geko(["train", "geko-test/tiny-gpt2", "geko-test/sums", *common, "--split", "test", "--output-dir",
               tmp_path / "on_test"], hf_home)
    assert r.returncode == 0, r.stderr[-3000:]
    assert pl.read_parquet(tmp_path / "on_test" / "epochs.parquet")["samples_trained"].to_list() == [4]
    r = _geko(["train", "geko-test/tiny-gpt2", "geko-test/sums", *common, "--split", "nope", "--output-dir",
               tmp_path / "x"], hf_home)
    assert r.returncode == 2 and "no split 'nope'" in r.stderr, r.stderr[-2000:]


def test_a_hub_dataset_not_in_the_cache_says_how_to_get_it(tmp_path):
    hf_home = tmp_path / "hf"
    _cache_repo(hf_home, "geko-test/tiny-gpt2", make_model_dir(tmp_path / "built"))
    r = _geko(["train", "geko-test/tiny-gpt2", "geko-test/missing", "--text-field", "prompt", "--output-dir",
               tmp_path / "run"], hf_home)
    assert r.returncode == 2
    for needle in ("DATA_FILE geko-test/missing", "not in the Hugging Face datasets cache", "HF_HUB_OFFLINE",
                   "datasets.load_dataset('geko-test/missing', split='train').save_to_disk('missing')"):
        assert needle in r.stderr, r.stderr[-2000:]
    assert not (tmp_path / "run").exists()
