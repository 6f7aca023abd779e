"""A scripted task model and optimizer model for the test model server.

The task model answers a capital-city question correctly only when the
prompt it receives mentions the word "capital", so a test can tell a better
prompt from a worse one; the optimizer model hands out scripted answers in
turn. Together they make optimization runs deterministic, fast and free,
while every call still goes through litellm and HTTP.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from tests.prompt_files import write_prompt

CAPITALS = {
    "France": "Paris", "Japan": "Tokyo", "Italy": "Rome", "Egypt": "Cairo", "Canada": "Ottawa",
    "Kenya": "Nairobi", "Peru": "Lima", "Norway": "Oslo", "Spain": "Madrid", "Germany": "Berlin",
    "Portugal": "Lisbon", "Greece": "Athens", "Cuba": "Havana", "Ireland": "Dublin",
    "Austria": "Vienna", "Hungary": "Budapest", "Poland": "Warsaw", "Sweden": "Stockholm",
    "Finland": "Helsinki", "Chile": "Santiago", "Ghana": "Accra", "Nepal": "Kathmandu",
    "Iran": "Tehran", "Iraq": "Baghdad",
}

INITIAL_BODY = "Tell me about the country.\nCountry: {{country}}\nAnswer:\n"
GOOD = "<START>Name the capital city of the country.<END>"


def is_meta_prompt(messages: list[dict[str, Any]]) -> bool:
    return any("<START>" in str(m.get("content", "")) for m in messages)


class ScriptedModels:
    """`answer(messages)` for ModelServer: the optimizer's replies cycle through `proposals`."""

    def __init__(self, proposals: Iterable[str] = (GOOD,)) -> None:
        self._proposals = itertools.cycle(list(proposals))
        self._lock = threading.Lock()
        self.meta_calls = 0
        self.task_calls = 0

    def answer(self, messages: list[dict[str, Any]]) -> str:
        if is_meta_prompt(messages):
            with self._lock:
                self.meta_calls += 1
                return next(self._proposals)
        self.task_calls += 1
        prompt = str(messages[-1].get("content", ""))
        if "capital" not in prompt.lower():
            return "It is a lovely place to visit."
        for country, city in CAPITALS.items():
            if country in prompt:
                return f"{city}\nIt is also the largest city."
        return "I do not know."


def write_capitals(folder: Path, *, model: str = "openai/scripted", steps: int = 2,
                   candidates: int = 3, extra: str = "", body: str = INITIAL_BODY) -> Path:
    """A capitals prompt file and its example set (8 rows pinned to each split)."""
    return write_prompt(
        folder, "capitals",
        f"---\nmodel: {model}\ngpo.metric: contains\ngpo.steps: {steps}\n"
        f"gpo.candidates: {candidates}\ngpo.batch_size: 4\ngpo.race_size: 4\n{extra}---\n{body}",
        capital_rows())


def capital_rows(splits: Iterable[str] = ("train", "dev", "test")) -> list[dict[str, str]]:
    """A row for every country of CAPITALS, its split taken in turn from `splits`."""
    turn = itertools.cycle(splits)
    return [{"country": c, "expected": city, "split": next(turn)} for c, city in CAPITALS.items()]


async def run_task(task: Any, api_base: str, cache: Path, *, fast_retries: bool = False,
                   backoff: float | None = None, **kw: Any) -> Any:
    """optimize_task on `task` against a test model server, with its own cache; closed after.

    fast_retries: back off 10 ms and retry once, for tests that inject outages.
    backoff: the base of the backoff between retries, in seconds (the retries stay as set).
    """
    from gpo_engine.optimizer import optimize_task
    from gpo_engine.task import open_llm, open_store

    llm = open_llm(task, cache_dir=cache, api_base=api_base)
    if fast_retries:
        llm.backoff_base, llm.max_retries = 0.01, 1
    if backoff is not None:
        llm.backoff_base = backoff
    store = open_store(cache)
    try:
        return await optimize_task(task, llm, store, **kw)
    finally:
        store.close()
        llm.close()
