"""An LLM `limits` factory for tests: it keeps the per-model limits the LLM makes,
and how low each one went, so tests can look at them without hooks in the engine."""

from __future__ import annotations

from gpo_engine.concurrency import AdaptiveLimit


class WatchedLimit(AdaptiveLimit):
    """An AdaptiveLimit that remembers the lowest its limit went."""

    def __init__(self, ceiling: int) -> None:
        super().__init__(ceiling)
        self.lowest = ceiling

    def release(self, epoch: int, rate_limited: bool, ok: bool,
                retry_after: float | None) -> None:
        super().release(epoch, rate_limited, ok, retry_after)
        self.lowest = min(self.lowest, self.limit)  # the limit only moves here


class WatchedLimits:
    """Pass as `LLM(limits=...)`; `last` is the limit of the latest model and loop."""

    def __init__(self) -> None:
        self.made: list[WatchedLimit] = []

    def __call__(self, ceiling: int) -> AdaptiveLimit:
        limit = WatchedLimit(ceiling)
        self.made.append(limit)
        return limit

    @property
    def last(self) -> WatchedLimit:
        return self.made[-1]
