"""A prompt file made ready to run: its examples, models, metric and model calls.

This is the one place that turns a `.prompt` path plus overrides into what
the evaluator and the optimizer need, so the CLI, the daemon and the library
entry points all resolve models, metrics and example sets the same way.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gpo_engine import models
from gpo_engine.callspec import (
    CallSpec,
    Sendable,
    call_spec,
    litellm_model,
    sendable,
    with_instruction,
)
from gpo_engine.errors import Problem, SourceError
from gpo_engine.evaluate import EvalResult, TaskFn, evaluate
from gpo_engine.examples import Example, ExampleSet, find_examples_path, load_examples
from gpo_engine.llm import LLM
from gpo_engine.metrics import get_metric
from gpo_engine.models import default_cache_dir, resolve_model
from gpo_engine.promptfile import PromptFile, load_prompt
from gpo_engine.rendering import PromptRenderer, RowData, to_chat
from gpo_engine.scoring import Metric
from gpo_engine.settings import Settings
from gpo_engine.trajectory import TrajectoryStore


@dataclass(frozen=True)
class Task:
    prompt: PromptFile
    examples: ExampleSet
    settings: Settings  # the file's settings with the caller's overrides applied
    task_model: str
    optimizer_model: str
    judge_model: str | None
    call: CallSpec  # the task call's parameters, from the frontmatter's config and output

    @property
    def path(self) -> Path:
        return self.prompt.path

    @functools.cached_property
    def renderer(self) -> PromptRenderer:
        """One Dotprompt for the whole run: compiled templates are kept per text."""
        return self.prompt.renderer()

    @functools.cached_property
    def partials(self) -> dict[str, str]:
        """The partial files the template reads, name -> text: what the task model
        is sent changes with them, so scores and baselines depend on them too."""
        renderer = self.prompt.renderer()
        renderer.render_sync(self.prompt.body, RowData({v: "x" for v in self.prompt.variables}))
        return {name: path.read_text(encoding="utf-8")
                for name, path in sorted(renderer.partials_read.items())}

    def sources(self) -> str:
        """The file's text and, after it, every partial it reads ('' added when none)."""
        return self.prompt.source + "".join(f"\n\0partial {name}\n{text}"
                                            for name, text in self.partials.items())

    @functools.cached_property
    def sendable(self) -> Sendable:
        """The task call's parameters as the provider takes them (asks litellm once)."""
        return sendable(self.call, models.supported_params(self.task_model),
                        models.supports_response_schema(self.task_model))

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
            # Only when the file asks for more than gpo's defaults, so the keys of
            # existing trajectories stay as they were.
            **({"call": self.call.fingerprint()} if self.call.fingerprint() else {}),
            **({"partials": self.partials} if self.partials else {}),
        }


def load_task(path: str | Path, **overrides: Any) -> Task:
    """Parse the prompt and its example set, apply overrides, resolve the models.

    Raises SourceError (with every located problem) or ConfigError.
    """
    prompt = load_prompt(path)
    changes = {k: v for k, v in overrides.items() if v is not None}
    settings = prompt.settings.replace(**changes) if changes else prompt.settings
    examples_path = find_examples_path(prompt.path, settings.examples)
    examples = load_examples(examples_path, prompt.variables, settings.split,
                             input_schema=prompt.input_schema, defaults=prompt.input_defaults)
    task_model = litellm_model(resolve_model(settings.model))
    optimizer_model = (litellm_model(resolve_model(settings.optimizer)) if settings.optimizer
                       else task_model)
    judge_model = (settings.judge or optimizer_model) if settings.metric == "judge" else None
    if not examples.dev:
        raise SourceError([Problem(examples.path, 1, 1,
                                   "the dev split is empty: add rows or pin some with split: dev")])
    call = call_spec(task_model, prompt.config, max_tokens=settings.max_tokens,
                     max_tokens_override="max_tokens" in prompt.explicit or "max_tokens" in changes,
                     output=prompt.output)
    return Task(prompt, examples, settings, task_model, optimizer_model, judge_model, call)


def task_fn(task: Task, llm: LLM) -> TaskFn:
    """The task model as a function of a template and a row: the call the
    application makes (Dotprompt's messages, the frontmatter's config)."""
    send = task.sendable

    async def ask(template: str, example: Example) -> str:
        messages = await request_messages(task, template, example)
        done = await llm.complete(task.task_model, messages, **send.complete_args())
        return done.text

    return ask


async def request_messages(task: Task, template: str, example: Example) -> list[dict[str, Any]]:
    """The chat messages of the task call for one row (ConfigError if it cannot render)."""
    rendered = await task.renderer.render(template, row_data(example))
    return with_instruction(to_chat(rendered, task.examples.path.parent),
                            task.sendable.instruction)


def render_request(task: Task, template: str, row: RowData) -> dict[str, Any]:
    """The task call for one row as plain JSON: model, messages, parameters and notes
    (`gpo render`). Media files are read as the call reads them."""
    rendered = task.renderer.render_sync(template, row)
    send = task.sendable
    messages = with_instruction(to_chat(rendered, task.examples.path.parent), send.instruction)
    return {"model": task.task_model, "messages": messages, "params": send.params(),
            "notes": list(send.notes)}


def row_data(example: Example) -> RowData:
    return RowData(input=example.render_values, messages=example.messages)


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
