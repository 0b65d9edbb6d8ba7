"""LoRA through peft: wrap a model with low-rank adapters and count what is left trainable.

peft is imported on first use, so ``import geko_torch.lora`` stays cheap and the rest of GEKO works
without it. Nothing here prints; :meth:`ParamCounts.format` gives the block the trainer shows.
"""
from __future__ import annotations

import copy
import importlib.util
import logging
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from geko_state.errors import ConfigError, InputError
from geko_state.validate import check_int, check_number

__all__ = [
    "ParamCounts",
    "apply_lora",
    "count_parameters",
    "default_target_modules",
    "is_peft_available",
]

logger = logging.getLogger("geko_torch")

_INSTALL_HINT = "pip install peft"
_ALL_LINEAR = "all-linear"  # peft's shorthand for "every Linear/Conv1D except the output layer"

# Checked first, by ``config.model_type``, because name inspection alone cannot tell Phi (which
# also has q_proj/v_proj) from LLaMA-style models.
_TARGETS_BY_MODEL_TYPE: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "falcon": ("query_key_value",),
    "phi": ("q_proj", "dense"),
}
# Then by the leaf names present, in this order, for model types not listed above.
_TARGETS_BY_NAMES: tuple[tuple[str, ...], ...] = (
    ("c_attn",),  # GPT-2 family (Conv1D)
    ("q_proj", "v_proj"),  # LLaMA, Mistral, Qwen, Gemma, OPT, ...
    ("query_key_value",),  # Falcon, GPT-NeoX, BLOOM
    ("query", "value"),  # BERT family
)
# Output heads are left out of the all-Linear fallback: adapting them rarely helps and peft's
# own "all-linear" excludes them too.
_HEAD_NAMES = frozenset({"lm_head", "classifier", "score", "qa_outputs"})

# Model class suffix -> peft task type; the task type picks peft's wrapper (CAUSAL_LM adds
# generate(), SEQ_CLS keeps the classifier head trainable).
_TASK_BY_CLASS_SUFFIX: tuple[tuple[str, str], ...] = (
    ("ForCausalLM", "CAUSAL_LM"),
    ("LMHeadModel", "CAUSAL_LM"),
    ("ForSequenceClassification", "SEQ_CLS"),
    ("ForTokenClassification", "TOKEN_CLS"),
    ("ForQuestionAnswering", "QUESTION_ANS"),
    ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"),
)


def is_peft_available() -> bool:
    """True when peft can be imported; looks the package up without importing it."""
    try:
        return importlib.util.find_spec("peft") is not None
    except (ImportError, ValueError):
        # ValueError: ``sys.modules["peft"]`` is None or has no spec, i.e. imports are blocked.
        return False


def _missing_peft(detail: str = "") -> Exception:
    # plots.py owns the optional-dependency error; imported here so this module does not pull in
    # the plotting/report stack at import time.
    from geko_state.errors import MissingDependencyError

    msg = f"LoRA needs peft: {_INSTALL_HINT}"
    return MissingDependencyError(f"{msg} ({detail})" if detail else msg)


def _peft() -> Any:
    if not is_peft_available():
        raise _missing_peft()
    try:
        import peft
    except ImportError as e:  # installed but broken (e.g. incompatible with this torch/transformers)
        raise _missing_peft(f"import failed: {e}") from e
    return peft


@dataclass(frozen=True)
class ParamCounts:
    """Trainable and total parameter counts of a model."""

    trainable: int
    total: int

    def __post_init__(self) -> None:
        if not (0 <= self.trainable <= self.total):
            raise InputError(f"need 0 <= trainable <= total, got trainable={self.trainable}, total={self.total}")

    @property
    def frozen(self) -> int:
        return self.total - self.trainable

    @property
    def trainable_fraction(self) -> float:
        return self.trainable / self.total if self.total else 0.0

    def format(self) -> str:
        """The block the trainer prints after applying LoRA (no trailing newline)."""
        return (
            "[GEKO] LoRA applied\n"
            f"  Trainable params : {self.trainable:,} ({100.0 * self.trainable_fraction:.2f}%)\n"
            f"  Total params     : {self.total:,}\n"
            f"  Frozen params    : {self.frozen:,}"
        )


def _numel(param: torch.nn.Parameter) -> int:
    n = param.numel()
    # DeepSpeed ZeRO-3 leaves partitioned parameters empty and keeps the real size in ds_numel.
    if n == 0 and hasattr(param, "ds_numel"):
        n = int(param.ds_numel)
    # bitsandbytes packs two 4-bit values per byte of storage; count as peft does so our numbers
    # agree with ``PeftModel.get_nb_trainable_parameters``.
    if type(param).__name__ == "Params4bit":
        if hasattr(param, "element_size"):
            nbytes = param.element_size()
        else:
            nbytes = getattr(getattr(param, "quant_storage", None), "itemsize", 1)
        n *= 2 * nbytes
    return n


def count_parameters(model: torch.nn.Module) -> ParamCounts:
    """Count trainable and total parameters; tied (shared) parameters are counted once."""
    trainable = total = 0
    for p in model.parameters():  # deduplicates shared tensors, e.g. GPT-2's tied lm_head
        n = _numel(p)
        total += n
        if p.requires_grad:
            trainable += n
    return ParamCounts(trainable=trainable, total=total)


def _conv1d_cls() -> type | None:
    # Only models built by transformers contain its Conv1D, and building one imports this module,
    # so look it up instead of importing transformers here.
    mod = sys.modules.get("transformers.pytorch_utils")
    return getattr(mod, "Conv1D", None)


def _adaptable_modules(model: torch.nn.Module) -> dict[str, torch.nn.Module]:
    """Fully-qualified name -> module for every nn.Linear / transformers Conv1D."""
    conv1d = _conv1d_cls()
    kinds: tuple[type, ...] = (torch.nn.Linear,) + ((conv1d,) if conv1d is not None else ())
    return {name: m for name, m in model.named_modules() if name and isinstance(m, kinds)}


def _leaf(name: str) -> str:
    return name.rsplit(".", 1)[-1]


def _output_module_names(model: torch.nn.Module, names: dict[str, torch.nn.Module]) -> set[str]:
    heads = {n for n in names if _leaf(n) in _HEAD_NAMES}
    get_out = getattr(model, "get_output_embeddings", None)
    out = get_out() if callable(get_out) else None
    if out is not None:
        heads |= {n for n, m in names.items() if m is out}
    return heads


def _preview(names: Sequence[str] | set[str], k: int = 10) -> str:
    uniq = sorted(set(names))
    more = f", ... ({len(uniq) - k} more)" if len(uniq) > k else ""
    return ", ".join(uniq[:k]) + more


def _shown(targets: Any) -> Any:
    # peft turns target lists into sets; sort them so messages are stable.
    return sorted(targets) if isinstance(targets, (set, frozenset, list, tuple)) else targets


def default_target_modules(model: torch.nn.Module) -> list[str]:
    """Leaf module names to adapt when none are given.

    GPT-2: ``c_attn``; LLaMA/Mistral/Qwen/Gemma: ``q_proj``, ``v_proj``; BERT/RoBERTa: ``query``,
    ``value``; Falcon: ``query_key_value``; Phi: ``q_proj``, ``dense``. Unknown architectures are
    matched by the names above, else every Linear/Conv1D leaf name except output heads.
    Raises ConfigError when no Linear/Conv1D layer is left to adapt.
    """
    modules = _adaptable_modules(model)
    leaves = {_leaf(n) for n in modules}
    model_type = getattr(getattr(model, "config", None), "model_type", None)
    known = _TARGETS_BY_MODEL_TYPE.get(model_type) if isinstance(model_type, str) else None
    if known is not None and set(known) <= leaves:
        return list(known)
    for names in _TARGETS_BY_NAMES:
        if set(names) <= leaves:
            return list(names)
    heads = _output_module_names(model, modules)
    fallback = sorted({_leaf(n) for n in modules if n not in heads})
    if not fallback:
        raise ConfigError(
            f"target_modules: {type(model).__name__} has no nn.Linear or Conv1D layer to adapt "
            "outside its output head; pass target_modules explicitly"
        )
    return fallback


def _infer_task_type(model: torch.nn.Module) -> str | None:
    name = type(model).__name__
    for suffix, task in _TASK_BY_CLASS_SUFFIX:
        if name.endswith(suffix):
            return task
    return None


def _check_hparams(r: object, alpha: object, dropout: object, *, prefix: str = "") -> None:
    check_int(r, f"{prefix}r", 1, error=ConfigError)
    check_number(alpha, f"{prefix}{'lora_alpha' if prefix else 'alpha'}", 0, low_open=True, error=ConfigError)
    check_number(dropout, f"{prefix}{'lora_dropout' if prefix else 'dropout'}", 0, 1, high_open=True,
                 error=ConfigError)


def _normalise_targets(target_modules: Sequence[str] | str) -> list[str] | str:
    if isinstance(target_modules, str):
        if not target_modules:
            raise ConfigError("target_modules must not be an empty string")
        return target_modules  # peft treats a str as a full-match regex (or "all-linear")
    if not isinstance(target_modules, Sequence) or not target_modules:
        raise ConfigError(f"target_modules must be a non-empty sequence of str or a str, got {target_modules!r}")
    bad = [t for t in target_modules if not isinstance(t, str) or not t]
    if bad:
        raise ConfigError(f"target_modules must contain non-empty strings, got {bad!r}")
    return list(target_modules)


def _matched_names(config: Any, model: torch.nn.Module) -> list[str]:
    from peft.tuners.tuners_utils import check_target_module_exists

    # Same matcher peft uses, so regexes, layers_to_transform and exclude_modules agree with it.
    return [n for n, _ in model.named_modules() if n and check_target_module_exists(config, n)]


def _settle_fan_in_fan_out(config: Any, matched: dict[str, torch.nn.Module]) -> None:
    """Set ``fan_in_fan_out`` to what the matched layers need, before peft sees the config.

    transformers' Conv1D (GPT-2) stores its weight as (in, out), the transpose of nn.Linear, so
    LoRA must transpose its delta. peft 0.21 corrects a wrong flag per layer on its own but warns
    for each; deciding up front keeps the config truthful and the log quiet.
    """
    conv1d = _conv1d_cls()
    n_conv = sum(1 for m in matched.values() if conv1d is not None and isinstance(m, conv1d))
    if not matched or 0 < n_conv < len(matched):
        return  # mixed kinds: peft sets it per layer
    want = n_conv == len(matched)
    if bool(config.fan_in_fan_out) != want:
        log = logger.info if want else logger.warning
        log("LoRA: setting fan_in_fan_out=%s (targets are %s)", want, "Conv1D" if want else "nn.Linear")
        config.fan_in_fan_out = want


def apply_lora(
    model: torch.nn.Module,
    lora_config: Any = None,
    *,
    r: int = 8,
    alpha: int = 16,
    dropout: float = 0.05,
    target_modules: Sequence[str] | str | None = None,
    task_type: str | None = None,
) -> torch.nn.Module:
    """Wrap ``model`` with LoRA adapters via ``peft.get_peft_model`` and return the PeftModel.

    Without ``lora_config`` a ``peft.LoraConfig`` is built from the keywords: ``target_modules=None``
    uses :func:`default_target_modules`, and ``task_type=None`` is inferred from the class name
    (``*ForCausalLM``/``*LMHeadModel`` -> ``CAUSAL_LM``, ``*ForSequenceClassification`` -> ``SEQ_CLS``,
    ...), staying None for other classes. A given ``lora_config`` (any ``peft.PeftConfig``) is used
    as is, on a copy because peft writes into the config; ``r``/``alpha``/``dropout`` are then
    ignored and ``target_modules``/``task_type`` must be left None. ``fan_in_fan_out`` is set to
    match the targeted layers (True for GPT-2's Conv1D).

    The base model's weights are wrapped in place and frozen. A model that already carries peft
    adapters raises ConfigError rather than being returned unchanged, because silently ignoring
    the requested config would train something other than what was asked for.

    Raises MissingDependencyError without peft, ConfigError for bad arguments or targets that
    match no layer.
    """
    if not isinstance(model, torch.nn.Module):
        raise ConfigError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if lora_config is None:
        _check_hparams(r, alpha, dropout)  # before importing peft: a typo fails fast
    peft = _peft()
    from peft.tuners.tuners_utils import BaseTunerLayer

    if isinstance(model, peft.PeftModel) or any(isinstance(m, BaseTunerLayer) for m in model.modules()):
        raise ConfigError(
            "model already has peft adapters; pass the base model, or train it as is without lora_config"
        )

    if lora_config is None:
        targets = (
            default_target_modules(model) if target_modules is None else _normalise_targets(target_modules)
        )
        if task_type is None:
            task_type = _infer_task_type(model)
        else:
            valid = {t.value for t in peft.TaskType}
            task_type = getattr(task_type, "value", task_type)
            if task_type not in valid:
                raise ConfigError(f"task_type must be None or one of {sorted(valid)}, got {task_type!r}")
        config = peft.LoraConfig(
            r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=targets, task_type=task_type
        )
    else:
        if not isinstance(lora_config, peft.PeftConfig):
            raise ConfigError(
                f"lora_config must be a peft.LoraConfig (or another peft.PeftConfig), got {type(lora_config).__name__}"
            )
        if target_modules is not None or task_type is not None:
            raise ConfigError("target_modules and task_type cannot be combined with lora_config; set them on lora_config")
        if isinstance(lora_config, peft.LoraConfig):
            _check_hparams(lora_config.r, lora_config.lora_alpha, lora_config.lora_dropout, prefix="lora_config.")
        config = copy.deepcopy(lora_config)

    targets = getattr(config, "target_modules", None)
    # "all-linear" and None (peft's per-architecture table) are resolved inside peft.
    if targets is not None and not (isinstance(targets, str) and targets.lower() == _ALL_LINEAR):
        modules = _adaptable_modules(model)
        matched = _matched_names(config, model)
        if not matched:
            where = "lora_config.target_modules" if lora_config is not None else "target_modules"
            shown = _shown(targets)
            raise ConfigError(
                f"{where} {shown!r} match no module of {type(model).__name__}; "
                f"Linear/Conv1D modules available: {_preview([_leaf(n) for n in modules]) or 'none'}"
            )
        # Other layer kinds (Embedding, Conv2d, ...) have their own fan_in_fan_out rules in peft.
        if isinstance(config, peft.LoraConfig) and all(n in modules for n in matched):
            _settle_fan_in_fan_out(config, {n: modules[n] for n in matched})

    with warnings.catch_warnings():
        # Mixed Linear/Conv1D targets: peft flips the flag per layer, which is correct; its warning
        # would only alarm.
        warnings.filterwarnings("ignore", message=r"fan_in_fan_out is set to", category=UserWarning)
        try:
            wrapped = peft.get_peft_model(model, config)
        except ValueError as e:  # peft reports config/model mismatches as ValueError
            raise ConfigError(f"peft rejected the LoRA config: {e}") from e

    counts = count_parameters(wrapped)
    logger.info(
        "LoRA applied: targets=%s r=%s task_type=%s trainable=%s/%s (%.2f%%)",
        _shown(getattr(config, "target_modules", None)), getattr(config, "r", None), config.task_type,
        f"{counts.trainable:,}", f"{counts.total:,}", 100.0 * counts.trainable_fraction,
    )
    return wrapped
