"""``tagging``: one label per word of a token task (entity F1 with a scheme, else accuracy).

Words are labelled on their first sub-word (see :mod:`multitask_bert.data.alignment`) and
scored at the word level on every word of the example: words cut off by truncation have no
prediction, so they count as ``O`` for entity heads (the entity is missed) and as wrong for
accuracy heads (``None`` in predictions); their number is reported as ``truncated_words``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F

from multitask_bert.data.alignment import IGNORE_INDEX, RowWords, list_array
from multitask_bert.errors import short_repr
from multitask_bert.evaluation.metrics import compute_ner_metrics, compute_tagging_accuracy
from multitask_bert.heads.base import HeadModule, HeadType, RawLabel
from multitask_bert.heads.registry import register_head_type

if TYPE_CHECKING:
    from multitask_bert.data.alignment import ChunkAlignment
    from multitask_bert.data.dataset import Batch, TaskDataset
    from multitask_bert.tasks import HeadSpec

_MISSING = "<truncated>"
"""What a truncated word counts as for a tagging head without a scheme (always wrong)."""


class TaggingModule(HeadModule):
    reads = "tokens"

    def loss(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # The mean over labelled positions, as a sum over a count: a batch whose words were
        # all truncated has none, and gives 0 (not 0/0 = NaN) that still depends on the
        # logits. No branch on the labels' values: on CUDA that would be a host sync per step.
        labels = labels.long().flatten()
        total = F.cross_entropy(logits.float().flatten(0, 1), labels,
                                ignore_index=IGNORE_INDEX, reduction="sum")
        return total / (labels != IGNORE_INDEX).sum().clamp(min=1)


@register_head_type
class TaggingHead(HeadType):
    """One tag per word; predictions ``{"tags": [...]}`` with one tag per input word."""

    name = "tagging"
    task_types = ("token",)
    module = TaggingModule
    label_type = pa.list_(pa.int32())
    """Sub-word aligned tag ids (-100 off the first sub-words)."""

    @classmethod
    def check_spec(cls, spec: HeadSpec) -> None:
        return None  # `scheme` is this type's option

    @classmethod
    def default_major(cls, spec: HeadSpec) -> str:
        return "f1" if spec.scheme else "accuracy"

    @property
    def word_column(self) -> str:
        """Word-level gold ids of every word, truncated ones included (for scoring)."""
        return f"word_label__{self.spec.name}"

    @property
    def fill(self) -> str | None:
        """The prediction of a word without a position (cut off by truncation)."""
        return "O" if self.spec.scheme else None

    # -- raw rows and the cache table ------------------------------------------------------
    def normalize(self, raw: RawLabel) -> list[str]:
        value, head = raw.value, self.spec.name
        n_words = len(raw.words or [])
        if not isinstance(value, list):
            raise raw.fail(
                f"expected a list of tags (head {head!r}), got "
                f"{type(value).__name__} {short_repr(value)}",
                "Give one tag per word",
            )
        if len(value) != n_words:
            raise raw.fail(
                f"{len(value)} tags for head {head!r} but {n_words} words in "
                f"{raw.words_field!r}",
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
                raise raw.fail(
                    f"tag {i} of head {head!r} is {type(tag).__name__} {short_repr(tag)}",
                    "Tags must be strings (or integer ids)",
                )
        return tags

    def labels_in(self, value: Any) -> Iterable[str]:
        return value

    def fields(self) -> list[pa.Field]:
        return [pa.field(self.column, self.label_type),
                pa.field(self.word_column, pa.list_(pa.int32()))]

    def encode(self, values: list[Any], alignment: ChunkAlignment | None) -> dict[str, pa.Array]:
        assert alignment is not None, "tagging heads label token tasks"
        total_words = int(alignment.word_offsets[-1])
        word_labels = np.fromiter(
            (self.label_ids[tag] for tags in values for tag in tags),
            dtype=np.int32,
            count=total_words,
        )
        labels = np.full(int(alignment.subword_offsets[-1]), IGNORE_INDEX, dtype=np.int32)
        labels[alignment.positions] = word_labels[alignment.words]
        return {self.column: list_array(alignment.subword_offsets, labels),
                self.word_column: list_array(alignment.word_offsets, word_labels)}

    def collate(self, values: list[Any], width: int) -> torch.Tensor:
        tags = torch.full((len(values), width), IGNORE_INDEX, dtype=torch.long)
        for row, value in enumerate(values):
            tags[row, : len(value)] = torch.tensor(value, dtype=torch.long)
        return tags

    def collate_packed(self, values: list[Any], lengths: list[int]) -> torch.Tensor:
        """``(1, total tokens)``: each row's tags over its own tokens, rows one after the
        other (the token layout of a packed batch)."""
        tags = torch.full((1, sum(lengths)), IGNORE_INDEX, dtype=torch.long)
        start = 0
        for value, length in zip(values, lengths, strict=True):
            row = value[:length]
            tags[0, start : start + len(row)] = torch.tensor(row, dtype=torch.long)
            start += length
        return tags

    # -- predictions and evaluation -----------------------------------------------------------
    def decode(self, logits: torch.Tensor, words: list[RowWords] | None = None) -> list[Any]:
        if words is None:
            raise ValueError(f"head {self.spec.name!r}: decoding tags needs the rows' words")
        predicted = logits.argmax(-1).tolist()
        out = []
        for row, row_words in enumerate(words):
            tags: list[str | None] = [self.fill] * row_words.count
            row_predicted = predicted[row]
            for position, word in row_words.firsts:
                tags[word] = self.labels[row_predicted[position]]
            out.append({"tags": tags})
        return out

    def evaluation_pairs(
        self, logits: torch.Tensor, batch: Batch, dataset: TaskDataset
    ) -> tuple[list[Any], list[Any], dict[str, float]]:
        labelled = (batch.labels[self.spec.name] != IGNORE_INDEX).tolist()
        word_gold = dataset.columns[self.word_column]
        words, gold = [], []
        for row, index in enumerate(batch.indices):
            # the labelled positions are the first sub-words of the kept words, in order
            positions = [p for p, on in enumerate(labelled[row]) if on]
            words.append(RowWords(firsts=[(p, k) for k, p in enumerate(positions)],
                                  count=len(word_gold[index])))
            gold.append([self.labels[i] for i in word_gold[index]])
        predicted = [self.metric_value(p) for p in self.decode(logits, words)]
        truncated = sum(w.count - len(w.firsts) for w in words)
        return gold, predicted, {"truncated_words": float(truncated)}

    def metric_value(self, prediction: Any) -> list[str]:
        return [_MISSING if tag is None else tag for tag in prediction["tags"]]

    def compute_metrics(self, y_true: list[Any], y_pred: list[Any], counts: dict[str, float]
                        ) -> dict[str, Any]:
        if self.spec.scheme:
            metrics: dict[str, Any] = compute_ner_metrics(y_true, y_pred, self.spec.scheme)
        else:
            metrics = compute_tagging_accuracy(y_true, y_pred)
        metrics["truncated_words"] = float(counts.get("truncated_words", 0.0))
        return metrics

    def majority_baseline(self, train: TaskDataset, evaluation: TaskDataset) -> dict[str, Any]:
        counts = Counter(t for row in train.columns[self.word_column] for t in row)
        majority = self.labels[counts.most_common(1)[0][0]]
        gold = [[self.labels[t] for t in row] for row in evaluation.columns[self.word_column]]
        predicted = [[majority] * len(row) for row in gold]
        if self.spec.scheme:
            return compute_ner_metrics(gold, predicted, self.spec.scheme)
        return compute_tagging_accuracy(gold, predicted)
