"""What a job's model calls used: calls, cache hits, tokens and dollars, per model.

`Usage` is what a run reports and a trajectory keeps (`to_dict` / `from_dict`);
`delta` and `apply_delta` carry one model's change between two moments, the
unit the spend journal (gpo_engine.spend) writes as calls go out and come back.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class ModelUsage:
    calls: int = 0  # requests sent to the model, retries included
    cache_hits: int = 0  # answers (or embedding vectors) served from the disk cache
    failures: int = 0  # requests that ended in ModelCallError after every retry
    retries: int = 0  # requests sent again after a retryable failure
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0
    unknown_price: bool = False  # some successful call had no known price (cost undercounts)
    rate_limited: int = 0  # 429 answers received (each one halves the model's concurrency)
    concurrency: int = 0  # the model's adaptive concurrency limit when last used
    path: str = ""  # how its calls go out: "direct" (gpo_engine.direct) or "litellm"


# Fields that add up across calls and runs; the others say what was seen last
# (concurrency, path) or whether something was ever seen (unknown_price).
ADDITIVE = ("calls", "cache_hits", "failures", "retries", "prompt_tokens",
            "completion_tokens", "cost", "rate_limited")
LATEST = ("concurrency", "path")


@dataclass
class Usage:
    per_model: dict[str, ModelUsage] = field(default_factory=dict)

    def model(self, name: str) -> ModelUsage:
        """The usage record of one model, created on first use."""
        if name not in self.per_model:
            self.per_model[name] = ModelUsage()
        return self.per_model[name]

    @property
    def calls(self) -> int:
        return sum(u.calls for u in self.per_model.values())

    @property
    def cache_hits(self) -> int:
        return sum(u.cache_hits for u in self.per_model.values())

    @property
    def failures(self) -> int:
        return sum(u.failures for u in self.per_model.values())

    @property
    def retries(self) -> int:
        return sum(u.retries for u in self.per_model.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(u.prompt_tokens for u in self.per_model.values())

    @property
    def completion_tokens(self) -> int:
        return sum(u.completion_tokens for u in self.per_model.values())

    @property
    def cost(self) -> float:
        return sum(u.cost for u in self.per_model.values())

    @property
    def unknown_price(self) -> bool:
        return any(u.unknown_price for u in self.per_model.values())

    def plus(self, other: Usage) -> Usage:
        """Both usages summed per model (a resumed run's spend on top of the earlier runs')."""
        total = Usage()
        for source in (self, other):
            for name, u in source.per_model.items():
                apply_delta(total.model(name), asdict(u))
        return total

    def copy(self) -> Usage:
        return Usage({name: dataclasses.replace(u) for name, u in self.per_model.items()})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Usage:
        """Inverse of to_dict (per-model records; totals are derived)."""
        known = {f.name for f in fields(ModelUsage)}
        usage = cls()
        for name, record in (data.get("per_model") or {}).items():
            usage.per_model[name] = ModelUsage(**{k: v for k, v in record.items() if k in known})
        return usage

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "cache_hits": self.cache_hits,
            "failures": self.failures,
            "retries": self.retries,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "unknown_price": self.unknown_price,
            "per_model": {name: asdict(u) for name, u in sorted(self.per_model.items())},
        }


def delta(now: Mapping[str, Any], before: Mapping[str, Any]) -> dict[str, Any]:
    """What changed between two ModelUsage records (as `vars()`, for speed: this
    runs twice per model call): additive fields as differences (only those that
    moved), the others as their new value when it changed."""
    changed: dict[str, Any] = {}
    for name in ADDITIVE:
        moved = now[name] - before[name]
        if moved:
            changed[name] = moved
    if now["unknown_price"] and not before["unknown_price"]:
        changed["unknown_price"] = True
    for name in LATEST:
        if now[name] != before[name]:
            changed[name] = now[name]
    return changed


def apply_delta(target: ModelUsage, change: Mapping[str, Any]) -> None:
    """Add a `delta` (or a whole record, as one) to `target`."""
    for name in ADDITIVE:
        if name in change:
            setattr(target, name, getattr(target, name) + change[name])
    if change.get("unknown_price"):
        target.unknown_price = True
    for name in LATEST:
        if change.get(name):  # 0 / "": not used in that run; keep the later one seen
            setattr(target, name, change[name])
