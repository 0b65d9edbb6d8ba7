"""Trainer callbacks the HF tests share."""
from __future__ import annotations

from transformers import TrainerCallback


class StopAt(TrainerCallback):
    """Save a checkpoint and stop training after optimizer step ``k``."""

    def __init__(self, k: int) -> None:
        self.k = k

    def on_step_end(self, args, state, control, **kwargs):
        if state.global_step == self.k:
            control.should_save = True
            control.should_training_stop = True
