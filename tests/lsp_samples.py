"""A prompt-state object as the daemon sends it (shape: gpo_server.prompt_state), and
pathological documents, for LSP tests."""

from __future__ import annotations

import copy
from typing import Any

INITIAL = "Classify the sentiment of {{review}}. Answer positive or negative.\n"
STEP1 = "Classify the sentiment of {{review}}. Answer with positive or negative only."
STEP2 = "Decide if {{review}} is positive or negative. Answer with one word."

_STATE: dict[str, Any] = {
    "version": 1,
    "path": "/w/sentiment.prompt",
    "steps_done": 2,
    "total_steps": 12,
    "budget": 31,
    "scored": [
        {
            "text": INITIAL,
            "step": 0,
            "dev": {"score": 65.0, "n": 40, "low": 49.5, "high": 77.9},
            "test": {"score": 62.5, "n": 40, "low": 47.0, "high": 75.8},
        },
        {"text": STEP1, "step": 1, "dev": {"score": 70.0, "n": 40, "low": 54.6, "high": 81.9}},
        {"text": STEP2, "step": 2, "dev": {"score": 72.5, "n": 40}, "test": None},
    ],
    "history": [65.0, 70.0, 72.5],
    "suggestion": {
        "text": STEP2,
        "base": INITIAL,
        "dev": {"score": 72.5, "n": 40},
        "test": {"score": 70.0, "n": 40, "low": 54.6, "high": 81.9},
        "gain": 7.5,
        "distance": 12,
    },
    "usage": {
        "calls": 30,
        "prompt_tokens": 12345,
        "completion_tokens": 2345,
        "cost": 0.0123,
        "unknown_price": False,
    },
    "job": None,
}


def state_dict(**overrides: Any) -> dict[str, Any]:
    """A fresh copy of the sample state with top-level keys replaced."""
    data = copy.deepcopy(_STATE)
    data.update(overrides)
    return data


def many_variables(count: int) -> str:
    """A prompt reading `count` variables (short names, so 50,000 fit in 490 kB, under the
    server's size cap): tens of seconds to analyse when its example set has none of them."""
    def name(i: int) -> str:
        digits = "abcdefghijklmnopqrstuvwxyz"
        out = ""
        while True:
            i, rest = divmod(i, 26)
            out = digits[rest] + out
            if not i:
                return "v" + out

    return "---\nmodel: x\n---\n" + " ".join(f"{{{{{name(i)}}}}}" for i in range(count)) + "\n"


# A row with none of many_variables' variables: every one is then located at its tag.
NO_VARIABLES_ROW = '{"other": "a", "expected": "b", "split": "dev"}\n'
