"""Entity tag schemes: lenient conversion to canonical IOB2 and span extraction.

Conversion follows conlleval, the CoNLL shared-task scorer: an ``I-X`` (or BIOES ``E-X``)
that cannot continue an open entity of type ``X`` starts a new one instead of being
dropped. After conversion every entity starts with ``B-``, so strict IOB2 span matching
(seqeval ``mode="strict"``) scores exactly the entities conlleval would.
"""

from __future__ import annotations

from typing import Literal, get_args

TagScheme = Literal["IOB1", "IOB2", "BIOES"]
TAG_SCHEMES: tuple[str, ...] = get_args(TagScheme)

_PREFIXES: dict[str, frozenset[str]] = {
    "IOB1": frozenset("BI"),
    "IOB2": frozenset("BI"),
    "BIOES": frozenset("BIES"),
}


def _split_tag(tag: str, allowed_prefixes: frozenset[str], scheme: str) -> tuple[str, str]:
    """Splits ``"B-PER"`` into ``("B", "PER")``; ``"O"`` gives ``("O", "")``.

    Raises:
        ValueError: If the tag is not ``O`` or ``<prefix>-<type>`` with a prefix allowed
            by the scheme and a non-empty type.
    """
    if tag == "O":
        return "O", ""
    if len(tag) > 2 and tag[1] == "-" and tag[0] in allowed_prefixes:
        return tag[0], tag[2:]
    expected = ", ".join(f"{p}-<type>" for p in sorted(allowed_prefixes))
    raise ValueError(f"invalid {scheme} tag {tag!r}: expected 'O' or one of {expected}")


def check_scheme(scheme: str) -> TagScheme:
    """Returns ``scheme`` if it names a known tag scheme.

    Raises:
        ValueError: If it does not; the message lists the known schemes.
    """
    if scheme not in TAG_SCHEMES:
        raise ValueError(f"unknown tag scheme {scheme!r}; expected one of {list(TAG_SCHEMES)}")
    return scheme  # type: ignore[return-value]


def to_iob2(tags: list[str], scheme: TagScheme) -> list[str]:
    """Converts one word-level tag sequence to canonical IOB2, leniently (as conlleval).

    Rules, where "open" means the previous tag was ``B-X`` or ``I-X`` of the same type:

    * ``O`` stays ``O``; ``B-X`` stays ``B-X`` (always starts an entity).
    * ``I-X`` becomes ``I-X`` if an ``X`` entity is open, else ``B-X``. This covers IOB1
      (where ``I-X`` after ``O`` or another type starts an entity) and malformed IOB2.
    * BIOES only: ``S-X`` becomes ``B-X`` and closes the entity; ``E-X`` becomes ``I-X``
      if an ``X`` entity is open, else ``B-X``, and closes the entity, so a following
      ``I-X`` starts a new one.

    Args:
        tags: Tags of one sentence, e.g. ``["I-PER", "I-PER", "O", "I-LOC", "B-LOC"]``.
        scheme: ``"IOB1"``, ``"IOB2"`` or ``"BIOES"``.

    Returns:
        A new list of IOB2 tags of the same length.

    Raises:
        ValueError: On an unknown scheme, or a tag that is not ``O`` or a prefix allowed by
            the scheme (IOB1/IOB2: ``B``, ``I``; BIOES: ``B``, ``I``, ``E``, ``S``) followed
            by ``-`` and a type; the message names the tag.
    """
    allowed = _PREFIXES[check_scheme(scheme)]
    converted: list[str] = []
    open_type: str | None = None  # type of the entity the next I-/E- tag may continue
    for tag in tags:
        prefix, entity_type = _split_tag(tag, allowed, scheme)
        if prefix == "O":
            converted.append("O")
            open_type = None
            continue
        continues = prefix in ("I", "E") and open_type == entity_type
        converted.append(f"{'I' if continues else 'B'}-{entity_type}")
        open_type = entity_type if prefix in ("B", "I") else None
    return converted


def entity_spans(tags_iob2: list[str]) -> list[tuple[str, int, int]]:
    """Lists the entities of a canonical IOB2 sequence (as produced by ``to_iob2``).

    Args:
        tags_iob2: IOB2 tags where every ``I-X`` follows ``B-X`` or ``I-X``.

    Returns:
        ``(type, start, end)`` triples with ``end`` exclusive, in order of ``start``.

    Raises:
        ValueError: On a tag that is not ``O``/``B-X``/``I-X``, or an ``I-X`` that does not
            continue an ``X`` entity (run the sequence through ``to_iob2`` first).
    """
    allowed = _PREFIXES["IOB2"]
    spans: list[tuple[str, int, int]] = []
    open_type: str | None = None
    open_start = 0
    for i, tag in enumerate(tags_iob2):
        prefix, entity_type = _split_tag(tag, allowed, "IOB2")
        if prefix == "I":
            if open_type != entity_type:
                raise ValueError(
                    f"tag {tag!r} at position {i} does not continue an entity; "
                    "sequence is not canonical IOB2 (convert it with to_iob2)"
                )
            continue
        if open_type is not None:
            spans.append((open_type, open_start, i))
        open_type, open_start = (entity_type, i) if prefix == "B" else (None, i)
    if open_type is not None:
        spans.append((open_type, open_start, len(tags_iob2)))
    return spans


def is_entity_tag_set(labels: list[str]) -> bool:
    """Says whether a label vocabulary looks like entity tags.

    True when every label is ``O`` or ``<B|I|E|S>-<type>`` and at least one is not ``O``.
    """
    any_entity = False
    for label in labels:
        if label == "O":
            continue
        try:
            _split_tag(label, _PREFIXES["BIOES"], "BIOES")
        except ValueError:
            return False
        any_entity = True
    return any_entity


def tags_from_spans(spans: list[tuple[str, int, int]], length: int, scheme: TagScheme
                    ) -> list[str]:
    """Writes entities (``(type, start, end)``, ``end`` exclusive, in order, not
    overlapping) as a valid tag sequence of ``scheme``.

    * IOB2: ``B-X`` on the first word, ``I-X`` on the others.
    * IOB1: ``I-X`` on every word, except ``B-X`` on the first word of an entity that
      directly follows another ``X`` entity (the only place IOB1 uses ``B-``).
    * BIOES: ``S-X`` for a one-word entity, else ``B-X``, ``I-X``..., ``E-X``.
    """
    check_scheme(scheme)
    tags = ["O"] * length
    previous_end, previous_type = -1, ""
    for entity_type, start, end in spans:
        if scheme == "BIOES":
            if end - start == 1:
                tags[start] = f"S-{entity_type}"
            else:
                tags[start:end] = ([f"B-{entity_type}"] + [f"I-{entity_type}"] * (end - start - 2)
                                   + [f"E-{entity_type}"])
        else:
            tags[start:end] = [f"I-{entity_type}"] * (end - start)
            adjacent_same = previous_end == start and previous_type == entity_type
            if scheme == "IOB2" or adjacent_same:
                tags[start] = f"B-{entity_type}"
        previous_end, previous_type = end, entity_type
    return tags


def repair(tags: list[str], scheme: TagScheme) -> list[str]:
    """The valid ``scheme`` sequence with the entities conlleval reads in ``tags``.

    A model's per-word argmax can be invalid (``B-location, I-person`` in IOB2, ``E-X``
    without ``B-X`` in BIOES); the scorer reads such a sequence leniently
    (:func:`to_iob2`). Repairing writes those same entities back validly, so the repaired
    tags, the entities and the scores all agree: ``B-location, I-person`` becomes
    ``B-location, B-person`` (two entities, as scored). A valid sequence comes back
    unchanged.
    """
    return tags_from_spans(entity_spans(to_iob2(tags, scheme)), len(tags), scheme)


def is_valid(tags: list[str], scheme: TagScheme) -> bool:
    """Whether ``tags`` is a valid ``scheme`` sequence (:func:`repair` leaves it as it is)."""
    return repair(tags, scheme) == list(tags)
