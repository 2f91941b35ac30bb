"""Word shapes: the capitalisation and character class of a word, for encoders that never see
them (an uncased WordPiece vocabulary lower-cases ``Paris`` and ``PARIS`` alike).

Ids start at 1; 0 marks positions without a shape (special tokens, continuation sub-words,
context and padding), which the model's shape embedding maps to a zero vector.
"""

from __future__ import annotations

import unicodedata

SHAPES = ("lower", "Title", "UPPER", "mixed", "digits", "punctuation", "other")
"""The shape classes, in id order (id = index + 1)."""
NO_SHAPE = 0
NUM_SHAPE_IDS = len(SHAPES) + 1


def word_shape(word: str) -> int:
    """The shape id of one word.

    ``lower`` (paris), ``Title`` (Paris), ``UPPER`` (PARIS, EU), ``mixed`` (iPhone,
    McDonald), ``digits`` (1996, 3.5, 1996-08-22: digits with separators only),
    ``punctuation`` (``.``, ``--``), ``other`` (anything else, e.g. ``A1`` or an empty word).
    """
    letters = [c for c in word if c.isalpha()]
    if letters:
        if any(c.isdigit() for c in word):
            return SHAPES.index("other") + 1
        if all(c.islower() for c in letters):
            return SHAPES.index("lower") + 1
        if all(c.isupper() for c in letters):
            return SHAPES.index("UPPER") + 1
        if letters[0].isupper() and all(c.islower() for c in letters[1:]):
            return SHAPES.index("Title") + 1
        return SHAPES.index("mixed") + 1
    if word and any(c.isdigit() for c in word):
        return SHAPES.index("digits") + 1
    if word and all(unicodedata.category(c).startswith(("P", "S")) for c in word):
        return SHAPES.index("punctuation") + 1
    return SHAPES.index("other") + 1
