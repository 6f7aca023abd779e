"""Tests of gpo_engine.scoring: the Score every metric returns, and counting
failing rows by the kind of their reason."""

from __future__ import annotations

import pytest

from gpo_engine.scoring import Score, count_reasons, reason_group

# ---------------------------------------------------------------- Score


def test_score_rejects_out_of_range_values() -> None:
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        Score(1.5)
    with pytest.raises(ValueError):
        Score(-0.1)
    with pytest.raises(ValueError):
        Score(float("nan"))
    assert Score(0.5, "half").reason == "half"


def test_reason_groups_and_counts() -> None:
    assert reason_group("unparseable JSON: no JSON object in 'x'") == "unparseable JSON"
    assert reason_group("fields differ: 1 of 2 right; a expected 1, got 2") == "fields differ"
    assert reason_group("token F1 0.50: expected 'a', got 'b'") == "token F1 0.50"
    # A colon inside a quoted value is not a kind separator.
    assert reason_group("expected 'a: b', got 'c'") == "expected 'a: b', got 'c'"
    assert reason_group("model call failed") == "model call failed"
    assert count_reasons([
        "unparseable JSON: no JSON object in 'x'",
        "fields differ: 0 of 1 right; a expected 1, got 2",
        "unparseable JSON: empty output",
        "",
    ]) == [("unparseable JSON", 2), ("fields differ", 1)]
