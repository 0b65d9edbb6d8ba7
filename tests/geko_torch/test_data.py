import pytest
import torch

from geko_state.errors import ConfigError, InputError
from geko_torch.data import GEKODataset, PadCollator


def test_dataset_adds_int64_sample_id():
    ds = GEKODataset([{"input_ids": [1, 2]}, {"input_ids": [3]}])
    item = ds[1]
    assert item["sample_id"].dtype == torch.int64 and int(item["sample_id"]) == 1
    assert item["input_ids"] == [3] and len(ds) == 2


@pytest.mark.parametrize("data, words", [
    ([], "empty"),
    ([[1, 2, 3]], "dict"),
    ([{"text": "hello"}], "input_ids"),
    (42, "map-style"),
])
def test_dataset_errors_name_the_expected_form(data, words):
    with pytest.raises(InputError, match=words):
        GEKODataset(data)


def test_bad_item_later_in_the_dataset_is_reported_with_its_index():
    ds = GEKODataset([{"input_ids": [1]}, "oops"])
    with pytest.raises(InputError, match=r"dataset\[1\].*dict"):
        ds[1]


def test_item_with_its_own_sample_id_is_refused():
    with pytest.raises(InputError, match="sample_id"):
        GEKODataset([{"input_ids": [1], "sample_id": 3}])[0]


def test_pad_collator_pads_each_field_with_its_own_value():
    items = [
        {"input_ids": torch.tensor([1, 2, 3]), "labels": torch.tensor([-100, 2, 3]), "sample_id": torch.tensor(0)},
        {"input_ids": torch.tensor([4]), "labels": torch.tensor([4]), "sample_id": torch.tensor(1)},
    ]
    b = PadCollator(pad_token_id=9)(items)
    assert b["input_ids"].tolist() == [[1, 2, 3], [4, 9, 9]]
    assert b["labels"].tolist() == [[-100, 2, 3], [4, -100, -100]]
    assert b["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]
    assert b["sample_id"].tolist() == [0, 1]
    left = PadCollator(pad_token_id=9, padding_side="left")(items)
    assert left["input_ids"].tolist() == [[1, 2, 3], [9, 9, 4]]
    assert left["attention_mask"].tolist() == [[1, 1, 1], [0, 0, 1]]


def test_pad_collator_errors():
    with pytest.raises(ConfigError, match="padding_side"):
        PadCollator(padding_side="middle")
    with pytest.raises(InputError, match="empty batch"):
        PadCollator()([])
    with pytest.raises(InputError, match="'x'"):
        PadCollator()([{"input_ids": [1], "x": [1, 2]}, {"input_ids": [1], "x": [1]}])
