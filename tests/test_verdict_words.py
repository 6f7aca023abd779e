"""The held-out check in words, as the CLI, the HTML report and the editor all say it."""

from __future__ import annotations

from gpo_engine.stats import comparison_words, held_out_words


def test_a_comparison_in_words() -> None:
    # Two-sided p: significant either way, and a clear gain is not "not worse".
    assert comparison_words(60.0, 0.0004) == "significantly better"
    assert comparison_words(-20.0, 0.01) == "significantly worse"
    assert comparison_words(7.5, 0.2) == "not significantly different"
    assert comparison_words(0.0, 0.01) == "not significantly different"
    assert comparison_words(5.0, None) == "not significantly different"
    assert comparison_words(5.0, 0.07, alpha=0.1) == "significantly better"


def test_the_guards_verdict_in_words() -> None:
    assert held_out_words("worse", -4.0, 0.05) == "significantly worse"  # p was rounded up
    assert held_out_words("ok", 60.0, 0.0004) == "significantly better"
    assert held_out_words("ok", 2.0, 0.6) == "not significantly different"
