"""Peers: the same evaluation through gpo, DSPy's `Evaluate` and GEPA's default adapter.

One fake OpenAI-compatible model server (tests/model_server.py, in a
subprocess) answers every call after a fixed latency and refuses (429) more
than C calls at once. Each tool evaluates the same rows (256 by default) once
at C = 4, 16 and 64, each run a separate, cold process:

  gpo   `gpo eval task.prompt --api-base ... --cache-dir <fresh> --json` as the
        CLI runs it (the rows pinned 128 dev + 128 test, `gpo.concurrency: C`)
  dspy  a script: `dspy.LM('openai/bench', api_base=..., cache=False)`, a
        `dspy.Predict` of `question -> answer`, `dspy.Evaluate(num_threads=C)`
  gepa  a script: GEPA's `DefaultAdapter('openai/bench', max_litellm_workers=C)`
        and its `evaluate(batch, candidate)` over all rows (litellm's
        batch_completion on C threads), as GEPA scores a candidate

The peers run with the Python of a separate venv that `--setup` makes
(bench/.peers-venv, git-ignored; DSPy and GEPA are never gpo's dependencies).
Tools alternate within each repeat (the order rotates), so a busy neighbour on
a shared machine hits them alike. The server answers each row right in the
format its tool asks for, so every tool scores 100% and makes one call a row.

Measured per run: the evaluation's wall time as the server saw it (first
request's arrival to the last request's arrival plus the latency: the same
clock for every tool, start-up excluded), the whole process's wall time, its
CPU time and peak RSS (`os.wait4`), the requests the server received. Client
cost per call: at C = 1, the server-side gap between one answer and the next
request, (span - n x latency) / (n - 1), on a run of `--cost-rows` LARGE rows,
beside a bare aiohttp client's gap (the floor: the server's timer, the
loopback, the scheduler); and the process CPU time per call, (CPU of a run of
`--cpu-rows` rows with no latency at C = 16 - CPU of the run of SMALL rows) /
(cpu rows - SMALL), which cancels the start-up: the target's measure. One more
`gpo eval`, through a `python -c` wrapper of the CLI's main(), reports whether
litellm was imported; `gpo eval --json` says which path the model took.

    python bench/peers.py --setup              # once: the peers' venv
    python bench/peers.py --repeat 3           # 256 rows, C = 4 16 64, 200 ms
    python bench/peers.py --quick              # smoke size (gpo alone without the venv)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

VENV = common.ROOT / "bench" / ".peers-venv"
PEERS = ("dspy==3.4.1", "gepa==0.1.4")
TOOLS = ("gpo", "dspy", "gepa")
INSTRUCTION = "Answer the question."
TARGET_C16, TARGET_C64, TARGET_COST_MS, TARGET_RSS_MB = 1.10, 1.5, 3.0, 100.0

DSPY_SCRIPT = r'''
import json, sys, time
from importlib.metadata import version
rows_path, api_base, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
import dspy
rows = [json.loads(line) for line in open(rows_path, encoding="utf-8")]
devset = [dspy.Example(question=r["question"], answer=r["expected"]).with_inputs("question")
          for r in rows]
lm = dspy.LM("openai/bench", api_base=api_base, api_key="test", cache=False)
dspy.configure(lm=lm)
program = dspy.Predict(dspy.Signature("question -> answer", INSTRUCTION))
def metric(example, prediction, trace=None):
    return example.answer == prediction.answer
evaluate = dspy.Evaluate(devset=devset, metric=metric, num_threads=threads,
                         display_progress=False)
start = time.perf_counter()
result = evaluate(program)
print(json.dumps({"score": float(result.score), "n": len(devset),
                  "seconds": time.perf_counter() - start,
                  "litellm": "litellm" in sys.modules,
                  "version": "dspy " + version("dspy")}))
'''.replace("INSTRUCTION", repr(INSTRUCTION))

GEPA_SCRIPT = r'''
import json, sys, time
from importlib.metadata import version
rows_path, api_base, threads = sys.argv[1], sys.argv[2], int(sys.argv[3])
from gepa.adapters.default_adapter.default_adapter import DefaultAdapter
rows = [json.loads(line) for line in open(rows_path, encoding="utf-8")]
batch = [{"input": r["question"], "additional_context": {}, "answer": r["expected"]}
         for r in rows]
adapter = DefaultAdapter("openai/bench", max_litellm_workers=threads,
                         litellm_batch_completion_kwargs={"api_base": api_base,
                                                          "api_key": "test"})
start = time.perf_counter()
result = adapter.evaluate(batch, {"system_prompt": INSTRUCTION})
print(json.dumps({"score": 100.0 * sum(result.scores) / len(batch), "n": len(batch),
                  "seconds": time.perf_counter() - start,
                  "litellm": "litellm" in sys.modules,
                  "version": "gepa " + version("gepa") + ", litellm " + version("litellm")}))
'''.replace("INSTRUCTION", repr(INSTRUCTION))

# The floor of the C = 1 gap: a bare aiohttp client posting gpo's request body row after
# row (gpo's Python; no rendering, scoring, cache or retries).
BARE_SCRIPT = r'''
import asyncio, json, sys
rows_path, api_base = sys.argv[1], sys.argv[2]
import aiohttp
rows = [json.loads(line) for line in open(rows_path, encoding="utf-8")]
async def main():
    right = 0
    async with aiohttp.ClientSession() as session:
        for row in rows:
            body = {"model": "bench", "messages": [{"role": "user", "content":
                    INSTRUCTION + "\nQ: " + row["question"] + "\nA:"}]}
            async with session.post(api_base + "/chat/completions", json=body) as response:
                answer = (await response.json())["choices"][0]["message"]["content"]
            right += answer == row["expected"]
    return right
right = asyncio.run(main())
print(json.dumps({"score": 100.0 * right / len(rows), "n": len(rows), "litellm": False,
                  "version": "aiohttp " + aiohttp.__version__}))
'''.replace("INSTRUCTION", repr(INSTRUCTION))

# `gpo eval` exactly as the console script runs it, reporting at exit whether
# litellm was imported (one extra run; the timed runs use the `gpo` script).
GPO_PROBE = (
    "import atexit, sys\n"
    "atexit.register(lambda: print('gpo-probe litellm=' + str('litellm' in sys.modules),"
    " file=sys.stderr))\n"
    "from gpo_server.cli import main\n"
    "sys.argv[0] = 'gpo'\n"
    "sys.exit(main())\n")


# -- the model server ------------------------------------------------------

def answer(messages: list[dict[str, Any]]) -> str:
    """The right answer to 'item N' ('AN'), in DSPy's field format when DSPy asks."""
    last = str(messages[-1].get("content", "")) if messages else ""
    found = re.search(r"item (\d+)", last)
    text = f"A{found.group(1)}" if found else "unknown"
    if any("[[ ## answer ## ]]" in str(m.get("content", "")) for m in messages):
        return f"[[ ## answer ## ]]\n{text}\n\n[[ ## completed ## ]]"
    return text


async def _serve(latency: float, max_concurrency: int | None) -> None:
    common.use_test_helpers()
    from model_server import ModelServer
    from servers import serve_until_signal

    server = ModelServer(answer=answer, latency=latency, max_concurrency=max_concurrency)
    await serve_until_signal(server)
    arrivals = server.arrivals
    print(json.dumps({"requests": server.requests, "rejected": server.rejected,
                      "max_in_flight": server.max_in_flight,
                      "span": (arrivals[-1] - arrivals[0] + latency) if arrivals else 0.0}),
          flush=True)


class Server:
    """The model server in a subprocess (its CPU is not the client's); `stats()` stops it."""

    def __init__(self, latency: float, max_concurrency: int) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "--serve", "--latency", str(latency),
             "--max-concurrency", str(max_concurrency)], stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("api_base "):
            self.proc.kill()
            raise RuntimeError(f"model server did not start: {line!r}")
        self.api_base = line.split()[1]

    def stats(self) -> dict[str, Any]:
        self.proc.send_signal(signal.SIGTERM)
        out, _ = self.proc.communicate(timeout=30)
        return json.loads(out.strip().splitlines()[-1])

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


# -- one run of one tool ---------------------------------------------------

def gpo_command() -> list[str]:
    beside = Path(sys.executable).with_name("gpo")
    found = str(beside) if beside.exists() else shutil.which("gpo")
    if not found:
        raise SystemExit("no `gpo` script beside this Python or on PATH: run bench/peers.py "
                         "with the dev environment's Python (.venv/bin/python)")
    return [found]


def peers_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def write_inputs(folder: Path, rows: int, concurrency: int) -> Path:
    """The example set (pinned: half dev, half test, no train) and gpo's prompt file."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for number in range(1, rows + 1):
        split = "dev" if number <= rows // 2 else "test"
        lines.append(json.dumps({"question": f"item {number}", "expected": f"A{number}",
                                 "split": split}))
    (folder / "bench.examples.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    prompt = folder / "bench.prompt"
    prompt.write_text(
        "---\nmodel: openai/bench\ngpo.metric: exact\n"
        f"gpo.concurrency: {concurrency}\n---\n{INSTRUCTION}\nQ: {{{{question}}}}\nA:",
        encoding="utf-8")
    (folder / "dspy_eval.py").write_text(DSPY_SCRIPT, encoding="utf-8")
    (folder / "gepa_eval.py").write_text(GEPA_SCRIPT, encoding="utf-8")
    (folder / "aiohttp_eval.py").write_text(BARE_SCRIPT, encoding="utf-8")
    return prompt


def measured(command: list[str], env: dict[str, str], cwd: Path, timeout: float
             ) -> dict[str, Any]:
    """Run a process to its end: wall time, rusage (peak RSS, CPU), its output."""
    out_path, err_path = cwd / "stdout.txt", cwd / "stderr.txt"
    with open(out_path, "w") as out, open(err_path, "w") as err:
        start = time.perf_counter()
        proc = subprocess.Popen(command, stdout=out, stderr=err, env=env, cwd=cwd)
        watchdog = threading.Timer(timeout, proc.kill)
        watchdog.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            watchdog.cancel()
        wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)
    stdout, stderr = out_path.read_text(), err_path.read_text()
    if proc.returncode != 0:
        raise RuntimeError(f"{command[0]} exited {proc.returncode}:\n{stdout[-2000:]}\n"
                           f"{stderr[-4000:]}")
    return {"process": wall, "rss_mb": usage.ru_maxrss / 1024,
            "cpu": usage.ru_utime + usage.ru_stime, "stdout": stdout, "stderr": stderr}


def run_tool(tool: str, rows: int, concurrency: int, args: argparse.Namespace,
             probe: bool = False, latency: float | None = None) -> dict[str, Any]:
    """One cold evaluation of `rows` rows by `tool` at `concurrency`, on a fresh server
    answering after `latency` (default: --latency)."""
    scratch = Path(tempfile.mkdtemp(prefix=f"gpo-peers-{tool}-"))
    try:
        prompt = write_inputs(scratch, rows, concurrency)
        server = Server(args.latency if latency is None else latency, concurrency)
        try:
            env = {**os.environ, "OPENAI_API_KEY": "test", "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                   "DSPY_CACHEDIR": str(scratch / "dspy-cache"), "PYTHONUNBUFFERED": "1"}
            env.pop("GPO_API_BASE", None)
            if tool in ("gpo", "gpo-litellm"):
                if tool == "gpo-litellm":
                    env["GPO_DIRECT"] = "0"
                head = [sys.executable, "-c", GPO_PROBE] if probe else gpo_command()
                command = [*head, "eval", str(prompt), "--api-base", server.api_base,
                           "--cache-dir", str(scratch / "cache"), "--json"]
            else:
                script = scratch / f"{tool}_eval.py"
                python = sys.executable if tool == "aiohttp" else peers_python(args.venv)
                command = [str(python), str(script),
                           str(scratch / "bench.examples.jsonl"), server.api_base,
                           str(concurrency)]
            load = os.getloadavg()[0]
            run = measured(command, env, scratch, args.timeout)
            stats = server.stats()
        finally:
            server.kill()
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    result = {"tool": tool, "C": concurrency, "rows": rows, "load": load, **stats,
              **{k: v for k, v in run.items() if k not in ("stdout", "stderr")}}
    if tool in ("gpo", "gpo-litellm"):
        out = json.loads(run["stdout"])
        n = out["dev"]["n"] + out["test"]["n"]
        result["score"] = 100.0 * (out["dev"]["correct"] + out["test"]["correct"]) / n
        result["path"] = ",".join(sorted({m.get("path", "?") for m in
                                          out["usage"]["per_model"].values()}))
        found = re.search(r"gpo-probe litellm=(\w+)", run["stderr"])
        result["litellm"] = (found.group(1) == "True") if found else None
    else:
        out = json.loads(run["stdout"].strip().splitlines()[-1])
        result["score"] = out["score"]
        result["litellm"] = out["litellm"]
        result["version"] = out["version"]
    return result


# -- the benchmark ---------------------------------------------------------

def rotated(tools: list[str], shift: int) -> list[str]:
    shift %= len(tools)
    return tools[shift:] + tools[:shift]


def spread(values: list[float]) -> str:
    return f"{min(values):.2f}-{max(values):.2f}"


def evaluation_runs(args: argparse.Namespace) -> dict[tuple[str, int], list[dict[str, Any]]]:
    runs: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for concurrency in args.concurrency:
        for repeat in range(args.repeat):
            for tool in rotated(args.tools, repeat):
                run = run_tool(tool, args.rows, concurrency, args)
                run["ideal"] = math.ceil(args.rows / concurrency) * args.latency
                run["ratio"] = run["span"] / run["ideal"]
                runs.setdefault((tool, concurrency), []).append(run)
                print(f"  C={concurrency} {tool}: eval {run['span']:.2f} s "
                      f"({run['ratio']:.2f}x), process {run['process']:.2f} s, "
                      f"{run['rss_mb']:.0f} MB, load {run['load']:.2f}",
                      file=sys.stderr, flush=True)
    return runs


def cost_runs(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """Per repeat and tool: a small and a large run at C = 1 (the gap), and a bulk run
    of --cpu-rows rows with no latency at C = 16 (the CPU per call, less the small run's)."""
    small, large = args.cost_rows
    out: dict[str, list[dict[str, Any]]] = {}
    for repeat in range(args.repeat):
        for tool in rotated(["aiohttp", *args.tools], repeat):
            few = run_tool(tool, small, 1, args)
            many = run_tool(tool, large, 1, args)
            gap = (many["span"] - large * args.latency) / (large - 1)
            cost = {"gap_ms": gap * 1000, "span": many["span"], "load": many["load"]}
            if tool != "aiohttp":
                bulk = run_tool(tool, args.cpu_rows, 16, args, latency=0.0)
                cost["cpu_ms"] = 1000 * (bulk["cpu"] - few["cpu"]) / (args.cpu_rows - small)
            out.setdefault(tool, []).append(cost)
            print(f"  C=1 {tool}: {gap * 1000:.2f} ms gap, "
                  f"{cost.get('cpu_ms', math.nan):.2f} ms CPU per call",
                  file=sys.stderr, flush=True)
    return out


def setup(venv: Path) -> int:
    """Make the peers' venv (DSPy and GEPA from PyPI)."""
    if not peers_python(venv).exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run([str(peers_python(venv)), "-m", "pip", "install", "--quiet",
                    "--disable-pip-version-check", *PEERS], check=True)
    print(f"peers' venv ready: {venv} ({', '.join(PEERS)}); python {peers_python(venv)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--setup", action="store_true",
                        help=f"create the peers' venv with {' '.join(PEERS)} and exit")
    parser.add_argument("--venv", type=Path, default=VENV, help="the peers' venv")
    parser.add_argument("--tools", nargs="+", default=list(TOOLS),
                        choices=[*TOOLS, "gpo-litellm"],
                        help="gpo-litellm: gpo with GPO_DIRECT=0 (every call through litellm)")
    parser.add_argument("--rows", type=int, default=256)
    parser.add_argument("--concurrency", type=int, nargs="+", default=[4, 16, 64])
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per call")
    parser.add_argument("--repeat", type=int, default=3, help="runs per tool and C")
    parser.add_argument("--cost-rows", type=int, nargs=2, default=[16, 64],
                        metavar=("SMALL", "LARGE"), help="rows of the C = 1 runs")
    parser.add_argument("--cpu-rows", type=int, default=1024,
                        help="rows of the no-latency run that measures CPU per call")
    parser.add_argument("--timeout", type=float, default=600, help="seconds per process")
    parser.add_argument("--quick", action="store_true",
                        help="smoke size: 32 rows, C = 4, 50 ms, one repeat; "
                        "the peers only if their venv exists")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--max-concurrency", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        asyncio.run(_serve(args.latency, args.max_concurrency))
        return 0
    if args.setup:
        return setup(args.venv)
    peers = [t for t in args.tools if t in ("dspy", "gepa")]
    skipped = ""
    if peers and not peers_python(args.venv).exists():
        if not args.quick:
            print(f"error: the peers' venv {args.venv} is missing: run "
                  f"`python bench/peers.py --setup` first (or --tools gpo)", file=sys.stderr)
            return 2
        args.tools = [t for t in args.tools if t not in peers]
        skipped = f"peers skipped: no venv at {args.venv} (`python bench/peers.py --setup`)"
    if args.quick:
        args.rows, args.concurrency, args.latency, args.repeat = 32, [4], 0.05, 1
        args.cost_rows, args.cpu_rows = [4, 8], 64
    target_run = (args.rows == 256 and args.latency == 0.2)

    print(f"# peers: {args.rows} rows, latency {args.latency * 1000:.0f} ms, "
          f"C = {' '.join(map(str, args.concurrency))}, {args.repeat} repeat(s), "
          f"tools {' '.join(args.tools)}\n")
    print(f"machine: {common.machine()}\n")
    if skipped:
        print(skipped + "\n")
    runs = evaluation_runs(args)
    costs = cost_runs(args)
    probe = run_tool("gpo", args.cost_rows[0], 1, args, probe=True)
    loads = [r["load"] for rs in runs.values() for r in rs]

    print(f"## Evaluation of {args.rows} rows: medians of {args.repeat} run(s)\n")
    print("eval s: the server's first request arrival to its last arrival + the latency; "
          f"ideal = ceil({args.rows} / C) x {args.latency:g} s; process s: the whole "
          "process (start-up included); peak RSS from os.wait4.\n")
    rows = []
    for concurrency in args.concurrency:
        for tool in args.tools:
            rs = runs[(tool, concurrency)]
            rows.append([
                concurrency, tool, int(common.median([r["requests"] for r in rs])),
                common.median([r["span"] for r in rs]), rs[0]["ideal"],
                common.median([r["ratio"] for r in rs]), spread([r["ratio"] for r in rs]),
                common.median([r["process"] for r in rs]), spread([r["process"] for r in rs]),
                common.median([r["cpu"] for r in rs]), common.median([r["rss_mb"] for r in rs]),
                sum(r["rejected"] for r in rs), f"{common.median([r['score'] for r in rs]):.0f}%"])
    print(common.table(["C", "tool", "requests", "eval s", "ideal s", "eval / ideal",
                        "range", "process s", "process range", "CPU s", "peak RSS MB", "429s",
                        "score"], rows))
    print()

    print(f"## Client cost per call: medians of {args.repeat} run(s)\n")
    print(f"gap: (span - n x latency) / (n - 1) on {args.cost_rows[1]} rows at C = 1, the time "
          "between one answer leaving the server and the next request arriving (client + "
          "server + loopback; bare aiohttp is the floor); CPU: the process's CPU per call, "
          f"(CPU of a {args.cpu_rows}-row run at C = 16 with no latency - CPU of a "
          f"{args.cost_rows[0]}-row run) / {args.cpu_rows - args.cost_rows[0]}, paired by "
          "repeat (start-up cancelled).\n")
    floor = common.median([c["gap_ms"] for c in costs["aiohttp"]])
    table = []
    for tool in ["aiohttp", *args.tools]:
        gaps = [c["gap_ms"] for c in costs[tool]]
        cpus = [c["cpu_ms"] for c in costs[tool] if "cpu_ms" in c]
        table.append([tool if tool != "aiohttp" else "bare aiohttp (floor)",
                      common.median(gaps), spread(gaps), common.median(gaps) - floor,
                      common.median(cpus), spread(cpus) if cpus else "-"])
    print(common.table(["tool", "gap ms / call", "gap range", "gap over bare aiohttp ms",
                        "CPU ms / call", "CPU range"], table))
    print()

    facts = []
    for tool in args.tools:
        r = runs[(tool, args.concurrency[0])][0]
        if tool.startswith("gpo"):
            litellm = probe["litellm"] if tool == "gpo" else True
            facts.append([tool, "gpo (this tree)", r["path"], litellm])
        else:
            facts.append([tool, r["version"], "-", r["litellm"]])
    print(common.table(["tool", "version", "model path (gpo eval --json)", "litellm imported"],
                       facts))
    print()
    print(f"load (1 min) at the runs' starts: {min(loads):.2f}-{max(loads):.2f}\n")

    def ratio(tool: str, concurrency: int) -> float:
        rs = runs.get((tool, concurrency))
        return common.median([r["ratio"] for r in rs]) if rs else float("nan")

    def process(tool: str, concurrency: int) -> float:
        rs = runs.get((tool, concurrency))
        return common.median([r["process"] for r in rs]) if rs else float("nan")

    if target_run and {16, 64} <= set(args.concurrency) and "gpo" in args.tools:
        gpo_rss = max(r["rss_mb"] for c in args.concurrency for r in runs[("gpo", c)])
        gpo_cost = common.median([c["cpu_ms"] for c in costs["gpo"]])
        gpo_gap = common.median([c["gap_ms"] for c in costs["gpo"]]) - floor
        has_dspy = "dspy" in args.tools
        dspy_16 = f"DSPy {ratio('dspy', 16):.2f}x" if has_dspy else "DSPy not run"
        dspy_process = f"DSPy {process('dspy', 16):.2f} s" if has_dspy else "DSPy not run"
        targets = [
            ["C=16 eval / ideal", f"{ratio('gpo', 16):.2f}x ({dspy_16})",
             f"<= {TARGET_C16}x and ahead of DSPy",
             ratio("gpo", 16) <= TARGET_C16 and (not has_dspy
                                                 or ratio("gpo", 16) < ratio("dspy", 16))],
            ["C=64 eval / ideal", f"{ratio('gpo', 64):.2f}x", f"<= {TARGET_C64}x",
             ratio("gpo", 64) <= TARGET_C64],
            ["client cost per call (process CPU)", f"{gpo_cost:.2f} ms",
             f"<= {TARGET_COST_MS} ms", gpo_cost <= TARGET_COST_MS],
            ["latency added per call (gap over bare aiohttp, C=1)", f"{gpo_gap:.2f} ms",
             f"<= {TARGET_COST_MS} ms", gpo_gap <= TARGET_COST_MS],
            ["peak RSS, direct path (largest run)", f"{gpo_rss:.0f} MB",
             f"<= {TARGET_RSS_MB:.0f} MB", gpo_rss <= TARGET_RSS_MB],
            ["gpo eval process s at C=16", f"{process('gpo', 16):.2f} s ({dspy_process})",
             "<= DSPy script's",
             not has_dspy or process("gpo", 16) <= process("dspy", 16)],
        ]
        print(common.table(["target", "measured", "wanted", "met"],
                           [[t, m, w, "met" if ok else "missed"] for t, m, w, ok in targets]))
        print()

    pick = 16 if 16 in args.concurrency else args.concurrency[-1]
    others = [f"{name} {ratio(tool, pick):.2f}x" for tool, name in
              (("dspy", "DSPy"), ("gepa", "GEPA"), ("gpo-litellm", "gpo-litellm"))
              if tool in args.tools]
    versus = (", ".join(others) + " in the same run") if others else "peers not run"
    met = None
    if target_run and pick == 16:
        met = ratio("gpo", 16) <= TARGET_C16 and (
            "dspy" not in args.tools or ratio("gpo", 16) < ratio("dspy", 16))
    print(common.headline(f"gpo eval wall / ideal at C={pick}", ratio("gpo", pick),
                          f"target <= {TARGET_C16}x at C=16 and ahead of DSPy; {versus}", met))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
