"""Batch scoring: JSONL, CSV and Parquet in, Parquet and a rejects file out (a tiny model)."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from multitask_bert.config import EncoderConfig
from multitask_bert.inference import Predictor
from multitask_bert.models.multitask import build_model, load_tokenizer
from multitask_bert.scoring import score_files
from multitask_bert.tasks import TaskSpec
from tests.conftest import TINY_ENCODER

TASKS = [
    TaskSpec(name="tagging", type="token", train="unused.jsonl",
             heads=[{"name": "ner", "type": "tagging", "scheme": "BIOES"}]),
    TaskSpec(name="review", type="sequence", train="unused.jsonl",
             heads=[{"name": "label", "type": "classification"},
                    {"name": "stars", "type": "regression"}]),
]
VOCAB = {"tagging": {"ner": ["O", "B-PER", "I-PER", "E-PER", "S-PER"]},
         "review": {"label": ["neg", "pos"]}}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("scoring") / "best"
    build_model(EncoderConfig(**TINY_ENCODER), TASKS, VOCAB, seed=5).save(
        folder, load_tokenizer(EncoderConfig().resolve_path()))
    return folder


def test_a_file_with_one_bad_row_is_scored_and_the_bad_rows_are_rejected_with_reasons(
        model_dir, tmp_path):
    lines = [json.dumps({"id": 1, "task": "review", "text": "a lovely film"}),
             json.dumps({"id": 2, "task": "tagging", "text": "Bob met  Alice"}),
             "{not json",
             json.dumps({"id": 4, "task": "tagging", "tokens": "Bob met Alice"}),
             json.dumps({"id": 5, "task": "weather", "text": "sunny"}),
             json.dumps({"id": 6, "task": "review", "text": "dull"})]
    source = tmp_path / "rows.jsonl"
    source.write_text("\n".join(lines) + "\n")
    progress = []
    summary = score_files(str(model_dir), [source], tmp_path / "out" / "scores.parquet",
                          chunk_rows=2, on_progress=lambda d, t, s: progress.append((d, t)))

    assert (summary.rows, summary.scored, summary.rejected) == (6, 3, 3)
    assert progress[-1] == (6, 6) and len(progress) == 3  # one call per chunk of 2
    scores = pd.read_parquet(summary.output)
    assert list(scores["row"]) == [1, 2, 6] and list(scores["id"]) == ["1", "2", "6"]
    assert set(scores["model_version"]) == {f"local:{model_dir.resolve()}"}
    assert {"review/label", "review/stars", "tagging/ner", "tokens"} <= set(scores.columns)
    expected = Predictor(model_dir).output_rows(
        [{"task": "review", "text": "a lovely film"}, {"task": "tagging",
                                                       "text": "Bob met  Alice"}])
    assert json.loads(scores["review/label"][0]) == expected[0]["predictions"]["label"]
    ner = json.loads(scores["tagging/ner"][1])
    assert _rounded(ner) == _rounded(expected[1]["predictions"]["ner"])
    assert [(s["text"], s["start_char"], s["end_char"]) for s in ner["spans"]][-1][1:] == (9, 14)
    assert json.loads(scores["tokens"][1]) == ["Bob", "met", "Alice"]
    assert scores["tagging/ner"].isna()[0]  # a review row has no NER prediction

    rejects = [json.loads(line) for line in Path(summary.rejects).read_text().splitlines()]
    assert [r["row"] for r in rejects] == [3, 4, 5]
    assert rejects[0]["reason"].startswith("row 3: malformed JSON")
    assert rejects[1]["reason"].startswith(
        "row 4, field 'tokens': expected a list of words (strings), got str 'Bob met Alice'")
    assert rejects[2]["reason"] == ("row 5, field 'task': unknown task 'weather'; this model "
                                    "has tasks ['review', 'tagging']")
    assert rejects[1]["input"] == {"id": 4, "task": "tagging", "tokens": "Bob met Alice"}


def _rounded(value):
    if isinstance(value, float):
        return round(value, 5)
    if isinstance(value, dict):
        return {k: _rounded(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


def test_csv_and_parquet_inputs_and_a_default_task(model_dir, tmp_path):
    csv = tmp_path / "reviews.csv"
    pd.DataFrame({"text": ["great", "awful", "fine"]}).to_csv(csv, index=False)
    parquet = tmp_path / "tagged.parquet"
    pd.DataFrame({"task": ["tagging", "tagging"],
                  "tokens": [["Ann", "left"], ["Bo", "came", "back"]]}).to_parquet(parquet)
    out = tmp_path / "scores.parquet"
    rejects = tmp_path / "scores.rejects.jsonl"
    rejects.write_text("stale\n")  # from an earlier run: must not survive a clean run
    summary = score_files(str(model_dir), [csv, parquet], out, task="review")
    assert (summary.scored, summary.rejected, summary.rejects) == (5, 0, None)
    assert not rejects.exists()
    scores = pd.read_parquet(out)
    assert list(scores["task"]) == ["review"] * 3 + ["tagging"] * 2
    assert list(scores["row"]) == [2, 3, 4, 1, 2]  # CSV rows are lines (header is 1)
    assert len(json.loads(scores["tagging/ner"][4])["tags"]) == 3


def test_unknown_formats_and_missing_files_are_clear_errors(model_dir, tmp_path):
    from multitask_bert.errors import ConfigError

    (tmp_path / "rows.txt").write_text("x")
    with pytest.raises(ConfigError, match=r"unknown input format '\.txt'"):
        score_files(str(model_dir), [tmp_path / "rows.txt"], tmp_path / "o.parquet")
    with pytest.raises(ConfigError, match="input file not found"):
        score_files(str(model_dir), [tmp_path / "nope.jsonl"], tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()
