import dataclasses

import pytest

from geko_state import (
    GEKO_AGGRESSIVE, GEKO_BALANCED, GEKO_CONSERVATIVE, GEKO_SEEDS, ConfigError, GEKOConfig, GekoError, NanPolicy,
)


def test_defaults_are_the_seeds_table():
    c = GEKOConfig()
    assert (c.freeze_confidence, c.freeze_quality, c.focus_confidence) == (0.85, 0.80, 0.60)
    assert c.bucket_weights == (3.0, 1.0, 0.0)
    assert c.use_curriculum is True
    assert (c.q_value_lr, c.min_q_for_freeze, c.q_value_loss_scale) == (0.1, 0.8, 10.0)
    assert (c.repartition_every, c.log_bucket_stats, c.max_times_seen, c.prune_frozen_after) == (1, True, 50, 0)
    assert c.nan_policy is NanPolicy.RAISE
    assert GEKO_SEEDS == c


def test_presets():
    assert (GEKO_AGGRESSIVE.freeze_confidence, GEKO_AGGRESSIVE.freeze_quality, GEKO_AGGRESSIVE.bucket_weights) == (0.90, 0.85, (5.0, 2.0, 0.0))
    assert (GEKO_BALANCED.freeze_confidence, GEKO_BALANCED.freeze_quality, GEKO_BALANCED.bucket_weights) == (0.85, 0.80, (3.0, 2.0, 1.0))
    assert (GEKO_CONSERVATIVE.freeze_confidence, GEKO_CONSERVATIVE.freeze_quality, GEKO_CONSERVATIVE.bucket_weights) == (0.80, 0.75, (2.0, 2.0, 1.0))


@pytest.mark.parametrize(
    "field,value",
    [
        ("freeze_confidence", 1.5),
        ("freeze_confidence", -0.1),
        ("freeze_quality", "high"),
        ("focus_confidence", True),
        ("bucket_weights", (1, 2)),
        ("bucket_weights", (1, -2, 0)),
        ("bucket_weights", (1, float("nan"), 0)),
        ("use_curriculum", 1),
        ("q_value_lr", 0.0),
        ("q_value_lr", 2.0),
        ("min_q_for_freeze", 1.01),
        ("q_value_loss_scale", 0),
        ("q_value_loss_scale", float("inf")),
        ("repartition_every", 0),
        ("repartition_every", 1.5),
        ("log_bucket_stats", "yes"),
        ("max_times_seen", 0),
        ("prune_frozen_after", -1),
        ("nan_policy", "ignore"),
        ("mastered_fraction", 0),
    ],
)
def test_invalid_values_are_refused_with_the_field_name(field, value):
    with pytest.raises(ConfigError) as e:
        GEKOConfig(**{field: value})
    assert field in str(e.value)
    assert isinstance(e.value, GekoError)


def test_frozen_and_replace_validates():
    c = GEKOConfig()
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.q_value_lr = 0.5  # type: ignore[misc]
    assert c.replace(q_value_lr=0.3).q_value_lr == 0.3
    with pytest.raises(ConfigError):
        c.replace(q_value_lr=-1)
    with pytest.raises(ConfigError, match="no field"):
        c.replace(q_lr=0.3)


def test_dict_roundtrip():
    c = GEKOConfig(bucket_weights=(5, 2, 1), nan_policy="skip", prune_frozen_after=3)
    assert GEKOConfig.from_dict(c.to_dict()) == c
    with pytest.raises(ConfigError, match="no field"):
        GEKOConfig.from_dict({"bogus": 1})
