"""Word <-> sub-word alignment of token tasks, and the flat Arrow lists it lives in (no torch).

A word's label sits on its *first* sub-word; every other position (special tokens,
continuation sub-words, padding) carries :data:`IGNORE_INDEX`, which the loss skips.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

IGNORE_INDEX = -100
"""Label of positions that carry no loss (special tokens, continuation sub-words)."""


@dataclass(frozen=True)
class RowWords:
    """Where the words of one encoded row are.

    ``firsts`` holds ``(position, word)`` for every word that kept a sub-word (in order);
    ``count`` is the number of words of the row, kept or not (truncated and empty words
    have no position).
    """

    firsts: list[tuple[int, int]]
    count: int
    words: list[str] | None = None
    """The words themselves, when known (prediction; evaluation leaves them out)."""
    char_spans: list[tuple[int, int]] | None = None
    """Each word's ``(start, end)`` character offsets in the input text, when the row was
    given as text (split on whitespace)."""


def first_subword_positions(word_ids: Sequence[int | None]) -> list[tuple[int, int]]:
    """``(position, word index)`` of the first sub-word of every word that has one."""
    firsts = []
    previous = None
    for position, word in enumerate(word_ids):
        if word is not None and word != previous:
            firsts.append((position, word))
        previous = word
    return firsts


def align_labels(word_ids: Sequence[int | None], word_labels: Sequence[int]) -> list[int]:
    """Sub-word labels: a word's label on its first sub-word, :data:`IGNORE_INDEX` elsewhere."""
    labels = [IGNORE_INDEX] * len(word_ids)
    for position, word in first_subword_positions(word_ids):
        labels[position] = word_labels[word]
    return labels


@dataclass(frozen=True)
class ChunkAlignment:
    """The alignment of a chunk of encoded rows, as flat arrays (what the encoder builds).

    Row ``i``'s sub-words are ``subword_offsets[i]:subword_offsets[i + 1]`` of the flat
    sub-word arrays and its words ``word_offsets[i]:word_offsets[i + 1]`` of the flat word
    arrays; ``positions[k]`` is the flat sub-word index of the first sub-word of the kept
    word ``words[k]`` (a flat word index).
    """

    subword_offsets: np.ndarray
    word_offsets: np.ndarray
    positions: np.ndarray
    words: np.ndarray


def list_array(offsets: np.ndarray, values: np.ndarray) -> pa.Array:
    """An Arrow list column from row ``offsets`` (int32, ``rows + 1``) and flat ``values``."""
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(values))
