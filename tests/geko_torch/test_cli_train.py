"""``geko train`` end to end on tiny local models (built here: no hub), and its data loading."""
from __future__ import annotations

import json
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
import torch
from safetensors.torch import load_file

from geko_state.errors import InputError
from geko_torch import cli
from geko_torch.text_data import (
    IGNORE_INDEX,
    class_labels,
    read_label_map,
    read_table,
    tokenize_causal_lm,
    tokenize_classification,
)

EOS, PAD, UNK = "[EOS]", "[PAD]", "[UNK]"
FAST = ["--epochs", "2", "--batch-size", "8", "--lr", "3e-3", "--warmup-steps", "1", "--workers", "0",
        "--no-progress", "--max-length", "24", "--seed", "0"]


# ---------------------------------------------------------------------- tiny data and models
def _sft_rows(n: int = 24, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        a, b = rng.randrange(10), rng.randrange(10)
        rows.append({"prompt": f"question : add {a} and {b} ? answer :", "response": f"{a + b} done"})
    return rows


def _cls_rows(n: int = 24, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    good, bad = ["great", "fine", "lovely"], ["awful", "dull", "poor"]
    rows = []
    for i in range(n):
        pos = i % 2 == 0
        word = rng.choice(good if pos else bad)
        rows.append({"text": f"the film was {word} and {rng.choice(good + bad)}", "label": "pos" if pos else "neg"})
    return rows


def _tokenizer(texts: list[str], specials: list[str], **tokens: str):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token=UNK))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.train_from_iterator(texts, trainers.WordLevelTrainer(special_tokens=specials))
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token=UNK, **tokens)


def _texts(rows: list[dict]) -> list[str]:
    return [str(v) for r in rows for v in r.values()]


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory) -> Path:
    """Tiny GPT-2 whose tokenizer has an eos but no pad token (the command must pad with eos)."""
    from transformers import GPT2Config, GPT2LMHeadModel

    path = tmp_path_factory.mktemp("gpt2")
    tok = _tokenizer(_texts(_sft_rows(200)) + ["the film was"], [UNK, EOS], eos_token=EOS, bos_token=EOS)
    torch.manual_seed(0)
    cfg = GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=len(tok), n_positions=128,
                     bos_token_id=tok.eos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.eos_token_id)
    GPT2LMHeadModel(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory) -> Path:
    from transformers import BertConfig, BertForSequenceClassification

    path = tmp_path_factory.mktemp("bert")
    tok = _tokenizer(_texts(_cls_rows(200)), [PAD, UNK, "[CLS]", "[SEP]"], pad_token=PAD,
                     cls_token="[CLS]", sep_token="[SEP]")
    torch.manual_seed(0)
    cfg = BertConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                     vocab_size=len(tok), max_position_embeddings=64, num_labels=2,
                     pad_token_id=tok.pad_token_id)
    BertForSequenceClassification(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("data")
    sft = pl.DataFrame(_sft_rows(24))
    files = {
        "sft_jsonl": d / "sft.jsonl",
        "sft_eval": d / "sft_eval.jsonl",
        "text_parquet": d / "text.parquet",
        "cls_csv": d / "cls.csv",
    }
    sft.write_ndjson(files["sft_jsonl"])
    pl.DataFrame(_sft_rows(8, seed=1)).write_ndjson(files["sft_eval"])
    sft.select(text=pl.col("prompt") + " " + pl.col("response")).write_parquet(files["text_parquet"])
    pl.DataFrame(_cls_rows(24)).write_csv(files["cls_csv"])
    return files


def _train(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["train", *map(str, argv)])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _epochs_rows(out: Path) -> int:
    return pl.read_parquet(out / "epochs.parquet").height


# ---------------------------------------------------------------------- end to end
def test_sft_end_to_end(capsys, tmp_path, gpt2_dir, data):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    out = tmp_path / "sft"
    code, stdout, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt",
                                  "--response-field", "response", "--eval-file", data["sft_eval"],
                                  "--output-dir", out, *FAST)
    assert code == 0, stderr
    assert "no pad token" in stderr and EOS in stderr
    assert (out / "state.arrow").is_file()
    assert _epochs_rows(out) == 2
    ckpts = sorted(p.name for p in out.glob("checkpoint-*"))
    assert len(ckpts) == 1 and (out / ckpts[0] / "trainer_state.json").is_file()
    assert f"final checkpoint: {out / ckpts[0]}" in stdout
    assert "GEKO efficiency report" in stdout
    for follow_up in (f"geko report {out}", f"geko sql {out}", f"geko export {out}"):
        assert follow_up in stdout
    model = AutoModelForCausalLM.from_pretrained(out / "final_model", local_files_only=True)
    tok = AutoTokenizer.from_pretrained(out / "final_model", local_files_only=True)
    assert tok.pad_token == EOS
    ids = torch.tensor([tok("question : add 1 and 2 ? answer :")["input_ids"]])
    assert model(input_ids=ids).logits.shape[-1] == len(tok)
    log = [json.loads(line) for line in (out / "trainer_log.jsonl").read_text().splitlines()]
    assert any("eval_loss" in r for r in log)
    # The printed follow-up export works: row i of the file is sample i.
    kept = out / "kept.jsonl"
    assert cli.main(["export", str(out), "--dataset", str(data["sft_jsonl"]), "--output", str(kept)]) == 0
    assert 0 < pl.read_ndjson(kept).height <= 24 and pl.read_ndjson(kept).columns == ["prompt", "response"]


def test_text_field_lm_from_parquet(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "lm"
    code, stdout, stderr = _train(capsys, gpt2_dir, data["text_parquet"], "--text-field", "text",
                                  "--output-dir", out, "--preset", "aggressive", "--budget", "full", *FAST)
    assert code == 0, stderr
    assert _epochs_rows(out) == 2
    assert (out / "final_model" / "config.json").is_file()
    assert "kept.parquet" in stdout  # the export hint keeps the dataset's format


def test_classification_string_labels_from_csv(capsys, tmp_path, bert_dir, data):
    from transformers import AutoModelForSequenceClassification

    out = tmp_path / "cls"
    code, stdout, stderr = _train(capsys, bert_dir, data["cls_csv"], "--text-field", "text",
                                  "--label-field", "label", "--output-dir", out, *FAST)
    assert code == 0, stderr
    assert read_label_map(out / "label_map.json") == {"neg": 0, "pos": 1}
    assert json.loads((out / "label_map.json").read_text())["id2label"] == {"0": "neg", "1": "pos"}
    assert "0=neg, 1=pos" in stdout
    model = AutoModelForSequenceClassification.from_pretrained(out / "final_model", local_files_only=True)
    assert model.config.num_labels == 2 and model.config.id2label == {0: "neg", 1: "pos"}
    assert _epochs_rows(out) == 2


@pytest.mark.filterwarnings("ignore:.*is_gradient_checkpointing:FutureWarning")  # peft x transformers 5
def test_lora_run_saves_the_adapter(capsys, tmp_path, gpt2_dir, data):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    out = tmp_path / "lora"
    code, stdout, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt",
                                  "--response-field", "response", "--lora", "--lora-r", "4", "--lora-alpha", "8",
                                  "--lora-dropout", "0", "--lora-targets", "c_attn,c_proj", "--output-dir", out, *FAST)
    assert code == 0, stderr
    assert "LoRA applied" in stdout and "LoRA adapter only" in stdout
    final = out / "final_model"
    cfg = json.loads((final / "adapter_config.json").read_text())
    assert cfg["r"] == 4 and cfg["lora_alpha"] == 8 and sorted(cfg["target_modules"]) == ["c_attn", "c_proj"]
    base = AutoModelForCausalLM.from_pretrained(gpt2_dir, local_files_only=True)
    model = PeftModel.from_pretrained(base, final)
    trained = {k: v for k, v in model.state_dict().items() if "lora_B" in k}
    assert trained and any(v.abs().sum() > 0 for v in trained.values())  # B starts at zero: it was trained


def test_resume_from_a_max_steps_checkpoint_finishes(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "resume"
    common = [gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt", "--response-field", "response", *FAST]
    base = [*common, "--output-dir", out]
    code, stdout, stderr = _train(capsys, *base, "--max-steps", "2")
    assert code == 0, stderr
    assert (out / "checkpoint-2" / "trainer_state.json").is_file()
    assert "--resume" in stdout and "stopped at --max-steps 2" in stdout
    code, stdout, stderr = _train(capsys, *base, "--resume", out / "checkpoint-2")
    assert code == 0, stderr
    assert "Resumed from" in stdout
    assert _epochs_rows(out) == 2
    final = Path(stdout.split("final checkpoint: ")[1].split()[0])
    assert final.parent == out and int(final.name.split("-")[1]) > 2 and (final / "trainer_state.json").is_file()
    # A checkpoint of other data is refused before the run directory is touched.
    state = (out / "state.arrow").read_bytes()
    code, _, stderr = _train(capsys, gpt2_dir, data["sft_eval"], "--prompt-field", "prompt", "--response-field",
                             "response", *FAST, "--output-dir", out, "--resume", out / "checkpoint-2")
    assert code == 2 and "trained on 24 samples but DATA_FILE has 8" in stderr
    assert (out / "state.arrow").read_bytes() == state
    # ... and the resumed run ends exactly where an uninterrupted one does.
    code, _, stderr = _train(capsys, *common, "--output-dir", tmp_path / "straight")
    assert code == 0, stderr
    resumed = load_file(out / "final_model" / "model.safetensors")
    straight = load_file(tmp_path / "straight" / "final_model" / "model.safetensors")
    assert resumed.keys() == straight.keys() and all(torch.equal(resumed[k], straight[k]) for k in resumed)


# ---------------------------------------------------------------------- bad input: exit 2, nothing written
@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--prompt-field", "prompt"], "--prompt-field needs --response-field"),
        (["--response-field", "response"], "--response-field needs --prompt-field"),
        (["--prompt-field", "prompt", "--response-field", "response", "--text-field", "prompt"],
         "--text-field cannot be combined"),
        (["--label-field", "response"], "--label-field needs --text-field"),
        ([], "say which columns"),
        (["--text-field", "prompt", "--lora-r", "4"], "add --lora"),
        (["--text-field", "prompt", "--budget", "lots"], "--budget"),
        (["--text-field", "prompt", "--selection", "rs2", "--keep-fraction", "0.5"],
         "--keep-fraction skips GEKO's mastered samples and needs --selection geko, got --selection rs2"),
        (["--text-field", "prompt", "--selection", "uniform", "--suspect-threshold", "0.75"],
         "--suspect-threshold sets GEKO's noise suspects aside and needs --selection geko, got --selection uniform"),
        (["--prompt-field", "question", "--response-field", "response"], "available columns: prompt, response"),
        (["--text-field", "prompt", "--label-field", "nope"], "--label-field 'nope'; available columns"),
        (["--text-field", "prompt", "--lora", "--lora-targets", "nope"], "match no module"),
    ],
)
def test_bad_options_exit_2_and_write_nothing(capsys, tmp_path, gpt2_dir, data, extra, needle):
    out = tmp_path / "out"
    code, _, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], *extra, "--output-dir", out, *FAST)
    assert code == 2
    assert "geko train: error: " in stderr and needle in stderr, stderr
    assert not out.exists()


def test_bad_files_exit_2_and_write_nothing(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "out"
    lm = ["--text-field", "text", "--output-dir", out, *FAST]
    txt = tmp_path / "data.txt"
    txt.write_text("hello\n")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    cases = [
        ((gpt2_dir, txt, *lm), ["data.txt", "unsupported", ".jsonl", ".parquet", ".csv"]),
        ((gpt2_dir, empty, *lm), ["empty.jsonl", "empty"]),
        ((gpt2_dir, tmp_path / "missing.jsonl", *lm), ["missing.jsonl", "no such file"]),
        ((tmp_path / "no-model", data["text_parquet"], *lm), ["MODEL ", "no-model", "no such directory"]),
        ((tmp_path, data["text_parquet"], *lm), ["no config.json"]),
        ((gpt2_dir, data["text_parquet"], *lm, "--eval-file", txt), ["--eval-file", "unsupported"]),
        ((gpt2_dir, data["text_parquet"], *lm, "--resume", tmp_path), ["--resume", "not a GEKO checkpoint"]),
    ]
    for argv, needles in cases:
        code, _, stderr = _train(capsys, *argv)
        assert code == 2, (argv, stderr)
        assert all(n in stderr for n in needles), stderr
        assert not out.exists()


def test_argparse_rejects_bad_values(capsys, tmp_path, gpt2_dir, data):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", str(gpt2_dir), str(data["sft_jsonl"]), "--text-field", "prompt", "--epochs", "0"])
    assert e.value.code == 2 and "--epochs" in capsys.readouterr().err


def test_selection_uniform_end_to_end_and_bad_selection(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "uniform"
    code, stdout, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt",
                                  "--response-field", "response", "--selection", "uniform", "--output-dir", out,
                                  *FAST)
    assert code == 0, stderr
    assert "Selection         : uniform" in stdout
    assert pl.read_parquet(out / "epochs.parquet")["samples_trained"].to_list() == [24, 24]
    ckpt = next(out.glob("checkpoint-*"))
    assert json.loads((ckpt / "trainer_state.json").read_text())["extra"]["args"]["selection"]["policy"] == "uniform"
    # resuming it as another policy is refused before the run directory is touched
    state = (out / "state.arrow").read_bytes()
    code, _, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt", "--response-field",
                             "response", *FAST, "--output-dir", out, "--resume", ckpt)
    assert code == 2 and "--selection uniform but this command has --selection geko" in stderr
    assert (out / "state.arrow").read_bytes() == state
    with pytest.raises(SystemExit) as e:
        cli.main(["train", str(gpt2_dir), str(data["sft_jsonl"]), "--text-field", "prompt", "--selection", "greedy"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "--selection" in err and "'greedy'" in err and "infobatch" in err


def test_selection_rs2_with_a_budget_and_a_cosine_schedule(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "rs2"
    code, stdout, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt",
                                  "--response-field", "response", "--selection", "rs2", "--budget", "0.5",
                                  "--lr-scheduler-type", "cosine", "--output-dir", out, *FAST)
    assert code == 0, stderr
    assert "Selection         : rs2" in stdout and "LR schedule       : cosine" in stdout
    assert pl.read_parquet(out / "epochs.parquet")["samples_trained"].to_list() == [12, 12]  # 24 rows, half each
    args = json.loads((next(out.glob("checkpoint-*")) / "trainer_state.json").read_text())["extra"]["args"]
    assert args["selection"]["policy"] == "rs2" and args["lr_scheduler_type"] == "cosine"
    with pytest.raises(SystemExit) as e:
        cli.main(["train", str(gpt2_dir), str(data["sft_jsonl"]), "--text-field", "prompt",
                  "--lr-scheduler-type", "step"])
    assert e.value.code == 2 and "--lr-scheduler-type" in capsys.readouterr().err


def test_keep_fraction_trains_geko_with_reweighted_mastered_samples(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "keep"
    code, stdout, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt",
                                  "--response-field", "response", "--keep-fraction", "0.5", "--suspect-threshold",
                                  "0.75", "--output-dir", out, *FAST)
    assert code == 0, stderr
    assert ("Selection         : geko (keep_fraction 0.5: mastered samples re-weighted) (suspects above 0.75 "
            "set aside)") in stdout
    args = json.loads((next(out.glob("checkpoint-*")) / "trainer_state.json").read_text())["extra"]["args"]
    assert args["selection"] == {"policy": "geko", "prune_probability": 0.5, "anneal_fraction": None,
                                 "recheck_fraction": 0.0, "keep_fraction": 0.5, "suspect_threshold": 0.75}
    for bad in ("0", "1.5"):
        with pytest.raises(SystemExit) as e:
            cli.main(["train", str(gpt2_dir), str(data["sft_jsonl"]), "--text-field", "prompt", "--keep-fraction", bad])
        assert e.value.code == 2 and "--keep-fraction" in capsys.readouterr().err


def test_stop_on_plateau_sets_the_rule_and_every_epoch_prints_its_progress(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "plateau"
    code, stdout, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt",
                                  "--response-field", "response", "--selection", "uniform", "--stop-on-plateau",
                                  "--output-dir", out, *FAST)
    assert code == 0, stderr
    assert "[GEKO] Epoch 1 progress: improving" in stdout and "[GEKO] Epoch 2 progress: improving" in stdout
    args = json.loads((next(out.glob("checkpoint-*")) / "trainer_state.json").read_text())["extra"]["args"]
    assert args["stop_on_plateau"] == {"min_improving": 0.1, "min_epochs": 2}
    with pytest.raises(SystemExit) as e:
        cli.main(["train", str(gpt2_dir), str(data["sft_jsonl"]), "--text-field", "prompt", "--stop-on-plateau", "2"])
    assert e.value.code == 2 and "--stop-on-plateau" in capsys.readouterr().err


@pytest.mark.parametrize("value, expected", [(None, 0.5), ("0.8", 0.8), ("none", None)])
def test_token_accuracy_flag_sets_the_causal_lm_correctness_rule(capsys, tmp_path, gpt2_dir, data, value, expected):
    out = tmp_path / "tokacc"
    flag = [] if value is None else ["--token-accuracy", value]
    code, _, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--prompt-field", "prompt", "--response-field",
                             "response", *flag, "--output-dir", out, *FAST)
    assert code == 0, stderr
    args = json.loads((next(out.glob("checkpoint-*")) / "trainer_state.json").read_text())["extra"]["args"]
    assert args["token_accuracy"] == expected


def test_token_accuracy_flag_refuses_a_share_outside_0_1(capsys, gpt2_dir, data):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", str(gpt2_dir), str(data["sft_jsonl"]), "--text-field", "prompt", "--token-accuracy", "1.5"])
    assert e.value.code == 2 and "--token-accuracy" in capsys.readouterr().err


# ---------------------------------------------------------------------- text_data units
def test_sft_items_mask_the_prompt(gpt2_dir, data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2_dir, local_files_only=True)
    table = read_table(data["sft_jsonl"])
    ds = tokenize_causal_lm(table, tok, prompt_field="prompt", response_field="response", max_length=64)
    assert len(ds) == table.height and ds.n_without_labels == 0 and ds.n_truncated == 0
    for i, row in enumerate(table.iter_rows(named=True)):
        p = tok(row["prompt"])["input_ids"]
        r = tok(row["response"], add_special_tokens=False)["input_ids"]
        item = ds[i]
        assert item["input_ids"].tolist() == p + r + [tok.eos_token_id]
        assert item["labels"][: len(p)].eq(IGNORE_INDEX).all()
        assert item["labels"][len(p):].tolist() == r + [tok.eos_token_id]
        assert item["attention_mask"].tolist() == [1] * (len(p) + len(r) + 1)
    cut = tokenize_causal_lm(table, tok, prompt_field="prompt", response_field="response", max_length=4)
    assert all(len(cut[i]["input_ids"]) == 4 for i in range(len(cut)))
    assert cut.n_truncated == len(cut) and cut.n_without_labels == len(cut)  # prompts are longer than 4


def test_text_items_train_every_token(gpt2_dir, data):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2_dir, local_files_only=True)
    ds = tokenize_causal_lm(read_table(data["text_parquet"]), tok, text_field="text")
    item = ds[0]
    assert torch.equal(item["input_ids"], item["labels"]) and item["input_ids"][-1] == tok.eos_token_id


def test_classification_labels(bert_dir, data, tmp_path):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir, local_files_only=True)
    table = read_table(data["cls_csv"])
    ds, label_map = tokenize_classification(table, tok, text_field="text", label_field="label", max_length=3)
    assert label_map == {"neg": 0, "pos": 1}
    assert ds.class_labels.tolist() == [0 if v == "neg" else 1 for v in table["label"]]
    assert ds[0]["labels"].ndim == 0 and ds.n_truncated == len(ds) and max(ds.lengths) == 3
    # Integer labels are used as they are; an eval set must stay within the training classes.
    ids, none = class_labels(pl.DataFrame({"y": [2, 0, 1]}), "y")
    assert ids.tolist() == [2, 0, 1] and none is None
    with pytest.raises(InputError, match="class id 5"):
        class_labels(pl.DataFrame({"y": [5]}), "y", num_labels=3)
    with pytest.raises(InputError, match="not among the training labels"):
        class_labels(pl.DataFrame({"y": ["meh"]}), "y", label_map)
    with pytest.raises(InputError, match="negative"):
        class_labels(pl.DataFrame({"y": [-1, 0]}), "y")
    with pytest.raises(InputError, match="non-integer"):
        class_labels(pl.DataFrame({"y": [0.5, 1.0]}), "y")


def test_large_tables_are_tokenised_in_chunks(gpt2_dir, capsys):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(gpt2_dir, local_files_only=True)
    rows = _sft_rows(2_500, seed=3)  # more than one tokenizer chunk
    table = pl.DataFrame(rows)
    ds = tokenize_causal_lm(table, tok, prompt_field="prompt", response_field="response", progress=True,
                            source="big")
    assert "tokenise big" in capsys.readouterr().err
    assert len(ds) == 2_500
    for i in (0, 1_023, 1_024, 2_499):
        p = tok(rows[i]["prompt"])["input_ids"]
        assert ds[i]["input_ids"].tolist() == p + tok(rows[i]["response"], add_special_tokens=False)["input_ids"] + [
            tok.eos_token_id]
        assert ds[i]["labels"][: len(p)].eq(IGNORE_INDEX).all()


def test_read_table_errors(tmp_path, bert_dir):
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(InputError, match="cannot read it as JSONL"):
        read_table(bad)
    header_only = tmp_path / "h.csv"
    header_only.write_text("text,label\n")
    with pytest.raises(InputError, match="no rows"):
        read_table(header_only)
    nulls = tmp_path / "n.jsonl"
    nulls.write_text('{"text": "a"}\n{"text": null}\n')
    with pytest.raises(InputError, match=r"the first in row 2 \(sample id 1\)"):  # line 2 of the file
        tokenize_causal_lm(read_table(nulls), None, text_field="text")
    assert np.array_equal(read_table(nulls)["text"].is_null().to_numpy(), [False, True])
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(bert_dir, local_files_only=True)  # no eos: "" gives no token
    with pytest.raises(InputError, match=r"give no tokens at all .first: row 2 \(sample id 1\)"):
        tokenize_classification(pl.DataFrame({"t": ["great", ""], "y": [0, 1]}), tok, text_field="t", label_field="y")


# ---------------------------------------------------------------------- the command line
def test_module_help_lists_train_and_the_engine_commands():
    r = subprocess.run([sys.executable, "-m", "geko_torch.cli", "--help"], capture_output=True, text=True, check=True)
    for name in ("train", "sql", "report", "export", "inspect", "simulate"):
        assert f"    {name} " in r.stdout, r.stdout
    assert "geko train" in r.stdout


def test_train_help_has_an_example_and_defaults(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "example:\n  geko train " in text
    for option in ("--epochs", "--batch-size", "--lr", "--max-length", "--preset", "--lora-r", "--output-dir"):
        assert option in text
    _, sub = cli.build_parser()
    options = [a for a in sub.choices["train"]._actions if a.option_strings and a.dest != "help"]
    assert len(options) >= 29
    assert [a.dest for a in options if "default" not in (a.help or "")] == []


def test_a_new_run_replaces_an_earlier_one(tmp_path):
    from geko_state import StateStore
    from geko_torch.rundir import clear_earlier_run

    out = tmp_path / "run"
    for rel in ("epochs.parquet", "trainer_log.jsonl", "history/epoch=000001.parquet",
                "checkpoint-3/trainer_state.json", "final_model/config.json", "notes.txt"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("x")
    StateStore.create(10, out / "state.arrow").close()  # the GEKO marker
    removed = clear_earlier_run(out)
    assert sorted(removed) == sorted(["state.arrow", "state.arrow.json", "epochs.parquet", "trainer_log.jsonl",
                                      "epoch=000001.parquet", "checkpoint-3", "final_model"])
    assert sorted(p.name for p in out.iterdir()) == ["history", "notes.txt"]


def test_a_directory_that_is_not_a_geko_run_is_never_cleared(tmp_path, capsys, gpt2_dir, data):
    from geko_torch.rundir import clear_earlier_run, run_markers

    out = tmp_path / "other_tool"
    for rel in ("final_model/config.json", "checkpoint-3/trainer_state.json", "trainer_log.jsonl", "epochs.parquet"):
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        (out / rel).write_text("{}")
    before = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert run_markers(out) == []
    with pytest.raises(InputError, match="not a GEKO run directory .*nothing was removed"):
        clear_earlier_run(out)
    code, _, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--text-field", "prompt", "--output-dir", out)
    assert code == 2 and "holds an earlier run" in stderr and "--overwrite" in stderr
    code, _, stderr = _train(capsys, gpt2_dir, data["sft_jsonl"], "--text-field", "prompt", "--output-dir", out,
                             "--overwrite")
    assert code == 2 and "not a GEKO run directory" in stderr
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == before


def test_a_second_run_into_the_same_directory_needs_overwrite(capsys, tmp_path, gpt2_dir, data):
    out = tmp_path / "twice"
    argv = [gpt2_dir, data["sft_jsonl"], "--text-field", "prompt", "--output-dir", out, *FAST]
    code, stdout, stderr = _train(capsys, *argv)
    assert code == 0, stderr
    assert "--keep FREEZE,LIGHT,FOCUS" in stdout and "drops HARD" in stdout
    first_log = (out / "trainer_log.jsonl").read_text()
    code, _, stderr = _train(capsys, *argv)
    assert code == 2 and "holds an earlier run" in stderr and "--overwrite" in stderr
    assert (out / "trainer_log.jsonl").read_text() == first_log  # nothing touched
    code, _, stderr = _train(capsys, *argv, "--overwrite")
    assert code == 0 and "replaced it" in stderr

def test_a_saved_datasets_directory_and_an_arrow_file_train(capsys, tmp_path, gpt2_dir, data):
    import datasets

    rows = pl.read_ndjson(data["sft_jsonl"])
    saved = tmp_path / "saved"
    datasets.Dataset.from_polars(rows).save_to_disk(str(saved))
    arrow = tmp_path / "rows.arrow"
    rows.write_ipc(arrow)
    for source, name in ((saved, "from_dir"), (arrow, "from_arrow")):
        out = tmp_path / name
        code, stdout, stderr = _train(capsys, gpt2_dir, source, "--prompt-field", "prompt", "--response-field",
                                      "response", "--output-dir", out, *FAST)
        assert code == 0, stderr
        assert _epochs_rows(out) == 2
        kept = out / ("kept.parquet" if source.is_dir() else "kept.arrow")
        assert f"--output {kept}" in stdout  # the printed export writes a file the format table knows
    code, _, stderr = _train(capsys, gpt2_dir, tmp_path, "--text-field", "prompt", "--output-dir", tmp_path / "x")
    assert code == 2 and "a directory; expected a dataset file" in stderr
