"""gpo_engine: GPO prompt optimization for Dotprompt `.prompt` files.

    from gpo_engine import optimize
    result = optimize("examples/sentiment/sentiment.prompt", steps=3)
    print(result.best_dev.value, result.best)

Importing this package is cheap: the model layer (litellm, ~3 s) loads only
when a function here that calls a model runs, so editors can use the file
parsers without paying for it.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from gpo_engine.events import EventSink, ignore

if TYPE_CHECKING:
    from gpo_engine.evaluate import EvalResult
    from gpo_engine.optimizer import Result

__version__ = "0.1.0"


def optimize(
    path: str | Path,
    *,
    on_event: EventSink = ignore,
    restart: bool = False,
    cache_dir: Path | None = None,
    use_cache: bool = True,
    **overrides: Any,
) -> Result:
    """Run (or resume) GPO on a `.prompt` file; settings in `overrides` win over its frontmatter."""
    from gpo_engine.optimizer import optimize_task
    from gpo_engine.task import load_task, open_llm, open_store

    task = load_task(path, **overrides)

    async def run() -> Result:
        llm = open_llm(task, cache_dir=cache_dir, use_cache=use_cache)
        store = open_store(cache_dir)
        try:
            return await optimize_task(task, llm, store, on_event=on_event, restart=restart)
        finally:
            store.close()
            llm.close()

    return asyncio.run(run())


def evaluate_file(
    path: str | Path, *, cache_dir: Path | None = None, use_cache: bool = True, **overrides: Any
) -> dict[str, EvalResult]:
    """Score the file's current prompt on its dev and test rows."""
    from gpo_engine.task import load_task, open_llm, score

    task = load_task(path, **overrides)

    async def run() -> dict[str, EvalResult]:
        llm = open_llm(task, cache_dir=cache_dir, use_cache=use_cache)
        try:
            dev = await score(task, llm, task.prompt.body, task.examples.dev)
            test = await score(task, llm, task.prompt.body, task.examples.test)
            return {"dev": dev, "test": test}
        finally:
            llm.close()

    return asyncio.run(run())


__all__ = ["__version__", "evaluate_file", "optimize"]
