from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gpo_engine.direction import (
    ScoredPrompt,
    embedding_similarity,
    retrieve,
    text_similarity,
)
from gpo_engine.errors import ConfigError

P = ScoredPrompt

HISTORY = [
    P("Classify the sentiment of {{review}}.", 50.0, 0),
    P("Say whether {{review}} is positive or negative.", 70.0, 1),
    P("Classify the sentiment of {{review}} as positive or negative.", 60.0, 2),
    P("Read the text and answer.", 90.0, 3),
    P("Classify the sentiment of the review {{review}} as positive or negative only.", 40.0, 4),
]
CURRENT = P("Classify the sentiment of {{review}}: positive or negative.", 65.0, 5)


def texts(prompts: list[ScoredPrompt]) -> list[str]:
    return [p.text for p in prompts]


def test_relevance_picks_most_similar_and_orders_by_score() -> None:
    got = retrieve(HISTORY, CURRENT, 3, "relevance")
    assert got[-1] == CURRENT
    # The two "Classify the sentiment ..." variants are closest; shown low score first.
    assert texts(got[:-1]) == [HISTORY[4].text, HISTORY[2].text]


def test_recency_picks_latest() -> None:
    got = retrieve(HISTORY, CURRENT, 3, "recency")
    assert got == [HISTORY[4], HISTORY[3], CURRENT]  # 40 then 90: ascending score


def test_importance_picks_top_scores() -> None:
    got = retrieve(HISTORY, CURRENT, 3, "importance")
    assert got == [HISTORY[1], HISTORY[3], CURRENT]


def test_importance_ties_prefer_later_step() -> None:
    history = [P("a one", 80.0, 0), P("b two", 80.0, 1), P("c three", 80.0, 2)]
    got = retrieve(history, P("current text", 10.0, 3), 3, "importance")
    assert texts(got) == ["b two", "c three", "current text"]


def test_current_text_is_excluded_from_history() -> None:
    history = [*HISTORY, P(CURRENT.text, 65.0, 5)]
    got = retrieve(history, CURRENT, 10, "recency")
    assert texts(got).count(CURRENT.text) == 1
    assert got[-1] == CURRENT
    assert len(got) == len(HISTORY) + 1


def test_repeated_history_text_shown_once() -> None:
    history = [P("same words here", 30.0, 0), P("other", 20.0, 1), P("same words here", 30.0, 2)]
    got = retrieve(history, P("now", 50.0, 3), 3, "recency")
    assert texts(got) == ["other", "same words here", "now"]
    assert got[1].step == 2


def test_k_one_and_empty_history() -> None:
    assert retrieve(HISTORY, CURRENT, 1, "relevance") == [CURRENT]
    assert retrieve([], CURRENT, 3, "importance") == [CURRENT]


def test_custom_similarity_is_used() -> None:
    # A similarity that prefers the shortest text.
    got = retrieve(HISTORY, CURRENT, 2, "relevance", similarity=lambda a, b: -len(b))
    assert got == [HISTORY[3], CURRENT]


def test_unknown_strategy_and_bad_k() -> None:
    with pytest.raises(ConfigError, match="unknown retrieval strategy 'random'; choose one of"):
        retrieve(HISTORY, CURRENT, 3, "random")
    with pytest.raises(ValueError, match="k must be"):
        retrieve(HISTORY, CURRENT, 0, "recency")


def test_text_similarity() -> None:
    assert text_similarity("a b c", "c b a") == 100.0
    assert text_similarity("classify the review", "write a poem") < 50.0
    assert 0.0 <= text_similarity("", "x") <= 100.0


def test_embedding_similarity() -> None:
    sim = embedding_similarity({"a": [1.0, 0.0], "b": [0.0, 2.0], "c": [3.0, 3.0], "z": [0, 0]})
    assert sim("a", "b") == pytest.approx(0.0)
    assert sim("a", "c") == pytest.approx(2**-0.5)
    assert sim("a", "a") == pytest.approx(1.0)
    assert sim("a", "z") == 0.0
    # Missing vector: falls back to rapidfuzz on a 0..1 scale.
    assert sim("a", "missing") == pytest.approx(text_similarity("a", "missing") / 100)


def test_embedding_relevance_retrieval() -> None:
    history = [P("x", 10.0, 0), P("y", 20.0, 1), P("w", 30.0, 2)]
    vectors = {"x": [1.0, 0.0], "y": [0.0, 1.0], "w": [-1.0, 0.0], "cur": [0.9, 0.1]}
    got = retrieve(history, P("cur", 50.0, 3), 2, "relevance", embedding_similarity(vectors))
    assert texts(got) == ["x", "cur"]


prompts = st.builds(
    ScoredPrompt,
    st.text(alphabet="abc ", min_size=1, max_size=8),
    st.floats(0, 100),
    st.integers(0, 30),
)


@given(
    st.lists(prompts, max_size=12),
    prompts,
    st.integers(1, 6),
    st.sampled_from(["relevance", "recency", "importance"]),
)
def test_retrieve_invariants(
    history: list[ScoredPrompt], current: ScoredPrompt, k: int, strategy: str
) -> None:
    got = retrieve(history, current, k, strategy)
    assert got[-1] == current
    assert 1 <= len(got) <= k
    others = got[:-1]
    assert current.text not in texts(others)
    assert len(set(texts(others))) == len(others)
    assert all(p in history for p in others)
    assert [p.score for p in others] == sorted(p.score for p in others)
    distinct = {p.text for p in history} - {current.text}
    assert len(others) == min(k - 1, len(distinct))
