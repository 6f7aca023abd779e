"""The GPO loop (arXiv 2402.17564, section 3 of DESIGN.md).

Each step: score the current prompt on a train minibatch, retrieve k prompts
from the trajectory as the update direction, ask the optimizer model for
candidates within the step's word budget, score them on dev (racing first on
a slice), and move to the best one. Each finished step is saved before the
next begins, so a killed run resumes where it stopped; model answers come
from the response cache on a rerun, so nothing finished is paid for twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import random
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from gpo_engine import direction, spend, update
from gpo_engine.errors import GpoError, ModelCallError, SpendLimitReached
from gpo_engine.evaluate import EvalResult
from gpo_engine.events import (
    CandidateScored,
    EventSink,
    JobFailed,
    JobFinished,
    JobStarted,
    StepFinished,
    StepStarted,
    ignore,
)
from gpo_engine.examples import Example
from gpo_engine.leak_guard import LEAK_THRESHOLD
from gpo_engine.llm import LLM
from gpo_engine.meta_prompts import Exemplar
from gpo_engine.meta_style import MetaStyle
from gpo_engine.offer import GUARD_ALPHA, Score, from_tests, held_out, offer_for
from gpo_engine.offer import pick as pick_suggestion  # the name callers and tests know
from gpo_engine.racing import score_candidates
from gpo_engine.schedule import budget_at, budget_curve
from gpo_engine.target import Target, structure, structure_change, target_of
from gpo_engine.task import Task, score
from gpo_engine.template import template_error, template_variables
from gpo_engine.trajectory import (
    CandidateRecord,
    StepRecord,
    Trajectory,
    TrajectoryStore,
    trajectory_key,
)
from gpo_engine.usage import Usage

EXEMPLARS = 3  # examples shown to the optimizer per step (paper: 3)
# Sample indexes of different steps must differ, or a step whose meta-prompt
# repeats an earlier one would get the very same cached candidates back.
SAMPLES_PER_STEP = 10_000


_SCORES = ("initial_dev", "best_dev", "initial_test", "best_test")  # Result's Score fields


@dataclass(frozen=True)
class Result:
    path: str
    task_model: str
    optimizer_model: str
    total_steps: int
    steps_done: int
    budgets: list[int]
    initial: str
    best: str
    initial_dev: Score  # each split's score: on the wire `{score, n, low, high}` (Score.to_json)
    best_dev: Score
    initial_test: Score | None
    best_test: Score | None
    distance: int  # words changed from the initial prompt to the best
    suggestion: str | None  # best prompt within the current budget of the file's text, if better
    suggestion_distance: int | None
    current_budget: int
    usage: dict[str, Any]
    stopped: str = ""  # why the run ended early; "" when it ran every step
    rejected: dict[str, int] = field(default_factory=dict)  # dropped candidates by reason
    # The overfitting guards' verdicts: the held-out test check of `best` and of
    # `suggestion` (see held_out_verdict), and the candidates the leak guard dropped.
    guard: dict[str, Any] = field(default_factory=dict)

    @property
    def improved(self) -> bool:
        return self.best != self.initial

    @property
    def offered(self) -> bool:
        """Whether `best` is worth proposing: it differs from the initial prompt and
        its held-out test score is not significantly worse."""
        verdict = (self.guard.get("best") or {}).get("verdict")
        return self.improved and verdict != "worse"

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for key in _SCORES:
            value: Score | None = getattr(self, key)
            out[key] = None if value is None else value.to_json()
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Result:
        """What to_dict wrote (a daemon job's `result`); keys a newer gpo added are skipped."""
        known = {f.name for f in dataclasses.fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        for key in _SCORES:
            if values.get(key) is not None:
                values[key] = Score.from_json(values[key], key)
        return cls(**values)


async def optimize_task(
    task: Task,
    llm: LLM,
    store: TrajectoryStore,
    *,
    on_event: EventSink = ignore,
    restart: bool = False,
    cancel: asyncio.Event | None = None,
) -> Result:
    """Run (or resume) GPO on `task` and return the outcome.

    Ends early, cleanly, at a step boundary on cancel or when the spend limit
    is reached; model outages that survive the llm layer's retries end the
    run with JobFailed and re-raise, with every finished step saved.
    """
    key = _key(task)
    if restart:
        store.delete(key)  # discarded: the fresh record must not have to extend it
    trajectory = None if restart else store.load(key)
    # Spend of the earlier runs of this trajectory, to the last call (a resumed
    # run adds to it); every call of this run is journaled as it goes.
    saved = Usage.from_dict(trajectory.usage) if trajectory else None
    spent = spend.for_job(store.directory, key, saved, llm.usage, restart=restart)
    llm.record_spend(spent)
    try:
        return await _optimize(task, llm, store, trajectory, spent, on_event, cancel)
    finally:
        llm.stop_recording()


async def _optimize(task: Task, llm: LLM, store: TrajectoryStore,
                    trajectory: Trajectory | None, spent: spend.SpendJournal,
                    on_event: EventSink, cancel: asyncio.Event | None) -> Result:
    settings = task.settings
    total = settings.steps
    key = _key(task)
    step = trajectory.steps_done if trajectory else 0
    stopped = ""

    def save(trajectory: Trajectory) -> None:
        spent.flush()
        trajectory.usage = spent.total.to_dict()
        store.save(trajectory)

    try:
        if trajectory is None:
            initial = await score(task, llm, task.prompt.body, task.examples.dev)
            trajectory = Trajectory(key, str(task.path.resolve()), total, task.prompt.body,
                                    initial.score, initial.n)
            trajectory.dev_outcomes[task.prompt.body] = _outcomes(initial)
            save(trajectory)
        on_event(JobStarted(str(task.path), total, step, trajectory.initial_dev,
                            trajectory.dev_n))
        for step in range(trajectory.steps_done, total):
            if cancel is not None and cancel.is_set():
                stopped = "cancelled"
                break
            record = await _step(task, llm, trajectory, step, on_event)
            trajectory.steps.append(record)
            save(trajectory)
            scored = [c for c in record.candidates if c.status in ("scored", "raced_out")]
            on_event(StepFinished(step, total, record.budget, trajectory.best()[1],
                                  record.chosen_dev if scored else None,
                                  len(scored), len(record.candidates) - len(scored),
                                  llm.spent_before + llm.usage.cost, llm.usage.calls,
                                  record.message))
    except SpendLimitReached as exc:
        if trajectory is None:  # reached before the initial prompt was even scored
            on_event(JobFailed(str(exc), step))
            raise
        stopped = str(exc)
    except (ModelCallError, OSError) as exc:
        if trajectory is not None:
            # The failed step's calls belong to the job's spend too (the journal
            # has them; the trajectory is what `gpo report` and the daemon read).
            with contextlib.suppress(GpoError, OSError):
                save(trajectory)
        on_event(JobFailed(str(exc), step))
        raise
    assert trajectory is not None
    try:
        result = await _result(task, llm, trajectory, stopped)
    except SpendLimitReached as exc:
        result = await _result(task, llm, trajectory, str(exc), with_test=False)
    save(trajectory)  # the final scoring's calls belong to the run's spend too
    on_event(JobFinished(trajectory.initial_dev, trajectory.best()[1], trajectory.steps_done,
                         result.stopped))
    return result


async def _step(
    task: Task, llm: LLM, trajectory: Trajectory, step: int, on_event: EventSink
) -> StepRecord:
    settings = task.settings
    budget = budget_at(step, settings.steps, settings.budget)
    on_event(StepStarted(step, settings.steps, budget))
    current, current_dev = trajectory.current()

    # 1. The current prompt on a train minibatch: its mistakes become exemplars.
    rng = random.Random(f"{settings.seed}:{step}")
    train = list(task.examples.train) or list(task.examples.dev)
    batch = rng.sample(train, min(settings.batch_size, len(train)))
    on_train = await score(task, llm, current, batch)
    exemplars = _exemplars(batch, on_train, rng)

    # 2. Update direction: the current prompt and the k-1 most relevant earlier ones.
    history = [direction.ScoredPrompt(t, s, st) for t, s, st in trajectory.history()]
    here = direction.ScoredPrompt(current, current_dev, history[-1].step)
    similarity = await _similarity(task, llm, [h.text for h in history])
    chosen_direction = direction.retrieve(history[:-1], here, settings.k, settings.retrieval,
                                          similarity)

    # 3. Generation-based update under the word budget, of the target text only
    # (gpo.target): the optimizer never sees role markers or partials to mangle.
    target = target_of(current, settings.target)
    style = MetaStyle.for_model(task.optimizer_model)

    async def ask_optimizer(messages: list[dict[str, str]], sample: int) -> str:
        done = await llm.complete(task.optimizer_model, messages,
                                  temperature=settings.temperature,
                                  max_tokens=_optimizer_tokens(target.text),
                                  stop=list(style.stop),
                                  sample=step * SAMPLES_PER_STEP + sample)
        return done.text

    generation = await update.generate(
        ask_optimizer, current=target.text,
        direction=_as_targets(chosen_direction, current, settings.target), exemplars=exemplars,
        budget=budget, n=settings.candidates, variables=_target_variables(task, target),
        style=style,
        train_texts=[text for e in train for text in (*e.inputs.values(), e.expected)])
    failed = [r for r in generation.rejected if r.reason == "model_error"]
    if failed and not generation.candidates and len(failed) == len(generation.rejected):
        # Every optimizer call failed: an outage, not a step without ideas. Raise
        # before the step is saved, so a retry redoes it instead of skipping it.
        raise ModelCallError(task.optimizer_model, "systemic",
                             f"all {len(failed)} optimizer calls failed; first: {failed[0].detail}")
    generation = _in_place(generation, target, current)

    # 4. Score candidates on dev, racing on a slice first when asked to.
    texts = [c.text for c in generation.candidates]
    results, raced_out = await score_candidates(task, llm, texts)
    records: list[CandidateRecord] = []
    for i, cand in enumerate(generation.candidates):
        res = results[i]
        out = i in raced_out
        records.append(CandidateRecord(cand.text, cand.distance,
                                       "raced_out" if out else "scored", res.score, res.n))
        on_event(CandidateScored(step, i, res.score, res.n, cand.distance, out))
        if not out:
            trajectory.dev_outcomes[cand.text] = _outcomes(res)
    records.extend(CandidateRecord(r.text, -1, r.reason, detail=r.detail)
                   for r in generation.rejected)

    # 5. The best new candidate becomes the current prompt (the paper moves even
    # when it scores below the current one; the trajectory keeps the best anyway).
    full = [r for r in records if r.status == "scored" and r.dev is not None]
    if not full:
        return StepRecord(step, budget, current, on_train.score, tuple(records), current,
                          current_dev, "no usable candidate; keeping the current prompt")
    best = max(full, key=lambda r: (r.dev or 0.0, -r.distance))
    return StepRecord(step, budget, current, on_train.score, tuple(records), best.text,
                      best.dev or 0.0)


def _as_targets(prompts: Sequence[direction.ScoredPrompt], current: str,
                which: str) -> list[direction.ScoredPrompt]:
    """The retrieved prompts as the optimizer sees them: each one's own target text.

    Earlier prompts share the current one's structure (candidates that do not
    are rejected); one that does not (the file was restructured by hand, say)
    is shown whole rather than cut at the wrong place.
    """
    chosen = target_of(current, which).which
    shape = structure(current)
    shown = []
    for prompt in prompts:
        own = target_of(prompt.text, which)
        same = own.which == chosen and structure(prompt.text) == shape
        shown.append(dataclasses.replace(prompt, text=own.text) if same else prompt)
    return shown


def _target_variables(task: Task, target: Target) -> tuple[str, ...]:
    # The whole body keeps the file's variables, as before targets existed; a
    # message must keep the ones it uses, and the rest are outside its reach.
    if target.which == "all":
        return task.prompt.variables
    return template_variables(target.text)


def _in_place(generation: update.Generation, target: Target,
              current: str) -> update.Generation:
    """The candidates as whole template bodies.

    One whose structural tags (role markers, partials, block helpers...) differ
    from the current body's, or whose body no longer renders, is rejected as
    "lost_structure", counted like the other rejected candidates. Distances are
    between whole bodies, as the budget and the suggestion measure them.
    """
    shape = structure(current)
    kept: list[update.Candidate] = []
    lost: list[update.Rejected] = []
    for candidate in generation.candidates:
        body = target.whole(candidate.text)
        problem = structure_change(shape, structure(body))
        if not problem and target.which != "all":  # a whole body was screened already
            broken = template_error(body)
            problem = f"breaks the template: {broken}" if broken else ""
        if problem:
            lost.append(update.Rejected(body, "lost_structure", problem))
        else:
            kept.append(dataclasses.replace(
                candidate, text=body, distance=update.word_distance(current, body)))
    return update.Generation(tuple(kept), generation.rejected + tuple(lost))


def _exemplars(batch: Sequence[Example], result: EvalResult,
               rng: random.Random) -> list[Exemplar]:
    """Up to EXEMPLARS rows from the minibatch, wrong answers first (they show where to go)."""
    by_uid = result.by_uid()
    rows = [(e, by_uid[e.uid]) for e in batch if e.uid in by_uid]
    rng.shuffle(rows)
    rows.sort(key=lambda pair: pair[1].score)
    return [Exemplar(input=_show_inputs(e), expected=e.expected,
                     output=o.output.strip(), correct=o.score >= 1.0)
            for e, o in rows[:EXEMPLARS]]


def _show_inputs(example: Example) -> str:
    if len(example.inputs) == 1:
        return next(iter(example.inputs.values()))
    return "\n".join(f"{k}: {v}" for k, v in example.inputs.items())


async def _similarity(task: Task, llm: LLM, texts: list[str]) -> Any:
    """Embedding similarity when an embedding model is configured, else rapidfuzz (None)."""
    if task.settings.retrieval != "relevance" or not task.settings.embedding:
        return None
    unique = sorted(set(texts))
    vectors = await llm.embed(task.settings.embedding, unique)
    return direction.embedding_similarity(dict(zip(unique, vectors, strict=False)))


def _optimizer_tokens(current: str) -> int:
    # Room for a rewrite a good deal longer than the current prompt (tokens ~ 1.3 x words),
    # without letting a rambling base model run on for hundreds of tokens.
    return max(96, 3 * len(current.split()) + 48)


def _outcomes(result: EvalResult) -> dict[str, float]:
    return {o.uid: o.score for o in result.outcomes}


def _key(task: Task) -> str:
    return trajectory_key(task.fingerprint())


def current_budget(task: Task, steps_done: int) -> int:
    """The budget the job is at: that of the next step, or the last one when finished."""
    return budget_at(min(steps_done, task.settings.steps - 1), task.settings.steps,
                     task.settings.budget)


async def _result(task: Task, llm: LLM, trajectory: Trajectory, stopped: str,
                  with_test: bool = True) -> Result:
    best_text, _ = trajectory.best()
    initial_text = trajectory.initial
    dev = task.examples.dev
    initial_dev = await score(task, llm, initial_text, dev)
    best_dev = await score(task, llm, best_text, dev)
    initial_test = best_test = None
    tested: dict[str, EvalResult] = {}
    test_rows = task.examples.test if with_test else ()
    if test_rows:
        tested[initial_text] = await score(task, llm, initial_text, test_rows)
        tested[best_text] = await score(task, llm, best_text, test_rows)
        initial_test, best_test = Score.of(tested[initial_text]), Score.of(tested[best_text])
    budget = current_budget(task, trajectory.steps_done)
    picked = pick_suggestion(trajectory, task.prompt.body, budget)
    if picked is not None and test_rows and picked[0] not in tested:
        tested[picked[0]] = await score(task, llm, picked[0], test_rows)
    untested = ("stopped before the test split was scored" if task.examples.test
                else "no test rows")
    # The suggestion policy (gpo_engine.offer), judged against the text the run started from.
    offer = offer_for(trajectory, task.prompt.body, budget,
                      verdict=from_tests(tested, initial_text, untested))
    rejected = trajectory.rejected()
    guard: dict[str, Any] = {
        "alpha": GUARD_ALPHA,
        "best": held_out_verdict(tested.get(initial_text), tested.get(best_text), untested),
        "suggestion": ({**offer.verdict.to_json(), "text": offer.text} if offer else None),
        "leak_threshold": LEAK_THRESHOLD,
        "leaks_dropped": rejected.get("leak", 0),
    }
    # A withheld offer would likely make the file worse on unseen rows: not suggested.
    suggestion = offer if offer is not None and not offer.withheld else None
    return Result(
        path=str(task.path), task_model=task.task_model, optimizer_model=task.optimizer_model,
        total_steps=task.settings.steps, steps_done=trajectory.steps_done,
        budgets=budget_curve(task.settings.steps, task.settings.budget),
        initial=initial_text, best=best_text,
        initial_dev=Score.of(initial_dev), best_dev=Score.of(best_dev),
        initial_test=initial_test, best_test=best_test,
        distance=update.word_distance(initial_text, best_text),
        suggestion=suggestion.text if suggestion else None,
        suggestion_distance=suggestion.distance if suggestion else None,
        current_budget=budget, usage=llm.usage.to_dict(), stopped=stopped, rejected=rejected,
        guard=guard)


def held_out_verdict(before: EvalResult | None, after: EvalResult | None,
                     untested: str) -> dict[str, Any]:
    """gpo_engine.offer.held_out in the JSON form Result.guard holds: "ok" (not
    significantly worse), "worse" (withhold it) or "untested" (`untested` says why)."""
    return held_out(before, after, untested).to_json()
