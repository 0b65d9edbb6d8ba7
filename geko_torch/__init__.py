"""geko_torch: the PyTorch adapter of the GEKO state engine (signals, tracker, sampler, trainers)."""
from .checkpoint import load_checkpoint, restore_state, save_checkpoint
from .data import SAMPLE_ID, GEKODataset, PadCollator
from .distributed import (
    ObservationExchange,
    barrier,
    dist_rank_world,
    is_main_process,
    replica_path,
)
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


def __getattr__(name: str):
    # The transformers.Trainer integration imports transformers' Trainer (seconds): only on use.
    if name in ("GEKOHFTrainer", "GEKOTrainerMixin"):
        from . import hf

        return getattr(hf, name)
    raise AttributeError(f"module 'geko_torch' has no attribute {name!r}")
