"""What a run will cost, before it starts: calls, tokens and dollars per role.

The counts follow the optimizer's loop (optimizer.py) step by step: the
initial prompt on dev, then per step a train minibatch, K optimizer samples
and K candidates on dev (racing: all on the slice, the top half on the rest),
and finally the initial and best prompts on test. Every scored answer is also
one judge call when the metric is `judge`. The estimate assumes no response
cache (a rerun is cheaper, often free) and no revision requests (each
candidate within its budget).

Tokens are estimated from the texts the calls will carry, at about four
characters a token (OpenAI's rule of thumb; no tokenizer download), and each
task answer at its full `gpo.max_tokens`, so the task model's share leans
high. Dollars come from litellm's local price map; a model it does not know
has an unknown price (None), never a guessed one. The embedded local model
runs on this machine and is free.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any

from gpo_engine import prices
from gpo_engine.direction import ScoredPrompt
from gpo_engine.errors import ConfigError
from gpo_engine.examples import Example
from gpo_engine.judge import judge_prompt
from gpo_engine.meta_prompts import Exemplar
from gpo_engine.meta_style import MetaStyle
from gpo_engine.models import is_base_model
from gpo_engine.racing import race_calls
from gpo_engine.schedule import budget_at
from gpo_engine.task import Task, row_data

CHARS_PER_TOKEN = 4
MESSAGE_OVERHEAD = 4  # tokens a chat message costs beyond its text (role, separators)
JUDGE_MAX_TOKENS = 16  # what task.metric_for gives the judge
# Default dollar amount above which `gpo optimize` asks before starting.
CONFIRM_ABOVE = 1.0

# (model, prompt tokens, completion tokens) -> dollars, or None for an unknown price
PriceFn = Callable[[str, int, int], "float | None"]


@dataclass(frozen=True)
class RoleEstimate:
    role: str  # "task" | "optimizer" | "judge" | "embedding"
    model: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    dollars: float | None  # None: litellm's price map does not know the model


@dataclass(frozen=True)
class Estimate:
    roles: tuple[RoleEstimate, ...]
    steps: int  # steps this estimate covers (the ones left when resuming)

    @property
    def calls(self) -> int:
        return sum(r.calls for r in self.roles)

    @property
    def dollars(self) -> float:
        """Dollars of the priced roles; see `unknown_price` for the rest."""
        return sum(r.dollars or 0.0 for r in self.roles)

    @property
    def unknown_price(self) -> list[str]:
        """Models that will be called and have no price (their spend is not counted)."""
        return sorted({r.model for r in self.roles if r.dollars is None and r.calls})

    def to_dict(self) -> dict[str, Any]:
        return {"steps": self.steps, "calls": self.calls, "dollars": self.dollars,
                "unknown_price": self.unknown_price,
                "roles": [asdict(r) for r in self.roles]}


def tokens(text: str) -> int:
    """Rough token count of `text` (ceil(chars / 4), at least 1)."""
    return max(1, math.ceil(len(text) / CHARS_PER_TOKEN))


def price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Dollars for these tokens from litellm's price list; None when it has no price."""
    if is_base_model(model):
        return 0.0  # the embedded model runs here
    if prompt_tokens == 0 and completion_tokens == 0:
        return 0.0
    # litellm's own price list, read without importing litellm (3 s, 200 MB).
    return prices.price(model, prompt_tokens, completion_tokens)


@dataclass(frozen=True)
class Calls:
    """Model calls of a run by role (before the response cache)."""

    task: int
    optimizer: int
    judge: int
    embedding: int


def count_calls(task: Task, *, steps_done: int = 0) -> Calls:
    """Calls the rest of a run makes; `steps_done` > 0 means resuming a saved trajectory."""
    s = task.settings
    ex = task.examples
    n_dev, n_test = len(ex.dev), len(ex.test)
    n_train = len(ex.train) or n_dev
    steps = max(0, s.steps - steps_done)
    k = s.candidates
    candidate_rows = race_calls(k, n_dev, s.race_size) if s.racing else k * n_dev
    per_step = min(s.batch_size, n_train) + candidate_rows
    initial = n_dev if steps_done == 0 else 0
    task_calls = initial + steps * per_step + 2 * n_test
    judge = task_calls if task.judge_model else 0
    embedding = steps if (s.embedding and s.retrieval == "relevance") else 0
    return Calls(task_calls, steps * k, judge, embedding)


def estimate(task: Task, *, steps_done: int = 0, price_fn: PriceFn = price) -> Estimate:
    """Calls, tokens and dollars of the rest of a run, per role."""
    calls = count_calls(task, steps_done=steps_done)
    rows = list(task.examples.examples)
    body = task.prompt.body
    roles = [_role("task", task.task_model, calls.task, _mean_task_prompt(task, rows),
                   int(task.call.params["max_tokens"]), price_fn)]
    roles.append(_role("optimizer", task.optimizer_model, calls.optimizer,
                       _meta_prompt_tokens(task), _rewrite_tokens(body), price_fn))
    if task.judge_model is not None:
        roles.append(_role("judge", task.judge_model, calls.judge, _mean_judge_prompt(rows),
                           JUDGE_MAX_TOKENS, price_fn))
    if calls.embedding and task.settings.embedding:
        roles.append(_role("embedding", task.settings.embedding, calls.embedding,
                           tokens(body), 0, price_fn))
    return Estimate(tuple(roles), max(0, task.settings.steps - steps_done))


def _role(role: str, model: str, calls: int, prompt_each: int, completion_each: int,
          price_fn: PriceFn) -> RoleEstimate:
    prompt_tokens = calls * prompt_each
    completion_tokens = calls * completion_each
    return RoleEstimate(role, model, calls, prompt_tokens, completion_tokens,
                        price_fn(model, prompt_tokens, completion_tokens))


def _mean(values: Sequence[int]) -> int:
    return math.ceil(sum(values) / len(values)) if values else 0


def _mean_task_prompt(task: Task, rows: Sequence[Example]) -> int:
    """Tokens of the task call's messages (text parts; media are not counted)."""
    body = task.prompt.body
    renderer = task.renderer
    rendered: list[int] = []
    for row in rows:
        try:
            messages = renderer.render_sync(body, row_data(row))
        except ConfigError:  # the row fails at run time too; it costs nothing
            continue
        rendered.append(sum(tokens(m.text) + MESSAGE_OVERHEAD for m in messages))
    return _mean(rendered) if rendered else tokens(body) + MESSAGE_OVERHEAD


def _mean_judge_prompt(rows: Sequence[Example]) -> int:
    # The judge sees the answer; assume one about as long as the expected one.
    return _mean([tokens(judge_prompt(r.expected, r)) for r in rows]) + MESSAGE_OVERHEAD


def _meta_prompt_tokens(task: Task) -> int:
    """Tokens of a later step's meta-prompt: k retrieved prompts, exemplars, budget."""
    body = task.prompt.body
    s = task.settings
    direction = [ScoredPrompt(body, 50.0, i) for i in range(s.k)]
    train = list(task.examples.train) or list(task.examples.dev)
    style = MetaStyle.for_model(task.optimizer_model)
    exemplars = [Exemplar(_inputs_text(e), e.expected, e.expected, False)
                 for e in train[: style.exemplars]]
    budget = budget_at(0, s.steps, s.budget)
    messages = style.meta_prompt(body, direction, exemplars, budget)
    return sum(tokens(m["content"]) + MESSAGE_OVERHEAD for m in messages)


def _rewrite_tokens(body: str) -> int:
    # A rewrite about as long as the current prompt, plus the <START>/<END> markers.
    return tokens(body) + 4


def _inputs_text(example: Example) -> str:
    return "\n".join(f"{k}: {v}" for k, v in example.inputs.items())


def describe(est: Estimate) -> list[str]:
    """Lines for a person: one per role, then the total."""
    lines = []
    for r in est.roles:
        money = "unknown price" if r.dollars is None else f"${r.dollars:.4f}"
        lines.append(f"  {r.role:<9} {r.model}: {r.calls} calls, ~{r.prompt_tokens} tokens in, "
                     f"~{r.completion_tokens} out, {money}")
    total = f"${est.dollars:.4f}"
    if est.unknown_price:
        total += f" + unknown ({', '.join(est.unknown_price)})"
    lines.append(f"  total     {est.calls} calls over {est.steps} steps, {total}")
    return lines
