"""`gpo optimize`: run GPO on a prompt file, with a progress bar per step."""

from __future__ import annotations

import argparse
import asyncio
import difflib
import json
import sys
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from gpo_engine.events import CandidateScored, Event, JobStarted, StepFinished, StepStarted
from gpo_engine.offer import Verdict
from gpo_server.commands.common import (
    EXIT_FAIL,
    EXIT_OK,
    CommandError,
    model_arguments,
    overrides,
    warn_unsent_config,
)


def register(sub: Any) -> None:
    opt = sub.add_parser("optimize", parents=[model_arguments()], help="run GPO on the prompt")
    opt.add_argument("--steps", type=int)
    opt.add_argument("--candidates", type=int)
    opt.add_argument("--optimizer-model")
    opt.add_argument("--max-cost", type=float, help="dollar cap for every model the job calls")
    opt.add_argument("--restart", action="store_true", help="discard the saved trajectory")
    opt.add_argument("--daemon", action="store_true",
                     help="run as a job of the background daemon (started if needed)")
    opt.add_argument("--wait", action="store_true",
                     help="when another run optimizes the prompt, wait for it and resume")
    opt.add_argument("--write", action="store_true", help="rewrite the file's prompt body")
    opt.add_argument("--yes", "-y", action="store_true",
                     help="start without asking, whatever the cost estimate")
    opt.add_argument("--confirm-above", type=float, metavar="DOLLARS",
                     help="ask before starting when the estimate is above this (default 1.00)")
    opt.set_defaults(run=run)


def run(args: argparse.Namespace, err: Console) -> int:
    from gpo_engine.task import load_task

    task = load_task(args.path, **overrides(args))
    warn_unsent_config(task, err)
    if args.daemon:
        return _finish(args, err, task, *_start(args, err, task))
    # One run per prompt, on this machine and (with a shared cache) across machines: a
    # second one refuses at once, or with --wait waits and then resumes from the steps
    # the first one saved.
    # --write happens under the lock too: a waiting run starts after this file is final.
    with _run_lock(args, err, task) as held:
        estimate, result = _start(args, err, task, held)
        code = _finish(args, err, task, estimate, result)
    if held.lost:  # it stopped at a step boundary rather than race another machine
        err.print(Text.assemble(("error", "red"), " ", f"{args.path}: stopped after step "
                                f"{result.steps_done}: lost its run lock ({held.lost}); run "
                                "it again to resume"), highlight=False, soft_wrap=True)
        return EXIT_FAIL
    return code


def _run_lock(args: argparse.Namespace, err: Console, task: Any) -> Any:
    from gpo_engine.models import default_cache_dir
    from gpo_engine.runlock import prompt_lock
    from gpo_engine.trajectory import trajectory_key

    def waiting(who: object) -> None:
        err.print(f"{args.path} is being optimized by {who}; waiting for it to end",
                  markup=False, highlight=False, soft_wrap=True)

    cache = args.cache_dir or default_cache_dir()
    return prompt_lock(cache, trajectory_key(task.fingerprint()), str(args.path),
                       wait=args.wait, on_wait=waiting)


def _start(args: argparse.Namespace, err: Console, task: Any,
           held: Any = None) -> tuple[Any, Any]:
    from gpo_engine.optimizer import optimize_task
    from gpo_engine.task import open_llm, open_store

    estimate = _approve_estimate(task, args, err)
    progress = _ProgressView(err, task.settings.candidates, task.settings.max_cost)

    async def run() -> Any:
        llm = open_llm(task, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                       api_base=args.api_base)
        store = open_store(args.cache_dir)
        cancel = asyncio.Event()
        if held is not None:
            held.link(cancel)  # a run lock lost mid-run ends the run at its next step
        try:
            with progress:
                return await optimize_task(task, llm, store, on_event=progress.on_event,
                                           restart=args.restart, cancel=cancel)
        finally:
            store.close()
            llm.close()

    if args.daemon:
        from gpo_server.commands.daemon import optimize_via_daemon

        with progress:
            result = optimize_via_daemon(args, err, progress.on_event)
    else:
        result = asyncio.run(run())
    return estimate, result


def _finish(args: argparse.Namespace, err: Console, task: Any, estimate: Any,
            result: Any) -> int:
    problem = _write_back(args, task, result) if args.write and result.offered else None
    written = args.write and result.offered and problem is None
    # The result is reported even when the write failed: it was paid for.
    if args.json:
        out = {**result.to_dict(), "written": written, "estimate": estimate.to_dict()}
        if problem is not None:
            out["error"] = problem
        print(json.dumps(out, indent=2))
    else:
        _print_result(result, written)
    if problem is not None:
        err.print(Text.assemble(("error", "red"), " ", problem), highlight=False, soft_wrap=True)
        return EXIT_FAIL
    return EXIT_OK


def _write_back(args: argparse.Namespace, task: Any, result: Any) -> str | None:
    """--write: the best prompt into the file's body, atomically; why not, when it was not."""
    from gpo_engine.atomic import WriteError, write_text
    from gpo_engine.promptfile import load_prompt, with_body

    # Re-read: the user may have edited the file while the job ran.
    now = load_prompt(args.path)
    if now.body != task.prompt.body:
        return f"{args.path}: the file changed during the run; not writing"
    try:
        write_text(args.path, with_body(now, result.best))
    except WriteError as error:
        return str(error)
    return None


def _approve_estimate(task: Any, args: argparse.Namespace, err: Console) -> Any:
    """Print what the run will cost; the Estimate when it may start. CommandError when
    it must not: over the dollar cap, or over the confirmation threshold without a
    yes (--yes, or an answer on a terminal)."""
    from gpo_engine.cost import CONFIRM_ABOVE, describe, estimate
    from gpo_engine.task import open_store
    from gpo_engine.trajectory import trajectory_key

    done = 0
    if not args.restart:  # a resumed run only pays for the steps left
        store = open_store(args.cache_dir)
        try:
            saved = store.load(trajectory_key(task.fingerprint()))
        finally:
            store.close()
        done = saved.steps_done if saved is not None else 0
    est = estimate(task, steps_done=done)
    err.print("estimate (before cached answers):", markup=False, highlight=False)
    for line in describe(est):
        err.print(line, markup=False, highlight=False)
    cap = task.settings.max_cost
    if cap is not None and est.unknown_price:
        err.print(f"note: the ${cap:.4f} cap cannot count {', '.join(est.unknown_price)} "
                  "(no price in litellm's map)", style="yellow", markup=False)
    if cap is not None and est.dollars > cap:
        raise CommandError(f"refusing to start: the estimate ${est.dollars:.4f} is over the "
                           f"cap ${cap:.4f} (--max-cost / gpo.max_cost); raise the cap or "
                           "lower gpo.steps / gpo.candidates")
    threshold = CONFIRM_ABOVE if args.confirm_above is None else args.confirm_above
    if est.dollars <= threshold or args.yes:
        return est
    if not sys.stdin.isatty():
        raise CommandError(f"refusing to start: the estimate ${est.dollars:.4f} is over "
                           f"${threshold:.2f} and there is no terminal to confirm on; "
                           "pass --yes")
    err.print(f"start it? the estimate is ${est.dollars:.4f} [y/N] ", end="", markup=False,
              highlight=False)
    answer = sys.stdin.readline().strip().lower()
    if answer not in ("y", "yes"):
        raise CommandError("not started")
    return est


class _ProgressView:
    """A rich progress bar per step, fed by the optimizer's events."""

    def __init__(self, console: Console, candidates: int, max_cost: float | None = None) -> None:
        self._max_cost = max_cost
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                                  TimeElapsedColumn(), console=console)
        self._candidates = candidates
        self._task_id: Any = None

    def __enter__(self) -> _ProgressView:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def on_event(self, event: Event) -> None:
        p = self._progress
        if isinstance(event, JobStarted):
            where = f"resuming at step {event.resumed_at + 1}" if event.resumed_at else "start"
            p.console.print(f"{event.path}: {where}; initial dev "
                            f"{event.initial_dev:.1f}% on {event.dev_n} rows", markup=False)
        elif isinstance(event, StepStarted):
            self._task_id = p.add_task(f"step {event.step + 1}/{event.total_steps} "
                                       f"(budget {event.budget} words)",
                                       total=self._candidates, note="generating")
        elif isinstance(event, CandidateScored) and self._task_id is not None:
            p.update(self._task_id, advance=1, note=f"last {event.score:.0f}%")
        elif isinstance(event, StepFinished) and self._task_id is not None:
            step = "none" if event.step_dev is None else f"{event.step_dev:.1f}%"
            spent = f"${event.cost:.4f}"
            if self._max_cost is not None:
                spent += f" of ${self._max_cost:.4f}"
            note = (f"step best {step}, best so far {event.best_dev:.1f}%, "
                    f"{event.rejected} dropped, {spent}")
            if event.message:
                note += f" ({event.message})"
            p.update(self._task_id, completed=self._candidates, note=note)


def _print_result(result: Any, written: bool) -> None:
    out = Console()
    table = Table(title=f"{result.path}: {result.steps_done}/{result.total_steps} steps")
    for col in ("split", "before", "after"):
        table.add_column(col)
    for name, before, after in (("dev", result.initial_dev, result.best_dev),
                                ("test", result.initial_test, result.best_test)):
        if before is None or after is None:
            continue
        table.add_row(f"{name} (n={before.n})", _fmt(before), _fmt(after))
    out.print(table)
    usage = result.usage
    out.print(f"words changed: {result.distance}   calls: {usage['calls']}   "
              f"cache hits: {usage['cache_hits']}   tokens: {usage['prompt_tokens']} in, "
              f"{usage['completion_tokens']} out   cost: ${usage['cost']:.4f}", highlight=False)
    if result.rejected:
        dropped = ", ".join(f"{k} {v}" for k, v in sorted(result.rejected.items()))
        out.print(f"dropped candidates: {dropped}", highlight=False)
    if result.stopped:
        out.print(f"stopped early: {result.stopped}", style="yellow", markup=False)
    if not result.improved:
        out.print("no candidate beat the current prompt on dev; nothing to propose")
        return
    best = (result.guard or {}).get("best")
    verdict = Verdict.from_json(best) if best else Verdict("untested")
    if verdict.worse:
        out.print(f"not proposing the best prompt: on the held-out test rows it scores "
                  f"{verdict.delta:+.1f} points against the current prompt "
                  f"({_p(verdict.p_value)}, paired {verdict.method} test), significantly "
                  "worse: it overfits the dev rows", style="yellow", markup=False)
        return
    if verdict.verdict == "ok":
        out.print(f"held-out test: {verdict.delta:+.1f} points ({_p(verdict.p_value)}, "
                  f"n = {verdict.n}), {verdict.words()}", markup=False, highlight=False)
    diff = difflib.unified_diff(result.initial.splitlines(keepends=True),
                                result.best.splitlines(keepends=True),
                                fromfile="current", tofile="proposed")
    sys.stdout.write("".join(diff) + ("\n" if not result.best.endswith("\n") else ""))
    if written:
        out.print(f"written to {result.path}", markup=False, highlight=False)
    else:
        out.print("run again with --write to apply it")


def _fmt(s: Any) -> str:
    return f"{s.value:.1f}% [{s.low:.0f}-{s.high:.0f}]"


def _p(value: float) -> str:
    return "p < 0.001" if value < 0.001 else f"p = {value:.3f}"
