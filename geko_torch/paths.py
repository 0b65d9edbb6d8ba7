"""Checks of the local paths ``geko train`` takes, before anything is loaded, written or removed."""
from __future__ import annotations

import argparse
import os
import re
from dataclasses import dataclass
from pathlib import Path

from geko_state.errors import InputError

__all__ = ["DEFAULT_SPLIT", "HUB_ID", "ModelRef", "check_model_dir", "check_train_paths", "model_ref"]


def check_model_dir(model_dir: Path, what: str = "MODEL") -> None:
    """InputError naming ``what`` unless ``model_dir`` is a local Hugging Face model directory."""
    if not model_dir.exists():
        raise InputError(f"{what} {model_dir}: no such directory; expected a local Hugging Face model "
                         "directory (what save_pretrained writes: config.json, weights, tokenizer files) or a "
                         "Hub id (org/name)")
    if not model_dir.is_dir():
        raise InputError(f"{what} {model_dir}: a file, not a directory; expected a local Hugging Face "
                         "model directory")
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{what} {model_dir}: no config.json; expected a local Hugging Face model "
                         "directory (what save_pretrained writes)")


DEFAULT_SPLIT = "train"  # of a Hub dataset, when --split is not given

# A Hub repository id: "name" or "org/name" (what from_pretrained takes besides a directory).
HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?$")


@dataclass(frozen=True)
class ModelRef:
    """What MODEL names: a local model directory, or a Hugging Face Hub id to load through the
    local Hugging Face cache (``from_pretrained`` downloads it only when online)."""

    name: str
    local: bool

    def from_pretrained_kwargs(self) -> dict[str, bool]:
        return {"local_files_only": True} if self.local else {}

    def load_error(self, what: str, error: Exception) -> InputError:
        """The error for a failed ``from_pretrained`` of ``what`` (config, tokenizer, model)."""
        if self.local:
            return InputError(f"MODEL {self.name}: cannot load its {what} ({error})")
        from huggingface_hub import constants

        offline = "HF_HUB_OFFLINE is set" if constants.HF_HUB_OFFLINE else "no network or no such repository"
        local = self.name.rsplit("/", 1)[-1]
        return InputError(
            f"MODEL {self.name}: not a local directory, and its {what} is not in the Hugging Face cache "
            f"{constants.HF_HUB_CACHE} ({offline}). Make a local copy on a machine with network access: "
            f"`hf download {self.name} --local-dir ./{local}` (or save_pretrained), then pass ./{local}")


def model_ref(value: str | os.PathLike) -> ModelRef:
    """MODEL as given: an existing path is a local directory; otherwise a text that looks like a
    Hub id (``org/name``) is one; anything else is a local directory that does not exist."""
    text = str(value)
    if Path(text).exists() or not HUB_ID.match(text):
        return ModelRef(text, local=True)
    return ModelRef(text, local=False)


def check_train_paths(args: argparse.Namespace) -> None:
    """The paths of parsed ``geko train`` arguments: model directory, data files, checkpoint to
    resume from, and an output directory that a new run may replace (a GEKO run, or empty)."""
    from .rundir import check_clearable, earlier_run_files
    from .text_data import check_data_path

    if model_ref(args.model_dir).local:
        check_model_dir(Path(args.model_dir), "MODEL")
    from .hub_data import is_hub_dataset

    if not is_hub_dataset(args.data_file):
        check_data_path(args.data_file, "DATA_FILE")
    if args.eval_file is not None:
        check_data_path(args.eval_file, "--eval-file")
    if args.resume is not None:
        if not args.resume.is_dir():
            raise InputError(f"--resume {args.resume}: no such checkpoint directory")
        if not (args.resume / "trainer_state.json").is_file():
            raise InputError(f"--resume {args.resume}: not a GEKO checkpoint (no trainer_state.json); expected "
                             "a checkpoint-<step> directory of an earlier geko train run")
    if args.output_dir.exists() and not args.output_dir.is_dir():
        raise InputError(f"--output-dir {args.output_dir}: exists and is not a directory")
    if args.resume is None:
        earlier = earlier_run_files(args.output_dir)
        if earlier and not getattr(args, "overwrite", False):
            listed = ", ".join(earlier[:4]) + (", ..." if len(earlier) > 4 else "")
            raise InputError(f"--output-dir {args.output_dir}: holds an earlier run ({listed}); add --overwrite to "
                             "replace it, --resume OUT/checkpoint-N to continue it, or choose another directory")
        check_clearable(args.output_dir)  # before the model loads: a new run replaces GEKO runs only
