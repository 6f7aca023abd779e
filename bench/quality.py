"""Quality: GPO against its baselines, same models, same call budget.

For each task directory in BBH format (train.jsonl / eval.jsonl / test.jsonl
with `input` and `target`; eval is the dev set that selects candidates) this
runs, through the real engine (gpo_engine.optimizer.optimize_task):

  initial         the starting prompt, not optimized
  opro            an OPRO-style optimizer as a configuration of the engine:
                  importance retrieval (the top-scored prompts of the
                  trajectory, k=20 as in OPRO's meta-prompt) and a fixed budget
                  of 1000 words (no edit limit, no decay)
  gpo-recency     GPO, the k-1 latest prompts as the update direction
  gpo-importance  GPO, the k-1 top-scored prompts
  gpo-relevance   GPO, the k-1 most similar prompts (the paper's best)
  gpo-no-decay    GPO relevance with a fixed budget (the initial 50 words every step)

and prints the held-out test accuracy of each method's best-on-dev prompt per
task and on average. Every method gets the same steps and candidates per step
(so the same number of optimizer calls) and the same racing; the table of
model requests shows what each one actually spent.

How `opro` differs from the paper's OPRO (Yang et al., 2023): its meta-prompt
lists the step winners of the trajectory (the engine's history), not every
instruction ever scored; the engine's meta-prompt still shows the current
prompt and a budget sentence ("at most 1000 words", which never binds); the
exemplars are the current prompt's wrong answers on a train minibatch rather
than random training rows; candidates go through the engine's racing and
guards (lost template variables, leaks) like every other method; and the run
is a few steps of a few candidates, not OPRO's 200 steps of 8.

    python bench/quality.py                       # the five BBH tasks, embedded model
    python bench/quality.py --data DIR --model openai/gpt-4o-mini --optimizer-model openai/gpt-4o
    python bench/quality.py --quick               # smoke size
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

INITIAL_BODY = "Answer the question.\nQ: {{input}}\nA:"
SPLIT_FILES = (("train.jsonl", "train"), ("eval.jsonl", "dev"), ("test.jsonl", "test"))
# A budget no rewrite reaches: OPRO has no edit limit.
UNBOUNDED = {"initial": 1000, "final": 1000, "decay": "fixed", "warmup": 0}


@dataclass(frozen=True)
class Method:
    name: str
    overrides: dict[str, Any]


def methods(k: int) -> list[Method]:
    return [
        Method("opro", {"retrieval": "importance", "k": 20, "budget": UNBOUNDED}),
        Method("gpo-recency", {"retrieval": "recency", "k": k}),
        Method("gpo-importance", {"retrieval": "importance", "k": k}),
        Method("gpo-relevance", {"retrieval": "relevance", "k": k}),
        Method("gpo-no-decay", {"retrieval": "relevance", "k": k,
                                "budget": {"decay": "fixed"}}),
    ]


def spread(rows: list[dict[str, Any]], count: int | None) -> list[dict[str, Any]]:
    """`count` rows evenly spaced over the file (all when count is None or too big)."""
    if count is None or count >= len(rows):
        return rows
    return [rows[(i * len(rows)) // count] for i in range(count)]


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise SystemExit(f"{path}:{number}: not JSON: {exc}") from exc
    return rows


def find_tasks(data: Path, names: list[str] | None) -> list[Path]:
    if not data.is_dir():
        raise SystemExit(f"--data {data}: no such directory")
    found = sorted(p for p in data.iterdir()
                   if p.is_dir() and all((p / f).is_file() for f, _ in SPLIT_FILES))
    if names:
        by_name = {p.name: p for p in found}
        missing = [n for n in names if n not in by_name]
        if missing:
            raise SystemExit(f"no task {', '.join(missing)} in {data} "
                             f"(found: {', '.join(by_name) or 'none'})")
        found = [by_name[n] for n in names]
    if not found:
        raise SystemExit(f"{data} holds no task folder with {', '.join(f for f, _ in SPLIT_FILES)}")
    return found


def write_task(source: Path, into: Path, args: argparse.Namespace) -> Path:
    """A prompt file and its example set, splits pinned to BBH's files."""
    into.mkdir(parents=True, exist_ok=True)
    limits = {"train": None, "dev": args.dev_rows, "test": args.test_rows}
    lines = []
    for filename, split in SPLIT_FILES:
        for row in spread(read_jsonl(source / filename), limits[split]):
            lines.append(json.dumps({"input": row["input"], "target": row["target"],
                                     "split": split}) + "\n")
    (into / "task.examples.jsonl").write_text("".join(lines), encoding="utf-8")
    front = [f"gpo.metric: {args.metric}", f"gpo.max_tokens: {args.max_tokens}"]
    if args.model:
        front.insert(0, f"model: {args.model}")
    prompt = into / "task.prompt"
    prompt.write_text("---\n" + "\n".join(front) + "\n---\n" + INITIAL_BODY, encoding="utf-8")
    return prompt


async def run_task(prompt: Path, args: argparse.Namespace, cache: Path) -> dict[str, Any]:
    from gpo_engine.events import StepFinished
    from gpo_engine.optimizer import optimize_task
    from gpo_engine.task import load_task, open_llm, open_store, score

    common_overrides: dict[str, Any] = {
        "steps": args.steps, "candidates": args.candidates, "batch_size": args.batch_size,
        "race_size": args.race_size, "racing": not args.no_racing,
        "optimizer": args.optimizer_model, "concurrency": args.concurrency,
    }
    out: dict[str, Any] = {}
    base = load_task(prompt, **common_overrides)
    llm = open_llm(base, cache_dir=cache, api_base=args.api_base)
    try:
        started = time.monotonic()
        test = await score(base, llm, base.prompt.body, base.examples.test)
        dev = await score(base, llm, base.prompt.body, base.examples.dev)
        out["initial"] = {"test": test.score, "dev": dev.score, "requests": 0, "calls": 0,
                          "seconds": time.monotonic() - started, "prompt": base.prompt.body,
                          "test_n": test.n}
    finally:
        llm.close()
    store = open_store(cache)
    try:
        for method in methods(args.k):
            task = load_task(prompt, **common_overrides, **method.overrides)
            llm = open_llm(task, cache_dir=cache, api_base=args.api_base)
            started = time.monotonic()
            through_steps = {"requests": 0}

            def on_event(event: Any, llm: Any = llm, seen: dict[str, int] = through_steps
                         ) -> None:
                # Requests up to the end of the last step: the optimization's budget,
                # without the final dev/test evaluation of the result.
                if isinstance(event, StepFinished):
                    seen["requests"] = llm.usage.calls + llm.usage.cache_hits

            try:
                result = await optimize_task(task, llm, store, on_event=on_event)
            finally:
                llm.close()
            usage = result.usage
            out[method.name] = {
                "test": result.best_test.value if result.best_test else float("nan"),
                "dev": result.best_dev.value,
                "test_n": result.best_test.n if result.best_test else 0,
                # Requests the method made, whether the shared cache answered them or not:
                # what it would cost run alone.
                "requests": usage["calls"] + usage["cache_hits"], "calls": usage["calls"],
                "optimization_requests": through_steps["requests"],
                "tokens": usage["prompt_tokens"] + usage["completion_tokens"],
                "seconds": time.monotonic() - started, "prompt": result.best,
                "stopped": result.stopped, "rejected": result.rejected,
            }
            print(f"  {prompt.parent.name} {method.name}: test {out[method.name]['test']:.1f} "
                  f"dev {result.best_dev.value:.1f} ({out[method.name]['seconds']:.0f} s)",
                  file=sys.stderr, flush=True)
    finally:
        store.close()
    return out


def report(results: dict[str, dict[str, Any]], names: list[str]) -> tuple[str, float]:
    tasks = list(results)
    rows: list[list[object]] = []
    for task in tasks:
        rows.append([task, *[results[task][m]["test"] for m in names]])
    averages = {m: sum(results[t][m]["test"] for t in tasks) / len(tasks) for m in names}
    rows.append(["**average**", *[averages[m] for m in names]])
    print("Test accuracy (%) of each method's best-on-dev prompt\n")
    print(common.table(["task", *names], rows))
    print("\nDev accuracy (%) of the chosen prompt\n")
    print(common.table(["task", *names],
                       [[t, *[results[t][m]["dev"] for m in names]] for t in tasks]))
    print("\nModel requests per method, summed over tasks. Cache hits count: they are what "
          "the method would cost run alone. 'optimization' is the initial dev scoring and "
          "every step; 'all' adds the final dev and test evaluation of the result. Tokens "
          "and seconds are what this run spent (methods share the response cache, so a "
          "step another method already ran costs nothing here).\n")
    optimized = names[1:]
    print(common.table(
        ["method", "optimization requests", "all requests", "tokens", "seconds"],
        [[m, sum(results[t][m].get("optimization_requests", 0) for t in tasks),
          sum(results[t][m]["requests"] for t in tasks),
          sum(results[t][m].get("tokens", 0) for t in tasks),
          sum(results[t][m]["seconds"] for t in tasks)] for m in optimized]))
    print("\nBest prompt per task and method\n")
    print(common.table(["task", "method", "prompt"],
                       [[t, m, results[t][m]["prompt"].replace("\n", " \u23ce ")
                         .replace("|", "\\|")] for t in tasks for m in optimized]))
    print()
    initial = averages["initial"]
    ratio = averages["gpo-relevance"] / initial if initial else float("nan")
    return (f"average test accuracy initial {initial:.1f} -> gpo-relevance "
            f"{averages['gpo-relevance']:.1f}, opro {averages['opro']:.1f}"), ratio


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=common.ROOT.parent / "shared" / "bbh",
                        help="folder of task folders in BBH format (default ../shared/bbh)")
    parser.add_argument("--tasks", help="comma-separated task folder names (default: all)")
    parser.add_argument("--model", help="task model, any litellm model (default: embedded)")
    parser.add_argument("--optimizer-model", help="optimizer model (default: the task model)")
    parser.add_argument("--api-base", help="OpenAI-compatible endpoint for the models")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--k", type=int, default=2,
                        help="prompts in the update direction for the GPO methods")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--race-size", type=int, default=8)
    parser.add_argument("--no-racing", action="store_true")
    parser.add_argument("--dev-rows", type=int, default=16,
                        help="dev rows used, evenly spaced over eval.jsonl (default 16)")
    parser.add_argument("--test-rows", type=int, default=48,
                        help="test rows used, evenly spaced over test.jsonl (default 48)")
    parser.add_argument("--all-rows", action="store_true", help="use every dev and test row")
    parser.add_argument("--metric", default="exact")
    parser.add_argument("--max-tokens", type=int, default=8,
                        help="task model answer length (the answer is its first words)")
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--cache-dir", type=Path,
                        help="response cache and trajectories (default: a fresh temporary "
                             "folder; give one to resume an interrupted run for free)")
    parser.add_argument("--json", type=Path, help="also write every number to this file")
    parser.add_argument("--quick", action="store_true",
                        help="smoke size: the first task, 1 step, 2 candidates, 4 dev/test rows")
    args = parser.parse_args(argv)
    if args.all_rows:
        args.dev_rows = args.test_rows = None
    if args.quick:
        args.steps, args.candidates, args.dev_rows, args.test_rows = 1, 2, 4, 4
        args.batch_size = 2
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    tasks = find_tasks(args.data, args.tasks.split(",") if args.tasks else None)
    if args.quick:
        tasks = tasks[:1]
    print(f"# quality: {len(tasks)} task(s) from {args.data}\n")
    print(f"machine: {common.machine()}")
    print(f"settings: steps {args.steps}, candidates {args.candidates}, k {args.k}, "
          f"batch {args.batch_size}, racing {'off' if args.no_racing else args.race_size}, "
          f"dev rows {args.dev_rows or 'all'}, test rows {args.test_rows or 'all'}, "
          f"metric {args.metric}, max_tokens {args.max_tokens}, "
          f"model {args.model or 'embedded'}, optimizer {args.optimizer_model or 'task model'}\n")
    names = ["initial", *[m.name for m in methods(args.k)]]
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="gpo-quality-") as scratch:
        cache = args.cache_dir or Path(scratch) / "cache"
        results: dict[str, dict[str, Any]] = {}
        for source in tasks:
            prompt = write_task(source, Path(scratch) / source.name, args)
            results[source.name] = asyncio.run(run_task(prompt, args, cache))
    elapsed = time.monotonic() - started
    what, ratio = report(results, names)
    if args.json:
        args.json.write_text(json.dumps({"results": results, "seconds": elapsed,
                                         "machine": common.machine()}, indent=1, default=str))
    print(f"wall time: {elapsed:.0f} s")
    print(common.headline(what + " (gpo-relevance / initial)", ratio,
                          "no set target: the paper's gain is with 7B+ models", None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
