"""``geko train``: fine-tune a local Hugging Face model on a local dataset file with GEKO selection.

Registered in the engine's ``COMMANDS`` registry (``@command``) when imported. :func:`run_train` is
the command itself; callers that drive it (the app's training process) pass a GEKOConfig, extra
GEKOTrainingArgs settings and a callback that gets the trainer, instead of patching anything.
Importing it imports no torch (so ``geko --help`` lists it on the plain install): torch and the
trainer's defaults are imported when the command's options are set up, transformers and peft when it runs.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from geko_state.cli import command, int_at_least, number_in
from geko_state.config import PRESETS, GEKOConfig
from geko_state.errors import ConfigError, GekoError, InputError

from ..paths import DEFAULT_SPLIT, ModelRef, check_train_paths, model_ref
from .requires import require_torch

__all__ = ["EPILOG_EXAMPLE", "KEEP_NOTE", "configure", "run_train"]

# Why the printed export drops HARD: confidently wrong samples are where mislabeled ones end up.
KEEP_NOTE = ("drops HARD, the confidently wrong samples, where mislabeled rows end up; keep HARD too "
             "(--keep HARD,FOCUS,LIGHT) to train on every sample not yet learned")

_DEFAULT_OUT = Path("runs/train")
_DEFAULT_PRESET = "default"
_LORA_DEFAULTS = {"lora_r": 8, "lora_alpha": 16, "lora_dropout": 0.05}
EPILOG_EXAMPLE = "  geko train ./my-model data.jsonl --prompt-field prompt --response-field response --lora"


def _say(text: str) -> None:
    """A note for the user (stderr, so stdout stays the report)."""
    print(f"geko train: {text}", file=sys.stderr, flush=True)


def _trainer_defaults() -> dict[str, Any]:
    """One source for the defaults the trainer and the command share (imports torch)."""
    from dataclasses import fields

    from ..training_args import GEKOTrainingArgs

    return {f.name: f.default for f in fields(GEKOTrainingArgs)}


# ---------------------------------------------------------------------- argparse value types
_positive_float = number_in(0, low_open=True)
_dropout = number_in(0, 1, high_open=True)


def _parse_budget(text: str) -> Any:
    from geko_state.planning import parse_budget_text

    try:
        return parse_budget_text(text)
    except InputError:
        raise InputError(
            f"--budget {text!r}: expected 'trainable', 'full', a draw count per epoch (integer >= 0) "
            "or a fraction of the samples (number in (0, 1])"
        ) from None


# ---------------------------------------------------------------------- validation (no side effects)
def _task_of(args: argparse.Namespace) -> str:
    """``"sft"``, ``"lm"`` or ``"classification"`` from the field options; InputError naming the
    options for a combination that means nothing."""
    p, r, t, lab = args.prompt_field, args.response_field, args.text_field, args.label_field
    m = getattr(args, "messages_field", None)
    if m is not None:
        if any(v is not None for v in (p, r, t, lab)):
            raise InputError("--messages-field trains on conversations alone: it cannot be combined with "
                             "--prompt-field, --response-field, --text-field or --label-field")
        return "chat"
    if p is not None or r is not None:
        if p is None or r is None:
            given, other = ("--prompt-field", "--response-field") if p is not None else ("--response-field", "--prompt-field")
            raise InputError(f"{given} needs {other}: supervised fine-tuning trains on the response and masks "
                             "the prompt (or use --text-field alone to train on whole texts)")
        if t is not None:
            raise InputError("--text-field cannot be combined with --prompt-field/--response-field: choose "
                             "prompt/response fine-tuning or whole-text training (--text-field alone)")
        if lab is not None:
            raise InputError("--label-field is for classification (--text-field TEXT --label-field LABEL) and "
                             "cannot be combined with --prompt-field/--response-field")
        if p == r:
            raise InputError(f"--prompt-field and --response-field name the same column {p!r}")
        return "sft"
    if lab is not None:
        if t is None:
            raise InputError("--label-field needs --text-field: classification reads the text from "
                             "--text-field TEXT and the class from --label-field LABEL")
        if t == lab:
            raise InputError(f"--text-field and --label-field name the same column {t!r}")
        return "classification"
    if t is not None:
        return "lm"
    raise InputError("say which columns to train on: --prompt-field P --response-field R (causal LM, "
                     "prompt masked), --messages-field M (chat conversations, assistant turns trained), "
                     "--text-field T (causal LM on the whole text) or --text-field T "
                     "--label-field L (sequence classification)")


def _selection_of(args: argparse.Namespace) -> Any:
    """The SelectionConfig of ``--selection``, ``--keep-fraction`` and ``--suspect-threshold``;
    InputError naming the options."""
    from geko_state.selection import SelectionConfig, SelectionKind

    for flag, value, what in (("--keep-fraction", args.keep_fraction, "skips GEKO's mastered samples"),
                              ("--suspect-threshold", args.suspect_threshold, "sets GEKO's noise suspects aside")):
        if value is not None and args.selection != SelectionKind.GEKO.value:
            raise InputError(f"{flag} {what} and needs --selection geko, got --selection {args.selection}")
    return SelectionConfig(policy=args.selection, keep_fraction=args.keep_fraction,
                           suspect_threshold=args.suspect_threshold)


def _check_lora(args: argparse.Namespace) -> list[str] | None:
    given = [f"--{k.replace('_', '-')}" for k in (*_LORA_DEFAULTS, "lora_targets") if getattr(args, k) is not None]
    if given and not args.lora:
        raise InputError(f"{', '.join(given)} configure LoRA: add --lora")
    for k, v in _LORA_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)
    if float(args.lora_alpha).is_integer():
        args.lora_alpha = int(args.lora_alpha)  # peft writes it into adapter_config.json as given
    if args.lora_targets is None:
        return None
    targets = [t.strip() for t in args.lora_targets.split(",")]
    if not all(targets):
        raise InputError(f"--lora-targets {args.lora_targets!r}: expected comma-separated module names, "
                         "e.g. q_proj,v_proj")
    return targets


def _check_resume_matches(checkpoint: Path, n_samples: int, selection: str) -> None:
    """Refuse a checkpoint of another dataset or selection policy before the run directory is touched."""
    import json

    try:
        state = json.loads((checkpoint / "trainer_state.json").read_text())
        saved = int(state["n_samples"])
        policy = (((state.get("extra") or {}).get("args") or {}).get("selection") or {}).get("policy", "geko")
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise InputError(f"--resume {checkpoint}: unreadable trainer_state.json ({e})") from None
    if saved != n_samples:
        raise InputError(f"--resume {checkpoint}: the checkpoint was trained on {saved:,} samples but DATA_FILE "
                         f"has {n_samples:,}; resume with the same data file")
    if policy != selection:
        raise InputError(f"--resume {checkpoint}: the checkpoint was trained with --selection {policy} but this "
                         f"command has --selection {selection}; resume with the same selection policy")


# ---------------------------------------------------------------------- loading
def _position_limit(config: Any) -> int | None:
    for name in ("n_positions", "max_position_embeddings"):
        v = getattr(config, name, None)
        if isinstance(v, int) and v > 0:
            return v
    return None


def _transformers() -> Any:
    try:
        import transformers
    except ImportError as e:
        from geko_state.plots import MissingDependencyError

        raise MissingDependencyError(f"geko train needs transformers: pip install 'geko-engine[hf]' ({e})") from None
    return transformers


def _load_config(model: ModelRef) -> Any:
    AutoConfig = _transformers().AutoConfig

    try:
        return AutoConfig.from_pretrained(model.name, **model.from_pretrained_kwargs())
    except (OSError, ValueError, KeyError) as e:
        raise model.load_error("config.json", e) from None


def _load_tokenizer(model: ModelRef) -> Any:
    AutoTokenizer = _transformers().AutoTokenizer

    try:
        tok = AutoTokenizer.from_pretrained(model.name, **model.from_pretrained_kwargs())
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise InputError(f"{model.load_error('tokenizer', e)}; a model directory needs its tokenizer too: "
                         "tokenizer.save_pretrained(MODEL)") from None
    if getattr(tok, "pad_token_id", None) is None:
        if getattr(tok, "eos_token", None) is not None:
            tok.pad_token = tok.eos_token
            _say(f"the tokenizer has no pad token; padding with its eos token {tok.eos_token!r} "
                 f"(id {tok.pad_token_id}); padding is masked out of attention and loss")
        else:
            _say("the tokenizer has neither a pad nor an eos token; padding with id 0 (masked out of "
                 "attention and loss)")
    return tok


def _load_model(model: ModelRef, task: str, *, num_labels: int | None, id2label: dict[int, str] | None) -> Any:
    transformers = _transformers()
    if task == "classification":
        cls = transformers.AutoModelForSequenceClassification
        kw: dict[str, Any] = {"num_labels": num_labels, "ignore_mismatched_sizes": True}
        if id2label is not None:
            kw["id2label"] = id2label
            kw["label2id"] = {v: k for k, v in id2label.items()}
    else:
        cls, kw = transformers.AutoModelForCausalLM, {}
    try:
        return cls.from_pretrained(model.name, **model.from_pretrained_kwargs(), **kw)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise model.load_error(f"weights ({cls.__name__})", e) from None


# ---------------------------------------------------------------------- run directory
def _save_final_model(trainer: Any, tokenizer: Any, out: Path, label_map: dict[str, int] | None) -> Path:
    """``OUT/final_model``: the model (or, for LoRA, the adapter) and the tokenizer in Hugging Face
    format, written under a temporary name and renamed."""
    from ..checkpoint import unwrap_model
    from ..rundir import FINAL_MODEL
    from ..text_data import LABEL_MAP_FILE, write_label_map

    final = out / FINAL_MODEL
    tmp = out / f".{FINAL_MODEL}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    model = unwrap_model(trainer.model)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    if label_map is not None:
        write_label_map(tmp / LABEL_MAP_FILE, label_map)
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def _token_accuracy(text: str) -> float | None:
    """argparse type of --token-accuracy: a share in (0, 1], or 'none' (the loss rule)."""
    if text.strip().lower() == "none":
        return None
    return number_in(0, 1, low_open=True)(text)


# ---------------------------------------------------------------------- the command
def configure(p: argparse.ArgumentParser) -> None:
    """The ``geko train`` options (also the app's form: ``geko_torch.app.command.form_options``)."""
    require_torch("train")
    from geko_state.selection import SelectionKind

    from ..schedules import LRScheduleKind
    from ..text_data import DATA_FORMATS, DEFAULT_MAX_LENGTH

    _TA = _trainer_defaults()  # noqa: N806  (the name the option table reads best with)
    formats = ", ".join(DATA_FORMATS)
    p.add_argument("model_dir", metavar="MODEL",
                   help="local Hugging Face model directory (config.json, weights, tokenizer files), or a Hub "
                        "id (org/name) in the local Hugging Face cache (downloaded by from_pretrained when online)")
    p.add_argument("data_file", type=Path, metavar="DATA_FILE",
                   help=f"training data, one sample per row: a file ({formats}; format by suffix), a directory "
                        "written by datasets' save_to_disk, or a Hub dataset id (org/name; --split, --subset) "
                        "loaded through the local Hugging Face cache")
    d = p.add_argument_group("data (choose one: prompt+response, messages, text, or text+label)")
    d.add_argument("--prompt-field", metavar="COL", default=None,
                   help="causal LM: column of prompts; their tokens are masked from the loss "
                        "(needs --response-field; default none)")
    d.add_argument("--response-field", metavar="COL", default=None,
                   help="causal LM: column of responses, the trained tokens (default none)")
    d.add_argument("--messages-field", metavar="COL", default=None,
                   help="causal LM on conversations: column of [{role, content}, ...] lists (TRL's chat format), "
                        "rendered with the tokenizer's chat template; only assistant turns are trained (default none)")
    d.add_argument("--text-field", metavar="COL", default=None,
                   help="column of texts: causal LM on the whole text, or classification with "
                        "--label-field (default none)")
    d.add_argument("--label-field", metavar="COL", default=None,
                   help="classification: column of class ids (int) or class names (str) (default none)")
    d.add_argument("--split", metavar="NAME", default=None,
                   help=f"split of a Hub dataset DATA_FILE (default {DEFAULT_SPLIT})")
    d.add_argument("--subset", metavar="NAME", default=None,
                   help="configuration (subset) of a Hub dataset DATA_FILE (default: the dataset's default)")
    d.add_argument("--eval-file", type=Path, metavar="FILE", default=None,
                   help="evaluation data with the same columns, evaluated after each epoch (default none)")
    d.add_argument("--max-length", type=int_at_least(2), default=DEFAULT_MAX_LENGTH, metavar="N",
                   help=f"cut samples at N tokens; at most the model's positions (default {DEFAULT_MAX_LENGTH})")

    t = p.add_argument_group("training")
    t.add_argument("--epochs", type=int_at_least(1), default=_TA["num_epochs"], metavar="N",
                   help=f"epochs (default {_TA['num_epochs']})")
    t.add_argument("--batch-size", type=int_at_least(1), default=_TA["batch_size"], metavar="N",
                   help=f"samples per batch (default {_TA['batch_size']})")
    t.add_argument("--lr", type=_positive_float, default=_TA["learning_rate"], metavar="LR",
                   help=f"AdamW learning rate (default {_TA['learning_rate']:g})")
    t.add_argument("--grad-accum", type=int_at_least(1), default=_TA["gradient_accumulation_steps"],
                   metavar="N", help="gradient accumulation steps; effective batch = batch size x N "
                                     f"(default {_TA['gradient_accumulation_steps']})")
    t.add_argument("--warmup-steps", type=int_at_least(0), default=None, metavar="N",
                   help="linear learning-rate warmup, in optimizer steps (default: --warmup-ratio of the planned "
                        "steps)")
    t.add_argument("--warmup-ratio", type=number_in(0, 1, high_open=True), default=_TA["warmup_ratio"], metavar="R",
                   help=f"warmup as a share of the run's planned optimizer steps, when --warmup-steps is not "
                        f"given (default {_TA['warmup_ratio']})")
    t.add_argument("--lr-scheduler-type", choices=[k.value for k in LRScheduleKind],
                   default=LRScheduleKind(_TA["lr_scheduler_type"]).value,
                   help="learning-rate decay over training progress (the share of the planned epochs' draws "
                        "done, so shorter GEKO or subset epochs still end at its end): linear or cosine to 0, or "
                        f"constant; after the warmup (default {LRScheduleKind(_TA['lr_scheduler_type']).value})")
    t.add_argument("--token-accuracy", type=_token_accuracy, default=_TA["token_accuracy"], metavar="R|none",
                   help="causal LM: a sample is correct when this share of its response tokens is predicted right; "
                        f"'none' for the seeds' rule, mean token loss < 0.5 (default {_TA['token_accuracy']})")
    t.add_argument("--precision", choices=("fp32", "bf16", "fp16"), default="fp32",
                   help="fp32, or bf16/fp16 autocast (fp16 adds a gradient scaler) (default fp32)")
    t.add_argument("--gradient-checkpointing", action="store_true",
                   help="trade compute for activation memory (default off)")
    t.add_argument("--compile", action="store_true",
                   help="torch.compile the model; falls back to eager with a warning (default off)")
    t.add_argument("--seed", type=int_at_least(0), default=_TA["seed"], metavar="N",
                   help=f"seed of Python, numpy, torch and the epoch plans (default {_TA['seed']})")
    t.add_argument("--max-steps", type=int_at_least(1), default=None, metavar="N",
                   help="stop after N optimizer steps with a checkpoint; continue later with --resume "
                        "(default none: train all epochs)")
    t.add_argument("--save-steps", type=int_at_least(1), default=_TA["save_steps"], metavar="N",
                   help=f"write a checkpoint every N optimizer steps (default {_TA['save_steps']})")
    t.add_argument("--workers", type=int_at_least(-1), default=_TA["dataloader_num_workers"], metavar="N",
                   help="DataLoader worker processes; -1: auto, half the cores, at most 4 (default -1)")

    g = p.add_argument_group("GEKO")
    g.add_argument("--preset", choices=sorted(PRESETS), default=_DEFAULT_PRESET,
                   help=f"GEKOConfig preset (default {_DEFAULT_PRESET})")
    g.add_argument("--budget", default="trainable",
                   help="draws per epoch: 'trainable' (samples not frozen or pruned), 'full' (N), a count "
                        "or a fraction of N (default trainable)")
    g.add_argument("--selection", choices=[k.value for k in SelectionKind], default=SelectionKind.GEKO.value,
                   help="sample-selection policy: geko, or a baseline on the same engine: uniform (every "
                        "sample each epoch), infobatch (InfoBatch soft pruning of low-loss samples), "
                        "random_subset (a random --budget sized subset each epoch), rs2 (--budget sized epochs "
                        "that walk through the data without replacement) (default geko)")
    g.add_argument("--keep-fraction", type=number_in(0, 1, low_open=True), default=None, metavar="P",
                   help="GEKO: skip mastered samples without bias: each epoch a random share P of the FREEZE and "
                        "of the LIGHT samples is trained, each with loss weight 1/P, so the expected gradient is "
                        "the full-data one (default none: mastered samples are skipped outright)")
    g.add_argument("--suspect-threshold", type=number_in(0, 1), default=None, metavar="S",
                   help="GEKO: leave out of training the samples observed at least twice whose streak_aum noise score "
                        "is above S (0.75: wrong at every observation with a negative mean margin; see "
                        "docs/noise.md) (default none)")
    g.add_argument("--stop-on-plateau", type=number_in(0, 1), nargs="?", const=0.1, default=None, metavar="SHARE",
                   help="stop after an epoch (from the second on) in which fewer than SHARE of the learnable "
                        "samples (the noise suspects set aside) are still improving: wrong at their last "
                        "observation with a falling loss; any --selection, no eval set needed; SHARE defaults "
                        "to 0.1 (see docs/training.md, 'Knowing when to stop') (default off)")
    g.add_argument("--with-replacement", action="store_true",
                   help="draw plans with replacement, so HARD samples can repeat within an epoch (the "
                        "seeds' behaviour; use with --preset seeds to reproduce the seeds exactly). "
                        "(default: without, every drawn sample at most once per epoch)")
    g.add_argument("--prune-after", type=int_at_least(0), default=0, metavar="N",
                   help="prune samples frozen N epochs in a row (default 0: never)")

    lo = p.add_argument_group("LoRA (peft)")
    lo.add_argument("--lora", action="store_true",
                    help="train LoRA adapters instead of all weights (default off)")
    lo.add_argument("--lora-r", type=int_at_least(1), default=None, metavar="R",
                    help=f"adapter rank (default {_LORA_DEFAULTS['lora_r']})")
    lo.add_argument("--lora-alpha", type=_positive_float, default=None, metavar="A",
                    help=f"adapter scaling alpha (default {_LORA_DEFAULTS['lora_alpha']})")
    lo.add_argument("--lora-dropout", type=_dropout, default=None, metavar="P",
                    help=f"dropout on the adapter input (default {_LORA_DEFAULTS['lora_dropout']})")
    lo.add_argument("--lora-targets", default=None, metavar="NAMES",
                    help="comma-separated module names to adapt, e.g. q_proj,v_proj (default: per "
                         "architecture: GPT-2 c_attn, LLaMA/Mistral/Qwen q_proj,v_proj, BERT query,value)")

    o = p.add_argument_group("output")
    o.add_argument("--output-dir", type=Path, default=_DEFAULT_OUT, metavar="OUT",
                   help="run directory: state, history, checkpoints, final_model/ (default "
                        f"{_DEFAULT_OUT}); one that holds an earlier run is refused unless --overwrite or --resume")
    o.add_argument("--overwrite", action="store_true",
                   help="replace an earlier run in OUT: its history, checkpoints, log and final model are "
                        "removed first (default: refuse)")
    o.add_argument("--resume", type=Path, default=None, metavar="CHECKPOINT_DIR",
                   help="continue from a checkpoint-<step> directory of the same command (default none)")
    o.add_argument("--no-progress", action="store_true",
                   help="no progress bars (tokenising, epochs) (default: shown)")


def run_train(args: argparse.Namespace, *, config: GEKOConfig | None = None,
              training: Mapping[str, Any] | None = None,
              on_trainer: Callable[[Any], None] | None = None) -> int:
    """Run ``geko train`` with parsed ``args``; returns the exit status.

    ``config``: the GEKOConfig to train with instead of ``--preset`` (with ``--prune-after``);
    ``training``: GEKOTrainingArgs fields set beyond what the command line says; ``on_trainer``:
    called with the GEKOTrainer once it is built, before anything is trained.
    """
    # Everything that can refuse the input runs before anything is written.
    task = _task_of(args)
    lora_targets = _check_lora(args)
    budget = _parse_budget(args.budget)
    selection = _selection_of(args)
    check_train_paths(args)

    require_torch("train")
    from ..rundir import clear_earlier_run
    from ..text_data import (
        LABEL_MAP_FILE,
        num_classes,
        read_table,
        require_columns,
        tokenize_causal_lm,
        tokenize_chat,
        tokenize_classification,
        write_label_map,
    )

    roles = {"--prompt-field": args.prompt_field, "--response-field": args.response_field,
             "--text-field": args.text_field, "--label-field": args.label_field,
             "--messages-field": args.messages_field}
    from ..hub_data import load_data

    train_table = load_data(args.data_file, "DATA_FILE", split=args.split, subset=args.subset)
    require_columns(train_table, roles, f"DATA_FILE {args.data_file}")
    eval_table = None
    if args.eval_file is not None:
        eval_table = read_table(args.eval_file, "--eval-file")
        require_columns(eval_table, roles, f"--eval-file {args.eval_file}")

    source = model_ref(args.model_dir)
    model_config = _load_config(source)
    max_length = args.max_length
    limit = _position_limit(model_config)
    if limit is not None and max_length > limit:
        _say(f"--max-length {max_length} is above the model's {limit} positions; using {limit}")
        max_length = limit
    tokenizer = _load_tokenizer(source)

    progress = False if args.no_progress else None
    if args.no_progress:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # its weight loading / saving bars
    label_map = None
    num_labels = None
    if task == "classification":
        train_ds, label_map = tokenize_classification(
            train_table, tokenizer, text_field=args.text_field, label_field=args.label_field,
            max_length=max_length, progress=progress, source=f"DATA_FILE {args.data_file}")
        num_labels = num_classes(train_ds.class_labels, label_map)  # type: ignore[arg-type]
        if num_labels < 2:
            raise InputError(f"DATA_FILE {args.data_file}: --label-field {args.label_field!r} has a single "
                             "class; classification needs at least 2")
        eval_ds = None
        if eval_table is not None:
            eval_ds, _ = tokenize_classification(
                eval_table, tokenizer, text_field=args.text_field, label_field=args.label_field,
                max_length=max_length, label_map=label_map, num_labels=num_labels, progress=progress,
                source=f"--eval-file {args.eval_file}")
    else:
        if task == "chat":
            tokenize: Any = tokenize_chat
            fields_kw: dict[str, Any] = {"messages_field": args.messages_field}
        else:
            tokenize = tokenize_causal_lm
            fields_kw = ({"prompt_field": args.prompt_field, "response_field": args.response_field}
                         if task == "sft" else {"text_field": args.text_field})
        train_ds = tokenize(train_table, tokenizer, max_length=max_length, progress=progress,
                            source=f"DATA_FILE {args.data_file}", **fields_kw)
        eval_ds = None
        if eval_table is not None:
            eval_ds = tokenize(eval_table, tokenizer, max_length=max_length, progress=progress,
                               source=f"--eval-file {args.eval_file}", **fields_kw)
        if train_ds.n_without_labels == len(train_ds):
            raise InputError(f"DATA_FILE {args.data_file}: no sample has a response token left within "
                             f"--max-length {max_length}; raise --max-length or shorten the prompts")
        if train_ds.n_without_labels:
            _say(f"{train_ds.n_without_labels:,} of {len(train_ds):,} samples have no response token within "
                 f"--max-length {max_length}; they stay in the run but are not trained on")
    if train_ds.n_truncated:
        _say(f"{train_ds.n_truncated:,} of {len(train_ds):,} training samples were cut at {max_length} tokens")
    del train_table, eval_table
    if args.resume is not None:
        _check_resume_matches(args.resume, len(train_ds), args.selection)

    from ..lora import apply_lora, count_parameters
    from ..trainer import GEKOTrainer, set_seed
    from ..training_args import GEKOTrainingArgs

    set_seed(args.seed)  # a new classification head is initialised while loading
    id2label = None if label_map is None else {i: name for name, i in label_map.items()}
    model = _load_model(source, task, num_labels=num_labels, id2label=id2label)
    pad_id = tokenizer.pad_token_id
    if getattr(model.config, "pad_token_id", None) is None and isinstance(pad_id, int):
        model.config.pad_token_id = pad_id  # *ForSequenceClassification finds the last token with it
    if args.lora:
        set_seed(args.seed)  # adapter initialisation draws from torch's generator
        try:
            model = apply_lora(model, r=args.lora_r, alpha=args.lora_alpha, dropout=args.lora_dropout,
                               target_modules=lora_targets)
        except ConfigError as e:
            raise ConfigError(f"LoRA (--lora-r/--lora-alpha/--lora-dropout/--lora-targets): {e}") from None
    if config is None:
        config = PRESETS[args.preset].replace(prune_frozen_after=args.prune_after, log_bucket_stats=False)
    from geko_state.progress import PlateauStop

    train_args = GEKOTrainingArgs(
        output_dir=str(args.output_dir), num_epochs=args.epochs, batch_size=args.batch_size,
        learning_rate=args.lr, warmup_steps=args.warmup_steps, warmup_ratio=args.warmup_ratio,
        lr_scheduler_type=args.lr_scheduler_type, gradient_accumulation_steps=args.grad_accum,
        token_accuracy=args.token_accuracy,
        seed=args.seed, bf16=args.precision == "bf16", fp16=args.precision == "fp16",
        gradient_checkpointing=args.gradient_checkpointing, compile_model=args.compile,
        dataloader_num_workers=args.workers, budget=budget, selection=selection, max_steps=args.max_steps,
        replacement=args.with_replacement,
        stop_on_plateau=None if args.stop_on_plateau is None else PlateauStop(min_improving=args.stop_on_plateau),
        save_steps=args.save_steps, task="classification" if task == "classification" else "causal_lm",
        disable_progress_bar=args.no_progress,
    )
    if training:
        train_args = train_args.replace(**training)

    out: Path = args.output_dir
    if args.resume is None:
        removed = clear_earlier_run(out)
        if removed:
            _say(f"{out} held an earlier run; replaced it ({', '.join(removed[:6])}"
                 f"{', ...' if len(removed) > 6 else ''}); use --resume CHECKPOINT_DIR to continue a run instead")
    if args.lora:
        print(count_parameters(model).format(), flush=True)
    trainer = GEKOTrainer(model=model, train_dataset=train_ds, eval_dataset=eval_ds, tokenizer=tokenizer,
                          config=config, args=train_args)
    if on_trainer is not None:
        on_trainer(trainer)
    restore = _stop_on_signals(trainer)
    try:
        if label_map is not None:
            write_label_map(out / LABEL_MAP_FILE, label_map, args.label_field)
        if args.resume is not None:
            trainer.load_checkpoint(args.resume)
        metrics = trainer.train()
        final = _save_final_model(trainer, tokenizer, out, label_map)
        stopped = bool(metrics.get("stopped_at_max_steps") or metrics.get("stopped_by_request"))
        _print_outcome(args, trainer, final, stopped, task, label_map)
    finally:
        restore()
        trainer.close()
    return 0


def _stop_on_signals(trainer: Any) -> Any:
    """SIGINT/SIGTERM stop training after the current optimizer step, with a checkpoint (a second
    signal stops at once). Returns a function that puts the previous handlers back."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    asked: list[int] = []

    def handle(signum: int, frame: Any) -> None:
        if asked:
            raise KeyboardInterrupt
        asked.append(signum)
        _say(f"{signal.Signals(signum).name}: stop requested; stopping after the current optimizer step with a "
             "checkpoint (again: at once)")
        trainer.request_stop()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    return lambda: [signal.signal(s, h) for s, h in previous.items()]


def _print_outcome(args: argparse.Namespace, trainer: Any, final: Path, stopped: bool, task: str,
                   label_map: dict[str, int] | None) -> None:
    from ..text_data import LABEL_MAP_FILE

    out = args.output_dir
    q = shlex.quote
    step = trainer.global_step
    ckpt = out / f"checkpoint-{step}"
    lines = [""]
    if trainer.run.epochs_path.is_file():
        try:
            lines.append(trainer.get_efficiency_report().format())
            lines.append("")
        except GekoError:
            pass  # no finished epoch yet (stopped by --max-steps inside the first one)
    if stopped:
        if args.max_steps is not None and step >= args.max_steps:
            lines.append(f"stopped at --max-steps {args.max_steps} (step {step}); checkpoint: {ckpt}")
        else:
            lines.append(f"stopped on request at step {step}; checkpoint: {ckpt}")
        lines.append(f"to continue: the same command with --resume {q(str(ckpt))} and without --max-steps "
                     "(or a larger one)")
    else:
        lines.append(f"final checkpoint: {ckpt}")
    what = f"model at step {step}" if stopped else "final model"
    if args.lora and task == "classification":
        n = len(label_map) if label_map is not None else trainer.model.config.num_labels
        lines.append(f"{what}: {final}  (LoRA adapter and classification head, with the tokenizer; load it "
                     "with peft.PeftModel.from_pretrained(transformers.AutoModelForSequenceClassification."
                     f"from_pretrained({str(args.model_dir)!r}, num_labels={n}, ignore_mismatched_sizes=True), "
                     f"{str(final)!r}))")
    elif args.lora:
        lines.append(f"{what}: {final}  (LoRA adapter only, with the tokenizer; load it with "
                     f"peft.AutoPeftModelForCausalLM.from_pretrained({str(final)!r}), which reads the base "
                     f"model from {args.model_dir})")
    else:
        loader = ("AutoModelForSequenceClassification" if task == "classification" else "AutoModelForCausalLM")
        lines.append(f"{what}: {final}  (transformers.{loader}.from_pretrained({str(final)!r}), "
                     "tokenizer included)")
    if label_map is not None:
        lines.append(f"label map: {out / LABEL_MAP_FILE}  (class id -> label: "
                     + ", ".join(f"{i}={name}" for name, i in sorted(label_map.items(), key=lambda kv: kv[1])[:8])
                     + (", ..." if len(label_map) > 8 else "") + ")")
    from ..hub_data import is_hub_dataset

    if is_hub_dataset(args.data_file):  # export writes the kept ids; the rows are the Hub split's
        export = f"  geko export {q(str(out))} --keep FREEZE,LIGHT,FOCUS --ids-out {q(str(out / 'kept_ids.parquet'))}"
        note = f"  ({KEEP_NOTE}; sample id i is row i of {args.data_file}, split {args.split or DEFAULT_SPLIT})"
    else:
        kept = out / f"kept{args.data_file.suffix.lower() if args.data_file.is_file() else '.parquet'}"
        export = (f"  geko export {q(str(out))} --keep FREEZE,LIGHT,FOCUS --dataset {q(str(args.data_file))} "
                  f"--output {q(str(kept))}")
        note = f"  ({KEEP_NOTE})"
    lines += [
        "next:",
        f"  geko report {q(str(out))}",
        f"  geko sql {q(str(out))} \"SELECT bucket, count(*) FROM samples GROUP BY bucket\"",
        export,
        note,
    ]
    print("\n".join(lines), flush=True)


@command(
    "train",
    "Fine-tune a local Hugging Face model directory on a local dataset file (JSONL, Parquet or CSV, "
    "one sample per row) with GEKO sample selection: samples the model has mastered are skipped, "
    "confidently wrong ones are drawn more often. Causal LM with --prompt-field/--response-field "
    "(prompt tokens masked from the loss) or --text-field (whole text trained); sequence "
    "classification with --text-field and --label-field (string labels are mapped to ids, saved in "
    "OUT/label_map.json). Optional LoRA (peft). Writes a GEKO run directory (state, per-epoch "
    "history, checkpoints) that geko report/sql/export read, and the trained model in Hugging Face "
    "format to OUT/final_model. Nothing is downloaded.",
    "geko train ./my-model data.jsonl --prompt-field prompt --response-field response --epochs 3 "
    "--lora --output-dir runs/sft",
)
def _train():
    return configure, run_train
