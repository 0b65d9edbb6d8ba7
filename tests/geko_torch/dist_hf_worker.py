"""GEKOHFTrainer scenarios for tests/geko_torch/test_hf_distributed.py.

Under ``torchrun`` (gloo on the CPU; ``PYTHONPATH`` = the repository root)::

    python -m torch.distributed.run --standalone --nproc-per-node W dist_hf_worker.py OUT SCENARIO...

The test also calls :func:`run_scenario` in its own process for the one-rank runs. Scenarios
(``OUT/<scenario>/`` is each one's ``output_dir``; the GEKO run directory is ``OUT/<scenario>/geko``):

* ``full``: a tiny BERT classifier (no dropout), global micro-batch ``GLOBAL_BATCH`` x ``GA``
  accumulation steps, ``EPOCHS`` epochs; rank 0 writes ``result.json`` (plans, epoch ends, steps,
  every rank's state digest) and ``model.safetensors`` (final weights), other ranks
  ``result-<rank>.json``.
* ``stop=FULL_DIR``: the same run stopped by a callback (with a checkpoint) two optimizer steps
  into the first epoch of ``FULL_DIR``'s run that trains fewer than N samples; observations are
  exchanged every 3 micro-batches (``GEKOSettings(sync_every=3)``).
* ``resume=STOP_DIR``: the same run resumed from ``STOP_DIR``'s checkpoint (another model
  initialisation: the weights must come from the checkpoint), to the end.
* ``sgd=avg|noavg|ref``: two epochs of plain SGD, HF's loss logged every step, with
  ``average_tokens_across_devices`` on (``avg``, ``ref``) or off (``noavg``); in ``OUT/sgd_<value>``.
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import sys
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from safetensors.torch import save_file
from transformers import TrainerCallback, TrainingArguments

from geko_state import COLUMN_NAMES, GEKOConfig
from geko_torch.hf import GEKOHFTrainer
from geko_torch.session import GEKOSettings
from tests.geko_torch.hf_callbacks import StopAt
from tests.geko_torch.models import tiny_bert_classifier

N = 75  # odd: even the full-data epoch pads rank 1's shard, and 75 is no multiple of the global batch
GLOBAL_BATCH = 8  # per optimizer micro-step over all ranks; per device: GLOBAL_BATCH // world
GA = 2
EPOCHS = 8
# Masters samples within a few epochs (as test_hf.py's FAST): later plans shrink to odd lengths.
UNLABELLED = (2, 3, 12, 40, 41, 57)
CONFIG = GEKOConfig(log_bucket_stats=False, use_curriculum=False, bucket_weights=(3, 2, 1), q_value_lr=0.5)


def items(n: int = N, seed: int = 1) -> list[dict]:
    """An easy task, so samples are mastered (frozen) within a few epochs: label 1 when the first
    token is below 28. Items in ``UNLABELLED`` have no label (-100): trained on, never observed, and
    the ranks' micro-batches hold different numbers of samples that count in the loss."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        ids = torch.randint(6, 50, (8,), generator=g)
        y = -100 if i in UNLABELLED else int(ids[0] < 28)
        out.append({"input_ids": ids, "attention_mask": torch.ones(8, dtype=torch.int64), "labels": torch.tensor(y)})
    return out


def world() -> tuple[int, int]:
    """(rank, world size): torchrun's, before transformers initialises the process group."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


class Recorder(TrainerCallback):
    """Each epoch's GEKO plan length (at HF's epoch begin) and the step at each epoch end."""

    def __init__(self) -> None:
        self.trainer = None
        self.plans: list[int] = []
        self.epoch_end_steps: list[int] = []

    def on_epoch_begin(self, args, state, control, **kwargs):
        self.plans.append(len(self.trainer.geko_sampler.plan))

    def on_epoch_end(self, args, state, control, **kwargs):
        self.epoch_end_steps.append(state.global_step)


class Logs(TrainerCallback):
    """HF's logged training loss of every step (the mean over the ranks' reported losses) and
    GEKO's logged samples trained per epoch."""

    def __init__(self) -> None:
        self.losses: list[float] = []
        self.samples_trained: list[int] = []

    def on_log(self, args, state, control, logs=None, **kwargs):
        if logs and "loss" in logs:
            self.losses.append(float(logs["loss"]))
        if logs and "geko_samples_trained" in logs:
            self.samples_trained.append(int(logs["geko_samples_trained"]))


def _args(out: Path, w: int, **kw) -> TrainingArguments:
    base = {
        "output_dir": str(out), "report_to": "none", "use_cpu": True, "disable_tqdm": True,
        "dataloader_num_workers": 0, "per_device_train_batch_size": GLOBAL_BATCH // w,
        "gradient_accumulation_steps": GA, "num_train_epochs": EPOCHS, "learning_rate": 5e-3,
        # adam_epsilon 1e-6: the attention key biases have a zero gradient in exact arithmetic
        # (softmax does not change when every key logit moves by q.b), and with the default 1e-8
        # AdamW turns the float noise of that zero into lr-sized steps that differ between any two
        # float orders (1-rank vs 2-rank); everything else agrees to ~1e-7 either way.
        "adam_epsilon": 1e-6, "seed": 0, "save_strategy": "no", "logging_strategy": "no",
        "ddp_backend": "gloo" if w > 1 else None, "ddp_find_unused_parameters": False,
    }
    return TrainingArguments(**{**base, **kw})


def _digest(store) -> str:
    h = hashlib.sha256()
    for c in COLUMN_NAMES:
        h.update(np.ascontiguousarray(store.column(c)).tobytes())
    return h.hexdigest()


def _all_digests(store) -> list[str]:
    """Every rank's state digest (rank order): the replicas must be identical."""
    mine = _digest(store)
    w = world()[1]
    if w == 1:
        return [mine]
    buf = torch.frombuffer(bytearray(bytes.fromhex(mine)), dtype=torch.uint8)
    out = [torch.zeros_like(buf) for _ in range(w)]
    dist.all_gather(out, buf)
    return [bytes(o.tolist()).hex() for o in out]


def _stop_step(full: dict) -> int:
    """The second step of the first epoch that trains fewer than N samples (and has 2+ steps)."""
    for e, plan in enumerate(full["plans"]):
        if e > 0 and 0 < plan < N and math.ceil(math.ceil(plan / GLOBAL_BATCH) / GA) > 2:
            return full["epoch_end_steps"][e - 1] + 2
    raise SystemExit(f"no shrunk epoch with 3+ steps: plans {full['plans']}")


def run_scenario(out: Path, scenario: str) -> None:
    name, _, value = scenario.partition("=")
    d = out / name
    rank, w = world()
    rec = Recorder()
    callbacks: list[TrainerCallback] = [rec]
    resume = None
    seed = 0
    result: dict = {}
    kw: dict = {}
    sync_every = 1
    if name == "sgd":
        # Plain SGD is linear in the gradient (AdamW hides a constant factor on the loss): a wrong
        # world-size scaling or sample count shows in the weights. average_tokens_across_devices
        # (HF all-gathers its token count or not) must not matter.
        d = out / f"sgd_{value}"
        kw = {"optim": "sgd", "learning_rate": 0.5, "num_train_epochs": 2, "logging_strategy": "steps",
              "logging_steps": 1, "average_tokens_across_devices": value != "noavg"}
        logs = Logs()
        callbacks.append(logs)
    elif name == "stop":
        k = _stop_step(json.loads((Path(value) / "result.json").read_text()))
        callbacks.append(StopAt(k))
        result["stop_step"] = k
        sync_every = 3  # exchanging every 3 micro-batches changes when, never what, is applied
    elif name == "resume":
        k = json.loads((Path(value) / "result.json").read_text())["stop_step"]
        resume = str(Path(value) / f"checkpoint-{k}")
        seed = 7  # another initialisation: the weights must come from the checkpoint
    elif name not in ("full", "sgd"):
        raise SystemExit(f"unknown scenario {name!r}")
    trainer = GEKOHFTrainer(
        model=tiny_bert_classifier(seed=seed), args=_args(d, w, **kw), train_dataset=items(), callbacks=callbacks,
        geko_args=GEKOSettings(config=CONFIG, replacement=False, sync_every=sync_every),
    )
    rec.trainer = trainer
    out_ = trainer.train(resume_from_checkpoint=resume)
    store = trainer.geko_store
    result.update({
        "world_size": w, "global_step": out_.global_step, "plans": rec.plans, "epoch_end_steps": rec.epoch_end_steps,
        "max_steps": trainer.state.max_steps,
        "epoch": store.epoch, "digests": _all_digests(store),
        "state_path": None if store.path is None else str(store.path),
    })
    if name == "sgd":
        result["losses"] = logs.losses
        result["logged_samples_trained"] = logs.samples_trained
    d.mkdir(parents=True, exist_ok=True)
    if rank == 0:
        save_file({k: v.detach().contiguous() for k, v in trainer.model.state_dict().items()},
                  str(d / "model.safetensors"))
        (d / "result.json").write_text(json.dumps(result))
    else:
        (d / f"result-{rank}.json").write_text(json.dumps(result))


def main() -> None:
    out = Path(sys.argv[1])
    torch.set_num_threads(1)
    for scenario in sys.argv[2:]:
        run_scenario(out, scenario)
        if dist.is_initialized():
            dist.barrier()
    if dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
