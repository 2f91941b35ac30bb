"""Single-task baselines on tiny random BERTs: every head compared, deltas are the
differences of the two runs' recorded scores, metrics.json keeps its other keys."""

import json

import pytest
import yaml

from multitask_bert.cli import main
from multitask_bert.pipeline import run_with_baselines
from multitask_bert.single_task import compare, comparison_markdown


def _recorded(run_dir):
    return json.loads((run_dir / "metrics.json").read_text())


def test_comparison_has_every_head_and_deltas_are_differences_of_the_runs(tiny_config):
    config = tiny_config(task_batch_size={"sentiment": 8})
    config = config.model_copy(update={
        "logging": config.logging.model_copy(update={"backend": "tensorboard"}),
        "baselines": "single_task",
    })
    result, report = run_with_baselines(config)
    run = config.run_dir
    recorded = _recorded(run)

    # metrics.json gains `baselines` and keeps everything the trainer wrote
    for key, value in json.loads(json.dumps(result.to_dict())).items():
        assert recorded[key] == value, key
    assert set(recorded["baselines"]) >= {"single_task", "comparison"}

    rows = recorded["baselines"]["comparison"]
    assert rows == report["comparison"]
    expected = [(t.name, h.name) for t in config.tasks for h in t.heads]
    assert [(r["task"], r["head"]) for r in rows] == expected  # every head of every task
    for row in rows:
        task, head = row["task"], config.task(row["task"]).head(row["head"])
        assert row["metric"] == head.major
        single_run = run / "baselines" / task
        single = _recorded(single_run)
        assert list(single["best"]) == [task]  # a single-task run
        multi_score = recorded["best"][task][head.name][head.major]
        single_score = single["best"][task][head.name][head.major]
        assert row["multi_task"] == multi_score
        assert row["single_task"] == single_score
        assert row["delta"] == pytest.approx(multi_score - single_score, abs=1e-12)
        assert recorded["baselines"]["single_task"][task] == single["best"][task]

        # the same budget and hyper-parameters: epochs over the task's data, its batch size
        batches = 24 // config.training.batch_size_for(task)  # 24 train rows per task
        assert single["global_step"] == config.training.epochs * batches
        single_config = yaml.safe_load((single_run / "config.yaml").read_text())
        assert [t["name"] for t in single_config["tasks"]] == [task]
        for key in ("epochs", "learning_rate", "seed", "scheduler", "warmup_ratio",
                    "batch_size", "weight_decay"):
            assert single_config["training"][key] == getattr(config.training, key), key

    # the tracking backend got the table; the flow gets markdown with one line per head
    logged = json.loads((run / "tensorboard" / "baselines" / "comparison.json").read_text())
    assert logged["comparison"] == rows
    assert report["markdown"] == comparison_markdown(rows)
    assert len(report["markdown"].splitlines()) == 2 + len(rows)


def test_cli_reuses_a_finished_run(tiny_config, tmp_path, capsys):
    config = tiny_config(epochs=1)
    from multitask_bert.pipeline import train_experiment

    train_experiment(config)
    before = _recorded(config.run_dir)
    config_file = tmp_path / "experiment.yaml"
    config_file.write_text(config.to_yaml())

    assert main(["baselines", "--config", str(config_file), "--run-dir",
                 str(config.run_dir)]) == 0
    out = capsys.readouterr().out
    after = _recorded(config.run_dir)
    assert {k: v for k, v in after.items() if k != "baselines"} == before  # not retrained
    assert len(after["baselines"]["comparison"]) == 5
    assert "| tagging/ner (f1) |" in out and "| pairs/score (pearson) |" in out


def test_compare_reports_a_head_without_scores_as_none(tiny_config):
    config = tiny_config()
    multi = {"sentiment": {"label": {"accuracy": 0.75}}}
    single = {"sentiment": {"label": {"accuracy": 0.5}}, "pairs": {"score": {"pearson": 0.1}}}
    rows = compare(multi, single, config.tasks)
    assert len(rows) == 5
    by_head = {(r["task"], r["head"]): r for r in rows}
    assert by_head["sentiment", "label"]["delta"] == 0.25
    assert by_head["pairs", "score"] == {"task": "pairs", "head": "score", "metric": "pearson",
                                         "multi_task": None, "single_task": 0.1, "delta": None}
    assert "| pairs/score (pearson) | n/a | 0.1000 | n/a |" in comparison_markdown(rows)
