"""`gpo check` on a second machine: an empty disk cache, the same Redis, zero model calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.model_server import ModelServer
from tests.redis_server import RedisServer, redis_server
from tests.test_check import BAD, gpo_json, model, rewrite, update, workdir, write_task

__all__ = ["model", "redis_server", "workdir"]  # fixtures, used by name below


def test_a_second_machine_with_an_empty_disk_cache_checks_with_zero_calls(
        workdir: Path, capsys: pytest.CaptureFixture[str], model: ModelServer,
        redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GPO_CACHE_URL", redis_server.url)
    monkeypatch.setenv("GPO_CACHE_DIR", str(workdir / "laptop"))
    prompt = write_task(Path("."))
    update(capsys, "senti.prompt")
    rewrite(prompt, BAD)
    code, laptop = gpo_json(capsys, "senti.prompt")  # the pre-commit hook: scores, pays
    assert code == 1 and laptop["results"][0]["verdict"] == "regression"
    assert laptop["results"][0]["usage"]["calls"] > 0
    calls = model.requests
    monkeypatch.setenv("GPO_CACHE_DIR", str(workdir / "ci"))  # CI: an empty disk cache
    code, ci = gpo_json(capsys, "senti.prompt")
    assert code == 1 and ci["results"][0]["verdict"] == "regression"
    assert model.requests == calls and ci["results"][0]["usage"]["calls"] == 0
    assert ci["results"][0]["scored"] == laptop["results"][0]["scored"]
