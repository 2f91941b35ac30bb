"""The MLflow registry: packaging, promotion rule, aliases, loading back (a real SQLite store)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest
from mlflow import MlflowClient

from multitask_bert.config import EncoderConfig
from multitask_bert.inference import Predictor
from multitask_bert.models.multitask import build_model, load_tokenizer
from multitask_bert.registry import (
    RegistrationResult,
    find_champion,
    load_champion,
    log_model,
    mlflow_store,
    register,
)
from multitask_bert.tasks import TaskSpec
from multitask_bert.tracking import MLflowLogger
from tests.conftest import TINY_ENCODER

TASKS = [
    TaskSpec(name="tagging", type="token", train="unused.jsonl",
             heads=[{"name": "ner", "type": "tagging", "scheme": "IOB2"},
                    {"name": "pos", "type": "tagging"}]),
    TaskSpec(name="review", type="sequence", train="unused.jsonl",
             heads=[{"name": "label", "type": "classification"},
                    {"name": "stars", "type": "regression"}]),
]
VOCAB = {"tagging": {"ner": ["O", "B-PER", "I-PER", "B-LOC"], "pos": ["NOUN", "VERB", "PUNCT"]},
         "review": {"label": ["neg", "pos"]}}
SAME_DATA = {"tagging": "fp-tag-1", "review": "fp-rev-1"}

MIXED_ROWS = [
    {"task": "review", "text": "the film was lovely"},
    {"task": "tagging", "tokens": ["Alice", "smith", "visited", "Paris", "."]},
    {"task": "review", "text": "dreadful and boring"},
    {"task": "tagging", "tokens": ["Bob", "left"]},
]


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> SimpleNamespace:
    """One tiny model, saved and logged once, in a fresh SQLite store."""
    root = tmp_path_factory.mktemp("registry")
    model_dir = root / "run" / "best"
    model = build_model(EncoderConfig(**TINY_ENCODER), TASKS, VOCAB, seed=3)
    model.save(model_dir, load_tokenizer(EncoderConfig().resolve_path()))
    uri = "sqlite:///" + (root / "mlflow.db").as_posix()
    model_uri = log_model(model_dir, tracking_uri=uri, experiment_name="registry-tests")
    return SimpleNamespace(root=root, model_dir=model_dir, uri=uri, model_uri=model_uri,
                           client=MlflowClient(tracking_uri=uri, registry_uri=uri))


def _register(store: SimpleNamespace, name: str, score: float, data: dict | None = None,
              **kwargs) -> RegistrationResult:
    return register(store.model_uri, tracking_uri=store.uri, model_name=name, score=score,
                    score_metric="mean", data_fingerprints=data or SAME_DATA,
                    config_hash="cfg-1", git_commit="abc123", **kwargs)


def _aliases(store: SimpleNamespace, name: str) -> dict[str, str]:
    aliases = store.client.get_registered_model(name).aliases  # versions come back as ints
    return {alias: str(version) for alias, version in aliases.items()}


def test_log_model_packages_artifacts_code_and_pinned_requirements(store):
    assert store.model_uri.startswith("models:/m-")
    logged = store.client.get_logged_model(store.model_uri.removeprefix("models:/"))
    assert logged.artifact_location.startswith((store.root / "mlartifacts").as_uri())
    (store.root / "logged").mkdir()
    with mlflow_store(store.uri):  # `models:/` downloads ignore `tracking_uri=` (MLflow 3.17)
        local = Path(mlflow.artifacts.download_artifacts(
            store.model_uri, dst_path=str(store.root / "logged")))
    assert (local / "artifacts" / "best" / "multitask_config.json").is_file()
    assert (local / "code" / "multitask_bert" / "inference.py").is_file()
    requirements = (local / "requirements.txt").read_text().split()
    assert "torch==2.13.0" in requirements  # the local tag (+cpu) is cut
    assert any(r.startswith("transformers==") for r in requirements)
    run = store.client.get_run(logged.source_run_id)
    assert run.info.status == "FINISHED"  # the run log_model made for itself is closed


def test_first_registration_is_champion_and_challenger_with_tags(store):
    result = _register(store, "first", 0.8, extra_tags={"trigger": "test"})

    assert (result.version, result.promoted) == ("1", True)
    assert result.aliases == ["challenger", "champion"]
    assert result.champion_version == "1" and result.champion_score is None
    assert result.reason.startswith("promoted: no champion yet")
    tags = store.client.get_model_version("first", "1").tags
    assert tags["score"] == "0.8" and tags["score_metric"] == "mean"
    assert tags["data_fingerprint.tagging"] == "fp-tag-1"
    assert tags["data_fingerprint.review"] == "fp-rev-1"
    assert tags["config_hash"] == "cfg-1" and tags["git_commit"] == "abc123"
    assert tags["trigger"] == "test" and tags["promoted"] == "true"
    assert json.loads(json.dumps(result.to_dict()))["model_uri"] == "models:/first/1"

    champion = find_champion(store.uri, "first")
    assert champion is not None
    assert (champion["version"], champion["score"]) == ("1", 0.8)
    assert champion["data_fingerprints"] == SAME_DATA
    assert champion["config_hash"] == "cfg-1"
    assert find_champion(store.uri, "no-such-model") is None


def test_champion_moves_only_for_a_score_at_least_as_good_on_the_same_data(store):
    _register(store, "ladder", 0.8)

    lower = _register(store, "ladder", 0.71)
    assert (lower.version, lower.promoted, lower.aliases) == ("2", False, ["challenger"])
    assert lower.reason == "not promoted: score 0.71 < champion v1 0.8 (mean, same data)"
    assert (lower.champion_version, lower.champion_score) == ("1", 0.8)
    assert _aliases(store, "ladder") == {"champion": "1", "challenger": "2"}
    tags = store.client.get_model_version("ladder", "2").tags
    assert tags["promoted"] == "false" and tags["not_promoted_reason"] == lower.reason

    equal = _register(store, "ladder", 0.8)
    assert equal.promoted and equal.reason.startswith("promoted: score 0.8 >= champion v1")
    higher = _register(store, "ladder", 0.9)
    assert higher.promoted and higher.champion_score == 0.8  # compared with v3, which had 0.8
    assert _aliases(store, "ladder") == {"champion": "4", "challenger": "4"}


def test_changed_data_compares_with_the_champion_rescored_on_the_new_data(store):
    _register(store, "drift", 0.8)
    calls: list[str] = []

    def rescore(value: float):
        def score(model_uri: str) -> float:
            calls.append(model_uri)
            return value
        return score

    # Stored 0.8 was on other data; on the new data the champion scores 0.7 < 0.75.
    new_data = {"tagging": "fp-tag-2", "review": "fp-rev-1"}
    promoted = _register(store, "drift", 0.75, new_data, rescore_champion=rescore(0.7))
    assert calls == ["models:/drift/1"]
    assert promoted.promoted and promoted.champion_score == 0.7
    assert "rescored on the new data" in promoted.reason

    # Stored 0.75 beats 0.74, but the champion rescored on the newer data scores 0.9.
    newer = {"tagging": "fp-tag-3", "review": "fp-rev-1"}
    kept = _register(store, "drift", 0.74, newer, rescore_champion=rescore(0.9))
    assert calls[-1] == "models:/drift/2"
    assert not kept.promoted and kept.champion_score == 0.9
    assert kept.reason == ("not promoted: score 0.74 < champion v2 0.9 "
                           "(mean, champion rescored on the new data)")

    # Same data as the champion again: the stored scores are compared, no rescoring.
    again = _register(store, "drift", 0.76, new_data, rescore_champion=rescore(0.0))
    assert len(calls) == 2 and again.promoted and again.champion_score == 0.75


def test_changed_data_without_a_rescorer_promotes_and_says_why(store):
    _register(store, "no-rescorer", 0.9)
    result = _register(store, "no-rescorer", 0.5, {"tagging": "other"})
    assert result.promoted
    assert "not comparable" in result.reason and "no rescore_champion" in result.reason


def test_a_failure_after_the_version_exists_moves_no_alias(store):
    _register(store, "broken", 0.8)

    def rescore(model_uri: str) -> float:
        raise RuntimeError("evaluation crashed")

    with pytest.raises(RuntimeError, match="evaluation crashed"):
        _register(store, "broken", 0.99, {"tagging": "new"}, rescore_champion=rescore)
    version = store.client.get_model_version("broken", "2")  # the version stays...
    assert version.aliases == []  # ...but no alias moved
    assert version.tags["promoted"] == "false"
    assert "evaluation crashed" in version.tags["not_promoted_reason"]
    assert _aliases(store, "broken") == {"champion": "1", "challenger": "1"}


def test_lower_is_better_metrics_promote_the_smaller_score(store):
    _register(store, "loss", 0.5, higher_is_better=False)
    worse = _register(store, "loss", 0.6, higher_is_better=False)
    better = _register(store, "loss", 0.4, higher_is_better=False)
    assert (worse.promoted, better.promoted) == (False, True)
    assert worse.reason == "not promoted: score 0.6 > champion v1 0.5 (mean, same data)"


def test_a_non_finite_score_is_refused_before_anything_is_written(store):
    with pytest.raises(ValueError, match="finite"):
        _register(store, "nan", float("nan"))
    assert store.client.search_registered_models("name = 'nan'") == []


def test_champion_predicts_every_head_of_a_mixed_frame_like_the_predictor(store, tmp_path):
    _register(store, "serve", 0.5)
    frame = pd.DataFrame(MIXED_ROWS)  # NaN in each row's unused columns
    (tmp_path / "a").mkdir()  # MLflow wants dst_path to exist
    with mlflow_store(store.uri):
        model = mlflow.pyfunc.load_model("models:/serve@champion", dst_path=str(tmp_path / "a"))
    predictions = model.predict(frame)

    predictor = Predictor(store.model_dir)
    expected = {task: iter(predictor.predict(task, [r for r in MIXED_ROWS if r["task"] == task]))
                for task in ("review", "tagging")}
    assert predictions == [{"task": row["task"], "predictions": next(expected[row["task"]])}
                           for row in MIXED_ROWS]
    heads = [set(p["predictions"]) for p in predictions]
    assert heads[0] == {"label", "stars"} and heads[1] == {"ner", "pos"}
    assert len(predictions[1]["predictions"]["ner"]["tags"]) == 5
    assert model.predict(MIXED_ROWS) == predictions  # a list of dicts works too

    loaded = load_champion(store.uri, "serve", tmp_path / "b")
    assert loaded.predict(frame) == predictions
    assert (tmp_path / "b" / "MLmodel").is_file()  # downloaded where asked, not to /tmp


def test_load_champion_without_a_champion_is_a_clear_error(store, tmp_path):
    from multitask_bert.errors import ConfigError

    with pytest.raises(ConfigError, match="no 'champion'"):
        load_champion(store.uri, "never-registered", tmp_path / "x")


def test_log_model_into_a_given_run_leaves_the_run_and_global_state_alone(store):
    before = (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI"))
    run = MLflowLogger(tracking_uri=store.uri, experiment_name="registry-tests",
                       run_name="training")
    try:
        model_uri = log_model(store.model_dir, tracking_uri=store.uri,
                              experiment_name="ignored", run_id=run.run_id)
        logged = store.client.get_logged_model(model_uri.removeprefix("models:/"))
        assert logged.source_run_id == run.run_id
        assert store.client.get_run(run.run_id).info.status == "RUNNING"
        assert mlflow.active_run() is None
        assert (mlflow.get_tracking_uri(), os.environ.get("MLFLOW_TRACKING_URI")) == before
        version = register(model_uri, tracking_uri=store.uri, model_name="from-run",
                           score=0.1, score_metric="mean", data_fingerprints=SAME_DATA,
                           config_hash="c", git_commit=None)
        assert store.client.get_model_version("from-run", version.version).run_id == run.run_id
    finally:
        run.close()


def _rounded(value):
    """Floats cut to 5 decimals: another process may use other thread counts."""
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_rounded(item) for item in value]
    return value


def test_packaged_model_loads_where_multitask_bert_is_not_installed(store, tmp_path):
    model_path = tmp_path / "champion"
    _register(store, "portable", 0.5)
    load_champion(store.uri, "portable", model_path)
    checkout = str(Path(__file__).resolve().parents[2])
    script = textwrap.dedent(f"""
        import importlib.util, json, os, sys
        # Hide the editable install and the checkout: only the model's code/ may provide it.
        sys.meta_path = [f for f in sys.meta_path
                         if getattr(f, "__name__", "") != "_EditableFinder"]
        sys.path = [p for p in sys.path if p and os.path.realpath(p) != {checkout!r}]
        assert importlib.util.find_spec("multitask_bert") is None
        import mlflow.pyfunc
        model = mlflow.pyfunc.load_model({str(model_path)!r})
        import multitask_bert
        print(json.dumps({{"file": multitask_bert.__file__,
                          "predictions": model.predict({MIXED_ROWS[:2]!r})}}))
    """)
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(str(model_path / "code"))
    predictor = Predictor(store.model_dir)
    expected = predictor.output_rows(MIXED_ROWS[:2])
    assert _rounded(out["predictions"]) == _rounded(expected)


def test_a_challenger_that_regresses_one_head_beyond_the_margin_stays_out_of_champion(store):
    heads = {"tagging/ner": 0.80, "review/label": 0.70}
    first = _register(store, "gate", 0.75, head_scores=heads)
    assert first.promoted
    assert store.client.get_model_version("gate", "1").tags["head_score.tagging/ner"] == "0.8"

    # +6 points on review/label, -3 on tagging/ner: a better mean, but NER falls > 1 point
    worse_ner = _register(store, "gate", 0.765,
                          head_scores={"tagging/ner": 0.77, "review/label": 0.76})
    assert not worse_ner.promoted and worse_ner.aliases == ["challenger"]
    assert set(worse_ner.regressed_heads) == {"tagging/ner"}
    tags = store.client.get_model_version("gate", "2").tags
    assert tags["promoted"] == "false"
    assert "tagging/ner 0.7700 vs 0.8000 (-0.0300)" in tags["not_promoted_reason"]
    assert tags["regressed_heads"] == "tagging/ner -0.0300 (0.7700 vs champion 0.8000)"
    assert tags["max_head_regression"] == "0.01"
    assert _aliases(store, "gate") == {"champion": "1", "challenger": "2"}

    # a wider margin lets the same trade through
    wider = _register(store, "gate", 0.765, max_head_regression=0.05,
                      head_scores={"tagging/ner": 0.77, "review/label": 0.76})
    assert wider.promoted and _aliases(store, "gate") == {"champion": "3", "challenger": "3"}


def test_the_version_has_a_description_signature_and_input_examples(store, tmp_path):
    from mlflow.models import Model

    from multitask_bert.registry.signature import version_description

    description = version_description(TASKS, VOCAB, {"tagging/ner": {"metric": "f1",
                                                                     "value": 0.81234}})
    _register(store, "described", 0.5, description=description)
    version = store.client.get_model_version("described", "1")
    assert "| tagging | tokens (a list of words), or text | ner | tagging (IOB2) | O, B-PER, "\
           "I-PER, B-LOC | f1 0.8123 |" in version.description
    with mlflow_store(store.uri):
        local = Path(mlflow.artifacts.download_artifacts(
            "models:/described/1", dst_path=str(tmp_path)))
    meta = Model.load(str(local / "MLmodel"))
    inputs = meta.signature.inputs.input_names()
    assert inputs == ["task", "text", "text_a", "text_b", "tokens"]
    outputs = meta.signature.outputs.to_dict()
    predictions = next(o for o in outputs if o["name"] == "predictions")
    assert {p for p in predictions["properties"]} == {"ner", "pos", "label", "stars"}
    assert predictions["properties"]["ner"]["properties"]["spans"]["type"] == "array"
    assert meta.signature.params.to_dict()[0]["name"] == "on_error"
    example = json.loads((local / "serving_input_example.json").read_text())
    assert {row["task"] for row in example["inputs"]} == {"tagging", "review"}
    per_task = json.loads((local / "artifacts" / "examples" / "tagging.json").read_text())
    assert per_task == {"dataframe_records": [
        {"task": "tagging", "tokens": ["Maria", "Lopez", "flew", "to", "Lima", "."]}]}


def test_load_time_options_reach_the_model_onnx_runtime_included(store, tmp_path, monkeypatch):
    _register(store, "options", 0.5)
    torch_model = load_champion(store.uri, "options", tmp_path / "torch")
    onnx_model = load_champion(store.uri, "options", tmp_path / "onnx",
                               model_config={"runtime": "onnx", "batch_size": 2})
    predictor = onnx_model.unwrap_python_model()._predictor
    assert (predictor.runtime, predictor.batch_size) == ("onnx", 2)
    assert list((tmp_path / "onnx").rglob("model.onnx"))  # exported on first load
    assert _rounded(onnx_model.predict(MIXED_ROWS)) == _rounded(torch_model.predict(MIXED_ROWS))
    # `mlflow models serve` takes no model config: the environment names the runtime there
    monkeypatch.setenv("MULTITASK_BERT_RUNTIME", "onnx")
    served = load_champion(store.uri, "options", tmp_path / "onnx")
    assert served.unwrap_python_model()._predictor.runtime == "onnx"
