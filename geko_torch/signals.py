"""Per-sample loss, confidence and correctness from one forward pass (DESIGN section 3).

Hugging Face models return one batch-mean loss; bucketing needs one loss per sample, so the
signals are recomputed here from the logits the forward pass already produced (never a second
forward). The causal-LM path never builds a ``[B, T, V]`` softmax or log-softmax: a custom autograd
function works through the vocabulary in row chunks with log-sum-exp, saves only the logits (which
the caller holds anyway) and one float32 log-sum-exp per token, and recomputes the softmax chunk by
chunk in backward, writing straight into the gradient.
"""
from __future__ import annotations

import dataclasses
import enum
import functools
import inspect
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from geko_state.errors import InputError
from geko_state.validate import check_number, is_int

__all__ = [
    "DEFAULT_TOKEN_ACCURACY",
    "IGNORE_INDEX",
    "SIGNALS",
    "SampleSignals",
    "TaskKind",
    "apply_custom",
    "batch_labels",
    "causal_lm_signals",
    "classification_signals",
    "compute_signals",
    "infer_task",
    "lm_labels",
    "model_logits",
]

IGNORE_INDEX = -100
# The trainers' and the tracker's causal-LM correctness rule: a sample is correct when at least half
# of its response tokens are predicted right. Measured on the frontier's SFT task (SmolLM2-135M,
# WordNet definitions, 20% shuffled responses; docs/training.md "Per-sample signals"): after 3
# epochs the seeds' rule (mean loss < 0.5) marked no sample correct, so GEKO could neither freeze nor
# find confidently-wrong samples, while >= 50% token accuracy marked 41% of clean samples and 9% of
# shuffled ones. None keeps the seeds' loss rule.
DEFAULT_TOKEN_ACCURACY = 0.5
# Bytes of float32 scratch per chunk of logit rows, by device type. A chunk holds a few such buffers
# at once (the upcast rows, x - max, the softmax), so half-precision logits are never upcast whole.
# Each chunk costs ~15 small ops: kernel launches on a GPU, thread barriers on a CPU (slow when
# other processes share the cores: 8 MiB chunks ran 3x slower than 32 MiB on a busy 2-core box, at
# equal speed when idle). 16 MiB on CPU keeps the scratch near 0.1x of 32k-vocab logits (see
# benchmarks/bench_signals.py); accelerators have memory to spare and pay per launch, so more there.
_CHUNK_BYTES = {"cpu": 16 << 20}
_DEFAULT_CHUNK_BYTES = 256 << 20


@dataclass(frozen=True, eq=False)  # eq on tensors would be elementwise, not a bool
class SampleSignals:
    """What one forward pass says about each sample of a batch of ``B``.

    ``loss`` stays attached to the autograd graph so a trainer can backpropagate through it; the
    other fields are detached. A sample without a single label token is ``valid == False`` (loss 0
    with zero gradient, confidence 0, not correct) and must not be observed.
    """

    loss: torch.Tensor  # float32 [B]
    confidence: torch.Tensor  # float32 [B], in [0, 1]
    correct: torch.Tensor  # bool [B]
    valid: torch.Tensor  # bool [B]
    # float32 [B]: the label's logit minus the largest other logit (a causal LM: the mean over its
    # label tokens); feeds the state's AUM (geko_state.noise). None: not computed (stored as unknown).
    margin: torch.Tensor | None = None


class TaskKind(str, enum.Enum):
    CAUSAL_LM = "causal_lm"
    CLASSIFICATION = "classification"


# --------------------------------------------------------------------------- validation


def _check_logits(logits: Any, ndim: int, form: str) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        kind = f"a {logits.dtype} tensor" if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(f"logits must be a floating-point torch.Tensor of shape {form}, got {kind}")
    if logits.ndim != ndim:
        raise InputError(f"logits must have shape {form}, got shape {tuple(logits.shape)}")
    if logits.shape[-1] == 0:
        raise InputError(f"logits must have shape {form} with at least one class, got shape {tuple(logits.shape)}")


def _check_ignore_index(ignore_index: Any) -> None:
    if not is_int(ignore_index):
        raise InputError(f"ignore_index must be an integer label id (e.g. {IGNORE_INDEX}), got {ignore_index!r}")


def _check_labels(labels: Any, logits: torch.Tensor, form: str, ignore_index: int) -> None:
    """Labels must be an integer tensor shaped like ``logits[..., 0]`` with values in [0, V) or ignore_index."""
    if not isinstance(labels, torch.Tensor):
        raise InputError(f"labels must be an integer torch.Tensor of shape {form}, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise InputError(f"labels must be an integer torch.Tensor of shape {form}, got dtype {labels.dtype}")
    if labels.shape != logits.shape[:-1]:
        raise InputError(
            f"labels must have shape {form} = {tuple(logits.shape[:-1])} to match logits "
            f"{tuple(logits.shape)}, got {tuple(labels.shape)}"
        )
    if labels.device != logits.device:
        raise InputError(f"labels must be on the device of logits ({logits.device}), got {labels.device}")
    # Reading a value back is a host sync on an accelerator, paid every step; there an out-of-range
    # label fails in the gather kernel instead. On CPU the check is free, so it always runs.
    if labels.device.type == "cpu" and labels.numel():
        n_classes = logits.shape[-1]
        bad = (labels != ignore_index) & ((labels < 0) | (labels >= n_classes))
        if bool(bad.any()):
            value = int(labels[bad][0])
            raise InputError(
                f"labels must hold class ids in [0, {n_classes}) or ignore_index={ignore_index}, got {value}"
            )


# --------------------------------------------------------------------------- causal LM


def _chunks(logits2d: torch.Tensor, rows: torch.Tensor | None) -> Iterator[slice | torch.Tensor]:
    n_rows, vocab = logits2d.shape
    budget = _CHUNK_BYTES.get(logits2d.device.type, _DEFAULT_CHUNK_BYTES)
    step = max(1, budget // (4 * vocab))
    if rows is None:
        for start in range(0, n_rows, step):
            yield slice(start, min(start + step, n_rows))
    else:
        for start in range(0, rows.numel(), step):
            yield rows[start : start + step]


def _work_dtype(logits: torch.Tensor) -> torch.dtype:
    # Half precision is upcast (lse of bf16 in bf16 is off by ~1e-2); float64 is kept, never lowered.
    return torch.promote_types(logits.dtype, torch.float32)


class _TokenCrossEntropy(torch.autograd.Function):
    """Token cross-entropy, predicted-token probability, hit and margin, for the rows of a ``[R, V]`` logit matrix.

    Inputs: ``logits2d`` [R, V] any float dtype, ``targets`` [R] int64 (any valid class on
    ignored rows), ``mask`` [R] bool (rows that carry a label), ``rows`` [n] int64 row ids to
    compute, or None for all rows (no host sync to find them). Outputs [R]: nll float32
    (differentiable), confidence float32, hit bool and margin float32 (the target's logit minus
    the largest other logit, from the top two logits: no ``[R, V]`` copy); all 0 / False off the mask.
    """

    @staticmethod
    def forward(ctx, logits2d, targets, mask, rows):  # type: ignore[override]
        work = _work_dtype(logits2d)
        # Per-chunk results are concatenated once at the end: every extra small op per chunk is a
        # kernel launch on a GPU and a thread barrier on a busy CPU.
        parts = []
        for sel in _chunks(logits2d, rows):
            x = logits2d[sel].to(work)  # a view, not a copy, for float32 logits and slice chunks
            tgt = targets[sel]
            lse = torch.logsumexp(x, dim=-1)
            top2, idx2 = _top_two(x)
            pred = idx2[:, 0]
            hit = pred == tgt
            picked = x.gather(1, tgt[:, None]).squeeze(1)
            margin = picked - torch.where(hit, top2[:, 1], top2[:, 0])
            parts.append((lse, lse - picked, (top2[:, 0] - lse).exp(), hit, margin))
        columns = list(zip(*parts)) or [()] * 5
        dtypes = (work, work, work, torch.bool, work)
        lse, nll, conf, hit, margin = (_spread(c, rows, logits2d, d) for c, d in zip(columns, dtypes))
        off = ~mask
        nll = nll.to(torch.float32).masked_fill_(off, 0.0)
        conf = conf.to(torch.float32).masked_fill_(off, 0.0)
        hit = hit.masked_fill_(off, False)
        margin = margin.to(torch.float32).masked_fill_(off, 0.0)
        ctx.save_for_backward(logits2d, targets, mask, lse, rows)
        ctx.mark_non_differentiable(conf, hit, margin)
        return nll, conf, hit, margin

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_nll, grad_conf, grad_hit, grad_margin):  # type: ignore[override]
        logits2d, targets, mask, lse, rows = ctx.saved_tensors
        work = _work_dtype(logits2d)
        grad = torch.zeros_like(logits2d, memory_format=torch.contiguous_format)
        scale = (grad_nll.to(work) * mask)[:, None]  # rows without a label get no gradient
        neg_scale = -scale
        targets = targets[:, None]
        for sel in _chunks(logits2d, rows):
            # d nll / d x = (softmax(x) - onehot(target)) * scale, softmax rebuilt from the saved lse.
            p = logits2d[sel].to(work).sub(lse[sel, None]).exp_().mul_(scale[sel])
            grad[sel] = p.scatter_add_(1, targets[sel], neg_scale[sel]).to(grad.dtype)
        return grad, None, None, None


def _top_two(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The two largest values of each row of ``x`` [R, C] and their columns, [R, 2] each. With a
    single class the second is -inf (the margin is then +inf: nothing competes)."""
    if x.shape[-1] >= 2:
        return x.topk(2, dim=-1)
    top, idx = x.max(dim=-1, keepdim=True)
    return torch.cat([top, torch.full_like(top, float("-inf"))], 1), torch.cat([idx, idx], 1)


def _spread(
    parts: Sequence[torch.Tensor], rows: torch.Tensor | None, logits2d: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """Chunk results -> one [R] tensor: in order when every row was computed, else placed at ``rows``."""
    flat = torch.cat(list(parts)) if parts else torch.empty(0, dtype=dtype, device=logits2d.device)
    if rows is None:
        return flat
    out = torch.zeros(logits2d.shape[0], dtype=dtype, device=logits2d.device)
    out[rows] = flat
    return out


def causal_lm_signals(
    logits: torch.Tensor,
    labels: torch.Tensor,
    *,
    ignore_index: int = IGNORE_INDEX,
    correct_loss_below: float = 0.5,
    token_accuracy: float | None = None,
) -> SampleSignals:
    """Signals of a causal LM batch: ``logits`` [B, T, V] (any float dtype), ``labels`` int [B, T].

    Position ``t`` predicts ``labels[:, t + 1]`` (the same shift as Hugging Face's loss); labels
    equal to ``ignore_index`` (prompt, padding) are skipped. Per sample: loss = mean token
    cross-entropy (float32), confidence = mean probability of the argmax token, correct = loss <
    ``correct_loss_below``, or, with ``token_accuracy`` set, share of argmax hits >= it, margin =
    mean over label tokens of the target's logit minus the largest other logit.
    """
    _check_logits(logits, 3, "[B, T, V]")
    _check_ignore_index(ignore_index)
    _check_labels(labels, logits, "[B, T]", ignore_index)
    # Wider than GEKOSettings / GEKOTracker (which refuse thresholds that make every sample correct,
    # or none): the pure function computes the edge cases too.
    check_number(correct_loss_below, "correct_loss_below", what="a finite number")
    if token_accuracy is not None:
        check_number(token_accuracy, "token_accuracy", 0, 1, what="None or a share")
    batch, seq, vocab = logits.shape
    targets = torch.full_like(labels, ignore_index, dtype=torch.long)
    targets[:, :-1] = labels[:, 1:]
    mask = targets != ignore_index
    targets = targets.masked_fill(~mask, 0)
    # On CPU, finding the labelled rows is free and skips prompt and padding rows entirely; on an
    # accelerator it would be a host sync, so there every row is computed and masked instead.
    rows = None
    if logits.device.type == "cpu":
        rows = mask.view(-1).nonzero().squeeze(1)
        # Selecting rows copies them (forward and backward); it only pays off when most rows are
        # prompt or padding. Otherwise computing every row on views is faster.
        if rows.numel() * 2 > mask.numel():
            rows = None
    # reshape is a view for the usual contiguous logits; a sliced, strided input is copied once.
    nll, conf, hit, tok_margin = _TokenCrossEntropy.apply(logits.reshape(batch * seq, vocab), targets.view(-1), mask.view(-1), rows)

    count = mask.sum(dim=1)
    denom = count.clamp(min=1).to(torch.float32)
    valid = count > 0
    loss = nll.view(batch, seq).sum(dim=1) / denom
    # A mean of values <= 1 can round a hair above 1; the store rejects confidences outside [0, 1].
    confidence = (conf.view(batch, seq).sum(dim=1) / denom).clamp_(0.0, 1.0)
    margin = tok_margin.view(batch, seq).sum(dim=1) / denom
    if token_accuracy is None:
        correct = (loss.detach() < correct_loss_below) & valid
    else:
        correct = (hit.view(batch, seq).sum(dim=1) / denom >= token_accuracy) & valid
    return SampleSignals(loss=loss, confidence=confidence, correct=correct, valid=valid, margin=margin)


# --------------------------------------------------------------------------- classification


def classification_signals(
    logits: torch.Tensor, labels: torch.Tensor, *, ignore_index: int = IGNORE_INDEX
) -> SampleSignals:
    """Signals of sequence classification: ``logits`` [B, C], ``labels`` int [B].

    loss = cross-entropy (float32), confidence = max softmax probability, correct = argmax ==
    label, margin = the label's logit minus the largest other logit. A label equal to
    ``ignore_index`` makes the sample invalid (loss 0, not observed).
    """
    _check_logits(logits, 2, "[B, C]")
    _check_ignore_index(ignore_index)
    _check_labels(labels, logits, "[B]", ignore_index)
    x = logits.float()  # [B, C] is small: the upcast copy costs nothing worth chunking
    valid = labels != ignore_index
    targets = labels.long().masked_fill(~valid, 0)
    lse = torch.logsumexp(x, dim=-1)
    nll = lse - x.gather(1, targets[:, None]).squeeze(1)
    loss = torch.where(valid, nll, torch.zeros_like(nll))
    with torch.no_grad():
        top2, idx2 = _top_two(x)
        hit = idx2[:, 0] == targets
        confidence = torch.where(valid, (top2[:, 0] - lse).exp(), torch.zeros_like(lse))
        correct = hit & valid
        margin = x.gather(1, targets[:, None]).squeeze(1) - torch.where(hit, top2[:, 1], top2[:, 0])
        margin = torch.where(valid, margin, torch.zeros_like(margin))
    return SampleSignals(loss=loss, confidence=confidence, correct=correct, valid=valid, margin=margin)


# --------------------------------------------------------------------------- dispatch

SignalsFn = Callable[..., SampleSignals]
SIGNALS: dict[TaskKind, SignalsFn] = {
    TaskKind.CAUSAL_LM: causal_lm_signals,
    TaskKind.CLASSIFICATION: classification_signals,
}
_TASK_BY_NDIM = {3: TaskKind.CAUSAL_LM, 2: TaskKind.CLASSIFICATION}


def model_logits(outputs: Any) -> torch.Tensor:
    """Logits of a model output: a tensor, a ModelOutput / dict with ``logits``, an object with a
    ``.logits`` tensor, or a ``return_dict=False`` tuple (logits first when no labels were given)."""
    if isinstance(outputs, torch.Tensor):
        return outputs
    if isinstance(outputs, Mapping) and isinstance(outputs.get("logits"), torch.Tensor):
        return outputs["logits"]
    logits = getattr(outputs, "logits", None)
    if isinstance(logits, torch.Tensor):
        return logits
    if isinstance(outputs, (tuple, list)) and outputs and isinstance(outputs[0], torch.Tensor):
        return outputs[0]
    raise InputError(
        f"the model returned a {type(outputs).__name__} without logits; GEKO needs the logits to compute "
        "per-sample losses: return a tensor, a dict / ModelOutput with 'logits' or an object with .logits"
    )


def lm_labels(batch: Mapping[str, Any], ignore_index: int = IGNORE_INDEX) -> torch.Tensor | None:
    """Plain language modelling without a ``labels`` field: every attended token is a target."""
    ids = batch.get("input_ids")
    if not isinstance(ids, torch.Tensor) or ids.ndim != 2:
        return None
    mask = batch.get("attention_mask")
    if isinstance(mask, torch.Tensor) and mask.shape == ids.shape:
        return ids.masked_fill(mask == 0, ignore_index)
    return ids


def batch_labels(batch: Mapping[str, Any], logits: torch.Tensor) -> torch.Tensor:
    """The labels a training or evaluation batch is scored against: its ``labels`` field, or for
    a causal LM without one (``logits`` ``[B, T, V]``) every attended token (:func:`lm_labels`)."""
    labels = batch.get("labels")
    if labels is None and getattr(logits, "ndim", None) == 3:
        labels = lm_labels(batch)
    if labels is None:
        raise InputError("the batch has no 'labels' field; classification datasets must provide one per item "
                         "('label' or 'labels')")
    return labels


def infer_task(logits: torch.Tensor) -> TaskKind:
    """The task a logit tensor belongs to: [B, T, V] is a causal LM, [B, C] a classifier."""
    ndim = getattr(logits, "ndim", None)
    if ndim not in _TASK_BY_NDIM:
        shape = tuple(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__
        raise InputError(
            f"logits must be a tensor of shape [B, T, V] (causal LM) or [B, C] (classification), got {shape}"
        )
    return _TASK_BY_NDIM[ndim]


@functools.cache
def _keyword_options(fn: SignalsFn) -> frozenset[str]:
    params = inspect.signature(fn).parameters.values()
    return frozenset(p.name for p in params if p.kind is inspect.Parameter.KEYWORD_ONLY)


def compute_signals(
    logits: torch.Tensor, labels: torch.Tensor, task: TaskKind | str = "auto", **options: Any
) -> SampleSignals:
    """Per-sample signals for ``task`` ("auto": chosen from ``logits.ndim``), via :data:`SIGNALS`.

    ``options`` go to the task's function (e.g. ``ignore_index``, ``token_accuracy``).
    """
    if task == "auto":
        kind = infer_task(logits)
    else:
        try:
            kind = TaskKind(task)
        except ValueError:
            choices = ", ".join(["auto", *(k.value for k in TaskKind)])
            raise InputError(f"task must be one of {choices}, got {task!r}") from None
    fn = SIGNALS[kind]
    unknown = sorted(set(options) - _keyword_options(fn))
    if unknown:
        allowed = ", ".join(sorted(_keyword_options(fn))) or "none"
        raise InputError(f"options {unknown} are not accepted for task {kind.value!r}; it accepts: {allowed}")
    return fn(logits, labels, **options)


# --------------------------------------------------------------------------- custom callables


def _custom_column(fn: Callable[[Any, Any], Any], arg: str, outputs: Any, batch: Any, signals: SampleSignals) -> torch.Tensor:
    name = f"{arg} ({getattr(fn, '__qualname__', type(fn).__name__)})"
    n = signals.loss.shape[0]
    value = fn(outputs, batch)
    try:
        value = torch.as_tensor(value)
    except (TypeError, ValueError, RuntimeError) as exc:
        raise InputError(f"{name} must return a Tensor of shape [B] = [{n}], got {type(value).__name__}") from exc
    if value.shape != (n,):
        raise InputError(f"{name} must return a Tensor of shape [B] = [{n}], got shape {tuple(value.shape)}")
    if value.is_complex():
        raise InputError(f"{name} must return a real Tensor of shape [B] = [{n}], got dtype {value.dtype}")
    return value.detach().to(signals.loss.device)


def apply_custom(
    signals: SampleSignals,
    outputs: Any,
    batch: Any,
    *,
    compute_confidence: Callable[[Any, Any], Any] | None = None,
    compute_correctness: Callable[[Any, Any], Any] | None = None,
) -> SampleSignals:
    """Replace confidence and/or correctness with the user's ``fn(outputs, batch) -> Tensor[B]``.

    Confidence must lie in [0, 1] (returned as float32); correctness is a bool or 0/1 tensor
    (returned as bool). Results are detached. Value checks run only on CPU tensors, for the same
    no-host-sync reason as the label check.
    """
    confidence, correct = signals.confidence, signals.correct
    if compute_confidence is not None:
        confidence = _custom_column(compute_confidence, "compute_confidence", outputs, batch, signals).to(torch.float32)
        if confidence.device.type == "cpu" and not bool(((confidence >= 0) & (confidence <= 1)).all()):
            raise InputError(f"compute_confidence must return values in [0, 1], got {confidence.tolist()[:8]}")
    if compute_correctness is not None:
        raw = _custom_column(compute_correctness, "compute_correctness", outputs, batch, signals)
        if raw.dtype != torch.bool:
            if raw.device.type == "cpu" and not bool(((raw == 0) | (raw == 1)).all()):
                raise InputError(f"compute_correctness must return a bool or 0/1 Tensor, got {raw.tolist()[:8]}")
            raw = raw != 0
        correct = raw
    return dataclasses.replace(signals, confidence=confidence, correct=correct)
