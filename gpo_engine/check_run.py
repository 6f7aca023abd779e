"""Checking many prompts at once (`gpo check` over a folder or a monorepo).

The prompts are scored concurrently, in one event loop, through one model
layer (`LLM`) per call configuration (gpo.concurrency, gpo.timeout,
gpo.max_cost): every prompt with the same configuration shares it, so a
model has one adaptive concurrency limit for the whole check. The calls of
different prompts overlap (one prompt's last slow rows no longer leave the
model idle, and a prompt with fewer rows than the limit no longer wastes the
rest), yet a model never has more than its gpo.concurrency calls in flight,
and a 429 slows every prompt down together instead of each prompt learning
the provider's limit on its own.

Each prompt still gets its own usage (calls, cache hits, tokens, cost) and
its own gpo.max_cost cap, as when it had a model layer of its own: the shared
layer's usage is booked to the prompt whose task makes the call
(`PerPromptUsage`, through a context variable each prompt's task sets).
Results come back in the order the prompts were given.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from gpo_engine.check import CheckResult, check_task
from gpo_engine.llm import LLM
from gpo_engine.lockfile import lock_path
from gpo_engine.usage import ModelUsage, Usage

# The usage of the prompt whose check is running in this task (and the row tasks it starts).
_BOOKED: ContextVar[Usage | None] = ContextVar("gpo_check_usage", default=None)


class PerPromptUsage(Usage):
    """A shared LLM's usage, kept per prompt: every record the LLM reads or updates
    (calls, tokens, the cost its spend cap compares) is the running prompt's.
    Outside any prompt's task, the records are this object's own."""

    def __init__(self) -> None:
        self._own: dict[str, ModelUsage] = {}

    @property
    def per_model(self) -> dict[str, ModelUsage]:
        booked = _BOOKED.get()
        return self._own if booked is None else booked.per_model

    @per_model.setter
    def per_model(self, value: dict[str, ModelUsage]) -> None:
        self._own = value


def config_key(task: Any) -> tuple[int, float, float | None]:
    """The settings the model layer is built from: prompts that agree on them share one."""
    settings = task.settings
    return settings.concurrency, settings.timeout, settings.max_cost


def check_prompts(prompts: Sequence[Path], *, update: bool = False,
                  cache_dir: Path | None = None, api_base: str | None = None,
                  offline: bool = False) -> list[CheckResult]:
    """Check every prompt against its lock, concurrently; one result per prompt, in order.

    Every failure of one prompt (an unreadable file, a model error, --offline
    and an answer not cached) is that prompt's "error" result, never an
    exception, and never stops the others."""
    from gpo_engine.task import open_llm

    loaded = [load_or_error(path) for path in prompts]
    layers: dict[tuple[int, float, float | None], LLM] = {}
    for item in loaded:
        if not isinstance(item, CheckResult) and config_key(item) not in layers:
            layer = open_llm(item, cache_dir=cache_dir, api_base=api_base, offline=offline)
            layer.usage = PerPromptUsage()
            layers[config_key(item)] = layer
    try:
        return asyncio.run(_check_all(loaded, layers, update))
    finally:
        for layer in layers.values():
            layer.close()


def load_or_error(prompt: Path) -> Any:
    """The prompt's task, or its "error" result when the prompt or its examples cannot be read."""
    from gpo_engine.errors import ConfigError, SourceError
    from gpo_engine.task import load_task

    where = lock_path(prompt)
    try:
        return load_task(prompt)
    except SourceError as error:
        return CheckResult(prompt, where, "error", tuple(str(p) for p in error.problems))
    except ConfigError as error:
        return CheckResult(prompt, where, "error", (f"{prompt}: {error}",))


async def _check_all(loaded: Sequence[Any], layers: dict[tuple[int, float, float | None], LLM],
                     update: bool) -> list[CheckResult]:
    async def one(item: Any) -> CheckResult:
        if isinstance(item, CheckResult):
            return item
        return await check_one(item, layers[config_key(item)], update=update)

    return list(await asyncio.gather(*(one(item) for item in loaded)))


async def check_one(task: Any, llm: LLM, *, update: bool) -> CheckResult:
    """One prompt's check through a (shared) model layer, with its own usage booked.

    Runs in a task of its own (asyncio.gather makes one), so the usage it books
    is this prompt's alone, and so is that of the row tasks its scoring starts."""
    from gpo_engine.atomic import WriteError
    from gpo_engine.errors import ConfigError, ModelCallError, SpendLimitReached
    from gpo_engine.response_cache import NotCached

    booked = _BOOKED.set(Usage())
    prompt, where = task.path, lock_path(task.path)
    try:
        result = await check_task(task, llm, update=update)
    except NotCached as error:
        return CheckResult(prompt, where, "error", (
            f"--offline: the current prompt is not scored in the cache ({error})",
            f"run `gpo check {prompt}` with model access once to fill the cache"))
    except (ModelCallError, SpendLimitReached, ConfigError) as error:
        return CheckResult(prompt, where, "error", (f"{prompt}: {error}",))
    except WriteError as error:
        # --update scored the prompt (its answers are cached: a rerun is free) but
        # could not write the lock; the old lock, if any, is byte-identical.
        return CheckResult(prompt, where, "error", (str(error),))
    finally:
        _BOOKED.reset(booked)
    if result.scored:
        # The model's path is booked once per layer, to the first prompt that called it.
        for name, record in result.usage.get("per_model", {}).items():
            record["path"] = record["path"] or llm.route(name).path
    return result
