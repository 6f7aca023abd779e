"""Model prices and capabilities from litellm's bundled price list, without importing litellm.

`import litellm` costs about 3 s and 200 MB; a run whose calls all take the
direct path (gpo_engine.direct) only needs litellm's price list, a JSON file
in its package. It is found through the import system's metadata (no import)
and read once per process (about 30 ms).
"""

from __future__ import annotations

import functools
import importlib.util
import json
from pathlib import Path
from typing import Any

PRICE_FILE = "model_prices_and_context_window_backup.json"


@functools.cache
def _table() -> dict[str, dict[str, Any]]:
    spec = importlib.util.find_spec("litellm")
    if spec is None or not spec.submodule_search_locations:
        return {}
    path = Path(next(iter(spec.submodule_search_locations))) / PRICE_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return {str(k): v for k, v in data.items() if isinstance(v, dict) and k != "sample_spec"}


def entry(model: str) -> dict[str, Any] | None:
    """The price list's entry for a litellm model name, as litellm looks it up:
    the full name, else the name without its provider prefix when the entry
    belongs to that provider (`openai/gpt-4o-mini` -> `gpt-4o-mini`)."""
    table = _table()
    if model in table:
        return table[model]
    provider, slash, name = model.partition("/")
    if slash and name in table and table[name].get("litellm_provider") == provider:
        return table[name]
    return None


def price(model: str, prompt_tokens: int, completion_tokens: int) -> float | None:
    """Dollars for these tokens; None when the list has no per-token price for the model."""
    found = entry(model)
    if found is None:
        return None
    try:
        return (prompt_tokens * float(found["input_cost_per_token"])
                + completion_tokens * float(found["output_cost_per_token"]))
    except (KeyError, TypeError, ValueError):
        return None


def supports_response_schema(model: str) -> bool:
    found = entry(model)
    return bool(found and found.get("supports_response_schema"))
