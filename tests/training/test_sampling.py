import random
from collections import Counter

import pytest

from multitask_bert.training.sampling import (
    ProportionalSampler,
    RoundRobinSampler,
    TemperatureSampler,
    build_sampler,
)


def test_round_robin_takes_one_batch_per_task_in_turn():
    order = RoundRobinSampler().epoch_order({"a": 3, "b": 1, "c": 2}, random.Random(0))
    assert order == ["a", "b", "c", "a", "c", "a"]


def test_round_robin_exhausted_task_drops_out_and_epoch_ends_when_all_are_exhausted():
    order = RoundRobinSampler().epoch_order({"big": 5, "small": 2}, random.Random(0))
    assert order == ["big", "small", "big", "small", "big", "big", "big"]
    assert Counter(order) == {"big": 5, "small": 2}


@pytest.mark.parametrize("sizes", [{"a": 0, "b": 2}, {"a": 0}, {}])
def test_round_robin_with_empty_tasks(sizes):
    order = RoundRobinSampler().epoch_order(sizes, random.Random(0))
    assert Counter(order) == {k: v for k, v in sizes.items() if v}


def test_round_robin_exhaustive_small_cases():
    # every combination of sizes 0..4 for three tasks: each task appears exactly its number
    # of batches, and at any prefix no task runs more than one round ahead of a live task
    for a in range(5):
        for b in range(5):
            for c in range(5):
                sizes = {"a": a, "b": b, "c": c}
                order = RoundRobinSampler().epoch_order(sizes, random.Random(0))
                assert Counter(order) == {k: v for k, v in sizes.items() if v}
                seen = Counter()
                for task in order:
                    seen[task] += 1
                    for other, n in sizes.items():
                        if seen[other] < n:  # still live
                            assert seen[task] <= seen[other] + 1


def test_proportional_covers_every_batch_once_and_is_seeded():
    sizes = {"a": 10, "b": 3}
    first = ProportionalSampler().epoch_order(sizes, random.Random(1))
    again = ProportionalSampler().epoch_order(sizes, random.Random(1))
    other = ProportionalSampler().epoch_order(sizes, random.Random(2))
    assert Counter(first) == sizes
    assert first == again
    assert first != other


def test_temperature_upsamples_small_tasks():
    sizes = {"big": 900, "small": 100}
    cold = Counter(TemperatureSampler(1.0).epoch_order(sizes, random.Random(0)))
    hot = Counter(TemperatureSampler(100.0).epoch_order(sizes, random.Random(0)))
    assert sum(cold.values()) == sum(hot.values()) == 1000
    assert 60 < cold["small"] < 140  # ~ proportional (100)
    assert 420 < hot["small"] < 580  # ~ uniform (500)


def test_build_sampler_rejects_unknown():
    with pytest.raises(ValueError, match="unknown sampling"):
        build_sampler("random")
