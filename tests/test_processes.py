"""tests/processes.stop: the services' subprocesses always end."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

from tests import processes


def test_a_process_that_obeys_sigterm_ends_with_it() -> None:
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    assert processes.stop(proc) == -signal.SIGTERM


def test_a_process_that_ignores_sigterm_is_killed_after_the_timeout() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-c",
         "import signal, sys, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
         "print('ready', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE)
    assert proc.stdout is not None and proc.stdout.readline() == b"ready\n"
    started = time.monotonic()
    assert processes.stop(proc, timeout=0.5) == -signal.SIGKILL
    assert 0.5 <= time.monotonic() - started < 10
