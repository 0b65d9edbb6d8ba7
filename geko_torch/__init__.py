"""geko_torch: the PyTorch adapter of the GEKO state engine (signals, tracker, sampler, trainers)."""
from .checkpoint import load_checkpoint, restore_state, save_checkpoint
from .data import SAMPLE_ID, GEKODataset, PadCollator
from .lora import (
    ParamCounts,
    apply_lora,
    count_parameters,
    default_target_modules,
    is_peft_available,
)
from .sampler import GEKOSampler
from .signals import (
    SampleSignals,
    TaskKind,
    causal_lm_signals,
    classification_signals,
    compute_signals,
)
from .tracker import GEKOTracker
from .trainer import GEKOTrainer, model_logits, set_seed
from .training_args import GEKOTrainingArgs

__all__ = [
    "SAMPLE_ID",
    "GEKODataset",
    "GEKOSampler",
    "GEKOTracker",
    "GEKOTrainer",
    "GEKOTrainingArgs",
    "PadCollator",
    "ParamCounts",
    "SampleSignals",
    "TaskKind",
    "apply_lora",
    "causal_lm_signals",
    "classification_signals",
    "compute_signals",
    "count_parameters",
    "default_target_modules",
    "is_peft_available",
    "load_checkpoint",
    "model_logits",
    "restore_state",
    "save_checkpoint",
    "set_seed",
]
