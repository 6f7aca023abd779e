"""Throughput against the limit: one full GPO step at concurrency C = 1, 4, 16, 64.

The model server (tests/model_server.py, in a subprocess so its CPU time is
not the client's) answers every call after a fixed latency and refuses
(429) more than C calls at once. One GPO step runs through the real engine
(gpo_engine.optimizer.optimize_task, the llm layer with its per-model limit
set to C, litellm, HTTP): a train minibatch, 8 optimizer calls, and 8
candidates x 32 dev rows with racing off, as the paper scores them. The step
is timed from its StepStarted to its StepFinished event, and compared with
the ideal ceil(calls / C) x latency, which assumes every slot is busy all the
time. The response cache is off, so every call is real.

    python bench/throughput.py                  # latency 200 ms, C = 1 4 16 64
    python bench/throughput.py --concurrency 16 --repeat 5   # the target's median run
    python bench/throughput.py --quick          # smoke size
"""

from __future__ import annotations

import argparse
import asyncio
import math
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import servers

TARGET = 1.15
TARGET_C = 16


async def one_step(api_base: str, folder: Path, concurrency: int, args: argparse.Namespace
                   ) -> dict[str, Any]:
    from gpo_engine.events import Event, StepFinished, StepStarted
    from gpo_engine.optimizer import optimize_task
    from gpo_engine.task import load_task, open_llm, open_store

    prompt = servers.write_task(folder, train=args.batch_size, dev=args.dev, test=0, extra={
        "gpo.steps": 1, "gpo.candidates": args.candidates, "gpo.racing": False,
        "gpo.batch_size": args.batch_size, "gpo.concurrency": concurrency})
    task = load_task(prompt)
    llm = open_llm(task, use_cache=False, api_base=api_base)
    llm.api_key = "test"
    store = open_store(folder / "cache")
    marks: dict[str, tuple[float, int]] = {}

    def on_event(event: Event) -> None:
        if isinstance(event, StepStarted):
            marks["start"] = (time.perf_counter(), llm.usage.calls)
        elif isinstance(event, StepFinished):
            marks["end"] = (time.perf_counter(), llm.usage.calls)

    try:
        await optimize_task(task, llm, store, on_event=on_event)
    finally:
        store.close()
        llm.close()
    (t0, c0), (t1, c1) = marks["start"], marks["end"]
    calls = c1 - c0
    ideal = math.ceil(calls / concurrency) * args.latency
    # A step's calls come in three waves, each waiting for the one before: the train
    # minibatch, the optimizer calls, the candidates on dev. No client beats this.
    waves = (args.batch_size, args.candidates, args.candidates * args.dev)
    phased = sum(math.ceil(n / concurrency) for n in waves) * args.latency
    rate_limited = sum(u.rate_limited for u in llm.usage.per_model.values())
    return {"C": concurrency, "calls": calls, "wall": t1 - t0, "ideal": ideal,
            "ratio": (t1 - t0) / ideal, "phased": phased, "rate_limited": rate_limited,
            "retries": llm.usage.retries}


def run(args: argparse.Namespace) -> list[dict[str, Any]]:
    """One row per C: the run with the median wall time of `--repeat` runs,
    with the lowest and highest ratio of those runs beside it."""
    rows = []
    for concurrency in args.concurrency:
        runs = []
        for _ in range(args.repeat):
            with servers.spawn("simple", args.latency, concurrency) as api_base, \
                    tempfile.TemporaryDirectory(prefix="gpo-throughput-") as scratch:
                runs.append(asyncio.run(one_step(api_base, Path(scratch), concurrency, args)))
            print(f"  C={concurrency}: {runs[-1]['wall']:.2f} s", file=sys.stderr, flush=True)
        runs.sort(key=lambda r: r["wall"])
        row = dict(runs[(len(runs) - 1) // 2])
        row["lowest"], row["highest"] = runs[0]["ratio"], runs[-1]["ratio"]
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 4, 16, 64])
    parser.add_argument("--candidates", type=int, default=8)
    parser.add_argument("--dev", type=int, default=32, help="dev rows")
    parser.add_argument("--batch-size", type=int, default=8, help="train minibatch")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per C; the table shows the median run and the range")
    parser.add_argument("--quick", action="store_true",
                        help="smoke size: 4 x 8, 20 ms, C = 1 16, 2 runs each")
    args = parser.parse_args(argv)
    if args.quick:
        args.latency, args.candidates, args.dev, args.batch_size = 0.02, 4, 8, 4
        args.concurrency = [1, 16]
        args.repeat = 2  # so the smoke test goes through the median and range too
    print(f"# throughput: one GPO step, {args.candidates} candidates x {args.dev} dev rows, "
          f"latency {args.latency * 1000:.0f} ms, {args.repeat} run(s) per C\n")
    print(f"machine: {common.machine()}\n")
    rows = run(args)
    print(common.table(
        ["C", "calls", "wall s", "ideal s", "wall / ideal", "range of runs",
         "three-wave ideal s", "wall / three-wave", "429s", "retries"],
        [[r["C"], r["calls"], r["wall"], r["ideal"], r["ratio"],
          f"{r['lowest']:.2f}-{r['highest']:.2f}", r["phased"], r["wall"] / r["phased"],
          r["rate_limited"], r["retries"]] for r in rows]))
    print()
    pick = next((r for r in rows if r["C"] == TARGET_C), rows[-1])
    print(common.headline(f"wall / ideal at C={pick['C']}", pick["ratio"],
                          f"target <= {TARGET}x at C={TARGET_C}, 200 ms",
                          (pick["ratio"] <= TARGET if pick["C"] == TARGET_C and args.latency == 0.2
                           else None)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
