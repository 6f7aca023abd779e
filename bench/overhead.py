"""Per-call overhead of the llm layer, and start-up time of `gpo lsp` and the daemon.

1. The same chat request, one at a time, to the test model server (zero
   latency, in a subprocess): a bare aiohttp client posting the JSON body,
   then gpo_engine.llm.LLM.complete (litellm underneath) with the response
   cache off, with it on and missing (the answer is written to disk), and
   with it on and hitting (no request at all). Median milliseconds per call.
2. `gpo lsp` (a fresh process each time) from spawn to its answer to
   `initialize`, over stdio. Target: under 0.5 s.
3. `gpo daemon start` (a fresh runtime folder each time) from spawn until
   the daemon's /v1/health answers; then it is stopped.

    python bench/overhead.py
    python bench/overhead.py --quick
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import servers
from lspclient import LspClient

LSP_TARGET = 0.5
GPO = [sys.executable, "-m", "gpo_server.cli"]


def _messages(i: int) -> list[dict[str, str]]:
    return [{"role": "user", "content": f"Name the capital city of country number {i}."}]


async def per_call(api_base: str, calls: int, scratch: Path) -> dict[str, list[float]]:
    import aiohttp

    from gpo_engine.llm import LLM

    model = "openai/bench"
    times: dict[str, list[float]] = {}

    async def bare(session: aiohttp.ClientSession, i: int) -> None:
        body = {"model": "bench", "messages": _messages(i), "temperature": 0.0,
                "max_tokens": 16}
        async with session.post(f"{api_base}/chat/completions", json=body,
                                headers={"Authorization": "Bearer test"}) as response:
            response.raise_for_status()
            data = await response.json()
            assert data["choices"][0]["message"]["content"]

    async def timed(name: str, call: Any, offset: int) -> None:
        samples = []
        for i in range(calls):
            started = time.perf_counter()
            await call(offset + i)
            samples.append(time.perf_counter() - started)
        times[name] = samples

    async with aiohttp.ClientSession() as session:
        for i in range(5):  # warm up: connection, litellm import and client
            await bare(session, -1 - i)
        await timed("bare aiohttp", lambda i: bare(session, i), 0)

    off = LLM(cache_dir=None, api_base=api_base, api_key="test")
    for i in range(5):
        await off.complete(model, _messages(-1 - i), max_tokens=16)
    await timed("LLM.complete, cache off", lambda i: off.complete(model, _messages(i),
                                                                  max_tokens=16), 10_000)
    off.close()

    on = LLM(cache_dir=scratch / "cache", api_base=api_base, api_key="test")
    for i in range(5):
        await on.complete(model, _messages(-100 - i), max_tokens=16)
    await timed("LLM.complete, cache on, miss", lambda i: on.complete(
        model, _messages(i), max_tokens=16), 20_000)
    before = on.usage.calls
    await timed("LLM.complete, cache on, hit", lambda i: on.complete(
        model, _messages(i), max_tokens=16), 20_000)
    assert on.usage.calls == before, "the cache-hit pass made model calls"
    on.close()
    return times


def lsp_startup(runs: int) -> list[float]:
    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="gpo-lsp-") as scratch:
            root = Path(scratch)
            client = LspClient([*GPO, "lsp", "--runtime-dir", str(root / "run")], cwd=root)
            try:
                # Only `initialize`: `initialized` would start a daemon, which is not
                # what an editor waits for before it can send requests.
                uri = root.as_uri()
                client.request("initialize", {"processId": None, "rootUri": uri,
                                               "capabilities": {}})
                samples.append(time.perf_counter() - client.started)
            finally:
                client.close()
    return samples


def daemon_startup(runs: int) -> list[float]:
    from gpo_server import runtime
    from gpo_server.client import DaemonClient

    async def health(directory: Path) -> bool:
        status = runtime.read_status(directory)
        if status is None:
            return False
        try:
            async with DaemonClient.for_status(status, directory) as client:
                await client.health()
            return True
        except Exception:
            return False

    samples = []
    for _ in range(runs):
        with tempfile.TemporaryDirectory(prefix="gpo-daemon-") as scratch:
            directory = Path(scratch) / "run"
            env = {**os.environ, "GPO_CACHE_DIR": str(Path(scratch) / "cache")}
            started = time.perf_counter()
            subprocess.run([*GPO, "daemon", "start", "--runtime-dir", str(directory),
                            "--idle-timeout", "120"], env=env, check=True,
                           capture_output=True)
            while not asyncio.run(health(directory)):
                if time.perf_counter() - started > 60:
                    raise RuntimeError("the daemon did not answer health within 60 s")
                time.sleep(0.01)
            samples.append(time.perf_counter() - started)
            subprocess.run([*GPO, "daemon", "stop", "--runtime-dir", str(directory)],
                           env=env, check=True, capture_output=True)
    return samples


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=300, help="calls per client")
    parser.add_argument("--starts", type=int, default=5, help="start-ups of each process")
    parser.add_argument("--quick", action="store_true", help="smoke size: 20 calls, 1 start")
    args = parser.parse_args(argv)
    if args.quick:
        args.calls, args.starts = 20, 1
    print(f"# overhead: {args.calls} sequential calls per client, "
          f"{args.starts} start-ups per process\n")
    print(f"machine: {common.machine()}\n")
    with servers.spawn("simple") as api_base, \
            tempfile.TemporaryDirectory(prefix="gpo-overhead-") as scratch:
        times = asyncio.run(per_call(api_base, args.calls, Path(scratch)))
    bare = common.median(times["bare aiohttp"])
    print(common.table(
        ["client", "median ms / call", "p90 ms", "over bare aiohttp, ms"],
        [[name, common.median(s) * 1000, common.percentile(s, 90) * 1000,
          (common.median(s) - bare) * 1000] for name, s in times.items()]))
    print()
    lsp = lsp_startup(args.starts)
    daemon = daemon_startup(args.starts)
    print(common.table(
        ["process", "median s", "min s", "max s", "target"],
        [["gpo lsp: spawn to initialize answer", common.median(lsp), min(lsp), max(lsp),
          f"< {LSP_TARGET} s"],
         ["gpo daemon start: spawn to health answer", common.median(daemon), min(daemon),
          max(daemon), "-"]]))
    print()
    print(f"gpo lsp start-up: median {common.median(lsp):.3f} s "
          f"({'meets' if common.median(lsp) < LSP_TARGET else 'misses'} the "
          f"{LSP_TARGET} s target)")
    ratio = common.median(times["LLM.complete, cache off"]) / bare
    print(common.headline("LLM.complete (cache off) / bare aiohttp, median per call", ratio,
                          "no set target; the layer adds litellm's client work", None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
