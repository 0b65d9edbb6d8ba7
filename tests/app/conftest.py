"""Run directories written by a real GEKOTrainer (tiny model, a second or two) for the app's readers."""
from __future__ import annotations

from pathlib import Path

import pytest

from geko_state import GEKOConfig


def _train(out: Path, *, max_steps: int | None = None, epochs: int = 3) -> Path:
    from geko_torch.trainer import GEKOTrainer
    from geko_torch.training_args import GEKOTrainingArgs

    from ..geko_torch.models import TinyClassifier, cls_items

    args = GEKOTrainingArgs(output_dir=str(out), num_epochs=epochs, batch_size=8, learning_rate=5e-3,
                            warmup_steps=1, logging_steps=1, eval_steps=10_000, save_steps=10_000,
                            dataloader_num_workers=0, report=False, plots=False, disable_progress_bar=True,
                            max_steps=max_steps)
    trainer = GEKOTrainer(model=TinyClassifier(), train_dataset=cls_items(48), eval_dataset=cls_items(16, seed=2),
                          config=GEKOConfig(log_bucket_stats=False, use_curriculum=False), args=args)
    try:
        trainer.train()
    finally:
        trainer.close()
    return out


@pytest.fixture(scope="session")
def finished_run(tmp_path_factory) -> Path:
    """3 epochs of 48 samples, batch 8, an eval set: complete, final checkpoint at step 18."""
    return _train(tmp_path_factory.mktemp("app_runs") / "finished")


@pytest.fixture(scope="session")
def stopped_run(tmp_path_factory) -> Path:
    """Stopped by max_steps 8 inside epoch 2 (checkpoint-8, not finished)."""
    return _train(tmp_path_factory.mktemp("app_runs") / "stopped", max_steps=8)
