"""Reading the daemon's prompt-state object; every bad key is named."""

from __future__ import annotations

import pytest

from gpo_engine.offer import Verdict
from gpo_server.prompt_state import (
    Current,
    Elsewhere,
    Summary,
    normalize,
    parse_state,
    same_prompt,
)
from tests.lsp_samples import INITIAL, STEP1, STEP2, state_dict


def test_parses_the_documented_shape() -> None:
    state = parse_state(state_dict())
    assert (state.steps_done, state.total_steps, state.budget) == (2, 12, 31)
    assert [s.step for s in state.scored] == [0, 1, 2]
    assert state.scored[0].dev == Summary(65.0, 40, 49.5, 77.9)
    assert state.scored[2].dev == Summary(72.5, 40, None, None)
    assert state.scored[1].test is None
    assert state.history == (65.0, 70.0, 72.5)
    assert state.suggestion is not None and state.suggestion.distance == 12
    assert state.usage.prompt_tokens == 12345 and state.usage.cost == pytest.approx(0.0123)
    assert state.job is None


def test_optional_parts_may_be_missing_or_null() -> None:
    data = state_dict(suggestion=None, job=None)
    del data["usage"]
    state = parse_state(data)
    assert state.suggestion is None and state.usage.cost == 0.0


def test_a_run_elsewhere_is_read_with_its_holder_unknown_parts_null() -> None:
    run = {"host": "workstation", "pid": 4242, "started": 1.7e9, "steps_done": 2,
           "total_steps": 12}
    assert parse_state(state_dict(elsewhere=run)).elsewhere == Elsewhere(
        "workstation", 4242, 1.7e9, 2, 12)
    unknown = {**run, "host": None, "pid": None, "started": None}
    assert parse_state(state_dict(elsewhere=unknown)).elsewhere == Elsewhere(
        None, None, None, 2, 12)
    assert parse_state(state_dict()).elsewhere is None  # an older daemon: absent


def test_job_is_read_and_active_only_while_queued_or_running() -> None:
    job = {"id": "j1", "status": "running", "step": 1, "total_steps": 12}
    state = parse_state(state_dict(job=job))
    assert state.job is not None and state.job.active and state.job.message == ""
    done = parse_state(state_dict(job={**job, "status": "finished"}))
    assert done.job is not None and not done.job.active


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "unsupported version 2"),
        ({"steps_done": -1}, "steps_done must be a whole number >= 0"),
        ({"budget": True}, "budget must be a whole number"),
        ({"scored": {}}, "scored must be a list"),
        ({"history": [1, "x"]}, "history[1] must be a number"),
        ({"scored": [{"text": "a", "step": 0}]}, "missing scored[0].dev"),
        ({"scored": [{"text": 3, "step": 0, "dev": {"score": 1, "n": 1}}]}, "scored[0].text"),
        ({"suggestion": {"text": "a"}}, "missing suggestion.base"),
        ({"job": {"id": "j", "status": "lost", "step": 0, "total_steps": 1}}, "job.status"),
        ({"usage": []}, "usage must be an object"),
        ({"elsewhere": {"host": "ws", "pid": 1}}, "missing elsewhere.steps_done"),
        ({"elsewhere": {"pid": "7", "steps_done": 1, "total_steps": 2}}, "elsewhere.pid"),
        ({"elsewhere": []}, "elsewhere must be an object"),
    ],
)
def test_bad_answers_name_the_key(change: dict, message: str) -> None:
    with pytest.raises(ValueError, match="prompt state: ") as info:
        parse_state(state_dict(**change))
    assert message in str(info.value)


def test_the_text_the_state_answers_for_and_its_scores() -> None:
    current = {"dev": {"score": 80.0, "n": 40, "low": 65.0, "high": 90.0}, "test": None}
    state = parse_state(state_dict(text="On disk {{x}}", base="Buffer {{x}}", current=current))
    assert (state.text, state.base) == ("On disk {{x}}", "Buffer {{x}}")
    assert state.current == Current(Summary(80.0, 40, 65.0, 90.0), None)
    # An older daemon sends no `base`: the state answers for the file's text.
    older = parse_state(state_dict(text="On disk {{x}}"))
    assert older.base == "On disk {{x}}" and older.current == Current()
    with pytest.raises(ValueError, match=r"current\.dev\.score must be a number"):
        parse_state(state_dict(current={"dev": {"score": "x", "n": 1}}))


def test_the_guard_is_the_engines_verdict() -> None:
    guard = Verdict("worse", -20.0, 0.0123, 40, "mcnemar", 2, 10)
    data = state_dict()
    data["suggestion"]["guard"] = guard.to_json()
    state = parse_state(data)
    assert state.suggestion is not None and state.suggestion.verdict == guard


def test_missing_top_level_key_is_named() -> None:
    data = state_dict()
    del data["total_steps"]
    with pytest.raises(ValueError, match="missing total_steps"):
        parse_state(data)


def test_not_an_object() -> None:
    with pytest.raises(ValueError, match="the answer must be an object"):
        parse_state([1, 2])


def test_lookup_ignores_line_endings_and_outer_whitespace() -> None:
    state = parse_state(state_dict())
    found = state.lookup(INITIAL.replace("\n", "\r\n") + "\n")
    assert found is not None and found.step == 0
    assert state.lookup(STEP1 + "\n").step == 1  # type: ignore[union-attr]
    assert state.lookup("Something else") is None
    assert normalize(" a\r\nb\r ") == "a\nb"
    assert same_prompt("x\n", "x") and not same_prompt("x y", "x  y")


def test_best_prefers_the_earliest_on_a_tie() -> None:
    data = state_dict()
    data["scored"][1]["dev"]["score"] = 72.5
    best = parse_state(data).best()
    assert best is not None and best.step == 1
    assert parse_state(state_dict(scored=[])).best() is None


def test_suggestion_only_for_the_text_it_was_picked_against() -> None:
    state = parse_state(state_dict())
    assert state.suggestion_for(INITIAL) is state.suggestion
    assert state.suggestion_for(INITIAL.rstrip("\n")) is state.suggestion
    assert state.suggestion_for(INITIAL + " More words.") is None
    # Once applied, the body is the suggestion (plus the final break): nothing left to offer.
    data = state_dict()
    data["suggestion"]["base"] = STEP2 + "\n"
    assert parse_state(data).suggestion_for(STEP2 + "\n") is None
