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

import hashlib
import json
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gpo_engine import __version__, atomic
from gpo_engine.errors import GpoError, Problem, SourceError
from gpo_engine.evaluate import EvalResult, confidence_interval
from gpo_engine.examples import SUFFIXES
from gpo_engine.stats import PairedResult, paired_test

LOCK_VERSION = 1
LOCK_SUFFIX = ".lock"
FAILING = ("regression", "stale", "error")  # verdicts that fail a check (missing: unless allowed)
_SPLITS = ("dev", "test")
# Folders never searched for prompts when no path is given or an example set's owner is sought.
_SKIP_DIRS = frozenset({"node_modules", "__pycache__", "venv", "site-packages"})


@dataclass(frozen=True)
class SplitRecord:
    """One split's result as the lock stores it."""

    n: int
    score: float  # percent
    low: float  # 95% interval, percent
    high: float
    outcomes: Mapping[str, float] = field(default_factory=dict)  # example uid -> 0..1

    @classmethod
    def of(cls, result: EvalResult) -> SplitRecord:
        low, high = result.interval()
        return cls(result.n, result.score, low, high,
                   {o.uid: o.score for o in sorted(result.outcomes, key=lambda o: o.uid)})

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "score": round(self.score, 4), "low": round(self.low, 4),
                "high": round(self.high, 4),
                "outcomes": {uid: self.outcomes[uid] for uid in sorted(self.outcomes)}}


@dataclass(frozen=True)
class Lock:
    """A recorded baseline (or a fresh measurement in the same shape)."""

    prompt_hash: str
    examples: str  # the example file, relative to the prompt's folder
    examples_hash: str
    model: str
    metric: Mapping[str, str | None]  # name, pattern, judge: what makes scores comparable
    dev: SplitRecord
    test: SplitRecord
    tool_version: str = __version__

    def outcomes(self) -> dict[str, float]:
        """Dev and test outcomes together: the rows a regression is judged on."""
        return {**self.dev.outcomes, **self.test.outcomes}

    def combined(self) -> tuple[float, float, float]:
        """Score and 95% interval over dev and test together, in percent."""
        values = list(self.outcomes().values())
        low, high = confidence_interval(values)
        return (100.0 * sum(values) / len(values) if values else 0.0), low, high

    def to_dict(self) -> dict[str, Any]:
        return {
            "lock_version": LOCK_VERSION,
            "tool": f"gpo {self.tool_version}",
            "prompt_hash": self.prompt_hash,
            "examples": self.examples,
            "examples_hash": self.examples_hash,
            "model": self.model,
            "metric": dict(self.metric),
            "dev": self.dev.to_dict(),
            "test": self.test.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, ensure_ascii=False) + "\n"


def lock_path(prompt_path: Path) -> Path:
    """`x.prompt` -> `x.prompt.lock`, beside it."""
    return prompt_path.with_name(prompt_path.name + LOCK_SUFFIX)


def prompt_hash(source: str) -> str:
    """sha256 of the whole file (frontmatter too: max_tokens or the metric change scores).

    Line endings are normalized so a checkout with CRLF conversion keeps its baseline.
    """
    text = source.replace("\r\n", "\n").replace("\r", "\n")
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()


def parse_lock(text: str, path: Path) -> Lock:
    """Read a lock file's text; SourceError (with a line) when it is not a usable lock."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        raise SourceError([Problem(path, error.lineno, error.colno,
                                   f"lock file is not valid JSON: {error.msg}")]) from None

    def bad(message: str) -> SourceError:
        return SourceError([Problem(path, 1, 1, f"{message}; recreate it with "
                                    f"`gpo check --update {_prompt_of_lock(path)}`")])

    if not isinstance(data, dict):
        raise bad("lock file must hold a JSON object")
    version = data.get("lock_version")
    if version != LOCK_VERSION:
        raise bad(f"lock format version {version!r} is not supported (this gpo reads "
                  f"{LOCK_VERSION})")
    try:
        splits = {name: _split_from(data[name]) for name in _SPLITS}
        metric = data["metric"]
        if not isinstance(metric, dict):
            raise TypeError("metric")
        texts = {key: data[key] for key in ("prompt_hash", "examples", "examples_hash", "model")}
        if not all(isinstance(v, str) for v in texts.values()):
            raise TypeError("text field")
        tool = str(data.get("tool", "gpo ?")).removeprefix("gpo ")
        return Lock(metric={str(k): (None if v is None else str(v)) for k, v in metric.items()},
                    dev=splits["dev"], test=splits["test"], tool_version=tool, **texts)
    except KeyError as missing:
        raise bad(f"lock file has no {missing.args[0]!r} field") from None
    except (TypeError, ValueError, AttributeError) as error:
        raise bad(f"lock file has a malformed field ({error})") from None


def _split_from(raw: Any) -> SplitRecord:
    outcomes = {str(uid): float(v) for uid, v in raw["outcomes"].items()}
    return SplitRecord(int(raw["n"]), float(raw["score"]), float(raw["low"]),
                       float(raw["high"]), outcomes)


def _prompt_of_lock(path: Path) -> Path:
    return path.with_name(path.name.removesuffix(LOCK_SUFFIX))


def read_lock(path: Path) -> Lock | None:
    """The lock at `path`, or None when there is none."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise SourceError([Problem(path, 1, 1, f"cannot read lock file: {error}")]) from None
    return parse_lock(text, path)


def write_lock(path: Path, lock: Lock) -> None:
    """Write atomically: a killed process or a full disk leaves the old lock or the new
    one, never half (atomic.WriteError says which file could not be written)."""
    atomic.write_text(path, lock.to_json())


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
        return self.verdict in FAILING or (self.verdict == "missing" and not allow_missing)

    def rows(self) -> list[dict[str, Any]]:
        """Per split and over both: baseline and current score, delta, current interval."""
        out = []
        for name in (*_SPLITS, "dev+test"):
            base = _part(self.baseline, name)
            now = _part(self.current, name)
            out.append({
                "split": name,
                "n": (now or base or (0, 0.0, 0.0, 0.0))[0],
                "baseline": None if base is None else round(base[1], 2),
                "now": None if now is None else round(now[1], 2),
                "delta": None if base is None or now is None else round(now[1] - base[1], 2),
                "low": None if now is None else round(now[2], 2),
                "high": None if now is None else round(now[3], 2),
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


def _part(lock: Lock | None, name: str) -> tuple[int, float, float, float] | None:
    if lock is None:
        return None
    if name == "dev+test":
        score, low, high = lock.combined()
        return lock.dev.n + lock.test.n, score, low, high
    record: SplitRecord = getattr(lock, name)
    return record.n, record.score, record.low, record.high


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
                           (f"baseline written to {path.name}: dev {now.dev.score:.1f}% "
                            f"(n={now.dev.n}), test {now.test.score:.1f}% (n={now.test.n})",),
                           baseline=baseline, current=now, scored=True, usage=usage)
    assert baseline is not None
    verdict, reasons, paired = judge(baseline, now, alpha=task.settings.check_alpha,
                                     tolerance=task.settings.check_tolerance)
    if verdict == "regression":
        reasons.append(f"if the drop is intended, accept it with `{update_command(task.path)}`")
    return CheckResult(task.path, path, verdict, tuple(reasons), baseline=baseline,
                       current=now, paired=paired, scored=True, usage=usage)


# ---------------------------------------------------------------------------
# Which prompts a list of changed files concerns


@dataclass(frozen=True)
class Targets:
    prompts: tuple[Path, ...]  # prompt files to check, each once, in the order first named
    notes: tuple[str, ...]  # files named that concern no prompt (skipped, with why)
    missing: tuple[Path, ...]  # named paths that do not exist


def find_targets(paths: Sequence[Path], root: Path) -> Targets:
    """Map the named files to the prompts to check.

    A `.prompt` is itself; `x.prompt.lock` is `x.prompt`; an example set is
    every prompt that reads it (looked for in its own folder first, then
    under `root`). No paths: every `.prompt` under `root`.
    """
    if not paths:
        return Targets(tuple(sorted(_all_prompts(root))), (), ())
    prompts: dict[Path, None] = {}
    notes: list[str] = []
    missing: list[Path] = []
    everything: list[Path] | None = None
    for path in paths:
        if path.suffix == ".prompt":
            if path.is_file():
                prompts.setdefault(path, None)
            else:
                missing.append(path)
        elif path.name.endswith(".prompt" + LOCK_SUFFIX):
            prompt = _prompt_of_lock(path)
            if prompt.is_file():
                prompts.setdefault(prompt, None)
            else:
                notes.append(f"{path}: its prompt {prompt.name} does not exist; skipped")
        elif not path.exists():
            missing.append(path)
        else:
            owners = [p for p in sorted(path.parent.glob("*.prompt")) if _reads(p, path)]
            if not owners:
                if everything is None:
                    everything = sorted(_all_prompts(root))
                owners = [p for p in everything if _reads(p, path)]
            if owners:
                for owner in owners:
                    prompts.setdefault(owner, None)
            elif path.suffix.lower() in SUFFIXES:
                notes.append(f"{path}: no .prompt file reads this example set; skipped")
            else:
                notes.append(f"{path}: not a .prompt, lock or example file; skipped")
    return Targets(tuple(prompts), tuple(notes), tuple(missing))


def _all_prompts(root: Path) -> Iterable[Path]:
    for folder, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if not d.startswith(".") and d not in _SKIP_DIRS]
        for name in files:
            if name.endswith(".prompt"):
                yield Path(folder) / name if folder != "." else Path(name)


def _reads(prompt_path: Path, examples_path: Path) -> bool:
    """Whether the prompt's example set is `examples_path` (a broken prompt: by its
    sibling name only, so its owner is still found and its error reported)."""
    from gpo_engine.examples import find_examples_path
    from gpo_engine.promptfile import load_prompt

    try:
        configured = load_prompt(prompt_path).settings.examples
    except GpoError:
        configured = None
    try:
        found = find_examples_path(prompt_path, configured)
    except GpoError:
        return False
    return _same_file(found, examples_path)


def _same_file(a: Path, b: Path) -> bool:
    try:
        return a.resolve() == b.resolve() or os.path.samefile(a, b)
    except OSError:
        return False
