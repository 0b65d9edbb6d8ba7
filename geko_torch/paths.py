"""Checks of the local paths ``geko train`` takes, before anything is loaded, written or removed."""
from __future__ import annotations

import argparse
from pathlib import Path

from geko_state.errors import InputError

__all__ = ["check_model_dir", "check_train_paths"]


def check_model_dir(model_dir: Path, what: str = "MODEL_DIR") -> None:
    """InputError naming ``what`` unless ``model_dir`` is a local Hugging Face model directory."""
    if not model_dir.exists():
        raise InputError(f"{what} {model_dir}: no such directory; expected a local Hugging Face model "
                         "directory (what save_pretrained writes: config.json, weights, tokenizer files)")
    if not model_dir.is_dir():
        raise InputError(f"{what} {model_dir}: a file, not a directory; expected a local Hugging Face "
                         "model directory")
    if not (model_dir / "config.json").is_file():
        raise InputError(f"{what} {model_dir}: no config.json; expected a local Hugging Face model "
                         "directory (what save_pretrained writes)")


def check_train_paths(args: argparse.Namespace) -> None:
    """The paths of parsed ``geko train`` arguments: model directory, data files, checkpoint to
    resume from, and an output directory that a new run may replace (a GEKO run, or empty)."""
    from .rundir import check_clearable, earlier_run_files
    from .text_data import check_data_path

    check_model_dir(args.model_dir)
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
