"""A prompt file made ready to run: its examples, models, metric and model calls.

This is the one place that turns a `.prompt` path plus overrides into what
the evaluator and the optimizer need, so the CLI, the daemon and the library
entry points all resolve models, metrics and example sets the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpo_engine.errors import Problem, SourceError
from gpo_engine.evaluate import EvalResult, TaskFn, evaluate
from gpo_engine.examples import Example, ExampleSet, find_examples_path, load_examples
from gpo_engine.llm import LLM, default_cache_dir, resolve_model
from gpo_engine.metrics import Metric, get_metric
from gpo_engine.promptfile import PromptFile, Settings, load_prompt
from gpo_engine.trajectory import TrajectoryStore


@dataclass(frozen=True)
class Task:
    prompt: PromptFile
    examples: ExampleSet
    settings: Settings  # the file's settings with the caller's overrides applied
    task_model: str
    optimizer_model: str
    judge_model: str | None

    @property
    def path(self) -> Path:
        return self.prompt.path

    def fingerprint(self) -> dict[str, Any]:
        """Everything that decides results; the trajectory key is its hash."""
        return {
            "path": str(self.path.resolve()),
            "settings": self.settings.fingerprint(),
            "task_model": self.task_model,
            "optimizer_model": self.optimizer_model,
            "judge_model": self.judge_model,
            "examples": self.examples.content_hash,
            "initial": self.prompt.body,
        }


def load_task(path: str | Path, **overrides: Any) -> Task:
    """Parse the prompt and its example set, apply overrides, resolve the models.

    Raises SourceError (with every located problem) or ConfigError.
    """
    prompt = load_prompt(path)
    changes = {k: v for k, v in overrides.items() if v is not None}
    settings = prompt.settings.replace(**changes) if changes else prompt.settings
    examples_path = find_examples_path(prompt.path, settings.examples)
    examples = load_examples(examples_path, prompt.variables, settings.split)
    task_model = resolve_model(settings.model)
    optimizer_model = resolve_model(settings.optimizer) if settings.optimizer else task_model
    judge_model = (settings.judge or optimizer_model) if settings.metric == "judge" else None
    if not examples.dev:
        raise SourceError([Problem(examples.path, 1, 1,
                                   "the dev split is empty: add rows or pin some with split: dev")])
    return Task(prompt, examples, settings, task_model, optimizer_model, judge_model)


def task_fn(task: Task, llm: LLM) -> TaskFn:
    """The task model as a function of the rendered prompt (greedy, like the paper's scorer)."""

    async def ask(prompt: str) -> str:
        # The file's final newline is a property of text files, not of the prompt;
        # a base model reads a prompt ending "Answer:\n" very differently from one
        # ending "Answer:" (it starts a new paragraph instead of answering).
        messages = [{"role": "user", "content": prompt.rstrip()}]
        done = await llm.complete(task.task_model, messages, temperature=0.0,
                                  max_tokens=task.settings.max_tokens)
        return done.text

    return ask


def metric_for(task: Task, llm: LLM) -> Metric:
    if task.judge_model is None:
        return get_metric(task.settings.metric, pattern=task.settings.pattern,
                          fields=task.settings.fields)
    judge_model = task.judge_model

    async def judge(prompt: str) -> str:
        done = await llm.complete(judge_model, [{"role": "user", "content": prompt}],
                                  temperature=0.0, max_tokens=16)
        return done.text

    return get_metric("judge", judge=judge)


async def score(task: Task, llm: LLM, text: str, rows: Sequence[Example]) -> EvalResult:
    """Score template `text` (the file's body or a candidate) on `rows`."""
    if not rows:
        return EvalResult(())
    return await evaluate(task_fn(task, llm), text, rows, metric_for(task, llm))




def open_llm(task: Task, *, cache_dir: Path | None = None, use_cache: bool = True,
             api_base: str | None = None, offline: bool = False) -> LLM:
    """The model layer for this task's settings; responses cached under cache_dir.

    offline: answer from the cache only (a miss raises llm.NotCached)."""
    root = cache_dir or default_cache_dir()
    return LLM(cache_dir=root if use_cache else None, concurrency=task.settings.concurrency,
               timeout=task.settings.timeout, max_cost=task.settings.max_cost,
               api_base=api_base, offline=offline)


def open_store(cache_dir: Path | None = None) -> TrajectoryStore:
    return TrajectoryStore((cache_dir or default_cache_dir()) / "trajectories")
