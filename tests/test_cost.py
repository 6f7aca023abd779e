"""Cost before a run (the estimate, the CLI's confirmation and refusal) and during it
(one dollar cap over every model the job calls)."""

from __future__ import annotations

import asyncio
import io
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from gpo_engine import cost
from gpo_engine.optimizer import optimize_task
from gpo_engine.task import load_task, open_llm, open_store
from gpo_server.cli import main
from tests.model_server import ModelServer
from tests.scripted_models import ScriptedModels, run_task, write_capitals

# Six different valid rewrites: two steps of three candidates never repeat one,
# so no candidate is dropped as a duplicate and every counted call happens.
PROPOSALS = [f"<START>Name the capital city of the country{'!' * i}<END>" for i in range(6)]


pytestmark = pytest.mark.usefixtures("api_key")


def judge_too(models: ScriptedModels) -> Any:
    """The scripted models plus a judge that gives full marks to a right answer."""

    def answer(messages: list[dict[str, Any]]) -> str:
        text = str(messages[-1]["content"])
        if text.startswith("You are grading"):
            reference = text.split("Reference answer:\n", 1)[1].split("\n", 1)[0]
            given = text.split("Model answer:\n", 1)[1]
            return "Score: 10" if reference in given else "Score: 0"
        return models.answer(messages)

    return answer


# -- the estimate -----------------------------------------------------------------------


async def test_call_counts_match_a_real_run_exactly(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path / "p", steps=2, candidates=3, extra="gpo.racing: false\n")
    task = load_task(prompt)
    est = cost.estimate(task)
    calls = cost.count_calls(task)
    # initial dev 8; per step: train batch 4 + 3 candidates x 8 dev rows; test 2 x 8.
    assert (calls.task, calls.optimizer, calls.judge, calls.embedding) == (
        8 + 2 * (4 + 24) + 16, 6, 0, 0)
    models = ScriptedModels(PROPOSALS)
    async with ModelServer(answer=models.answer) as server:
        result = await run_task(task, server.api_base, tmp_path / "c")
    assert result.rejected == {}
    assert server.requests == est.calls == calls.task + calls.optimizer
    assert models.meta_calls == calls.optimizer


def test_racing_counts_the_slice_for_all_and_the_rest_for_the_top_half(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path, steps=3, candidates=5)  # dev 8 rows, race_size 4
    calls = cost.count_calls(load_task(prompt))
    per_step = 4 + 5 * 4 + 3 * (8 - 4)
    assert calls.task == 8 + 3 * per_step + 16 and calls.optimizer == 15


def test_resuming_counts_only_the_steps_left(tmp_path: Path) -> None:
    task = load_task(write_capitals(tmp_path, steps=4, candidates=2))
    full, resumed = cost.count_calls(task), cost.count_calls(task, steps_done=3)
    per_step = 4 + 2 * 8
    assert full.task == 8 + 4 * per_step + 16
    assert resumed.task == per_step + 16 and resumed.optimizer == 2  # no initial dev scoring
    done = cost.estimate(task, steps_done=4)
    assert done.steps == 0 and done.calls == 16  # only the test scoring is left


def test_judge_calls_follow_task_calls_and_roles_are_priced_separately(tmp_path: Path) -> None:
    prompt = write_capitals(tmp_path, model="openai/gpt-4o-mini",
                            extra="gpo.optimizer: openai/gpt-4o\n")
    est = cost.estimate(load_task(prompt, metric="judge", judge="openai/somebody-elses-judge"))
    roles = {r.role: r for r in est.roles}
    assert set(roles) == {"task", "optimizer", "judge"}
    assert roles["judge"].calls == roles["task"].calls
    assert roles["judge"].dollars is None  # not in litellm's price map
    assert est.unknown_price == ["openai/somebody-elses-judge"]
    task_role = roles["task"]
    assert task_role.dollars == pytest.approx(cost.price(
        "openai/gpt-4o-mini", task_role.prompt_tokens, task_role.completion_tokens))
    assert roles["optimizer"].dollars is not None and roles["optimizer"].dollars > 0
    # The total counts the priced roles only; the unknown one is listed instead.
    assert est.dollars == pytest.approx(task_role.dollars + roles["optimizer"].dollars)
    lines = cost.describe(est)
    assert any("judge" in line and "unknown price" in line for line in lines)
    assert "unknown (openai/somebody-elses-judge)" in lines[-1]
    data = est.to_dict()
    assert json.loads(json.dumps(data))["roles"][2]["role"] == "judge"


def test_prices_from_litellms_local_map() -> None:
    assert cost.price("openai/gpt-4o-mini", 1_000_000, 0) == pytest.approx(0.15)
    assert cost.price("openai/no-such-model-anywhere", 10, 10) is None
    assert cost.price("local/gemma-3-270m", 10_000, 10_000) == 0.0  # runs here, free
    assert cost.price("openai/no-such-model-anywhere", 0, 0) == 0.0  # no calls, no cost


def test_the_embedded_model_costs_nothing(tmp_path: Path) -> None:
    est = cost.estimate(load_task(write_capitals(tmp_path, model="local/gemma-3-270m")))
    assert est.dollars == 0.0 and est.unknown_price == [] and est.calls > 0


def test_token_estimate_grows_with_example_size(tmp_path: Path) -> None:
    short = cost.estimate(load_task(write_capitals(tmp_path / "a")))
    long_body = "Tell me about the country. " * 40 + "\nCountry: {{country}}\nAnswer:\n"
    long = cost.estimate(load_task(write_capitals(tmp_path / "b", body=long_body)))
    assert long.roles[0].prompt_tokens > 5 * short.roles[0].prompt_tokens
    assert long.roles[1].prompt_tokens > short.roles[1].prompt_tokens
    assert cost.tokens("abcd" * 10) == 10 and cost.tokens("") == 1


# -- one cap for every model --------------------------------------------------------------


async def test_one_cap_covers_task_optimizer_and_judge(tmp_path: Path) -> None:
    extra = "gpo.optimizer: openai/gpt-4o\ngpo.judge: openai/gpt-4.1-mini\ngpo.racing: false\n"
    prompt = write_capitals(tmp_path / "p", model="openai/gpt-4o-mini", steps=4, extra=extra)
    answer = judge_too(ScriptedModels(PROPOSALS))

    async def run(cache: Path, cap: float | None) -> Any:
        task = load_task(prompt, max_cost=cap, metric="judge")
        return await run_task(task, server.api_base, cache)

    async with ModelServer(answer=answer) as server:
        free = await run(tmp_path / "uncapped", None)
        full_cost = free.usage["cost"]
        cap = full_cost / 2
        capped = await run(tmp_path / "capped", cap)
    assert free.steps_done == 4 and full_cost > 0
    per_model = capped.usage["per_model"]
    models = ("openai/gpt-4o-mini", "openai/gpt-4o", "openai/gpt-4.1-mini")
    assert all(per_model[m]["cost"] > 0 for m in models), per_model
    # No single model reached the cap: it was their sum that stopped the job.
    assert max(per_model[m]["cost"] for m in models) < cap <= capped.usage["cost"]
    assert "spend limit reached" in capped.stopped
    assert 0 < capped.steps_done < 4
    # Stopped at a step boundary: every finished step is saved, the best so far returned.
    store = open_store(tmp_path / "capped")
    saved = store.latest_for(str(prompt.resolve()))
    store.close()
    assert saved is not None and saved.steps_done == capped.steps_done
    assert saved.best()[0] == capped.best
    assert capped.best_dev.value == 100.0


# -- the CLI: estimate, confirmation, refusal ------------------------------------------------


async def _gpo(*argv: str) -> int:
    return await asyncio.to_thread(main, list(argv))


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


async def test_refuses_to_start_when_the_estimate_is_over_the_cap(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_capitals(tmp_path, model="openai/gpt-4o-mini")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--max-cost", "0.000001", "--yes")
        assert server.requests == 0
    assert code == 1
    err = capsys.readouterr().err
    assert "refusing to start" in err and "over the cap $0.0000" in err
    assert "task      openai/gpt-4o-mini" in err


async def test_above_the_threshold_without_a_terminal_needs_yes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    prompt = write_capitals(tmp_path, model="openai/gpt-4o-mini")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--confirm-above", "0")
        assert code == 1 and server.requests == 0
        assert "pass --yes" in capsys.readouterr().err
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--confirm-above", "0", "--yes", "--json", "--max-cost", "1")
        assert code == 0 and server.requests > 0
    out = json.loads(capsys.readouterr().out)
    assert out["estimate"]["calls"] > 0 and out["estimate"]["dollars"] > 0
    assert out["usage"]["cost"] > 0  # spend so far, in the JSON
    assert out["usage"]["cost"] <= 1


@pytest.mark.parametrize(("typed", "starts"), [("y\n", True), ("n\n", False), ("", False)])
async def test_a_terminal_is_asked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch,
    typed: str, starts: bool
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal(typed))
    prompt = write_capitals(tmp_path, model="openai/gpt-4o-mini")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--confirm-above", "0")
        assert (server.requests > 0) is starts
    assert code == (0 if starts else 1)
    err = capsys.readouterr().err
    assert "start it? the estimate is $" in err
    assert ("not started" in err) is not starts


async def test_below_the_threshold_starts_without_asking(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", _Terminal(""))  # a question would read "" and stop
    prompt = write_capitals(tmp_path)  # unknown price: never above the threshold
    async with ModelServer(answer=ScriptedModels().answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base,
                          "--max-cost", "5")
    assert code == 0
    err = capsys.readouterr().err
    assert "start it?" not in err
    assert "unknown price" in err and "cannot count openai/scripted" in err


async def test_a_cap_reached_before_the_initial_prompt_is_scored_is_a_clean_error(
    tmp_path: Path,
) -> None:
    from gpo_engine.errors import SpendLimitReached
    from gpo_engine.events import Event, JobFailed

    prompt = write_capitals(tmp_path / "p", model="openai/gpt-4o-mini",
                            extra="gpo.concurrency: 1\n")
    events: list[Event] = []
    async with ModelServer(answer=ScriptedModels().answer) as server:
        task = load_task(prompt, max_cost=1e-9)
        llm = open_llm(task, cache_dir=tmp_path / "c", api_base=server.api_base)
        store = open_store(tmp_path / "c")
        try:
            with pytest.raises(SpendLimitReached):
                await optimize_task(task, llm, store, on_event=events.append)
        finally:
            store.close()
            llm.close()
        # Calls queued for a slot are checked when they would go out, so the run
        # stops within a call or two instead of scoring every dev row.
        assert server.requests <= 2
    assert isinstance(events[-1], JobFailed) and "spend limit" in events[-1].error
