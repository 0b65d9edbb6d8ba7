"""GEKOSettings and GEKOSession on their own: validation, the settings GEKOTrainingArgs derives, and
the checks on a checkpoint's GEKO part."""
from __future__ import annotations

import json

import pytest

from geko_state import GEKO_DEFAULT, GEKOConfig, HistoryConfig
from geko_state.errors import ConfigError, InputError, StateFileError
from geko_state.selection import SelectionKind
from geko_torch import GEKOSession, GEKOSettings, GEKOTrainingArgs
from geko_torch.checkpoint import GEKO_META_FILE, read_geko_meta


@pytest.mark.parametrize(("field", "value"), [
    ("config", {"freeze_confidence": 0.9}), ("run_dir", ""), ("budget", -3), ("replacement", "yes"),
    ("selection", "greedy"), ("history", {"every": 2}), ("task", "regression"), ("correct_loss_below", 0),
    ("token_accuracy", 1.5), ("compute_confidence", 3), ("compute_correctness", "argmax"),
    ("stop_when_mastered", 1), ("stop_on_plateau", 0.1), ("sync_every", 0),
])
def test_settings_are_validated_on_construction_naming_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        GEKOSettings(**{field: value})


def test_training_args_derive_the_settings():
    args = GEKOTrainingArgs(output_dir="out", budget=0.5, replacement=True, selection="uniform", task="causal_lm",
                            token_accuracy=0.9, history=HistoryConfig(every=2), sync_every=3,
                            stop_when_mastered=False)
    cfg = GEKOConfig(freeze_confidence=0.9)
    s = args.geko_settings(cfg)
    assert s == GEKOSettings(config=cfg, run_dir="out", budget=0.5, replacement=True, selection="uniform",
                             task="causal_lm", token_accuracy=0.9, history=HistoryConfig(every=2), sync_every=3,
                             stop_when_mastered=False)
    assert s.selection.policy is SelectionKind.UNIFORM and args.geko_settings().config == GEKO_DEFAULT
    # one validation for both trainers: a bad GEKO field of the training args names the field
    with pytest.raises(ConfigError, match="sync_every"):
        GEKOTrainingArgs(sync_every=0)
    assert GEKOSettings().replacement is False and GEKOTrainingArgs().replacement is False  # one default
    with pytest.raises(ConfigError, match="no field"):
        GEKOSettings().replace(bogus=1)


def test_session_constructor_and_lr_multiplier(tmp_path):
    with pytest.raises(ConfigError, match="GEKOSettings"):
        GEKOSession({"budget": 3}, run_dir=tmp_path, seed=0)
    with pytest.raises(ConfigError, match="rank"):
        GEKOSession(GEKOSettings(), run_dir=tmp_path, seed=0, rank=1, world_size=1)
    s = GEKOSession(GEKOSettings(config=GEKOConfig(use_curriculum=True)), run_dir=tmp_path, seed=0)
    assert s.lr_multiplier() == 1.0  # nothing planned yet
    s.start_fresh(10, 4)
    assert s.lr_multiplier() == 0.5  # WARMUP
    baseline = GEKOSession(GEKOSettings(config=GEKOConfig(use_curriculum=True), selection="uniform"),
                           run_dir=tmp_path / "b", seed=0)
    baseline.start_fresh(10, 4)
    assert baseline.lr_multiplier() == 1.0  # the curriculum is GEKO's
    s.close()
    baseline.close()


def test_the_geko_part_of_a_checkpoint_is_checked(tmp_path):
    with pytest.raises(InputError, match="not a directory"):
        read_geko_meta(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match=GEKO_META_FILE):
        read_geko_meta(tmp_path / "empty")
    s = GEKOSession(GEKOSettings(), run_dir=tmp_path / "run", seed=0)
    s.start_fresh(10, 2)
    s.save(tmp_path / "ckpt", global_step=0)
    meta = read_geko_meta(tmp_path / "ckpt")
    assert meta["n_samples"] == 10 and meta["epoch"] == 0 and meta["global_step"] == 0
    with pytest.raises(InputError, match="10 samples but train_dataset has 11"):
        s.resume(tmp_path / "ckpt", 11, 2)
    (tmp_path / "ckpt" / GEKO_META_FILE).write_text(json.dumps({**meta, "format": 99}))
    with pytest.raises(StateFileError, match="format 99"):
        read_geko_meta(tmp_path / "ckpt")
    (tmp_path / "ckpt" / GEKO_META_FILE).write_text("{not json")
    with pytest.raises(StateFileError, match="unreadable"):
        read_geko_meta(tmp_path / "ckpt")
    s.close()
