"""Scripted models on the test model server (tests/model_server.py), for the benchmarks.

Two answer functions:

  simple  the optimizer hands out a new instruction each call; the task model
          always answers "Paris" (throughput and overhead only need traffic)
  noisy   the same optimizer; the task model's accuracy depends on the
          instruction it receives, noisily but deterministically: each
          instruction has a latent accuracy between 0.2 and 0.9 by default
          (from its hash), and each (instruction, question) pair is right or wrong by a
          second hash. So some candidates really are better, a small dev slice
          measures them with noise, and racing has something to get wrong.

The server runs either in a subprocess (`spawn`, so its CPU time does not mix
with the client's: throughput, overhead) or on a thread of this process
(`threaded`, when a benchmark must read its counters and request bodies: cost).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import itertools
import json
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.use_test_helpers()
from model_server import ModelServer  # noqa: E402
from scripted_models import is_meta_prompt  # noqa: E402

Messages = list[dict[str, Any]]
INSTRUCTION = "Answer the question."
BODY = INSTRUCTION + "\nQ: {{question}}\nA:"


def _unit(text: str) -> float:
    """A deterministic number in [0, 1) from a text."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") / 2**64


def latent_accuracy(instruction: str, low: float = 0.2, high: float = 0.9) -> float:
    return low + (high - low) * _unit("accuracy:" + instruction.strip())


def expected_answer(question: str) -> str:
    return "A" + question.split()[-1]


class ScriptedAnswers:
    """answer(messages) for ModelServer; thread-safe counters of each kind of call."""

    def __init__(self, kind: str, low: float = 0.2, high: float = 0.9) -> None:
        if kind not in ("simple", "noisy"):
            raise ValueError(f"unknown answer kind {kind!r}")
        self.kind = kind
        self.low, self.high = low, high  # the range of the instructions' latent accuracies
        self._numbers = itertools.count(1)
        self._lock = threading.Lock()
        self.meta_calls = 0
        self.task_calls = 0
        self.answered: list[str] = []  # canonical request text of every answered task call

    def __call__(self, messages: Messages) -> str:
        if is_meta_prompt(messages):
            with self._lock:
                self.meta_calls += 1
                number = next(self._numbers)
            # Short distinct rewrites: always within any word budget, never duplicates.
            return f"<START>Answer the question, approach {number}.<END>"
        prompt = str(messages[-1].get("content", ""))
        with self._lock:
            self.task_calls += 1
            self.answered.append(prompt)
        if self.kind == "simple":
            return "Paris"
        instruction, _, rest = prompt.partition("\nQ: ")
        question = rest.split("\n", 1)[0].strip()
        accuracy = latent_accuracy(instruction, self.low, self.high)
        right = _unit(f"row:{instruction.strip()}|{question}") < accuracy
        return expected_answer(question) if right else "I am not sure."


def write_task(folder: Path, *, train: int, dev: int, test: int, model: str = "openai/bench",
               extra: dict[str, Any] | None = None, name: str = "bench") -> Path:
    """A prompt file for the scripted models and its example set (splits pinned)."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    number = itertools.count(1)
    for split, count in (("train", train), ("dev", dev), ("test", test)):
        for _ in range(count):
            question = f"item {next(number)}"
            rows.append({"question": question, "expected": expected_answer(question),
                         "split": split})
    (folder / f"{name}.examples.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    settings = {"gpo.metric": "exact", **(extra or {})}
    front = [f"model: {model}"] + [f"{k}: {json.dumps(v)}" for k, v in settings.items()]
    prompt = folder / f"{name}.prompt"
    prompt.write_text("---\n" + "\n".join(front) + "\n---\n" + BODY, encoding="utf-8")
    return prompt


@contextlib.contextmanager
def spawn(kind: str, latency: float = 0.0, max_concurrency: int | None = None
          ) -> Iterator[str]:
    """A model server in a subprocess; yields its api_base."""
    command = [sys.executable, str(Path(__file__).resolve()), "--answer", kind,
               "--latency", str(latency)]
    if max_concurrency is not None:
        command += ["--max-concurrency", str(max_concurrency)]
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.startswith("api_base "):
            raise RuntimeError(f"model server did not start: {line!r}")
        yield line.split()[1]
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class ThreadedServer:
    """A ModelServer on its own event loop in a background thread."""

    def __init__(self, answer: Callable[[Messages], str], **options: Any) -> None:
        self.server = ModelServer(answer=answer, **options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    def __enter__(self) -> ModelServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(10)
        return self.server

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


async def serve_until_signal(server: ModelServer) -> None:
    """Run `server`, print its api_base for the parent, and stop on SIGTERM or SIGINT."""
    async with server:
        print(f"api_base {server.api_base}", flush=True)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await stop.wait()


async def _serve(args: argparse.Namespace) -> None:
    await serve_until_signal(ModelServer(answer=ScriptedAnswers(args.answer),
                                         latency=args.latency,
                                         max_concurrency=args.max_concurrency))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="scripted model server for the benchmarks")
    parser.add_argument("--answer", choices=("simple", "noisy"), default="simple")
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--max-concurrency", type=int)
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
