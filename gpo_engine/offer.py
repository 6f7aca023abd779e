"""The suggestion policy: which prompt gpo offers for a file, and its held-out verdict.

One place decides it for the CLI (`gpo optimize`), the daemon's prompt state
(and so the editor) and `gpo report`:

- the offered prompt is the best dev-scoring prompt of the trajectory within
  `budget` words of the file's text that beats the file's text on dev
  (`pick`; ties go to the earliest, as Trajectory.best decides);
- its verdict is the overfitting guard's paired test against the file's text
  on the held-out test rows (`held_out`), or "untested" with the reason;
- an offer whose verdict is "worse" is withheld (`Offer.withheld`): it would
  likely make the file worse on rows the optimizer never saw.

Also the one typed form of "a score with its interval" (`Score`) and of the
verdict (`Verdict`), each with its JSON form, which is what goes over the
daemon's wire. This module stays light (no model layer, no diskcache, no
rapidfuzz at import): the language server reads these types too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from gpo_engine.stats import held_out_words, paired_test

if TYPE_CHECKING:
    from gpo_engine.evaluate import EvalResult
    from gpo_engine.trajectory import Trajectory

# The overfitting guard's significance level: a proposal whose held-out test
# score is lower than the file's text's with p below this is withheld.
GUARD_ALPHA = 0.05
VERDICTS = ("ok", "worse", "untested")
NOT_COMPARED = "no held-out comparison of this suggestion yet"


def _rounded(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass(frozen=True)
class Score:
    """A prompt's score on one split: percent 0-100 over `n` rows with its 95% interval
    (None bounds when the per-row outcomes are not known)."""

    value: float
    n: int
    low: float | None = None
    high: float | None = None

    @classmethod
    def of(cls, result: EvalResult) -> Score:
        low, high = result.interval()
        return cls(result.score, result.n, low, high)

    @classmethod
    def of_outcomes(cls, values: Sequence[float]) -> Score:
        """From per-row scores (0..1), with the evaluator's own interval."""
        from gpo_engine.evaluate import confidence_interval  # keeps this module light

        low, high = confidence_interval(list(values))
        value = 100.0 * sum(values) / len(values) if values else 0.0
        return cls(value, len(values), low, high)

    def to_json(self) -> dict[str, Any]:
        """The wire form, `{"score", "n", "low", "high"}`, rounded to 2 decimals."""
        return {"score": round(self.value, 2), "n": self.n, "low": _rounded(self.low),
                "high": _rounded(self.high)}

    @classmethod
    def from_json(cls, data: Any, name: str = "score") -> Score:
        """The object to_json wrote; ValueError naming `name` for anything else."""
        body = json_object(data, name)
        low, high = body.get("low"), body.get("high")
        return cls(json_number(json_key(body, "score", name), f"{name}.score"),
                   json_count(json_key(body, "n", name), f"{name}.n"),
                   None if low is None else json_number(low, f"{name}.low"),
                   None if high is None else json_number(high, f"{name}.high"))


@dataclass(frozen=True)
class Verdict:
    """The overfitting guard's held-out verdict on a proposal against the file's text.

    verdict: "ok" (not significantly worse), "worse" (withhold it) or "untested"
    (no test outcomes to compare; `reason` says why)."""

    verdict: str
    delta: float | None = None  # test points of the proposal over the file's text
    p_value: float | None = None
    n: int | None = None
    method: str = ""  # "mcnemar" | "permutation" | "none"
    wins: int | None = None
    losses: int | None = None
    reason: str = ""

    @property
    def worse(self) -> bool:
        return self.verdict == "worse"

    def words(self) -> str:
        """The verdict in the shared wording ("significantly better", ...)."""
        return held_out_words(self.verdict, self.delta, self.p_value)

    def to_json(self) -> dict[str, Any]:
        """The keys that apply: verdict and reason when untested, else the paired test."""
        if self.verdict == "untested":
            return {"verdict": self.verdict, "reason": self.reason}
        out: dict[str, Any] = {"verdict": self.verdict, "delta": self.delta,
                               "p_value": self.p_value, "n": self.n, "method": self.method,
                               "wins": self.wins, "losses": self.losses}
        if self.reason:
            out["reason"] = self.reason
        return out

    @classmethod
    def from_json(cls, data: Any, name: str = "guard") -> Verdict:
        body = json_object(data, name)
        verdict = json_text(json_key(body, "verdict", name), f"{name}.verdict")
        if verdict not in VERDICTS:
            raise ValueError(f"{name}.verdict must be ok, worse or untested, got {verdict!r}")

        def optional(key: str, read: Callable[[Any, str], Any]) -> Any:
            value = body.get(key)
            return None if value is None else read(value, f"{name}.{key}")

        return cls(verdict, optional("delta", json_number), optional("p_value", json_number),
                   optional("n", json_count), json_text(body.get("method", ""), f"{name}.method"),
                   optional("wins", json_count), optional("losses", json_count),
                   json_text(body.get("reason", ""), f"{name}.reason"))


def held_out(before: EvalResult | None, after: EvalResult | None, untested: str) -> Verdict:
    """Whether `after` (a proposal) is significantly worse than `before` (the file's text)
    on the held-out test rows, by a paired test on per-example outcomes."""
    if before is None or after is None:
        return Verdict("untested", reason=untested)
    paired = paired_test(_outcomes(before), _outcomes(after), GUARD_ALPHA)
    return Verdict("worse" if paired.regression else "ok", round(paired.delta, 2),
                   round(paired.p_value, 4), paired.n, paired.method, paired.wins,
                   paired.losses)


def _outcomes(result: EvalResult) -> dict[str, float]:
    return {o.uid: o.score for o in result.outcomes}


@dataclass(frozen=True)
class Offer:
    """The prompt offered in place of the file's text (`base`)."""

    text: str
    base: str
    dev: Score
    test: Score | None
    gain: float  # dev points over `base` (over 0 when `base` was never scored)
    distance: int  # words changed from `base`; never above the budget it was picked under
    verdict: Verdict

    @property
    def withheld(self) -> bool:
        """Significantly worse than `base` on the held-out rows: shown, never offered."""
        return self.verdict.worse

    def to_json(self) -> dict[str, Any]:
        return {"text": self.text, "base": self.base, "dev": self.dev.to_json(),
                "test": self.test.to_json() if self.test is not None else None,
                "gain": round(self.gain, 2), "distance": self.distance,
                "guard": self.verdict.to_json()}

    @classmethod
    def from_json(cls, data: Any, name: str = "suggestion") -> Offer:
        body = json_object(data, name)
        test = body.get("test")
        guard = body.get("guard")
        return cls(
            json_text(json_key(body, "text", name), f"{name}.text"),
            json_text(json_key(body, "base", name), f"{name}.base"),
            Score.from_json(json_key(body, "dev", name), f"{name}.dev"),
            None if test is None else Score.from_json(test, f"{name}.test"),
            json_number(json_key(body, "gain", name), f"{name}.gain"),
            json_count(json_key(body, "distance", name), f"{name}.distance"),
            (Verdict("untested", reason=NOT_COMPARED) if guard is None
             else Verdict.from_json(guard, f"{name}.guard")))


def normalize(text: str) -> str:
    """Text as the prompt sees it: line endings unified, outer line breaks and spaces dropped.

    An applied suggestion gets the file's final line break back (with_body), a CRLF
    file gets CRLF bodies, and the task model never sees outer whitespace
    (task.task_fn strips it): none of them changes what was evaluated.
    """
    return text.replace("\r\n", "\n").replace("\r", "\n").strip()


def same_prompt(a: str, b: str) -> bool:
    """Equal as prompts (see normalize)."""
    return normalize(a) == normalize(b)


def pick(trajectory: Trajectory, file_text: str, budget: int) -> tuple[str, float] | None:
    """Best dev-scoring prompt within `budget` words of the file's text that beats it on
    dev (any prompt when the file's text was never scored): (text, dev 0-100)."""
    from gpo_engine.update import word_distance  # rapidfuzz: only when picking

    baseline = trajectory.dev_score_of(file_text)
    best: tuple[str, float] | None = None
    for text, dev, _ in trajectory.scored():
        if same_prompt(text, file_text) or word_distance(file_text, text) > budget:
            continue
        if baseline is not None and dev <= baseline:
            continue
        if best is None or dev > best[1]:
            best = (text, dev)
    return best


def from_tests(tested: Mapping[str, EvalResult], base: str,
               reason: str) -> Callable[[str], Verdict]:
    """A verdict source from test results by text: the paired test of a text against `base`."""
    return lambda text: held_out(tested.get(base), tested.get(text), reason)


def offer_for(trajectory: Trajectory, file_text: str, budget: int, *,
              verdict: Callable[[str], Verdict] | None = None,
              test: Callable[[str], Score | None] | None = None) -> Offer | None:
    """THE suggestion for `file_text` under `budget` words, with its held-out verdict
    (`verdict(text)`: against the file's text; "untested" without one) and test score
    (`test(text)`), or None when no prompt within budget beats the file's text on dev."""
    from gpo_engine.update import word_distance

    picked = pick(trajectory, file_text, budget)
    if picked is None:
        return None
    text, dev = picked
    baseline = trajectory.dev_score_of(file_text)
    score = trajectory.dev_score(text) or Score(dev, trajectory.dev_n)
    judged = verdict(text) if verdict is not None else Verdict("untested", reason=NOT_COMPARED)
    return Offer(text, file_text, score, test(text) if test is not None else None,
                 dev - baseline if baseline is not None else dev,
                 word_distance(file_text, text), judged)


# ---------------------------------------------------------------------------
# Reading JSON values; each error names the key path.


def json_object(value: Any, name: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{name} must be an object, got {type(value).__name__}")
    return value


def json_key(data: Mapping[str, Any], key: str, name: str) -> Any:
    if key not in data:
        raise ValueError(f"missing {name}.{key}")
    return data[key]


def json_number(value: Any, name: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        raise ValueError(f"{name} must be a number, got {value!r}")
    return float(value)


def json_count(value: Any, name: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise ValueError(f"{name} must be a whole number >= 0, got {value!r}")
    return value


def json_text(value: Any, name: str) -> str:
    if not isinstance(value, str):
        raise ValueError(f"{name} must be a string, got {type(value).__name__}")
    return value
