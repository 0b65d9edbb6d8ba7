"""GEKO sample selection inside ``transformers.Trainer``: an existing script changes one class name.

::

    trainer = GEKOHFTrainer(model=model, args=args, train_dataset=train, eval_dataset=dev,
                            data_collator=collator, geko_args=GEKOSettings(config=GEKOConfig()))
    trainer.train()                      # or train(resume_from_checkpoint=True)
    print(trainer.get_efficiency_report())

``GEKOTrainerMixin`` carries all of it, so it composes with other ``Trainer`` subclasses
(``class MyTrainer(GEKOTrainerMixin, SFTTrainer)``). It is glue only: the GEKO lifecycle (state,
sampler, tracker, loss, epoch ends, the GEKO part of checkpoints) is
:class:`~geko_torch.session.GEKOSession`'s, the same as ``GEKOTrainer``'s. The GEKO run directory (default
``<args.output_dir>/geko``) holds the live state and the per-epoch history, so ``geko sql`` and
``geko report`` work on it. Under ``torchrun`` (DDP) the same script runs on every rank unchanged
(see *Several processes* below).

How it fits into the Trainer of transformers 5.23, and why:

* **Sample ids.** The train dataset is wrapped (:class:`~geko_torch.data.GEKODataset`) only inside
  :meth:`get_train_dataloader`; ``trainer.train_dataset`` stays the user's object, and evaluation
  datasets are never wrapped. The training collator takes ``sample_id`` out of the items before the
  user's ``data_collator`` sees them and adds it back to the batch as int64 ``[B]``, so any collator
  (padding, ``tokenizer.pad``) works unchanged. A ``datasets.Dataset`` gets HF's own column removal
  first (``_remove_unused_columns``), then the wrapper.
* **Column removal.** With ``remove_unused_columns=True`` HF wraps the collator in a
  ``RemoveColumnsCollator`` that keeps the model's forward arguments. For the training loader only
  (:meth:`_get_collator_with_removed_columns`), ``sample_id`` and ``labels`` are added to the kept
  columns: GEKO needs labels even when a custom model's forward takes none. Evaluation keeps HF's
  columns exactly.
* **Sampler.** :meth:`_get_train_sampler` returns the :class:`~geko_torch.sampler.GEKOSampler`
  (``total_epochs`` = ``ceil(num_train_epochs)``, or HF's epoch count under ``max_steps``; seed =
  ``args.seed``). Its length is the current epoch's plan, so the loader gets shorter as samples freeze.
  Under ``max_steps`` the run has the epochs that many full-data steps would span, and as GEKO
  epochs are shorter it can end before ``max_steps``.
* **Epoch alignment.** HF computes ``steps_in_epoch`` / ``num_update_steps_per_epoch`` once, from the
  first ``len(dataloader)``, and would then run empty update steps on shorter epochs and never take
  the optimizer step of a last, incomplete gradient-accumulation group. :meth:`_run_epoch` passes
  each epoch's real lengths instead, checks that HF's epoch equals the state's, and handles an epoch
  whose plan is empty (HF would stop training there). A callback's ``on_epoch_end`` repartitions
  exactly once per HF epoch, before HF's epoch-end save, so an epoch-end checkpoint holds the
  repartitioned state. An epoch cut short by ``should_training_stop`` (``max_steps``, a callback) is
  left open, so that a resumed run completes it; if training is not resumed its observations stay in
  the store but the epoch is not in the history. When the state says the dataset is mastered
  (``PartitionStats.mastered``), training stops after that epoch (``GEKOSettings.stop_when_mastered``,
  the session's rule, as in ``GEKOTrainer``); so it does, for any selection, when
  ``GEKOSettings.stop_on_plateau`` says few learnable samples still improve (``geko_state.progress``).
  Each epoch logs that progress as ``geko_improving_share``, ``geko_open_share`` and ``geko_suspects``.
* **Loss and gradient accumulation.** :meth:`compute_loss` pops ``sample_id`` and ``labels`` (so
  the model computes no batch-mean loss of its own), takes the logits, and trains on the mean of the
  per-sample losses over samples with a label token. HF's ``num_items_in_batch`` counts label
  *tokens*; GEKO weighs *samples*, so :meth:`get_batch_samples` counts the valid samples of the
  whole accumulated batch instead (over every rank), each micro-batch's loss is
  ``world_size * sum(per-sample loss) / that count`` and ``loss_is_scaled_for_ga`` is set to True:
  gradient accumulation (and DDP's average over the ranks) then gives the gradient of one process
  training the whole accumulated global batch, however its valid samples are split over
  micro-batches and ranks. For causal LMs this is the mean of per-sample token means, not HF's
  token mean. The loss is :meth:`GEKOSession.train_loss`, the same as ``GEKOTrainer``'s: under
  ``nan_policy="skip"`` a non-finite result weighs 0 (it still counts in the denominator, which is
  known before the forward). Evaluation (``prediction_step``) goes through HF's own ``compute_loss`` unchanged.
  ``compute_loss_func`` and label smoothing apply to evaluation only (warned).
* **Scheduler length.** ``max_steps`` (and the warmup built from it) is computed from the
  full-data length, ``ceil(ceil(N / world_size) / batch)`` batches per epoch and rank, which is
  ``ceil(N / (batch * world_size))``, exactly as plain ``Trainer`` would (with
  ``dataloader_drop_last``: ``ceil(N / world_size) // batch``, what this rank's loader yields in a
  full-data epoch), and identically on resume, also with another world size and the same global
  batch (``LambdaLR`` keeps its lambdas out of its state dict, so a resumed run must recompute the
  same length). Later GEKO epochs are shorter, so training ends before that many steps: a
  step-based decay would end above 0. :meth:`create_scheduler` therefore makes ``linear`` and
  ``cosine`` (without ``lr_scheduler_kwargs``) functions of GEKO's training progress
  (:meth:`GEKOSession.schedule_progress`, exactly 1 at the last draw of the last epoch; or the
  step share of ``max_steps`` when that is ahead), times HF's linear warmup, so they end at 0 at
  the last step whatever the policy; the constant types do not depend on the end and stay HF's,
  as do the others (step-based). With the Mountain Curriculum (GEKO selection,
  ``use_curriculum``) it also multiplies the schedule by the curriculum's LR multiplier at the
  current training progress, as ``GEKOTrainer`` does.
* **Checkpoints and resume.** :meth:`_save_checkpoint` writes the GEKO part (the same files as
  ``GEKOTrainer``'s: :func:`geko_torch.checkpoint.write_geko_part`) into HF's ``checkpoint-<step>/``,
  before HF's own files: ``geko_state.arrow`` (``StateStore.checkpoint``, after
  ``tracker.flush()``), ``geko_sampler.{json,safetensors}`` (plan and position, via
  ``save_tree``), ``geko_history.*``, ``geko_epochs.parquet`` (history summary) and, last,
  ``geko_state.json``.
  ``train(resume_from_checkpoint=...)`` restores them first. The restored sampler starts exactly at
  the saved plan position, so HF must skip nothing: :meth:`_init_training_state` reports the
  state's epoch and zero batches trained in it (HF's own arithmetic, ``global_step //
  steps_per_epoch``, is wrong once epochs shrink), so ``skip_first_batches`` is never used and HF
  restores its RNG state at the start of the resumed epoch, before any batch. The train loader gets
  a private generator, reseeded from (seed, epoch) at each epoch start: creating a loader iterator
  otherwise draws from torch's global generator, and the resumed run creates its iterator after
  restoring the saved RNG state (the uninterrupted run did so before saving it), so dropout masks
  would drift. Result: a run stopped and resumed ends with bit-identical state columns and model
  weights (CPU; tested with dropout on and with the checkpoint inside a shrunk epoch, after an
  epoch's last step, and at an epoch end).
  ``ignore_data_skip`` has no effect on the GEKO sampler (it always continues at the saved position).
* **Several processes (torchrun, DDP).** Every rank holds a full replica of the state: rank 0's is
  the run directory's file, the others' are in memory (:func:`~geko_torch.distributed.replica_path`,
  also on resume). The tracker exchanges every rank's observations (one all-gather per micro-batch
  on a private process group, created once when the trainer is constructed, where every rank is at
  the same point), so all replicas apply the same observations in the same order and plan the same
  epochs; the sampler (``rank`` / ``world_size`` = ``args.process_index`` / ``args.world_size``)
  gives each rank its shard, padded to equal length with draws from the start of the plan that are
  trained but weigh 0 in the loss and are not observed. ``accelerator.prepare`` wraps the train
  loader's batch sampler in a ``BatchSamplerShard``, which would shard that shard again and fill a
  last incomplete batch (``even_batches``); :meth:`get_train_dataloader` makes it a passthrough
  (one process, no filling), as transformers does for its rank-aware ``BatchRebalanceSampler``, so
  ``len(train_dataloader)`` is this rank's batch count. Accelerate synchronises nothing for it: the
  GEKO sampler has no ``generator`` (the plan is deterministic in state, seed and epoch). The
  loss's sample count is all-reduced on the same private group, whatever
  ``average_tokens_across_devices`` says (HF's token count is not used). Epoch ends, the flush
  before a checkpoint (HF calls ``_save_checkpoint`` on every rank) and the end of training are
  collective and run on every rank; the process that writes HF's checkpoint (``should_save``)
  writes the GEKO files and rank 0 alone writes the history. Mastery stops every rank after the
  same epoch (the replicas are identical). A run stopped on W ranks resumes on any number of
  ranks: every rank restores the checkpoint's state and the sampler re-shards what is left of the
  global plan. Result (gloo, CPU, tested): two ranks with per-device batch b end with the state
  and weights of one process with batch 2b (discrete columns exactly, float columns and weights to
  about 1e-7: the ranks' gradients are summed in another float order); a run stopped on two ranks
  and resumed on one ends like the uninterrupted run.
  Tensor / context / sequence parallelism (ranks that share a batch) and accelerate's
  ``dispatch_batches`` / ``split_batches`` are refused. FSDP and DeepSpeed average gradients over
  the ranks like DDP but are not tested.
* **Threads.** The engine's parallel numba kernels run on numba's OpenMP layer, which shares
  libgomp with torch and leaves torch's intra-op thread count at numba's (all cores) after a
  repartition or plan; the tracker and sampler put it back after every engine call
  (:mod:`geko_torch.threads`).
* Not supported: ``auto_find_batch_size`` retries (the observations of a failed attempt stay in
  the state; warned), ``IterableDataset`` train sets.
"""
from __future__ import annotations

import dataclasses
import inspect
import logging
import math
import warnings
import weakref
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch

from geko_state import StateStore, build_report
from geko_state.errors import ConfigError, InputError
from geko_state.errors import MissingDependencyError
from geko_state.report import EfficiencyReport
from geko_state.schema import Bucket

from .checkpoint import GEKO_EPOCHS_FILE, GEKO_HISTORY, GEKO_META_FILE, GEKO_SAMPLER, GEKO_STATE_FILE
from .data import SAMPLE_ID, GEKODataset
from .distributed import dist_rank_world
from .sampler import GEKOSampler
from .schedules import LRScheduleKind, lr_schedule_factor
from .session import EpochEnd, GEKOSession, GEKOSettings
from .signals import batch_labels, model_logits
from .tracker import GEKOTracker

try:
    from transformers import Trainer, TrainerCallback
    from transformers.trainer import TRAINER_STATE_NAME
    from transformers.trainer_utils import (
        PREFIX_CHECKPOINT_DIR,
        RemoveColumnsCollator,
        get_last_checkpoint,
    )
    from transformers.utils import is_datasets_available
except ImportError:  # pragma: no cover - exercised only without transformers
    raise MissingDependencyError(
        "geko_torch.hf needs transformers: pip install 'transformers>=5'"
    ) from None

__all__ = [
    "GEKO_EPOCHS_FILE",
    "GEKO_HISTORY",
    "GEKO_META_FILE",
    "GEKO_SAMPLER",
    "GEKO_STATE_FILE",
    "GEKOHFTrainer",
    "GEKOTrainerMixin",
]

log = logging.getLogger("geko_torch")

# The GEKO part of a checkpoint is the same for every trainer (geko_torch.checkpoint); its files
# are re-exported here for existing imports.
_LEGACY_KEYWORDS = {  # GEKOHFTrainer(geko_<name>=...) -> GEKOSettings(<name>=...), deprecated
    f"geko_{f.name}": f.name for f in dataclasses.fields(GEKOSettings)
}
_SETTINGS_DEFAULTS = {name: getattr(GEKOSettings(), name) for name in _LEGACY_KEYWORDS.values()}


def _settings(geko_args: GEKOSettings | None, kwargs: dict[str, Any]) -> GEKOSettings:
    """The trainer's GEKOSettings: ``geko_args``, or one built from the deprecated ``geko_<field>=``
    keywords (popped from ``kwargs``, warned); both at once are refused."""
    if geko_args is not None and not isinstance(geko_args, GEKOSettings):
        raise ConfigError(f"geko_args must be a geko_torch.GEKOSettings, got {type(geko_args).__name__}")
    legacy = {k: kwargs.pop(k) for k in list(kwargs) if k in _LEGACY_KEYWORDS}
    if not legacy:
        return GEKOSettings() if geko_args is None else geko_args
    if geko_args is not None:
        raise ConfigError(
            f"give the GEKO settings either as geko_args=GEKOSettings(...) or as the deprecated keywords "
            f"{sorted(legacy)}, not both"
        )
    warnings.warn(
        f"GEKOHFTrainer({', '.join(f'{k}=' for k in sorted(legacy))}) is deprecated; pass "
        f"geko_args=GEKOSettings({', '.join(f'{_LEGACY_KEYWORDS[k]}=' for k in sorted(legacy))})",
        DeprecationWarning, stacklevel=3,
    )
    # None was the old keywords' default for fields GEKOSettings gives a real default
    fields = {_LEGACY_KEYWORDS[k]: v for k, v in legacy.items()
              if v is not None or _SETTINGS_DEFAULTS[_LEGACY_KEYWORDS[k]] is None}
    try:
        return GEKOSettings(**fields)
    except ConfigError as e:  # name the keyword the caller wrote
        msg = str(e)
        raise ConfigError(f"geko_{msg}" if msg.startswith(tuple(_LEGACY_KEYWORDS.values())) else msg) from None


class _SampleIdCollator:
    """Takes ``sample_id`` out of the items, calls the user's collator on the rest and adds the ids
    back to the batch as int64 ``[B]``: the user's collator never sees an unknown field."""

    def __init__(self, inner: Callable[[list], Any]) -> None:
        self.inner = inner

    def __call__(self, features: list) -> Any:
        ids, stripped = [], []
        for i, f in enumerate(features):
            if not isinstance(f, Mapping) or SAMPLE_ID not in f:
                raise InputError(f"training item {i} has no {SAMPLE_ID!r}; expected items of GEKODataset")
            ids.append(int(f[SAMPLE_ID]))
            stripped.append({k: v for k, v in f.items() if k != SAMPLE_ID})
        batch = self.inner(stripped)
        if not isinstance(batch, Mapping) or not hasattr(batch, "__setitem__"):
            raise InputError(
                f"data_collator returned a {type(batch).__name__}; GEKOHFTrainer needs a dict-like batch "
                "(field name -> tensor) to add the sample ids to"
            )
        batch[SAMPLE_ID] = torch.tensor(ids, dtype=torch.int64)
        return batch


class _FullDataLength:
    """Stands in for the train loader in HF's step arithmetic: the full-data batch count, so
    ``max_steps`` and the LR schedule are those of plain ``Trainer`` (and the same on resume)."""

    def __init__(self, dataloader: Any, n_batches: int) -> None:
        self.dataset = dataloader.dataset
        self._n = int(n_batches)

    def __len__(self) -> int:
        return self._n


class _GEKOCallback(TrainerCallback):
    """Epoch ends, the fractional epoch, and the final flush, at HF's events."""

    def __init__(self, trainer: GEKOTrainerMixin) -> None:
        self._trainer = weakref.ref(trainer)

    def on_step_end(self, args, state, control, **kwargs):
        t = self._trainer()
        if t is not None:
            t._geko_on_step_end(state)

    def on_epoch_end(self, args, state, control, **kwargs):
        t = self._trainer()
        if t is not None:
            t._geko_on_epoch_end(state, control)
        return control

    def on_train_end(self, args, state, control, **kwargs):
        t = self._trainer()
        if t is not None:
            t._geko_on_train_end()


def _refuse_row_merging(args: Any) -> None:
    """TRL's ``packing`` / ``padding_free`` put several dataset rows into one training row, so a
    row's loss is no longer one sample's: GEKO's per-sample state needs one row per sample."""
    for name in ("packing", "padding_free"):
        if getattr(args, name, False):
            raise ConfigError(
                f"GEKOTrainerMixin: {name}=True merges several samples into one training row, so the loss of "
                f"a row is not one sample's and GEKO cannot keep per-sample state; set {name}=False "
                "(pad instead)")


class GEKOTrainerMixin:
    """GEKO sample selection for a ``transformers.Trainer`` (sub)class; see the module docstring.

    ``geko_args``: a :class:`~geko_torch.session.GEKOSettings` (default ``GEKOSettings()``; its
    ``run_dir`` defaults to ``<output_dir>/geko``), besides the Trainer's own arguments. The loose
    ``geko_<field>=`` keywords of earlier versions (``geko_config``, ``geko_budget``, ...) still
    work, one per ``GEKOSettings`` field, with a ``DeprecationWarning``.
    """

    def __init__(self, *args: Any, geko_args: GEKOSettings | None = None, **kwargs: Any) -> None:
        settings = _settings(geko_args, kwargs)  # takes the deprecated geko_* keywords out of kwargs
        _refuse_row_merging(kwargs.get("args", args[1] if len(args) > 1 else None))
        super().__init__(*args, **kwargs)
        self._geko_settings = settings
        run_dir = Path(settings.run_dir) if settings.run_dir is not None else Path(self.args.output_dir) / "geko"
        # Under torch.distributed the session creates GEKO's private process group here, where
        # every rank constructs the trainer at the same point: the tracker's observation exchange
        # and the loss's sample count travel on it, never queued behind DDP's all-reduces.
        self._geko_session = GEKOSession(
            settings, run_dir=run_dir, seed=int(self.args.seed), rank=int(self.args.process_index),
            world_size=int(self.args.world_size),
        )
        self._geko_src: Any = None  # the train_dataset the wrapper below was made from
        self._geko_dataset: GEKODataset | None = None
        self._geko_generator: torch.Generator | None = None
        self._geko_group_items: torch.Tensor | None = None  # valid samples of the current accumulated batch
        self._geko_building_train_loader = False
        if getattr(self, "compute_loss_func", None) is not None or self.args.label_smoothing_factor != 0:
            warnings.warn(
                "GEKOHFTrainer trains on its own per-sample cross-entropy; compute_loss_func and label "
                "smoothing are used for evaluation only", stacklevel=2,
            )
        if getattr(self.args, "train_sampling_strategy", "random") != "random":
            warnings.warn(
                f"train_sampling_strategy={self.args.train_sampling_strategy!r} is replaced by GEKO's sampler "
                "(the epoch plan decides which samples are drawn, in which order)", stacklevel=2,
            )
        self.add_callback(_GEKOCallback(self))
        if self.train_dataset is not None:
            self._geko_wrap(self.train_dataset)  # a wrong dataset fails here, before training starts

    @property
    def geko_args(self) -> GEKOSettings:
        """The GEKO settings of this trainer."""
        return self._geko_settings

    @property
    def geko_session(self) -> GEKOSession:
        """The GEKO lifecycle (state, sampler, tracker, epoch ends, checkpoints' GEKO part)."""
        return self._geko_session

    @property
    def _geko_store(self) -> StateStore | None:
        return self._geko_session.store

    @property
    def _geko_sampler(self) -> GEKOSampler | None:
        return self._geko_session.sampler

    @property
    def _geko_tracker(self) -> GEKOTracker | None:
        return self._geko_session.tracker

    # ------------------------------------------------------------------ accessors
    @property
    def geko_run_dir(self) -> Path:
        """The GEKO run directory (state, history; ``geko sql|report`` work on it)."""
        return self._geko_session.run.root

    @property
    def geko_store(self) -> StateStore:
        """The state store: one row per train item (created fresh on first use, replaced by
        ``train()``'s fresh start or resume)."""
        self._geko_ensure()
        return self._geko_store

    @property
    def geko_tracker(self) -> GEKOTracker:
        self._geko_ensure()
        return self._geko_tracker

    @property
    def geko_sampler(self) -> GEKOSampler:
        self._geko_ensure()
        return self._geko_sampler

    def get_efficiency_report(self) -> EfficiencyReport:
        """Per-epoch buckets, sample passes trained and compute saved, from the run's history."""
        return build_report(self.geko_run_dir)

    # ------------------------------------------------------------------ state objects
    def _geko_wrap(self, dataset: Any) -> GEKODataset:
        if self._geko_src is not dataset or self._geko_dataset is None:
            src = dataset
            if is_datasets_available():
                import datasets

                if isinstance(dataset, datasets.Dataset):
                    # HF's own column removal on the Arrow table (cheaper than per item).
                    dataset = self._remove_unused_columns(dataset, description="Training")
            self._geko_dataset = GEKODataset(dataset)
            self._geko_src = src
        return self._geko_dataset

    def _geko_check_setup(self) -> None:
        world = int(self.args.world_size)
        if world > 1:
            if dist_rank_world() != (int(self.args.process_index), world):
                raise ConfigError(
                    f"GEKOHFTrainer: TrainingArguments say rank {self.args.process_index} of {world} but "
                    f"torch.distributed says rank {dist_rank_world()[0]} of {dist_rank_world()[1]}; every rank must be "
                    "one data-parallel replica"
                )
            pc = getattr(self.accelerator, "parallelism_config", None)
            tp = self.get_tp_size() if hasattr(self, "get_tp_size") else 1
            if tp > 1 or (pc is not None and getattr(pc, "non_data_parallel_size", 1) > 1):
                raise ConfigError(
                    "GEKOHFTrainer: tensor / context / sequence parallelism is not supported (ranks that share a "
                    "batch would each draw their own shard of the GEKO plan); use data parallelism (DDP)"
                )
            if self.accelerator.dispatch_batches or self.accelerator.split_batches:
                raise ConfigError(
                    "GEKOHFTrainer under torch.distributed needs accelerator_config dispatch_batches=False and "
                    "split_batches=False: every rank draws its own shard of the GEKO plan"
                )
        if self.args.auto_find_batch_size:
            warnings.warn(
                "auto_find_batch_size: observations of a failed attempt stay in the GEKO state", stacklevel=3,
            )

    def _geko_full_batches(self, n_samples: int) -> int:
        """This rank's batches of a full-data epoch: ``ceil(N / world_size)`` samples per rank (the
        sampler pads the shards to equal length), in per-device batches. Without
        ``dataloader_drop_last`` this is ``ceil(N / (batch * world_size))``, the length of plain
        ``Trainer``'s sharded loader, so ``max_steps`` and the LR schedule are plain Trainer's and do
        not change when a run is resumed with another world size and the same global batch."""
        bs = int(self._train_batch_size)
        world = max(1, int(self.args.world_size))
        per_rank = -(-n_samples // world)
        return per_rank // bs if self.args.dataloader_drop_last else -(-per_rank // bs)

    def _geko_total_epochs(self, n_samples: int) -> int:
        """HF's epoch count: ``ceil(num_train_epochs)``, or under ``max_steps`` the epochs of
        full-data length those steps span."""
        a = self.args
        if a.max_steps > 0:
            batches = self._geko_full_batches(n_samples)
            per_epoch = max(-(-batches // a.gradient_accumulation_steps), 1)
            return max(1, -(-a.max_steps // per_epoch))
        return max(1, math.ceil(a.num_train_epochs))

    def _geko_n_samples(self) -> int:
        if self.train_dataset is None:
            raise InputError("GEKOHFTrainer needs a train_dataset for its state (one row per train item)")
        return len(self._geko_wrap(self.train_dataset))

    def _geko_ensure(self) -> None:
        n = self._geko_n_samples()
        self._geko_session.open(n, self._geko_total_epochs(n))

    def _geko_drop_last_below(self) -> int:
        """A remainder of the plan smaller than this is never trained (``dataloader_drop_last``)."""
        return int(self._train_batch_size) if self.args.dataloader_drop_last else 0

    def _geko_epoch_done(self) -> bool:
        """Every batch of the current epoch's plan was trained."""
        return self._geko_session.epoch_done(self._geko_drop_last_below())

    def _geko_end_epoch(self) -> EpochEnd:
        end = self._geko_session.end_epoch()
        counts = end.stats.counts
        if str(getattr(self.args.logging_strategy, "value", self.args.logging_strategy)) != "no":
            self.log({
                "geko_samples_trained": end.samples_trained, "geko_mean_loss": end.mean_loss,
                **{f"geko_{b.name.lower()}": counts[b] for b in Bucket}, "geko_pruned": end.stats.pruned,
                "geko_improving_share": end.progress.improving_share, "geko_open_share": end.progress.open_share,
                "geko_suspects": end.progress.suspects,
            })
        return end

    # ------------------------------------------------------------------ callback hooks
    def _geko_on_step_end(self, state: Any) -> None:
        if self._geko_sampler is None:
            return
        # The share of the plan trained: the same in an uninterrupted and a resumed run.
        s, plan_len = self._geko_sampler, len(self._geko_sampler.plan)
        frac = 1.0 if self._geko_epoch_done() or plan_len == 0 else s.global_position / plan_len
        state.epoch = self._geko_store.epoch + frac

    def _geko_on_epoch_end(self, state: Any, control: Any) -> None:
        if self._geko_store is None or self._geko_store.epoch >= self._geko_sampler.total_epochs:
            return
        if not self._geko_epoch_done() and control.should_training_stop:
            return  # stopped mid-epoch: the epoch stays open, a resumed run completes it
        end = self._geko_end_epoch()
        state.epoch = float(self._geko_store.epoch)
        if end.stop:  # the session's rules: mastered (GEKO selection), or stop_on_plateau
            control.should_training_stop = True

    def _geko_on_train_end(self) -> None:
        self._geko_session.flush()

    # ------------------------------------------------------------------ data
    def get_train_dataloader(self):
        """HF's train loader over the wrapped dataset, with the GEKO sampler and a private generator."""
        if self.train_dataset is None:
            return super().get_train_dataloader()
        self._geko_ensure()
        ds = self._geko_wrap(self.train_dataset)
        self._geko_building_train_loader = True
        try:
            loader = self._get_dataloader(
                dataset=ds, description="Training", batch_size=self._train_batch_size,
                sampler_fn=self._get_train_sampler, is_training=True,
            )
        finally:
            self._geko_building_train_loader = False
        self._geko_unshard(loader)
        base = getattr(loader, "base_dataloader", loader)
        self._geko_generator = torch.Generator().manual_seed(int(self.args.seed))
        try:
            base.generator = self._geko_generator
        except AttributeError:  # an unusual loader wrapper: keep torch's global generator
            self._geko_generator = None
        return loader

    def _geko_unshard(self, loader: Any) -> None:
        """Under torch.distributed ``accelerator.prepare`` wraps the loader's batch sampler in a
        ``BatchSamplerShard``, which would hand this rank every ``world_size``-th batch of what is
        already this rank's shard of the plan, and (``even_batches``) fill a last incomplete batch
        with ids from the start of the shard. The GEKO sampler is rank-aware and pads the shards
        itself, so the wrapper becomes a passthrough, as transformers does for its own rank-aware
        ``BatchRebalanceSampler``: one process, no even-batch filling. ``len(loader)`` is then this
        rank's batch count. (``rng_types``: accelerate synchronises a sampler's ``generator``
        across ranks; the GEKO sampler has none, its plan is deterministic in state, seed and
        epoch, so nothing is synchronised.)"""
        for wrapper in (getattr(loader, "batch_sampler", None), getattr(loader, "sampler", None)):
            inner = getattr(wrapper, "batch_sampler", None)
            if inner is not None and getattr(inner, "sampler", None) is self._geko_sampler:
                if hasattr(wrapper, "num_processes"):
                    wrapper.num_processes = 1
                    wrapper.process_index = 0
                if hasattr(wrapper, "even_batches"):
                    wrapper.even_batches = False
        if int(self.args.world_size) > 1:
            n_batches = len(loader)
            bs = int(self._train_batch_size)
            shard = len(self._geko_sampler)
            want = shard // bs if self.args.dataloader_drop_last else -(-shard // bs)
            if n_batches != want:
                raise InputError(
                    f"the prepared train loader has {n_batches} batches but this rank's shard of the GEKO plan "
                    f"makes {want}; an unknown loader wrapper shards the rank-aware GEKO sampler again"
                )

    def _get_train_sampler(self, train_dataset: Any = None):
        if self._geko_store is None:
            return super()._get_train_sampler(train_dataset)
        return self._geko_sampler

    def _get_collator_with_removed_columns(self, data_collator: Callable, description: str | None = None) -> Callable:
        if not self._geko_building_train_loader:
            return super()._get_collator_with_removed_columns(data_collator, description=description)
        inner = _SampleIdCollator(data_collator)
        if not self.args.remove_unused_columns:
            return inner
        self._set_signature_columns_if_needed()
        keep = list(dict.fromkeys([*self._signature_columns, SAMPLE_ID, "labels", "label", "label_ids"]))
        return RemoveColumnsCollator(
            data_collator=inner, signature_columns=keep, logger=log,
            model_name=self.model.__class__.__name__, description=description,
        )

    # ------------------------------------------------------------------ the training loop
    def train(self, resume_from_checkpoint: str | bool | None = None, trial: Any = None,
              ignore_keys_for_eval: list[str] | None = None, **kwargs: Any):
        """HF's ``train``; a fresh run starts a pristine GEKO state, a resumed run restores the
        checkpoint's state, sampler position and history first."""
        if resume_from_checkpoint is False:
            resume_from_checkpoint = None
        if isinstance(resume_from_checkpoint, bool) and resume_from_checkpoint:
            resume_from_checkpoint = self._geko_last_checkpoint(self.args.output_dir)
            if resume_from_checkpoint is None:
                raise ValueError(f"No valid checkpoint found in output directory ({self.args.output_dir})")
        if self.train_dataset is not None:
            self._geko_check_setup()
            n = self._geko_n_samples()
            if resume_from_checkpoint is not None:
                self._geko_session.resume(resume_from_checkpoint, n, self._geko_total_epochs(n))
                # Saved after the epoch's last batch but before its end: end it now, as the
                # uninterrupted run did right after that save.
                self._geko_session.resume_epoch_end(self._geko_drop_last_below())
            else:
                self._geko_session.start_fresh(n, self._geko_total_epochs(n))
        return super().train(resume_from_checkpoint=resume_from_checkpoint, trial=trial,
                             ignore_keys_for_eval=ignore_keys_for_eval, **kwargs)

    def _geko_last_checkpoint(self, folder: str) -> str | None:
        """The newest *complete* ``checkpoint-<step>`` of ``folder``. HF writes a checkpoint in
        place (no temporary name), the GEKO part first and its own ``trainer_state.json`` last, so a
        process killed while saving leaves a partial directory that HF's ``get_last_checkpoint``
        would pick; one with HF's trainer state and the GEKO part's metadata is complete."""
        if self.train_dataset is None:
            return get_last_checkpoint(folder)
        found = []
        for p in Path(folder).glob(f"{PREFIX_CHECKPOINT_DIR}-*"):
            step = p.name[len(PREFIX_CHECKPOINT_DIR) + 1:]
            if step.isdigit() and (p / TRAINER_STATE_NAME).is_file() and (p / GEKO_META_FILE).is_file():
                found.append((int(step), p))
        return str(max(found)[1]) if found else None

    def set_initial_training_values(self, args: Any, dataloader: Any):
        if self._geko_store is None:
            return super().set_initial_training_values(args, dataloader)
        full = _FullDataLength(dataloader, self._geko_full_batches(self._geko_store.n_samples))
        return super().set_initial_training_values(args, full)

    def _init_training_state(self, *args: Any, **kwargs: Any):
        epochs_trained, steps_trained = super()._init_training_state(*args, **kwargs)
        if self._geko_store is None:
            return epochs_trained, steps_trained
        # The restored sampler already starts where the checkpoint stopped: HF skips nothing.
        return self._geko_store.epoch, 0

    def _run_epoch(self, *args: Any, **kwargs: Any):
        if self._geko_store is None:
            return super()._run_epoch(*args, **kwargs)
        kw = inspect.signature(super()._run_epoch).bind(*args, **kwargs).arguments
        epoch = int(kw["epoch"])
        if self._geko_session.stop_pending:  # the epoch ended at resume said the state is mastered
            self._geko_session.stop_pending = False
            self.control.should_training_stop = True
            return None
        if epoch != self._geko_store.epoch:
            raise InputError(
                f"transformers is starting epoch {epoch} but the GEKO state is at epoch {self._geko_store.epoch}; "
                "the GEKO epoch ends must line up with the Trainer's (was the GEKO callback removed?)"
            )
        if self._geko_generator is not None:
            self._geko_generator.manual_seed(self._geko_session.loader_seed(epoch))
        n = len(kw["train_dataloader"])  # builds this epoch's plan
        kw["steps_in_epoch"] = n
        kw["num_update_steps_per_epoch"] = -(-n // self.args.gradient_accumulation_steps)
        if n > 0:
            return super()._run_epoch(**kw)
        # An empty plan (everything frozen, pruned or weighted 0 in this curriculum phase): HF would
        # stop training on an empty epoch; end it and go on.
        if epoch == kw.get("epochs_trained") and kw.get("resume_from_checkpoint") is not None:
            self._load_rng_state(kw["resume_from_checkpoint"])
        self.state.epoch = float(epoch + 1)
        self.control = self.callback_handler.on_epoch_end(self.args, self.state, self.control)
        self._maybe_log_save_evaluate(
            self._tr_loss, None, kw["model"], kw.get("trial"), epoch, kw.get("ignore_keys_for_eval"),
            kw.get("start_time"),
        )
        return None

    # ------------------------------------------------------------------ loss
    def get_batch_samples(self, epoch_iterator: Any, num_batches: int, device: Any):
        """HF's micro-batches of one optimizer step; the count passed on is GEKO's: the valid
        samples of the whole accumulated batch, over every rank (see :meth:`compute_loss`)."""
        batch_samples, num_items = super().get_batch_samples(epoch_iterator, num_batches, device)
        self._geko_group_items = None
        if (batch_samples and self._geko_sampler is not None
                and all(isinstance(b, Mapping) and SAMPLE_ID in b for b in batch_samples)):
            # Every earlier batch has been recorded, so the sampler stands at this group's start.
            # Under torch.distributed every rank reaches this point once per optimizer step, with
            # as many micro-batches (the shards have equal length): the count is all-reduced.
            total = self._geko_session.group_count(batch_samples, device)
            if total is not None:
                self._geko_group_items = total
                return batch_samples, total
        return batch_samples, num_items

    def compute_loss(self, model: Any, inputs: Mapping[str, Any], return_outputs: bool = False,
                     num_items_in_batch: Any = None):
        """Training batches (with ``sample_id``): the mean per-sample loss, recorded in the GEKO
        state. Anything else (evaluation): HF's own ``compute_loss``."""
        if SAMPLE_ID not in inputs or not model.training:
            if SAMPLE_ID in inputs:
                inputs = {k: v for k, v in inputs.items() if k != SAMPLE_ID}
            else:
                self.loss_is_scaled_for_ga = None  # HF decides, as for any Trainer
            return super().compute_loss(model, inputs, return_outputs=return_outputs,
                                        num_items_in_batch=num_items_in_batch)
        batch = dict(inputs)
        ids = batch.pop(SAMPLE_ID)
        labels = batch.pop("labels", None)
        outputs = model(**batch)
        logits = model_logits(outputs)
        labels = batch_labels({**batch, "labels": labels}, logits)
        sig = self._geko_tracker.signals(logits, labels, outputs=outputs, batch={**batch, "labels": labels})
        # The session's loss (GEKOSession.train_loss, the same as GEKOTrainer's): with GEKO's count
        # of the accumulated batch (get_batch_samples; HF's token count is not used) it is already
        # normalised for gradient accumulation, so HF divides by nothing; without one it is the
        # micro-batch mean, which HF divides by the GA steps.
        count = num_items_in_batch if num_items_in_batch is not None and num_items_in_batch is self._geko_group_items \
            else None
        loss, scaled = self._geko_session.train_loss(ids, sig, count, accumulation_steps=None)
        self.loss_is_scaled_for_ga = scaled
        return (loss, outputs) if return_outputs else loss

    # ------------------------------------------------------------------ checkpoints
    def _save_checkpoint(self, model: Any, trial: Any) -> None:
        # HF calls this on every rank at the same step. The flush is collective under
        # torch.distributed (the last exchange), so every rank does it; the replicas are then
        # identical and the process that writes HF's checkpoint (should_save) writes the GEKO part.
        if self._geko_store is not None:
            self._geko_tracker.flush()
            if self.args.should_save:
                out = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
                self._geko_session.save(out, global_step=int(self.state.global_step))
                self._geko_store.flush()
        super()._save_checkpoint(model, trial)

    # ------------------------------------------------------------------ the learning rate
    def _geko_progress_schedule(self) -> LRScheduleKind | None:
        """The decay shape :meth:`create_scheduler` drives by GEKO's training progress: HF's
        ``linear`` or ``cosine`` without ``lr_scheduler_kwargs`` (None: HF's own schedule stays)."""
        name = getattr(self.args.lr_scheduler_type, "value", self.args.lr_scheduler_type)
        if self._geko_sampler is None or self.args.lr_scheduler_kwargs:
            return None
        return _PROGRESS_SCHEDULES.get(str(name))

    def create_scheduler(self, num_training_steps: int, optimizer: Any = None):
        """HF's scheduler, made a function of GEKO's training progress and multiplied by the
        Mountain Curriculum's LR multiplier (GEKO selection with ``use_curriculum``), as in
        ``GEKOTrainer``. ``linear`` and ``cosine`` (without ``lr_scheduler_kwargs``) decay over
        :meth:`GEKOSession.schedule_progress` (or the step share of ``num_training_steps`` when
        that is ahead, e.g. under ``max_steps``), after HF's own linear warmup, so shrinking
        epochs still end at LR 0; other types keep HF's step-based lambdas. A scheduler that is
        not a ``LambdaLR`` (e.g. ``reduce_lr_on_plateau``) is kept as it is (warned when the
        curriculum or the progress schedule would have applied)."""
        scheduler = super().create_scheduler(num_training_steps, optimizer)
        if getattr(scheduler, "_geko_schedule", False):
            return scheduler  # already wrapped (HF returns the scheduler it made before)
        session = self._geko_session
        kind = self._geko_progress_schedule()
        if kind is None and not session.curriculum_on:
            return scheduler
        if not isinstance(scheduler, torch.optim.lr_scheduler.LambdaLR):
            warnings.warn(
                f"lr_scheduler {type(scheduler).__name__} is not a LambdaLR: GEKO's progress-based decay and the "
                "curriculum's learning-rate multiplier are not applied", stacklevel=2,
            )
            return scheduler
        fns = scheduler.lr_lambdas
        if kind is not None:
            warmup = self.args.get_warmup_steps(num_training_steps)
            fns = [_progress_schedule(kind, warmup, num_training_steps, session) for _ in fns]
        scheduler.lr_lambdas = [_with_multiplier(fn, session) for fn in fns]
        # LambdaLR computed the initial learning rates before the wrap: recompute them.
        for group, base, fn in zip(scheduler.optimizer.param_groups, scheduler.base_lrs, scheduler.lr_lambdas):
            group["lr"] = base * fn(scheduler.last_epoch)
        scheduler._last_lr = [g["lr"] for g in scheduler.optimizer.param_groups]
        scheduler._geko_schedule = True
        return scheduler


# HF scheduler types whose shape depends on where the run ends, driven by GEKO's progress instead
# of the step count (the constant ones do not depend on the end and stay HF's).
_PROGRESS_SCHEDULES: dict[str, LRScheduleKind] = {"linear": LRScheduleKind.LINEAR, "cosine": LRScheduleKind.COSINE}


def _progress_schedule(kind: LRScheduleKind, warmup: int, total_steps: int,
                       session: GEKOSession) -> Callable[[int], float]:
    # A plain function (not a callable object): LambdaLR.state_dict() then saves nothing of it,
    # and a resumed run recomputes it from the restored sampler position and step.
    def factor(step: int) -> float:
        warm = step / max(1, warmup) if step < warmup else 1.0  # HF's own warmup
        # The step share only leads when the run ends by steps (max_steps, fractional epochs,
        # dataloader_drop_last); otherwise it trails the draws' progress.
        progress = max(session.schedule_progress(), step / max(1, total_steps))
        return warm * lr_schedule_factor(kind, progress)

    return factor


def _with_multiplier(fn: Callable[[int], float], session: GEKOSession) -> Callable[[int], float]:
    # A plain function (not a callable object): LambdaLR.state_dict() then saves nothing of it.
    def factor(step: int) -> float:
        return fn(step) * session.lr_multiplier()

    return factor


class GEKOHFTrainer(GEKOTrainerMixin, Trainer):
    """``transformers.Trainer`` with GEKO sample selection: ``Trainer(...)`` becomes
    ``GEKOHFTrainer(..., geko_args=GEKOSettings(config=GEKOConfig(...)))``. See :class:`GEKOTrainerMixin`."""
