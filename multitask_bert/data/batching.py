"""Batch plans: which example indices form each batch of an epoch. No torch here.

Length grouping (as in Hugging Face's ``LengthGroupedSampler``): shuffle, cut the order into
mega-batches of ``mega_batch_mult`` batches, sort each mega-batch by length, cut it into
batches, then shuffle the batch order. Batches then hold examples of similar length, so
dynamic padding wastes few tokens, while the order stays random from epoch to epoch.
"""

from __future__ import annotations

import random
from collections.abc import Sequence


def epoch_rng(seed: int, epoch: int, stream: int = 0) -> random.Random:
    """A generator that depends only on (seed, epoch, stream): the data order of an epoch
    never depends on how far training got, which makes resuming exact."""
    return random.Random(f"{seed}/{epoch}/{stream}")


def plan_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    rng: random.Random | None,
    group_by_length: bool = True,
    mega_batch_mult: int = 50,
) -> list[list[int]]:
    """Indices of each batch of one pass over a dataset.

    Args:
        lengths: token count of every example.
        batch_size: examples per batch (the last batch may be smaller).
        rng: shuffles when given; ``None`` keeps order (evaluation sorts by length instead).
        group_by_length: group examples of similar length into the same batch.
        mega_batch_mult: batches per sorted mega-batch.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = list(range(len(lengths)))
    if rng is None:
        if group_by_length:
            order.sort(key=lambda i: -lengths[i])
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    rng.shuffle(order)
    if not group_by_length:
        return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]
    mega = batch_size * mega_batch_mult
    grouped: list[int] = []
    for start in range(0, len(order), mega):
        chunk = order[start : start + mega]
        chunk.sort(key=lambda i: -lengths[i])
        grouped.extend(chunk)
    batches = [grouped[i : i + batch_size] for i in range(0, len(grouped), batch_size)]
    rng.shuffle(batches)
    return batches
