"""VS Code with the packed extension against the real `gpo lsp`, driven as a person would.

code-server (VS Code in the browser) runs with the `.vsix` this test packs from
editors/vscode installed, and Debian's headless Chromium shows it. A puppeteer-core
driver (tests/vscode/drive.mjs, one step per connection) opens a prompt with a broken
frontmatter, reads the language mode and the Problems panel, fixes the line by typing,
hovers, runs Optimize from Ctrl+. while the status bar shows the progress, previews the
suggestion's diff, applies it from Ctrl+. and saves; the test then reads the file on
disk. The models are the test model server (the scripted capitals pair), served from
this test's event loop; the server's daemon runs in the test's own runtime and cache
folders.

Needs what tests/vscode/setup.sh installs (.ci/run runs it) and editors/vscode's
node_modules (npm ci); skips with the reason otherwise. One screenshot per step goes
to $GPO_VSCODE_SHOTS, else to a folder under pytest's tmp_path (printed).
docs/vscode-hover.png and docs/vscode-apply.png are the editor crops of the steps
"hover-scores" and "apply-menu" of a run (NN-hover-scores-editor.png, NN-apply-menu-editor.png).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress
from pathlib import Path
from typing import Any

import pytest

from tests.model_server import ModelServer
from tests.scripted_models import GOOD, ScriptedModels, write_capitals
from tests.test_lsp_server import server_env, short_dir  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parent.parent
SETUP = ROOT / "tests" / "vscode" / "setup.sh"
DRIVER = ROOT / "tests" / "vscode" / "drive.mjs"
EXTENSION = ROOT / "editors" / "vscode"
STEP_TIMEOUT = 180.0  # seconds for one driver step; each step waits less inside

BROKEN_LINE = 5  # "gpo.candidates: 2: 3": three characters too many at its end
NEW_FIRST_LINE = "Name the capital city of the country."


def tool_paths() -> dict[str, str]:
    """The cached tools' paths (setup.sh --check), or skip saying what is missing."""
    proc = subprocess.run(["bash", str(SETUP), "--check"], capture_output=True, text=True,
                          check=False)
    paths = dict(line.split("=", 1) for line in proc.stdout.splitlines() if "=" in line)
    if proc.returncode != 0:
        pytest.skip("Node 24, code-server, puppeteer-core or chromium is not installed: "
                    "run bash tests/vscode/setup.sh (.ci/run does)")
    if not (EXTENSION / "node_modules" / "@vscode" / "vsce").is_dir():
        pytest.skip("editors/vscode has no node_modules: run npm ci there (.ci/run does)")
    return paths


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return f"({path} not readable)"


class Session:
    """The running editor: code-server, Chromium and the driver, with their logs."""

    def __init__(self, base: Path, shots: Path, tools: dict[str, str], env: dict[str, str]):
        self.base, self.shots, self.tools, self.env = base, shots, tools, env
        self.driver_log = shots / "driver.log"
        self.code_log = base / "code-server.log"
        self.logs = base / "user-data" / "logs"  # VS Code's, with the GPO output channel
        self.browser = ""
        self.url = ""
        self.steps = 0

    def failure(self, what: str) -> str:
        channels = sorted(self.logs.rglob("*GPO*.log")) if self.logs.is_dir() else []
        channel = f"\n--- {channels[-1]} (end) ---\n{tail(channels[-1])}" if channels else ""
        daemon = self.base / "rt" / "daemon.log"
        return (f"{what}\nscreenshots: {self.shots}\n--- driver log (end) ---\n"
                f"{tail(self.driver_log)}\n--- code-server log (end) ---\n"
                f"{tail(self.code_log, 20)}{channel}\n--- {daemon} (end) ---\n{tail(daemon, 15)}")

    async def drive(self, step: str, shot: str, **args: Any) -> dict[str, Any]:
        """Run one driver step; its screenshot is NN-shot.png."""
        self.steps += 1
        args["shot"] = f"{self.steps:02d}-{shot}"
        env = {**self.env, "GPO_DRIVE_BROWSER": self.browser, "GPO_DRIVE_URL": self.url,
               "GPO_DRIVE_SHOTS": str(self.shots), "PUPPETEER_DIR": self.tools["PUPPETEER_DIR"]}
        with self.driver_log.open("ab") as log:
            proc = await asyncio.create_subprocess_exec(
                str(Path(self.tools["NODE_BIN"]) / "node"), str(DRIVER), step, json.dumps(args),
                env=env, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
                stderr=log)
            try:
                out, _ = await asyncio.wait_for(proc.communicate(), STEP_TIMEOUT)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                raise AssertionError(self.failure(f"step {args['shot']} ({step}) hung")) from None
        try:
            result: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
        except (IndexError, ValueError):
            result = {"ok": False, "error": f"no answer from the driver: {out!r}"}
        if not result.get("ok"):
            raise AssertionError(self.failure(
                f"step {args['shot']} ({step}) failed: {result.get('error')}\n"
                f"last screenshot: {result.get('shot')}"))
        return result

    def check(self, condition: bool, what: str, result: dict[str, Any]) -> None:
        if not condition:
            raise AssertionError(self.failure(
                f"{what}\nstep answer: {json.dumps(result, ensure_ascii=False)[:3000]}\n"
                f"its screenshot: {result.get('shot')}"))


async def start(argv: list[str], env: dict[str, str], log: Path) -> asyncio.subprocess.Process:
    with log.open("ab") as out:
        return await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
            start_new_session=True)  # its own group: stopped with all its children


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is not None:
        return
    with suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), 10)
    except asyncio.TimeoutError:
        with suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
    with suppress(ProcessLookupError):  # helpers left in the group
        os.killpg(proc.pid, signal.SIGKILL)


async def wait_for(what: str, probe: Any, session: Session, timeout: float = 60) -> Any:
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = probe()
        if found:
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(session.failure(f"timed out waiting for {what}"))
        await asyncio.sleep(0.1)


@asynccontextmanager
async def vscode(base: Path, ws: Path, shots: Path, tools: dict[str, str],
                 api_base: str) -> AsyncIterator[Session]:
    """code-server with the freshly packed extension, and Chromium to look at it."""
    node_bin = tools["NODE_BIN"]
    env = {**server_env(base, api_base), "PATH": f"{node_bin}:{os.environ.get('PATH', '')}",
           # code-server and Chromium write their config and state here, not in $HOME.
           "XDG_CONFIG_HOME": str(base / "xdg-config"), "XDG_DATA_HOME": str(base / "xdg-data"),
           "XDG_STATE_HOME": str(base / "xdg-state"), "XDG_CACHE_HOME": str(base / "xdg-cache")}
    session = Session(base, shots, tools, env)

    vsix = base / "gpo-vscode.vsix"
    packed = subprocess.run(
        [f"{node_bin}/node", str(EXTENSION / "node_modules" / "@vscode" / "vsce" / "vsce"),
         "package", "--allow-missing-repository", "--skip-license", "--out", str(vsix)],
        cwd=EXTENSION, env=env, capture_output=True, text=True, check=False, timeout=300)
    assert packed.returncode == 0, f"vsce package failed:\n{packed.stdout}\n{packed.stderr}"

    user_data, extensions = base / "user-data", base / "extensions"
    (user_data / "User").mkdir(parents=True)
    # gpo.server.path is a machine setting: in code-server (a remote window to VS Code)
    # its place is the remote machine's settings; user settings drop it, or not, by a race.
    (user_data / "Machine").mkdir(parents=True)
    (user_data / "Machine" / "settings.json").write_text(json.dumps({
        "gpo.server.path": str(Path(sys.executable).parent / "gpo"),
    }), encoding="utf-8")
    (user_data / "User" / "settings.json").write_text(json.dumps({
        "gpo.trace.server": "messages",  # the LSP traffic in the GPO output (failure report)
        "files.autoSave": "afterDelay",  # web VS Code's default, said out loud
        "workbench.startupEditor": "none",
        "workbench.secondarySideBar.defaultVisibility": "hidden",
        "workbench.colorTheme": "Default Light Modern",
        "workbench.tips.enabled": False,
        "workbench.enableExperiments": False,
        "chat.disableAIFeatures": True,
        "extensions.ignoreRecommendations": True,
        "extensions.autoCheckUpdates": False,
        "extensions.autoUpdate": False,
        "telemetry.telemetryLevel": "off",
        "editor.minimap.enabled": False,
        # A "port forwarded" toast (the daemon's and the model server's ports) takes the
        # focus and closes an open menu.
        "remote.autoForwardPorts": False,
        "remote.restoreForwardedPorts": False,
        "editor.hover.delay": 300,
    }, indent=2), encoding="utf-8")
    code = [tools["CODE_SERVER"], "--user-data-dir", str(user_data),
            "--extensions-dir", str(extensions)]
    installed = subprocess.run([*code, "--install-extension", str(vsix)], env=env,
                               capture_output=True, text=True, check=False, timeout=120)
    assert installed.returncode == 0 and "successfully installed" in installed.stdout, (
        f"code-server --install-extension failed:\n{installed.stdout}\n{installed.stderr}")

    server = await start([*code, "--auth", "none", "--bind-addr", "127.0.0.1:0",
                          "--disable-workspace-trust", "--disable-telemetry",
                          "--disable-update-check", str(ws)], env, session.code_log)
    chrome_dir = base / "chromium"
    browser = await start([tools["CHROMIUM"], "--headless=new", "--no-sandbox",
                           "--remote-debugging-port=0", f"--user-data-dir={chrome_dir}",
                           "--window-size=1400,1000", "--force-device-scale-factor=1",
                           "--no-first-run", "--no-default-browser-check", "about:blank"],
                          env, base / "chromium.log")
    try:
        listening = re.compile(r"HTTP server listening on (http://127\.0\.0\.1:\d+)/")
        found = await wait_for("code-server to listen", lambda: listening.search(
            session.code_log.read_text(errors="replace")), session)
        session.url = f"{found.group(1)}/?folder={ws}"
        port_file = chrome_dir / "DevToolsActivePort"
        port = await wait_for("Chromium's devtools port", lambda: port_file.is_file() and (
            port_file.read_text().split("\n")[0].strip()), session)
        session.browser = f"http://127.0.0.1:{port}"
        yield session
    finally:
        await stop(browser)
        await stop(server)
        for channel in sorted(session.logs.rglob("*GPO*.log")) if session.logs.is_dir() else []:
            shutil.copyfile(channel, shots / "gpo-output.log")  # kept beside the screenshots


def frontmatter_of(text: str) -> str:
    """The text up to and with the closing '---' line."""
    end = text.index("\n---\n", 4) + len("\n---\n")
    return text[:end]


async def test_vscode_optimizes_and_applies_as_a_person_would(
        short_dir: Path, tmp_path: Path) -> None:  # noqa: F811
    tools = tool_paths()
    shots = Path(os.environ.get("GPO_VSCODE_SHOTS") or tmp_path / "vscode-shots")
    shots.mkdir(parents=True, exist_ok=True)
    print(f"screenshots: {shots}")
    ws = short_dir / "ws"
    prompt = write_capitals(ws, steps=2, candidates=2)
    good = prompt.read_bytes()
    lines = good.decode().splitlines()
    assert lines[BROKEN_LINE - 1] == "gpo.candidates: 2"
    prompt.write_bytes(good.replace(b"gpo.candidates: 2\n", b"gpo.candidates: 2: 3\n"))
    original = good.decode()
    body_line = len(frontmatter_of(original).splitlines()) + 1  # the body's first line

    # A little latency per call, so the run lasts long enough to be seen in the status bar.
    async with ModelServer(answer=ScriptedModels([GOOD]).answer, latency=0.05) as models, \
            vscode(short_dir, ws, shots, tools, models.api_base) as ide:
        opened = await ide.drive("open", "open", file=prompt.name)
        ide.check(opened["language"] == "Dotprompt",
                  f"language mode {opened['language']!r}, not Dotprompt", opened)

        problems = await ide.drive("problems", "problems", expect="invalid YAML")
        row = next(r for r in problems["rows"] if "invalid YAML" in r)
        ide.check(row.startswith("Error: frontmatter: invalid YAML: mapping values are not "
                                 "allowed here") and f"at line {BROKEN_LINE} " in row,
                  f"the frontmatter error at line {BROKEN_LINE}: {row!r}", problems)

        fixed = await ide.drive("fix", "fixed", line=BROKEN_LINE, backspaces=3)
        await wait_for("the auto-saved fix on disk", lambda: prompt.read_bytes() == good, ide, 20)
        ide.check(fixed["lines"][:len(lines)] == lines, "the fixed buffer", fixed)

        unscored = await ide.drive("hover", "hover-unscored", line="Tell me", expect="GPO")
        ide.check("step 0/2" in unscored["text"], "the hover before any run", unscored)

        run = await ide.drive("actions", "optimize", line=body_line,
                              expect="Optimize this prompt", choose="Optimize this prompt",
                              progress=True)
        ide.check(any(t.startswith("GPO: optimizing capitals.prompt") for t in run["progress"])
                  and any(re.search(r"step \d/2", t) for t in run["progress"]),
                  f"the run's progress in the status bar: {run['progress']}", run)

        hover = await ide.drive("hover", "hover-scores", line="Tell me", expect="ready: Apply",
                                crop=True)
        text = hover["text"]
        ide.check(all(part in text for part in (
            "step 2/2", "dev: 0.0 (n=8", "test: 0.0 (n=8", "best in trajectory: 100.0 dev",
            "ready: Apply GPO suggestion (+100 pts")), f"scores in the hover: {text!r}", hover)

        preview = await ide.drive("command", "preview", title="GPO: Preview suggestion",
                                  diff=True)
        ide.check("GPO suggestion (+100 pts" in preview["tab"]["label"]
                  and "Tell me about the country." in preview["original"]
                  and NEW_FIRST_LINE in preview["modified"]
                  and "Tell me about the country." not in preview["modified"]
                  and preview["changes"] > 0, "the suggestion's diff", preview)

        await ide.drive("tab", "back-to-file", file=prompt.name)
        applied = await ide.drive("actions", "apply", line=body_line,
                                  expect="Apply GPO suggestion", choose="Apply GPO suggestion",
                                  edits=True, crop=True)
        titles = [item["title"] for item in applied["items"]]
        ide.check(any(t.startswith("Apply GPO suggestion (+100 pts, ") for t in titles)
                  and "Optimize this prompt" in titles, f"the apply menu: {titles}", applied)
        ide.check(applied["lines"][:body_line - 1] == lines[:body_line - 1]
                  and applied["lines"][body_line - 1] == NEW_FIRST_LINE,
                  "the buffer after apply: the body's first line rewritten", applied)

        saved = await ide.drive("save", "saved")
        ide.check(not saved["tab"]["dirty"], "the tab after Ctrl+S", saved)
        await wait_for("the applied suggestion on disk",
                       lambda: NEW_FIRST_LINE in prompt.read_text(encoding="utf-8"), ide, 20)
    on_disk = prompt.read_text(encoding="utf-8")
    assert on_disk.encode().startswith(frontmatter_of(original).encode()), on_disk
    assert on_disk[len(frontmatter_of(original)):] == (
        f"{NEW_FIRST_LINE}\nCountry: {{{{country}}}}\nAnswer:\n"), on_disk
    assert models.requests > 0
