from pathlib import Path

import pytest
import yaml

from multitask_bert.config import PACKAGED_ENCODER, PROJECT_TASKS_DIR, ExperimentConfig
from multitask_bert.errors import ConfigError

TASK = {
    "name": "sentiment",
    "type": "sequence",
    "heads": [{"name": "label", "type": "classification"}],
    "train": "data/train.jsonl",
}


def write(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))
    return path


def test_defaults_and_inline_task(tmp_path):
    cfg = ExperimentConfig.load(write(tmp_path / "exp.yaml", {"tasks": [TASK]}))
    assert cfg.encoder.name_or_path == PACKAGED_ENCODER
    assert Path(cfg.encoder.resolve_path(), "config.json").is_file()
    assert cfg.training.eval_strategy == "epoch"
    task = cfg.tasks[0]
    assert task.resolve_path(task.train) == str(tmp_path / "data/train.jsonl")
    assert cfg.run_dir == Path("runs/multitask").resolve()


def test_task_reference_by_name_and_path(tmp_path):
    write(tmp_path / "tasks_data" / "sentiment.yaml", TASK)
    cfg = ExperimentConfig.load(write(tmp_path / "exp.yaml", {"tasks": ["sentiment"]}))
    # relative paths in a task file resolve against that file's folder
    assert cfg.tasks[0].resolve_path(cfg.tasks[0].train) == str(
        tmp_path / "tasks_data/data/train.jsonl"
    )
    cfg2 = ExperimentConfig.load(write(tmp_path / "exp2.yaml",
                                       {"tasks": ["tasks_data/sentiment.yaml"]}))
    assert cfg2.tasks[0].name == "sentiment"


def test_missing_task_reference_lists_what_was_tried(tmp_path):
    with pytest.raises(ConfigError, match="task 'nope' not found; tried"):
        ExperimentConfig.load(write(tmp_path / "exp.yaml", {"tasks": ["nope"]}))


def test_bare_name_outside_the_checkout_finds_the_projects_sample_task(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # neither the config nor the working folder is the checkout
    cfg = ExperimentConfig.load(write(tmp_path / "elsewhere" / "exp.yaml",
                                      {"tasks": ["news_tagging"]}))
    task = cfg.tasks[0]
    assert task.base_dir == str(PROJECT_TASKS_DIR)
    assert Path(task.resolve_path(task.train)).is_file()


def test_bare_name_next_to_the_config_comes_first(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    mine = {**TASK, "name": "reviews"}  # shadows the project's sample task of that name
    write(tmp_path / "exp" / "reviews.yaml", mine)
    cfg = ExperimentConfig.load(write(tmp_path / "exp" / "exp.yaml", {"tasks": ["reviews"]}))
    assert cfg.tasks[0].resolve_path(cfg.tasks[0].train) == str(tmp_path / "exp/data/train.jsonl")


def test_bare_name_not_found_says_where_it_looked_in_order(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = write(tmp_path / "exp" / "exp.yaml", {"tasks": ["news_taging"]})
    with pytest.raises(ConfigError) as error:
        ExperimentConfig.load(config)
    lines = str(error.value).splitlines()
    assert lines[0] == f"{config}: tasks[0]: task 'news_taging' not found; tried, in this order:"
    assert lines[1:5] == [
        f"  {tmp_path}/exp/news_taging.yaml (next to the config)",
        f"  {tmp_path}/exp/tasks_data/news_taging.yaml (the config's tasks_data/)",
        f"  {tmp_path}/tasks_data/news_taging.yaml (tasks_data/ beside the config's folder)",
        f"  {PROJECT_TASKS_DIR}/news_taging.yaml (the project's own tasks_data/)",
    ]
    assert "Did you mean 'news_tagging'?" in lines[5]


def test_typo_names_file_key_and_suggestion(tmp_path):
    path = write(tmp_path / "exp.yaml", {"tasks": [TASK], "training": {"learnig_rate": 1e-4}})
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.load(path)
    message = str(err.value)
    assert str(path) in message
    assert "training.learnig_rate" in message
    assert "did you mean 'learning_rate'" in message


def test_typo_inside_task_file_names_that_file(tmp_path):
    task_file = write(tmp_path / "tasks_data" / "s.yaml",
                      {**TASK, "heads": [{"name": "label", "typ": "classification"}]})
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.load(write(tmp_path / "exp.yaml", {"tasks": ["s"]}))
    assert str(task_file) in str(err.value)
    assert "tasks[sentiment].heads[label]" in str(err.value)
    assert "did you mean 'type'" in str(err.value)


def test_wrong_type_names_the_key(tmp_path):
    path = write(tmp_path / "exp.yaml", {"tasks": [TASK], "training": {"epochs": "many"}})
    with pytest.raises(ConfigError, match=r"training\.epochs.*integer.*'many'"):
        ExperimentConfig.load(path)


def test_unknown_head_type_and_task_type(tmp_path):
    bad = {**TASK, "type": "document", "heads": [{"name": "x", "type": "ranking"}]}
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.load(write(tmp_path / "exp.yaml", {"tasks": [bad]}))
    assert "tasks[sentiment].type" in str(err.value)
    assert "'sequence' or 'token'" in str(err.value)
    assert "heads[x].type" in str(err.value)


def test_overrides_set_values_by_name_and_index(tmp_path):
    path = write(tmp_path / "exp.yaml", {"tasks": [TASK]})
    cfg = ExperimentConfig.load(path, [
        "training.learning_rate=3e-5",
        "training.epochs=1",
        "tasks.sentiment.train.limit=50",
        "tasks.0.heads.label.loss_weight=0.5",
        "logging.backend=none",
    ])
    assert cfg.training.learning_rate == pytest.approx(3e-5)
    assert cfg.training.epochs == 1
    assert cfg.tasks[0].train.limit == 50
    assert cfg.tasks[0].train.path == "data/train.jsonl"
    assert cfg.tasks[0].heads[0].loss_weight == 0.5
    assert cfg.logging.backend == "none"


def test_override_typo_says_it_came_from_the_override(tmp_path):
    path = write(tmp_path / "exp.yaml", {"tasks": [TASK]})
    with pytest.raises(ConfigError, match=r"did you mean 'training'.*from override"):
        ExperimentConfig.load(path, ["trainig.epochs=2"])
    with pytest.raises(ConfigError, match="expected key=value"):
        ExperimentConfig.load(path, ["training.epochs"])


def test_semantic_checks(tmp_path):
    cases = [
        ({"training": {"eval_strategy": "steps"}}, "needs eval_steps"),
        ({"training": {"early_stopping": {"metric": "sentiment/nohead"}}}, "has no head"),
        ({"training": {"task_batch_size": {"other": 8}}}, "unknown tasks"),
        ({"encoder": {"config_overrides": {"hidden_size": 8}}}, "needs random_init"),
        ({"tasks": [TASK, TASK]}, "must be unique"),
    ]
    for extra, expected in cases:
        data = {"tasks": [TASK], **extra}
        with pytest.raises(ConfigError, match=expected):
            ExperimentConfig.load(write(tmp_path / "exp.yaml", data))


def test_token_task_rejects_sequence_heads(tmp_path):
    bad = {**TASK, "type": "token"}
    with pytest.raises(ConfigError, match="token tasks take `tagging` heads"):
        ExperimentConfig.load(write(tmp_path / "exp.yaml", {"tasks": [bad]}))


def test_invalid_yaml_names_line(tmp_path):
    path = tmp_path / "exp.yaml"
    path.write_text("tasks:\n  - name: [unclosed\n")
    with pytest.raises(ConfigError, match=r"exp\.yaml: line \d+"):
        ExperimentConfig.load(path)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        ExperimentConfig.load(tmp_path / "nope.yaml")


def test_resolved_config_round_trips(tmp_path):
    cfg = ExperimentConfig.load(write(tmp_path / "exp.yaml", {"tasks": [TASK]}))
    dumped = write(tmp_path / "elsewhere" / "resolved.yaml", cfg.to_dict())
    again = ExperimentConfig.load(dumped)
    assert again.tasks[0].resolve_path(again.tasks[0].train) == str(
        tmp_path / "data/train.jsonl"
    )
    assert again.to_dict() == cfg.to_dict()
