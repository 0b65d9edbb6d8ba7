"""GEKOTrainer.request_stop(): a stop between optimizer steps leaves a checkpoint that resumes exactly."""
import threading

import numpy as np
import torch

from geko_state import GEKOConfig
from geko_state.schema import COLUMN_NAMES
from geko_torch.trainer import GEKOTrainer
from geko_torch.training_args import GEKOTrainingArgs

from .models import TinyClassifier, cls_items


def _args(tmp_path, name: str) -> GEKOTrainingArgs:
    return GEKOTrainingArgs(output_dir=str(tmp_path / name), num_epochs=3, batch_size=8, learning_rate=5e-3,
                            warmup_steps=2, logging_steps=1, save_steps=10_000, eval_steps=10_000,
                            dataloader_num_workers=0, report=False, save_at_end=False, plots=False)


class StopAfter:
    """Requests a stop from another thread once the trainer has taken ``steps`` optimizer steps."""

    def __init__(self, trainer: GEKOTrainer, steps: int) -> None:
        self.trainer, self.steps = trainer, steps
        original = trainer._optimizer_step

        def step() -> None:
            original()
            if trainer.global_step == steps:
                t = threading.Thread(target=trainer.request_stop)
                t.start()
                t.join()

        trainer._optimizer_step = step


def test_request_stop_checkpoints_at_the_next_step_and_resumes_exactly(tmp_path):
    items = cls_items(40)
    cfg = GEKOConfig(log_bucket_stats=False)
    full = GEKOTrainer(TinyClassifier(), items, config=cfg, args=_args(tmp_path, "full"))
    full.train()

    first = GEKOTrainer(TinyClassifier(), items, config=cfg, args=_args(tmp_path, "split"))
    StopAfter(first, 7)  # inside epoch 2 (5 steps per full epoch)
    out = first.train()
    assert out["stopped_by_request"] and out["global_step"] == 7
    assert out["checkpoint"].endswith("checkpoint-7") and (tmp_path / "split" / "checkpoint-7" / "trainer_state.json").is_file()
    first.close()

    resumed = GEKOTrainer(TinyClassifier(seed=5), items, config=cfg, args=_args(tmp_path, "split"))
    resumed.load_checkpoint(out["checkpoint"])
    metrics = resumed.train()
    assert "stopped_by_request" not in metrics and resumed.global_step == full.global_step
    for k, v in full.model.state_dict().items():
        assert torch.equal(v, resumed.model.state_dict()[k]), k
    for c in COLUMN_NAMES:
        assert np.array_equal(full.store.column(c), resumed.store.column(c)), c


def test_a_fresh_run_replaces_the_history_of_an_earlier_run_of_another_size(tmp_path):
    cfg = GEKOConfig(log_bucket_stats=False)
    GEKOTrainer(TinyClassifier(), cls_items(40), config=cfg, args=_args(tmp_path, "run")).train()
    again = GEKOTrainer(TinyClassifier(), cls_items(24), config=cfg, args=_args(tmp_path, "run"))
    again.train()
    from geko_state import read_summary

    summary = read_summary(tmp_path / "run")
    assert summary["epoch"].to_list() == [1, 2, 3] and set(summary["n_samples"].to_list()) == {24}
