"""Early stopping: is this evaluation the best so far, and is it time to stop? No torch."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass
class EarlyStopping:
    """Track the best score and count evaluations without improvement.

    Args:
        mode: ``max`` (higher is better) or ``min``.
        patience: evaluations without improvement before ``should_stop``; None never stops.
        min_delta: the smallest change that counts as an improvement.
    """

    mode: str = "max"
    patience: int | None = None
    min_delta: float = 0.0
    best: float | None = None
    best_step: int | None = None
    bad_evals: int = 0

    def __post_init__(self) -> None:
        if self.mode not in ("max", "min"):
            raise ValueError(f"mode must be 'max' or 'min', got {self.mode!r}")

    def update(self, score: float, step: int) -> bool:
        """Record an evaluation; True when it improves on the best so far."""
        if math.isnan(score):
            improved = False
        elif self.best is None:
            improved = True
        elif self.mode == "max":
            improved = score > self.best + self.min_delta
        else:
            improved = score < self.best - self.min_delta
        if improved:
            self.best, self.best_step, self.bad_evals = score, step, 0
        else:
            self.bad_evals += 1
        return improved

    @property
    def should_stop(self) -> bool:
        return self.patience is not None and self.bad_evals >= self.patience

    def state_dict(self) -> dict:
        return asdict(self)

    def load_state_dict(self, state: dict) -> None:
        for key, value in state.items():
            setattr(self, key, value)
