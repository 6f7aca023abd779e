"""`gpo eval`: score the file's current prompt on dev and test."""

from __future__ import annotations

import argparse
import asyncio
import json
from typing import Any

from rich.console import Console
from rich.table import Table

from gpo_server.commands.common import EXIT_OK, model_arguments, overrides, warn_unsent_config


def register(sub: Any) -> None:
    ev = sub.add_parser("eval", parents=[model_arguments()],
                        help="score the current prompt on dev and test")
    ev.set_defaults(run=run)


# Failure kinds listed under the table per split; the JSON output has them all.
_SHOWN_REASONS = 5


def _reason_line(part: str, reasons: dict[str, int]) -> str:
    """'dev: 3 unparseable JSON, 1 fields differ' for the rows that lost points."""
    shown = [f"{count} {reason}" for reason, count in list(reasons.items())[:_SHOWN_REASONS]]
    rest = sum(list(reasons.values())[_SHOWN_REASONS:])
    if rest:
        shown.append(f"{rest} other")
    return f"{part}: " + ", ".join(shown)


def run(args: argparse.Namespace, err: Console) -> int:
    from gpo_engine.evaluate import gather_all
    from gpo_engine.scoring import count_reasons
    from gpo_engine.task import load_task, open_llm, score

    task = load_task(args.path, **overrides(args))
    warn_unsent_config(task, err)

    async def run() -> dict[str, Any]:
        llm = open_llm(task, cache_dir=args.cache_dir, use_cache=not args.no_cache,
                       api_base=args.api_base)
        try:
            out: dict[str, Any] = {"path": str(task.path), "model": task.task_model}
            parts = ("dev", "test")
            with err.status(f"scoring {task.path.name} with {task.task_model}"):
                # One wave over both parts: the model's limit is shared, so test rows
                # fill the slots dev leaves free instead of waiting for dev's last answer.
                results = await gather_all(
                    score(task, llm, task.prompt.body, task.examples.part(part))
                    for part in parts)
                for part, res in zip(parts, results, strict=True):
                    low, high = res.interval()
                    out[part] = {"score": round(res.score, 2), "n": res.n,
                                 "correct": sum(o.score for o in res.outcomes),
                                 "low": round(low, 2), "high": round(high, 2),
                                 "failures": res.failures,
                                 # rows short of a full score, by the kind of
                                 # reason ("unparseable JSON", ...), most first
                                 "reasons": dict(count_reasons(
                                     o.reason for o in res.outcomes if o.score < 1.0))}
            out["usage"] = llm.usage.to_dict()
            return out
        finally:
            llm.close()

    out = asyncio.run(run())
    if args.json:
        print(json.dumps(out, indent=2))
        return EXIT_OK
    table = Table(title=f"{task.path}  ({task.task_model})")
    for col in ("split", "n", "score", "95% interval", "failed calls"):
        table.add_column(col)
    for part in ("dev", "test"):
        r = out[part]
        table.add_row(part, str(r["n"]), f"{r['score']:.1f}%",
                      f"{r['low']:.1f} - {r['high']:.1f}", str(r["failures"]))
    console = Console()
    console.print(table)
    for part in ("dev", "test"):
        if out[part]["reasons"]:
            # markup off: a reason quotes model output, which may hold [brackets].
            console.print(_reason_line(part, out[part]["reasons"]), markup=False,
                          highlight=False)
    return EXIT_OK
