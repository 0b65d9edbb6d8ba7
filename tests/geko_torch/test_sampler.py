import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from geko_state import GEKOConfig, StateStore
from geko_state.errors import ConfigError, InputError
from geko_torch.data import GEKODataset
from geko_torch.sampler import GEKOSampler, shard_from
from geko_torch.serialization import load_tree, save_tree


def _store(n=100, **cfg):
    store = StateStore.create(n, config=GEKOConfig(log_bucket_stats=False, **cfg))
    rng = np.random.default_rng(0)
    for _ in range(3):  # give the buckets some spread
        ids = np.arange(n)
        store.observe(ids, rng.random(n) * 3, rng.random(n), rng.random(n) < 0.5)
    store.repartition()
    return store


def test_sampler_yields_the_store_plan_and_len_is_the_rank_share():
    store = _store()
    s = GEKOSampler(store, seed=3, total_epochs=4)
    # the sampler draws without replacement by default (the training default), plan_epoch with
    expected = store.plan_epoch(3, total_epochs=4, replacement=False)
    assert len(s) == len(expected) and list(s) == expected.tolist()
    shares = [list(GEKOSampler(store, seed=3, total_epochs=4, rank=r, world_size=3)) for r in range(3)]
    assert len({len(x) for x in shares}) == 1
    assert set().union(*shares) == set(expected.tolist())


def test_plan_follows_the_store_epoch_and_set_epoch_checks_it():
    store = _store()
    s = GEKOSampler(store, seed=0, total_epochs=5)
    first = list(s)
    s.set_epoch(1)
    with pytest.raises(InputError, match="set_epoch"):
        s.set_epoch(2)
    store.repartition()
    s.set_epoch(2)
    assert list(s) != first and list(s) == store.plan_epoch(0, total_epochs=5, replacement=False).tolist()


@pytest.mark.parametrize("world", [1, 2, 3])
def test_resume_mid_epoch_continues_exactly(tmp_path, world):
    store = _store(n=97)
    full = [list(GEKOSampler(store, seed=1, total_epochs=3, rank=r, world_size=world)) for r in range(world)]
    samplers = [GEKOSampler(store, seed=1, total_epochs=3, rank=r, world_size=world) for r in range(world)]
    for s in samplers:
        s.advance(10)
    save_tree(samplers[0].state_dict(), tmp_path, "sampler")
    state = load_tree(tmp_path, "sampler")
    store.observe([0, 1], [0.1, 0.2], [0.9, 0.9], [True, True])  # the state moves on; the plan must not
    for r in range(world):
        resumed = GEKOSampler(store, seed=1, total_epochs=3, rank=r, world_size=world)
        resumed.load_state_dict(state)
        assert list(resumed) == full[r][10:]
        assert resumed.global_position == 10 * world


def test_elastic_resume_two_ranks_then_one_covers_the_rest_of_the_plan():
    store = _store(n=90)
    plan = GEKOSampler(store, seed=2, total_epochs=3).plan.ids
    two = [GEKOSampler(store, seed=2, total_epochs=3, rank=r, world_size=2) for r in range(2)]
    for s in two:
        s.advance(7)
    one = GEKOSampler(store, seed=2, total_epochs=3, rank=0, world_size=1)
    one.load_state_dict(two[0].state_dict())
    assert list(one) == plan[14:].tolist()


def test_shard_from_matches_engine_shard_at_offset_zero():
    from geko_state import shard

    ids = np.arange(11, dtype=np.int64) * 7
    for w in (1, 2, 4):
        for r in range(w):
            assert np.array_equal(shard_from(ids, 0, r, w), shard(ids, r, w))


def test_load_state_dict_refuses_another_epoch_or_seed():
    store = _store()
    state = GEKOSampler(store, seed=1, total_epochs=3).state_dict()
    with pytest.raises(InputError, match="seed"):
        GEKOSampler(store, seed=2, total_epochs=3).load_state_dict(state)
    store.repartition()
    with pytest.raises(InputError, match="epoch"):
        GEKOSampler(store, seed=1, total_epochs=3).load_state_dict(state)
    with pytest.raises(InputError, match="malformed"):
        GEKOSampler(store, seed=1, total_epochs=3).load_state_dict({"epoch": 2})


@pytest.mark.parametrize("kwargs, words", [
    ({"seed": -1}, "seed"), ({"total_epochs": 0}, "total_epochs"), ({"budget": "most"}, "budget"),
    ({"rank": 1}, "rank and world_size"), ({"rank": 2, "world_size": 2}, "rank"),
])
def test_constructor_errors(kwargs, words):
    # The sampler's settings raise ConfigError, as GEKOSettings and GEKOSession do for the same values.
    with pytest.raises(ConfigError, match=words):
        GEKOSampler(_store(), **kwargs)


def test_finished_training_gives_an_empty_plan():
    store = _store()
    s = GEKOSampler(store, total_epochs=1)
    assert len(s) == 0 and list(s) == [] and s.state_dict()["plan_ids"].shape == (0,)


def test_works_inside_a_dataloader_with_the_dataset_wrapper():
    store = _store(n=20)
    ds = GEKODataset([{"input_ids": torch.tensor([i])} for i in range(20)])
    s = GEKOSampler(store, seed=0, total_epochs=2)
    seen = [int(i) for b in DataLoader(ds, batch_size=4, sampler=s) for i in b["sample_id"]]
    assert seen == list(s)
