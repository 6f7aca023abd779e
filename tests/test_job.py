"""A daemon job's jobs.json entry (gpo_server.job): written, checked and read back."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from gpo_server.job import Job, entry_problem, read_entries


def _finished() -> Job:
    return Job("abc123", "/w/p.prompt", {"steps": 2}, False, None, created=10.0,
               state="finished", started=11.0, ended=20.0, step=2, total_steps=2,
               initial_dev=25.0, best_dev=75.0, prior_cost=0.5, prior_calls=7,
               result={"best": "x"})


def test_a_finished_jobs_entry_reads_back_as_the_same_job() -> None:
    job = _finished()
    entry = job.to_entry()
    assert entry_problem(entry) is None
    back = Job.finished_from_entry(json.loads(json.dumps(entry)))
    for name in ("id", "path", "overrides", "created", "state", "started", "ended", "step",
                 "total_steps", "initial_dev", "best_dev", "error", "error_kind", "result",
                 "cost", "calls"):
        assert getattr(back, name) == getattr(job, name), name
    assert back.task is None and back.seq > 0


def test_an_active_jobs_entry_holds_what_a_restart_resumes() -> None:
    job = Job("a1", "/w/p.prompt", {}, False, None, created=5.0, state="waiting",
              prior_cost=0.25, prior_calls=3)
    assert job.to_entry() == {"id": "a1", "path": "/w/p.prompt", "overrides": {},
                              "created": 5.0, "cost": 0.25, "calls": 3}


def test_read_entries_skips_bad_entries_and_unreadable_files(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    file = tmp_path / "jobs.json"
    assert read_entries(None) == [] and read_entries(file) == []
    good = _finished().to_entry()
    file.write_text(json.dumps({"jobs": [good, {"path": "relative"}, 3]}), encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="gpo.daemon"):
        assert read_entries(file) == [good]
    assert "skipping job entry 2" in caplog.text and "skipping job entry 3" in caplog.text
    file.write_text("{not json", encoding="utf-8")
    with caplog.at_level(logging.WARNING, logger="gpo.daemon"):
        assert read_entries(file) == []
    assert "ignoring unreadable" in caplog.text
