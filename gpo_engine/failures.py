"""Why a model call failed, said once for both call paths: the kind of failure,
whether another try may help, how long the server asked us to wait, and for a
refused or missing key, what to set.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import direct
from .concurrency import retry_after_seconds
from .models import litellm_module


@dataclass(frozen=True)
class Failure:
    """How a failed call is reported and whether it is worth another try."""

    # ModelCallError kinds: timeout | rate_limit | budget | server | bad_response | auth | other
    kind: str
    retry: bool
    wait: float | None  # server-requested delay (Retry-After), seconds
    message: str


class BadResponse(Exception):
    """A 200 answer we cannot use (no choices, no data)."""


def classify_error(exc: BaseException) -> Failure:
    """Map an exception from litellm (or our watchdog) to a Failure.

    A refused key (401, 403) and a missing one are "auth": never retried, and
    the message is the provider's own with what to set. litellm reports a
    missing key as a 500 (OpenAI: "Missing credentials"), a connection error
    (Gemini) or a plain exception ("The api_key client option must be set"),
    so it is recognised by its words, whatever the exception.
    """
    failure = _classify(exc)
    if failure.kind == "rate_limit" and _SPENT.search(failure.message):
        # No wait cures a spent budget: stop at once, with the provider's words.
        return Failure("budget", False, None, failure.message)
    missing = _MISSING_KEY.search(failure.message) is not None
    if failure.kind != "auth" and not missing:
        return failure
    return Failure("auth", False, None, auth_message(exc, failure.message, missing))


# How providers (through litellm and the OpenAI SDK) say that no API key was given.
_MISSING_KEY = re.compile(
    r"missing credentials|missing [\w ]{0,40}?api[ _-]?key|api_key client option must be set"
    r"|no (api )?key (is )?(set|provided|found)|api[ _-]?key (is )?(not set|not found|missing)",
    re.IGNORECASE)
# A 429 that is a spent budget or quota, not a rate: the LiteLLM proxy's "Budget has been
# exceeded!" (type budget_exceeded) and "Max budget limit reached.", OpenAI's
# insufficient_quota ("You exceeded your current quota").
_SPENT = re.compile(r"budget has been exceeded|budget_exceeded|max budget limit reached"
                    r"|exceeded your current quota|insufficient_quota", re.IGNORECASE)
# Environment variables that hold a key or token, as the messages name them.
_KEY_VARIABLE = re.compile(r"\b[A-Z][A-Z0-9]*_(?:API_KEY|AUTH_TOKEN|API_TOKEN|ACCESS_KEY_ID)\b")
# litellm's wrapping around the provider's words: "litellm.X: X: OpenAIException - ".
_LITELLM_PREFIX = re.compile(r"^(litellm\.\w+: )?(\w+Error: )?(\w+Exception - )?")


def auth_message(exc: BaseException, message: str, missing: bool) -> str:
    """The provider's message (litellm's wrapping and any traceback cut off) and what
    to do: 'set OPENAI_API_KEY' for a missing key, 'check OPENAI_API_KEY' for a refused one."""
    text = message.split(" Traceback (most recent call last)")[0]
    text = _LITELLM_PREFIX.sub("", text, count=1).strip().rstrip(".") or message
    names = list(dict.fromkeys(_KEY_VARIABLE.findall(text))) or _key_variables(exc)
    verb = "set" if missing else "check"
    hint = (f"{verb} {' or '.join(names)}" if names
            else f"{verb} the provider's API key" + ("" if missing else " and its access"))
    return text if hint.lower() in text.lower() else f"{text}; {hint}"


def _key_variables(exc: BaseException) -> list[str]:
    """The variables litellm reads the key of the exception's provider from, if it says."""
    if isinstance(exc, direct.HTTPFailure):
        return [exc.key_variable]  # the direct path's key (or the one passed to LLM)
    provider, model = getattr(exc, "llm_provider", None), getattr(exc, "model", None)
    if not isinstance(provider, str) or not provider or not isinstance(model, str):
        return []
    try:
        found = litellm_module().validate_environment(model=f"{provider}/{model.split('/')[-1]}")
    except Exception:  # a provider litellm cannot place: no name to give
        return []
    names = found.get("missing_keys") if isinstance(found, dict) else None
    return [n for n in names or [] if isinstance(n, str) and _KEY_VARIABLE.fullmatch(n)]


def _classify(exc: BaseException) -> Failure:
    message = _short(str(exc) or type(exc).__name__)
    if isinstance(exc, BadResponse):
        return Failure("bad_response", True, None, message)
    if isinstance(exc, (asyncio.TimeoutError, TimeoutError)):
        return Failure("timeout", True, None, message or "timed out")
    direct_failure = _direct_failure(exc, message)
    if direct_failure is not None:  # the direct path's errors: no need to import litellm
        return direct_failure
    import litellm

    wait = retry_after_seconds(_exception_headers(exc))
    if isinstance(exc, litellm.Timeout):  # before the status check: it also says 408
        return Failure("timeout", True, None, message)
    if isinstance(exc, litellm.RateLimitError):
        return Failure("rate_limit", True, wait, message)
    if isinstance(exc, (litellm.AuthenticationError, litellm.PermissionDeniedError)):
        return Failure("auth", False, None, message)
    if isinstance(exc, litellm.APIConnectionError):
        # No HTTP answer at all (refused, reset, DNS): the server side is unwell.
        return Failure("server", True, wait, message)
    status = getattr(exc, "status_code", None)
    if isinstance(status, int):
        return _by_status(status, wait, message)
    return Failure("other", False, None, message)


def _by_status(status: int, wait: float | None, message: str) -> Failure:
    """The Failure an HTTP status means, on either call path."""
    if status == 429:
        return Failure("rate_limit", True, wait, message)
    if status == 408:
        return Failure("timeout", True, wait, message)
    if status in (401, 403):
        return Failure("auth", False, None, message)
    if status >= 500:
        return Failure("server", True, wait, message)
    return Failure("other", False, None, message)


def _direct_failure(exc: BaseException, message: str) -> Failure | None:
    """A Failure for the direct path's exceptions (gpo_engine.direct, aiohttp's)."""
    import aiohttp

    if isinstance(exc, direct.Garbage):
        return Failure("bad_response", True, None, message)
    if isinstance(exc, aiohttp.ClientConnectionError):
        # No HTTP answer at all (refused, reset): the server side is unwell.
        return Failure("server", True, None, message)
    if not isinstance(exc, direct.HTTPFailure):
        return None
    return _by_status(exc.status_code, retry_after_seconds(exc.headers), message)


def _exception_headers(exc: BaseException) -> Mapping[str, Any] | None:
    """Response headers litellm keeps on its exceptions, wherever they are."""
    for candidate in (
        getattr(exc, "headers", None),
        getattr(exc, "litellm_response_headers", None),
        getattr(getattr(exc, "response", None), "headers", None),
    ):
        if candidate:
            return candidate
    return None


def _short(text: str, limit: int = 500) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."
