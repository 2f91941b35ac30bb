"""What a training run returns and writes to ``<output_dir>/metrics.json``. No torch."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from multitask_bert.evaluation.evaluator import Metrics


@dataclass
class TrainResult:
    """What ``Trainer.train`` returns (also written to ``<output_dir>/metrics.json``)."""

    best: Metrics = field(default_factory=dict)
    last: Metrics = field(default_factory=dict)
    best_score: float | None = None
    best_step: int | None = None
    score_metric: str = "mean"
    global_step: int = 0
    epochs_completed: int = 0
    stopped_early: bool = False
    train_seconds: float = 0.0
    """Time in the training loop, summed over every process of a resumed training (each
    checkpoint holds the sum so far; a killed process's time after its last checkpoint is
    not counted)."""
    output_dir: str = ""
    run_id: str | None = None
    """The tracking run (MLflow run id) that holds this training's metrics."""
    resumed_from_step: int | None = None
    """The checkpoint step this run resumed from (None: it started fresh)."""
    world_size: int = 1
    """Processes that trained (torchrun); batch sizes are per process."""
    rank_weight_checksums: list[float] | None = None
    """Under torchrun: the sum of every rank's final weights (they must be equal)."""
    baseline: Metrics = field(default_factory=dict)
    """Majority-class baseline of every head on the evaluation data (for comparison)."""
    gradients: dict[str, float] = field(default_factory=dict)
    """The last gradient telemetry: ``grad/<task>/norm`` and ``grad/<a>~<b>/cosine``."""
    telemetry_seconds: float = 0.0
    """Time spent on gradient telemetry (compare with ``train_seconds``)."""

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)
