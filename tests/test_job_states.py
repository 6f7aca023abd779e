"""The job states (gpo_server.job_states): one spelling for the daemon, its clients and
the editor."""

from __future__ import annotations

import subprocess
import sys

from gpo_server.job_states import (
    ACTIVE,
    RETRYING,
    STATUSES,
    TERMINAL,
    is_active,
    is_retrying,
    status_of,
)


def test_every_state_is_active_or_terminal_and_folds_into_a_status() -> None:
    assert not set(ACTIVE) & set(TERMINAL)
    for state in (*ACTIVE, *TERMINAL):
        assert status_of(state) in STATUSES
    assert [status_of(s) for s in ACTIVE] == ["queued", "running", "running", "running"]
    assert [status_of(s) for s in TERMINAL] == list(TERMINAL)


def test_retrying_jobs_are_active() -> None:
    assert all(is_active(s) and is_retrying(s) for s in RETRYING)
    assert not is_retrying("running") and not is_active("finished")


def test_the_module_imports_nothing_of_gpo() -> None:
    code = ("import sys, gpo_server.job_states\n"
            "print(sorted(m for m in sys.modules if m.startswith(('gpo_engine', 'aiohttp'))))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
