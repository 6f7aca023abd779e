"""The GPO loop end to end against scripted models behind the test model server."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from gpo_engine.errors import ModelCallError
from gpo_engine.events import Event, JobFailed, JobFinished, JobStarted, StepFinished
from gpo_engine.optimizer import Result, pick_suggestion
from gpo_engine.racing import race_calls, race_leaders
from gpo_engine.task import load_task, open_store
from gpo_engine.trajectory import CandidateRecord, StepRecord, Trajectory
from tests.model_server import Fault, ModelServer
from tests.prompt_files import write_prompt
from tests.scripted_models import (
    GOOD,
    ScriptedModels,
    capital_rows,
    is_meta_prompt,
    run_task,
    write_capitals,
)

pytestmark = pytest.mark.usefixtures("api_key")


async def _run(prompt: Path, server: ModelServer, cache: Path, **kw: Any) -> Result:
    # Retries back off for a second or more by default; these tests need no wait.
    result: Result = await run_task(load_task(prompt), server.api_base, cache,
                                    fast_retries=True, **kw)
    return result


async def test_finds_the_better_prompt_and_saves_every_step(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p")
    models = ScriptedModels([GOOD, "<START>Tell me more about the country.<END>", "no markers"])
    events: list[Event] = []
    async with ModelServer(answer=models.answer) as server:
        result = await _run(prompt, server, tmp_path / "c", on_event=events.append)
    assert result.initial_dev.value == 0.0
    assert result.best.startswith("Name the capital city of the country.\nCountry: {{country}}")
    assert result.best_dev.value == 100.0 and result.best_dev.n == 8
    assert result.best_test is not None and result.best_test.value == 100.0
    assert result.steps_done == 2 and result.stopped == ""
    assert result.rejected.get("unparseable", 0) >= 1
    # "Tell me about the" -> "Name the capital city of the": 3 replaced, 2 added.
    assert result.distance == 5
    kinds = [e.kind for e in events]
    assert kinds[0] == "job_started" and kinds[-1] == "job_finished"
    assert kinds.count("step_started") == kinds.count("step_finished") == 2
    store = open_store(tmp_path / "c")
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None and saved.steps_done == 2
    assert saved.best()[0] == result.best


async def test_cancelled_run_resumes_at_the_next_step_without_paying_twice(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p", steps=3)
    cancel = asyncio.Event()

    def stop_after_first_step(event: Event) -> None:
        if isinstance(event, StepFinished):
            cancel.set()

    models = ScriptedModels()
    async with ModelServer(answer=models.answer) as server:
        first = await _run(prompt, server, tmp_path / "c", on_event=stop_after_first_step,
                           cancel=cancel)
        assert first.stopped == "cancelled" and first.steps_done == 1
        calls_first = server.requests
        events: list[Event] = []
        second = await _run(prompt, server, tmp_path / "c", on_event=events.append)
        calls_second = server.requests - calls_first
    started = [e for e in events if isinstance(e, JobStarted)]
    assert started[0].resumed_at == 1
    assert second.steps_done == 3
    # The trajectory's spend covers both runs, not only the last one.
    store = open_store(tmp_path / "c")
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None
    assert saved.usage["calls"] == calls_first + calls_second
    assert second.usage["calls"] < saved.usage["calls"]
    # An uninterrupted run in a fresh cache, for comparison.
    async with ModelServer(answer=ScriptedModels().answer) as server:
        await _run(prompt, server, tmp_path / "fresh")
        calls_uninterrupted = server.requests
    assert calls_first + calls_second <= calls_uninterrupted


async def test_a_repeated_run_makes_no_model_calls(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        first = await _run(prompt, server, tmp_path / "c")
        before = server.requests
        again = await _run(prompt, server, tmp_path / "c", restart=True)
        assert server.requests == before
    assert again.usage["calls"] == 0 and again.usage["cache_hits"] > 0
    assert again.best == first.best


async def test_no_usable_candidate_keeps_going_and_says_so(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p")
    events: list[Event] = []
    junk = ["", "Sure! Here is a prompt", "<START><END>",
            "<START>Describe {{nation}} in detail.<END>"]
    async with ModelServer(answer=ScriptedModels(junk).answer) as server:
        result = await _run(prompt, server, tmp_path / "c", on_event=events.append)
    assert result.steps_done == 2 and not result.improved
    finished = [e for e in events if isinstance(e, StepFinished)]
    assert all(e.step_dev is None and "no usable candidate" in e.message for e in finished)
    assert result.rejected.get("lost_variable", 0) >= 1, result.rejected
    assert sum(result.rejected.values()) == 2 * 3


async def test_outage_fails_the_job_but_keeps_finished_steps(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p", steps=3)
    models = ScriptedModels()
    events: list[Event] = []
    down = {"on": False}

    def faults(index: int, body: dict[str, object]) -> Fault | None:
        return Fault(status=500) if down["on"] else None

    def outage_after_first_step(event: Event) -> None:
        events.append(event)
        if isinstance(event, StepFinished):
            down["on"] = True

    async with ModelServer(answer=models.answer, faults=faults) as server:
        with pytest.raises(ModelCallError):
            await _run(prompt, server, tmp_path / "c", on_event=outage_after_first_step)
        assert any(isinstance(e, JobFailed) for e in events)
        down["on"] = False
        resumed: list[Event] = []
        result = await _run(prompt, server, tmp_path / "c", on_event=resumed.append)
    assert next(e for e in resumed if isinstance(e, JobStarted)).resumed_at == 1
    assert result.steps_done == 3
    assert isinstance(resumed[-1], JobFinished)


async def test_optimizer_outage_is_not_saved_as_an_empty_step(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p")

    def faults(index: int, body: dict[str, Any]) -> Fault | None:
        return Fault(status=500) if is_meta_prompt(body["messages"]) else None

    async with ModelServer(answer=ScriptedModels().answer, faults=faults) as server:
        with pytest.raises(ModelCallError, match="all 3 optimizer calls failed"):
            await _run(prompt, server, tmp_path / "c")
    store = open_store(tmp_path / "c")
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None and saved.steps_done == 0


async def test_spend_limit_stops_at_a_step_boundary(tmp_path: Path) -> None:
    # gpt-4o-mini has a price in litellm's local map, so the spend is real dollars.
    # The initial scoring costs about $0.00004 and each step about $0.00017.
    prompt = write_capitals(tmp_path / "p", model="openai/gpt-4o-mini", steps=3,
                            extra="gpo.max_cost: 0.0003\n")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        result = await _run(prompt, server, tmp_path / "c")
    assert "spend limit reached" in result.stopped
    assert result.steps_done < 3
    assert result.usage["cost"] >= 0.0003


def test_race_leaders_keeps_the_top_half_and_ties() -> None:
    assert race_leaders([]) == []
    assert race_leaders([10.0, 90.0, 50.0, 70.0]) == [1, 3]
    assert race_leaders([50.0, 50.0, 50.0, 10.0]) == [0, 1]  # a tie goes to the earlier one
    assert race_leaders([0.0, 0.0, 100.0, 0.0, 0.0]) == [0, 1, 2]
    assert race_leaders([30.0]) == [0]
    assert race_leaders([20.0, 80.0, 60.0]) == [1, 2]


LONG = "Please kindly and carefully say {{x}} out loud now."


def _trajectory() -> Trajectory:
    t = Trajectory("k", "/p", 3, "Say {{x}}.", 40.0, 10)
    t.steps.append(StepRecord(0, 20, "Say {{x}}.", 0.0, (
        CandidateRecord("Say {{x}} now.", 1, "scored", 55.0, 10),
        CandidateRecord(LONG, 7, "scored", 90.0, 10),
        CandidateRecord("Shout {{x}}.", 1, "raced_out", 99.0, 4),
    ), LONG, 90.0))
    return t


def test_suggestion_is_the_best_within_the_budget_that_beats_the_file() -> None:
    t = _trajectory()
    assert pick_suggestion(t, "Say {{x}}.", budget=10) == (LONG, 90.0)
    # With a small budget the big rewrite is out of reach; raced-out scores never count.
    assert pick_suggestion(t, "Say {{x}}.", budget=2) == ("Say {{x}} now.", 55.0)
    # Nothing beats the file's text when it is already the best,
    # also once it was written back with the file's final newline.
    assert pick_suggestion(t, LONG, 3) is None
    assert pick_suggestion(t, LONG + "\n", 3) is None
    assert t.dev_score_of("Say {{x}} now.\n") == 55.0


async def test_a_failed_candidate_scoring_cancels_the_other_candidates(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A systemic failure scoring one candidate ends the step; the other candidates'
    # scorings must not go on calling the model behind it (in the daemon they would
    # overlap the job's retry and pay twice for the same rows).
    from types import SimpleNamespace

    from gpo_engine import racing

    release = asyncio.Event()  # never set: the sibling scoring waits until cancelled
    cancelled: list[str] = []

    async def fake_score(task: Any, llm: Any, text: str, rows: Any) -> Any:
        if text == "bad":
            raise ModelCallError("m", "systemic", "down")
        try:
            await release.wait()
        except asyncio.CancelledError:
            cancelled.append(text)
            raise

    monkeypatch.setattr(racing, "score", fake_score)
    task = SimpleNamespace(examples=SimpleNamespace(dev=[]),
                           settings=SimpleNamespace(racing=False, race_size=4))
    with pytest.raises(ModelCallError):
        await racing.score_candidates(task, None, ["slow", "bad"])  # type: ignore[arg-type]
    assert cancelled == ["slow"]


async def test_the_dollar_cap_covers_the_job_across_resumes(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p", model="openai/gpt-4o-mini", steps=4,
                            extra="gpo.max_cost: 0.0003\n")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        first = await _run(prompt, server, tmp_path / "c")
        assert "spend limit reached" in first.stopped and first.steps_done < 4
        calls = server.requests
        again = await _run(prompt, server, tmp_path / "c")
        # The resumed run starts with the job's spend already at the cap: no new step.
        assert server.requests == calls
    assert again.steps_done == first.steps_done
    assert "spend limit reached" in again.stopped


async def test_relevance_by_embeddings_when_an_embedding_model_is_set(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p", steps=3,
                            extra="gpo.embedding: openai/text-embedding-3-small\n")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        result = await _run(prompt, server, tmp_path / "c")
        # Steps 2 and 3 have earlier prompts to rank; each text is embedded once.
        assert server.embedding_requests >= 1
    assert result.steps_done == 3 and result.best_dev.value == 100.0


def test_race_rounds_halve_the_field_and_double_the_rows() -> None:
    # 8 candidates, 32 dev rows, slice 8: 8 x 8, then 4 x 8 more, then 2 x 16 more.
    assert race_calls(8, 32, 8) == 64 + 32 + 32 == 256 // 2
    assert race_calls(5, 8, 4) == 5 * 4 + 3 * 4
    assert race_calls(2, 32, 8) == 64  # nothing to race
    assert race_calls(8, 8, 8) == 64  # dev no bigger than the slice


async def test_racing_spends_half_the_calls_and_keeps_the_clear_winner(tmp_path: Path) -> None:
    # 24 dev rows (all pinned), 8 candidates of which one asks for the capital.
    prompt = write_capitals(tmp_path / "p", steps=1, candidates=8)
    write_prompt(prompt.parent, "capitals",
                 prompt.read_text().replace("gpo.race_size: 4", "gpo.race_size: 6"),
                 [*capital_rows(["dev"]),
                  {"country": "Chad", "expected": "N'Djamena", "split": "train"}])
    proposals = [GOOD] + [f"<START>Describe the country in style {i}.<END>" for i in range(7)]
    async with ModelServer(answer=ScriptedModels(proposals).answer) as server:
        result = await _run(prompt, server, tmp_path / "c")
    store = open_store(tmp_path / "c")
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None
    step = saved.steps[0]
    raced = [c for c in step.candidates if c.status in ("scored", "raced_out")]
    assert len(raced) == 8
    # The winner saw every dev row, and the field cost exactly the race's calls.
    assert step.chosen.startswith("Name the capital city") and step.chosen_dev == 100.0
    assert sum(c.dev_n for c in raced) == race_calls(8, 24, 6) == 8 * 6 + 4 * 6 + 2 * 12
    assert result.best_dev.value == 100.0


CHAT_USER = '\n{{role "user"}}{{> header}}Country: {{country}}\nAnswer:\n'
CHAT_BODY = '{{role "system"}}You are terse.' + CHAT_USER


def _write_chat(folder: Path, extra: str = "") -> Path:
    """The capitals task as a system and a user message, the user one opening with a partial."""
    prompt = write_capitals(folder, body=CHAT_BODY, extra=extra)
    (folder / "_header.prompt").write_text("Answer the question below.\n", encoding="utf-8")
    return prompt


class _ChatModels(ScriptedModels):
    """ScriptedModels that read every message of a multi-message prompt, and keep the
    meta-prompts they were sent."""

    def __init__(self, proposals: list[str]) -> None:
        super().__init__(proposals)
        self.meta_prompts: list[str] = []

    def answer(self, messages: list[dict[str, Any]]) -> str:
        if is_meta_prompt(messages):
            self.meta_prompts.append("\n".join(str(m.get("content", "")) for m in messages))
            return super().answer(messages)
        joined = "\n".join(str(m.get("content", "")) for m in messages)
        return super().answer([{"role": "user", "content": joined}])


async def test_a_multi_message_prompt_rewrites_only_its_system_text(tmp_path: Path) -> None:
    prompt = _write_chat(tmp_path / "p")
    # A candidate that writes a role marker into the system text would move the
    # user message's boundary: rejected as lost_structure.
    models = _ChatModels([GOOD, '<START>Name the capital.\n{{role "user"}}Tell me.<END>',
                          "<START>Say the capital of the country, nothing else.<END>"])
    async with ModelServer(answer=models.answer) as server:
        result = await _run(prompt, server, tmp_path / "c")
    assert result.best == '{{role "system"}}Name the capital city of the country.' + CHAT_USER
    assert result.best_dev.value == 100.0
    assert result.rejected.get("lost_structure", 0) >= 1, result.rejected
    # The optimizer saw the system text only, never a role marker.
    assert models.meta_prompts and all("{{role" not in m for m in models.meta_prompts)
    assert "The current prompt is:\nYou are terse.\n" in models.meta_prompts[0]
    store = open_store(tmp_path / "c")
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None
    records = [c for s in saved.steps for c in s.candidates]
    scored = [c for c in records if c.status in ("scored", "raced_out")]
    assert scored and all(c.text.startswith('{{role "system"}}') and c.text.endswith(CHAT_USER)
                          for c in scored)
    lost = [c for c in records if c.status == "lost_structure"]
    assert lost and all(c.detail == 'adds {{role "user"}}' for c in lost)
    # Distances are between whole bodies: "You are terse." -> "Name the ... country.".
    first = next(c for c in scored if c.text.startswith('{{role "system"}}Name the capital city'))
    assert first.distance == 7


async def test_target_all_rejects_candidates_that_drop_a_role_marker_or_partial(
        tmp_path: Path) -> None:
    prompt = _write_chat(tmp_path / "p", extra="gpo.target: all\n")
    kept = '{{role "system"}}Name the capital city of the country.' + CHAT_USER
    no_partial = kept.replace("{{> header}}", "")
    no_role = kept.replace('{{role "user"}}', "")
    models = _ChatModels([f"<START>{no_partial}<END>", f"<START>{kept}<END>",
                          f"<START>{no_role}<END>"])
    async with ModelServer(answer=models.answer) as server:
        result = await _run(prompt, server, tmp_path / "c")
    assert result.best == kept.rstrip() and result.best_dev.value == 100.0
    # The whole body is the target: the optimizer is shown the role markers.
    assert any("{{role" in m for m in models.meta_prompts)
    store = open_store(tmp_path / "c")
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None
    records = [c for s in saved.steps for c in s.candidates]
    assert len(records) == 2 * 3
    lost = [c for c in records if c.status == "lost_structure"]
    # Both steps drop both, counted with the other rejected candidates.
    assert sorted(c.detail for c in lost) == ["drops {{> header}}", "drops {{> header}}",
                                              'drops {{role "user"}}', 'drops {{role "user"}}']
    assert result.rejected["lost_structure"] == 4
    assert sum(result.rejected.values()) == len(records) - sum(
        c.status in ("scored", "raced_out") for c in records)


def test_a_candidate_that_drops_a_partial_is_rejected_as_lost_structure() -> None:
    # The structure check alone: no prompt file, no partial file.
    from gpo_engine import update
    from gpo_engine.optimizer import _in_place
    from gpo_engine.target import target_of

    body = '{{role "system"}}You are terse.\n{{role "user"}}{{> _header}}Q: {{question}}\n'
    whole = target_of(body, "all")
    generation = update.Generation(
        (update.Candidate('{{role "system"}}Be brief.\n{{role "user"}}Q: {{question}}\n', 3,
                          False),), ())
    out = _in_place(generation, whole, body)
    assert out.candidates == ()
    assert [(r.reason, r.detail) for r in out.rejected] == [
        ("lost_structure", "drops {{> _header}}")]
