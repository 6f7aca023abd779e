"""Scoring a step's candidates on dev, racing them: successive halving on growing
slices of dev, so a clear loser costs a slice and a close call is settled on
more rows. The cost estimate (gpo_engine.cost) counts calls with `race_calls`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from gpo_engine.evaluate import EvalResult, gather_all
from gpo_engine.llm import LLM
from gpo_engine.task import Task, score


async def score_candidates(
    task: Task, llm: LLM, texts: Sequence[str]
) -> tuple[list[EvalResult], set[int]]:
    """Dev results per candidate, and the indexes that were raced out before full dev.

    Racing is successive halving: every candidate is scored on the first
    `race_size` dev rows; the top half (ties included) goes on to as many rows
    again, and so on, each round doubling the rows seen, until the survivors
    have seen every dev row. A candidate stops only when it is behind the half
    that did better on every row it was scored on, so a clear loser costs a
    slice and a close call is settled on more rows.
    """
    dev = sorted(task.examples.dev, key=lambda e: e.uid)
    settings = task.settings
    if not texts:
        return [], set()
    if not settings.racing or len(dev) <= settings.race_size or len(texts) <= 2:
        full = await gather_all(score(task, llm, t, dev) for t in texts)
        return list(full), set()
    results = [EvalResult(()) for _ in texts]
    alive = list(range(len(texts)))
    seen = 0
    while seen < len(dev):
        upto = race_round_end(seen, len(alive), len(dev), settings.race_size)
        rows = dev[seen:upto]
        more = await gather_all(score(task, llm, texts[i], rows) for i in alive)
        for i, extra in zip(alive, more, strict=True):
            results[i] = results[i].merged(extra)
        seen = upto
        if seen < len(dev):
            alive = [alive[j] for j in race_leaders([results[i].score for i in alive])]
    return results, set(range(len(texts))) - set(alive)


def race_round_end(seen: int, alive: int, dev: int, race_size: int) -> int:
    """Dev rows the survivors have seen after the next round of the race.

    The first round is the slice; each later one doubles the rows seen; with two
    candidates or fewer left there is nothing to halve and the rest of dev decides.
    """
    if alive <= 2:
        return dev
    return min(dev, max(race_size, 2 * seen))


def race_calls(candidates: int, dev: int, race_size: int) -> int:
    """Candidate scoring calls of one step's race when no ties fall at a cut (the minimum)."""
    if candidates <= 2 or dev <= race_size:
        return candidates * dev
    calls, seen, alive = 0, 0, candidates
    while seen < dev:
        upto = race_round_end(seen, alive, dev, race_size)
        calls += alive * (upto - seen)
        seen = upto
        alive = math.ceil(alive / 2)
    return calls


def race_leaders(scores: Sequence[float]) -> list[int]:
    """Indexes that go on to the next round: the top half (rounded up), in their order.

    A tie at the cut goes to the earlier sample. Letting every tied candidate
    through looked fairer but undid the race: on a slice of a few rows ties are
    the rule (seven candidates at 0% kept all eight running to full dev), and a
    candidate cut on a tie was no better than the ones kept on the same rows.
    """
    keep = math.ceil(len(scores) / 2)
    ranked = sorted(range(len(scores)), key=lambda i: (-scores[i], i))
    return sorted(ranked[:keep])
