"""LoRA through peft on tiny GPT-2 / Llama / BERT models built from configs (no hub access)."""
from __future__ import annotations

import importlib.util
import logging
import subprocess
import sys
import warnings

import peft
import pytest
import torch
import transformers

from geko_state.errors import ConfigError, GekoError, InputError
from geko_state.plots import MissingDependencyError
from geko_torch import lora as L
from geko_torch.lora import (
    ParamCounts,
    apply_lora,
    count_parameters,
    default_target_modules,
    is_peft_available,
)

# peft 0.21 calls a transformers 5 method that is deprecated; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:`is_gradient_checkpointing` is deprecated:FutureWarning")

VOCAB = 101


def tiny_gpt2() -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.GPT2Config(
        n_layer=2, n_head=2, n_embd=32, vocab_size=VOCAB, n_positions=64, bos_token_id=0, eos_token_id=0
    )
    return transformers.GPT2LMHeadModel(cfg)


def llama_config() -> transformers.LlamaConfig:
    return transformers.LlamaConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=2, vocab_size=VOCAB, max_position_embeddings=64,
        bos_token_id=0, eos_token_id=0, pad_token_id=0,
    )


def tiny_llama() -> torch.nn.Module:
    torch.manual_seed(0)
    return transformers.LlamaForCausalLM(llama_config())


def tiny_bert_cls(num_labels: int = 3) -> torch.nn.Module:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(
        hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        vocab_size=VOCAB, max_position_embeddings=64, num_labels=num_labels, pad_token_id=0,
    )
    return transformers.BertForSequenceClassification(cfg)


def input_ids(batch: int = 2, seq: int = 8) -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return torch.randint(1, VOCAB, (batch, seq), generator=g)


def manual_lora_count(model: torch.nn.Module, leaf_names: set[str], r: int) -> int:
    """r * (fan_in + fan_out) for every targeted Linear/Conv1D of the *base* model."""
    conv1d = transformers.pytorch_utils.Conv1D
    n = 0
    for name, m in model.named_modules():
        if name.rsplit(".", 1)[-1] not in leaf_names:
            continue
        if isinstance(m, conv1d):  # weight is (in, out)
            fan_in, fan_out = m.weight.shape
        else:
            fan_out, fan_in = m.weight.shape
        n += r * (fan_in + fan_out)
    return n


def trainable_names(model: torch.nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


# ---------------------------------------------------------------- availability / lazy import


def test_peft_is_available_here():
    assert is_peft_available() is True


def test_import_is_cheap():
    code = "import sys, geko_torch.lora; assert 'peft' not in sys.modules, 'peft imported eagerly'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_peft_find_spec_none(monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    assert is_peft_available() is False
    with pytest.raises(MissingDependencyError, match="pip install peft") as ei:
        apply_lora(tiny_gpt2())
    assert isinstance(ei.value, GekoError) and isinstance(ei.value, ImportError)


def test_missing_peft_blocked_import(monkeypatch):
    # sys.modules[name] = None is how Python blocks an import; find_spec raises ValueError for it.
    monkeypatch.setitem(sys.modules, "peft", None)
    assert is_peft_available() is False
    with pytest.raises(MissingDependencyError, match="pip install peft"):
        apply_lora(tiny_gpt2())


def test_peft_present_but_broken(monkeypatch):
    monkeypatch.setattr(L, "is_peft_available", lambda: True)
    monkeypatch.setitem(sys.modules, "peft", None)
    with pytest.raises(MissingDependencyError, match="pip install peft.*import failed"):
        apply_lora(tiny_gpt2())


# ---------------------------------------------------------------- ParamCounts / count_parameters


def test_format_matches_original_block():
    counts = ParamCounts(trainable=4_194_304, total=1_311_473_664)
    assert counts.frozen == 1_307_279_360
    assert counts.format() == (
        "[GEKO] LoRA applied\n"
        "  Trainable params : 4,194,304 (0.32%)\n"
        "  Total params     : 1,311,473,664\n"
        "  Frozen params    : 1,307,279,360"
    )


def test_count_parameters_known_model():
    model = torch.nn.Sequential(torch.nn.Linear(10, 100), torch.nn.Linear(100, 20))  # 1,100 + 2,020
    model[0].requires_grad_(False)
    counts = count_parameters(model)
    assert counts == ParamCounts(trainable=2_020, total=3_120)
    assert counts.trainable_fraction == pytest.approx(2_020 / 3_120)
    assert counts.format() == (
        "[GEKO] LoRA applied\n"
        "  Trainable params : 2,020 (64.74%)\n"
        "  Total params     : 3,120\n"
        "  Frozen params    : 1,100"
    )


def test_count_parameters_counts_tied_weights_once():
    model = tiny_gpt2()
    assert model.lm_head.weight is model.transformer.wte.weight
    unique = {id(p): p.numel() for p in model.parameters()}
    counts = count_parameters(model)
    assert counts.total == sum(unique.values()) == counts.trainable


def test_param_counts_edge_cases():
    assert ParamCounts(0, 0).trainable_fraction == 0.0
    assert "(0.00%)" in ParamCounts(0, 0).format()
    with pytest.raises(InputError):
        ParamCounts(trainable=5, total=4)
    with pytest.raises(InputError):
        ParamCounts(trainable=-1, total=4)


# ---------------------------------------------------------------- GPT-2 (Conv1D)


def test_gpt2_defaults(recwarn, capsys, caplog):
    model = tiny_gpt2()
    base_total = count_parameters(model).total
    expected_lora = manual_lora_count(model, {"c_attn"}, r=8)
    assert expected_lora == 2 * 8 * (32 + 96)

    with caplog.at_level(logging.INFO, logger="geko_torch"):
        pm = apply_lora(model)

    assert isinstance(pm, peft.PeftModelForCausalLM)
    cfg = pm.peft_config["default"]
    assert cfg.target_modules == {"c_attn"} and cfg.r == 8 and cfg.lora_alpha == 16 and cfg.lora_dropout == 0.05
    assert cfg.task_type == "CAUSAL_LM"
    # Conv1D stores (in, out): peft 0.21 would flip fan_in_fan_out itself with a UserWarning per layer;
    # apply_lora sets it up front so the config is right and nothing is warned.
    assert cfg.fan_in_fan_out is True
    assert not [w for w in recwarn if "fan_in_fan_out" in str(w.message)]

    names = trainable_names(pm)
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert all("c_attn" in n for n in names)

    counts = count_parameters(pm)
    assert counts.trainable == expected_lora
    assert counts.total == base_total + expected_lora
    assert (counts.trainable, counts.total) == pm.get_nb_trainable_parameters()

    assert capsys.readouterr().out == ""  # library code never prints
    assert any("LoRA applied" in r.getMessage() and r.levelno == logging.INFO for r in caplog.records)


def test_gpt2_output_at_init_equals_base():
    model = tiny_gpt2().eval()
    x = input_ids()
    with torch.no_grad():
        before = model(x).logits.clone()
    pm = apply_lora(model).eval()
    with torch.no_grad():
        after = pm(input_ids=x).logits
    assert torch.equal(before, after)  # lora_B starts at zero


def test_gpt2_adamw_step_changes_only_lora_params():
    pm = apply_lora(tiny_gpt2())
    pm.train()
    frozen = {n: p.detach().clone() for n, p in pm.named_parameters() if not p.requires_grad}
    lora_b = {n: p.detach().clone() for n, p in pm.named_parameters() if ".lora_B." in n}
    opt = torch.optim.AdamW([p for p in pm.parameters() if p.requires_grad], lr=1e-2)

    x = input_ids()
    loss = pm(input_ids=x, labels=x).loss
    assert torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is None for p in pm.parameters() if not p.requires_grad)
    opt.step()

    params = dict(pm.named_parameters())
    for n, before in frozen.items():
        assert torch.equal(params[n], before), n  # bit-identical
    for n, before in lora_b.items():
        assert not torch.equal(params[n], before), n


def test_gpt2_user_config_gets_fan_in_fan_out_on_a_copy(recwarn):
    user_cfg = peft.LoraConfig(r=4, lora_alpha=8, target_modules=["c_attn"], task_type="CAUSAL_LM")
    assert user_cfg.fan_in_fan_out is False
    pm = apply_lora(tiny_gpt2(), user_cfg)
    assert pm.peft_config["default"] is not user_cfg
    assert pm.peft_config["default"].fan_in_fan_out is True
    assert user_cfg.fan_in_fan_out is False  # caller's object untouched
    assert not [w for w in recwarn if "fan_in_fan_out" in str(w.message)]
    assert count_parameters(pm).trainable == 2 * 4 * (32 + 96)


def test_gpt2_string_targets(recwarn):
    # A str is peft's full-match regex, or the "all-linear" shorthand (every Conv1D but the head).
    pm = apply_lora(tiny_gpt2(), target_modules=r".*\.attn\.c_proj")
    assert {n.split(".")[-5] + "." + n.split(".")[-4] for n in trainable_names(pm)} == {"attn.c_proj"}
    pm = apply_lora(tiny_gpt2(), target_modules="all-linear")
    wrapped = {n.rsplit(".", 1)[-1] for n, m in pm.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert wrapped == {"c_attn", "c_proj", "c_fc"}
    assert not [w for w in recwarn if "fan_in_fan_out" in str(w.message)]
    assert pm(input_ids=input_ids()).logits.shape == (2, 8, VOCAB)


# ---------------------------------------------------------------- Llama


def test_llama_explicit_target_modules():
    model = tiny_llama()
    base_total = count_parameters(model).total
    expected = manual_lora_count(model, {"q_proj", "v_proj"}, r=8)
    pm = apply_lora(model, target_modules=["q_proj", "v_proj"])
    cfg = pm.peft_config["default"]
    assert cfg.target_modules == {"q_proj", "v_proj"} and cfg.fan_in_fan_out is False
    assert isinstance(pm, peft.PeftModelForCausalLM)
    wrapped = {n.rsplit(".", 1)[-1] for n, m in pm.named_modules() if isinstance(m, peft.tuners.lora.LoraLayer)}
    assert wrapped == {"q_proj", "v_proj"}
    counts = count_parameters(pm)
    assert counts.trainable == expected == 2 * 2 * 8 * (32 + 32)
    assert counts.total == base_total + expected
    x = input_ids()
    out = pm(input_ids=x, labels=x)
    assert out.logits.shape == (2, 8, VOCAB) and torch.isfinite(out.loss)


def test_llama_explicit_lora_config():
    cfg = peft.LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "k_proj"], task_type="CAUSAL_LM")
    model = tiny_llama()
    expected = manual_lora_count(model, {"q_proj", "k_proj"}, r=4)
    pm = apply_lora(model, cfg)
    assert pm.peft_config["default"].r == 4
    assert pm.peft_config["default"].target_modules == {"q_proj", "k_proj"}
    assert count_parameters(pm).trainable == expected
    assert all(("q_proj" in n or "k_proj" in n) and "lora_" in n for n in trainable_names(pm))


def test_llama_defaults_and_headless_model_has_no_task_type():
    assert default_target_modules(tiny_llama()) == ["q_proj", "v_proj"]
    torch.manual_seed(0)
    pm = apply_lora(transformers.LlamaModel(llama_config()))
    assert type(pm) is peft.PeftModel and pm.peft_config["default"].task_type is None


# ---------------------------------------------------------------- BERT sequence classification


def test_bert_seq_cls_defaults_keep_classifier_trainable():
    model = tiny_bert_cls()
    base_total = count_parameters(model).total
    head = model.classifier.weight.numel() + model.classifier.bias.numel()
    expected_lora = manual_lora_count(model, {"query", "value"}, r=8)

    pm = apply_lora(model)
    cfg = pm.peft_config["default"]
    assert isinstance(pm, peft.PeftModelForSequenceClassification)
    assert cfg.task_type == "SEQ_CLS" and cfg.target_modules == {"query", "value"}
    # peft's SEQ_CLS model adds ["classifier", "score"] to modules_to_save: the head is wrapped in a
    # ModulesToSaveWrapper whose trainable copy is saved with the adapter; the original stays frozen.
    assert "classifier" in cfg.modules_to_save
    names = set(trainable_names(pm))
    head_names = {n for n in names if "classifier" in n}
    assert head_names == {
        "base_model.model.classifier.modules_to_save.default.weight",
        "base_model.model.classifier.modules_to_save.default.bias",
    }
    assert all(".lora_A." in n or ".lora_B." in n for n in names - head_names)
    assert not any("pooler" in n for n in names)

    counts = count_parameters(pm)
    assert counts.trainable == expected_lora + head
    assert counts.total == base_total + expected_lora + head  # the head copy adds to the total

    logits = pm(input_ids=input_ids()).logits
    assert logits.shape == (2, 3)


# ---------------------------------------------------------------- default_target_modules


def test_default_targets_per_architecture():
    T = transformers
    small = {"hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "vocab_size": VOCAB}
    assert default_target_modules(tiny_gpt2()) == ["c_attn"]
    assert default_target_modules(tiny_bert_cls()) == ["query", "value"]
    assert default_target_modules(T.FalconForCausalLM(T.FalconConfig(**small))) == ["query_key_value"]
    assert default_target_modules(T.PhiForCausalLM(T.PhiConfig(intermediate_size=64, **small))) == ["q_proj", "dense"]


def test_default_targets_fallback_and_error():
    class Toy(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.up = torch.nn.Linear(4, 8)
            self.down = torch.nn.Linear(8, 4)
            self.lm_head = torch.nn.Linear(4, 10)

        def forward(self, x):
            return self.lm_head(self.down(self.up(x)))

    assert default_target_modules(Toy()) == ["down", "up"]
    pm = apply_lora(Toy(), r=2)
    assert type(pm) is peft.PeftModel
    assert count_parameters(pm).trainable == 2 * (4 + 8) * 2

    with pytest.raises(ConfigError, match="target_modules"):
        default_target_modules(torch.nn.Sequential(torch.nn.LayerNorm(4)))


# ---------------------------------------------------------------- errors


@pytest.mark.parametrize("bad", [{"r": 8}, "lora", object()])
def test_lora_config_wrong_type(bad):
    with pytest.raises(ConfigError, match="lora_config"):
        apply_lora(tiny_gpt2(), bad)


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        ({"r": 0}, "r"),
        ({"r": -2}, "r"),
        ({"r": 2.5}, "r"),
        ({"r": True}, "r"),
        ({"alpha": 0}, "alpha"),
        ({"alpha": -1.0}, "alpha"),
        ({"alpha": float("nan")}, "alpha"),
        ({"dropout": -0.1}, "dropout"),
        ({"dropout": 1.0}, "dropout"),
        ({"target_modules": []}, "target_modules"),
        ({"target_modules": ""}, "target_modules"),
        ({"target_modules": ["q_proj", 3]}, "target_modules"),
        ({"task_type": "BOGUS"}, "task_type"),
    ],
)
def test_bad_keywords(kwargs, name):
    with pytest.raises(ConfigError, match=rf"\b{name}\b"):
        apply_lora(tiny_gpt2(), **kwargs)


@pytest.mark.parametrize(
    ("field", "value", "name"),
    [("r", 0, "lora_config.r"), ("lora_alpha", 0, "lora_config.lora_alpha"), ("lora_dropout", 1.5, "lora_config.lora_dropout")],
)
def test_bad_lora_config_values(field, value, name):
    cfg = peft.LoraConfig(target_modules=["c_attn"])
    setattr(cfg, field, value)  # LoraConfig itself accepts these without complaint
    with pytest.raises(ConfigError, match=name):
        apply_lora(tiny_gpt2(), cfg)


def test_targets_matching_nothing_list_available_modules():
    model = tiny_gpt2()
    with pytest.raises(ConfigError, match="target_modules") as ei:
        apply_lora(model, target_modules=["q_proj", "v_proj"])
    msg = str(ei.value)
    assert "c_attn" in msg and "c_fc" in msg
    assert not any(isinstance(m, peft.tuners.lora.LoraLayer) for m in model.modules())  # left untouched

    cfg = peft.LoraConfig(target_modules=["nope"])
    with pytest.raises(ConfigError, match=r"lora_config\.target_modules.*q_proj"):
        apply_lora(tiny_llama(), cfg)


def test_lora_config_with_target_keywords_is_rejected():
    cfg = peft.LoraConfig(target_modules=["c_attn"])
    with pytest.raises(ConfigError, match="target_modules"):
        apply_lora(tiny_gpt2(), cfg, target_modules=["c_attn"])


def test_already_peft_model_is_rejected():
    pm = apply_lora(tiny_gpt2())
    with pytest.raises(ConfigError, match="already has peft adapters"):
        apply_lora(pm)
    with pytest.raises(ConfigError, match="already has peft adapters"):
        apply_lora(pm.get_base_model())  # adapters injected into the bare model too


def test_model_must_be_a_module():
    with pytest.raises(ConfigError, match="model"):
        apply_lora("gpt2")  # type: ignore[arg-type]


def test_no_fan_in_fan_out_warning_for_linear_targets():
    with warnings.catch_warnings():
        warnings.filterwarnings("error", message=".*fan_in_fan_out.*")
        pm = apply_lora(tiny_llama(), peft.LoraConfig(target_modules=["q_proj"], fan_in_fan_out=True))
    assert pm.peft_config["default"].fan_in_fan_out is False
