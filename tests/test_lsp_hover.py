"""Hover markdown: scores with n and interval, best, step, budget, spend, sparkline."""

from __future__ import annotations

from gpo_server.lsp_hover import format_spend, hover_markdown, scoring_now, sparkline
from gpo_server.prompt_state import parse_state
from tests.lsp_samples import INITIAL, STEP1, STEP2, state_dict


def test_sparkline_scales_between_lowest_and_highest() -> None:
    assert sparkline([0, 50, 100]) == "▁▅█"
    assert sparkline([60, 60, 60]) == "▄▄▄"
    assert sparkline([]) == ""
    assert sparkline(list(range(40)), width=5) == "▁▃▅▆█"


def test_hover_of_the_initial_text() -> None:
    text = hover_markdown(parse_state(state_dict()), INITIAL)
    lines = text.splitlines()
    assert lines[0] == "**GPO** · step 2/12 · budget 31 words"
    assert "- dev: **65.0** (n=40, 95% CI 49.5–77.9)" in lines
    assert "- test: **62.5** (n=40, 95% CI 47.0–75.8)" in lines
    assert "- best in trajectory: **72.5** dev, step 2 (+7.5 pts)" in lines
    assert "- history: `▁▆█` 65.0 → 72.5 (3 scores)" in lines
    assert "- ready: Apply GPO suggestion (+7.5 pts, 12/31 words)" in lines
    assert "- tokens: 12,345 prompt + 2,345 completion · spend $0.0123" in lines
    assert "Not yet scored" not in text


def test_hover_of_an_edited_text_says_not_yet_scored() -> None:
    text = hover_markdown(parse_state(state_dict()), INITIAL + "Be brief.")
    assert "*Not yet scored*: this text differs from every evaluated prompt." in text
    assert "- dev:" not in text
    # The trajectory's facts still show; the suggestion was for other text.
    assert "- best in trajectory: **72.5** dev, step 2" in text
    assert "ready:" not in text


def test_hover_of_a_text_without_test_score_and_without_interval() -> None:
    text = hover_markdown(parse_state(state_dict()), STEP2)
    assert "- dev: **72.5** (n=40)" in text
    assert "- test: not measured" in text
    assert "step 2 (this text)" in text
    assert "dev: **70.0**" in hover_markdown(parse_state(state_dict()), STEP1)


def test_hover_shows_a_running_job_and_a_failure() -> None:
    job = {"id": "j", "status": "running", "step": 3, "total_steps": 12}
    assert "- optimizing: running, step 3/12" in hover_markdown(
        parse_state(state_dict(job=job)), INITIAL
    )
    failed = {**job, "status": "failed", "message": "openai/x: auth: bad key"}
    assert "- last run failed: openai/x: auth: bad key" in hover_markdown(
        parse_state(state_dict(job=failed)), INITIAL
    )


def test_hover_says_where_another_machine_optimizes_it() -> None:
    run = {"host": "workstation", "pid": 4242, "started": 1.7e9, "steps_done": 2,
           "total_steps": 12}
    hover = hover_markdown(parse_state(state_dict(elsewhere=run)), INITIAL)
    assert "- optimizing on workstation (pid 4242): step 2/12" in hover
    unknown = {**run, "host": None, "pid": None}
    assert "- optimizing on another machine: step 2/12" in hover_markdown(
        parse_state(state_dict(elsewhere=unknown)), INITIAL)
    assert "optimizing on" not in hover_markdown(parse_state(state_dict()), INITIAL)


def test_hover_says_why_a_job_retries_and_what_to_set_for_a_key() -> None:
    job = {"id": "j", "status": "running", "state": "failing", "step": 1, "total_steps": 12,
           "message": "openai/x: server: HTTP 500"}
    assert "- optimizing: failing, step 1/12; retrying after: openai/x: server: HTTP 500" in \
        hover_markdown(parse_state(state_dict(job=job)), INITIAL)
    failed = {**job, "status": "failed", "state": "failed", "error_kind": "auth",
              "message": "openai/gpt-4o-mini: auth: Missing credentials; set OPENAI_API_KEY"}
    lines = hover_markdown(parse_state(state_dict(job=failed)), INITIAL).splitlines()
    at = lines.index("- last run failed: openai/gpt-4o-mini: auth: Missing credentials; "
                     "set OPENAI_API_KEY")
    assert lines[at + 1].startswith("- the daemon reads API keys from the environment it "
                                    "started in") and "`gpo daemon stop`" in lines[at + 1]
    assert not any(line.startswith("- optimizing") for line in lines)


def test_hover_says_scoring_while_the_text_is_scored() -> None:
    fresh = parse_state(state_dict(steps_done=0, scored=[], history=[], suggestion=None,
                                   job={"id": "j", "status": "running", "step": 0,
                                        "total_steps": 12}))
    # The job measures the file's text before its first step; the buffer is that text.
    assert scoring_now(fresh, INITIAL, INITIAL.strip(), rescoring=False)
    assert not scoring_now(fresh, INITIAL + "Be brief.", INITIAL, rescoring=False)
    assert not scoring_now(fresh, INITIAL, None, rescoring=False)
    idle = parse_state(state_dict(steps_done=0, scored=[], history=[], suggestion=None))
    assert not scoring_now(idle, INITIAL, INITIAL, rescoring=False)
    assert scoring_now(idle, INITIAL + "Be brief.", INITIAL, rescoring=True)  # a Re-score
    assert scoring_now(None, INITIAL, None, rescoring=True)
    known = parse_state(state_dict(job={"id": "j", "status": "running", "step": 1,
                                        "total_steps": 12}))
    assert not scoring_now(known, INITIAL, INITIAL, rescoring=False)  # scored already
    text = hover_markdown(fresh, INITIAL, scoring=True)
    assert "*Scoring…*: this text is being scored now." in text
    assert "not yet scored" not in text.lower()
    assert hover_markdown(None, INITIAL, scoring=True).startswith(
        "**GPO**: scoring… this text is being scored now.")


def test_hover_without_state() -> None:
    text = hover_markdown(None, INITIAL)
    assert text.startswith("**GPO**: not yet scored.")


def test_hover_before_any_run() -> None:
    state = parse_state(
        state_dict(steps_done=0, scored=[], history=[], suggestion=None, usage=None)
    )
    text = hover_markdown(state, INITIAL)
    assert "step 0/12" in text and "Not yet scored" in text
    assert "best in trajectory" not in text and "history" not in text
    assert "spend $0.0000" in text


def test_spend_formats() -> None:
    assert format_spend(0.0, True) == "spend unknown (no price for the model)"
    assert format_spend(2.5, False) == "spend $2.50"
    assert format_spend(0.01, True) == "spend $0.0100 (some prices unknown)"


def test_hover_shows_the_held_out_verdict_of_the_suggestion() -> None:
    data = state_dict()
    data["suggestion"]["guard"] = {"verdict": "ok", "delta": 7.5, "p_value": 0.0004, "n": 40}
    text = hover_markdown(parse_state(data), INITIAL)
    assert ("- held-out check: significantly better on held-out test rows "
            "(+7.5 pts on test, p < 0.001, n = 40)") in text
    data["suggestion"]["guard"] = {"verdict": "ok", "delta": 7.5, "p_value": 0.21, "n": 40}
    assert ("- held-out check: not significantly different on held-out test rows "
            "(+7.5 pts on test, p = 0.210, n = 40)") in hover_markdown(parse_state(data), INITIAL)
    data["suggestion"]["guard"] = {"verdict": "untested", "reason": "no test rows"}
    text = hover_markdown(parse_state(data), INITIAL)
    assert "- held-out check: not tested on held-out rows (no test rows)" in text


def test_hover_says_why_a_better_dev_prompt_is_withheld_and_what_was_dropped() -> None:
    data = state_dict()
    withheld = data.pop("suggestion")
    withheld["guard"] = {"verdict": "worse", "delta": -20.0, "p_value": 0.0123, "n": 40}
    data.update(suggestion=None, withheld=withheld, rejected={"duplicate": 2, "leak": 1})
    text = hover_markdown(parse_state(data), INITIAL)
    assert ("- withheld: a prompt +7.5 pts on dev is significantly worse on held-out test rows "
            "(-20 pts on test, p = 0.012, n = 40): it overfits the dev rows") in text
    assert "- dropped candidates: 2 duplicate, 1 copied training text (leak)" in text
    assert "- ready:" not in text
    # Another buffer text than the one it was judged against: not this text's business.
    assert "withheld" not in hover_markdown(parse_state(data), STEP1)


def test_a_bad_guard_verdict_is_reported_by_name() -> None:
    data = state_dict()
    data["suggestion"]["guard"] = {"verdict": "maybe"}
    try:
        parse_state(data)
    except ValueError as exc:
        assert "suggestion.guard.verdict" in str(exc)
    else:
        raise AssertionError("a bad verdict was accepted")
