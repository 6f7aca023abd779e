"""The trajectory store: round trips, atomic per-step saves, corrupt records ignored."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpo_engine.trajectory import (
    CandidateRecord,
    StepRecord,
    Trajectory,
    TrajectoryStore,
    trajectory_key,
)


def _trajectory() -> Trajectory:
    t = Trajectory("k1", "/w/a.prompt", 3, "Say {{x}}", 40.0, 10)
    t.steps.append(StepRecord(0, 30, "Say {{x}}", 50.0, (
        CandidateRecord("Say {{x}} now", 1, "scored", 60.0, 10),
        CandidateRecord("Tell {{x}}", 1, "raced_out", 20.0, 4),
        CandidateRecord("", -1, "unparseable", detail="empty"),
    ), "Say {{x}} now", 60.0))
    t.dev_outcomes["Say {{x}}"] = {"u1": 1.0, "u2": 0.0}
    return t


def test_json_round_trip() -> None:
    t = _trajectory()
    back = Trajectory.from_json(t.to_json())
    assert back == t
    assert back.steps[0].candidates[1].status == "raced_out"


def test_best_history_and_scores() -> None:
    t = _trajectory()
    assert t.best() == ("Say {{x}} now", 60.0)
    assert t.current() == ("Say {{x}} now", 60.0)
    assert [h[0] for h in t.history()] == ["Say {{x}}", "Say {{x}} now"]
    # A raced-out candidate has only a slice score: it is not a full-dev result.
    assert t.dev_score_of("Tell {{x}}") is None
    assert t.dev_score_of("Say {{x}}") == 40.0


def test_best_prefers_earliest_on_a_tie() -> None:
    t = Trajectory("k", "/p", 2, "A {{x}}", 50.0, 4)
    t.steps.append(StepRecord(0, 10, "A {{x}}", 0.0,
                              (CandidateRecord("B {{x}}", 1, "scored", 50.0, 4),), "B {{x}}", 50.0))
    assert t.best() == ("A {{x}}", 50.0)


def test_store_saves_and_resumes(tmp_path: Path) -> None:
    store = TrajectoryStore(tmp_path / "t")
    t = _trajectory()
    store.save(t)
    store.close()
    again = TrajectoryStore(tmp_path / "t")
    assert again.load("k1") == t
    assert again.latest_for("/w/a.prompt") == t
    assert again.load("missing") is None


def test_unreadable_record_is_ignored_with_a_warning(tmp_path: Path) -> None:
    store = TrajectoryStore(tmp_path / "t")
    store._store.set("run:bad", "{not json")  # type: ignore[union-attr]
    with pytest.warns(UserWarning, match="unreadable trajectory"):
        assert store.load("bad") is None


def test_key_is_stable_and_sensitive() -> None:
    a = {"path": "/p", "settings": {"steps": 3}, "examples": "h1"}
    assert trajectory_key(a) == trajectory_key(dict(reversed(list(a.items()))))
    assert trajectory_key(a) != trajectory_key({**a, "examples": "h2"})


def test_unusable_directory_degrades(tmp_path: Path) -> None:
    # A plain file where the store's folder should be: as unusable as a read-only
    # or full disk, and it fails for root too (chmod does not stop root).
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.warns(UserWarning, match="trajectory store unavailable"):
        store = TrajectoryStore(blocker / "sub")
    store.save(_trajectory())  # no crash
    assert store.load("k1") is None
