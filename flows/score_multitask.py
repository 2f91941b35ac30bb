"""The ``score-multitask`` Prefect flow: batch scoring with a registered model.

Thin wiring over :func:`multitask_bert.pipeline.score`: every row of the input files (JSON
Lines, CSV, Parquet; streamed in chunks) is scored by every head of its task into one Parquet
file with the model's version; rows that cannot be scored go to a rejects file with their
reason. Run it once, locally::

    python flows/score_multitask.py --task reviews --input tasks_data/reviews/test.jsonl \\
        --output scores.parquet

or through its deployment (``prefect.yaml``)::

    prefect deployment run score-multitask/local --watch --params \\
      '{"params": {"inputs": ["reviews.jsonl"], "task": "reviews", "output": "scores.parquet"}}'
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ConfigDict, Field

from multitask_bert import pipeline

REPO_ROOT = Path(__file__).resolve().parents[1]


class ScoreParameters(BaseModel):
    """The run form of the Prefect UI: validated before a run starts."""

    model_config = ConfigDict(extra="forbid")

    inputs: list[str] = Field(description="JSONL, CSV or Parquet files, relative to the "
                              "project root or absolute.", min_length=1)
    output: str = Field(description="Parquet file to write.")
    model_uri: str = Field(default="models:/multitask-bert@champion",
                           description="Registered model (or a model folder).")
    rejects: str | None = Field(default=None, description="Rejected rows (JSONL); default "
                                "<output>.rejects.jsonl.")
    task: str | None = Field(default=None, description="The task of rows without a 'task' "
                             "field (files of one task's data).")
    runtime: str = Field(default="torch", pattern="^(torch|onnx)$",
                         description="torch, or onnx (ONNX Runtime).")
    batch_size: int = Field(default=32, ge=1)
    chunk_rows: int = Field(default=2048, ge=1, description="Rows per chunk.")


def _retry_unless_user_error(task: Any, task_run: Any, state: Any) -> bool:
    """A missing file or an unknown model is not retried; a killed process is."""
    try:
        state.result(raise_on_failure=True)
    except pipeline.MultitaskBertError:
        return False
    except Exception:
        return True
    return True


@task(name="score", retries=1, retry_delay_seconds=10,
      retry_condition_fn=_retry_unless_user_error)
def score_task(params: ScoreParameters) -> dict[str, Any]:
    """Score every row; logs progress (rows, rows/s, ETA) per chunk and the summary."""
    logger = get_run_logger()

    def progress(done: int, total: int | None, seconds: float) -> None:
        rate = done / seconds if seconds > 0 else 0.0
        eta = f", ETA {(total - done) / rate:.0f} s" if total and rate else ""
        logger.info("scored %d/%s rows (%.0f rows/s%s)", done, total or "?", rate, eta)

    summary = pipeline.score(params.model_uri, params.inputs, params.output,
                             rejects=params.rejects, task=params.task, runtime=params.runtime,
                             batch_size=params.batch_size, chunk_rows=params.chunk_rows,
                             root=REPO_ROOT, on_progress=progress)
    logger.info("summary: %s", json.dumps(summary))
    return summary


@flow(name="score-multitask", log_prints=True)
def score_multitask(params: ScoreParameters) -> dict[str, Any]:
    """Score files with a registered model into Parquet; rejected rows into a JSONL file."""
    summary = score_task(params)
    create_markdown_artifact(
        f"# Batch scoring with {summary['model_uri']}\n\n"
        f"- rows: {summary['rows']}, scored: {summary['scored']}, rejected: "
        f"{summary['rejected']}\n- {summary['rows_per_s']:.0f} rows/s ({summary['seconds']} s)\n"
        f"- output: `{summary['output']}`\n- rejects: `{summary['rejects']}`\n",
        key="score-summary")
    return summary


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Run the score-multitask flow once, locally.")
    parser.add_argument("--model", default="models:/multitask-bert@champion")
    parser.add_argument("--input", dest="inputs", action="append", required=True)
    parser.add_argument("--output", required=True)
    parser.add_argument("--task", help="the task of rows without a 'task' field")
    parser.add_argument("--runtime", default="torch", choices=["torch", "onnx"])
    args = parser.parse_args(argv)
    summary = score_multitask(ScoreParameters(inputs=args.inputs, output=args.output,
                                              model_uri=args.model, runtime=args.runtime,
                                              task=args.task))
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
