"""The leak guard: a candidate must not copy training text into the prompt.

A candidate that copies an input or an expected output of the training rows
would score well on rows like it and generalize badly. Copied = rapidfuzz
partial_ratio at or above LEAK_THRESHOLD.
"""

from __future__ import annotations

from collections.abc import Sequence

from rapidfuzz import fuzz, process

LEAK_THRESHOLD = 90.0
LEAK_MIN_CHARS = 20  # shorter texts ("yes", "Paris") are answers a prompt may well name
LEAK_WINDOW_WORDS = 8  # long texts are compared in overlapping windows of this many words


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def leak_pieces(texts: Sequence[str], current: str) -> list[str]:
    """The pieces of training texts a candidate must not copy: each text of at
    least LEAK_MIN_CHARS (in overlapping windows when long), minus the pieces
    the current prompt already contains (few-shot examples the user wrote)."""
    folded_current = _fold(current)
    pieces: dict[str, None] = {}
    for text in texts:
        words = _fold(text).split()
        step = LEAK_WINDOW_WORDS // 2
        starts = range(0, max(1, len(words) - LEAK_WINDOW_WORDS + step), step)
        for start in starts if len(words) > LEAK_WINDOW_WORDS else [0]:
            piece = " ".join(words[start : start + LEAK_WINDOW_WORDS])
            if len(piece) >= LEAK_MIN_CHARS:
                pieces[piece] = None
    return [p for p in pieces
            if fuzz.partial_ratio(p, folded_current) < LEAK_THRESHOLD]


def find_leak(candidate: str, pieces: Sequence[str]) -> tuple[str, float] | None:
    """The training piece `candidate` copies best (with its 0-100 match), if any reaches
    LEAK_THRESHOLD."""
    if not pieces:
        return None
    hit = process.extractOne(_fold(candidate), pieces, scorer=fuzz.partial_ratio,
                             processor=None, score_cutoff=LEAK_THRESHOLD)
    return None if hit is None else (str(hit[0]), float(hit[1]))
