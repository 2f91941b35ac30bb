"""Tests for lenient IOB1/IOB2/BIOES -> IOB2 conversion and span extraction."""

from __future__ import annotations

import random

import pytest
from seqeval.metrics.sequence_labeling import get_entities

from multitask_bert.evaluation.tag_schemes import entity_spans, is_entity_tag_set, to_iob2

# --- IOB1 -----------------------------------------------------------------------------


def test_iob1_conll_style_sequence():
    # I-PER I-PER: one PER starting with I- (IOB1 never needs B- after O).
    # O, then I-LOC starts LOC; B-LOC separates a second, adjacent LOC.
    tags = ["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]
    iob2 = to_iob2(tags, "IOB1")
    assert iob2 == ["B-PER", "I-PER", "O", "B-LOC", "B-LOC"]
    assert entity_spans(iob2) == [("PER", 0, 2), ("LOC", 3, 4), ("LOC", 4, 5)]


def test_iob1_type_change_starts_new_entity():
    # I-ORG directly after I-PER: different type, so a new ORG entity starts.
    assert to_iob2(["I-PER", "I-ORG", "I-ORG"], "IOB1") == ["B-PER", "B-ORG", "I-ORG"]


def test_iob1_b_then_i_same_type_continues():
    # I-LOC B-LOC I-LOC: the B- splits; the trailing I-LOC continues the second entity.
    iob2 = to_iob2(["I-LOC", "B-LOC", "I-LOC"], "IOB1")
    assert iob2 == ["B-LOC", "B-LOC", "I-LOC"]
    assert entity_spans(iob2) == [("LOC", 0, 1), ("LOC", 1, 3)]


# --- IOB2 -----------------------------------------------------------------------------


def test_iob2_valid_sequence_is_unchanged():
    tags = ["B-PER", "I-PER", "O", "B-LOC", "B-LOC", "I-LOC", "O"]
    assert to_iob2(tags, "IOB2") == tags


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["O", "I-PER"], ["O", "B-PER"]),  # I- after O starts an entity
        (["I-PER", "I-PER"], ["B-PER", "I-PER"]),  # I- at sentence start
        (["B-PER", "I-LOC"], ["B-PER", "B-LOC"]),  # I- after another type
        (["B-PER", "O", "I-PER"], ["B-PER", "O", "B-PER"]),  # O closes the entity
    ],
)
def test_iob2_lenient_i_rule(tags, expected):
    assert to_iob2(tags, "IOB2") == expected


# --- BIOES ----------------------------------------------------------------------------


def test_bioes_full_sequence():
    # S-PER -> one-word PER; B-LOC I-LOC E-LOC -> three-word LOC; S-LOC adjacent LOC.
    tags = ["S-PER", "O", "B-LOC", "I-LOC", "E-LOC", "S-LOC"]
    iob2 = to_iob2(tags, "BIOES")
    assert iob2 == ["B-PER", "O", "B-LOC", "I-LOC", "I-LOC", "B-LOC"]
    assert entity_spans(iob2) == [("PER", 0, 1), ("LOC", 2, 5), ("LOC", 5, 6)]


@pytest.mark.parametrize(
    ("tags", "expected"),
    [
        (["B-PER", "E-PER"], ["B-PER", "I-PER"]),  # E continues B
        (["O", "E-PER"], ["O", "B-PER"]),  # E that cannot continue starts an entity
        (["B-LOC", "E-PER"], ["B-LOC", "B-PER"]),  # E of another type
        (["E-PER", "E-PER"], ["B-PER", "B-PER"]),  # E closes: next E starts anew
        (["E-PER", "I-PER"], ["B-PER", "B-PER"]),  # I after E starts anew
        (["S-PER", "I-PER"], ["B-PER", "B-PER"]),  # I after S starts anew
        (["S-PER", "E-PER"], ["B-PER", "B-PER"]),  # E after S starts anew
        (["B-PER", "I-PER", "O"], ["B-PER", "I-PER", "O"]),  # unterminated B..I kept
        (["S-PER", "S-PER"], ["B-PER", "B-PER"]),
    ],
)
def test_bioes_lenient_rules(tags, expected):
    assert to_iob2(tags, "BIOES") == expected


# --- errors and edge cases ------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag", "scheme"),
    [
        ("PER", "IOB2"),  # no prefix
        ("X-PER", "IOB1"),  # unknown prefix
        ("B-", "IOB2"),  # empty type
        ("BPER", "BIOES"),  # no hyphen
        ("o", "IOB2"),  # lowercase O is not O
        ("E-PER", "IOB2"),  # BIOES prefix in an IOB scheme
        ("S-PER", "IOB1"),
        ("", "BIOES"),
    ],
)
def test_invalid_tag_raises_naming_tag(tag, scheme):
    with pytest.raises(ValueError, match=repr(tag)):
        to_iob2(["O", tag], scheme)


def test_unknown_scheme_raises():
    with pytest.raises(ValueError, match="BILOU"):
        to_iob2(["O"], "BILOU")  # type: ignore[arg-type]


def test_empty_and_all_o():
    assert to_iob2([], "IOB1") == []
    assert to_iob2(["O", "O"], "BIOES") == ["O", "O"]
    assert entity_spans([]) == []
    assert entity_spans(["O", "O"]) == []


def test_type_with_hyphen_is_kept_whole():
    assert to_iob2(["I-geo-loc", "I-geo-loc"], "IOB1") == ["B-geo-loc", "I-geo-loc"]
    assert entity_spans(["B-geo-loc", "I-geo-loc"]) == [("geo-loc", 0, 2)]


def test_does_not_mutate_input():
    tags = ["I-PER", "I-PER"]
    to_iob2(tags, "IOB1")
    assert tags == ["I-PER", "I-PER"]


def test_entity_spans_rejects_non_canonical_iob2():
    with pytest.raises(ValueError, match="position 1"):
        entity_spans(["O", "I-PER"])
    with pytest.raises(ValueError, match="position 1"):
        entity_spans(["B-LOC", "I-PER"])
    with pytest.raises(ValueError, match="'S-PER'"):
        entity_spans(["S-PER"])


def test_entity_spans_entity_at_end():
    assert entity_spans(["O", "B-PER", "I-PER"]) == [("PER", 1, 3)]


# --- agreement with seqeval's conlleval-style (default mode) chunker --------------------


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "BIOES"])
def test_spans_match_seqeval_lenient_chunker_on_random_sequences(scheme):
    # seqeval's default mode reimplements conlleval's chunk start/end rules, so our
    # convert-then-split must find the same spans on arbitrary (even malformed) input.
    prefixes = "BI" if scheme != "BIOES" else "BIES"
    vocab = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC")]
    rng = random.Random(0)
    for _ in range(300):
        tags = [rng.choice(vocab) for _ in range(rng.randint(0, 8))]
        ours = entity_spans(to_iob2(tags, scheme))
        theirs = [(t, start, end + 1) for t, start, end in get_entities(tags)]
        assert ours == theirs, tags


# --- is_entity_tag_set ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        (["O", "B-PER", "I-PER"], True),
        (["O", "S-LOC", "E-LOC", "B-LOC", "I-LOC"], True),
        (["B-PER"], True),
        (["O"], False),  # no entity tag at all
        ([], False),
        (["NOUN", "VERB"], False),
        (["O", "B-PER", "NOUN"], False),
        (["O", "X-PER"], False),
    ],
)
def test_is_entity_tag_set(labels, expected):
    assert is_entity_tag_set(labels) is expected


# --- repair: invalid sequences written back validly, same entities ---------------------
from multitask_bert.evaluation.tag_schemes import is_valid, repair, tags_from_spans  # noqa: E402


@pytest.mark.parametrize(
    ("scheme", "tags", "repaired"),
    [
        # IOB2: I- after another type or after O starts an entity, so it becomes B-
        ("IOB2", ["B-location", "I-person"], ["B-location", "B-person"]),
        ("IOB2", ["O", "I-PER", "I-PER", "O"], ["O", "B-PER", "I-PER", "O"]),
        ("IOB2", ["B-PER", "I-PER", "O", "B-LOC"], ["B-PER", "I-PER", "O", "B-LOC"]),
        # IOB1: B- only between two adjacent entities of one type; elsewhere it is I-
        ("IOB1", ["O", "B-PER", "I-PER"], ["O", "I-PER", "I-PER"]),
        ("IOB1", ["I-LOC", "B-LOC", "I-ORG"], ["I-LOC", "B-LOC", "I-ORG"]),
        ("IOB1", ["B-location", "I-person"], ["I-location", "I-person"]),
        # BIOES: open entities are closed, lone words are S-, E- without B- starts one
        ("BIOES", ["B-PER", "I-PER", "O"], ["B-PER", "E-PER", "O"]),
        ("BIOES", ["O", "E-LOC", "O"], ["O", "S-LOC", "O"]),
        ("BIOES", ["B-PER", "B-PER"], ["S-PER", "S-PER"]),
        ("BIOES", ["I-ORG", "I-ORG", "E-ORG", "S-LOC"], ["B-ORG", "I-ORG", "E-ORG", "S-LOC"]),
        ("BIOES", ["B-location", "I-person"], ["S-location", "S-person"]),
    ],
)
def test_repair_writes_the_scored_entities_validly(scheme, tags, repaired):
    assert repair(tags, scheme) == repaired
    assert is_valid(repaired, scheme)
    assert is_valid(tags, scheme) == (tags == repaired)
    # the repaired sequence has exactly the entities the scorer reads in the original
    assert entity_spans(to_iob2(repaired, scheme)) == entity_spans(to_iob2(tags, scheme))


@pytest.mark.parametrize("scheme", ["IOB1", "IOB2", "BIOES"])
def test_repair_keeps_entities_and_is_idempotent_on_random_sequences(scheme):
    rng = random.Random(scheme)
    prefixes = "BIES" if scheme == "BIOES" else "BI"
    labels = ["O"] + [f"{p}-{t}" for p in prefixes for t in ("PER", "LOC")]
    for _ in range(500):
        tags = [rng.choice(labels) for _ in range(rng.randint(1, 9))]
        fixed = repair(tags, scheme)
        assert entity_spans(to_iob2(fixed, scheme)) == entity_spans(to_iob2(tags, scheme))
        assert repair(fixed, scheme) == fixed


def test_tags_from_spans_writes_each_scheme():
    spans = [("PER", 0, 2), ("PER", 2, 3), ("LOC", 4, 5)]
    assert tags_from_spans(spans, 5, "IOB2") == ["B-PER", "I-PER", "B-PER", "O", "B-LOC"]
    assert tags_from_spans(spans, 5, "IOB1") == ["I-PER", "I-PER", "B-PER", "O", "I-LOC"]
    assert tags_from_spans(spans, 5, "BIOES") == ["B-PER", "E-PER", "S-PER", "O", "S-LOC"]
