"""MODEL as a Hugging Face Hub id: loaded from the local Hugging Face cache, offline; a clear error
naming the id and how to make a local copy when it is not cached."""
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


def _geko(args: list, hf_home: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
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
