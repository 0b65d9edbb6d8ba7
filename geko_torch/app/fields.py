"""The app's form fields, described from their sources instead of listed by hand.

* every :class:`~geko_state.config.GEKOConfig` field, read from the dataclass (name, type, default);
* the trainer settings ``geko train`` has no option for that the app offers (the seeds' "advanced"
  panel), read from :class:`~geko_torch.training_args.GEKOTrainingArgs`.

Pure: no gradio. ``ui.py`` turns each :class:`FieldSpec` into a control, and the values coming back
from the page are parsed here into a validated config (ConfigError naming the field otherwise).
"""
from __future__ import annotations

import dataclasses
import enum
import math
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal

from geko_state.config import PRESETS, GEKOConfig
from geko_state.errors import ConfigError

from ..training_args import GEKOTrainingArgs

__all__ = [
    "APP_TRAINING_FIELDS",
    "FieldKind",
    "FieldSpec",
    "config_fields",
    "config_from_values",
    "config_values",
    "format_weights",
    "parse_weights",
    "training_fields",
    "training_from_values",
]

FieldKind = Literal["bool", "int", "float", "weights", "choice", "optional_int", "optional_float", "text"]

# GEKOTrainingArgs fields the app sets although ``geko train`` has no option for them. logging_steps
# matters most: the live loss curve is drawn from the step lines it writes (every 100 steps by
# default, too sparse to watch a small run).
APP_TRAINING_FIELDS: tuple[str, ...] = (
    "logging_steps", "eval_steps", "weight_decay", "max_grad_norm", "save_total_limit", "use_8bit_optimizer",
)
# What the app starts with where it differs from GEKOTrainingArgs (a step line every 10 steps).
_APP_TRAINING_DEFAULTS: dict[str, Any] = {"logging_steps": 10}

_HELP: dict[str, str] = {
    # GEKOConfig (DESIGN section 2)
    "freeze_confidence": "FREEZE needs correct, confidence above this, quality and Q high",
    "freeze_quality": "FREEZE needs loss-window quality (1 - std of the last 5 losses) above this",
    "focus_confidence": "wrong samples at or below this confidence are FOCUS, above it HARD",
    "bucket_weights": "draw weights of HARD, FOCUS, LIGHT without curriculum (FREEZE is 0)",
    "use_curriculum": "Mountain Curriculum: bucket weights and LR multiplier follow training progress",
    "q_value_lr": "Q-value learning rate a in q = (1 - a) q + a (1 - loss / scale)",
    "min_q_for_freeze": "FREEZE needs Q at least this",
    "q_value_loss_scale": "loss that maps to Q target 0",
    "repartition_every": "repartition into buckets every N epochs",
    "log_bucket_stats": "log each epoch's bucket line (logging, INFO)",
    "max_times_seen": "samples seen this often are no longer drawn",
    "prune_frozen_after": "prune samples frozen N epochs in a row (0: never)",
    "nan_policy": "non-finite loss: refuse the batch (raise) or skip those results",
    "mastered_fraction": "FREEZE share at which the run counts as mastered and stops early",
    "freeze_margin": "freeze a correct sample once its mean logit margin is above this (empty: confidence, "
                     "quality and Q decide)",
    # GEKOTrainingArgs
    "logging_steps": "write a loss line to trainer_log.jsonl every N optimizer steps (the live loss curve)",
    "eval_steps": "evaluate every N optimizer steps (and after every epoch) when an eval file is given",
    "weight_decay": "AdamW weight decay (not on biases and norms)",
    "max_grad_norm": "clip the gradient norm to this (0: no clipping)",
    "save_total_limit": "keep only the newest N checkpoints (empty: keep all)",
    "use_8bit_optimizer": "8-bit AdamW (bitsandbytes, CUDA GPUs only)",
}


@dataclass(frozen=True)
class FieldSpec:
    """One form field: the dataclass field ``name`` and how to edit it."""

    name: str
    kind: FieldKind
    default: Any
    choices: tuple[str, ...] = ()
    help: str = ""

    @property
    def label(self) -> str:
        return self.name.replace("_", " ")


def _spec(cls: type, f: dataclasses.Field, default: Any) -> FieldSpec:
    hint = typing.get_type_hints(cls)[f.name]
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is bool:
        kind: FieldKind = "bool"
    elif hint is int:
        kind = "int"
    elif hint is float:
        kind = "float"
    elif origin is tuple and len(args) == 3 and all(a is float for a in args):
        kind = "weights"
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        return FieldSpec(f.name, "choice", default.value, tuple(m.value for m in hint), _HELP.get(f.name, ""))
    elif hint is str:
        kind = "text"
    elif origin in (typing.Union, types.UnionType) and set(args) == {int, type(None)}:
        kind = "optional_int"
    elif origin in (typing.Union, types.UnionType) and set(args) == {float, type(None)}:
        kind = "optional_float"
    else:  # a new field of a type the form does not know: say so instead of silently leaving it out
        raise ConfigError(f"{cls.__name__}.{f.name}: the app has no control for type {hint!r}")
    return FieldSpec(f.name, kind, default, (), _HELP.get(f.name, ""))


def config_fields() -> list[FieldSpec]:
    """Every GEKOConfig field, in declaration order, with the default preset's values."""
    base = PRESETS["default"]
    return [_spec(GEKOConfig, f, getattr(base, f.name)) for f in dataclasses.fields(GEKOConfig)]


def training_fields() -> list[FieldSpec]:
    """The :data:`APP_TRAINING_FIELDS` of GEKOTrainingArgs, with the app's defaults."""
    by_name = {f.name: f for f in dataclasses.fields(GEKOTrainingArgs)}
    return [_spec(GEKOTrainingArgs, by_name[n], _APP_TRAINING_DEFAULTS.get(n, by_name[n].default))
            for n in APP_TRAINING_FIELDS]


def format_weights(weights: tuple[float, float, float]) -> str:
    """``(3.0, 2.0, 1.0)`` -> ``"3, 2, 1"``."""
    return ", ".join(f"{w:g}" for w in weights)


def parse_weights(text: Any) -> tuple[float, float, float]:
    """``"3, 2, 1"`` -> ``(3.0, 2.0, 1.0)``; ConfigError naming the field otherwise."""
    parts = [p.strip() for p in str(text or "").replace(";", ",").split(",")]
    try:
        values = tuple(float(p) for p in parts)
    except ValueError:
        values = ()
    if len(values) != 3 or not all(math.isfinite(v) and v >= 0 for v in values):
        raise ConfigError(f"bucket_weights: expected three numbers >= 0 for HARD, FOCUS, LIGHT, like '3, 2, 1'; "
                          f"got {text!r}")
    return values  # type: ignore[return-value]


def _field_value(spec: FieldSpec, value: Any, owner: str) -> Any:
    """A value from the page (numbers arrive as float or None, text as str) as the field's type."""
    if spec.kind == "weights":
        return parse_weights(value)
    if spec.kind == "bool":
        return bool(value)
    if spec.kind in ("choice", "text"):
        return value
    if value is None or (isinstance(value, str) and not value.strip()):
        if spec.kind in ("optional_int", "optional_float"):
            return None
        raise ConfigError(f"{owner}.{spec.name}: a value is needed")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{owner}.{spec.name}: expected a number, got {value!r}") from None
    if spec.kind in ("int", "optional_int"):
        if not number.is_integer():
            raise ConfigError(f"{owner}.{spec.name}: expected a whole number, got {value!r}")
        return int(number)
    return number


def config_values(config: GEKOConfig) -> dict[str, Any]:
    """Field name -> the value a control shows (weights as text, enums as their value)."""
    out = {}
    for spec in config_fields():
        v = getattr(config, spec.name)
        out[spec.name] = (format_weights(v) if spec.kind == "weights" else v.value if isinstance(v, enum.Enum) else v)
    return out


def config_from_values(values: dict[str, Any]) -> GEKOConfig:
    """A validated GEKOConfig from the controls' values (every field must be there)."""
    specs = config_fields()
    missing = [s.name for s in specs if s.name not in values]
    if missing:
        raise ConfigError(f"GEKOConfig: no value for {missing}")
    return GEKOConfig(**{s.name: _field_value(s, values[s.name], "GEKOConfig") for s in specs})


def training_from_values(values: dict[str, Any]) -> dict[str, Any]:
    """The app's GEKOTrainingArgs settings from the controls' values, validated by GEKOTrainingArgs."""
    out = {s.name: _field_value(s, values[s.name], "GEKOTrainingArgs") for s in training_fields()}
    GEKOTrainingArgs().replace(**out)  # ConfigError naming the field when out of range
    return out
