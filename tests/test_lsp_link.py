"""The link to the daemon: reconnection delays, the stale view, fresh progress tokens."""

from __future__ import annotations

from gpo_server.lsp_actions import list_actions
from gpo_server.lsp_hover import hover_markdown
from gpo_server.lsp_link import (
    MAX_DELAY,
    job_token,
    lost_message,
    reconnect_delay,
    stale_view,
)
from gpo_server.lsp_progress import end_message
from gpo_server.prompt_state import parse_state
from tests.lsp_samples import INITIAL, state_dict

RUNNING = {"id": "j1", "status": "running", "step": 1, "total_steps": 12}


def test_reconnection_waits_double_up_to_a_cap() -> None:
    delays = [reconnect_delay(n) for n in range(10)]
    assert delays[:4] == [0.25, 0.5, 1.0, 2.0]
    assert delays == sorted(delays) and delays[-1] == MAX_DELAY


def test_while_down_the_job_is_not_shown_nor_offered_to_stop() -> None:
    state = parse_state(state_dict(job=RUNNING))
    assert stale_view(state, "up") is state and stale_view(None, "down") is None
    down = stale_view(state, "down")
    assert down is not None and down.job is None and down.scored == state.scored
    titles = [a.title for a in list_actions(down, INITIAL, "file:///w/a.prompt")]
    assert "Stop optimizing" not in titles and "Optimize this prompt" in titles
    text = hover_markdown(down, INITIAL, daemon_down=True)
    assert text.splitlines()[1].startswith("- the gpo daemon is not running: reconnecting")
    assert "optimizing:" not in text and "- dev: **65.0**" in text
    assert "not running" in hover_markdown(None, INITIAL, daemon_down=True)
    assert "not running" not in hover_markdown(state, INITIAL)


def test_a_job_followed_again_gets_a_fresh_token() -> None:
    assert [job_token("abc", n) for n in (1, 2, 3)] == [
        "gpo-job-abc", "gpo-job-abc-2", "gpo-job-abc-3"]


def test_the_words_of_an_outage() -> None:
    assert lost_message("the gpo daemon stopped while following the job") == (
        "the gpo daemon stopped while following the job; reconnecting, and starting it again "
        "if needed. Scores and progress pause until it is back.")
    assert end_message(None, daemon_gone=True).startswith("paused: the gpo daemon stopped")
    assert end_message({"kind": "state"}) == "stopped following"
