"""GPO's update direction: which earlier prompts the optimizer sees each step.

The paper shows the optimizer the current prompt plus k-1 prompts retrieved
from the trajectory, each with its dev score, so that it can tell which way
the scores moved. Relevance (the most similar earlier prompts) is the paper's
best strategy; recency and importance (top score) are its alternatives.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz

from gpo_engine.errors import ConfigError

STRATEGIES = ("relevance", "recency", "importance")

Similarity = Callable[[str, str], float]


@dataclass(frozen=True)
class ScoredPrompt:
    text: str
    score: float  # dev score, 0-100
    step: int  # 0 for the initial prompt, t + 1 for the best prompt of step t


def text_similarity(a: str, b: str) -> float:
    """Word-set similarity 0..100; insensitive to word order and repeated words."""
    return float(fuzz.token_set_ratio(a, b))


def embedding_similarity(vectors: Mapping[str, Sequence[float]]) -> Similarity:
    """Cosine similarity (-1..1) over embeddings computed beforehand for each text.

    A text without a vector falls back to text_similarity scaled to 0..1, so a
    missing embedding degrades the ranking instead of stopping the run.
    """

    def similarity(a: str, b: str) -> float:
        va, vb = vectors.get(a), vectors.get(b)
        if va is None or vb is None:
            return text_similarity(a, b) / 100.0
        return _cosine(va, vb)

    return similarity


def _cosine(a: Sequence[float], b: Sequence[float]) -> float:
    if len(a) != len(b):
        raise ValueError(f"embedding sizes differ: {len(a)} and {len(b)}")
    dot = sum(x * y for x, y in zip(a, b, strict=True))
    norm = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
    return dot / norm if norm else 0.0


def retrieve(
    history: Sequence[ScoredPrompt],
    current: ScoredPrompt,
    k: int,
    strategy: str,
    similarity: Similarity | None = None,
) -> list[ScoredPrompt]:
    """Up to k prompts for the meta-prompt: k-1 chosen from history, then `current`.

    The chosen ones are ordered by ascending score (ties: older first) so the
    best sit nearest the current prompt, as in the OPRO and GPO meta-prompts.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(
            f"unknown retrieval strategy {strategy!r}; choose one of {', '.join(STRATEGIES)}"
        )
    if k < 1:
        raise ValueError(f"k must be at least 1, got {k}")
    others = _distinct_others(history, current.text)
    if strategy == "relevance":
        sim = similarity or text_similarity
        ranked = sorted(
            others,
            key=lambda item: (sim(current.text, item[1].text), item[1].step, item[0]),
            reverse=True,
        )
    elif strategy == "recency":
        ranked = sorted(others, key=lambda item: (item[1].step, item[0]), reverse=True)
    else:
        ranked = sorted(
            others, key=lambda item: (item[1].score, item[1].step, item[0]), reverse=True
        )
    chosen = [prompt for _, prompt in ranked[: k - 1]]
    chosen.sort(key=lambda p: (p.score, p.step))
    return [*chosen, current]


def _distinct_others(
    history: Sequence[ScoredPrompt], current_text: str
) -> list[tuple[int, ScoredPrompt]]:
    """History without the current text, one entry per text (its latest), with positions.

    A prompt can re-enter the trajectory (the best of a step may be an old
    text); showing it twice would waste one of the k slots.
    """
    latest: dict[str, tuple[int, ScoredPrompt]] = {}
    for index, prompt in enumerate(history):
        if prompt.text == current_text:
            continue
        seen = latest.get(prompt.text)
        if seen is None or prompt.step >= seen[1].step:
            latest[prompt.text] = (index, prompt)
    return list(latest.values())
