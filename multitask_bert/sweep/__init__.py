"""Hyper-parameter sweeps: a search space (``space``) and an Optuna study whose trials are
training runs started elsewhere, e.g. by the ``sweep-multitask`` flow (``study``)."""

from multitask_bert.sweep.space import Parameter, SearchSpace, override
from multitask_bert.sweep.study import (
    STUDY_FILE,
    Sweep,
    TrialOutcome,
    TrialRecord,
    TrialTicket,
    study_storage,
)

__all__ = [
    "STUDY_FILE",
    "Parameter",
    "SearchSpace",
    "Sweep",
    "TrialOutcome",
    "TrialRecord",
    "TrialTicket",
    "override",
    "study_storage",
]
