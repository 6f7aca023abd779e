"""`gpo report`: write a self-contained HTML page about the file's latest run."""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console

from gpo_server.commands.common import EXIT_OK, CommandError, model_arguments, overrides

if TYPE_CHECKING:
    from gpo_engine.task import Task
    from gpo_engine.trajectory import Trajectory


def register(sub: Any) -> None:
    rep = sub.add_parser("report", parents=[model_arguments()],
                         help="write an HTML report of the latest run")
    run_arguments(rep)
    rep.add_argument("-o", "--output", type=Path,
                     help="HTML file to write (default: <name>.report.html beside the prompt)")
    rep.add_argument("--no-test", action="store_true",
                     help="do not score the per-step prompts on test (no model calls for it)")
    rep.set_defaults(run=run)


def run_arguments(parser: argparse.ArgumentParser) -> None:
    """Overrides that were part of the run, so the task here matches the run's settings."""
    parser.add_argument("--steps", type=int, help="as given to `gpo optimize`")
    parser.add_argument("--candidates", type=int, help="as given to `gpo optimize`")
    parser.add_argument("--optimizer-model", help="as given to `gpo optimize`")


def latest_trajectory(task: Task, cache_dir: Path | None) -> Trajectory | None:
    from gpo_engine.task import open_store

    store = open_store(cache_dir)
    try:
        return store.latest_for(str(task.path.resolve()))
    finally:
        store.close()


def run_fingerprint(task: Task, trajectory: Trajectory) -> dict[str, Any] | None:
    """The task's fingerprint minus path and text, if it is the one the run was keyed by.

    None when the file's settings, models or examples changed since the run:
    then this task cannot vouch for how the trajectory was made.
    """
    from gpo_engine.trajectory import trajectory_key

    full = {**task.fingerprint(), "initial": trajectory.initial}
    if trajectory_key(full) != trajectory.key:
        return None
    return {k: v for k, v in full.items() if k not in ("path", "initial")}


def default_output(prompt: Path) -> Path:
    return prompt.with_name(prompt.name.removesuffix(".prompt") + ".report.html")


def run(args: argparse.Namespace, err: Console) -> int:
    from gpo_engine.task import load_task

    task = load_task(args.path, **overrides(args))
    trajectory = latest_trajectory(task, args.cache_dir)
    if trajectory is None:
        raise CommandError(f"no optimization run recorded for {args.path}: "
                           f"run `gpo optimize {args.path}` first")
    if run_fingerprint(task, trajectory) is None:
        err.print("[yellow]warning[/yellow] the latest run was made with other settings, "
                  "models or examples than the file has now; its scores are shown as recorded "
                  "and any new ones use the current settings", highlight=False)
    with err.status(f"scoring {task.path.name} for the report"):
        report = asyncio.run(gather(task, trajectory, args))
    from gpo_engine.atomic import write_text
    from gpo_server.report_html import render_html

    out = args.output or default_output(args.path)
    # Atomic: a full disk leaves the previous report (or none), never a 0-byte page;
    # the scores it needed are cached, so writing it again costs no model call.
    write_text(out, render_html(report))
    if args.json:
        print(json.dumps({"path": str(task.path), "report": str(out),
                          "steps_done": trajectory.steps_done,
                          "total_steps": trajectory.total_steps}, indent=2))
    else:
        Console().print(f"report written to {out}", highlight=False)
    return EXIT_OK


async def gather(task: Task, trajectory: Trajectory, args: argparse.Namespace) -> Any:
    """Score what the trajectory does not record (intervals, test) and build the report."""
    from gpo_engine import offer
    from gpo_engine.optimizer import current_budget
    from gpo_engine.schedule import budget_curve
    from gpo_engine.task import open_llm, score
    from gpo_server.report_html import build_report

    llm = open_llm(task, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                   api_base=args.api_base)
    try:
        texts = list(dict.fromkeys(text for text, _, _ in trajectory.history()))
        dev: dict[str, offer.Score] = {}
        for text in texts:
            if text not in trajectory.dev_outcomes:  # recorded outcomes need no model call
                dev[text] = offer.Score.of(await score(task, llm, text, task.examples.dev))
        tested: dict[str, Any] = {}
        if task.examples.test and not args.no_test:
            for text in texts:
                tested[text] = await score(task, llm, text, task.examples.test)
        test = {text: offer.Score.of(result) for text, result in tested.items()}
        total = trajectory.total_steps
        budgets = budget_curve(total, task.settings.budget)
        for record in trajectory.steps:  # what the steps actually used wins
            if record.step < len(budgets):
                budgets[record.step] = record.budget
        budget_now = current_budget(task, trajectory.steps_done)
        body = task.prompt.body
        picked = offer.pick(trajectory, body, budget_now)
        if picked is not None and tested:
            # The overfitting guard of `gpo optimize`: the suggestion against the file's
            # text on held-out test rows, by a paired test on per-row outcomes.
            for text in (body, picked[0]):
                if text not in tested:
                    tested[text] = await score(task, llm, text, task.examples.test)
        why = "test not scored (--no-test)" if task.examples.test else "no test rows"
        suggestion = offer.offer_for(trajectory, body, budget_now,
                                     verdict=offer.from_tests(tested, body, why))
        spend = [("model calls made for this report", llm.usage.to_dict())]
        recorded = recorded_spend(trajectory)
        if recorded is not None:
            spend.insert(0, ("the optimization run", recorded))
        return build_report(
            trajectory, task_model=task.task_model, optimizer_model=task.optimizer_model,
            metric=task.settings.metric, budgets=budgets, dev=dev, test=test, file_text=body,
            suggestion=(suggestion.text, suggestion.dev.value) if suggestion else None,
            guard=suggestion.verdict if suggestion else None, path=str(task.path),
            budget_now=budget_now, spend=spend)
    finally:
        llm.close()


def recorded_spend(trajectory: Trajectory) -> dict[str, Any] | None:
    """The run's spend as its trajectory records it (Usage.to_dict() form); None if empty."""
    return trajectory.usage or None
