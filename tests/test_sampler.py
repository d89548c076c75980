"""SeededShardSampler: the data order behind exact resume and rank sharding."""

from __future__ import annotations

import pytest

from utils.runtime.data import SeededShardSampler, shard_indices


def test_ranks_split_the_single_process_batch():
    """Two ranks with batch 2 see exactly the 4 samples one process with batch 4 sees, per step."""
    one = list(SeededShardSampler(20, 4, 0, 1, seed=1))
    r0 = list(SeededShardSampler(20, 2, 0, 2, seed=1))
    r1 = list(SeededShardSampler(20, 2, 1, 2, seed=1))
    for step in range(len(r0) // 2):
        union = set(r0[2 * step : 2 * step + 2]) | set(r1[2 * step : 2 * step + 2])
        assert union == set(one[4 * step : 4 * step + 4])
    assert not {i for i, _ in r0} & {i for i, _ in r1}


def test_epochs_reshuffle_and_seeds_depend_on_epoch_and_index():
    sampler = SeededShardSampler(50, 5, 0, 1, seed=7)
    first = list(sampler)
    sampler.set_epoch(1)
    second = list(sampler)
    assert [i for i, _ in first] != [i for i, _ in second]
    assert sorted(i for i, _ in first) == sorted(i for i, _ in second) == list(range(50))
    seeds = {i: s for i, s in first}
    assert any(seeds[i] != s for i, s in second)  # same image, new epoch, new augmentation
    sampler.set_epoch(0)
    assert list(sampler) == first  # deterministic


def test_start_batch_skips_whole_batches_and_drops_the_tail():
    sampler = SeededShardSampler(23, 4, 0, 1, seed=0)
    full = list(sampler)
    assert len(full) == 20 == len(sampler)  # 5 whole batches, 3 dropped
    sampler.set_epoch(0, start_batch=3)
    assert list(sampler) == full[12:] and len(sampler) == 8


def test_too_few_images_for_one_batch_per_rank():
    with pytest.raises(ValueError, match="cannot fill one batch"):
        SeededShardSampler(3, 2, 0, 2, seed=0)


def test_eval_shards_are_disjoint_and_complete():
    shards = [shard_indices(11, r, 3) for r in range(3)]
    assert sorted(sum(shards, [])) == list(range(11))
    assert shard_indices(11, 0, 1, limit=4) == [0, 1, 2, 3]
