"""Loader tests on small slices of the real tasks (the models and WordNet come from package registries)."""
import copy

import numpy as np
import pytest
import torch

from geko_torch.data import PadCollator
from geko_torch.frontier import (
    FRONTIER_TASKS,
    TaskSize,
    build_frontier_task,
    cache_lower_layers,
    definition_prompt,
    keep_top_layers,
    minilm_dir,
    wordnet_file,
)
from geko_torch.tasks import SampleKind

from .conftest import need

TINY = TaskSize(40, 20, epochs=1, batch_size=8, learning_rate=1e-4, max_length=16)


def test_supersense_slice_flips_only_training_labels():
    need(lambda: wordnet_file("data.noun"))
    need(minilm_dir)
    clean = build_frontier_task("wordnet-supersense", size=TINY, noise=0.0)
    noisy = build_frontier_task("wordnet-supersense", size=TINY, noise=0.2)
    assert len(noisy.train) == 40 and len(noisy.eval) == 20
    corrupted = np.flatnonzero(noisy.kinds == SampleKind.MISLABELED)
    assert corrupted.size == 8 and not (clean.kinds == SampleKind.MISLABELED).any()
    y0 = np.array([int(it["labels"]) for it in clean.train])
    y1 = np.array([int(it["labels"]) for it in noisy.train])
    assert np.array_equal(np.flatnonzero(y0 != y1), corrupted)  # same split, only the flips differ
    assert [int(it["labels"]) for it in clean.eval] == [int(it["labels"]) for it in noisy.eval]
    assert all(len(it["input_ids"]) <= TINY.max_length for it in noisy.train)
    with torch.no_grad():
        logits = noisy.model(**{k: v for k, v in PadCollator()(noisy.train[:4]).items() if k != "labels"}).logits
    assert logits.shape == (4, 26)
    assert noisy.metric.key == "eval_accuracy" and noisy.task == "classification"


def test_top_layers_on_cached_inputs_give_the_full_models_loss(smollm2):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    import polars as pl

    from geko_torch.text_data import tokenize_chat

    tok = AutoTokenizer.from_pretrained(smollm2)
    chats = [[{"role": "user", "content": definition_prompt(w)}, {"role": "assistant", "content": d}]
             for w, d in (("dog", "a member of the genus Canis"), ("oak", "a tree of the genus Quercus"))]
    data = tokenize_chat(pl.DataFrame({"messages": chats}), tok, messages_field="messages", progress=False)
    items = [dict(data[i]) for i in range(len(data))]
    full = AutoModelForCausalLM.from_pretrained(smollm2).eval()
    cached = copy.deepcopy(items)
    cache_lower_layers(full, cached, cut=len(full.model.layers) - 2)
    top = keep_top_layers(copy.deepcopy(full), 2)
    assert [n for n, p in top.named_parameters() if p.requires_grad][0].startswith("model.layers.0.")
    with torch.no_grad():
        a = full(**PadCollator(pad_token_id=tok.pad_token_id)(items))
        b = top(**PadCollator()(cached))
    torch.testing.assert_close(b.loss, a.loss)
    labels = items[0]["labels"]
    assert (labels[:10] == -100).all() and (labels != -100).any()  # the prompt is masked


def test_definitions_slice_shuffles_responses_and_keeps_eval_clean(smollm2):
    need(lambda: wordnet_file("data.noun"))
    size = TaskSize(6, 3, epochs=1, batch_size=4, learning_rate=1e-4, max_length=8)
    d = build_frontier_task("wordnet-definitions", size=size, noise=0.5)
    assert len(d.train) == 6 and len(d.eval) == 3
    assert (d.kinds == SampleKind.MISLABELED).sum() == 3
    item = d.train[0]
    assert set(item) == {"inputs_embeds", "attention_mask", "labels"} and item["inputs_embeds"].shape[1] == 576
    trainable = sum(p.numel() for p in d.model.parameters() if p.requires_grad)
    assert len(d.model.model.layers) == 2  # the 28 below were run once, into inputs_embeds
    assert trainable == sum(p.numel() for p in [*d.model.model.layers.parameters(), *d.model.model.norm.parameters()])
    out = d.model(**PadCollator()(d.train[:2]))
    assert torch.isfinite(out.loss) and d.metric.key == "eval_loss"


def test_unknown_task_names_the_registered_ones():
    from geko_state.errors import InputError

    with pytest.raises(InputError, match="wordnet-supersense"):
        build_frontier_task("imagenet")
    assert set(FRONTIER_TASKS) == {"wordnet-supersense", "wordnet-definitions"}
