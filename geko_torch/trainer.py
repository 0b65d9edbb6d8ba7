"""``GEKOTrainer``: the seeds' trainer API on top of the state engine.

Each epoch trains on the store's plan (FREEZE and pruned samples are not drawn, so epochs get
shorter as samples are mastered), computes per-sample losses from the logits, records them in the
store and repartitions at the end of the epoch. ``output_dir`` is a GEKO run directory: state,
history, plots and checkpoints, queryable with ``geko sql|report|export``.
"""
from __future__ import annotations

import inspect
import json
import logging
import math
import os
import platform
import random
import time
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from geko_state import (
    GEKO_DEFAULT,
    GEKOConfig,
    Run,
    StateStore,
    build_report,
)
from geko_state.errors import ConfigError, InputError, MissingDependencyError
from geko_state.io import atomic_path
from geko_state.report import EfficiencyReport
from geko_state.schema import Bucket
from geko_state.selection import SelectionKind

from .checkpoint import load_checkpoint as _load_checkpoint
from .checkpoint import remove_checkpoint, save_checkpoint
from .data import SAMPLE_ID, GEKODataset, PadCollator
from .distributed import (
    broadcast_json,
    collective_device,
    dist_rank_world,
)
from .lora import apply_lora, count_parameters
from .rundir import TRAINER_LOG, TRAINER_STATE
from .sampler import GEKOSampler
from .schedules import lr_schedule_factor
from .session import GEKOSession
from .signals import batch_labels, model_logits
from .timing import PhaseTimes
from .tracker import GEKOTracker
from .training_args import GEKOTrainingArgs

__all__ = ["DEFAULT_CONFIG", "GEKOTrainer", "model_logits", "set_seed"]

# The GEKO settings used when no config is given (chosen by benchmarks/bench_training.py).
DEFAULT_CONFIG: GEKOConfig = GEKO_DEFAULT

log = logging.getLogger("geko_torch")

# Why a run stopped before its last epoch (GEKOSession.end_epoch's stop_reason), as printed.
STOP_MESSAGES = {
    "mastered": "The state is mastered after epoch {epoch}",
    "plateau": "Few learnable samples are still improving after epoch {epoch} (stop_on_plateau)",
}


def set_seed(seed: int) -> None:
    """Seed Python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _auto_workers(requested: int) -> int:
    if requested >= 0:
        return requested
    if platform.system() == "Darwin":  # fork-less spawn makes workers slower than the main process there
        return 0
    return min(4, max(0, (os.cpu_count() or 1) // 2))


class GEKOTrainer:
    """Train ``model`` on ``train_dataset`` with GEKO sample selection.

    ``model``: any ``nn.Module`` taking the batch fields as keyword arguments and returning logits
    (Hugging Face models do). ``train_dataset`` items are dicts with ``input_ids`` (and ``labels``
    for classification or masked SFT). ``compute_confidence`` / ``compute_correctness``:
    ``fn(outputs, batch) -> Tensor[B]`` replace the built-in per-sample rules.
    """

    def __init__(
        self,
        model: torch.nn.Module,
        train_dataset: Any,
        tokenizer: Any = None,
        eval_dataset: Any = None,
        config: GEKOConfig | None = None,
        args: GEKOTrainingArgs | None = None,
        lora_config: Any = None,
        compute_confidence: Callable[[Any, Any], torch.Tensor] | None = None,
        compute_correctness: Callable[[Any, Any], torch.Tensor] | None = None,
        data_collator: Callable[[list], dict] | None = None,
    ) -> None:
        if not isinstance(model, torch.nn.Module):
            raise InputError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.args = args = GEKOTrainingArgs() if args is None else args
        if not isinstance(args, GEKOTrainingArgs):
            raise ConfigError(f"args must be a GEKOTrainingArgs, got {type(args).__name__}")
        self.config = config = DEFAULT_CONFIG if config is None else config
        if not isinstance(config, GEKOConfig):
            raise ConfigError(f"config must be a GEKOConfig, got {type(config).__name__}")
        self.train_dataset = GEKODataset(train_dataset)
        if eval_dataset is not None and len(eval_dataset) == 0:
            raise InputError("eval_dataset is empty; pass None to skip evaluation")
        self.eval_dataset = eval_dataset
        self.tokenizer = tokenizer
        self.rank, self.world_size = dist_rank_world()
        self.device = self._pick_device(args.device)
        self._messages: list[str] = []
        set_seed(args.seed)  # before LoRA: its initialisation draws from the torch generator

        self.param_counts = None
        if lora_config is not None:
            model = apply_lora(model, lora_config)
            self.param_counts = count_parameters(model)
            self._say(self.param_counts.format())
        if args.gradient_checkpointing:
            # transformers 5 renamed it; the old name still works but warns
            enable = getattr(model, "activation_checkpointing_enable", None) or getattr(
                model, "gradient_checkpointing_enable", None)
            if enable is not None:
                enable()
                if hasattr(model, "config") and hasattr(model.config, "use_cache"):
                    model.config.use_cache = False
                self._say("[GEKO] Gradient checkpointing enabled")
            else:
                warnings.warn(
                    f"gradient_checkpointing=True but {type(model).__name__} has no gradient_checkpointing_enable(); "
                    "training without it", stacklevel=2,
                )
        self.model = model.to(self.device)
        # Under torch.distributed the training forward goes through DDP (gradients averaged over the
        # ranks); evaluation and checkpoints use the module itself.
        self._train_model: torch.nn.Module = self.model
        if self.world_size > 1:
            ids = [self.device.index] if self.device.type == "cuda" else None
            self._train_model = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self._forward_model: torch.nn.Module = self._train_model
        self._compile_pending = False
        if args.compile_model:
            try:
                self._forward_model = torch.compile(self._train_model)
                self._compile_pending = True
                self._say("[GEKO] Compiling model with torch.compile (first batch will be slow)...")
            except Exception as e:  # noqa: BLE001 - e.g. no compiler toolchain: fall back, do not fail the run
                warnings.warn(f"torch.compile unavailable ({e}); training in eager mode", stacklevel=2)
        self._forward_params = self._accepted_inputs(self.model)

        self.compute_confidence = compute_confidence
        self.compute_correctness = compute_correctness
        pad_id = getattr(tokenizer, "pad_token_id", None)
        self.data_collator = data_collator or PadCollator(pad_token_id=pad_id if isinstance(pad_id, int) else 0)

        self.run = Run(Path(args.output_dir))
        self.run.root.mkdir(parents=True, exist_ok=True)
        # The GEKO side (state, sampler, tracker, epoch ends, the GEKO part of checkpoints) is the
        # session's, shared with GEKOHFTrainer. Every rank holds a replica of the state; rank 0's
        # is the run directory's file.
        self.session = GEKOSession(
            args.geko_settings(config, compute_confidence=compute_confidence, compute_correctness=compute_correctness),
            run_dir=self.run.root, seed=args.seed, rank=self.rank, world_size=self.world_size,
        )
        self.session.open(len(self.train_dataset), args.num_epochs)
        self.optimizer = self._make_optimizer()
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        amp_device = self.device.type
        self.scaler = torch.amp.GradScaler(amp_device) if args.fp16 else None
        self._autocast_dtype = torch.bfloat16 if args.bf16 else torch.float16 if args.fp16 else None
        self.global_step = 0
        self._loader: DataLoader | None = None
        self._loader_generator: torch.Generator | None = None
        self.log_history: list[dict[str, Any]] = []
        self._finished = False
        self._stop_requested = False  # request_stop(); read between optimizer steps
        self._resumed_from: Path | None = None  # load_checkpoint's path, for the messages
        self._stop_agreed = False
        # Wall seconds of the last train() per phase: how much of a run was GEKO's own work.
        self.phase_times = PhaseTimes()

    # ------------------------------------------------------------------ construction helpers
    def _pick_device(self, requested: str | None) -> torch.device:
        if requested:
            return torch.device(requested)
        if not torch.cuda.is_available():
            return torch.device("cpu")
        if self.world_size > 1:  # one GPU per rank, as torchrun's LOCAL_RANK says
            local = int(os.environ.get("LOCAL_RANK", self.rank % torch.cuda.device_count()))
            torch.cuda.set_device(local)
            return torch.device("cuda", local)
        return torch.device("cuda")

    @property
    def _reporting(self) -> bool:
        return self.args.report and self._is_main_process()

    def _say(self, text: str) -> None:
        self._messages.append(text)
        if self._reporting:
            print(text, flush=True)

    @staticmethod
    def _accepted_inputs(model: torch.nn.Module) -> set[str] | None:
        """Forward's keyword names, or None when it takes ``**kwargs`` (then every field goes in)."""
        try:
            params = inspect.signature(model.forward).parameters.values()
        except (TypeError, ValueError):
            return None
        if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
            return None
        return {p.name for p in params}

    @property
    def store(self) -> StateStore:
        """The state store: one row per train item."""
        return self.session.store

    @property
    def sampler(self) -> GEKOSampler:
        return self.session.sampler

    @property
    def tracker(self) -> GEKOTracker:
        return self.session.tracker

    def _is_main_process(self) -> bool:
        return self.rank == 0

    def _make_optimizer(self) -> torch.optim.Optimizer:
        decay, no_decay = [], []
        for p in self.model.parameters():
            if p.requires_grad:
                (decay if p.ndim >= 2 else no_decay).append(p)  # biases and norm scales: no decay
        if not decay and not no_decay:
            raise InputError("the model has no trainable parameters (every requires_grad is False)")
        groups = [
            {"params": decay, "weight_decay": self.args.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ]
        if self.args.use_8bit_optimizer:
            try:
                import bitsandbytes as bnb
            except ImportError:
                raise MissingDependencyError(
                    "use_8bit_optimizer=True needs bitsandbytes: pip install bitsandbytes (CUDA GPUs only)"
                ) from None
            return bnb.optim.AdamW8bit(groups, lr=self.args.learning_rate)
        return torch.optim.AdamW(groups, lr=self.args.learning_rate)

    @property
    def _curriculum_on(self) -> bool:
        return self.session.curriculum_on

    @property
    def warmup_steps(self) -> int:
        """The linear warmup's optimizer steps: ``args.warmup_steps``, or ``args.warmup_ratio`` of
        the run's planned steps (``max_steps``, else the full-data steps of ``num_epochs`` epochs,
        as the LR schedule counts them; GEKO's shorter epochs end the run sooner)."""
        a = self.args
        if a.warmup_steps is not None:
            return a.warmup_steps
        per_rank = math.ceil(len(self.train_dataset) / self.world_size)
        per_epoch = math.ceil(math.ceil(per_rank / a.batch_size) / a.gradient_accumulation_steps)
        planned = a.max_steps if a.max_steps is not None else per_epoch * a.num_epochs
        return math.ceil(a.warmup_ratio * planned)

    def _lr_factor(self, step: int) -> float:
        """Linear warmup, times the decay schedule (``args.lr_scheduler_type``) and the curriculum's
        LR multiplier, both at the current training progress (not at ``step``: shrinking epochs
        take fewer steps than planned, and the decay must still end at the last one). ``max_steps``
        stops a run without moving the schedule's end, so a resumed run continues the same curve."""
        w = self.warmup_steps
        factor = min(1.0, (step + 1) / w) if w > 0 else 1.0
        progress = self.session.schedule_progress()
        return factor * lr_schedule_factor(self.args.lr_scheduler_type, progress) * self.session.lr_multiplier()

    # ------------------------------------------------------------------ data
    def _loader_kwargs(self) -> dict[str, Any]:
        a = self.args
        workers = _auto_workers(a.dataloader_num_workers)
        kw: dict[str, Any] = {"num_workers": workers, "collate_fn": self.data_collator,
                              "pin_memory": self.device.type == "cuda"}
        if workers > 0:
            kw["persistent_workers"] = a.dataloader_persistent_workers
            kw["prefetch_factor"] = a.dataloader_prefetch_factor
        return kw

    def _train_loader(self) -> DataLoader:
        """One loader for the whole run, so persistent workers live across epochs (the sampler's
        length and plan follow the store, so the same loader serves every epoch)."""
        epoch = self.store.epoch
        if self._loader is None or self._loader.sampler is not self.sampler:
            # A private generator: creating a loader iterator would otherwise draw from torch's
            # global generator, and a resumed run (one iterator fewer) would drop out of step.
            self._loader_generator = torch.Generator()
            self._loader = DataLoader(
                self.train_dataset, batch_size=self.args.batch_size, sampler=self.sampler,
                generator=self._loader_generator, **self._loader_kwargs(),
            )
        # Reseeded per epoch so worker seeds do not depend on how many iterators came before.
        self._loader_generator.manual_seed(self.session.loader_seed(epoch))
        return self._loader

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        nb = self.device.type == "cuda"
        return {k: v.to(self.device, non_blocking=nb) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}

    def _model_inputs(self, batch: dict[str, Any]) -> dict[str, Any]:
        names = self._forward_params
        return {
            k: v for k, v in batch.items()
            if k not in ("labels", SAMPLE_ID) and isinstance(v, torch.Tensor) and (names is None or k in names)
        }

    def _autocast(self):
        if self._autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self._autocast_dtype)

    def _forward(self, batch: dict[str, Any], *, train: bool = True) -> Any:
        inputs = self._model_inputs(batch)
        if not train and self._train_model is not self.model:
            return self.model(**inputs)  # no DDP: ranks evaluate different numbers of batches
        if self._compile_pending:
            try:
                out = self._forward_model(**inputs)
            except Exception as e:  # noqa: BLE001 - graceful fallback: compilation fails lazily, on first call
                warnings.warn(f"torch.compile failed on the first batch ({type(e).__name__}: {e}); "
                              "continuing in eager mode", stacklevel=2)
                self._forward_model = self.model
                out = self.model(**inputs)
            self._compile_pending = False
            return out
        return self._forward_model(**inputs)

    # ------------------------------------------------------------------ training
    def train(self) -> dict[str, Any]:
        """Run (or continue, after :meth:`load_checkpoint`) training; returns the final metrics."""
        a = self.args
        if self._finished:
            if self._resumed_from is not None:
                raise InputError(f"{self._resumed_from} is the final checkpoint of a finished run: there is nothing "
                                 "to resume; to train again, start a new run without load_checkpoint (or raise "
                                 "num_epochs to train on from it)")
            raise InputError("training already finished; build a new GEKOTrainer to train again")
        if self.global_step == 0 and self.store.epoch == 0 and not getattr(self, "_log_continues", False):
            # A fresh run: a pristine state, and no history an earlier run left in this directory.
            self.session.start_fresh(len(self.train_dataset), a.num_epochs)
        self._print_header()
        model = self.model
        accum = a.gradient_accumulation_steps
        times = self.phase_times
        times.reset()
        t_start = time.perf_counter()
        self._loss_mark = self._loss_totals()
        stopped_early, stop_reason = False, None
        while self.store.epoch < a.num_epochs:
            epoch = self.store.epoch
            with times(times.GEKO):  # the epoch's plan is drawn here
                loader = self._train_loader()
                n_batches = len(loader)
            bar = tqdm(total=n_batches, desc=f"{a.progress_label} {epoch + 1}/{a.num_epochs}", unit="batch",
                       disable=a.disable_progress_bar or not self._is_main_process(), leave=True)
            model.train()
            self.optimizer.zero_grad(set_to_none=True)
            batches, left = iter(loader), n_batches
            while left > 0:
                # One optimizer step's micro-batches (the last group of an epoch may be shorter),
                # fetched first: the loss is normalised over the valid samples of all of them.
                group = [b for _, b in zip(range(min(accum, left)), batches)]
                if not group:
                    break
                left -= len(group)
                self._train_group(group)
                bar.update(len(group))
                bar.set_postfix(loss=f"{self.tracker.epoch_mean_loss:.2f}",
                                phase=(p.value if (p := self.sampler.phase()) else "-"), refresh=False)
                if self._after_step():
                    stopped_early = True
                    break
            bar.close()
            if stopped_early:
                break
            with times(times.GEKO):
                end = self.session.end_epoch()
            stats, mean_loss, trained = end.stats, end.mean_loss, end.samples_trained
            progress = end.progress
            self._log({"epoch": stats.epoch, "train_loss": mean_loss, "samples_trained": trained,
                       **{f"{b.name.lower()}_count": c for b, c in stats.counts.items()}, "pruned": stats.pruned,
                       "improving_share": progress.improving_share, "open_share": progress.open_share,
                       "suspects": progress.suspects})
            if self._reporting:
                print(f"[Epoch {stats.epoch}] Average Loss: {mean_loss:.4f}  (trained {trained:,} samples)")
                print(stats.format_line())
                print(progress.format_line(), flush=True)
            if self.eval_dataset is not None:
                with times(times.EVAL):
                    self._log(self.evaluate())
            if end.stop:
                stop_reason = end.stop_reason
                self._say(f"[GEKO] {STOP_MESSAGES[stop_reason].format(epoch=stats.epoch)}; stopping training")
                break
        elapsed = time.perf_counter() - t_start
        if stopped_early:
            key = "stopped_by_request" if self._stop_agreed else "stopped_at_max_steps"
            self._stop_requested = self._stop_agreed = False  # acted on: a later train() runs on
            return {"global_step": self.global_step, key: True,
                    "checkpoint": str(self.run.root / f"checkpoint-{self.global_step}")}
        self._finished = True
        if a.save_at_end:
            with times(times.CHECKPOINTS):
                self.save_checkpoint(self.run.root / f"checkpoint-{self.global_step}")
        with times(times.PLOTS):
            self._render_plots()
        # Rank 0 read the history it wrote; the other ranks get its figures.
        with times(times.GEKO):
            metrics = broadcast_json(self._final_metrics(elapsed) if self._is_main_process() else None)
        if stop_reason:
            metrics[f"stopped_{stop_reason}"] = True
        self._print_summary(metrics)
        return metrics

    def _train_group(self, group: list[dict[str, Any]]) -> None:
        """Forward and backward the micro-batches of one optimizer step, then step."""
        times = self.phase_times
        with times(times.GEKO):
            count = self.session.group_count(group, self.device)
        for j, batch in enumerate(group):
            ids = batch.pop(SAMPLE_ID)
            batch = self._to_device(batch)
            sync = j + 1 == len(group)
            with self._no_sync(not sync), self._autocast():
                outputs = self._forward(batch)
                logits = model_logits(outputs)
                # Counted as GEKO's although a plain loop computes a loss here too: the per-sample
                # signals cost a little more, and GEKO's share is better overstated than hidden.
                with times(times.GEKO):
                    sig = self.tracker.signals(logits, batch_labels(batch, logits), outputs=outputs, batch=batch)
            # The session records the raw signals and weighs the losses (the plan's loss weights:
            # InfoBatch, GEKO's keep_fraction; nan_policy="skip"'s mask) over the whole accumulated global batch.
            with times(times.GEKO):
                loss, _ = self.session.train_loss(ids, sig, count, accumulation_steps=len(group))
            with self._no_sync(not sync):
                (self.scaler.scale(loss) if self.scaler else loss).backward()
        self._optimizer_step()

    def _no_sync(self, skip: bool):
        """DDP's no_sync() on the micro-steps of a gradient-accumulation group but its last."""
        if skip and self._train_model is not self.model:
            return self._train_model.no_sync()
        return nullcontext()

    def _optimizer_step(self) -> None:
        a, opt = self.args, self.optimizer
        if self.scaler is not None:
            self.scaler.unscale_(opt)
        if a.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), a.max_grad_norm)
        stepped = True
        if self.scaler is not None:
            scale = self.scaler.get_scale()
            self.scaler.step(opt)  # skipped when the fp16 gradients overflowed
            self.scaler.update()
            stepped = self.scaler.get_scale() >= scale  # the scale only drops after a skipped step
        else:
            opt.step()
        if stepped:  # as transformers.Trainer: the schedule follows the steps actually taken
            self.scheduler.step()
        opt.zero_grad(set_to_none=True)
        self.global_step += 1

    def request_stop(self) -> None:
        """Stop training at the next optimizer-step boundary, with a checkpoint there: ``train()``
        then returns ``{"stopped_by_request": True, "checkpoint": ...}`` and
        ``load_checkpoint(that)`` + ``train()`` continues exactly. Safe to call from another thread
        or a signal handler. Under torch.distributed the ranks agree on it every ``logging_steps``
        steps (one all-reduce then), so a request on any rank stops every rank at the same step."""
        self._stop_requested = True

    def _stop_now(self, step: int) -> bool:
        if self.world_size == 1:
            self._stop_agreed = self._stop_requested
        elif step % self.args.logging_steps == 0:
            import torch.distributed as dist

            dev = collective_device()
            flag = torch.tensor([1.0 if self._stop_requested else 0.0], device=dev)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            self._stop_agreed = bool(flag.item())
        return self._stop_agreed

    def _after_step(self) -> bool:
        """Logging, evaluation and checkpoints due at this step; True when max_steps is reached or a
        stop was requested."""
        a, step = self.args, self.global_step
        if step % a.logging_steps == 0:
            self._log({"step": step, "epoch": self.store.epoch, "train_loss": self.tracker.epoch_mean_loss,
                       "step_loss": self._step_loss(), "learning_rate": self.scheduler.get_last_lr()[0],
                       "phase": (p.value if (p := self.sampler.phase()) else None)})
        times = self.phase_times
        if self.eval_dataset is not None and step % a.eval_steps == 0:
            with times(times.EVAL):
                self._log(self.evaluate())
        done = (a.max_steps is not None and step >= a.max_steps) or self._stop_now(step)
        if step % a.save_steps == 0 or done:
            with times(times.CHECKPOINTS):
                self.save_checkpoint(self.run.root / f"checkpoint-{step}")
        return done

    def _loss_totals(self) -> tuple[int, int, float]:
        s = self.tracker.epoch_stats
        return self.store.epoch, s.observed, s.loss_sum

    def _step_loss(self) -> float:
        """Mean loss of the samples observed since the previous step line (the epoch's running
        mean in ``train_loss`` smooths more and more as the epoch goes on, then jumps when the
        next epoch starts). Observations arrive a few batches late (no device sync per step), so
        this is that window, shifted; NaN when none arrived."""
        epoch, observed, loss_sum = now = self._loss_totals()
        mark = getattr(self, "_loss_mark", None)
        if mark is None or mark[0] != epoch or mark[1] > observed:  # a new epoch restarted the sums
            mark = (epoch, 0, 0.0)
        self._loss_mark = now
        n = observed - mark[1]
        return (loss_sum - mark[2]) / n if n > 0 else float("nan")

    def _log(self, record: dict[str, Any]) -> None:
        record = {"step": self.global_step, "time": time.time(), **record}
        self.log_history.append(record)
        log.info("%s", record)
        if self._is_main_process():
            # A trainer that did not resume starts the log afresh: what an earlier run in this
            # directory logged (possibly cut short by a crash) is not part of this run.
            mode = "a" if getattr(self, "_log_continues", False) else "w"
            with open(self.run.root / TRAINER_LOG, mode) as f:
                f.write(json.dumps(record, allow_nan=True) + "\n")
            self._log_continues = True

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, eval_dataset: Any = None) -> dict[str, float]:
        """Mean per-sample loss and accuracy (share of correct samples, the tracker's rule) on the
        eval set; the training state is not touched."""
        ds = self.eval_dataset if eval_dataset is None else eval_dataset
        if ds is None:
            raise InputError("evaluate() needs an eval_dataset (given to the trainer or to evaluate())")
        ds = GEKODataset(ds)
        if self.world_size > 1:  # each rank evaluates every world_size-th item; the sums are all-reduced
            ds = torch.utils.data.Subset(ds, range(self.rank, len(ds), self.world_size))
        loader = DataLoader(ds, batch_size=self.args.eval_batch_size or self.args.batch_size,
                            shuffle=False, **self._loader_kwargs())
        was_training = self.model.training
        self.model.eval()
        loss_sum, correct, n = 0.0, 0.0, 0
        for batch in loader:
            batch.pop(SAMPLE_ID)
            batch = self._to_device(batch)
            with self._autocast():
                outputs = self._forward(batch, train=False)
                logits = model_logits(outputs)
                sig = self.tracker.signals(logits, batch_labels(batch, logits), outputs=outputs, batch=batch)
            v = sig.valid
            loss_sum += float(sig.loss.float()[v].sum())
            correct += float(sig.correct[v].float().sum())
            n += int(v.sum())
        self.model.train(was_training)
        if self.world_size > 1:
            import torch.distributed as dist

            dev = collective_device()
            sums = torch.tensor([loss_sum, correct, float(n)], dtype=torch.float64, device=dev)
            dist.all_reduce(sums)
            loss_sum, correct, n = float(sums[0]), float(sums[1]), int(sums[2])
        n = max(n, 1)
        return {"eval_loss": loss_sum / n, "eval_accuracy": correct / n, "eval_samples": n}

    # ------------------------------------------------------------------ checkpoints
    def save_checkpoint(self, path: str | os.PathLike | None = None) -> Path:
        """Save model, optimizer, scheduler, RNG, sampler position, tracker and state store."""
        path = Path(path) if path is not None else self.run.root / f"checkpoint-{self.global_step}"
        # log_records: the log's length now, so a resume drops exactly what was logged after this
        # checkpoint (an epoch's end can be logged after a checkpoint of the same step)
        extra = {"global_step": self.global_step, "finished": self._finished, "log_records": len(self.log_history),
                 "args": self.args.to_dict(), "config": self.config.to_dict()}
        save_checkpoint(path, store=self.store, model=self.model, optimizer=self.optimizer,
                        scheduler=self.scheduler, scaler=self.scaler, tracker=self.tracker, extra=extra,
                        geko_part=lambda d: self.session.save(d, global_step=self.global_step),
                        )  # every rank; rank 0 writes
        if self._is_main_process():
            self.store.flush()
            self._say(f"[GEKO] Checkpoint saved to {path}")
            self._prune_checkpoints()
        return path

    def _prune_checkpoints(self) -> None:
        limit = self.args.save_total_limit
        if limit is None:
            return
        found = []
        for p in self.run.root.glob("checkpoint-*"):
            suffix = p.name.split("-", 1)[1]
            if p.is_dir() and suffix.isdigit():
                found.append((int(suffix), p))
        for _, p in sorted(found)[:-limit]:
            remove_checkpoint(p)  # hidden first: never visible half deleted

    def load_checkpoint(self, path: str | os.PathLike) -> None:
        """Restore everything :meth:`save_checkpoint` wrote; :meth:`train` then continues from there
        exactly as if it had not stopped (same plan position, weights and generator states)."""
        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such checkpoint directory")
        if not (path / TRAINER_STATE).is_file():
            raise InputError(f"{path}: not a GEKO checkpoint directory (no {TRAINER_STATE})")
        # The GEKO part (the session also removes what killed writes left in the run directory): the checks (same dataset and selection policy), the state, the sampler's
        # position, the tracker and the history as of the checkpoint.
        self.session.resume(path, len(self.train_dataset), self.args.num_epochs)
        state = _load_checkpoint(path, model=self.model, optimizer=self.optimizer, scheduler=self.scheduler,
                                 scaler=self.scaler)
        extra = state.get("extra", {})
        self.global_step = int(extra.get("global_step", 0))
        self._finished = bool(extra.get("finished", False))
        self._resumed_from = path
        same_run = path.resolve().parent == self.run.root.resolve()  # the log it counted is this one
        self._trim_log(extra.get("log_records") if same_run else None)
        self._say(f"[GEKO] Resumed from {path} (epoch {self.store.epoch + 1}, step {self.global_step})")

    def _trim_log(self, records: int | None = None) -> None:
        """Drop the log lines a stopped or killed run wrote after the checkpoint it is resumed from:
        keep the first ``records`` records (the log's length when the checkpoint was saved), or,
        without that count (older checkpoints, or one of another run directory), the records of
        steps up to the checkpoint's. A line cut short by a crash is dropped. The log is replaced
        atomically, and the resumed run appends to it."""
        self._log_continues = True
        f = self.run.root / TRAINER_LOG
        if not f.is_file():
            return
        kept = []
        for line in f.read_text().splitlines():
            if records is not None and len(kept) >= records:
                break
            try:
                rec = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if not isinstance(rec, dict):
                continue
            if records is not None or rec.get("step", 0) <= self.global_step:
                kept.append(rec)
        self.log_history = kept
        if not self._is_main_process():
            return
        with atomic_path(f) as tmp:
            tmp.write_text("".join(json.dumps(r, allow_nan=True) + "\n" for r in kept))

    # ------------------------------------------------------------------ reports
    def get_efficiency_report(self) -> EfficiencyReport:
        """Per-epoch buckets, sample passes trained and compute saved, as measured (print it)."""
        return build_report(self.run.root)

    def get_pruned_count(self) -> int:
        """Samples permanently pruned so far."""
        return int(np.count_nonzero(self.store.column("pruned")))

    def _bucket_ids(self, bucket: Bucket) -> np.ndarray:
        live = self.store.column("pruned") == 0
        return np.flatnonzero(live & (self.store.column("bucket") == int(bucket))).astype(np.int64)

    def get_hard_samples(self) -> np.ndarray:
        """int64 ids of the samples currently in HARD (confidently wrong)."""
        return self._bucket_ids(Bucket.HARD)

    def get_frozen_samples(self) -> np.ndarray:
        """int64 ids of the samples currently in FREEZE (mastered, not pruned)."""
        return self._bucket_ids(Bucket.FREEZE)

    def _final_metrics(self, elapsed: float) -> dict[str, Any]:
        report = self.get_efficiency_report()
        stats = self.store.last_stats
        out: dict[str, Any] = {
            "global_step": self.global_step,
            "samples_total": self.store.n_samples,
            "epochs": report.n_epochs,
            "samples_trained": report.samples_trained,
            "full_data_passes": report.full_data_passes,
            "compute_saved": report.compute_saved,
            "samples_mastered": 0 if stats is None else stats.counts[Bucket.FREEZE] + stats.pruned,
            "pruned": self.get_pruned_count(),
            "skipped_nonfinite": self.store.skipped_total,  # nan_policy="skip": results not observed
            "train_accuracy": float("nan") if stats is None else stats.accuracy,
            "train_loss": next((r["train_loss"] for r in reversed(self.log_history)
                                if "train_loss" in r and "samples_trained" in r), float("nan")),
            "train_seconds": elapsed,
        }
        evals = [r for r in self.log_history if "eval_loss" in r]
        if evals:
            out["eval_loss"] = evals[-1]["eval_loss"]
            out["eval_accuracy"] = evals[-1]["eval_accuracy"]
        return out

    def _render_plots(self) -> None:
        if not self.args.plots or not self._is_main_process():
            return
        try:
            from geko_state import render_plots

            render_plots(self.run.root)
        except MissingDependencyError:
            log.info("matplotlib not installed: no plots (pip install matplotlib)")

    def _print_header(self) -> None:
        if not self._reporting:
            return
        a = self.args
        precision = "BF16" if a.bf16 else "FP16" if a.fp16 else "FP32"
        budget = a.budget.value if hasattr(a.budget, "value") else a.budget
        if a.selection.policy in (SelectionKind.UNIFORM, SelectionKind.INFOBATCH):
            budget = f"not used ({a.selection.policy.value} plans its own epochs)"
        lines = [
            "=" * 60, "  GEKO Training", "=" * 60,
            f"  Samples           : {self.store.n_samples:,}",
            f"  Epochs            : {a.num_epochs}",
            f"  Batch size        : {a.batch_size}",
            f"  Device            : {self.device.type.upper()}"
            + (f" x {self.world_size} ranks (torch.distributed)" if self.world_size > 1 else ""),
            f"  Precision         : {precision}",
            f"  Grad accum        : {a.gradient_accumulation_steps}",
            f"  Grad checkpointing: {'ON' if a.gradient_checkpointing else 'OFF'}",
            f"  torch.compile     : {'ON' if a.compile_model else 'OFF'}",
            f"  8-bit optimizer   : {'ON' if a.use_8bit_optimizer else 'OFF'}",
            f"  DataLoader workers: {_auto_workers(a.dataloader_num_workers)}",
            f"  Warmup steps      : {self.warmup_steps}"
            + ("" if a.warmup_steps is not None else f" ({a.warmup_ratio:g} of the planned steps)"),
            f"  LR schedule       : {a.lr_scheduler_type.value} (over training progress)",
            f"  Selection         : {a.selection.policy.value}"
            + ("" if a.selection.keep_fraction is None
               else f" (keep_fraction {a.selection.keep_fraction:g}: mastered samples re-weighted)")
            + ("" if a.selection.suspect_threshold is None
               else f" (suspects above {a.selection.suspect_threshold:g} set aside)"),
            f"  Curriculum        : {'ON' if self._curriculum_on else 'OFF'}",
            f"  Budget            : {budget}",
            f"  Run directory     : {self.run.root}",
            "=" * 60,
        ]
        print("\n".join(lines), flush=True)

    def _print_summary(self, m: dict[str, Any]) -> None:
        if not self._reporting:
            return
        lines = [
            "=" * 60, "  Training Complete", "=" * 60,
            f"  Samples total     : {m['samples_total']:,}",
            f"  Samples mastered  : {m['samples_mastered']:,}",
            f"  Samples pruned    : {m['pruned']:,}",
            f"  Sample passes     : {m['samples_trained']:,} of {m['full_data_passes']:,} (N x epochs)",
            f"  Compute saved     : {100 * m['compute_saved']:.1f}% (measured sample passes)",
            f"  Train accuracy    : {100 * m['train_accuracy']:.1f}% (seen samples, last epoch)",
            f"  Avg loss          : {m['train_loss']:.4f} (last epoch)",
        ]
        if m.get("skipped_nonfinite"):
            lines.append(f"  Skipped non-finite: {m['skipped_nonfinite']:,} results (nan_policy='skip')")
        if "eval_loss" in m:
            lines.append(f"  Eval loss / acc   : {m['eval_loss']:.4f} / {100 * m['eval_accuracy']:.1f}%")
        lines += [f"  Time              : {m['train_seconds']:.1f} s", "=" * 60]
        print("\n".join(lines), flush=True)

    def close(self) -> None:
        """Flush and close the state store."""
        self.session.close()

