"""Reading raw sources into normalized examples.

One function per source format turns a file (or a Hugging Face dataset) into raw rows, each
with its location (``line 12`` of the file, or ``row index 3`` of a table). One normalizer,
shared by every format, checks each row against the task and returns a *normalized example*:

* token tasks: ``{"tokens": [str, ...], "<head.field>": [str, ...], ...}``;
* sequence tasks: ``{"text": str}`` or ``{"text_a": str, "text_b": str}`` plus, per head,
  ``str`` (classification), ``list[str]`` (multilabel) or ``float`` (regression).

Input fields keep their original names (see :func:`input_fields`). Each example also carries
its location under :data:`LOCATION_KEY`, so later stages (the label vocabulary check) can name
the line of a bad label. Every problem a user can fix is a :class:`DataError` naming the file,
the line (or row), the field and what to do.

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
import hashlib
import io
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from multitask_bert.errors import DataError
from multitask_bert.tasks import SPLITS, HeadSpec, SourceSpec, TaskSpec

LOCATION_KEY = "_location"
"""Key of a normalized example that holds where it came from (``"line 12"``, ``"row index 3"``)."""

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
_JSON_WS = re.compile(r"[ \t\n\r]*")
_FEW = 12  # how many field names / labels an error message lists

# (location, raw row) pairs as a format reader yields them
RawRows = list[tuple[str, Any]]


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


def input_fields(task: TaskSpec, first_example: dict[str, Any]) -> list[str]:
    """Names of the input fields of a task's examples.

    ``task.text_fields`` when given; else ``["tokens"]`` for token tasks and, for sequence
    tasks, ``["text_a", "text_b"]`` when the first example has ``text_a``, otherwise ``["text"]``.
    Raw rows and normalized examples give the same answer, so the encoder uses it too.
    """
    if task.text_fields:
        return list(task.text_fields)
    if task.type == "token":
        return ["tokens"]
    return ["text_a", "text_b"] if "text_a" in first_example else ["text"]


def read_split(
    task: TaskSpec, split: str, *, seed: int = 0, apply_limit: bool = True
) -> list[dict[str, Any]]:
    """Read and check one split of a task.

    Args:
        task: The task spec; relative paths resolve against ``task.base_dir``.
        split: ``train``, ``validation`` or ``test``; the task must have a source for it.
        seed: Seed of the random subset taken when the source has ``limit``.
        apply_limit: Set ``False`` to read every row even when the source has ``limit``
            (the label vocabulary is built from the whole train split).

    Returns:
        Normalized examples in file order (see the module docstring).

    Raises:
        DataError: The source is missing or a row is malformed (the message names the
            file, the line or row, the field and the fix).
    """
    source = _source(task, split)
    path = task.resolve_path(source)
    rows = _read_raw_rows(task, split, source, path)
    if not rows:
        raise DataError(
            f"{path}: no examples in the {split} split of task {task.name!r} (the source is "
            f"empty or holds only blank/comment lines). Fill it, or remove `{split}:` from "
            f"the task YAML."
        )
    fields = input_fields(task, rows[0][1] if isinstance(rows[0][1], dict) else {})
    normalize = _Normalizer(task, fields, path)
    examples = [normalize(where, row) for where, row in rows]
    if apply_limit and source.limit is not None:
        examples = take_subset(examples, source.limit, seed)
    return examples


def take_subset(examples: list[Any], limit: int, seed: int) -> list[Any]:
    """A seeded random subset of ``limit`` items, in their original order."""
    if limit >= len(examples):
        return examples
    chosen = sorted(random.Random(seed).sample(range(len(examples)), limit))
    return [examples[i] for i in chosen]


def source_fingerprint(task: TaskSpec, split: str) -> str:
    """Content fingerprint of a split's source.

    The sha256 of the raw bytes for a local file (so a moved file with the same content keeps
    its fingerprint); for ``hf`` sources the loaded dataset's own fingerprint.
    """
    source = _source(task, split)
    path = task.resolve_path(source)
    if source.resolved_format == "hf":
        # `datasets` derives it from the data files (local) or the Hub revision (remote)
        return f"hf:{_load_hf(task, split, source, path)._fingerprint}"
    _check_exists(task, split, source, path)
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


# --------------------------------------------------------------------------------------------
# Sources and files
# --------------------------------------------------------------------------------------------


def _source(task: TaskSpec, split: str) -> SourceSpec:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; splits are {list(SPLITS)}")
    source = task.source(split)
    if source is None:
        raise DataError(
            f"task {task.name!r} has no `{split}` source; add `{split}:` to the task YAML or "
            f"do not ask for this split"
        )
    return source


def _check_exists(task: TaskSpec, split: str, source: SourceSpec, path: str) -> None:
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


def _read_text(path: str) -> str:
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


def _read_raw_rows(task: TaskSpec, split: str, source: SourceSpec, path: str) -> RawRows:
    fmt = source.resolved_format
    if fmt == "hf":
        return [
            (f"row index {i}", row)
            for i, row in enumerate(hf_rows(_load_hf(task, split, source, path)))
        ]
    _check_exists(task, split, source, path)
    if fmt == "parquet":
        return _parquet_rows(path)
    text = _read_text(path)
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
        if task.type != "token":
            raise DataError(
                f"{path}: CoNLL column files hold token tasks, but task {task.name!r} has "
                f"`type: {task.type}`. Use `type: token` or another source format."
            )
        return list(_conll_rows(text, path, source))
    raise DataError(f"{path}: unknown source format {fmt!r}")  # pragma: no cover - Literal


# --------------------------------------------------------------------------------------------
# Format readers: each yields (location, raw row)
# --------------------------------------------------------------------------------------------


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
    is_conllu = path.lower().endswith(".conllu")
    columns = list(source.columns) if source.columns else (CONLLU_COLUMNS if is_conllu else None)
    if columns is None:
        raise DataError(
            f"{path}: a CoNLL column file needs `columns:` in its source, naming each column "
            f"(`_` skips one), e.g. `columns: [tokens, pos, chunk, ner]` for CoNLL-2003."
        )
    delimiter = source.delimiter or ("\t" if is_conllu else None)  # None: any whitespace
    kept = [(i, name) for i, name in enumerate(columns) if name != _SKIP_COLUMN]
    sentence: dict[str, list[str]] | None = None
    first_line = 0
    for number, line in enumerate(text.split("\n"), start=1):
        line = line.rstrip("\r")
        if not line.strip():
            if sentence is not None:
                yield f"line {first_line}", sentence
            sentence = None
            continue
        if is_conllu and line.startswith("#"):
            continue
        parts = line.split(delimiter) if delimiter else line.split()
        if parts[0] == "-DOCSTART-":
            if sentence is not None:
                yield f"line {first_line}", sentence
            sentence = None
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
        yield f"line {first_line}", sentence


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


def _load_hf(task: TaskSpec, split: str, source: SourceSpec, path: str) -> Any:
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


# --------------------------------------------------------------------------------------------
# Normalizing and checking rows
# --------------------------------------------------------------------------------------------


class _Normalizer:
    """Checks raw rows against a task and turns them into normalized examples."""

    def __init__(self, task: TaskSpec, fields: list[str], path: str) -> None:
        self.task, self.fields, self.path = task, fields, path
        self.heads: list[HeadSpec] = list(task.heads)

    def fail(self, where: str, field: str | None, problem: str, fix: str) -> DataError:
        about = f", field {field!r}" if field else ""
        return DataError(f"{self.path}, {where}{about}: {problem}. {fix}")

    def __call__(self, where: str, row: Any) -> dict[str, Any]:
        if not isinstance(row, dict):
            raise self.fail(
                where,
                None,
                f"expected a JSON object, got {type(row).__name__} {_short(row)}",
                "Each example must be an object like " + self._shape(),
            )
        for field in [*self.fields, *(h.field for h in self.heads)]:
            if field not in row:
                have = ", ".join(map(str, list(row)[:_FEW])) or "none"
                raise self.fail(
                    where,
                    field,
                    f"missing (the row has fields: {have})",
                    "Add the field, or name the right one with `column:` (heads) or "
                    "`text_fields:` (inputs) in the task YAML",
                )
        example: dict[str, Any] = {}
        if self.task.type == "token":
            field = self.fields[0]
            tokens = self._tokens(where, field, row[field])
            example[field] = tokens
            for head in self.heads:
                example[head.field] = self._tags(where, head, row[head.field], len(tokens), field)
        else:
            for field in self.fields:
                example[field] = self._text(where, field, row[field])
            for head in self.heads:
                example[head.field] = self._label(where, head, row[head.field])
        example[LOCATION_KEY] = where
        return example

    def _shape(self) -> str:
        if self.task.type == "token":
            tags = ", ".join(f'"{h.field}": [...]' for h in self.heads)
            return f'{{"{self.fields[0]}": [...], {tags}}}'
        texts = ", ".join(f'"{f}": "..."' for f in self.fields)
        return f"{{{texts}, " + ", ".join(f'"{h.field}": ...' for h in self.heads) + "}"

    def _tokens(self, where: str, field: str, value: Any) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(
                where,
                field,
                f"expected a list of words, got {type(value).__name__} {_short(value)}",
                "Token tasks take pre-split words (JSONL, Parquet or CoNLL; CSV cannot hold lists)",
            )
        if not value:
            raise self.fail(where, field, "empty word list", "Remove the row or give it words")
        try:
            "".join(value)  # fast check that every word is a string
            return value
        except TypeError:
            pass
        for i, token in enumerate(value):
            if not isinstance(token, str):
                raise self.fail(
                    where,
                    field,
                    f"word {i} is {type(token).__name__} {_short(token)}, not a string",
                    "Make every word a string",
                )
        return value

    def _tags(self, where: str, head: HeadSpec, value: Any, n_words: int, words: str) -> list[str]:
        if not isinstance(value, list):
            raise self.fail(
                where,
                head.field,
                f"expected a list of tags (head {head.name!r}), got "
                f"{type(value).__name__} {_short(value)}",
                "Give one tag per word",
            )
        if len(value) != n_words:
            raise self.fail(
                where,
                head.field,
                f"{len(value)} tags for head {head.name!r} but {n_words} words in {words!r}",
                "Give exactly one tag per word",
            )
        try:
            "".join(value)  # fast check that every tag is a string
            return value
        except TypeError:
            pass
        tags = []
        for i, tag in enumerate(value):
            if isinstance(tag, str):
                tags.append(tag)
            elif isinstance(tag, int) and not isinstance(tag, bool):
                tags.append(str(tag))
            else:
                raise self.fail(
                    where,
                    head.field,
                    f"tag {i} of head {head.name!r} is {type(tag).__name__} {_short(tag)}",
                    "Tags must be strings (or integer ids)",
                )
        return tags

    def _text(self, where: str, field: str, value: Any) -> str:
        if not isinstance(value, str):
            raise self.fail(
                where,
                field,
                f"expected a string, got {type(value).__name__} {_short(value)}",
                "Input text must be a string",
            )
        if not value.strip():
            raise self.fail(where, field, "empty text", "Remove the row or give it text")
        return value

    def _label(self, where: str, head: HeadSpec, value: Any) -> Any:
        if value is None:
            raise self.fail(
                where,
                head.field,
                f"null label for head {head.name!r} (an unlabeled row, as in GLUE test splits)",
                "Give the row a label, or leave this split out of the task YAML",
            )
        if head.type == "classification":
            if isinstance(value, (str, int)):  # bool is an int: True -> "True"
                if isinstance(value, str) and not value.strip():
                    raise self.fail(
                        where,
                        head.field,
                        f"empty label for head {head.name!r}",
                        "Give the row a label",
                    )
                return str(value)
            raise self.fail(
                where,
                head.field,
                f"a classification label must be a string or an integer, got "
                f"{type(value).__name__} {_short(value)}",
                "Use one label per row (a list needs `type: multilabel`, a number "
                "`type: regression`)",
            )
        if head.type == "multilabel":
            if not isinstance(value, list) or not all(
                isinstance(v, (str, int)) and not isinstance(v, bool) for v in value
            ):
                raise self.fail(
                    where,
                    head.field,
                    f"a multilabel label must be a list of strings, got {type(value).__name__} "
                    f"{_short(value)}",
                    'Use a list of labels, e.g. ["a", "b"] (JSONL or Parquet; CSV cannot hold '
                    "lists)",
                )
            return [str(v) for v in value]
        # regression
        number: float | None = None
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            number = float(value)
        elif isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                number = None
        if number is None or not math.isfinite(number):
            raise self.fail(
                where,
                head.field,
                f"a regression label must be a finite number, got "
                f"{type(value).__name__} {_short(value)}",
                "Fix the value",
            )
        return number


def _short(value: Any, limit: int = 60) -> str:
    text = (
        json.dumps(value, ensure_ascii=False, default=str)
        if not isinstance(value, str)
        else repr(value)
    )
    return text if len(text) <= limit else text[: limit - 3] + "..."
