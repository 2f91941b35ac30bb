"""The packaged MiniLM on a subset of ../shared/datasets: every head must clearly beat its
majority-class baseline on validation. A few minutes on a 2-core CPU."""

from __future__ import annotations

import json
import time

import pytest

from multitask_bert.config import ExperimentConfig
from multitask_bert.pipeline import train_experiment
from tests.conftest import DATASETS, REPO

pytestmark = pytest.mark.integration

# a clear margin over the baseline, per major metric (baseline NER/chunk F1 is ~0)
MARGINS = {"accuracy": 0.10, "f1": 0.30}


@pytest.mark.skipif(not (DATASETS / "conll2003").is_dir(),
                    reason="../shared/datasets is not beside the checkout")
def test_minilm_beats_majority_baseline_on_every_head(tmp_path):
    overrides = [
        "tasks.conll2003.train.limit=1200",
        "tasks.conll2003.validation.limit=400",
        "tasks.trec.train.limit=1500",
        "tasks.sst2.train.limit=1500",
        "tasks.sst2.validation.limit=400",
        "max_length=64",
        "training.epochs=2",
        "training.batch_size=32",
        "training.learning_rate=2e-4",
        "training.early_stopping.patience=null",
        "training.progress_bar=false",
        "logging.backend=none",
        f"output_dir={tmp_path / 'run'}",
        f"cache_dir={tmp_path / 'cache'}",
    ]
    config = ExperimentConfig.load(REPO / "configs" / "benchmark.yaml", overrides)
    started = time.perf_counter()
    result = train_experiment(config)
    seconds = time.perf_counter() - started
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    report = {"seconds": round(seconds), "best": {}, "baseline": {}}
    failures = []
    for task in config.tasks:
        for head in task.heads:
            metric = head.major
            score = metrics["best"][task.name][head.name][metric]
            baseline = metrics["baseline"][task.name][head.name][metric]
            report["best"][f"{task.name}/{head.name}/{metric}"] = round(score, 4)
            report["baseline"][f"{task.name}/{head.name}/{metric}"] = round(baseline, 4)
            if score < baseline + MARGINS[metric]:
                failures.append(f"{task.name}/{head.name}: {metric} {score:.3f} vs baseline "
                                f"{baseline:.3f} (+{MARGINS[metric]} needed)")
    print(json.dumps(report, indent=2))
    assert not failures, failures
    assert result.best_step is not None
