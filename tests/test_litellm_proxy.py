"""gpo through a real LiteLLM proxy: load balancing, the proxy's rate limit and budget.

The team set-up of the README, end to end: a LiteLLM proxy (its own venv,
made by tests/proxy/setup.sh) runs `litellm --config tests/proxy/config.yaml`
on 127.0.0.1 with one model name served by two deployments, each an
OpenAI-compatible test model server (tests/model_server.py answering as
tests/scripted_models.py). The real `gpo` CLI runs in its own process with
`--api-base` set to the proxy and a proxy key as its OPENAI_API_KEY, on both
call paths (the direct one and litellm's, GPO_DIRECT=0).

Without a database the proxy has no generated virtual keys (/key/generate
answers "DB not connected"; its Postgres client needs Prisma's query engine,
which no package registry serves): the keys are the proxy's custom auth hook
(tests/proxy/team_keys.py), and their rpm limit and budget are enforced by the
proxy's own rate limiter and budget check.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import processes
from tests.model_server import ModelServer
from tests.scripted_models import GOOD, ScriptedModels, write_capitals

REPO = Path(__file__).resolve().parents[1]
PROXY_DIR = REPO / "tests" / "proxy"
MODEL = "openai/scripted"  # the proxy's model name, called as an OpenAI-compatible model
MASTER_KEY = "sk-gpo-test-master"
TEAM_KEY = "sk-gpo-test-team"  # no limits
RPM_KEY = "sk-gpo-test-rpm"  # RPM_LIMIT requests per RATE_WINDOW seconds
POOR_KEY = "sk-gpo-test-poor"  # a budget the first answers exhaust
RATE_WINDOW = 1  # seconds: the proxy's rate-limit window (LITELLM_RATE_LIMIT_WINDOW_SIZE)
RPM_LIMIT = 6
POOR_BUDGET = 0.00001  # dollars; the first answers cost about 0.0001 at the config's prices
KEYS = {
    TEAM_KEY: {"key_alias": "team"},
    RPM_KEY: {"key_alias": "rate-limited", "rpm_limit": RPM_LIMIT},
    POOR_KEY: {"key_alias": "poor", "max_budget": POOR_BUDGET},
}


def _proxy_binary() -> Path | None:
    """The proxy venv's `litellm`, as tests/proxy/setup.sh reports it; None when not installed."""
    found = subprocess.run(["bash", str(PROXY_DIR / "setup.sh"), "--check"],
                           capture_output=True, text=True, check=False)
    if found.returncode != 0:
        return None
    for line in found.stdout.splitlines():
        name, _, value = line.partition("=")
        if name == "LITELLM_BIN":
            return Path(value)
    return None


LITELLM_BIN = _proxy_binary()
pytestmark = pytest.mark.skipif(
    LITELLM_BIN is None,
    reason="the LiteLLM proxy's venv is not installed: run `bash tests/proxy/setup.sh` "
           "(.ci/run does)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class ServerThread:
    """Model servers on an event loop of their own, in a thread: the proxy and gpo are
    other processes, and the tests themselves stay synchronous."""

    def __init__(self, servers: Sequence[ModelServer]) -> None:
        self.servers = list(servers)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def _run(self, coro: Any) -> Any:
        future: Future[Any] = asyncio.run_coroutine_threadsafe(coro, self._loop)
        return future.result(timeout=30)

    def start(self) -> None:
        self._thread.start()
        for server in self.servers:
            self._run(server.start())

    def stop(self) -> None:
        for server in self.servers:
            self._run(server.stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)

    def requests(self) -> list[int]:
        return [server.requests for server in self.servers]


@dataclass
class Proxy:
    url: str  # the proxy's address; gpo's api_base is this plus /v1
    servers: ServerThread  # the two deployments behind it


def _wait_until_up(proc: subprocess.Popen[bytes], url: str, log: Path, seconds: float) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the LiteLLM proxy exited with {proc.returncode}:\n"
                               + log.read_text(errors="replace")[-3000:])
        try:
            with urllib.request.urlopen(f"{url}/health/liveliness", timeout=2) as answer:
                if answer.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the LiteLLM proxy did not answer within {seconds:.0f} s:\n"
                       + log.read_text(errors="replace")[-3000:])


@pytest.fixture(scope="module")
def proxy(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Proxy]:
    """Two model servers and a LiteLLM proxy balancing one model name over them."""
    assert LITELLM_BIN is not None
    folder = tmp_path_factory.mktemp("proxy")
    keys = folder / "keys.json"
    keys.write_text(json.dumps(KEYS), encoding="utf-8")
    servers = ServerThread([ModelServer(answer=ScriptedModels([GOOD]).answer) for _ in "AB"])
    servers.start()
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    log = folder / "proxy.log"
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(folder),
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no internet: litellm's bundled price list
        "LITELLM_MASTER_KEY": MASTER_KEY, "GPO_PROXY_KEYS": str(keys),
        "LITELLM_RATE_LIMIT_WINDOW_SIZE": str(RATE_WINDOW),
        "GPO_PROXY_DEPLOYMENT_A": servers.servers[0].api_base,
        "GPO_PROXY_DEPLOYMENT_B": servers.servers[1].api_base,
    }
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(LITELLM_BIN), "--config", str(PROXY_DIR / "config.yaml"),
             "--host", "127.0.0.1", "--port", str(port), "--num_workers", "1"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=folder)
    try:
        # Up in about 6 s on an idle 2-core machine, 8-23 s beside other test runs.
        _wait_until_up(proc, url, log, 90)
        yield Proxy(url, servers)
    finally:
        processes.stop(proc, timeout=15)
        servers.stop()


@dataclass
class Run:
    code: int
    out: str
    err: str
    per_server: list[int]  # requests each deployment answered during the run

    def json(self) -> dict[str, Any]:
        return dict(json.loads(self.out))


# The `gpo` command as installed beside this interpreter (the venv's console script).
SCRIPT = Path(sys.executable).with_name("gpo")
GPO = [str(SCRIPT)] if SCRIPT.exists() else [sys.executable, "-m", "gpo_server.cli"]
# Where gpo and litellm find an endpoint and a key: cleared, so that each test says its own.
ENDPOINT_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "GPO_API_BASE",
                      "LITELLM_PROXY_API_KEY", "LITELLM_PROXY_API_BASE")


def _gpo(proxy: Proxy, key: str, cache: Path, *argv: str, direct: bool = True,
         env: dict[str, str] | None = None) -> Run:
    """The real `gpo` CLI in its own process. By default it reaches the proxy as a
    command line would: `--api-base` and the key as OPENAI_API_KEY; `env` instead
    names the endpoint and key by variables alone (then `key` is unused)."""
    base = {k: v for k, v in os.environ.items() if k not in ENDPOINT_VARIABLES}
    endpoint = env if env is not None else {"OPENAI_API_KEY": key}
    flags = [] if env is not None else ["--api-base", f"{proxy.url}/v1"]
    full = {**base, **endpoint, "GPO_CACHE_DIR": str(cache), "GPO_DIRECT": "1" if direct else "0",
            "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
    before = proxy.servers.requests()
    done = subprocess.run([*GPO, *argv, *flags],
                          capture_output=True, text=True, env=full, timeout=300, check=False)
    after = proxy.servers.requests()
    moved = [b - a for a, b in zip(before, after, strict=True)]
    return Run(done.returncode, done.stdout, done.stderr, moved)


def _assert_balanced(per_server: list[int]) -> None:
    """Both deployments answered, neither much more than the other. The proxy picks one
    at random per call (simple-shuffle), so with n >= 40 calls the smaller share is
    below n/5 with a probability under 5e-5 (binomial, p = 1/2; a run makes about 60)."""
    assert sum(per_server) >= 40, per_server
    assert min(per_server) >= sum(per_server) / 5, per_server


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "litellm"])
def test_optimize_through_the_proxy_spreads_calls_over_both_deployments(
        proxy: Proxy, tmp_path: Path, direct: bool) -> None:
    prompt = write_capitals(tmp_path / "p", model=MODEL, steps=4, candidates=4)
    run = _gpo(proxy, TEAM_KEY, tmp_path / "cache", "optimize", str(prompt), "--json",
               direct=direct)
    assert run.code == 0, run.err
    result = run.json()
    assert result["initial_dev"]["score"] == 0.0 and result["best_dev"]["score"] == 100.0
    usage = result["usage"]
    assert usage["per_model"][MODEL]["path"] == ("direct" if direct else "litellm")
    assert usage["calls"] == sum(run.per_server), (usage, run.per_server)
    _assert_balanced(run.per_server)


def test_check_through_the_proxy_records_then_passes(proxy: Proxy, tmp_path: Path) -> None:
    """`gpo check --update` records the baseline through the proxy; the prompt is then
    edited and checked on another machine (an empty cache) through the proxy too: it
    is scored again and passes. That second machine is CI, which names the proxy by
    variables only (GPO_API_BASE and the key)."""
    body = "Name the capital city.\nCountry: {{country}}\n"
    prompt = write_capitals(tmp_path / "p", model=MODEL, body=body)
    # The baseline is recorded by whoever holds the proxy's master key.
    first = _gpo(proxy, MASTER_KEY, tmp_path / "cache1", "check", str(prompt), "--update",
                 "--json")
    assert first.code == 0, first.out + first.err
    assert json.loads(first.out)["results"][0]["verdict"] == "updated"
    prompt.write_text(prompt.read_text().replace(body, "Name the capital city, one word.\n"
                                                       "Country: {{country}}\n"))
    ci = {"GPO_API_BASE": f"{proxy.url}/v1", "OPENAI_API_KEY": TEAM_KEY}
    again = _gpo(proxy, TEAM_KEY, tmp_path / "cache2", "check", str(prompt), "--json", env=ci)
    assert again.code == 0, again.out + again.err
    assert json.loads(again.out)["results"][0]["verdict"] == "pass"
    # Each run scores dev and test (8 rows each) once; all 32 calls on one
    # deployment would happen with a probability of 2**-31.
    assert sum(first.per_server) == sum(again.per_server) == 16
    both = [a + b for a, b in zip(first.per_server, again.per_server, strict=True)]
    assert min(both) > 0, both


def _same_outcome(result: dict[str, Any]) -> dict[str, Any]:
    return {k: result[k] for k in ("best", "best_dev", "initial_dev", "steps_done")}


def test_the_proxys_rate_limit_is_ridden_out(proxy: Proxy, tmp_path: Path) -> None:
    """A key allowed RPM_LIMIT requests a second gets the proxy's 429s; gpo halves its
    concurrency, waits as told and ends with the result of an unlimited key."""
    prompt = write_capitals(tmp_path / "p", model=MODEL, extra="gpo.concurrency: 8\n")
    free = _gpo(proxy, TEAM_KEY, tmp_path / "cache1", "optimize", str(prompt), "--json")
    assert free.code == 0, free.err
    limited = _gpo(proxy, RPM_KEY, tmp_path / "cache2", "optimize", str(prompt), "--json")
    assert limited.code == 0, limited.err
    usage = limited.json()["usage"]
    assert usage["per_model"][MODEL]["rate_limited"] > 0, usage
    assert usage["failures"] == 0, usage
    assert _same_outcome(limited.json()) == _same_outcome(free.json())
    # Only the answered calls reached a deployment: the 429s came from the proxy itself.
    assert sum(limited.per_server) == sum(free.per_server)


@pytest.mark.parametrize("direct", [True, False], ids=["direct", "litellm"])
def test_a_spent_budget_fails_the_job_with_the_proxys_message(
        proxy: Proxy, tmp_path: Path, direct: bool) -> None:
    """A key whose budget the first answers spend: the proxy refuses the rest (a 429
    of type budget_exceeded) and gpo stops with the proxy's own words."""
    prompt = write_capitals(tmp_path / "p", model=MODEL)
    run = _gpo(proxy, POOR_KEY, tmp_path / "cache", "optimize", str(prompt), direct=direct)
    assert run.code == 1, run.out + run.err
    err = " ".join(run.err.split())
    assert "Budget has been exceeded!" in err and f"Max budget: {POOR_BUDGET}" in err, err
    assert f"{MODEL}: budget: " in err, err  # not retried as a rate limit
    # Only the calls let through before the first answer was costed reached a
    # deployment, not the job's 60 or so.
    assert sum(run.per_server) < 10, run.per_server


def test_a_key_the_proxy_does_not_know_fails_at_once(proxy: Proxy, tmp_path: Path) -> None:
    """The proxy's 401 is an auth failure: not retried, and gpo says which variable to check."""
    prompt = write_capitals(tmp_path / "p", model=MODEL)
    run = _gpo(proxy, "sk-gpo-test-unknown", tmp_path / "cache", "eval", str(prompt))
    assert run.code == 1, run.out + run.err
    err = " ".join(run.err.split())
    assert "HTTP 401: unknown key" in err and "check OPENAI_API_KEY" in err, err
    assert run.per_server == [0, 0]


@pytest.mark.parametrize("direct", [
    pytest.param(True, id="direct"),
    pytest.param(False, id="litellm"),
])
def test_a_litellm_proxy_model_reads_litellms_proxy_variables(
        proxy: Proxy, tmp_path: Path, direct: bool) -> None:
    """`model: litellm_proxy/<name>` with litellm's own variables for that provider
    (LITELLM_PROXY_API_BASE, LITELLM_PROXY_API_KEY) and no --api-base: every call
    reaches the proxy with that key, on either path."""
    prompt = write_capitals(tmp_path / "p", model="litellm_proxy/scripted",
                            body="Name the capital city.\nCountry: {{country}}\n")
    proxy_env = {"LITELLM_PROXY_API_BASE": proxy.url, "LITELLM_PROXY_API_KEY": TEAM_KEY}
    run = _gpo(proxy, TEAM_KEY, tmp_path / "cache", "eval", str(prompt), "--json",
               direct=direct, env=proxy_env)
    assert run.code == 0, run.out + run.err
    result = run.json()
    assert result["dev"]["score"] == 100.0 and result["usage"]["calls"] == 16
    assert sum(run.per_server) == 16 and min(run.per_server) > 0, run.per_server
