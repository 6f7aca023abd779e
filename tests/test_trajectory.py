"""The trajectory store: round trips, atomic per-step saves, corrupt records ignored."""

from __future__ import annotations

import asyncio
import json
import warnings
from pathlib import Path
from typing import Any

import pytest

from gpo_engine.trajectory import (
    CandidateRecord,
    StepRecord,
    Trajectory,
    TrajectoryStore,
    trajectory_key,
)
from gpo_server.cli import main
from tests.damaged_stores import ruin_key_index
from tests.model_server import ModelServer
from tests.scripted_models import ScriptedModels, write_capitals


async def _gpo(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


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
    assert store.directory == tmp_path / "t"  # where optimize keeps the spend journal
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
    assert store.directory is None  # and no spend journal beside it


# -- records that do not validate, stores that are damaged ---------------------------


def _edited(change: Any) -> str:
    data = json.loads(_trajectory().to_json())
    change(data)
    return json.dumps(data)


@pytest.mark.parametrize(("change", "reason"), [
    (lambda d: d.update(initial_dev="high"), "field 'initial_dev' should be a number"),
    (lambda d: d.update(initial_dev=1e308), "should be a score from 0 to 100, got 1e+308"),
    (lambda d: d.update(dev_n=-4), "field 'dev_n' should be 0 or more"),
    (lambda d: d.update(total_steps=0), "1 steps recorded but total_steps is 0"),
    (lambda d: d["steps"][0].update(candidates="x"), "'candidates' should be a list of objects"),
    (lambda d: d["steps"][0].update(step=3), "step 0 is numbered 3"),
    (lambda d: d["steps"][0]["candidates"][0].update(dev=250.0),
     "step 0 candidate 0: field 'dev' should be a score from 0 to 100"),
    (lambda d: d["steps"][0]["candidates"][0].update(text=None),
     "field 'text' should be a string"),
    (lambda d: d.update(steps={"0": {}}), "field 'steps' should be a list of steps"),
    (lambda d: d.update(usage={"per_model": {"m": {"calls": "many"}}}),
     "field 'usage': m calls should be an integer (0 or more)"),
    (lambda d: d.update(usage={"per_model": {"m": {"cost": -1.0}}}),
     "field 'usage': m cost should be a number (0 or more)"),
    (lambda d: d.update(usage={"per_model": ["m"]}), "'per_model' should be an object"),
    (lambda d: d["dev_outcomes"].update(x={"u": 7}), "numbers from 0 to 1"),
    (lambda d: d.update(colour="red"), "unknown field(s) colour"),
])
def test_a_hand_edited_record_is_ignored_with_a_warning(tmp_path: Path, change: Any,
                                                        reason: str) -> None:
    # Before, these gave TypeError/AttributeError in optimize or report, or (1e308,
    # a usage of the wrong shape) became the file's latest run.
    store = TrajectoryStore(tmp_path / "t")
    store._store.set("run:k1", _edited(change))  # type: ignore[union-attr]
    store._store.set("path:/w/a.prompt", "k1")  # type: ignore[union-attr]
    with pytest.warns(UserWarning, match="ignoring unreadable trajectory k1") as caught:
        assert store.latest_for("/w/a.prompt") is None
    assert reason in str(caught[0].message)
    store.save(_trajectory())  # the next run's save replaces it
    assert store.load("k1") == _trajectory()
    store.close()


def test_a_record_of_the_right_shape_loads() -> None:
    t = _trajectory()
    t.usage = {"calls": 3, "cost": 0.5, "unknown_price": False,
               "per_model": {"m": {"calls": 3, "cost": 0.5, "unknown_price": False,
                                   "a_field_of_a_newer_gpo": "kept out"}}}
    assert Trajectory.from_json(t.to_json()) == t


def test_a_damaged_store_keeps_every_run_it_can_read(tmp_path: Path) -> None:
    store = TrajectoryStore(tmp_path / "t")
    runs = []
    for n in range(3):
        t = _trajectory()
        t.key, t.path = f"k{n}", f"/w/{n}.prompt"
        store.save(t)
        runs.append(t)
    store.close()
    db = tmp_path / "t" / "cache.db"
    ruin_key_index(db)  # every lookup fails; every row is intact
    again = TrajectoryStore(tmp_path / "t")
    with pytest.warns(RuntimeWarning, match="trajectory store .* is corrupt") as caught:
        assert again.latest_for("/w/0.prompt") == runs[0]
    message = str(caught[0].message)
    assert "with the 6 entries that could still be read" in message  # 3 runs, 3 paths
    assert "start again from step 1" in message and "response cache" in message
    assert [again.latest_for(f"/w/{n}.prompt") for n in range(3)] == runs
    assert len(list(tmp_path.glob("t.corrupt-*"))) == 1
    again.close()


@pytest.mark.usefixtures("api_key")
async def test_optimize_report_and_export_survive_a_truncated_store(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt, cache = write_capitals(tmp_path / "p"), tmp_path / "cache"
    async with ModelServer(answer=ScriptedModels().answer) as server:
        common = ["--api-base", server.api_base, "--cache-dir", str(cache)]
        assert await _gpo("optimize", str(prompt), *common, "--json") == 0
        first = json.loads(capsys.readouterr().out)
        db = cache / "trajectories" / "cache.db"
        with open(db, "r+b") as f:
            f.truncate(db.stat().st_size // 2)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert await _gpo("optimize", str(prompt), *common, "--json") == 0
        again = json.loads(capsys.readouterr().out)
        # Nothing could be kept, so the run starts over, and as the warning says,
        # replaying the finished steps costs no model call: every answer is cached.
        assert again["steps_done"] == first["steps_done"] and again["best"] == first["best"]
        assert again["usage"]["calls"] == 0
        [warning] = [str(w.message) for w in caught if "trajectory store" in str(w.message)]
        assert "is corrupt" in warning and "with the 0 entries" in warning
        assert await _gpo("report", str(prompt), *common, "--no-test",
                          "-o", str(tmp_path / "r.html")) == 0
        assert await _gpo("trajectory", str(prompt), "--jsonl", "--cache-dir", str(cache)) == 0


@pytest.mark.usefixtures("api_key")
async def test_report_and_export_on_a_store_damaged_under_them(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt, cache = write_capitals(tmp_path / "p"), tmp_path / "cache"
    async with ModelServer(answer=ScriptedModels().answer) as server:
        assert await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--cache-dir", str(cache), "--json") == 0
    capsys.readouterr()
    db = cache / "trajectories" / "cache.db"
    ruin_key_index(db)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert await _gpo("trajectory", str(prompt), "--jsonl", "--cache-dir", str(cache)) == 0
        assert await _gpo("report", str(prompt), "--cache-dir", str(cache), "--no-test",
                          "-o", str(tmp_path / "r.html")) == 0
    assert json.loads(capsys.readouterr().out.splitlines()[0])["kind"] == "trajectory"
    assert sum("trajectory store" in str(w.message) for w in caught) == 1  # healed once
