"""The shared cache's settings: where Redis is (`GPO_CACHE_URL`, `--cache-url`) and how
long a response lives there (`GPO_CACHE_TTL`), checked, and a URL fit to show.

The CLI checks these before any work (server/cli.py); gpo_engine.redis_store,
the store itself, uses them.
"""

from __future__ import annotations

import os
import re
import urllib.parse

from gpo_engine.errors import ConfigError

URL_VARIABLE = "GPO_CACHE_URL"
TTL_VARIABLE = "GPO_CACHE_TTL"
_SCHEMES = ("redis", "rediss")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def check_url(url: str, *, source: str = URL_VARIABLE) -> str:
    """`url` when it is a Redis URL gpo can use; ConfigError naming `source` otherwise."""
    shown = redact(url)
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port  # ValueError for a port that is not a number in 0..65535
    except ValueError as error:
        raise ConfigError(f"{source}: {shown!r} is not a valid URL ({error})") from None
    if port == 0:
        raise ConfigError(f"{source}: {shown!r}: port 0 cannot be connected to")
    if parts.scheme not in _SCHEMES:
        raise ConfigError(f"{source}: {shown!r} is not a Redis URL; use "
                          "redis://[:password@]host:port/db, or rediss:// for TLS")
    if not parts.hostname:
        raise ConfigError(f"{source}: {shown!r} names no host")
    db = parts.path.lstrip("/")
    if db and not db.isdigit():
        raise ConfigError(f"{source}: {shown!r}: the database after the port must be a "
                          f"number, not {db!r}")
    return url


def redact(url: str) -> str:
    """The URL with its password replaced by `***`, for messages."""
    return re.sub(r"(?<=://)([^:@/]*):[^@/]*@", r"\1:***@", url)


def parse_duration(text: str | None, *, source: str, fractional: bool) -> float | None:
    """Seconds from a number with an optional unit (s, m, h or d): `3600`, `90s`, `12h`,
    and with `fractional` also `2.5`; None for unset or empty. ConfigError names `source`."""
    if text is None or not text.strip():
        return None
    number = r"\d+(?:\.\d+)?" if fractional else r"\d+"
    match = re.fullmatch(rf"\s*({number})\s*([smhd]?)\s*", text.lower())
    if match is None:
        seconds = "30, 2.5" if fractional else "3600"
        raise ConfigError(f"{source}: {text!r} is not a duration; use seconds ({seconds}) or "
                          "a number with s, m, h or d (90s, 12h, 7d)")
    return float(match.group(1)) * _UNITS[match.group(2)]


def parse_ttl(text: str | None, *, source: str = TTL_VARIABLE) -> int | None:
    """Whole seconds (Redis expires keys by them); None for unset, empty or 0."""
    seconds = parse_duration(text, source=source, fractional=False)
    if not seconds:
        return None
    return int(seconds)


def ttl_from_env() -> int | None:
    return parse_ttl(os.environ.get(TTL_VARIABLE))
