"""The optimizer's settings: the `gpo.*` keys of a `.prompt` frontmatter.

Flat dotted extension keys (`gpo.metric: exact`), which Dotprompt's own tools
leave alone and hand back in `ext`. Each value is checked where it is written
(frontmatter) or given (`Settings.replace`), and every problem carries the
line and column of its key, all of them at once.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from gpo_engine.errors import ConfigError, Problem
from gpo_engine.metrics import METRICS
from gpo_engine.target import TARGETS

RETRIEVALS = ("relevance", "recency", "importance")
DECAYS = ("cosine", "linear", "fixed")


@dataclass(frozen=True)
class BudgetSettings:
    initial: int = 50  # words allowed to change at step 0 (paper default)
    final: int = 10  # words at the last step
    decay: str = "cosine"  # "cosine" | "linear" | "fixed"
    warmup: int = 0  # steps held at `initial` before the decay starts


@dataclass(frozen=True)
class Settings:
    model: str | None = None  # frontmatter `model`: the task model
    optimizer: str | None = None  # gpo.optimizer; None means the task model
    metric: str = "exact"  # one of METRICS
    pattern: str | None = None  # gpo.pattern: regex for metric "regex" (required then)
    judge: str | None = None  # gpo.judge: model for metric "judge"; None -> optimizer model
    # gpo.fields: the expected fields metric "json" scores, dotted paths for
    # nested ones ("address.city"); None scores every field.
    fields: tuple[str, ...] | None = None
    examples: str | None = None  # gpo.examples: path relative to the prompt file
    partials: str | None = None  # gpo.partials: a folder of `_name.prompt` partials
    steps: int = 12  # gpo.steps
    candidates: int = 8  # gpo.candidates
    k: int = 3  # gpo.k: prompts retrieved per step (paper: 3)
    retrieval: str = "relevance"  # gpo.retrieval: relevance | recency | importance
    embedding: str | None = None  # gpo.embedding: litellm embedding model; None -> rapidfuzz
    target: str = "system"  # gpo.target: the message the optimizer rewrites (one of TARGETS)
    budget: BudgetSettings = field(default_factory=BudgetSettings)
    temperature: float = 1.0  # gpo.temperature: optimizer sampling temperature (paper code: 1.0)
    max_tokens: int = 48  # gpo.max_tokens: task model answer length
    batch_size: int = 8  # gpo.batch_size: train minibatch evaluated per step
    racing: bool = True  # gpo.racing
    race_size: int = 8  # gpo.race_size: dev rows in the racing slice
    max_cost: float | None = None  # gpo.max_cost, dollars for the whole job
    concurrency: int = 4  # gpo.concurrency: in-flight calls per model
    timeout: float = 60.0  # gpo.timeout: seconds per model call
    seed: int = 0  # gpo.seed
    split: tuple[float, float, float] = (1 / 3, 1 / 3, 1 / 3)  # gpo.split: train/dev/test
    # `gpo check`: a drop fails when a paired test says it is significant at
    # gpo.check_alpha, or when it is larger than gpo.check_tolerance points.
    check_alpha: float = 0.05
    check_tolerance: float = 5.0

    def replace(self, **changes: object) -> Settings:
        """A copy with `changes` applied and checked like frontmatter values.

        `budget` may be a BudgetSettings or a mapping of some of its fields
        (merged onto the current budget). Raises ConfigError listing every
        bad value.
        """
        errors: list[str] = []
        values: dict[str, object] = {}
        for name, value in changes.items():
            if name == "model":
                if value is not None and not isinstance(value, str):
                    errors.append(f"model must be a model name, got {value!r}")
                else:
                    values[name] = value
                continue
            if name not in _FIELDS:
                errors.append(_unknown_message(name, [*_FIELDS, "model"], prefix=""))
                continue
            if name == "budget":
                raw: object = (
                    dataclasses.asdict(value) if isinstance(value, BudgetSettings) else value
                )
                if not isinstance(raw, Mapping):
                    errors.append(f"gpo.budget must be a mapping, got {_show(value)}")
                    continue
                budget, budget_errors = _check_budget(
                    {str(k): v for k, v in raw.items()}, self.budget
                )
                errors.extend(message for _, message in budget_errors)
                if budget is not None:
                    values[name] = budget
                continue
            checked, message = _check_field(name, value)
            if message is not None:
                errors.append(message)
            else:
                values[name] = checked
        if errors:
            raise ConfigError("; ".join(errors))
        result = dataclasses.replace(self, **values)  # type: ignore[arg-type]
        cross = [message for _, message in _cross_check(result)]
        if cross:
            raise ConfigError("; ".join(cross))
        return result

    def fingerprint(self) -> dict[str, object]:
        """Every setting that can change a run's results, as plain JSON values.

        Left out: where the examples live (their content hash is keyed
        separately), and concurrency, timeout and max_cost, which change how
        fast or how far a run goes but not what a step computes, and the
        check_* settings, which only judge a score after the fact.
        """
        return {
            "model": self.model,
            "optimizer": self.optimizer,
            "metric": self.metric,
            "pattern": self.pattern,
            "judge": self.judge,
            "steps": self.steps,
            "candidates": self.candidates,
            "k": self.k,
            "retrieval": self.retrieval,
            "embedding": self.embedding,
            "budget": dataclasses.asdict(self.budget),
            "temperature": self.temperature,
            "max_tokens": self.max_tokens,
            "batch_size": self.batch_size,
            "racing": self.racing,
            "race_size": self.race_size,
            "seed": self.seed,
            "split": list(self.split),
            # Only when set: a new key would change every trajectory key and
            # orphan the runs saved before gpo.fields existed.
            **({"fields": list(self.fields)} if self.fields is not None else {}),
            # Only when not the default, for the same reason: the runs saved so far
            # hold whole bodies with real scores, valid to resume under the default.
            **({"target": self.target} if self.target != "system" else {}),
        }


# ---------------------------------------------------------------------------
# Settings checks. Each returns (normalized value, None) or (None, message);
# the same code checks frontmatter values and Settings.replace() arguments.

_INT_MINIMUM = {
    "steps": 1,
    "candidates": 1,
    "k": 1,
    "max_tokens": 1,
    "batch_size": 1,
    "race_size": 1,
    "concurrency": 1,
    "seed": 0,
}
_OPTIONAL_TEXT = ("optimizer", "pattern", "judge", "examples", "embedding", "partials")
_CHOICES = {"metric": METRICS, "retrieval": RETRIEVALS, "target": TARGETS}
_FIELDS = tuple(f.name for f in dataclasses.fields(Settings) if f.name != "model")
_BUDGET_FIELDS = tuple(f.name for f in dataclasses.fields(BudgetSettings))


def _show(value: object) -> str:
    return "null" if value is None else repr(value)


def _is_number(value: object) -> bool:
    # bool is an int subclass; `gpo.steps: yes` must not pass as 1.
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_int(key: str, value: object, minimum: int) -> tuple[Any, str | None]:
    if not isinstance(value, int) or isinstance(value, bool):
        return None, f"{key} must be a whole number >= {minimum}, got {_show(value)}"
    if value < minimum:
        return None, f"{key} must be >= {minimum}, got {value}"
    return value, None


def _check_field(name: str, value: object) -> tuple[Any, str | None]:
    key = f"gpo.{name}"
    if name in _INT_MINIMUM:
        return _check_int(key, value, _INT_MINIMUM[name])
    if name in _CHOICES:
        choices = _CHOICES[name]
        if value not in choices:
            label = "metric" if name == "metric" else name
            shown = value if isinstance(value, str) else _show(value)
            return None, f"unknown {label} '{shown}'; choose one of {', '.join(choices)}"
        return value, None
    if name in _OPTIONAL_TEXT:
        if value is None:
            return None, None
        if not isinstance(value, str) or not value.strip():
            return None, f"{key} must be a non-empty text, got {_show(value)}"
        if name == "pattern":
            try:
                re.compile(value)
            except re.error as error:
                return None, f"gpo.pattern is not a valid regular expression: {error}"
        return value, None
    if name == "racing":
        if not isinstance(value, bool):
            return None, f"gpo.racing must be true or false, got {_show(value)}"
        return value, None
    if name == "temperature":
        if not _is_number(value) or not math.isfinite(float(value)) or float(value) < 0:  # type: ignore[arg-type]
            return None, f"gpo.temperature must be a number >= 0, got {_show(value)}"
        return float(value), None  # type: ignore[arg-type]
    if name in ("timeout", "max_cost"):
        if value is None and name == "max_cost":
            return None, None
        if not _is_number(value) or not math.isfinite(float(value)) or float(value) <= 0:  # type: ignore[arg-type]
            return None, f"{key} must be a number > 0, got {_show(value)}"
        return float(value), None  # type: ignore[arg-type]
    if name == "split":
        return _check_split(value)
    if name == "fields":
        return _check_fields(value)
    if name == "check_alpha":
        if not _is_number(value) or not 0 < float(value) < 1:  # type: ignore[arg-type]
            return None, f"gpo.check_alpha must be a number between 0 and 1, got {_show(value)}"
        return float(value), None  # type: ignore[arg-type]
    if name == "check_tolerance":
        if not _is_number(value) or not 0 <= float(value) <= 100:  # type: ignore[arg-type]
            return None, (
                f"gpo.check_tolerance must be a number of points from 0 to 100, got {_show(value)}"
            )
        return float(value), None  # type: ignore[arg-type]
    raise AssertionError(f"no check for setting {name}")  # budget is checked by _check_budget


def _check_split(value: object) -> tuple[Any, str | None]:
    message = (
        "gpo.split must be three positive numbers (train, dev, test) summing to 1, "
        f"got {_show(value)}"
    )
    if not isinstance(value, (list, tuple)) or len(value) != 3:
        return None, message
    if not all(_is_number(v) and math.isfinite(float(v)) and v > 0 for v in value):
        return None, message
    numbers = tuple(float(v) for v in value)
    if abs(sum(numbers) - 1.0) > 1e-6:
        return None, f"gpo.split must sum to 1, got {sum(numbers):g}"
    return numbers, None


def _check_fields(value: object) -> tuple[Any, str | None]:
    """gpo.fields: null (every field) or a non-empty list of dotted field paths."""
    if value is None:
        return None, None
    message = (
        "gpo.fields must be a non-empty list of field names (dotted paths such as "
        f"address.city for nested fields), got {_show(value)}"
    )
    if not isinstance(value, (list, tuple)) or not value:
        return None, message
    names = [name.strip() if isinstance(name, str) else "" for name in value]
    # "a..b" or ".a" would name no field at all and silently score nothing.
    if not all(name and all(name.split(".")) for name in names):
        return None, message
    return tuple(names), None


def _check_budget(
    raw: Mapping[str, object], base: BudgetSettings
) -> tuple[BudgetSettings | None, list[tuple[str | None, str]]]:
    """Check budget fields; errors carry the sub-key they belong to (None: the whole budget)."""
    errors: list[tuple[str | None, str]] = []
    values: dict[str, object] = {}
    for sub, value in raw.items():
        if sub not in _BUDGET_FIELDS:
            unknown = _unknown_message(f"gpo.budget.{sub}", _BUDGET_FIELDS, "gpo.budget.")
            errors.append((sub, unknown))
        elif sub == "decay":
            if value not in DECAYS:
                shown = value if isinstance(value, str) else _show(value)
                errors.append((sub, f"unknown decay '{shown}'; choose one of {', '.join(DECAYS)}"))
            else:
                values[sub] = value
        else:
            checked, message = _check_int(f"gpo.budget.{sub}", value, 0)
            if message is not None:
                errors.append((sub, message))
            else:
                values[sub] = checked
    if errors:
        return None, errors
    budget = dataclasses.replace(base, **values)  # type: ignore[arg-type]
    if budget.initial < budget.final:
        return None, [
            (
                None,
                f"gpo.budget: initial ({budget.initial}) must be >= final ({budget.final})",
            )
        ]
    return budget, []


def _cross_check(settings: Settings) -> list[tuple[str, str]]:
    """Checks that involve more than one setting, as (setting name, message)."""
    if settings.metric == "regex" and settings.pattern is None:
        return [("metric", "metric 'regex' needs gpo.pattern: a regular expression")]
    return []


def _unknown_message(key: str, known: tuple[str, ...] | list[str], prefix: str) -> str:
    candidates = [prefix + name for name in known]
    close = difflib.get_close_matches(key, candidates, n=1)
    if close:
        return f"unknown setting {key}; did you mean {close[0]}?"
    return f"unknown setting {key}; known settings: {', '.join(candidates)}"


# ---------------------------------------------------------------------------
# Frontmatter


def key_locations(yaml_text: str, first_line: int) -> dict[str, tuple[int, int, Any]]:
    """Top-level key -> (line, column, value node), lines counted in the whole file."""
    try:
        root = yaml.compose(yaml_text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:  # parse_document accepted it, so this should not happen
        return {}
    found: dict[str, tuple[int, int, Any]] = {}
    if isinstance(root, yaml.MappingNode):
        for key_node, value_node in root.value:
            if isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                found[str(key_node.value)] = (first_line + mark.line, mark.column + 1, value_node)
    return found


def node_key_locations(node: Any, line_offset: int) -> dict[str, tuple[int, int]]:
    found: dict[str, tuple[int, int]] = {}
    if isinstance(node, yaml.MappingNode):
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                mark = key_node.start_mark
                found[str(key_node.value)] = (line_offset + mark.line, mark.column + 1)
    return found


def settings_from(
    raw: Mapping[str, object], model: str | None, yaml_text: str, first_line: int, path: Path
) -> tuple[Settings, list[Problem]]:
    locations = key_locations(yaml_text, first_line)
    problems: list[Problem] = []

    def where(key: str) -> tuple[int, int]:
        line, column, _ = locations.get(key, (1, 1, None))
        return line, column

    def add(key: str, message: str) -> None:
        line, column = where(key)
        problems.append(Problem(path, line, column, message))

    values: dict[str, object] = {}
    budget_raw: dict[str, object] = {}
    budget_where: dict[str, tuple[int, int]] = {}  # budget field -> its location
    budget_key: str | None = None  # the key the whole-budget errors point at
    for key, value in raw.items():
        if key == "gpo":
            add(
                key,
                "a nested 'gpo:' block is ignored by Dotprompt; "
                "write flat dotted keys such as 'gpo.metric: exact'",
            )
            continue
        if not key.startswith("gpo."):
            continue
        name = key[len("gpo.") :]
        if name == "budget":
            budget_key = budget_key or key
            if not isinstance(value, Mapping):
                add(
                    key,
                    "gpo.budget must be a mapping such as "
                    f"{{initial: 50, final: 10, decay: cosine}}, got {_show(value)}",
                )
                continue
            node = locations.get(key, (1, 1, None))[2]
            nested = node_key_locations(node, first_line)
            for sub, sub_value in value.items():
                budget_raw[str(sub)] = sub_value
                budget_where[str(sub)] = nested.get(str(sub), where(key))
        elif name.startswith("budget."):
            # Flat form `gpo.budget.initial: 40`, in the spirit of dotted keys.
            sub = name[len("budget.") :]
            budget_key = budget_key or key
            budget_raw[sub] = value
            budget_where[sub] = where(key)
        elif name in _FIELDS:
            checked, message = _check_field(name, value)
            if message is not None:
                add(key, message)
            else:
                values[name] = checked
        else:
            add(key, _unknown_message(key, _FIELDS, "gpo."))

    if budget_raw or budget_key is not None:
        budget, errors = _check_budget(budget_raw, BudgetSettings())
        for sub, message in errors:
            line, column = (
                budget_where.get(sub, (1, 1)) if sub is not None else where(budget_key or "")
            )
            problems.append(Problem(path, line, column, message))
        if budget is not None:
            values["budget"] = budget

    settings = Settings(model=model, **values)  # type: ignore[arg-type]
    if not problems:
        for name, message in _cross_check(settings):
            add(f"gpo.{name}", message)
    return settings, problems
