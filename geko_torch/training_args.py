"""``GEKOTrainingArgs``: every training setting of the seeds' API, validated on construction."""
from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any, ClassVar

from geko_state import GEKO_DEFAULT, GEKOConfig, HistoryConfig
from geko_state.config import reject_unknown
from geko_state.errors import ConfigError
from geko_state.planning import Budget, BudgetKind
from geko_state.selection import SelectionConfig
from geko_state.progress import PlateauStop
from geko_state.validate import check_int, check_number

from .sampler import DEFAULT_REPLACEMENT
from .schedules import DEFAULT_LR_SCHEDULE, LRScheduleKind, lr_schedule
from .session import GEKOSettings
from .signals import DEFAULT_TOKEN_ACCURACY

__all__ = ["GEKOTrainingArgs"]


@dataclass(frozen=True)
class GEKOTrainingArgs:
    """Training settings. The first two blocks are the seeds' ``GEKOTrainingArgs`` with their
    defaults; the last block is GEKO's additions."""

    # core (seeds)
    output_dir: str = "./geko_output"
    num_epochs: int = 3
    batch_size: int = 32
    learning_rate: float = 5e-5
    weight_decay: float = 0.01
    # linear LR warmup: warmup_steps when given, else warmup_ratio of the run's planned optimizer
    # steps (a fixed 100 steps was more than a whole small run: its LR never reached its target)
    warmup_steps: int | None = None
    warmup_ratio: float = 0.05
    # LR decay over training progress (the share of the planned epochs' draws done, so shrinking
    # epochs still end at the schedule's end): "linear" (to 0), "cosine" (to 0) or "constant".
    # Linear by default: a constant LR made uniform's final quality vary a lot between seeds.
    lr_scheduler_type: LRScheduleKind | str = DEFAULT_LR_SCHEDULE
    logging_steps: int = 100
    save_steps: int = 1000
    eval_steps: int = 500
    max_grad_norm: float = 1.0
    gradient_accumulation_steps: int = 1
    seed: int = 42
    save_at_end: bool = True
    # efficiency (seeds v0.3.0)
    bf16: bool = False
    fp16: bool = False
    gradient_checkpointing: bool = False
    compile_model: bool = False
    use_8bit_optimizer: bool = False
    dataloader_num_workers: int = -1
    dataloader_persistent_workers: bool = True
    dataloader_prefetch_factor: int = 2
    # GEKO additions
    budget: Budget = BudgetKind.TRAINABLE  # draws per epoch: "trainable", "full", a count or a fraction of N
    # plans drawn with replacement (HARD samples can repeat within an epoch; the seeds' behaviour), or
    # without (every drawn sample at most once per epoch: the measured default, see docs/benchmarks.md)
    replacement: bool = DEFAULT_REPLACEMENT
    # sample-selection policy: "geko", or a baseline ("uniform", "infobatch", "random_subset", "rs2");
    # a name becomes SelectionConfig(policy=name); GEKO's options (keep_fraction, recheck_fraction,
    # anneal_fraction) are set through a SelectionConfig
    selection: SelectionConfig | str = "geko"
    max_steps: int | None = None  # stop (with a checkpoint) after this many optimizer steps
    eval_batch_size: int | None = None  # default: batch_size
    device: str | None = None  # default: "cuda" when available, else "cpu"
    task: str = "auto"  # "auto", "causal_lm" or "classification"
    correct_loss_below: float = 0.5  # causal LM with token_accuracy=None: correct when its loss is below this
    # causal LM: correct when this share of its response tokens is right (None: mean loss < correct_loss_below)
    token_accuracy: float | None = DEFAULT_TOKEN_ACCURACY
    history: HistoryConfig = field(default_factory=HistoryConfig)
    save_total_limit: int | None = None  # keep only the newest N step checkpoints
    report: bool = True  # print the header, per-epoch lines and summary blocks
    disable_progress_bar: bool = False  # the per-epoch bar (shown even when report=False)
    progress_label: str = "Epoch"  # the bar's prefix, e.g. the run's name when comparing runs
    plots: bool = True  # render the run's PNG plots when training ends (needs matplotlib)
    sync_every: int = 1  # torch.distributed: exchange the ranks' observations every N batches
    stop_when_mastered: bool = True  # stop after an epoch whose state is mastered (GEKO selection only)
    # stop after an epoch where few learnable samples still improve (geko_state.progress; any policy)
    stop_on_plateau: PlateauStop | None = None

    # The fields GEKOSettings shares (validated there, once for both trainers).
    _GEKO_FIELDS: ClassVar[tuple[str, ...]] = ("budget", "replacement", "selection", "task", "correct_loss_below", "token_accuracy",
                    "history", "sync_every", "stop_when_mastered", "stop_on_plateau")

    def __post_init__(self) -> None:
        if not isinstance(self.output_dir, (str, os.PathLike)) or not str(self.output_dir):
            raise ConfigError(f"output_dir must be a non-empty path, got {self.output_dir!r}")
        for name, low in (("num_epochs", 1), ("batch_size", 1), ("logging_steps", 1),
                          ("save_steps", 1), ("eval_steps", 1), ("gradient_accumulation_steps", 1),
                          ("seed", 0), ("dataloader_prefetch_factor", 1)):
            object.__setattr__(self, name, check_int(getattr(self, name), name, low, error=ConfigError))
        object.__setattr__(self, "dataloader_num_workers",
                           check_int(self.dataloader_num_workers, "dataloader_num_workers", -1, error=ConfigError))
        if self.warmup_steps is not None:
            object.__setattr__(self, "warmup_steps", check_int(self.warmup_steps, "warmup_steps", 0, error=ConfigError))
        check_number(self.warmup_ratio, "warmup_ratio", 0, 1, high_open=True, error=ConfigError, what="a number")
        object.__setattr__(self, "lr_scheduler_type", lr_schedule(self.lr_scheduler_type))
        for name in ("max_steps", "eval_batch_size", "save_total_limit"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, check_int(getattr(self, name), name, 1, error=ConfigError))
        check_number(self.learning_rate, "learning_rate", 0, low_open=True, error=ConfigError, what="a finite number")
        check_number(self.weight_decay, "weight_decay", 0, error=ConfigError, what="a finite number")
        check_number(self.max_grad_norm, "max_grad_norm", 0, error=ConfigError, what="a finite number")
        for name in ("save_at_end", "bf16", "fp16", "gradient_checkpointing", "compile_model",
                     "use_8bit_optimizer", "dataloader_persistent_workers", "report",
                     "disable_progress_bar", "plots"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be True or False, got {getattr(self, name)!r}")
        if not isinstance(self.progress_label, str):
            raise ConfigError(f"progress_label must be a string, got {self.progress_label!r}")
        if self.bf16 and self.fp16:
            raise ConfigError("bf16 and fp16 are exclusive; choose one precision")
        if self.device is not None and not isinstance(self.device, str):
            raise ConfigError(f"device must be None or a torch device string like 'cuda:0', got {self.device!r}")
        settings = self.geko_settings()  # validates the GEKO fields (ConfigError naming the field)
        object.__setattr__(self, "selection", settings.selection)
        object.__setattr__(self, "task", settings.task)

    def geko_settings(self, config: GEKOConfig | None = None, *, compute_confidence: Any = None,
                      compute_correctness: Any = None) -> GEKOSettings:
        """The :class:`~geko_torch.session.GEKOSettings` of this run: its GEKO fields, the run
        directory ``output_dir``, and the trainer's ``config`` and custom signal callables."""
        return GEKOSettings(
            config=GEKO_DEFAULT if config is None else config, run_dir=self.output_dir,
            compute_confidence=compute_confidence, compute_correctness=compute_correctness,
            **{name: getattr(self, name) for name in self._GEKO_FIELDS},
        )

    def replace(self, **changes: Any) -> GEKOTrainingArgs:
        """A validated copy with some fields changed."""
        reject_unknown(type(self), changes)
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (written into every checkpoint)."""
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "history"}
        out["output_dir"] = str(self.output_dir)
        out["budget"] = self.budget.value if isinstance(self.budget, BudgetKind) else self.budget
        out["history"] = dataclasses.asdict(self.history)
        out["stop_on_plateau"] = None if self.stop_on_plateau is None else dataclasses.asdict(self.stop_on_plateau)
        out["selection"] = self.selection.to_dict()
        out["lr_scheduler_type"] = self.lr_scheduler_type.value
        return out
