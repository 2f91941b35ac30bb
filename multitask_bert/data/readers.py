"""Format readers: a file (or a Hugging Face dataset) into raw rows, each with its location
(``line 12`` of the file, or ``row index 3`` of a table). Rows are checked afterwards, the
same way for every format (:mod:`multitask_bert.data.rows`).

Format notes beyond the task spec's docstrings:

* ``csv`` / ``tsv``: the first row is the header. With ``columns:`` in the source the file has
  no header and ``columns`` names its columns (``_`` skips one), e.g. the STS-B CSVs. TSV is
  read without quote handling (GLUE files hold raw ``"`` characters); CSV uses the excel dialect.
* ``conll``: ``columns:`` is required, except for ``.conllu`` files, which default to the
  CoNLL-U columns ``id, tokens, lemma, upos, xpos, feats, head, deprel, deps, misc``. In a
  ``.conllu`` file the first column is the word ID and ``#`` lines are comments; range IDs
  (``3-4``, multiword tokens) and decimal IDs (``8.1``, empty nodes) are skipped.
* ``parquet`` / ``hf``: ``ClassLabel`` integer columns (and lists of them) are turned back into
  their label names; for Parquet files this uses the features Hugging Face stores in the schema.
"""

from __future__ import annotations

import bisect
import csv
import io
import json
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from multitask_bert.errors import DataError
from multitask_bert.task_types import task_type_of
from multitask_bert.tasks import SourceSpec, TaskSpec

CONLLU_COLUMNS = [
    "id",
    "tokens",
    "lemma",
    "upos",
    "xpos",
    "feats",
    "head",
    "deprel",
    "deps",
    "misc",
]
"""Default column names of a ``.conllu`` file."""

_SKIP_COLUMN = "_"
DOCUMENT_COLUMN = "document"
"""The field a CoNLL reader gives each sentence once the file marks documents."""
_JSON_WS = re.compile(r"[ \t\n\r]*")

RawRows = list[tuple[str, Any]]
"""(location, raw row) pairs as a format reader yields them."""


def check_exists(task: TaskSpec, split: str, source: SourceSpec, path: str) -> None:
    if os.path.isfile(path):
        return
    origin = (
        f"`{split}: {source.path}` resolved against {task.base_dir} (the folder of the task YAML)"
        if task.base_dir and not os.path.isabs(os.path.expanduser(source.path))
        else f"`{split}: {source.path}`"
    )
    what = "is a folder, not a file" if os.path.isdir(path) else "not found"
    raise DataError(
        f"{split} source of task {task.name!r} {what}: {os.path.abspath(path)} ({origin}). "
        f"Check the path in the task YAML; relative paths are relative to the YAML's folder."
    )


def read_text(path: str) -> str:
    """The file as text; a DataError with the line of the first byte that is not UTF-8."""
    data = Path(path).read_bytes()
    bom = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    try:
        return data[bom:].decode("utf-8")
    except UnicodeDecodeError as error:
        offset = bom + error.start
        line = data.count(b"\n", 0, offset) + 1
        raise DataError(
            f"{path}, line {line}: the file is not valid UTF-8 (byte 0x{data[offset]:02X} "
            f"at offset {offset}). Re-save the file as UTF-8 or fix that line."
        ) from None


def read_raw_rows(task: TaskSpec, split: str, source: SourceSpec, path: str) -> RawRows:
    fmt = source.resolved_format
    if fmt == "hf":
        return [
            (f"row index {i}", row)
            for i, row in enumerate(hf_rows(load_hf(task, split, source, path)))
        ]
    check_exists(task, split, source, path)
    if fmt == "parquet":
        return _parquet_rows(path)
    text = read_text(path)
    if fmt == "jsonl":
        return list(_json_lines(text, path))
    if fmt == "json":
        start = _JSON_WS.match(text).end()
        if text[start : start + 1] == "[":
            return list(_json_array(text, start, path))
        return list(_json_lines(text, path))
    if fmt in ("csv", "tsv"):
        return list(_delimited_rows(text, path, fmt, source))
    if fmt == "conll":
        if not task_type_of(task).column_files:
            raise DataError(
                f"{path}: CoNLL column files hold token tasks, but task {task.name!r} has "
                f"`type: {task.type}`. Use `type: token` or another source format."
            )
        return list(_conll_rows(text, path, source))
    raise DataError(f"{path}: unknown source format {fmt!r}")  # pragma: no cover - Literal


# -- one reader per format: each yields (location, raw row) ---------------------------------


def _json_lines(text: str, path: str) -> Iterator[tuple[str, Any]]:
    # split on "\n" only: str.splitlines would also break at U+2028 etc., legal inside JSON strings
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise DataError(
                f"{path}, line {number}: malformed JSON ({error.msg}, column {error.colno}). "
                f"Each line must hold one JSON object; fix the line."
            ) from None
        yield f"line {number}", row


def _json_array(text: str, start: int, path: str) -> Iterator[tuple[str, Any]]:
    """Elements of a JSON array with the line each one starts on."""
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(offset: int) -> int:
        return bisect.bisect_left(newlines, offset) + 1

    def fail(offset: int, problem: str) -> DataError:
        return DataError(
            f"{path}, line {line_of(offset)}: malformed JSON ({problem}). The file must hold "
            f"one JSON array of objects (or one object per line); fix the JSON."
        )

    decoder = json.JSONDecoder()
    pos = _JSON_WS.match(text, start + 1).end()
    if text[pos : pos + 1] == "]":
        return
    while True:
        try:
            row, end = decoder.raw_decode(text, pos)
        except json.JSONDecodeError as error:
            raise fail(error.pos, error.msg) from None
        yield f"line {line_of(pos)}", row
        pos = _JSON_WS.match(text, end).end()
        char = text[pos : pos + 1]
        if char == "]":
            if text[_JSON_WS.match(text, pos + 1).end() :]:
                raise fail(pos + 1, "extra data after the array")
            return
        if char != ",":
            raise fail(pos, "expected ',' or ']'")
        pos = _JSON_WS.match(text, pos + 1).end()


def _delimited_rows(
    text: str, path: str, fmt: str, source: SourceSpec
) -> Iterator[tuple[str, Any]]:
    delimiter = source.delimiter or ("\t" if fmt == "tsv" else ",")
    # GLUE-style TSVs carry raw quote characters: no quote handling for TSV.
    quoting = csv.QUOTE_NONE if fmt == "tsv" else csv.QUOTE_MINIMAL
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, quoting=quoting)
    header = list(source.columns) if source.columns else None
    previous_end = 0  # reader.line_num after the previous record; a record can span lines
    try:
        for record in reader:
            number, previous_end = previous_end + 1, reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # blank line
            if header is None:
                header = [name.strip() for name in record]
                continue
            if len(record) != len(header):
                raise DataError(
                    f"{path}, line {number}: {len(record)} fields, but the header has "
                    f"{len(header)} ({', '.join(header)}). Fix the row (a stray or missing "
                    f"{'tab' if delimiter == chr(9) else repr(delimiter)}?)."
                )
            yield (
                f"line {number}",
                {k: v for k, v in zip(header, record, strict=True) if k != _SKIP_COLUMN},
            )
    except csv.Error as error:
        raise DataError(
            f"{path}, line {reader.line_num}: malformed {fmt.upper()} ({error})."
        ) from None


def _conll_rows(text: str, path: str, source: SourceSpec) -> Iterator[tuple[str, Any]]:
    """Sentences of a CoNLL column file. Document boundaries (``-DOCSTART-`` lines; ``#
    newdoc`` comments in CoNLL-U) give every later sentence a ``document`` number."""
    is_conllu = path.lower().endswith(".conllu")
    columns = list(source.columns) if source.columns else (CONLLU_COLUMNS if is_conllu else None)
    if columns is None:
        raise DataError(
            f"{path}: a CoNLL column file needs `columns:` in its source, naming each column "
            f"(`_` skips one), e.g. `columns: [tokens, pos, chunk, ner]` for CoNLL-2003."
        )
    delimiter = source.delimiter or ("\t" if is_conllu else None)  # None: any whitespace
    kept = [(i, name) for i, name in enumerate(columns) if name != _SKIP_COLUMN]
    sentence: dict[str, Any] | None = None
    first_line = 0
    document: int | None = None  # None until the file marks a document

    def finished() -> tuple[str, Any]:
        assert sentence is not None
        if document is not None:
            sentence[DOCUMENT_COLUMN] = str(document)
        return f"line {first_line}", sentence

    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if sentence is not None:
                yield finished()
            sentence = None
            continue
        if is_conllu and line.startswith("#"):
            if line[1:].strip().startswith("newdoc"):
                document = 0 if document is None else document + 1
            continue
        parts = line.split(delimiter) if delimiter else line.split()
        if parts[0] == "-DOCSTART-":
            if sentence is not None:
                yield finished()
            sentence = None
            document = 0 if document is None else document + 1
            continue
        if is_conllu and ("-" in parts[0] or "." in parts[0]):
            continue  # multiword token range or empty node
        if len(parts) != len(columns):
            raise DataError(
                f"{path}, line {number}: {len(parts)} columns, but `columns:` names "
                f"{len(columns)} ({', '.join(columns)}). Fix the line or the `columns:` list."
            )
        if sentence is None:
            sentence, first_line = {name: [] for _, name in kept}, number
        for i, name in kept:
            sentence[name].append(parts[i])
    if sentence is not None:
        yield finished()


def _parquet_rows(path: str) -> RawRows:
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as error:  # pyarrow raises several types for a broken file
        raise DataError(f"{path}: not a readable Parquet file ({error}).") from None
    columns = table.to_pydict()
    decoders: dict[str, Callable[[Any], Any]] = {}
    metadata = (table.schema.metadata or {}).get(b"huggingface")
    if metadata:  # a file written by `datasets`: turn ClassLabel ids back into names
        try:
            from datasets import Features

            features = Features.from_dict(json.loads(metadata)["info"]["features"])
            decoders = _class_label_decoders(features)
        except Exception:  # foreign or old metadata: keep the raw values
            decoders = {}
    for name, decode in decoders.items():
        if name in columns:
            columns[name] = [decode(value) for value in columns[name]]
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    return [
        (f"row index {i}", dict(zip(names, values, strict=True))) for i, values in enumerate(rows)
    ]


def load_hf(task: TaskSpec, split: str, source: SourceSpec, path: str) -> Any:
    import datasets

    hf_split = source.split or split
    try:
        return datasets.load_dataset(path, source.name, split=hf_split)
    except Exception as error:
        offline = os.environ.get("HF_DATASETS_OFFLINE", "") not in ("", "0", "false", "False")
        hint = (
            " Hugging Face is offline here (HF_DATASETS_OFFLINE=1): point `path` at a local "
            "dataset folder, or set HF_DATASETS_OFFLINE=0 and HF_HUB_OFFLINE=0 with network."
            if offline
            else ""
        )
        raise DataError(
            f"{split} source of task {task.name!r}: could not load Hugging Face dataset "
            f"{path!r} (name={source.name!r}, split={hf_split!r}): {error}.{hint}"
        ) from None


def _class_label_decoders(features: Any) -> dict[str, Callable[[Any], Any]]:
    from datasets import ClassLabel

    def names_of(feature: ClassLabel) -> Callable[[Any], Any]:
        names = list(feature.names)
        return lambda value: None if value is None or value < 0 else names[value]

    decoders: dict[str, Callable[[Any], Any]] = {}
    for name, feature in features.items():
        if isinstance(feature, ClassLabel):
            decoders[name] = names_of(feature)
        elif isinstance(getattr(feature, "feature", None), ClassLabel):
            one = names_of(feature.feature)
            decoders[name] = lambda values, one=one: (
                None if values is None else [one(v) for v in values]
            )
    return decoders


def hf_rows(dataset: Any) -> list[dict[str, Any]]:
    """Rows of a ``datasets.Dataset`` as dicts, with ClassLabel ids turned into label names.

    ``ClassLabel`` columns and list/``Sequence`` columns of ``ClassLabel`` become strings; the
    id ``-1`` (Hugging Face's "no label", e.g. GLUE test splits) becomes ``None``.
    """
    columns = dataset.to_dict()
    for name, decode in _class_label_decoders(dataset.features).items():
        columns[name] = [decode(value) for value in columns[name]]
    names = list(columns)
    rows = zip(*(columns[n] for n in names), strict=True)
    return [dict(zip(names, values, strict=True)) for values in rows]


