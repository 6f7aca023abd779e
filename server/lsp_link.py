"""The language server's link to the daemon: whether it holds, what to say, when to retry.

The link is "unknown" until the daemon first answers, "up" while it does, and
"down" from the moment an answer or a job's event stream breaks until it
answers again. Only a break of a link that was up is news to the user (one
warning per outage); a daemon that never answered is logged, as before. While
down, what the server holds is from before the break: the hover says so, and
the job it knew of is not offered to stop.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Literal

from gpo_server.prompt_state import PromptState

Link = Literal["unknown", "up", "down"]

FIRST_DELAY = 0.25  # seconds before the first reconnection attempt
MAX_DELAY = 15.0  # the longest wait between two attempts

LOST = ("{reason}; reconnecting, and starting it again if needed. Scores and progress "
        "pause until it is back.")
DOWN_LINE = ("- the gpo daemon is not running: reconnecting. What is shown here is from "
             "before it stopped.")


def reconnect_delay(attempt: int) -> float:
    """Seconds to wait before reconnection attempt `attempt` (0-based): doubling, capped."""
    return float(min(MAX_DELAY, FIRST_DELAY * 2 ** max(0, attempt)))


def lost_message(reason: str) -> str:
    """The one warning of an outage: the client's plain sentence, and what happens now."""
    return LOST.format(reason=reason)


def stale_view(state: PromptState | None, link: Link) -> PromptState | None:
    """The state as shown while the link is down: no job (it may be gone, or resumed under
    a daemon that has not answered yet), so no "Stop optimizing" and no "running"."""
    if state is None or link != "down" or state.job is None:
        return state
    return replace(state, job=None)


def job_token(job_id: str, follow: int) -> str:
    """The progress token of the `follow`-th time (1-based) a job is followed.

    A token is created once per client session (pygls refuses a second
    `create` of one: "Token is already registered"), so a job followed again
    after the daemon came back gets a fresh one."""
    return f"gpo-job-{job_id}" if follow <= 1 else f"gpo-job-{job_id}-{follow}"
