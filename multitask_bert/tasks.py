"""Task specifications: task types, heads, sources and label vocabularies.

Tasks are data: a task is a YAML mapping validated into :class:`TaskSpec`. Code exists per
task *type* (``sequence``, ``token``) and per head *type* (``classification``, ``multilabel``,
``regression``, ``tagging``), never per dataset.

Example (``tasks_data/conll2003.yaml``)::

    name: conll2003
    type: token
    heads:
      - {name: ner, type: tagging, scheme: IOB1}
      - {name: pos, type: tagging}
    train: ../../shared/datasets/conll2003/train.jsonl
    validation: ../../shared/datasets/conll2003/validation.jsonl
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from multitask_bert.heads.registry import HEAD_TYPES, head_type_class
from multitask_bert.task_types.registry import TASK_TYPES, task_type_of

TagScheme = Literal["IOB1", "IOB2", "BIOES"]
SourceFormat = Literal["jsonl", "json", "csv", "tsv", "parquet", "conll", "hf"]
SPLITS = ("train", "validation", "test")

_EXTENSION_FORMATS = {
    ".jsonl": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".conll": "conll",
    ".conllu": "conll",
    ".txt": "conll",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _registered(value: object, known: dict) -> str:
    """``value`` when it names a registered type; else the error pydantic gives a Literal."""
    if isinstance(value, str) and value in known:
        return value
    names = [repr(name) for name in known]
    expected = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    raise PydanticCustomError("literal_error", "Input should be {expected}", {"expected": expected})


class HeadSpec(_Strict):
    """One prediction head of a task."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    """Head name; also the log key (``task/head/metric``)."""
    type: str
    """``classification`` (one label), ``multilabel`` (a list of labels), ``regression``
    (a float), ``tagging`` (one label per word; token tasks only), or any head type
    registered with :func:`multitask_bert.heads.register_head_type`."""
    column: str | None = None
    """Field of the example that holds this head's label(s); defaults to ``name``."""
    labels: list[str] | None = None
    """Label vocabulary; when absent it is read from the train split (sorted)."""
    scheme: TagScheme | None = None
    """Tag scheme of an entity tagging head (CoNLL-2003 is IOB1). Scored with entity-level
    seqeval F1; a tagging head without a scheme (POS-like) is scored by accuracy."""
    loss_weight: float = Field(default=1.0, ge=0.0)
    """Weight of this head's loss in the task's loss."""
    dropout: float = Field(default=0.1, ge=0.0, lt=1.0)
    """Dropout before the head's output layer."""
    major_metric: str | None = None
    """Metric used as this head's major score; defaults by head type."""

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> str:
        return _registered(value, HEAD_TYPES)

    @property
    def field(self) -> str:
        return self.column or self.name

    @property
    def major(self) -> str:
        """The metric early stopping and promotion read (``major_metric`` or the type's)."""
        return self.major_metric or head_type_class(self.type).default_major(self)

    @property
    def has_vocabulary(self) -> bool:
        return head_type_class(self.type).has_vocabulary

    @model_validator(mode="after")
    def _check_options(self) -> HeadSpec:
        head_type_class(self.type).check_spec(self)
        if self.labels is not None and len(set(self.labels)) != len(self.labels):
            raise ValueError(f"head {self.name!r}: `labels` has duplicates")
        return self


class SourceSpec(_Strict):
    """Where one split comes from: a local file or a Hugging Face Hub dataset id."""

    path: str
    """File path (relative to the YAML that declares it) or, with ``format: hf``, a Hub id."""
    format: SourceFormat | None = None
    """Inferred from the extension when absent."""
    name: str | None = None
    """Hub dataset configuration name (``format: hf``)."""
    split: str | None = None
    """Hub split name (``format: hf``); defaults to the split this source is used for."""
    columns: list[str] | None = None
    """CoNLL column files: the name of each column, e.g. ``[tokens, pos, chunk, ner]``;
    ``_`` skips a column."""
    delimiter: str | None = None
    """CSV/TSV/CoNLL field delimiter override."""
    limit: int | None = Field(default=None, gt=0)
    """Use only a seeded random subset of this many examples (for quick runs)."""

    @property
    def resolved_format(self) -> str:
        if self.format:
            return self.format
        suffix = Path(self.path).suffix.lower()
        # Anything else (``conll2003``, ``org/name``, a dataset folder) goes to
        # `datasets.load_dataset`, the same call a user with network uses for Hub ids.
        return _EXTENSION_FORMATS.get(suffix, "hf")


class TaskSpec(_Strict):
    """A dataset with its input fields, splits and heads."""

    name: str = Field(pattern=r"^[A-Za-z][A-Za-z0-9_\-]*$")
    """Task name; also the log key prefix."""
    type: str
    """``sequence`` (one text or a text pair per example) or ``token`` (pre-split words)."""
    heads: list[HeadSpec] = Field(min_length=1)
    """One or more heads over the same examples."""
    text_fields: list[str] | None = None
    """Input fields: ``[text]`` or ``[text_a, text_b]`` for sequence tasks (default: ``text``,
    or the pair when the data has ``text_a``), ``[tokens]`` for token tasks."""
    train: SourceSpec | None = None
    validation: SourceSpec | None = None
    test: SourceSpec | None = None
    holdout_fraction: float | None = Field(default=None, gt=0, lt=1)
    """With no ``validation`` source: hold out this seeded fraction of train as the
    validation split (TREC ships only train and test)."""
    max_length: int | None = Field(default=None, gt=2)
    """Sub-word truncation length; defaults to the experiment's ``max_length``."""
    document_context: bool = False
    """Token tasks: encode each sentence with sub-words of the neighbouring sentences of its
    document around it, up to ``max_length`` (labels and scores stay on the sentence's own
    words). Needs document ids: ``-DOCSTART-`` lines of a CoNLL file, or a ``document_field``
    in JSONL/CSV/Parquet rows."""
    document_field: str = "document"
    """Field of a row that names its document (for ``document_context``)."""
    word_shape: bool = False
    """Token tasks: add a small learned embedding of each word's shape (lower, Title, UPPER,
    mixed, digits, punctuation, other) to its first sub-word before the tagging heads, so an
    uncased encoder sees capitalisation."""
    base_dir: str | None = Field(default=None, exclude=True)
    """Folder relative paths are resolved against (set by the loader, not in YAML)."""

    @field_validator("type", mode="before")
    @classmethod
    def _known_type(cls, value: object) -> str:
        return _registered(value, TASK_TYPES)

    @field_validator("train", "validation", "test", mode="before")
    @classmethod
    def _source_from_string(cls, value: object) -> object:
        return {"path": value} if isinstance(value, str) else value

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        names = [h.name for h in self.heads]
        if len(set(names)) != len(names):
            raise ValueError(f"task {self.name!r}: head names must be unique, got {names}")
        for head in self.heads:
            takes = head_type_class(head.type).task_types
            if self.type not in takes:
                allowed = " or ".join(
                    f"`{name}`" for name, kind in HEAD_TYPES.items() if self.type in kind.task_types
                )
                raise ValueError(
                    f"task {self.name!r}, head {head.name!r}: {self.type} tasks take {allowed} "
                    f"heads only, not {head.type!r} (`{head.type}` needs `type: "
                    f"{' or '.join(takes)}`)"
                )
        task_type_of(self.type).check_task(self)
        if self.text_fields is not None:
            limit = task_type_of(self.type).max_text_fields
            if not 1 <= len(self.text_fields) <= limit:
                raise ValueError(
                    f"task {self.name!r}: text_fields takes 1 to {limit} fields for a "
                    f"{self.type} task, got {self.text_fields}"
                )
        if self.holdout_fraction is not None and self.validation is not None:
            raise ValueError(
                f"task {self.name!r}: holdout_fraction makes the validation split from train; "
                "remove it or the `validation` source"
            )
        if self.train is None:
            raise ValueError(f"task {self.name!r}: a `train` source is required")
        return self

    def head(self, name: str) -> HeadSpec:
        for head in self.heads:
            if head.name == name:
                return head
        raise KeyError(f"task {self.name!r} has no head {name!r}; heads: {self.head_names}")

    @property
    def head_names(self) -> list[str]:
        return [h.name for h in self.heads]

    def source(self, split: str) -> SourceSpec | None:
        return getattr(self, split)

    def resolve_path(self, source: SourceSpec) -> str:
        """Absolute path of a local source (environment variables expanded)."""
        path = os.path.expandvars(os.path.expanduser(source.path))
        if source.resolved_format == "hf" or os.path.isabs(path) or self.base_dir is None:
            return path
        return os.path.normpath(os.path.join(self.base_dir, path))
