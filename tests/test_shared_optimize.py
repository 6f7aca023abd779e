"""An optimization on a shared Redis: an outage mid-run loses nothing, and a second
machine with an empty disk cache picks the finished run up with no model call."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from gpo_engine.events import Event
from gpo_engine.task import load_task
from tests.model_server import ModelServer
from tests.redis_server import RedisServer, redis_server
from tests.scripted_models import GOOD, ScriptedModels, run_task, write_capitals

__all__ = ["redis_server"]


pytestmark = pytest.mark.usefixtures("api_key")


async def test_a_redis_outage_mid_run_loses_no_step_for_another_machine(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    prompt = write_capitals(tmp_path / "p", steps=3)
    models = ScriptedModels([GOOD, "<START>Tell me more about the country.<END>"])

    def outage(event: Event) -> None:  # Redis restarted for maintenance during step 2
        if event.kind == "step_finished" and getattr(event, "step", None) == 0:
            redis_server.stop(save=True)
        if event.kind == "step_finished" and getattr(event, "step", None) == 1:
            redis_server.start()

    async with ModelServer(answer=models.answer) as server:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            laptop = await run_task(load_task(prompt), server.api_base, tmp_path / "laptop",
                                    fast_retries=True, on_event=outage)
        said = [str(w.message) for w in caught if "shared cache" in str(w.message)]
        assert len([m for m in said if "was lost" in m]) == 1, said
        assert any("pushed" in m for m in said), said
        assert laptop.steps_done == 3
        calls = server.requests
        ci = await run_task(load_task(prompt), server.api_base, tmp_path / "ci",
                            fast_retries=True)
    assert server.requests == calls  # every step and answer came from Redis
    assert ci.steps_done == 3 and ci.best == laptop.best and ci.best_dev == laptop.best_dev
