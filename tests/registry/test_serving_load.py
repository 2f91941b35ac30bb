"""The serving-load benchmark (benchmarks/serving_load.py), small: a real `mlflow models serve`
of a tiny model with the sample tasks' heads, 2 concurrent clients, 24 mixed requests. Zero
errors, percentiles in order, every request format and task type sent; and a request that
gets no right answer counts as an error. About 40 s on 2 cores."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

sys.path.append(str(REPO / "benchmarks"))  # the scripts import their neighbours by name

import serving_load
from onnx_latency import sample_model


@pytest.fixture(scope="module")
def registered(tmp_path_factory) -> tuple[str, str]:
    from multitask_bert.registry import log_model, register

    root = tmp_path_factory.mktemp("serving-load")
    folder, _ = sample_model(root / "best", "tiny")
    uri = f"sqlite:///{root}/mlflow.db"
    logged = log_model(folder, tracking_uri=uri, experiment_name="serving-load-tests")
    register(logged, tracking_uri=uri, model_name="load", score=0.5, score_metric="mean",
             data_fingerprints={}, config_hash="c", git_commit=None)
    return "models:/load@champion", uri


def test_requests_mix_every_format_and_task_type():
    rows = {"news_tagging": [{"task": "news_tagging", "tokens": ["Maria", "flew", "home"]}],
            "reviews": [{"task": "reviews", "text": "Fine."}],
            "similarity": [{"task": "similarity", "text_a": "A dog.", "text_b": "A cat."}]}
    requests = serving_load.build_requests(rows, 200, max_rows=3, seed=1)
    assert {r.format for r in requests} == set(serving_load.FORMATS)
    assert {t for r in requests for t in r.tasks} == set(rows)
    for request in requests:
        body = json.loads(request.body)
        sent = body[request.format]
        assert 1 <= len(request.tasks) <= 3
        if request.format == "dataframe_split":
            assert len(sent["data"]) == len(request.tasks)
            assert [row[sent["columns"].index("task")] for row in sent["data"]] == request.tasks
        else:
            assert [row["task"] for row in sent] == request.tasks
        if request.format == "instances":  # one task, no word lists: MLflow makes columns
            assert len(set(request.tasks)) == 1 and all("tokens" not in r for r in sent)
    token_rows = [row for r in requests if r.format == "inputs"
                  for row in json.loads(r.body)["inputs"] if row["task"] == "news_tagging"]
    assert {"tokens" in row for row in token_rows} == {True, False}  # words, and text


@pytest.mark.integration
def test_load_benchmark_with_two_clients_has_no_errors(registered, tmp_path):
    model_uri, tracking_uri = registered
    settings = serving_load.LoadSettings(workers=1, threads=1, clients=2, requests=24,
                                         warmup=2)
    result = serving_load.run_load(model_uri, tracking_uri, settings, tmp_path)

    assert result["errors"] == 0 and result["warmup_errors"] == 0, result["first_errors"]
    assert result["requests"] == 24 and result["clients"] == 2
    assert 0 < result["p50_ms"] <= result["p95_ms"] <= result["p99_ms"] <= result["max_ms"]
    assert result["requests_per_s"] > 0 and result["rows_per_s"] >= result["requests_per_s"]
    assert all(count == 6 for count in result["formats"].values())
    # the sample tasks: token, pair and single-text sequence tasks, rows from tasks_data/
    assert set(result["tasks"]) == {"news_tagging", "questions", "reviews", "similarity",
                                    "topics"}
    assert all(count > 100 for count in result["tasks"].values())
    assert result["workers"] == 1 and result["server_env"]["OMP_NUM_THREADS"] == "1"
    assert result["server_rss_mb"] > 50  # the group's processes were found
    log = Path(result["server_log"]).read_text()
    assert log.count("Application startup complete") == 1


@pytest.mark.integration
def test_a_request_without_a_right_answer_is_an_error(registered, tmp_path):
    model_uri, tracking_uri = registered
    rows = {"reviews": [{"task": "reviews", "text": "Fine."}]}
    requests = serving_load.build_requests(rows, 4, max_rows=1)
    # nothing listens on the port: every request fails, and each is counted
    down = serving_load.drive(f"http://127.0.0.1:{serving_load.free_port()}", requests, 2)
    assert down["errors"] == 4 and "Connection refused" in down["first_errors"][0]
    # a server that answers, but not with the rows' tasks (the request names another task)
    wrong = serving_load.Request(requests[0].body, ["topics"], "dataframe_records")
    bad_row = serving_load.Request(b'{"dataframe_records": [{"task": "weather"}]}',
                                   ["weather"], "dataframe_records")
    with serving_load.model_server(model_uri, tracking_uri, workers=1, threads=1,
                                   log_path=tmp_path / "server.log") as (url, _):
        answered = serving_load.drive(url, [wrong, bad_row, requests[0]], 2)
    assert answered["errors"] == 2
    assert any("answered tasks ['reviews'] for rows of ['topics']" in e
               for e in answered["first_errors"])
    assert any("HTTP 400" in e and "unknown task 'weather'" in e
               for e in answered["first_errors"])
