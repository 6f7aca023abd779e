"""Baselines kept in git, and the check that a prompt did not get worse.

`<name>.prompt.lock` (JSON, next to the prompt) records what the prompt
scored when the baseline was taken: hashes of the prompt file and of the
example set, the task model, the metric, and for dev and test the score, its
interval and every example's outcome. `check_task` scores the current text
and compares example by example (gpo_engine.stats.paired_test).

Verdicts:
- pass: not worse beyond the tolerance (or the file is byte-identical to the
  baseline, which needs no model call at all, even without a response cache)
- regression: the drop is significant at gpo.check_alpha, or larger than
  gpo.check_tolerance points
- stale: the example set, rows, model or metric changed since the baseline,
  so the numbers are not comparable; never a silent pass
- missing: no lock file yet
- updated: `update=True` wrote a new baseline
- error: the prompt, its examples or the lock cannot be read
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpo_engine.errors import SourceError
from gpo_engine.lockfile import (
    SPLITS,
    Lock,
    SplitRecord,
    lock_path,
    prompt_hash,
    read_lock,
    write_lock,
)
from gpo_engine.offer import Score
from gpo_engine.stats import PairedResult, paired_test

FAILING = ("regression", "stale", "error")  # verdicts that fail a check (missing: unless allowed)
VERDICTS = ("pass", "updated", *FAILING, "missing")


def fails(verdict: str, allow_missing: bool = False) -> bool:
    """Whether a result with this verdict fails the check."""
    return verdict in FAILING or (verdict == "missing" and not allow_missing)


# ---------------------------------------------------------------------------
# Comparing


def metric_identity(settings: Any, judge_model: str | None) -> dict[str, str | None]:
    return {"name": settings.metric, "pattern": settings.pattern, "judge": judge_model}


def stale_reasons(lock: Lock, *, examples_hash: str, examples_name: str, model: str,
                  metric: Mapping[str, str | None], dev_uids: Iterable[str],
                  test_uids: Iterable[str]) -> list[str]:
    """Why the baseline no longer measures the same thing; empty when it still does."""
    reasons = []
    if lock.examples_hash != examples_hash:
        reasons.append(f"the example set {examples_name} changed since the baseline")
    elif set(lock.dev.outcomes) != set(dev_uids) or set(lock.test.outcomes) != set(test_uids):
        reasons.append("the dev/test rows changed since the baseline (gpo.split?)")
    if lock.model != model:
        reasons.append(f"the model changed: baseline {lock.model}, now {model}")
    if dict(lock.metric) != dict(metric):
        reasons.append(f"the metric changed: baseline {_metric_text(lock.metric)}, "
                       f"now {_metric_text(metric)}")
    return reasons


def _metric_text(metric: Mapping[str, str | None]) -> str:
    extra = [f"{k}={v}" for k, v in sorted(metric.items()) if k != "name" and v is not None]
    return str(metric.get("name")) + (f" ({', '.join(extra)})" if extra else "")


def judge(baseline: Lock, now: Lock, *, alpha: float, tolerance: float
          ) -> tuple[str, list[str], PairedResult]:
    """Verdict (pass | regression) of `now` against `baseline`, with its reasons."""
    paired = paired_test(baseline.outcomes(), now.outcomes(), alpha)
    drop = -paired.delta
    test = (f"p={paired.p_value:.3g}, {paired.losses} examples worse, {paired.wins} better, "
            f"n={paired.n}")
    if paired.regression:
        return "regression", [f"score dropped {drop:.1f} points, significant at "
                              f"alpha={alpha:g} ({test})"], paired
    if drop > tolerance:
        return "regression", [f"score dropped {drop:.1f} points, more than "
                              f"gpo.check_tolerance={tolerance:g} ({test})"], paired
    if paired.delta > 0:
        return "pass", [f"improved {paired.delta:.1f} points ({test}); "
                        "`gpo check --update` records it as the new baseline"], paired
    if drop > 0:
        return "pass", [f"dropped {drop:.1f} points, within tolerance ({test})"], paired
    return "pass", [f"same score ({test})"], paired


@dataclass(frozen=True)
class CheckResult:
    prompt: Path
    lock_path: Path
    verdict: str  # pass | regression | stale | missing | updated | error
    reasons: tuple[str, ...]
    baseline: Lock | None = None
    current: Lock | None = None  # None when nothing was scored (stale, missing, error)
    paired: PairedResult | None = None
    scored: bool = False  # whether scores were computed (from the model or its cache)
    usage: Mapping[str, Any] = field(default_factory=dict)

    def failed(self, allow_missing: bool = False) -> bool:
        return fails(self.verdict, allow_missing)

    def rows(self) -> list[dict[str, Any]]:
        """Per split and over both: baseline and current score, delta, current interval."""
        out = []
        for name in (*SPLITS, "dev+test"):
            base = _part(self.baseline, name)
            now = _part(self.current, name)
            out.append({
                "split": name,
                "n": now.n if now else base.n if base else 0,
                "baseline": None if base is None else round(base.value, 2),
                "now": None if now is None else round(now.value, 2),
                "delta": None if base is None or now is None else round(now.value - base.value,
                                                                        2),
                "low": None if now is None or now.low is None else round(now.low, 2),
                "high": None if now is None or now.high is None else round(now.high, 2),
            })
        return out

    def to_dict(self) -> dict[str, Any]:
        paired = None
        if self.paired is not None:
            p = self.paired
            paired = {"delta": round(p.delta, 4), "p_value": p.p_value, "n": p.n,
                      "significant": p.significant, "alpha": p.alpha, "method": p.method,
                      "wins": p.wins, "losses": p.losses}
        known = self.current or self.baseline
        return {"prompt": str(self.prompt), "lock": str(self.lock_path),
                "verdict": self.verdict, "reasons": list(self.reasons), "scored": self.scored,
                "rows": self.rows(), "paired_test": paired,
                "model": known.model if known else None, "usage": dict(self.usage)}


def _part(lock: Lock | None, name: str) -> Score | None:
    if lock is None:
        return None
    if name == "dev+test":
        return lock.combined()
    record: SplitRecord = getattr(lock, name)
    return record.score


def update_command(prompt: Path) -> str:
    return f"gpo check --update {prompt}"


# ---------------------------------------------------------------------------
# Running a check


async def measure(task: Any, llm: Any) -> Lock:
    """Score the task's current prompt on dev and test: a lock in the making."""
    from gpo_engine.task import score  # imports the model layer; only when scoring

    dev = await score(task, llm, task.prompt.body, task.examples.dev)
    test = await score(task, llm, task.prompt.body, task.examples.test)
    return Lock(
        prompt_hash=prompt_hash(task.sources()),
        examples=_relative(task.examples.path, task.path.parent),
        examples_hash=task.examples.content_hash,
        model=task.task_model,
        metric=metric_identity(task.settings, task.judge_model),
        dev=SplitRecord.of(dev),
        test=SplitRecord.of(test),
    )


def _relative(path: Path, folder: Path) -> str:
    try:
        return Path(os.path.relpath(path, folder)).as_posix()
    except ValueError:  # another drive on Windows
        return str(path)


async def check_task(task: Any, llm: Any, *, update: bool = False) -> CheckResult:
    """Compare `task`'s prompt with its lock (or write the lock when `update`).

    `llm` is only used when the prompt must be scored: an unchanged file, a
    stale or a missing baseline costs no model call. A lock that cannot be
    read is an "error" result (replaced when `update`); NotCached and other
    systemic errors propagate.
    """
    path = lock_path(task.path)
    try:
        baseline = read_lock(path)
    except SourceError as error:
        if not update:
            return CheckResult(task.path, path, "error", tuple(str(p) for p in error.problems))
        baseline = None
    if baseline is not None:
        stale = stale_reasons(
            baseline, examples_hash=task.examples.content_hash,
            examples_name=task.examples.path.name, model=task.task_model,
            metric=metric_identity(task.settings, task.judge_model),
            dev_uids=(e.uid for e in task.examples.dev),
            test_uids=(e.uid for e in task.examples.test))
        unchanged = baseline.prompt_hash == prompt_hash(task.sources())
        if not stale and unchanged:
            return CheckResult(task.path, path, "pass",
                               ("unchanged since the baseline (no model call needed)",),
                               baseline=baseline, current=baseline)
        if stale and not update:
            return CheckResult(task.path, path, "stale",
                               ("baseline is stale: " + "; ".join(stale),
                                f"re-record it with `{update_command(task.path)}`"),
                               baseline=baseline)
    elif not update:
        return CheckResult(task.path, path, "missing",
                           (f"no baseline {path.name}; create it with "
                            f"`{update_command(task.path)}`",))
    now = await measure(task, llm)
    usage = llm.usage.to_dict()
    if update:
        write_lock(path, now)
        return CheckResult(task.path, path, "updated",
                           (f"baseline written to {path.name}: dev {now.dev.score.value:.1f}% "
                            f"(n={now.dev.score.n}), test {now.test.score.value:.1f}% "
                            f"(n={now.test.score.n})",),
                           baseline=baseline, current=now, scored=True, usage=usage)
    assert baseline is not None
    verdict, reasons, paired = judge(baseline, now, alpha=task.settings.check_alpha,
                                     tolerance=task.settings.check_tolerance)
    if verdict == "regression":
        reasons.append(f"if the drop is intended, accept it with `{update_command(task.path)}`")
    return CheckResult(task.path, path, verdict, tuple(reasons), baseline=baseline,
                       current=now, paired=paired, scored=True, usage=usage)
