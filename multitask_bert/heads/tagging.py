"""``tagging``: one label per word of a token task (entity F1 with a scheme, else accuracy).

Words are labelled on their first sub-word (see :mod:`multitask_bert.data.alignment`) and
scored at the word level on every word of the example: words cut off by truncation have no
prediction, so they count as ``O`` for entity heads (the entity is missed) and as wrong for
accuracy heads (``None`` in predictions); their number is reported as ``truncated_words``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import pyarrow as pa
import torch
from torch.nn import functional as F

from multitask_bert.data.alignment import IGNORE_INDEX, RowWords, list_array
from multitask_bert.errors import short_repr
from multitask_bert.evaluation import tag_schemes
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
    """One tag per word; predictions ``{"tags", "tag_scores"}`` with one entry per input
    word, and ``"spans"`` (the entities) for heads with a scheme."""

    name = "tagging"
    output_fields: ClassVar[dict[str, Any]] = {
        "tags": ["string"],
        "tag_scores": ["double"],
        "spans?": [{"type": "string", "first_word": "long", "last_word": "long",
                    "score": "double", "text?": "string", "start_char?": "long",
                    "end_char?": "long"}],
    }
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

    def describe(self) -> str:
        return f"tagging ({self.spec.scheme})" if self.spec.scheme else "tagging"

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
        """Per row ``{"tags", "tag_scores"}`` (one per word; a word cut off by truncation
        gets the fill tag and the score None) and, with an entity scheme, ``"spans"``.

        With a scheme the argmax tags are repaired into a valid sequence
        (:func:`~multitask_bert.evaluation.tag_schemes.repair`: the entities the scorer
        reads, written validly), so ``tags`` and ``spans`` always agree. A span is
        ``{"type", "first_word", "last_word" (inclusive), "score"}`` plus ``"text"`` when
        the words are known and ``"start_char"``/``"end_char"`` when the row was text. A
        tag's score is its softmax probability; a span's is the mean over its words of the
        probability of the span's type (all of its ``B-``/``I-``/``E-``/``S-`` tags
        together), so a repaired prefix does not lower it.
        """
        if words is None:
            raise ValueError(f"head {self.spec.name!r}: decoding tags needs the rows' words")
        probabilities = torch.softmax(logits.float(), dim=-1)
        best, predicted = probabilities.max(-1)
        best_list, predicted_list = best.tolist(), predicted.tolist()
        scheme = self.spec.scheme
        out = []
        for row, row_words in enumerate(words):
            tags: list[str | None] = [self.fill] * row_words.count
            scores: list[float | None] = [None] * row_words.count
            for position, word in row_words.firsts:
                tags[word] = self.labels[predicted_list[row][position]]
                scores[word] = best_list[row][position]
            if not scheme:
                out.append({"tags": tags, "tag_scores": scores})
                continue
            repaired = tag_schemes.repair([t or "O" for t in tags], scheme)
            positions = dict((word, position) for position, word in row_words.firsts)
            row_probabilities = probabilities[row]
            for word, (old, new) in enumerate(zip(tags, repaired, strict=True)):
                if old != new and word in positions:
                    scores[word] = float(row_probabilities[positions[word], self.label_ids[new]])
            spans = [self._span(entity, row_words, positions, row_probabilities)
                     for entity in tag_schemes.entity_spans(tag_schemes.to_iob2(repaired, scheme))]
            out.append({"tags": repaired, "tag_scores": scores, "spans": spans})
        return out

    def _span(self, entity: tuple[str, int, int], row_words: RowWords,
              positions: dict[int, int], probabilities: torch.Tensor) -> dict[str, Any]:
        entity_type, start, end = entity
        type_ids = self._type_label_ids().get(entity_type, [])
        kept = [positions[w] for w in range(start, end) if w in positions]
        score = (float(probabilities[kept][:, type_ids].sum(-1).mean())
                 if kept and type_ids else 0.0)
        span: dict[str, Any] = {"type": entity_type, "first_word": start,
                                "last_word": end - 1, "score": score}
        if row_words.words is not None:
            span["text"] = " ".join(row_words.words[start:end])
        if row_words.char_spans is not None:
            span["start_char"] = row_words.char_spans[start][0]
            span["end_char"] = row_words.char_spans[end - 1][1]
        return span

    def _type_label_ids(self) -> dict[str, list[int]]:
        """Label ids of every entity type (``B-X``, ``I-X``, ``E-X``, ``S-X`` of ``X``)."""
        if not hasattr(self, "_types"):
            types: dict[str, list[int]] = {}
            for index, label in enumerate(self.labels):
                if label != "O" and len(label) > 2 and label[1] == "-":
                    types.setdefault(label[2:], []).append(index)
            self._types = types
        return self._types

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
        # words cut off by max_length, not the empty ones (no sub-word, so no position either)
        truncated = sum(dataset.columns["num_words_truncated"][i] for i in batch.indices)
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
