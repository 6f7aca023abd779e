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
_TTL_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


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


def parse_ttl(text: str | None, *, source: str = TTL_VARIABLE) -> int | None:
    """Seconds from `3600`, `90s`, `30m`, `12h` or `7d`; None for unset, empty or 0."""
    if text is None or not text.strip():
        return None
    match = re.fullmatch(r"\s*(\d+)\s*([smhd]?)\s*", text.lower())
    if match is None:
        raise ConfigError(f"{source}: {text!r} is not a duration; use seconds (3600) or a "
                          "number with s, m, h or d (12h, 7d)")
    seconds = int(match.group(1)) * _TTL_UNITS[match.group(2)]
    return seconds or None


def ttl_from_env() -> int | None:
    return parse_ttl(os.environ.get(TTL_VARIABLE))
