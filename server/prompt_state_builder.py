"""The prompt-state object the daemon serves (its shape: gpo_server.prompt_state).

Built from what the daemon holds, without a model call: the file's latest
trajectory (read for each request: with a shared cache, from Redis, so steps
finished on another machine are in it), its job (and the held-out verdict the
job measured), the scores measured on request (`evaluations`), and who else
runs it (gpo_server.elsewhere). The suggestion in it is the one
gpo_engine.offer picks, for the file's text or an editor's buffer.
"""

from __future__ import annotations

import contextlib
import difflib
import json
from collections.abc import Callable
from typing import Any

from gpo_engine.offer import NOT_COMPARED, Score, Verdict, offer_for, same_prompt
from gpo_engine.optimizer import current_budget
from gpo_engine.task import Task
from gpo_engine.trajectory import Trajectory
from gpo_engine.usage import Usage
from gpo_server.job_states import is_retrying, status_of
from gpo_server.jobs import Job
from gpo_server.prompt_state import STATE_VERSION


def scoring_scope(task: Task) -> str:
    """The file and what decides its scores (models, metric, answer length, examples):
    a score measured with other overrides (another model) is not this file's score."""
    s = task.settings
    return json.dumps([str(task.path.resolve()), task.task_model, task.judge_model, s.metric,
                       s.pattern, s.max_tokens, task.examples.content_hash])


Evaluations = dict[tuple[str, str, str], Score]


def _test_score(scope: str, text: str, job: Job | None,
                evaluations: Evaluations) -> Score | None:
    measured = evaluations.get((scope, text, "test"))
    if measured is not None:
        return measured
    result = job.result if job is not None else None
    if result:
        for which in ("best", "initial"):
            if result.get(which) == text and result.get(f"{which}_test"):
                with contextlib.suppress(ValueError):  # a hand-edited jobs.json
                    return Score.from_json(result[f"{which}_test"])
    return None


def _json(score: Score | None) -> dict[str, Any] | None:
    return score.to_json() if score is not None else None


def prompt_state(task: Task, trajectory: Trajectory | None, job: Job | None,
                 evaluations: Evaluations, scoring: Usage | None = None,
                 text: str | None = None,
                 elsewhere: dict[str, Any] | None = None) -> dict[str, Any]:
    """Everything an editor shows about one prompt file (gpo_server.prompt_state's shape)
    for `text` (the editor's buffer; default the file's body): its scores in `current`
    and merged into `scored`, and the suggestion picked against it. `scoring`: what
    re-scores of the file spent, counted in its usage; `elsewhere`: the run another
    process holds (gpo_server.elsewhere.holder_json), if any."""
    path, body = str(task.path.resolve()), task.prompt.body
    base = body if text is None else text
    scope = scoring_scope(task)
    steps_done = trajectory.steps_done if trajectory else 0
    budget = current_budget(task, steps_done)
    scored: list[dict[str, Any]] = []
    history: list[float] = []
    suggestion: dict[str, Any] | None = None
    withheld: dict[str, Any] | None = None

    def test(candidate: str) -> Score | None:
        return _test_score(scope, candidate, job, evaluations)

    if trajectory is not None:
        scored = [{"text": t, "step": step, "dev": dev.to_json(), "test": _json(test(t))}
                  for t, step, dev in trajectory.dev_scores()]
        history = [dev for _, dev, _ in trajectory.history()]
        offer = offer_for(trajectory, base, budget, verdict=job_verdict(job, base), test=test)
        if offer is not None:
            diff = "".join(difflib.unified_diff(
                base.splitlines(keepends=True), offer.text.splitlines(keepends=True),
                fromfile=f"{path} (current)", tofile=f"{path} (suggested)"))
            shown = {**offer.to_json(), "budget": budget, "diff": diff}
            # The overfitting guard of `gpo optimize`: never offer a prompt that is
            # significantly worse on the held-out rows; say why instead.
            if offer.withheld:
                withheld = shown
            else:
                suggestion = shown
    measured = evaluations.get((scope, base, "dev"))
    if measured is not None:
        scored = with_measured(scored, base, measured, test(base), steps_done)
    current_dev = measured
    if current_dev is None and trajectory is not None:
        current_dev = trajectory.dev_score(base)
    return {
        "version": STATE_VERSION, "path": path, "text": body, "base": base,
        "task_model": task.task_model, "optimizer_model": task.optimizer_model,
        "steps_done": steps_done, "total_steps": task.settings.steps, "budget": budget,
        "current": {"dev": _json(current_dev), "test": _json(test(base))},
        "scored": scored, "history": history, "suggestion": suggestion,
        "withheld": withheld, "rejected": trajectory.rejected() if trajectory else {},
        "usage": _usage(job, scoring), "job": _job_summary(job),
        "elsewhere": elsewhere,
    }


def with_measured(scored: list[dict[str, Any]], text: str, dev: Score, test: Score | None,
                  steps_done: int) -> list[dict[str, Any]]:
    """`scored` with `text` as the daemon measured it: a re-score of a text outside the
    trajectory (a fresh file, a hand edit) is listed like the evaluated ones, and one made
    after the example set changed replaces the trajectory's older numbers."""
    for index, item in enumerate(scored):
        if same_prompt(item["text"], text):
            fresh = {**item, "dev": dev.to_json(),
                     "test": test.to_json() if test is not None else item["test"]}
            return [*scored[:index], fresh, *scored[index + 1:]]
    return [*scored, {"text": text, "step": steps_done, "dev": dev.to_json(),
                      "test": _json(test)}]


def job_verdict(job: Job | None, body: str) -> Callable[[str], Verdict]:
    """The held-out verdicts the file's job measured, against the file's `body`.

    The job's result carries the paired test of its suggestion against the text
    it started from; a verdict about other texts is not known without model calls,
    which a request never makes, so it is "untested" then.
    """
    result = (job.result if job is not None else None) or {}
    measured = (result.get("guard") or {}).get("suggestion")

    def verdict(text: str) -> Verdict:
        if (measured and same_prompt(measured.get("text", ""), text)
                and same_prompt(result.get("initial", ""), body)):
            with contextlib.suppress(ValueError):  # a hand-edited jobs.json: not known
                return Verdict.from_json(measured)
        return Verdict("untested", reason=NOT_COMPARED)

    return verdict


def _usage(job: Job | None, scoring: Usage | None = None) -> dict[str, Any]:
    """The job's tokens and spend (its earlier daemon lives' spend included), plus what
    re-scoring the file spent."""
    run = job.usage if job is not None and job.usage is not None else Usage()
    extra = scoring or Usage()
    return {**run.plus(extra).to_dict(),
            "cost": (job.cost if job is not None else 0.0) + extra.cost,
            "calls": (job.calls if job is not None else 0) + extra.calls}


def _job_summary(job: Job | None) -> dict[str, Any] | None:
    if job is None:
        return None
    # `status` keeps to the five values every client knows (waiting and failing jobs are
    # still running: they retry); `state` is the exact one, `message` says why.
    message = job.error if is_retrying(job.state) or job.state == "failed" else ""
    if job.result and job.result.get("stopped") and not message:
        message = str(job.result["stopped"])
    data = job.to_dict()
    return {"id": job.id, "status": status_of(job.state), "state": job.state, "step": job.step,
            "total_steps": job.total_steps, "message": message, "error_kind": job.error_kind,
            "retry_in": data["retry_in"], "spend": data["spend"]}
