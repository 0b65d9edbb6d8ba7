"""geko_torch: the PyTorch adapter of the GEKO state engine (signals, tracker, sampler, trainers)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from geko_state.lazy import lazy_exports

if TYPE_CHECKING:
    from .checkpoint import load_checkpoint, restore_state, save_checkpoint
    from .data import SAMPLE_ID, GEKODataset, PadCollator
    from .distributed import (
        ObservationExchange,
        barrier,
        dist_rank_world,
        is_main_process,
        replica_path,
    )
    from .hf import GEKOHFTrainer, GEKOTrainerMixin
    from .lora import (
        ParamCounts,
        apply_lora,
        count_parameters,
        default_target_modules,
        is_peft_available,
    )
    from .sampler import GEKOSampler
    from .session import GEKOSession, GEKOSettings
    from .signals import (
        SampleSignals,
        TaskKind,
        causal_lm_signals,
        classification_signals,
        compute_signals,
        model_logits,
    )
    from .tracker import GEKOTracker
    from .trainer import GEKOTrainer, set_seed
    from .training_args import GEKOTrainingArgs

# Everything is imported on first use: the `geko` console script lives in this package
# (geko_torch.cli), and `geko --help` and the engine's commands must not import torch (seconds, and
# absent from the plain install); the transformers.Trainer integration costs seconds more.
_LAZY: dict[str, str] = {
    **dict.fromkeys(("load_checkpoint", "restore_state", "save_checkpoint"), "checkpoint"),
    **dict.fromkeys(("SAMPLE_ID", "GEKODataset", "PadCollator"), "data"),
    **dict.fromkeys(("ObservationExchange", "barrier", "dist_rank_world", "is_main_process", "replica_path"),
                    "distributed"),
    **dict.fromkeys(("GEKOHFTrainer", "GEKOTrainerMixin"), "hf"),
    **dict.fromkeys(("ParamCounts", "apply_lora", "count_parameters", "default_target_modules",
                     "is_peft_available"), "lora"),
    "GEKOSampler": "sampler",
    **dict.fromkeys(("GEKOSession", "GEKOSettings"), "session"),
    **dict.fromkeys(("SampleSignals", "TaskKind", "causal_lm_signals", "classification_signals",
                     "compute_signals", "model_logits"), "signals"),
    "GEKOTracker": "tracker",
    **dict.fromkeys(("GEKOTrainer", "set_seed"), "trainer"),
    "GEKOTrainingArgs": "training_args",
}


__getattr__, __dir__ = lazy_exports(__name__, _LAZY, globals())


__all__ = [
    "SAMPLE_ID",
    "GEKODataset",
    "GEKOHFTrainer",
    "GEKOSampler",
    "GEKOSession",
    "GEKOSettings",
    "GEKOTracker",
    "GEKOTrainer",
    "GEKOTrainerMixin",
    "GEKOTrainingArgs",
    "ObservationExchange",
    "PadCollator",
    "ParamCounts",
    "SampleSignals",
    "TaskKind",
    "apply_lora",
    "barrier",
    "causal_lm_signals",
    "classification_signals",
    "compute_signals",
    "count_parameters",
    "default_target_modules",
    "dist_rank_world",
    "is_main_process",
    "is_peft_available",
    "load_checkpoint",
    "model_logits",
    "replica_path",
    "restore_state",
    "save_checkpoint",
    "set_seed",
]
