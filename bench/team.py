"""Team: `gpo check` of a monorepo cold, from a second machine on the same Redis, and sharded.

A generated repository of `--prompts` prompt files (each with its own
instruction and example set of `--rows` dev and test rows), whose baselines a
developer recorded with `gpo check --update` (against the test model server at
no latency, with a disk cache of its own that is then thrown away). Then the
developer changes every prompt's instruction, so each must be scored again: the
CI case, where the prompt differs from its lock. The scripted "noisy" task model
(bench/servers.py) makes some changes better and some worse, so the verdicts
are a mix of pass and regression.

Every check is the real CLI, `python -m gpo_server.cli check --json`, run as a
subprocess from the repository's root against the test model server (a thread of
this process) at `--latency-ms` per call, with `gpo.concurrency: --concurrency`:

  (a) machine A: an empty disk cache, an empty Redis (`--cache-url`);
  (b) machine B: a new empty disk cache, the Redis machine A filled;
      (and for scale, machine A again: every answer on its own disk);
  (c) N = 1, 2, 4 processes at once, `--shard I/N` each, every one with an empty
      disk cache and a fresh Redis database per N, then `gpo check --merge` of
      their reports, compared with (a)'s verdicts.

`--baseline REV` adds, right after (b), machine B once more on another empty disk
and the same Redis, running the gpo of git revision REV (its gpo_engine and
server, extracted with `git archive` and put first on PYTHONPATH): a before/after
of the second machine measured side by side. `--repeat-b K` runs that pair (b,
then REV's b) K times, alternating. `--no-shards` leaves out (c).

Model calls are counted by the server; "gpo calls" and "cache hits" are the
sum of the reports' usage. CPU is the user + system time of the gpo processes
of the run (getrusage of the children). "ideal" is the largest shard's
ceil(calls / concurrency) x latency: every slot of every process busy all the time.

    python bench/team.py                      # 200 prompts x 20 rows, 100 ms
    python bench/team.py --quick              # smoke size
    python bench/team.py --baseline c81912c --repeat-b 2 --no-shards   # B before/after
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
import servers

common.use_test_helpers()
from redis_server import RedisServer  # noqa: E402

SHARDS = (1, 2, 4)
QUICK = {"prompts": 12, "rows": 4, "latency_ms": 20.0}  # the smoke test's sizes


@dataclass
class Run:
    """One row of the table: a check made by one or more `gpo check` processes at once."""

    name: str
    processes: int
    wall: float
    cpu: float
    server_calls: int
    peak: int
    reports: list[dict[str, Any]]

    def usage(self, field: str) -> int:
        return sum(int(r.get("usage", {}).get(field, 0))
                   for report in self.reports for r in report["results"])

    def shard_calls(self) -> list[int]:
        return [sum(int(r.get("usage", {}).get("calls", 0)) for r in report["results"])
                for report in self.reports]


def generate(root: Path, prompts: int, rows: int, concurrency: int) -> list[Path]:
    """`prompts` prompt files in folders of their own, each with its own instruction."""
    files = []
    for i in range(prompts):
        prompt = servers.write_task(root / f"team{i // 50}" / f"p{i:03d}", train=0,
                                    dev=rows // 2, test=rows - rows // 2,
                                    extra={"gpo.concurrency": concurrency})
        prompt.write_text(prompt.read_text(encoding="utf-8").replace(
            servers.INSTRUCTION, f"Answer question set {i}."), encoding="utf-8")
        files.append(prompt)
    return files


def change(files: list[Path]) -> None:
    """The developer's edit: every instruction reworded, so no file matches its lock."""
    for prompt in files:
        text = prompt.read_text(encoding="utf-8")
        prompt.write_text(text.replace("Answer question set", "Answer the question of set"),
                          encoding="utf-8")


def gpo_check(*args: str) -> list[str]:
    return [sys.executable, "-m", "gpo_server.cli", "check", *args]


def environment(api_base: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items()
           if k not in ("GPO_CACHE_URL", "GPO_CACHE_TTL", "GPO_CACHE_DIR", "PYTHONPATH")}
    return {**env, "OPENAI_API_KEY": "test", "GPO_API_BASE": api_base,
            "LITELLM_LOCAL_MODEL_COST_MAP": "True"}


def baseline_code(revision: str, folder: Path, env: dict[str, str]) -> dict[str, str]:
    """`env` running the gpo of git `revision`: its gpo_engine and server (as gpo_server)
    extracted into `folder` and first on PYTHONPATH (before the editable install's finder,
    which Python asks last). Checked: the code a check imports is the extracted one."""
    source = folder / "src"
    source.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", revision, "gpo_engine", "server"],
                             cwd=common.ROOT, capture_output=True, check=True, timeout=60)
    subprocess.run(["tar", "-x", "-C", str(source)], input=archive.stdout, check=True,
                   timeout=60)
    path = folder / "path"
    path.mkdir()
    (path / "gpo_engine").symlink_to(source / "gpo_engine", target_is_directory=True)
    (path / "gpo_server").symlink_to(source / "server", target_is_directory=True)
    changed = {**env, "PYTHONPATH": str(path)}
    where = subprocess.run([sys.executable, "-c", "import gpo_engine.llm, gpo_server.cli; "
                            "print(gpo_engine.llm.__file__, gpo_server.cli.__file__)"],
                           env=changed, cwd=folder, capture_output=True, text=True, check=True,
                           timeout=120).stdout.split()
    if not all(name.startswith(str(path)) for name in where):
        shutil.rmtree(folder)
        raise RuntimeError(f"--baseline: the checks would import {where}, not {path}")
    return changed


def children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_checks(name: str, commands: list[list[str]], repo: Path, env: dict[str, str],
               server: Any, scratch: Path) -> Run:
    """Start every command at once (from `repo`), wait for all; their --json reports."""
    server.max_in_flight = 0
    calls, cpu = server.requests, children_cpu()
    outputs = [scratch / f"{name}-{i}.json" for i in range(len(commands))]
    errors = [scratch / f"{name}-{i}.err" for i in range(len(commands))]
    start = time.perf_counter()
    procs = []
    for command, out, err in zip(commands, outputs, errors, strict=True):
        with out.open("wb") as stdout, err.open("wb") as stderr:
            procs.append(subprocess.Popen(command, cwd=repo, env=env, stdout=stdout,
                                          stderr=stderr))
    for proc in procs:
        proc.wait()
    wall = time.perf_counter() - start
    reports = []
    for proc, out, err in zip(procs, outputs, errors, strict=True):
        text = out.read_text(encoding="utf-8")
        if proc.returncode not in (0, 1) or not text.strip():
            raise RuntimeError(f"{name}: gpo check exited {proc.returncode}:\n"
                               f"{err.read_text(encoding='utf-8')}")
        reports.append(json.loads(text))
    return Run(name, len(commands), wall, children_cpu() - cpu, server.requests - calls,
               server.max_in_flight, reports)


def verdicts(reports: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    """What a check decided, prompt by prompt (usage aside): the comparison of two checks."""
    results = [r for report in reports for r in report["results"]]
    return sorted((r["prompt"], r["verdict"], json.dumps(r["rows"], sort_keys=True))
                  for r in results)


def merge(reports: list[Path], repo: Path, env: dict[str, str]) -> dict[str, Any]:
    done = subprocess.run(gpo_check("--merge", *map(str, reports), "--json"), cwd=repo,
                          env=env, capture_output=True, text=True, timeout=300)
    if done.returncode not in (0, 1):
        raise RuntimeError(f"gpo check --merge exited {done.returncode}:\n{done.stderr}")
    merged: dict[str, Any] = json.loads(done.stdout)
    return merged


def measure(args: argparse.Namespace, scratch: Path) -> tuple[list[Run], dict[str, Any]]:
    repo = scratch / "repo"
    files = generate(repo, args.prompts, args.rows, args.concurrency)
    answers = servers.ScriptedAnswers("noisy")
    with servers.ThreadedServer(answers, latency=0.0) as server, \
            RedisServer(scratch / "redis") as redis:
        env = environment(server.api_base)
        # The developer records the baselines (on their own disk cache, thrown away).
        setup = run_checks("record", [gpo_check("--update", "--json", "--cache-dir",
                                                str(scratch / "developer"))],
                           repo, env, server, scratch)
        assert all(r["verdict"] == "updated" for r in setup.reports[0]["results"]), setup
        change(files)
        server.latency = args.latency_ms / 1000

        def url(db: int) -> str:
            return redis.url.rsplit("/", 1)[0] + f"/{db}"

        runs = [run_checks("a", [gpo_check("--json", "--cache-dir", str(scratch / "a"),
                                           "--cache-url", url(0))], repo, env, server, scratch)]
        print(f"  (a) {runs[-1].wall:.1f} s", file=sys.stderr, flush=True)
        old_env = (baseline_code(args.baseline, scratch / "baseline", env)
                   if args.baseline else None)
        for repeat in range(args.repeat_b):
            suffix = f"#{repeat + 1}" if repeat else ""
            runs.append(run_checks(f"b{suffix}", [gpo_check(
                "--json", "--cache-dir", str(scratch / f"b{suffix}"), "--cache-url", url(0))],
                repo, env, server, scratch))
            print(f"  (b){suffix} {runs[-1].wall:.1f} s", file=sys.stderr, flush=True)
            if old_env is not None:
                runs.append(run_checks(f"base{suffix}", [gpo_check(
                    "--json", "--cache-dir", str(scratch / f"base{suffix}"), "--cache-url",
                    url(0))], repo, old_env, server, scratch))
                print(f"  (b) at {args.baseline}{suffix} {runs[-1].wall:.1f} s",
                      file=sys.stderr, flush=True)
        # For scale: machine A again, every answer on its own disk (no network at all).
        runs.append(run_checks("a2", [gpo_check("--json", "--cache-dir", str(scratch / "a"),
                                                "--cache-url", url(0))],
                               repo, env, server, scratch))
        merged: dict[str, Any] = {}
        for db, count in enumerate(SHARDS if args.shards else (), start=1):
            name = f"n{count}"
            commands = [gpo_check("--json", "--shard", f"{i}/{count}", "--cache-dir",
                                  str(scratch / name / str(i)), "--cache-url", url(db))
                        for i in range(1, count + 1)]
            runs.append(run_checks(name, commands, repo, env, server, scratch))
            print(f"  N={count} {runs[-1].wall:.1f} s", file=sys.stderr, flush=True)
            merged[name] = merge([scratch / f"{name}-{i}.json" for i in range(count)],
                                 repo, env)
    return runs, merged


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--prompts", type=int, default=200)
    parser.add_argument("--rows", type=int, default=20, help="rows per prompt: half dev, "
                        "half test")
    parser.add_argument("--latency-ms", type=float, default=100.0)
    parser.add_argument("--concurrency", type=int, default=4,
                        help="gpo.concurrency of every prompt (gpo's default: 4)")
    parser.add_argument("--baseline", metavar="REV",
                        help="also run machine B on the gpo of this git revision")
    parser.add_argument("--repeat-b", type=int, default=1, metavar="K",
                        help="run machine B (and REV's) K times, alternating")
    parser.add_argument("--no-shards", dest="shards", action="store_false",
                        help="leave out (c), the --shard runs")
    parser.add_argument("--quick", action="store_true",
                        help="smoke size: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    args = parser.parse_args(argv)
    if args.quick:
        vars(args).update(QUICK)
    latency = args.latency_ms / 1000
    print(f"# team: `gpo check` of {args.prompts} changed prompts x {args.rows} rows, "
          f"latency {args.latency_ms:.0f} ms, gpo.concurrency {args.concurrency}\n")
    print(f"machine: {common.machine()}\n")
    with tempfile.TemporaryDirectory(prefix="gpo-team-") as scratch:
        runs, merged = measure(args, Path(scratch))
    whole = verdicts(runs[0].reports)
    one = next((r for r in runs if r.name == "n1"), None)
    labels = {"a": "(a) machine A: cold disk, empty Redis",
              "b": "(b) machine B: empty disk, same Redis",
              "a2": "machine A again: warm disk"}
    for repeat in range(1, args.repeat_b + 1):
        suffix = f"#{repeat}" if repeat > 1 else ""
        labels[f"b{suffix}"] = f"(b) machine B: empty disk, same Redis{suffix and ' ' + suffix}"
        labels[f"base{suffix}"] = (f"(b) machine B at {args.baseline}{suffix and ' ' + suffix}")
    rows = []
    for run in runs:
        same = verdicts(run.reports) == whole
        if run.name in merged:
            same = same and verdicts([merged[run.name]]) == whole
        ideal = max(math.ceil(c / args.concurrency) for c in run.shard_calls()) * latency
        rows.append([labels.get(run.name, f"(c) --shard I/{run.processes}, cold"),
                     run.processes, run.wall, run.server_calls, run.usage("calls"),
                     run.usage("cache_hits"), run.peak, ideal,
                     run.wall / ideal if ideal else float("nan"), run.cpu,
                     one.wall / run.wall if one and run.name.startswith("n") else float("nan"),
                     "yes" if same else "NO"])
    print(common.table(["run", "processes", "wall s", "model calls (server)", "gpo calls",
                        "cache hits", "peak in flight", "ideal s", "wall / ideal", "CPU s",
                        "speed-up over N=1", "verdicts = (a)"], rows))
    counts: dict[str, int] = {}
    for _, verdict, _ in whole:
        counts[verdict] = counts.get(verdict, 0) + 1
    print("\nverdicts of (a): " + ", ".join(f"{n} {v}" for v, n in sorted(counts.items())))
    if merged:
        print("merged shards (`gpo check --merge`) give (a)'s verdicts: "
              + ", ".join(f"N={name[1:]} {verdicts([report]) == whole}"
                          for name, report in merged.items()))
    b = next(r for r in runs if r.name == "b")
    warm = next(r for r in runs if r.name == "a2")
    print(f"machine B: {b.server_calls} model calls, {runs[0].wall / b.wall:.1f}x faster "
          f"than machine A's cold check; {b.wall / warm.wall:.1f}x the time of machine A "
          "again on its warm disk")
    now = [r for r in runs if r.name == "b" or r.name.startswith("b#")]
    before = [r for r in runs if r.name.startswith("base")]
    if before:
        mean_now, mean_before = (sum(r.wall for r in rs) / len(rs) for rs in (now, before))
        print(f"machine B at {args.baseline} / machine B now: {mean_before / mean_now:.2f}x "
              f"({mean_before:.2f} s / {mean_now:.2f} s, mean of {len(now)} each, "
              "alternating)")
    print()
    if one is None:
        return 0
    top = runs[-1]
    print(common.headline(f"cold check over {top.processes} shards, speed-up over 1",
                          one.wall / top.wall,
                          f"no target; machine B made {b.server_calls} model calls", None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
