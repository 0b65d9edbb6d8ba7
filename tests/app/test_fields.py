"""The form's GEKOConfig and GEKOTrainingArgs fields, read from the dataclasses."""
from __future__ import annotations

import dataclasses

import pytest

from geko_state.config import PRESETS, GEKOConfig
from geko_state.errors import ConfigError
from geko_torch.app.fields import (
    APP_TRAINING_FIELDS,
    config_fields,
    config_from_values,
    config_values,
    parse_weights,
    training_fields,
    training_from_values,
)


def test_every_config_field_has_a_control_of_its_type():
    specs = {s.name: s for s in config_fields()}
    assert list(specs) == [f.name for f in dataclasses.fields(GEKOConfig)]
    assert specs["freeze_confidence"].kind == "float"
    assert specs["repartition_every"].kind == "int"
    assert specs["use_curriculum"].kind == "bool"
    assert specs["bucket_weights"].kind == "weights"
    assert specs["nan_policy"].kind == "choice" and specs["nan_policy"].choices == ("raise", "skip")
    assert all(s.help for s in specs.values())
    assert specs["q_value_lr"].default == PRESETS["default"].q_value_lr


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_round_trips_through_the_controls(name):
    values = config_values(PRESETS[name])
    assert isinstance(values["bucket_weights"], str) and isinstance(values["nan_policy"], str)
    assert config_from_values(values) == PRESETS[name]


def test_values_from_the_page_are_converted_and_validated():
    values = config_values(PRESETS["default"])
    values.update(max_times_seen=7.0, freeze_confidence="0.9", bucket_weights="5; 2; 0")  # as a page sends them
    cfg = config_from_values(values)
    assert cfg.max_times_seen == 7 and cfg.freeze_confidence == 0.9 and cfg.bucket_weights == (5.0, 2.0, 0.0)
    with pytest.raises(ConfigError, match="freeze_confidence"):
        config_from_values({**values, "freeze_confidence": 1.5})
    with pytest.raises(ConfigError, match="max_times_seen: expected a whole number"):
        config_from_values({**values, "max_times_seen": 2.5})
    with pytest.raises(ConfigError, match="repartition_every: a value is needed"):
        config_from_values({**values, "repartition_every": None})
    with pytest.raises(ConfigError, match=r"no value for \['nan_policy'\]"):
        config_from_values({k: v for k, v in values.items() if k != "nan_policy"})


@pytest.mark.parametrize("text", ["3, 2", "a, b, c", "1, -1, 0", "", None, "1, 2, inf"])
def test_bad_bucket_weights_are_refused_with_the_expected_form(text):
    with pytest.raises(ConfigError, match="three numbers >= 0 for HARD, FOCUS, LIGHT"):
        parse_weights(text)


def test_training_fields_and_their_validation():
    specs = {s.name: s for s in training_fields()}
    assert tuple(specs) == APP_TRAINING_FIELDS
    assert specs["logging_steps"].default == 10  # the app's default: a live loss curve
    assert specs["save_total_limit"].kind == "optional_int" and specs["use_8bit_optimizer"].kind == "bool"
    values = {s.name: s.default for s in training_fields()}
    assert training_from_values({**values, "save_total_limit": ""})["save_total_limit"] is None
    assert training_from_values({**values, "save_total_limit": "3"})["save_total_limit"] == 3
    with pytest.raises(ConfigError, match="logging_steps must be an integer >= 1"):
        training_from_values({**values, "logging_steps": 0})
    with pytest.raises(ConfigError, match="weight_decay: expected a number"):
        training_from_values({**values, "weight_decay": "lots"})
