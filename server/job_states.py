"""A daemon job's states, in one place for the daemon, its clients and the editor.

    queued -> running -> finished | failed | cancelled
                 ^  \\
                 |   v
           waiting | failing      (model calls fail; retried with backoff)

`waiting` is an outage the provider asked us to wait out (rate limited),
`failing` any other (timeouts, server errors). Both are still running: a
client that knows only the five `STATUSES` shows them as "running".

Imports nothing: the language server reads these too.
"""

from __future__ import annotations

RETRYING = ("waiting", "failing")
ACTIVE = ("queued", "running", *RETRYING)
TERMINAL = ("finished", "failed", "cancelled")
# What the prompt state's `job.status` says: the exact state folded into five values.
STATUSES = ("queued", "running", *TERMINAL)


def status_of(state: str) -> str:
    """The state as one of STATUSES: a retrying job is running."""
    return "running" if state in RETRYING else state


def is_active(state: str) -> bool:
    return state in ACTIVE


def is_retrying(state: str) -> bool:
    return state in RETRYING
