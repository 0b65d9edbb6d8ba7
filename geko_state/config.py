"""GEKOConfig: every setting of the seeds' config table, validated on construction."""
from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass
from typing import Any

from .errors import ConfigError
from .validate import check_int, check_number, is_number

__all__ = [
    "GEKO_AGGRESSIVE",
    "GEKO_BALANCED",
    "GEKO_CONSERVATIVE",
    "GEKO_DEFAULT",
    "GEKO_SEEDS",
    "PRESETS",
    "GEKOConfig",
    "NanPolicy",
    "preset",
]


class NanPolicy(str, enum.Enum):
    """What ``observe`` does with a non-finite loss or confidence."""

    RAISE = "raise"  # refuse the whole batch, change nothing
    SKIP = "skip"  # drop those observations, apply the rest, count the skipped ones


def known_fields(cls: type, data: Any) -> dict[str, Any]:
    """A copy of ``data`` for ``cls.from_dict``: ConfigError unless it is a dict of ``cls``'s fields."""
    if not isinstance(data, dict):
        raise ConfigError(f"{cls.__name__}.from_dict expects a dict, got {type(data).__name__}")
    reject_unknown(cls, data)
    return dict(data)


def reject_unknown(cls: type, keys: Any) -> None:
    """ConfigError naming the keys that are not fields of the dataclass ``cls``, and its fields."""
    names = [f.name for f in dataclasses.fields(cls)]
    unknown = set(keys) - set(names)
    if unknown:
        raise ConfigError(f"{cls.__name__} has no field(s) {sorted(map(str, unknown))}; expected names from {names}")


@dataclass(frozen=True)
class GEKOConfig:
    """Thresholds and rates of the GEKO algorithm (DESIGN section 2).

    Defaults are the seeds' exact values. Use :meth:`replace` to derive a modified copy.
    """

    freeze_confidence: float = 0.85
    freeze_quality: float = 0.80
    focus_confidence: float = 0.60
    # Sampling weights of (HARD, FOCUS, LIGHT) when the curriculum is off; FREEZE always weighs 0.
    bucket_weights: tuple[float, float, float] = (3.0, 1.0, 0.0)
    use_curriculum: bool = True
    q_value_lr: float = 0.1
    min_q_for_freeze: float = 0.8
    q_value_loss_scale: float = 10.0
    repartition_every: int = 1
    log_bucket_stats: bool = True
    max_times_seen: int = 50
    prune_frozen_after: int = 0
    # Not in the seeds: how observe treats non-finite values, and the FREEZE share that counts
    # as "mastered" (a trainer stops early there).
    nan_policy: NanPolicy = NanPolicy.RAISE
    mastered_fraction: float = 0.95
    # Not in the seeds: None keeps DESIGN's freeze rule (confidence, loss-window quality, Q). A
    # number m freezes a correct sample once its mean logit margin (the aum column) is above m, so
    # mastery needs one observation instead of the ~3 that Q and the loss window take.
    freeze_margin: float | None = None

    def __post_init__(self) -> None:
        set_ = lambda k, v: object.__setattr__(self, k, v)
        for name in ("freeze_confidence", "freeze_quality", "focus_confidence", "min_q_for_freeze"):
            set_(name, check_number(getattr(self, name), f"GEKOConfig.{name}", 0, 1, error=ConfigError))
        set_("mastered_fraction", check_number(self.mastered_fraction, "GEKOConfig.mastered_fraction", 0, 1,
                                               low_open=True, error=ConfigError))

        bw = self.bucket_weights
        if (
            not isinstance(bw, (tuple, list))
            or len(bw) != 3
            or any(not is_number(w) for w in bw)
            or any(not math.isfinite(w) or w < 0 for w in bw)
        ):
            raise ConfigError(
                "GEKOConfig.bucket_weights must be 3 finite non-negative numbers "
                f"(HARD, FOCUS, LIGHT), got {bw!r}"
            )
        set_("bucket_weights", tuple(float(w) for w in bw))

        set_("q_value_lr", check_number(self.q_value_lr, "GEKOConfig.q_value_lr", 0, 1, low_open=True,
                                        error=ConfigError))
        set_("q_value_loss_scale", check_number(self.q_value_loss_scale, "GEKOConfig.q_value_loss_scale", 0,
                                                low_open=True, error=ConfigError, what="a finite number"))

        for name in ("use_curriculum", "log_bucket_stats"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"GEKOConfig.{name} must be True or False, got {getattr(self, name)!r}")

        if self.freeze_margin is not None:
            set_("freeze_margin", check_number(self.freeze_margin, "GEKOConfig.freeze_margin", error=ConfigError,
                                               what="None or a finite number"))
        set_("repartition_every", check_int(self.repartition_every, "GEKOConfig.repartition_every", 1, error=ConfigError))
        set_("max_times_seen", check_int(self.max_times_seen, "GEKOConfig.max_times_seen", 1, error=ConfigError))
        set_("prune_frozen_after", check_int(self.prune_frozen_after, "GEKOConfig.prune_frozen_after", 0, error=ConfigError))

        try:
            set_("nan_policy", NanPolicy(self.nan_policy))
        except ValueError:
            raise ConfigError(
                f"GEKOConfig.nan_policy must be one of {[p.value for p in NanPolicy]}, "
                f"got {self.nan_policy!r}"
            ) from None

    def replace(self, **changes: Any) -> GEKOConfig:
        """A validated copy with some fields changed."""
        reject_unknown(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists, enums their values)."""
        d = dataclasses.asdict(self)
        d["bucket_weights"] = list(self.bucket_weights)
        d["nan_policy"] = self.nan_policy.value
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GEKOConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error, missing keys take defaults."""
        data = known_fields(cls, data)
        if "bucket_weights" in data and isinstance(data["bucket_weights"], list):
            data["bucket_weights"] = tuple(data["bucket_weights"])
        return cls(**data)


# The seeds' exact defaults.
GEKO_SEEDS = GEKOConfig()
GEKO_AGGRESSIVE = GEKOConfig(freeze_confidence=0.90, freeze_quality=0.85, bucket_weights=(5, 2, 0))
GEKO_BALANCED = GEKOConfig(freeze_confidence=0.85, freeze_quality=0.80, bucket_weights=(3, 2, 1))
GEKO_CONSERVATIVE = GEKOConfig(freeze_confidence=0.80, freeze_quality=0.75, bucket_weights=(2, 2, 1))

# What GEKOTrainer, GEKOHFTrainer, geko train and geko demo use when no config is given, with plans
# drawn without replacement: chosen by benchmarks/bench_training.py (docs/benchmarks.md, "Choosing the
# defaults"). The curriculum is off because its PEAK phase (LIGHT weight 0) trains only on wrong
# samples, which collapsed the classifiers' eval accuracy mid-run; Q at 0.3 lets a sample freeze
# after ~3 good observations instead of ~9.
GEKO_DEFAULT = GEKO_BALANCED.replace(use_curriculum=False, q_value_lr=0.3)

PRESETS: dict[str, GEKOConfig] = {
    "default": GEKO_DEFAULT,
    "seeds": GEKO_SEEDS,
    "aggressive": GEKO_AGGRESSIVE,
    "balanced": GEKO_BALANCED,
    "conservative": GEKO_CONSERVATIVE,
}


def preset(name: str) -> GEKOConfig:
    """The preset config called ``name`` (a key of :data:`PRESETS`); ConfigError listing them otherwise."""
    if not isinstance(name, str) or name not in PRESETS:
        raise ConfigError(f"preset must be one of {sorted(PRESETS)}, got {name!r}")
    return PRESETS[name]
