"""Batch scoring: a registered model over files of any size, streamed in chunks.

::

    summary = score_files("models:/multitask-bert@champion", ["reviews.jsonl"],
                          "scores.parquet", tracking_uri="sqlite:///runs/mlflow.db")

Input files are JSON Lines, CSV or Parquet, read chunk by chunk (never whole), each row with
``task`` and the task's inputs (``text``, ``text_a`` + ``text_b``, ``tokens`` or ``text``),
as for the served model. Output: one Parquet file, written as it goes, with one row per
scored input row:

=================  ==========================================================================
``source``         the input file
``row``            the row's number in it (1-based; the line in a JSON Lines file)
``id``             the input's ``id`` column, when it has one (as text)
``task``           the row's task
``<task>/<head>``  every head of the row's task: its prediction as JSON (``{"label",
                   "score"}``, ``{"tags", "tag_scores", "spans"}``...); null for other tasks
``tokens``         the words, as JSON, when a token task's row was given as text
``model_uri``      the model's registry URI, its version pinned (``models:/name/3``)
``model_version``  the registered version
=================  ==========================================================================

A row that cannot be scored (malformed JSON, no or unknown ``task``, a missing or mistyped
input) is never dropped silently: it goes to the rejects file (JSON Lines: ``source``,
``row``, ``reason``, ``input``), and the summary counts it.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from multitask_bert.errors import ConfigError

log = logging.getLogger("multitask_bert")

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
           ".parquet": "parquet", ".pq": "parquet"}
DEFAULT_MODEL_URI = "models:/multitask-bert@champion"

Progress = Callable[[int, int | None, float], None]
"""``on_progress(rows done, rows in all (None: unknown), seconds)``."""


@dataclass
class ScoreSummary:
    """What :func:`score_files` did."""

    output: str
    rejects: str | None
    """The rejects file, when some rows were rejected."""
    rows: int
    scored: int
    rejected: int
    seconds: float
    rows_per_s: float
    model_uri: str
    model_version: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def score_files(
    model_uri: str,
    inputs: list[str | Path],
    output: str | Path,
    *,
    tracking_uri: str | None = None,
    rejects: str | Path | None = None,
    task: str | None = None,
    chunk_rows: int = 2048,
    batch_size: int = 32,
    runtime: str = "torch",
    work_dir: str | Path | None = None,
    on_progress: Progress | None = None,
) -> ScoreSummary:
    """Scores every row of ``inputs`` with ``model_uri`` into the Parquet file ``output``.

    Args:
        model_uri: ``models:/<name>@<alias>``, ``models:/<name>/<version>``, any MLflow model
            URI, or a local model folder.
        inputs: JSONL, CSV or Parquet files.
        output: the Parquet file to write (atomically: a temp file renamed at the end).
        tracking_uri: the MLflow store holding the model (default ``$MLFLOW_TRACKING_URI``).
        rejects: the rejects file (JSON Lines); default ``<output>.rejects.jsonl``; written
            only when a row is rejected.
        task: the task of rows without a ``task`` field (a file of one task's data).
        chunk_rows: rows read, predicted and written at a time.
        batch_size: rows per forward pass.
        runtime: ``torch`` or ``onnx``.
        work_dir: where models are downloaded, one folder per version (default:
            ``.models`` beside ``output``; a second run with the same version reuses it, and
            its ONNX graph).
        on_progress: called after every chunk.

    Raises:
        ConfigError: an input that does not exist or has an unknown format; a model URI
            that names nothing.
    """
    from multitask_bert.inference import Predictor
    from multitask_bert.registry.lookup import download_model

    paths = [Path(p) for p in inputs]
    for path in paths:
        if not path.is_file():
            raise ConfigError(f"input file not found: {path}")
        if path.suffix.lower() not in FORMATS:
            raise ConfigError(f"{path}: unknown input format {path.suffix!r}; use one of "
                              f"{sorted(FORMATS)} (JSON Lines, CSV, Parquet)")
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    rejects = Path(rejects) if rejects else output.with_name(output.stem + ".rejects.jsonl")
    uri = tracking_uri or os.environ.get("MLFLOW_TRACKING_URI") or ""
    work = Path(work_dir) if work_dir else output.parent / ".models"  # one folder a version
    folder, version = download_model(model_uri, uri, work)
    pinned = _pinned_uri(model_uri, version)
    predictor = Predictor(folder, batch_size=batch_size, runtime=runtime)
    heads = [f"{task}/{head.spec.name}" for task, types in predictor.heads.items()
             for head in types]
    schema = _output_schema(heads)
    total = sum(_count_rows(path) for path in paths)
    log.info("scoring %s row(s) of %d file(s) with %s (version %s, %s)",
             total if total is not None else "?", len(paths), model_uri, version, runtime)

    started = time.perf_counter()
    done = scored = rejected = 0
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(fd)
    reject_file = None
    try:
        with pq.ParquetWriter(tmp, schema) as writer:
            for path in paths:
                for chunk in _read_chunks(path, chunk_rows):
                    if task is not None:
                        chunk = [(n, {"task": task, **r} if isinstance(r, dict) else r, p)
                                 for n, r, p in chunk]
                    good = [(number, row) for number, row, problem in chunk if problem is None]
                    outputs = predictor.output_rows([row for _, row in good], on_error="row")
                    table_rows = []
                    bad = [(number, row, problem) for number, row, problem in chunk if problem]
                    for (number, row), result in zip(good, outputs, strict=True):
                        if "error" in result:
                            bad.append((number, row, _renumbered(result["error"], number)))
                        else:
                            table_rows.append(_output_row(path, number, row, result, pinned,
                                                          version))
                    if table_rows:
                        writer.write_table(pa.Table.from_pylist(table_rows, schema=schema))
                    if bad:
                        reject_file = reject_file or rejects.open("w", encoding="utf-8")
                        for number, row, problem in sorted(bad, key=lambda b: b[0]):
                            reject_file.write(json.dumps({"source": str(path), "row": number,
                                                          "reason": problem, "input": row},
                                                         default=str) + "\n")
                    done += len(chunk)
                    scored += len(table_rows)
                    rejected += len(bad)
                    if on_progress is not None:
                        on_progress(done, total, time.perf_counter() - started)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp made it 0600
        os.replace(tmp, output)
    finally:
        if reject_file is not None:
            reject_file.close()
        if os.path.exists(tmp):
            os.unlink(tmp)
    if reject_file is None and rejects.exists():
        rejects.unlink()  # a file from an earlier run would say rows were rejected now
    seconds = time.perf_counter() - started
    summary = ScoreSummary(output=str(output), rejects=str(rejects) if rejected else None,
                           rows=done, scored=scored, rejected=rejected,
                           seconds=round(seconds, 3),
                           rows_per_s=round(done / seconds, 1) if seconds > 0 else 0.0,
                           model_uri=pinned, model_version=version)
    log.info("scored %d row(s), rejected %d, in %.1f s (%.0f rows/s): %s%s", scored, rejected,
             seconds, summary.rows_per_s, output,
             f"; rejects: {rejects}" if rejected else "")
    return summary


def _pinned_uri(model_uri: str, version: str) -> str:
    if model_uri.startswith("models:/") and "@" in model_uri and version.isdigit():
        return f"models:/{model_uri.removeprefix('models:/').split('@', 1)[0]}/{version}"
    return model_uri


def _output_schema(heads: list[str]) -> pa.Schema:
    return pa.schema([("source", pa.string()), ("row", pa.int64()), ("id", pa.string()),
                      ("task", pa.string()), *[(head, pa.string()) for head in heads],
                      ("tokens", pa.string()), ("model_uri", pa.string()),
                      ("model_version", pa.string())])


def _output_row(path: Path, number: int, row: dict[str, Any], result: dict[str, Any],
                model_uri: str, version: str) -> dict[str, Any]:
    out: dict[str, Any] = {"source": str(path), "row": number,
                           "id": None if row.get("id") is None else str(row["id"]),
                           "task": result["task"], "model_uri": model_uri,
                           "model_version": version}
    for head, prediction in result["predictions"].items():
        out[f"{result['task']}/{head}"] = json.dumps(prediction)
    if "tokens" in result:
        out["tokens"] = json.dumps(result["tokens"])
    return out


def _renumbered(message: str, number: int) -> str:
    """A row error from the predictor numbers rows within the chunk: use the file's."""
    if message.startswith("row "):
        rest = message.split(":", 1)[1] if ":" in message else message
        where = message.split(":", 1)[0]
        field = where.split(",", 1)[1] if "," in where else ""
        return f"row {number}{',' + field if field else ''}:{rest}"
    return message


Chunk = list[tuple[int, Any, str | None]]
"""``(row number in the file, row, problem or None)``."""


def _read_chunks(path: Path, size: int) -> Iterator[Chunk]:
    kind = FORMATS[path.suffix.lower()]
    if kind == "jsonl":
        yield from _jsonl_chunks(path, size)
    elif kind == "csv":
        yield from _csv_chunks(path, size)
    else:
        yield from _parquet_chunks(path, size)


def _jsonl_chunks(path: Path, size: int) -> Iterator[Chunk]:
    chunk: Chunk = []
    with path.open(encoding="utf-8", errors="replace") as stream:
        for number, line in enumerate(stream, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                problem = None if isinstance(row, dict) else (
                    f"row {number}: expected a JSON object, got {type(row).__name__}")
            except json.JSONDecodeError as error:
                row, problem = line.rstrip("\n"), f"row {number}: malformed JSON ({error.msg}, " \
                                                  f"column {error.colno})"
            chunk.append((number, row, problem))
            if len(chunk) >= size:
                yield chunk
                chunk = []
    if chunk:
        yield chunk


def _csv_chunks(path: Path, size: int) -> Iterator[Chunk]:
    import pandas as pd

    from multitask_bert.registry.pyfunc import input_rows

    number = 1  # the header is line 1
    for frame in pd.read_csv(path, chunksize=size, dtype=str, keep_default_na=False,
                             na_values=[""]):
        rows = input_rows(frame)
        chunk: Chunk = []
        for row in rows:
            number += 1
            tokens = row.get("tokens")
            if isinstance(tokens, str) and tokens.lstrip().startswith("["):
                try:  # CSV cannot hold lists: a JSON list in the cell is the words
                    row["tokens"] = json.loads(tokens)
                except json.JSONDecodeError:
                    pass
            chunk.append((number, row, None))
        yield chunk


def _parquet_chunks(path: Path, size: int) -> Iterator[Chunk]:
    from multitask_bert.registry.pyfunc import input_rows

    number = 0
    for batch in pq.ParquetFile(path).iter_batches(batch_size=size):
        chunk: Chunk = []
        for row in input_rows(batch.to_pylist()):
            number += 1
            chunk.append((number, row, None))
        yield chunk


def _count_rows(path: Path) -> int:
    """Rows in a file, cheaply (a byte scan; Parquet metadata), for the progress bar."""
    kind = FORMATS[path.suffix.lower()]
    if kind == "parquet":
        return pq.ParquetFile(path).metadata.num_rows
    count = 0
    with path.open("rb") as stream:
        while block := stream.read(1 << 20):
            count += block.count(b"\n")
    if kind == "csv":
        count -= 1  # the header
    return max(count, 0)



def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
