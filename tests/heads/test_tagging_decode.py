"""Tagging heads decode logits into repaired tags, per-tag scores and entity spans."""

from __future__ import annotations

import math

import pytest
import torch

from multitask_bert.data.alignment import RowWords
from multitask_bert.heads import build_head_type
from multitask_bert.tasks import HeadSpec


def _logits(labels: list[str], tags: list[str], confidence: float = 4.0) -> torch.Tensor:
    """One row of logits whose argmax at word position i + 1 is ``tags[i]`` ([CLS] first)."""
    logits = torch.zeros(1, len(tags) + 2, len(labels))
    for i, tag in enumerate(tags):
        logits[0, i + 1, labels.index(tag)] = confidence
    return logits


def _words(words: list[str], text: str | None = None) -> RowWords:
    spans = None
    if text is not None:
        spans, start = [], 0
        for word in words:
            start = text.index(word, start)
            spans.append((start, start + len(word)))
            start += len(word)
    return RowWords(firsts=[(i + 1, i) for i in range(len(words))], count=len(words),
                    words=words, char_spans=spans)


def _head(scheme: str | None, labels: list[str]):
    return build_head_type(HeadSpec(name="ner", type="tagging", scheme=scheme), labels)


IOB2 = ["O", "B-location", "I-location", "B-person", "I-person"]


def test_iob2_invalid_sequence_is_repaired_and_spans_carry_text_offsets_and_scores():
    words = ["Maria", "Lopez", "flew", "to", "Lima"]
    text = "Maria  Lopez flew to Lima"
    # argmax: B-location I-person O O B-location -> I-person cannot continue a location
    argmax = ["B-location", "I-person", "O", "O", "B-location"]
    (out,) = _head("IOB2", IOB2).decode(_logits(IOB2, argmax), [_words(words, text)])

    assert out["tags"] == ["B-location", "B-person", "O", "O", "B-location"]
    assert [(s["type"], s["first_word"], s["last_word"], s["text"]) for s in out["spans"]] == [
        ("location", 0, 0, "Maria"), ("person", 1, 1, "Lopez"), ("location", 4, 4, "Lima")]
    assert [(s["start_char"], s["end_char"]) for s in out["spans"]] == [(0, 5), (7, 12),
                                                                         (21, 25)]
    expected_top = math.exp(4) / (math.exp(4) + len(IOB2) - 1)
    assert out["tag_scores"][0] == pytest.approx(expected_top, rel=1e-5)
    # the repaired tag's score is the probability of B-person, not of the argmax I-person
    assert out["tag_scores"][1] == pytest.approx(1 / (math.exp(4) + len(IOB2) - 1), rel=1e-5)
    # a span's score: the probability of its type (B- and I- together), so the repair of
    # the prefix does not lower it
    assert out["spans"][1]["score"] == pytest.approx(expected_top + out["tag_scores"][1],
                                                      rel=1e-5)


def test_iob1_spans_follow_conlleval_and_tags_are_valid_iob1():
    labels = ["O", "I-PER", "B-PER", "I-LOC", "B-LOC"]
    argmax = ["B-PER", "I-PER", "O", "I-LOC", "B-LOC"]  # B- after nothing: I- in IOB1
    (out,) = _head("IOB1", labels).decode(_logits(labels, argmax),
                                          [_words(["a", "b", "c", "d", "e"])])
    assert out["tags"] == ["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]
    assert [(s["type"], s["first_word"], s["last_word"], s["text"]) for s in out["spans"]] == [
        ("PER", 0, 1, "a b"), ("LOC", 3, 3, "d"), ("LOC", 4, 4, "e")]
    assert "start_char" not in out["spans"][0]  # the row was words, not text


def test_bioes_unclosed_entities_are_closed():
    labels = ["O", "B-ORG", "I-ORG", "E-ORG", "S-ORG", "S-LOC"]
    argmax = ["B-ORG", "I-ORG", "O", "E-ORG", "S-LOC"]
    (out,) = _head("BIOES", labels).decode(_logits(labels, argmax),
                                           [_words(["x", "y", "z", "u", "v"])])
    assert out["tags"] == ["B-ORG", "E-ORG", "O", "S-ORG", "S-LOC"]
    assert [(s["type"], s["first_word"], s["last_word"]) for s in out["spans"]] == [
        ("ORG", 0, 1), ("ORG", 3, 3), ("LOC", 4, 4)]
    assert all(0.0 < s["score"] <= 1.0 for s in out["spans"])


def test_truncated_words_get_the_fill_tag_and_no_score():
    labels = ["O", "B-PER", "I-PER"]
    logits = _logits(labels, ["B-PER", "I-PER", "O"])
    cut = RowWords(firsts=[(1, 0), (2, 1)], count=3, words=["a", "b", "c"])
    (out,) = _head("IOB2", labels).decode(logits, [cut])
    assert out["tags"] == ["B-PER", "I-PER", "O"] and out["tag_scores"][2] is None
    assert out["spans"] == [{"type": "PER", "first_word": 0, "last_word": 1,
                             "score": pytest.approx(out["spans"][0]["score"]), "text": "a b"}]


def test_heads_without_scheme_give_tags_and_scores_but_no_spans():
    labels = ["NOUN", "VERB"]
    (out,) = _head(None, labels).decode(_logits(labels, ["VERB", "NOUN"]),
                                        [_words(["run", "dog"])])
    assert out["tags"] == ["VERB", "NOUN"] and "spans" not in out
    assert len(out["tag_scores"]) == 2 and out["tag_scores"][0] > 0.5
