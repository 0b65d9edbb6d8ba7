"""A small deterministic GEKOHFTrainer run on the CPU, killed with SIGKILL at a chosen moment and resumed.

    python -m tests.geko_torch.hf_crash_worker OUT [--kill POINT:N]

Without ``--kill``: one uninterrupted run in ``OUT/run``. With it: a child forked from this process
(torch and transformers imported once) trains until it is SIGKILLed the N-th time it reaches
``POINT`` (see :data:`POINTS`; installed by wrapping library functions in the child only: the
product code has no test hooks); this process checks that it died by SIGKILL and then resumes with
``train(resume_from_checkpoint=True)``, as a user would after a crash. Either way the final weights
go to ``OUT/final.safetensors`` and ``OUT/result.json`` says what happened. Used by
``test_hf_crash.py``.
"""
from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from pathlib import Path

POINTS = {
    "step": "between optimizer steps (HF's on_step_end), nothing being written",
    "geko_part": "saving a checkpoint: geko_state.arrow written into checkpoint-<step>/, the rest of the GEKO part not",
    "hf_files": "saving a checkpoint: the GEKO part complete, HF's rng state written, its trainer_state.json not",
    "epoch_end": "ending an epoch: the store repartitioned, the epoch's history not yet recorded",
}
N_TRAIN, EPOCHS, BATCH, SAVE_STEPS = 40, 3, 8, 2


def _trainer(out: Path):
    import torch
    from transformers import TrainingArguments

    from geko_state import GEKOConfig
    from geko_torch import GEKOSettings
    from geko_torch.data import PadCollator
    from geko_torch.hf import GEKOHFTrainer
    from tests.geko_torch.models import TinyClassifier, cls_items

    torch.set_num_threads(1)
    config = GEKOConfig(log_bucket_stats=False, use_curriculum=False, bucket_weights=(3, 2, 1), q_value_lr=0.5,
                        freeze_confidence=0.6, freeze_quality=0.5, min_q_for_freeze=0.5)
    args = TrainingArguments(
        output_dir=str(out / "run"), report_to="none", use_cpu=True, disable_tqdm=True, dataloader_num_workers=0,
        per_device_train_batch_size=BATCH, num_train_epochs=EPOCHS, learning_rate=5e-2, weight_decay=0.0,
        lr_scheduler_type="constant", optim="adamw_torch", save_strategy="steps", save_steps=SAVE_STEPS,
        logging_strategy="no", seed=0,
    )
    return GEKOHFTrainer(model=TinyClassifier(seed=0, dropout=0.1), args=args, train_dataset=cls_items(N_TRAIN, seed=3),
                         data_collator=PadCollator(), geko_args=GEKOSettings(config=config))


def _install(point: str, n: int) -> None:
    """SIGKILL this process the ``n``-th time it reaches ``point``."""
    import transformers

    from geko_state import history, store
    from geko_torch import hf

    seen = {"count": 0}

    def hit() -> None:
        seen["count"] += 1
        if seen["count"] == n:
            os.kill(os.getpid(), signal.SIGKILL)

    if point == "step":
        on_step_end = hf.GEKOTrainerMixin._geko_on_step_end

        def step_end(self, state):
            hit()
            return on_step_end(self, state)

        hf.GEKOTrainerMixin._geko_on_step_end = step_end
    elif point == "geko_part":
        checkpoint = store.StateStore.checkpoint

        def store_checkpoint(self, path):
            out = checkpoint(self, path)
            hit()
            return out

        store.StateStore.checkpoint = store_checkpoint
    elif point == "hf_files":
        save_rng = transformers.Trainer._save_rng_state

        def save_rng_state(self, output_dir):
            save_rng(self, output_dir)
            hit()

        transformers.Trainer._save_rng_state = save_rng_state
    elif point == "epoch_end":
        record = history.HistoryWriter.record

        def history_record(self, *a, **kw):
            hit()
            return record(self, *a, **kw)

        history.HistoryWriter.record = history_record
    else:
        raise SystemExit(f"unknown point {point!r}; expected one of {sorted(POINTS)}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("out", type=Path)
    p.add_argument("--kill", default=None, help="POINT:N")
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    import torch  # noqa: F401 - imported once, before the fork
    import transformers  # noqa: F401

    result: dict = {}
    if a.kill is not None:
        point, n = a.kill.split(":")
        pid = os.fork()
        if pid == 0:
            _install(point, int(n))
            _trainer(a.out).train()
            os._exit(0)  # not killed: the test reports it
        _, status = os.waitpid(pid, 0)
        result["killed"] = os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
        result["complete_checkpoints"] = sorted(
            int(c.name.split("-")[1]) for c in (a.out / "run").glob("checkpoint-*")
            if (c / "trainer_state.json").is_file() and (c / "geko_state.json").is_file()
        )
        trainer = _trainer(a.out)
        trainer.train(resume_from_checkpoint=True if result["complete_checkpoints"] else None)
    else:
        trainer = _trainer(a.out)
        trainer.train()
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in trainer.model.state_dict().items()}, str(a.out / "final.safetensors"))
    result["global_step"] = int(trainer.state.global_step)
    (a.out / "result.json").write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
