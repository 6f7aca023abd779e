"""The `gpo-check` pre-commit hook, run by the real `pre-commit` tool at `git commit`.

The hook repository is a snapshot of this checkout (tracked and untracked,
non-ignored files, committed into a temporary repo so pre-commit can clone it
at a rev), so the real `.pre-commit-hooks.yaml` is what gets installed:
pre-commit builds its own virtualenv and pip-installs the package from PyPI
dependencies, once per test session (PRE_COMMIT_HOME is a session folder).
The task model is the test model server from test_check, reached through
GPO_API_BASE, which the hook process inherits from `git commit`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from model_server import ModelServer
from test_check import BAD, GOOD, SLIGHTLY_WORSE, frontmatter, server_thread, write_task

from gpo_server.cli import main

ROOT = Path(__file__).resolve().parents[1]
PRE_COMMIT = Path(sys.executable).with_name("pre-commit")
# pip-installing the hook's environment (litellm and friends) takes about 30 s on a warm
# network; be generous for a cold one.
INSTALL_TIMEOUT = 900

pytestmark = pytest.mark.skipif(shutil.which("git") is None or not PRE_COMMIT.exists(),
                                reason="needs git and pre-commit (the dev extra)")


def git(repo: Path, *args: str, env: dict[str, str] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                          env=env, check=check, timeout=INSTALL_TIMEOUT)


def init_repo(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    git(path, "init", "-q", "-b", "main")
    git(path, "config", "user.email", "test@example.com")
    git(path, "config", "user.name", "Test")
    git(path, "config", "commit.gpgsign", "false")
    return path


@pytest.fixture(scope="session")
def hook_repo(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """This checkout as pre-commit sees a hook repository: a git repo at a rev."""
    listed = subprocess.run(["git", "-C", str(ROOT), "ls-files", "-co", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.splitlines()
    repo = init_repo(tmp_path_factory.mktemp("hook-repo"))
    for name in listed:
        source = ROOT / name
        if source.is_file():
            (repo / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, repo / name)
    assert (repo / ".pre-commit-hooks.yaml").is_file()
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", "snapshot")
    return repo, git(repo, "rev-parse", "HEAD").stdout.strip()


@pytest.fixture(scope="session")
def pre_commit_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("pre-commit-home")


@pytest.fixture
def project(tmp_path: Path, hook_repo: tuple[Path, str], pre_commit_home: Path,
            monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, dict[str, str], ModelServer]]:
    """A repo using the hook, a prompt with its examples and baseline lock, all committed."""
    repo_url, rev = hook_repo
    project = init_repo(tmp_path / "project")
    (project / ".pre-commit-config.yaml").write_text(
        f"repos:\n- repo: {repo_url}\n  rev: {rev}\n  hooks:\n  - id: gpo-check\n")
    with server_thread() as server:
        env = {**os.environ, "PRE_COMMIT_HOME": str(pre_commit_home),
               "GPO_API_BASE": server.api_base, "OPENAI_API_KEY": "test"}
        monkeypatch.setenv("GPO_API_BASE", server.api_base)
        monkeypatch.setenv("OPENAI_API_KEY", "test")
        subprocess.run([str(PRE_COMMIT), "install"], cwd=project, env=env, check=True,
                       capture_output=True, text=True)
        # Built once per session (the first test pays the pip install).
        built = subprocess.run([str(PRE_COMMIT), "install-hooks"], cwd=project, env=env,
                               capture_output=True, text=True, timeout=INSTALL_TIMEOUT)
        assert built.returncode == 0, built.stdout + built.stderr
        monkeypatch.chdir(project)
        write_task(Path("prompts"))
        assert main(["check", "--update", "prompts/senti.prompt"]) == 0
        yield project, env, server


def commit(project: Path, env: dict[str, str], message: str) -> subprocess.CompletedProcess[str]:
    git(project, "add", "-A")
    return git(project, "commit", "-m", message, env=env, check=False)


def head(project: Path) -> str:
    return git(project, "rev-parse", "HEAD").stdout.strip()


def test_degrading_commit_is_rejected_keeping_and_improving_pass(
    project: tuple[Path, dict[str, str], ModelServer],
) -> None:
    repo, env, server = project
    prompt = repo / "prompts" / "senti.prompt"
    first = commit(repo, env, "prompt with baseline")
    assert first.returncode == 0, first.stdout + first.stderr
    hook_line = next(line for line in (first.stdout + first.stderr).splitlines()
                     if line.startswith("gpo check (prompt regressions)"))
    assert hook_line.endswith("Passed")
    calls = server.requests

    prompt.write_text(frontmatter() + BAD)
    before = head(repo)
    rejected = commit(repo, env, "worse prompt")
    output = rejected.stdout + rejected.stderr
    assert rejected.returncode != 0, output
    assert "REGRESSION" in output and "significant at alpha=0.05" in output
    assert head(repo) == before  # nothing was committed
    assert server.requests > calls  # the hook scored the new text with the model

    # Same score, other words: the hook lets it through.
    prompt.write_text(frontmatter() + GOOD.replace("Classify the sentiment.",
                                                   "Classify the sentiment of the review."))
    kept = commit(repo, env, "reworded prompt")
    assert kept.returncode == 0, kept.stdout + kept.stderr

    # Improving on a weaker baseline passes too.
    prompt.write_text(frontmatter() + SLIGHTLY_WORSE)
    assert main(["check", "--update", "prompts/senti.prompt"]) == 0
    assert commit(repo, env, "weaker baseline").returncode == 0
    prompt.write_text(frontmatter() + GOOD)
    improved = commit(repo, env, "better prompt")
    assert improved.returncode == 0, improved.stdout + improved.stderr
    assert head(repo) != before


def test_stale_lock_fails_with_its_own_message(
    project: tuple[Path, dict[str, str], ModelServer],
) -> None:
    repo, env, _ = project
    assert commit(repo, env, "prompt with baseline").returncode == 0
    examples = repo / "prompts" / "senti.examples.jsonl"
    examples.write_text(examples.read_text() + '{"review": "Meh.", "expected": "negative"}\n')
    stale = commit(repo, env, "more examples, old lock")
    output = stale.stdout + stale.stderr
    assert stale.returncode != 0, output
    assert "STALE" in output and "baseline is stale: the example set" in output
    assert "REGRESSION" not in output
    assert "gpo check --update prompts/senti.prompt" in output
    assert main(["check", "--update", "prompts/senti.prompt"]) == 0
    refreshed = commit(repo, env, "more examples, new lock")
    assert refreshed.returncode == 0, refreshed.stdout + refreshed.stderr
