"""Task samplers: the order in which tasks take a training step within an epoch.

A sampler turns ``{task: number of batches}`` into a list of task names for one epoch. No
torch here: the order is plain data, so it is tested exhaustively, known before the epoch
starts (the scheduler's step count is exact) and resumable from a position.
"""

from __future__ import annotations

import random
from typing import Protocol


class TaskSampler(Protocol):
    def epoch_order(self, num_batches: dict[str, int], rng: random.Random) -> list[str]:
        """Task name of every step of one epoch."""
        ...


class RoundRobinSampler:
    """One batch from each task in turn; an exhausted task drops out; the epoch ends when
    all tasks are exhausted."""

    def epoch_order(self, num_batches: dict[str, int], rng: random.Random) -> list[str]:
        remaining = dict(num_batches)
        order: list[str] = []
        while any(remaining.values()):
            for task in num_batches:
                if remaining[task] > 0:
                    order.append(task)
                    remaining[task] -= 1
        return order


class ProportionalSampler:
    """Every batch of every task once, in a random order: at each step a task is drawn with
    probability proportional to its remaining batches."""

    def epoch_order(self, num_batches: dict[str, int], rng: random.Random) -> list[str]:
        order = [task for task, n in num_batches.items() for _ in range(n)]
        rng.shuffle(order)
        return order


class TemperatureSampler:
    """Draw a task with probability proportional to ``size ** (1 / temperature)`` for as many
    steps as the tasks have batches together. ``temperature`` 1 is proportional sampling;
    larger values up-sample small tasks (their batches repeat, reshuffled), smaller ones
    down-sample them."""

    def __init__(self, temperature: float = 2.0) -> None:
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = temperature

    def epoch_order(self, num_batches: dict[str, int], rng: random.Random) -> list[str]:
        tasks = [t for t, n in num_batches.items() if n > 0]
        weights = [num_batches[t] ** (1.0 / self.temperature) for t in tasks]
        total = sum(num_batches.values())
        return rng.choices(tasks, weights=weights, k=total) if tasks else []


def build_sampler(name: str, temperature: float = 2.0) -> TaskSampler:
    if name == "round_robin":
        return RoundRobinSampler()
    if name == "proportional":
        return ProportionalSampler()
    if name == "temperature":
        return TemperatureSampler(temperature)
    raise ValueError(f"unknown sampling strategy {name!r}")
