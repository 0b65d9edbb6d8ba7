"""Chat data: a ``messages`` column rendered with the tokenizer's chat template, assistant turns trained."""
from __future__ import annotations

import json

import polars as pl
import pytest
import torch

from geko_state import read_summary
from geko_state.errors import InputError
from geko_torch import cli
from geko_torch.text_data import IGNORE_INDEX, tokenize_chat

# ChatML, as SmolLM2-Instruct's tokenizer renders it (system prompt left out).
CHATML = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
          "'<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")
SPECIALS = ["[UNK]", "<|im_start|>", "<|im_end|>", "[PAD]"]


def _conversations(n: int = 12) -> list[list[dict]]:
    out = []
    for i in range(n):
        a, b = i % 7, (3 * i) % 5
        out.append([{"role": "system", "content": "you add numbers"},
                    {"role": "user", "content": f"add {a} and {b}"},
                    {"role": "assistant", "content": f"{a + b} done"},
                    {"role": "user", "content": "and twice that"},
                    {"role": "assistant", "content": f"{2 * (a + b)} done"}])
    return out


def _tokenizer(template: str | None = CHATML):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    words = [m["content"] + " " + m["role"] for c in _conversations(40) for m in c] + [str(i) for i in range(20)]
    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(words, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="<|im_end|>",
                                   pad_token="[PAD]", additional_special_tokens=["<|im_start|>"])
    fast.chat_template = template
    return fast


def test_only_assistant_turns_are_trained():
    tok = _tokenizer()
    table = pl.DataFrame({"messages": _conversations(3)})
    ds = tokenize_chat(table, tok, messages_field="messages", max_length=128)
    assert len(ds) == 3
    item = ds[0]
    ids, labels = item["input_ids"].tolist(), item["labels"].tolist()
    trained = tok.decode([t for t, lab in zip(ids, labels) if lab != IGNORE_INDEX])
    masked = tok.decode([t for t, lab in zip(ids, labels) if lab == IGNORE_INDEX])
    # both assistant answers (with the turn's end marker, so the model learns to stop) and nothing else
    assert trained.split() == ["0", "done", "<|im_end|>", "0", "done", "<|im_end|>"]
    for word in ("system", "user", "add", "twice", "assistant"):
        assert word in masked.split()
    assert all(lab in (IGNORE_INDEX, t) for t, lab in zip(ids, labels))


def test_bad_conversations_and_a_tokenizer_without_template_are_refused():
    good = pl.DataFrame({"messages": _conversations(2)})
    with pytest.raises(InputError, match="no chat template"):
        tokenize_chat(good, _tokenizer(None), messages_field="messages")
    no_answer = pl.DataFrame({"messages": [[{"role": "user", "content": "hi"}], *_conversations(1)]})
    with pytest.raises(InputError, match=r"row 1 \(sample id 0\) of column 'messages': no assistant message"):
        tokenize_chat(no_answer, _tokenizer(), messages_field="messages")
    bad = pl.DataFrame({"messages": [*_conversations(1), [{"role": "user"}]]})
    with pytest.raises(InputError, match=r"row 2 \(sample id 1\) of column 'messages': every message needs"):
        tokenize_chat(bad, _tokenizer(), messages_field="messages")
    with pytest.raises(InputError, match="no column for messages_field 'nope'"):
        tokenize_chat(good, _tokenizer(), messages_field="nope")


def test_geko_train_on_a_messages_column(tmp_path, capsys):
    from transformers import GPT2Config, GPT2LMHeadModel

    tok = _tokenizer()
    torch.manual_seed(0)
    model_dir = tmp_path / "model"
    GPT2LMHeadModel(GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tok), n_positions=64,
                               eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    data = tmp_path / "chat.jsonl"
    data.write_text("".join(json.dumps({"messages": c}) + "\n" for c in _conversations(12)))
    out = tmp_path / "run"
    code = cli.main(["train", str(model_dir), str(data), "--messages-field", "messages", "--epochs", "2",
                     "--batch-size", "4", "--workers", "0", "--no-progress", "--output-dir", str(out)])
    err = capsys.readouterr().err
    assert code == 0, err
    assert read_summary(out)["epoch"].to_list() == [1, 2]
    code = cli.main(["train", str(model_dir), str(data), "--messages-field", "messages", "--text-field", "x",
                     "--output-dir", str(tmp_path / "other")])
    assert code == 2 and "--messages-field trains on conversations alone" in capsys.readouterr().err
