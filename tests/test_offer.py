"""The suggestion policy (gpo_engine.offer): Score, Verdict and Offer and their JSON forms,
which prompt is offered within the word budget, and its held-out verdict."""

from __future__ import annotations

import pytest

from gpo_engine.evaluate import EvalResult, Outcome, confidence_interval
from gpo_engine.offer import (
    NOT_COMPARED,
    Offer,
    Score,
    Verdict,
    from_tests,
    held_out,
    offer_for,
    pick,
    same_prompt,
)
from gpo_engine.trajectory import CandidateRecord, StepRecord, Trajectory
from tests.layering import imported


def _result(scores: list[float]) -> EvalResult:
    return EvalResult(tuple(Outcome(f"r{i}", s, "out") for i, s in enumerate(scores)))


def _trajectory(file_text: str = "Answer the question.") -> Trajectory:
    """The initial text at 40, a one-word change at 60, a rewrite of many words at 90,
    and a one-word change at 30 (worse than the start)."""
    t = Trajectory("k", "/w/p.prompt", 4, file_text, 40.0, 5,
                   dev_outcomes={file_text: {"a": 1.0, "b": 1.0, "c": 0.0, "d": 0.0, "e": 0.0}})
    near = "Answer the question briefly."
    far = "Think step by step, then give only the final answer to the question asked."
    low = "Answer the query."
    t.steps.append(StepRecord(0, 10, file_text, 50.0, (
        CandidateRecord(near, 1, "scored", 60.0, 5),
        CandidateRecord(far, 12, "scored", 90.0, 5),
        CandidateRecord(low, 1, "scored", 30.0, 5),
        CandidateRecord("Leaky", -1, "leak")), far, 90.0))
    t.dev_outcomes[near] = {"a": 1.0, "b": 1.0, "c": 1.0, "d": 0.0, "e": 0.0}
    return t


# ------------------------------------------------------------------ Score


def test_score_json_round_trip_rounds_to_two_decimals() -> None:
    score = Score(66.666666, 12, 38.123456, 86.5)
    data = score.to_json()
    assert data == {"score": 66.67, "n": 12, "low": 38.12, "high": 86.5}
    assert Score.from_json(data) == Score(66.67, 12, 38.12, 86.5)
    bare = Score(50.0, 4)
    assert Score.from_json(bare.to_json()) == bare


@pytest.mark.parametrize(("data", "message"), [
    ({"n": 3}, "missing dev.score"),
    ({"score": "high", "n": 3}, "dev.score must be a number"),
    ({"score": 50, "n": -1}, "dev.n must be a whole number >= 0"),
    ({"score": 50, "n": True}, "dev.n must be a whole number >= 0"),
    ({"score": 50, "n": 3, "low": "x"}, "dev.low must be a number"),
    ([1, 2], "dev must be an object"),
])
def test_score_from_json_names_the_bad_key(data: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Score.from_json(data, "dev")


def test_score_of_a_result_and_of_outcomes_agree() -> None:
    values = [1.0, 0.0, 1.0, 1.0]
    low, high = confidence_interval(values)
    assert Score.of(_result(values)) == Score(75.0, 4, low, high)
    assert Score.of_outcomes(values) == Score(75.0, 4, low, high)
    assert Score.of_outcomes([]) == Score(0.0, 0, 0.0, 100.0)


# ------------------------------------------------------------------ Verdict


def test_verdict_json_round_trips_and_keeps_only_the_keys_that_apply() -> None:
    worse = Verdict("worse", -30.0, 0.012, 10, "mcnemar", 1, 4)
    assert worse.to_json() == {"verdict": "worse", "delta": -30.0, "p_value": 0.012, "n": 10,
                               "method": "mcnemar", "wins": 1, "losses": 4}
    assert Verdict.from_json(worse.to_json()) == worse
    untested = Verdict("untested", reason="no test rows")
    assert untested.to_json() == {"verdict": "untested", "reason": "no test rows"}
    assert Verdict.from_json(untested.to_json()) == untested
    assert worse.worse and not untested.worse
    assert worse.words() == "significantly worse"


def test_verdict_from_json_refuses_an_unknown_verdict() -> None:
    with pytest.raises(ValueError, match=r"guard\.verdict must be ok, worse or untested"):
        Verdict.from_json({"verdict": "great"})
    with pytest.raises(ValueError, match=r"missing guard\.verdict"):
        Verdict.from_json({"delta": 3.0})


def test_held_out_is_the_paired_test_against_the_file_text() -> None:
    before = _result([1.0] * 12)
    after = _result([0.0] * 12)
    verdict = held_out(before, after, "unused")
    assert (verdict.verdict, verdict.delta, verdict.n, verdict.method) == (
        "worse", -100.0, 12, "mcnemar")
    assert verdict.p_value is not None and verdict.p_value < 0.05
    assert (verdict.wins, verdict.losses) == (0, 12)
    # Three rows better is p = 0.25: not significant, so not withheld.
    assert held_out(_result([0, 0, 0]), _result([1, 1, 1]), "unused").verdict == "ok"
    assert held_out(None, after, "no test rows") == Verdict("untested", reason="no test rows")


# ------------------------------------------------------------------ the policy


def test_the_offer_is_the_best_prompt_within_budget_that_beats_the_file() -> None:
    t = _trajectory()
    offer = offer_for(t, t.initial, budget=3)
    assert offer is not None
    # The 90% rewrite changes too many words; the one-word change at 60 is offered.
    assert offer.text == "Answer the question briefly."
    assert offer.base == t.initial
    assert (offer.gain, offer.distance) == (20.0, 2)  # "question." became "question briefly."
    low, high = confidence_interval([1.0, 1.0, 1.0, 0.0, 0.0])
    assert offer.dev == Score(60.0, 5, low, high)
    assert offer.verdict == Verdict("untested", reason=NOT_COMPARED)
    assert not offer.withheld and offer.test is None
    # A budget wide enough for the rewrite offers it.
    wide = offer_for(t, t.initial, budget=50)
    assert wide is not None and wide.text.startswith("Think step by step")
    assert wide.dev == Score(90.0, 5)  # no outcomes recorded for it: no interval


def test_no_offer_when_nothing_within_budget_beats_the_file() -> None:
    t = _trajectory()
    assert offer_for(t, t.initial, budget=0) is None
    # Against the best prompt itself, nothing is better.
    best = t.best()[0]
    assert offer_for(t, best, budget=50) is None
    assert pick(t, best, 50) is None


def test_a_file_text_never_scored_gets_the_best_within_budget() -> None:
    t = _trajectory()
    offer = offer_for(t, "Answer the question now.", budget=1)
    assert offer is not None and offer.text == "Answer the question briefly."
    assert offer.gain == 60.0  # no baseline: the gain is the dev score itself


def test_the_verdict_comes_from_the_test_results_and_a_worse_offer_is_withheld() -> None:
    t = _trajectory()
    text = "Answer the question briefly."
    tested = {t.initial: _result([1.0] * 12), text: _result([0.0] * 12)}
    offer = offer_for(t, t.initial, 3, verdict=from_tests(tested, t.initial, "no test rows"),
                      test=lambda candidate: Score.of(tested[candidate]))
    assert offer is not None and offer.withheld
    assert offer.verdict.verdict == "worse" and offer.verdict.delta == -100.0
    assert offer.test == Score.of(tested[text])
    missing = offer_for(t, t.initial, 3, verdict=from_tests({}, t.initial, "no test rows"))
    assert missing is not None
    assert missing.verdict == Verdict("untested", reason="no test rows")


def test_offer_json_round_trip() -> None:
    t = _trajectory()
    offer = offer_for(t, t.initial, 3, verdict=lambda _: Verdict("ok", 5.0, 0.5, 10, "mcnemar",
                                                                   2, 1),
                      test=lambda _: Score(70.0, 10, 40.0, 90.0))
    assert offer is not None
    data = offer.to_json()
    assert data["guard"]["verdict"] == "ok" and data["dev"]["score"] == 60.0
    back = Offer.from_json(data)
    assert back.text == offer.text and back.verdict == offer.verdict
    assert back.test == offer.test and back.gain == 20.0 and back.distance == 2
    assert back.dev == Score.from_json(offer.dev.to_json())
    with pytest.raises(ValueError, match=r"missing suggestion\.base"):
        Offer.from_json({k: v for k, v in data.items() if k != "base"})


# ------------------------------------------------------------------ Trajectory.dev_score


def test_dev_score_has_the_interval_of_the_recorded_outcomes() -> None:
    t = _trajectory()
    low, high = confidence_interval([1.0, 1.0, 0.0, 0.0, 0.0])
    assert t.dev_score(t.initial) == Score(40.0, 5, low, high)
    # The file's final newline does not make it another prompt.
    assert t.dev_score(t.initial + "\n") == t.dev_score(t.initial)
    # Scored without outcomes: the recorded score and its rows, no interval.
    far = "Think step by step, then give only the final answer to the question asked."
    assert t.dev_score(far) == Score(90.0, 5)
    assert t.dev_score("never scored") is None
    assert [text for text, _, _ in t.dev_scores()] == [text for text, _, _ in t.scored()]


def test_a_crlf_copy_of_the_file_is_the_same_prompt() -> None:
    """An editor buffer of a CRLF file: its scores and its baseline are the file's."""
    lf = "Say hi.\nAnswer:"
    assert same_prompt(lf + "\n", "Say hi.\r\nAnswer:\r\n") and same_prompt(lf, "Say hi.\rAnswer:")
    assert not same_prompt(lf, "Say hi. Answer:")
    t = Trajectory("k", "/w/p.prompt", 2, lf, 50.0, 4)
    t.steps.append(StepRecord(0, 10, lf, 50.0, (
        CandidateRecord("Say hello.\nAnswer:", 1, "scored", 40.0, 4),), lf, 50.0))
    crlf = "Say hi.\r\nAnswer:\r\n"
    assert t.dev_score(crlf) == Score(50.0, 4)
    # The worse candidate is no suggestion for the file's own text, whatever its line ends.
    assert offer_for(t, crlf, budget=5) is None


def test_the_offer_module_stays_light() -> None:
    """The language server reads these types: no model layer, rapidfuzz or diskcache."""
    assert imported("import gpo_engine.offer",
                    packages=("litellm", "rapidfuzz", "diskcache", "aiohttp"),
                    modules=("gpo_engine.llm", "gpo_engine.trajectory",
                             "gpo_engine.evaluate")) == []
