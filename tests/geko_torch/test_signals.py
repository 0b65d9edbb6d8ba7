"""Per-sample signals against a plain per-sample reference, real tiny HF models, and bad input."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from geko_state.errors import InputError
from geko_torch import signals as signals_module
from geko_torch.signals import (
    SIGNALS,
    SampleSignals,
    TaskKind,
    _TokenCrossEntropy,
    apply_custom,
    causal_lm_signals,
    classification_signals,
    compute_signals,
    infer_task,
)

IGN = -100


def reference_lm(logits: torch.Tensor, labels: torch.Tensor, threshold: float = 0.5, token_accuracy=None):
    """Straightforward per-sample loop: F.cross_entropy and softmax on each sample's label tokens."""
    losses, confs, corrects, valids, margins = [], [], [], [], []
    for b in range(logits.shape[0]):
        x = logits[b, :-1].float()
        y = labels[b, 1:]
        keep = y != IGN
        if not keep.any():
            losses.append(x.sum() * 0.0)
            confs.append(torch.tensor(0.0))
            corrects.append(False)
            valids.append(False)
            margins.append(torch.tensor(0.0))
            continue
        loss = F.cross_entropy(x[keep], y[keep])
        probs = x[keep].detach().softmax(-1)
        losses.append(loss)
        confs.append(probs.max(-1).values.mean())
        if token_accuracy is None:
            corrects.append(bool(loss < threshold))
        else:
            corrects.append(bool((probs.argmax(-1) == y[keep]).float().mean() >= token_accuracy))
        valids.append(True)
        margins.append(reference_margin(x[keep].detach(), y[keep]).mean())
    return torch.stack(losses), torch.stack(confs), torch.tensor(corrects), torch.tensor(valids), torch.stack(margins)


def reference_margin(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Label logit minus the largest other logit, per row of ``x`` [R, C], by masking the label out."""
    others = x.clone()
    others[torch.arange(len(y)), y] = float("-inf")
    return x[torch.arange(len(y)), y] - others.max(-1).values


def make_labels(layout: str, batch: int, seq: int, vocab: int, gen: torch.Generator) -> torch.Tensor:
    labels = torch.randint(0, vocab, (batch, seq), generator=gen)
    lengths = torch.randint(2, seq + 1, (batch,), generator=gen)
    for b in range(batch):
        n = int(lengths[b])
        if layout == "right_padding":
            labels[b, n:] = IGN
        elif layout == "left_padding":
            labels[b, : seq - n] = IGN
        elif layout == "prompt_masking":  # prompt of random length, then answer, then padding
            prompt = int(torch.randint(1, n, (1,), generator=gen))
            labels[b, :prompt] = IGN
            labels[b, n:] = IGN
    if layout == "no_labels":
        labels[1] = IGN
        labels[3, 1:] = IGN  # only the first position's label exists, and no position predicts it
    return labels


def check_against_reference(logits, labels, atol=1e-5, **options):
    leaf = logits.detach().requires_grad_(True)
    ours = causal_lm_signals(leaf, labels, **options)
    ours.loss.sum().backward()
    ref_leaf = logits.detach().requires_grad_(True)
    ref = reference_lm(
        ref_leaf, labels, options.get("correct_loss_below", 0.5), options.get("token_accuracy")
    )
    ref[0].sum().backward()

    assert ours.loss.dtype == torch.float32 and ours.loss.requires_grad
    assert ours.confidence.dtype == torch.float32 and not ours.confidence.requires_grad
    assert ours.correct.dtype == torch.bool and ours.valid.dtype == torch.bool
    torch.testing.assert_close(ours.loss.detach(), ref[0].detach(), atol=atol, rtol=1e-5)
    torch.testing.assert_close(ours.confidence, ref[1].float(), atol=atol, rtol=1e-5)
    assert torch.equal(ours.valid, ref[3])
    assert torch.equal(ours.correct, ref[2])
    assert ours.margin.dtype == torch.float32 and not ours.margin.requires_grad
    torch.testing.assert_close(ours.margin, ref[4].float(), atol=atol * 10, rtol=1e-4)
    assert leaf.grad.dtype == logits.dtype
    torch.testing.assert_close(leaf.grad.float(), ref_leaf.grad.float(), atol=atol, rtol=1e-3)
    return ours


@pytest.mark.parametrize("layout", ["right_padding", "left_padding", "prompt_masking", "no_labels"])
def test_causal_lm_matches_reference(layout):
    gen = torch.Generator().manual_seed(1)
    labels = make_labels(layout, 5, 9, 13, gen)
    logits = torch.randn(5, 9, 13, generator=gen) * 3
    ours = check_against_reference(logits, labels)
    if layout == "no_labels":
        assert not ours.valid[1] and not ours.valid[3]
        assert ours.loss[1] == 0 and ours.confidence[1] == 0 and not ours.correct[1]


def test_correct_threshold_uses_the_loss():
    gen = torch.Generator().manual_seed(2)
    labels = make_labels("right_padding", 16, 6, 5, gen)
    logits = torch.randn(16, 6, 5, generator=gen)
    # Push each sample's target logits up by its own margin: losses from ~1.6 down to ~0.01.
    margin = torch.linspace(0.0, 6.0, 16)[:, None, None].expand(16, 6, 1)
    logits.scatter_add_(2, labels.roll(-1, 1).clamp(min=0)[..., None], margin.contiguous())
    ours = check_against_reference(logits, labels, correct_loss_below=0.3)
    assert ours.correct.any() and not ours.correct.all()


@pytest.mark.parametrize("threshold", [0.0, 0.5, 1.0])
def test_token_accuracy_option(threshold):
    gen = torch.Generator().manual_seed(3)
    labels = make_labels("prompt_masking", 12, 8, 4, gen)
    logits = torch.randn(12, 8, 4, generator=gen)
    ours = check_against_reference(logits, labels, token_accuracy=threshold)
    if threshold == 0.0:
        assert torch.equal(ours.correct, ours.valid)


def test_bfloat16_logits():
    gen = torch.Generator().manual_seed(4)
    labels = make_labels("prompt_masking", 6, 10, 50, gen)
    logits = (torch.randn(6, 10, 50, generator=gen) * 4).to(torch.bfloat16)
    # Both sides upcast the same bf16 values; the gradient is rounded to bf16 at the end.
    check_against_reference(logits, labels, atol=1e-2)
    ours = causal_lm_signals(logits, labels)
    assert ours.loss.dtype == torch.float32 and ours.confidence.dtype == torch.float32


def test_float16_and_float64_logits():
    gen = torch.Generator().manual_seed(5)
    labels = make_labels("right_padding", 3, 7, 9, gen)
    logits = torch.randn(3, 7, 9, generator=gen, dtype=torch.float64)
    check_against_reference(logits, labels)
    check_against_reference(logits.half(), labels, atol=1e-2)


def test_only_logits_are_saved_for_backward():
    """No [B, T, V] copy (softmax, log-softmax or float32 upcast) stays alive until backward."""
    gen = torch.Generator().manual_seed(6)
    for dtype in (torch.float32, torch.bfloat16):
        logits = torch.randn(4, 8, 64, generator=gen).to(dtype).requires_grad_(True)
        labels = make_labels("prompt_masking", 4, 8, 64, gen)
        saved: list[torch.Tensor] = []

        def pack(t: torch.Tensor, saved: list[torch.Tensor] = saved) -> torch.Tensor:
            saved.append(t)
            return t

        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
            causal_lm_signals(logits, labels)
        big = [t for t in saved if t.numel() >= 64]
        assert big and all(t.data_ptr() == logits.data_ptr() and t.dtype == dtype for t in big)


@pytest.mark.parametrize("chunk_rows", [1, 7, 1000])
def test_all_rows_path_matches_selected_rows(monkeypatch, chunk_rows):
    """Accelerators compute every row (no host sync to find labelled ones): same results."""
    monkeypatch.setitem(signals_module._CHUNK_BYTES, "cpu", 4 * 17 * chunk_rows)
    gen = torch.Generator().manual_seed(7)
    rows_total, vocab = 40, 17
    logits = torch.randn(rows_total, vocab, generator=gen, dtype=torch.float64)
    targets = torch.randint(0, vocab, (rows_total,), generator=gen)
    mask = torch.rand(rows_total, generator=gen) < 0.6
    outs, grads = [], []
    for rows in (mask.nonzero().squeeze(1), None):
        leaf = logits.clone().requires_grad_(True)
        nll, conf, hit, margin = _TokenCrossEntropy.apply(leaf, targets, mask, rows)
        (nll * torch.arange(rows_total)).sum().backward()
        outs.append((nll.detach(), conf, hit, margin))
        grads.append(leaf.grad)
    for a, b in zip(outs[0], outs[1]):
        assert torch.equal(a, b)
    torch.testing.assert_close(grads[0], grads[1])
    assert grads[0][~mask].abs().sum() == 0


def test_chunking_over_rows(monkeypatch):
    monkeypatch.setitem(signals_module._CHUNK_BYTES, "cpu", 4 * 13 * 3)  # 3 rows per chunk
    gen = torch.Generator().manual_seed(8)
    labels = make_labels("left_padding", 4, 9, 13, gen)
    check_against_reference(torch.randn(4, 9, 13, generator=gen), labels)


def test_non_contiguous_logits_and_int32_labels():
    gen = torch.Generator().manual_seed(9)
    labels = make_labels("right_padding", 3, 6, 8, gen)
    logits = torch.randn(8, 6, 3, generator=gen).permute(2, 1, 0)  # [3, 6, 8], strided
    assert not logits.is_contiguous()
    ours = causal_lm_signals(logits, labels.to(torch.int32))
    ref = reference_lm(logits, labels)
    torch.testing.assert_close(ours.loss, ref[0])


def test_empty_batch_and_single_position():
    empty = causal_lm_signals(torch.zeros(0, 5, 7), torch.zeros(0, 5, dtype=torch.long))
    assert all(t.shape == (0,) for t in (empty.loss, empty.confidence, empty.correct, empty.valid))
    one = causal_lm_signals(torch.randn(2, 1, 7, requires_grad=True), torch.ones(2, 1, dtype=torch.long))
    assert not one.valid.any() and torch.equal(one.loss.detach(), torch.zeros(2))
    one.loss.sum().backward()
    cls = classification_signals(torch.zeros(0, 3), torch.zeros(0, dtype=torch.long))
    assert cls.loss.shape == (0,)


def test_classification_matches_reference():
    gen = torch.Generator().manual_seed(10)
    logits = (torch.randn(20, 4, generator=gen) * 2).requires_grad_(True)
    labels = torch.randint(0, 4, (20,), generator=gen)
    labels[3] = IGN
    ours = classification_signals(logits, labels)
    ours.loss.sum().backward()
    grad = logits.grad.clone()
    logits.grad = None
    ref_loss = F.cross_entropy(logits, labels, reduction="none")  # 0 where ignored
    ref_loss.sum().backward()
    probs = logits.detach().softmax(-1)
    valid = labels != IGN
    torch.testing.assert_close(ours.loss.detach(), ref_loss.detach())
    torch.testing.assert_close(grad, logits.grad)
    torch.testing.assert_close(ours.confidence, torch.where(valid, probs.max(-1).values, 0.0))
    assert torch.equal(ours.correct, (probs.argmax(-1) == labels) & valid)
    assert torch.equal(ours.valid, valid)
    ref_margin = reference_margin(logits.detach(), labels.clamp(min=0))
    torch.testing.assert_close(ours.margin, torch.where(valid, ref_margin, 0.0))
    assert (ours.margin[ours.correct] >= 0).all() and (ours.margin[valid & ~ours.correct] <= 0).all()


def test_tiny_gpt2_loss_matches_hf():
    import transformers
    torch.manual_seed(11)
    config = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=101, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    model = transformers.GPT2LMHeadModel(config).eval()
    input_ids = torch.randint(0, 101, (4, 20))
    labels = input_ids.clone()
    labels[:, :6] = IGN  # the same prompt length everywhere, so every sample has 13 label tokens
    out = model(input_ids=input_ids, labels=labels)
    ours = causal_lm_signals(out.logits, labels)
    assert ours.valid.all()
    torch.testing.assert_close(ours.loss.mean(), out.loss, atol=1e-5, rtol=0)
    # Gradient to the parameters agrees too (mean of per-sample means == HF token mean here).
    grads_ours = torch.autograd.grad(ours.loss.mean(), model.lm_head.weight, retain_graph=True)[0]
    grads_hf = torch.autograd.grad(out.loss, model.lm_head.weight)[0]
    torch.testing.assert_close(grads_ours, grads_hf, atol=1e-6, rtol=1e-4)


def test_tiny_bert_classifier_loss_matches_hf():
    import transformers
    torch.manual_seed(12)
    config = transformers.BertConfig(
        vocab_size=101, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=64, num_labels=3,
    )
    model = transformers.BertForSequenceClassification(config).eval()
    input_ids = torch.randint(0, 101, (6, 12))
    labels = torch.randint(0, 3, (6,))
    out = model(input_ids=input_ids, labels=labels)
    ours = compute_signals(out.logits, labels)
    torch.testing.assert_close(ours.loss.mean(), out.loss, atol=1e-6, rtol=0)


def test_dispatch():
    gen = torch.Generator().manual_seed(13)
    lm_logits, lm_labels = torch.randn(2, 4, 5, generator=gen), torch.randint(0, 5, (2, 4), generator=gen)
    cls_logits, cls_labels = torch.randn(3, 4, generator=gen), torch.randint(0, 4, (3,), generator=gen)
    assert infer_task(lm_logits) is TaskKind.CAUSAL_LM and infer_task(cls_logits) is TaskKind.CLASSIFICATION
    assert set(SIGNALS) == set(TaskKind)
    for task in ("auto", "causal_lm", TaskKind.CAUSAL_LM):
        got = compute_signals(lm_logits, lm_labels, task, token_accuracy=0.5)
        torch.testing.assert_close(got.loss, causal_lm_signals(lm_logits, lm_labels).loss)
    got = compute_signals(cls_logits, cls_labels, "classification")
    torch.testing.assert_close(got.loss, classification_signals(cls_logits, cls_labels).loss)
    with pytest.raises(InputError, match="task must be one of"):
        compute_signals(lm_logits, lm_labels, "regression")
    with pytest.raises(InputError, match="token_accuracy"):
        compute_signals(cls_logits, cls_labels, token_accuracy=0.5)
    with pytest.raises(InputError, match=r"logits must be a tensor of shape \[B, T, V\]"):
        infer_task(torch.zeros(2))


@pytest.mark.parametrize(
    ("logits", "labels", "match"),
    [
        ([[[0.0]]], torch.zeros(1, 1, dtype=torch.long), "logits must be a floating-point torch.Tensor"),
        (torch.zeros(1, 2, 3, dtype=torch.long), torch.zeros(1, 2, dtype=torch.long), "logits must be a floating"),
        (torch.zeros(2, 3), torch.zeros(2, dtype=torch.long), r"logits must have shape \[B, T, V\]"),
        (torch.zeros(2, 3, 0), torch.zeros(2, 3, dtype=torch.long), "logits must have shape .* at least one class"),
        (torch.zeros(2, 3, 4), [[0, 1, 2]], "labels must be an integer torch.Tensor"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 3), "labels must be an integer .* got dtype torch.float32"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.bool), "labels must be an integer"),
        (torch.zeros(2, 3, 4), torch.zeros(2, 4, dtype=torch.long), r"labels must have shape \[B, T\] = \(2, 3\)"),
        (torch.zeros(2, 3, 4), torch.full((2, 3), 4), r"labels must hold class ids in \[0, 4\).* got 4"),
        (torch.zeros(2, 3, 4), torch.full((2, 3), -1), "labels must hold class ids .* got -1"),
    ],
)
def test_causal_lm_validation(logits, labels, match):
    with pytest.raises(InputError, match=match):
        causal_lm_signals(logits, labels)


def test_option_and_classification_validation():
    logits, labels = torch.zeros(2, 3, 4), torch.zeros(2, 3, dtype=torch.long)
    with pytest.raises(InputError, match="token_accuracy must be"):
        causal_lm_signals(logits, labels, token_accuracy=1.5)
    with pytest.raises(InputError, match="correct_loss_below must be"):
        causal_lm_signals(logits, labels, correct_loss_below=float("nan"))
    # A custom ignore_index is honoured, and -100 is then out of range.
    assert not causal_lm_signals(logits, torch.full((2, 3), -1), ignore_index=-1).valid.any()
    with pytest.raises(InputError, match="labels must hold class ids"):
        causal_lm_signals(logits, torch.full((2, 3), IGN), ignore_index=-1)
    with pytest.raises(InputError, match=r"logits must have shape \[B, C\]"):
        classification_signals(torch.zeros(2, 3, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(InputError, match=r"labels must have shape \[B\]"):
        classification_signals(torch.zeros(2, 3), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(InputError, match=r"labels must hold class ids in \[0, 3\)"):
        classification_signals(torch.zeros(2, 3), torch.tensor([0, 3]))


def _signals(n: int = 3) -> SampleSignals:
    logits = torch.randn(n, 4, requires_grad=True)
    return classification_signals(logits, torch.zeros(n, dtype=torch.long))


def test_apply_custom_good_callables():
    signals = _signals()
    batch = {"score": torch.tensor([0.2, 0.9, 1.0], dtype=torch.float64, requires_grad=True)}
    out = apply_custom(
        signals, None, batch,
        compute_confidence=lambda outputs, b: b["score"],
        compute_correctness=lambda outputs, b: torch.tensor([1, 0, 1]),
    )
    assert out.confidence.dtype == torch.float32 and not out.confidence.requires_grad
    torch.testing.assert_close(out.confidence, torch.tensor([0.2, 0.9, 1.0]))
    assert torch.equal(out.correct, torch.tensor([True, False, True]))
    assert out.loss is signals.loss and out.valid is signals.valid
    same = apply_custom(signals, None, batch, compute_correctness=lambda o, b: [True, True, False])
    assert torch.equal(same.correct, torch.tensor([True, True, False]))
    assert same.confidence is signals.confidence
    assert apply_custom(signals, None, batch).correct is signals.correct


def my_bad_confidence(outputs, batch):
    return torch.ones(3, 2)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"compute_confidence": my_bad_confidence}, r"compute_confidence \(my_bad_confidence\) .*shape \[B\] = \[3\]"),
        ({"compute_correctness": lambda o, b: torch.ones(4, dtype=torch.bool)}, r"compute_correctness .*\[B\] = \[3\]"),
        ({"compute_confidence": lambda o, b: "high"}, r"compute_confidence .*must return a Tensor"),
        ({"compute_confidence": lambda o, b: torch.tensor([0.1, 1.5, 0.0])}, r"compute_confidence .*\[0, 1\]"),
        ({"compute_confidence": lambda o, b: torch.tensor([0.1, float("nan"), 0.0])}, r"compute_confidence"),
        ({"compute_correctness": lambda o, b: torch.tensor([0, 2, 1])}, r"compute_correctness .*0/1"),
    ],
)
def test_apply_custom_bad_callables(kwargs, match):
    with pytest.raises(InputError, match=match):
        apply_custom(_signals(), None, {}, **kwargs)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    batch=st.integers(1, 4),
    seq=st.integers(1, 7),
    vocab=st.integers(1, 9),
    keep=st.floats(0.0, 1.0),
    seed=st.integers(0, 2**16),
)
def test_property_random_shapes_and_masks(batch, seq, vocab, keep, seed):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, vocab, (batch, seq), generator=gen)
    labels[torch.rand(batch, seq, generator=gen) >= keep] = IGN
    logits = torch.randn(batch, seq, vocab, generator=gen) * 3
    ours = check_against_reference(logits, labels)
    assert ((ours.confidence >= 0) & (ours.confidence <= 1)).all()
    assert (ours.loss.detach() >= 0).all()
    assert not (ours.correct & ~ours.valid).any()
