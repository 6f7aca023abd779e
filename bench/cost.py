"""Cost: calls and tokens of a run, a rerun, a killed-and-resumed run; racing's savings.

The test model server runs the scripted "noisy" models (bench/servers.py): an
optimizer that proposes a new instruction each call, and a task model whose
accuracy depends on the instruction, noisily but deterministically.

1. Runs of `python -m gpo_server.cli optimize PROMPT --api-base ... --json`
   (subprocesses, the real CLI):
   - a full run with an empty response cache;
   - the same command again (target: zero model calls);
   - with a second empty cache, a run SIGKILLed halfway through its middle
     step (the request count at which the full run was halfway through that
     step), then the same command again, which resumes. Target: no finished
     evaluation is asked again. An evaluation is finished when its answer is
     in the response cache at the moment of the kill; the cache is read
     after the kill and every request of the resumed run is checked against it.
   Calls and tokens are counted by the server (tokens as the server reports
   them in `usage`: words of the messages and of the answer).
2. Racing over many steps (in process, engine API): each step's candidates
   are scored with racing (a dev slice first, then full dev for the top half)
   and then, for comparison, all of them on full dev. Reported: task-model
   calls spent on candidates with racing against full evaluation of every
   candidate (target: half), and how often racing picks a candidate with the
   best full-dev score (target: 90% of steps). The scripted candidates' latent
   accuracies are spread over 0.2-0.9 and, harder, over 0.45-0.75; the
   headline takes the harder one.

    python bench/cost.py
    python bench/cost.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import servers
from scripted_models import is_meta_prompt

RACING_CALLS_TARGET = 0.5
AGREEMENT_TARGET = 0.9


@dataclass
class Ledger:
    """What the server answered: (arrival index, messages, max_tokens, tokens) per request."""

    answers: servers.ScriptedAnswers
    requests: list[dict[str, Any]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, messages: list[dict[str, Any]]) -> str:
        text = self.answers(messages)
        words = sum(len(str(m.get("content", "")).split()) for m in messages)
        with self.lock:
            self.requests.append({"messages": messages, "tokens": words + len(text.split()),
                                  "meta": is_meta_prompt(messages)})
        return text

    def mark(self) -> int:
        with self.lock:
            return len(self.requests)

    def since(self, start: int) -> list[dict[str, Any]]:
        with self.lock:
            return self.requests[start:]


def cli(prompt: Path, api_base: str, cache: Path) -> list[str]:
    return [sys.executable, "-m", "gpo_server.cli", "optimize", str(prompt), "--api-base",
            api_base, "--cache-dir", str(cache), "--json", "--yes"]


def cli_env() -> dict[str, str]:
    return {**os.environ, "OPENAI_API_KEY": "test"}


def run_cli(prompt: Path, api_base: str, cache: Path) -> dict[str, Any]:
    done = subprocess.run(cli(prompt, api_base, cache), env=cli_env(), capture_output=True,
                          text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(f"gpo optimize failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout)


def step_starts(requests: list[dict[str, Any]], candidates: int) -> list[int]:
    """Request index at which each step's optimizer calls began (bursts of `candidates`)."""
    starts, seen = [], 0
    for index, request in enumerate(requests):
        if request["meta"]:
            if seen % candidates == 0:
                starts.append(index)
            seen += 1
    return starts


def cached_keys(cache: Path) -> set[str]:
    import diskcache

    from gpo_engine.response_cache import RESPONSES_DIR

    with diskcache.Cache(str(cache / RESPONSES_DIR)) as store:
        return {str(k) for k in store.iterkeys()}


def task_key(request: dict[str, Any], body: dict[str, Any], api_base: str) -> str:
    """The response-cache key the engine uses for a task-model request (task.task_fn)."""
    from gpo_engine.response_cache import cache_key

    return cache_key({"kind": "completion", "model": "openai/bench",
                      "messages": request["messages"], "temperature": body["temperature"],
                      "max_tokens": body["max_tokens"], "stop": None, "sample": 0,
                      "api_base": api_base})


def kill_and_resume(args: argparse.Namespace, prompt: Path, scratch: Path) -> dict[str, Any]:
    runs: dict[str, Any] = {}
    ledger = Ledger(servers.ScriptedAnswers("noisy"))
    with servers.ThreadedServer(ledger, latency=args.latency) as server:
        full_cache = scratch / "cache-full"
        out = run_cli(prompt, server.api_base, full_cache)
        full = ledger.since(0)
        runs["full run"] = {"calls": len(full), "tokens": sum(r["tokens"] for r in full),
                            "client": out["usage"]["calls"]}
        mark = ledger.mark()
        out2 = run_cli(prompt, server.api_base, full_cache)
        again = ledger.since(mark)
        runs["second identical run"] = {"calls": len(again),
                                        "tokens": sum(r["tokens"] for r in again),
                                        "client": out2["usage"]["calls"]}

    starts = step_starts(full, args.candidates)
    middle = args.steps // 2
    end = starts[middle + 1] if middle + 1 < len(starts) else len(full)
    kill_at = (starts[middle] + end) // 2

    ledger = Ledger(servers.ScriptedAnswers("noisy"))
    with servers.ThreadedServer(ledger, latency=args.latency) as server:
        cache = scratch / "cache-killed"
        proc = subprocess.Popen(cli(prompt, server.api_base, cache), env=cli_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        while server.requests < kill_at and proc.poll() is None:
            time.sleep(0.0005)
        in_flight = server.in_flight
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        time.sleep(args.latency + 0.2)  # let the handlers of the dead client's calls finish
        killed = ledger.since(0)
        arrived = server.requests
        finished = cached_keys(cache)
        mark, bodies_mark = ledger.mark(), len(server.bodies)
        out3 = run_cli(prompt, server.api_base, cache)
        resumed = ledger.since(mark)
        bodies = server.bodies[bodies_mark:]
    # Bodies arrive in the same order as the ledger records answers only per request,
    # so match each task request of the resumed run to its body by content.
    body_of = {json.dumps(b["messages"], sort_keys=True): b for b in bodies}
    repeated = sum(
        1 for r in resumed if not r["meta"] and task_key(
            r, body_of[json.dumps(r["messages"], sort_keys=True)], server.api_base) in finished)
    answered_before = {json.dumps(r["messages"], sort_keys=True) for r in killed if not r["meta"]}
    asked_again = sum(1 for r in resumed if not r["meta"]
                      and json.dumps(r["messages"], sort_keys=True) in answered_before)
    runs[f"killed in step {middle + 1} of {args.steps}"] = {
        "calls": arrived, "tokens": sum(r["tokens"] for r in killed), "client": "-"}
    runs["resumed"] = {"calls": len(resumed), "tokens": sum(r["tokens"] for r in resumed),
                       "client": out3["usage"]["calls"]}
    runs["killed + resumed"] = {
        "calls": arrived + len(resumed),
        "tokens": sum(r["tokens"] for r in killed) + sum(r["tokens"] for r in resumed),
        "client": "-"}
    return {"runs": runs, "kill_at": kill_at, "in_flight": in_flight, "repeated": repeated,
            "asked_again": asked_again, "steps_at_kill": out3["steps_done"],
            "same_best": out3["best"] == out["best"]}


async def racing(args: argparse.Namespace, scratch: Path, low: float, high: float
                 ) -> dict[str, Any]:
    from gpo_engine.optimizer import optimize_task
    from gpo_engine.task import load_task, open_llm, open_store, score

    agree = steps = racing_calls = full_calls = 0
    with servers.ThreadedServer(servers.ScriptedAnswers("noisy", low, high)) as server:
        for seed in range(args.racing_runs):
            folder = scratch / f"racing-{low}-{high}-{seed}"
            prompt = servers.write_task(folder, train=16, dev=args.dev, test=0, extra={
                "gpo.steps": args.racing_steps, "gpo.candidates": 8, "gpo.racing": True,
                "gpo.race_size": args.race_size, "gpo.batch_size": 4, "gpo.seed": seed,
                "gpo.concurrency": 16})
            task = load_task(prompt)
            llm = open_llm(task, cache_dir=folder / "cache", api_base=server.api_base)
            llm.api_key = "test"
            store = open_store(folder / "cache")
            try:
                await optimize_task(task, llm, store)
                trajectory = store.load(_key(task))
                assert trajectory is not None
                dev = task.examples.dev
                for record in trajectory.steps:
                    raced = [c for c in record.candidates if c.status in ("scored", "raced_out")]
                    if len(raced) < 2:
                        continue
                    steps += 1
                    racing_calls += sum(c.dev_n for c in raced)
                    full_calls += len(raced) * len(dev)
                    full = [(await score(task, llm, c.text, dev)).score for c in raced]
                    chosen = next(i for i, c in enumerate(raced) if c.text == record.chosen)
                    agree += full[chosen] >= max(full)
            finally:
                store.close()
                llm.close()
    return {"steps": steps, "agree": agree, "racing_calls": racing_calls,
            "full_calls": full_calls}


def _key(task: Any) -> str:
    from gpo_engine.trajectory import trajectory_key

    return trajectory_key(task.fingerprint())


def _spread(text: str) -> tuple[float, float]:
    low, _, high = text.partition("-")
    try:
        pair = float(low), float(high)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected LOW-HIGH, got {text!r}") from None
    if not 0 <= pair[0] < pair[1] <= 1:
        raise argparse.ArgumentTypeError(f"need 0 <= LOW < HIGH <= 1, got {text!r}")
    return pair


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=5, help="steps of the CLI runs")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--dev", type=int, default=32, help="dev rows")
    parser.add_argument("--race-size", type=int, default=8)
    parser.add_argument("--latency", type=float, default=0.02, help="server seconds per call")
    parser.add_argument("--racing-runs", type=int, default=4, help="runs (seeds) for racing")
    parser.add_argument("--racing-steps", type=int, default=10, help="steps per racing run")
    parser.add_argument("--spreads", nargs="+", type=_spread, default=[(0.2, 0.9), (0.45, 0.75)],
                        metavar="LOW-HIGH",
                        help="ranges of the candidates' latent accuracy for racing "
                        "(default 0.2-0.9 0.45-0.75)")
    parser.add_argument("--quick", action="store_true", help="smoke size")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.candidates, args.dev = 2, 2, 16
        args.racing_runs, args.racing_steps = 1, 2
        args.spreads = args.spreads[-1:]
    print(f"# cost: CLI runs of {args.steps} steps x {args.candidates} candidates, "
          f"{args.dev} dev rows; racing over {args.racing_runs} x {args.racing_steps} steps "
          f"of 8 candidates\n")
    print(f"machine: {common.machine()}\n")
    with tempfile.TemporaryDirectory(prefix="gpo-cost-") as scratch:
        prompt = servers.write_task(Path(scratch) / "task", train=16, dev=args.dev, test=16,
                                    extra={"gpo.steps": args.steps,
                                           "gpo.candidates": args.candidates,
                                           "gpo.race_size": args.race_size,
                                           "gpo.batch_size": 4})
        runs = kill_and_resume(args, prompt, Path(scratch))
        races = [(spread, asyncio.run(racing(args, Path(scratch), *spread)))
                 for spread in args.spreads]
    print(common.table(["run", "model calls (server)", "tokens (server)",
                        "calls (client's usage)"],
                       [[name, r["calls"], r["tokens"], r["client"]]
                        for name, r in runs["runs"].items()]))
    full = runs["runs"]["full run"]["calls"]
    both = runs["runs"]["killed + resumed"]["calls"]
    print(f"\nsecond identical run: {runs['runs']['second identical run']['calls']} model calls "
          "(target 0)")
    print(f"killed at request {runs['kill_at']} ({runs['in_flight']} in flight); the resumed "
          f"run asked again {runs['repeated']} finished evaluations (target 0) and "
          f"{runs['asked_again']} evaluations the server had answered but the killed client "
          f"had not stored; killed + resumed cost {both - full:+d} calls against the full run; "
          f"same best prompt as the full run: {runs['same_best']}\n")
    rows = []
    for (low, high), race in races:
        share = race["racing_calls"] / race["full_calls"] if race["full_calls"] else float("nan")
        agreement = race["agree"] / race["steps"] if race["steps"] else float("nan")
        rows.append([f"{low:.2f}-{high:.2f}", race["steps"], race["racing_calls"],
                     race["full_calls"], share,
                     f"{race['agree']}/{race['steps']} ({agreement:.0%})"])
    print(common.table(
        ["latent accuracy range", "steps", "candidate calls, racing",
         "candidate calls, full dev", "racing / full", "same winner"], rows))
    print()
    # The headline takes the hardest case: the narrowest spread of candidate quality.
    (low, high), race = min(races, key=lambda item: item[0][1] - item[0][0])
    share = race["racing_calls"] / race["full_calls"] if race["full_calls"] else float("nan")
    agreement = race["agree"] / race["steps"] if race["steps"] else float("nan")
    met = share <= RACING_CALLS_TARGET and agreement >= AGREEMENT_TARGET
    print(common.headline(f"racing calls / full-evaluation calls (same winner in "
                          f"{agreement:.0%} of steps, latent accuracy {low:.2f}-{high:.2f})",
                          share,
                          f"target <= {RACING_CALLS_TARGET}x with >= {AGREEMENT_TARGET:.0%} "
                          "same winner", met if not args.quick else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
