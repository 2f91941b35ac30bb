"""A real `mlflow models serve` on 127.0.0.1: the four request formats, clear 400s, per-row
errors; and `mlflow models predict` on the logged input example (the round trip).

One tiny model logged and registered in a SQLite store; the server runs in its own process
group on a free loopback port and is stopped by that group's id. About 30 s on 2 cores.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from multitask_bert.config import EncoderConfig
from multitask_bert.models.multitask import build_model, load_tokenizer
from multitask_bert.registry import log_model, register
from multitask_bert.tasks import TaskSpec
from tests.conftest import TINY_ENCODER, free_port

pytestmark = pytest.mark.integration

MLFLOW = str(Path(sys.executable).with_name("mlflow"))
TASKS = [
    TaskSpec(name="news", type="token", train="unused.jsonl",
             heads=[{"name": "ner", "type": "tagging", "scheme": "IOB2"}]),
    TaskSpec(name="reviews", type="sequence", train="unused.jsonl",
             heads=[{"name": "sentiment", "type": "classification"}]),
    TaskSpec(name="similarity", type="sequence", train="unused.jsonl",
             heads=[{"name": "score", "type": "regression"}]),
]
VOCAB = {"news": {"ner": ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]},
         "reviews": {"sentiment": ["negative", "positive"]}}
GOOD = [
    {"task": "reviews", "text": "Worth every penny."},
    {"task": "similarity", "text_a": "A dog runs.", "text_b": "A dog is running."},
    {"task": "news", "tokens": ["Maria", "flew", "to", "Lima"]},
    {"task": "news", "text": "Maria flew to Lima"},
]


def _env(root: Path, uri: str) -> dict[str, str]:
    return {**os.environ, "MLFLOW_TRACKING_URI": uri, "DO_NOT_TRACK": "true",
            "MLFLOW_DISABLE_TELEMETRY": "true", "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2])}


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Iterator[SimpleNamespace]:
    root = tmp_path_factory.mktemp("serving")
    model_dir = root / "best"
    build_model(EncoderConfig(**TINY_ENCODER), TASKS, VOCAB, seed=4).save(
        model_dir, load_tokenizer(EncoderConfig().resolve_path()))
    uri = f"sqlite:///{root}/mlflow.db"
    model_uri = log_model(model_dir, tracking_uri=uri, experiment_name="serving-tests")
    register(model_uri, tracking_uri=uri, model_name="served", score=0.5, score_metric="mean",
             data_fingerprints={}, config_hash="c", git_commit=None)
    port = free_port()
    log = (root / "server.log").open("w")
    server = subprocess.Popen(
        [MLFLOW, "models", "serve", "-m", "models:/served@champion", "--env-manager", "local",
         "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        cwd=root, env=_env(root, uri), stdout=log, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert server.poll() is None, (root / "server.log").read_text()[-3000:]
            assert time.monotonic() < deadline, "no answer from /ping in 180 s"
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                time.sleep(0.5)
        yield SimpleNamespace(url=url, root=root, uri=uri, model_uri=model_uri)
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)  # its own group: uvicorn and its worker
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
                server.wait(timeout=10)
        log.close()


def _post(served: SimpleNamespace, body: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"{served.url}/invocations", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def _check_good(outputs: list[dict]) -> None:
    assert [o["task"] for o in outputs] == [r["task"] for r in GOOD]
    assert set(outputs[0]["predictions"]["sentiment"]) == {"label", "score"}
    assert isinstance(outputs[1]["predictions"]["score"]["value"], float)
    ner = outputs[2]["predictions"]["ner"]
    assert len(ner["tags"]) == len(ner["tag_scores"]) == 4 and "spans" in ner
    assert outputs[3]["tokens"] == ["Maria", "flew", "to", "Lima"]  # echoed: it was text
    assert "tokens" not in outputs[2]


@pytest.mark.parametrize("body", [
    {"dataframe_records": GOOD},
    {"dataframe_split": {"columns": ["task", "text", "text_a", "text_b", "tokens"],
                         "data": [[r.get(c) for c in ("task", "text", "text_a", "text_b",
                                                      "tokens")] for r in GOOD]}},
    {"inputs": GOOD},
], ids=["dataframe_records", "dataframe_split", "inputs"])
def test_every_request_format_predicts_every_task_type(served, body):
    status, answer = _post(served, body)
    assert status == 200, answer
    _check_good(answer["predictions"])


def test_instances_whose_rows_have_the_same_fields_work(served):
    # MLflow turns `instances` into columns: every row needs the same fields, and a column
    # of word lists of different lengths cannot be built (token tasks send `text` there)
    rows = [{"task": "reviews", "text": "Worth every penny."},
            {"task": "news", "text": "Maria flew to Lima"}]
    status, answer = _post(served, {"instances": rows})
    assert status == 200, answer
    reviews, news = answer["predictions"]
    assert reviews["task"] == "reviews" and "sentiment" in reviews["predictions"]
    assert news["tokens"] == ["Maria", "flew", "to", "Lima"]
    pairs = [{"task": "similarity", "text_a": "A dog runs.", "text_b": "A dog is running."}]
    status, answer = _post(served, {"instances": pairs})
    assert status == 200 and "value" in answer["predictions"][0]["predictions"]["score"]


@pytest.mark.parametrize(("row", "message"), [
    ({"task": "news", "tokens": "Maria flew to Lima"},
     "row 2, field 'tokens': expected a list of words (strings), got str 'Maria flew to Lima'. "
     "Task 'news' takes 'tokens' (a list of words, e.g. [\"Maria\", \"flew\"]) or 'text' (a "
     "string, split on whitespace)"),
    ({"task": "weather", "text": "sunny"},
     "row 2, field 'task': unknown task 'weather'; this model has tasks ['news', 'reviews', "
     "'similarity']"),
    ({"text": "no task"},
     "row 2, field 'task': missing; this model has tasks ['news', 'reviews', 'similarity']. "
     "Give each row a 'task'"),
    ({"task": "reviews", "text": 5},
     "row 2, field 'text': expected a string, got int 5. Task 'reviews' takes 'text' (a "
     "string)"),
], ids=["tokens-as-string", "unknown-task", "no-task", "text-not-a-string"])
def test_a_malformed_row_is_a_400_with_the_projects_one_line_message(served, row, message):
    status, answer = _post(served, {"dataframe_records": [GOOD[0], row]})
    assert status == 400
    assert answer["error_code"] == "INVALID_PARAMETER_VALUE"
    assert answer["message"] == message  # not MLflow's generic text, not the input frame
    assert "stack_trace" not in answer and "Traceback" not in json.dumps(answer)


def test_on_error_row_returns_an_error_object_for_the_bad_row_only(served):
    bad = {"task": "news", "tokens": "Maria flew"}
    status, answer = _post(served, {"dataframe_records": [GOOD[0], bad, GOOD[2]],
                                    "params": {"on_error": "row"}})
    assert status == 200, answer
    first, error, third = answer["predictions"]
    assert first["task"] == "reviews" and "predictions" in first
    assert error == {"task": "news", "error": "row 2, field 'tokens': expected a list of words "
                     "(strings), got str 'Maria flew'. Task 'news' takes 'tokens' (a list of "
                     "words, e.g. [\"Maria\", \"flew\"]) or 'text' (a string, split on "
                     "whitespace)"}
    assert third["task"] == "news" and len(third["predictions"]["ner"]["tags"]) == 4


def test_the_input_example_round_trips_through_mlflow_models_predict(served, tmp_path):
    import mlflow

    from multitask_bert.registry import mlflow_store

    with mlflow_store(served.uri):
        local = Path(mlflow.artifacts.download_artifacts("models:/served/1",
                                                         dst_path=str(tmp_path)))
    example = local / "serving_input_example.json"
    out = tmp_path / "predictions.json"
    done = subprocess.run(
        [MLFLOW, "models", "predict", "-m", str(local), "-i", str(example), "-t", "json",
         "-o", str(out), "--env-manager", "local"],
        env=_env(tmp_path, served.uri), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    outputs = json.loads(out.read_text())
    outputs = outputs.get("predictions", outputs) if isinstance(outputs, dict) else outputs
    assert [o["task"] for o in outputs] == ["news", "reviews", "similarity"]
    assert all("predictions" in o for o in outputs)
    # and the per-task request bodies work against the server as they are
    for task in ("news", "reviews", "similarity"):
        body = json.loads((local / "artifacts" / "examples" / f"{task}.json").read_text())
        status, answer = _post(served, body)
        assert status == 200 and answer["predictions"][0]["task"] == task
