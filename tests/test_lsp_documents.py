"""The language server's pure parts: the `gpo` settings object and local document checks."""

from __future__ import annotations

from pathlib import Path

import pytest

from gpo_engine import promptfile
from gpo_server.lsp_documents import MAX_PROMPT_CHARS, analyze, read_lossy
from gpo_server.lsp_settings import LspSettings, client_address, parse_settings
from tests.prompt_files import write_prompt

PROMPT = "---\nmodel: openai/x\n---\nCapital of {{country}}?\n"


def test_settings_as_both_editors_send_them() -> None:
    settings, warnings = parse_settings({
        "autoOptimizeOnSave": True,
        "models": {"task": " openai/a ", "optimizer": None},
        "daemon": {"address": None},
        "budget": {"initial": 30, "final": 5, "decay": "linear"},
    })
    assert warnings == []
    assert settings == LspSettings(True, "openai/a", None, None,
                                   (("decay", "linear"), ("final", 5), ("initial", 30)))
    assert settings.overrides() == {"model": "openai/a",
                                    "budget": {"decay": "linear", "final": 5, "initial": 30}}
    assert parse_settings(None) == (LspSettings(), [])
    assert parse_settings({}) == (LspSettings(), [])
    assert LspSettings().overrides() == {}
    assert parse_settings({"models": {"optimizer": "openai/o"}})[0].overrides() == {
        "optimizer": "openai/o"}


def test_bad_settings_are_dropped_with_a_warning_naming_them() -> None:
    settings, warnings = parse_settings({
        "autoOptimizeOnSave": "yes",
        "models": "openai/a",
        "daemon": {"address": 7},
        "budget": {"initial": -1, "final": True, "decay": "exp"},
    })
    assert settings == LspSettings()
    assert [w.split(" ")[0] for w in warnings] == [
        "gpo.autoOptimizeOnSave", "gpo.models", "gpo.budget.initial", "gpo.budget.final",
        "gpo.budget.decay", "gpo.daemon.address"]
    settings, warnings = parse_settings({"budget": {"initial": 5, "final": 10}})
    assert settings.budget == () and "initial must be >=" in warnings[0]
    assert parse_settings([1])[1] == ["the gpo settings must be an object, got list"]


def test_daemon_address_forms() -> None:
    assert client_address("unix:/run/gpo.sock") == "unix:/run/gpo.sock"
    assert client_address("http://127.0.0.1:8123") == "http://127.0.0.1:8123"
    assert client_address("/run/gpo.sock") == "unix:/run/gpo.sock"
    assert client_address("~/gpo.sock") == f"unix:{Path.home()}/gpo.sock"


def _write(folder: Path, examples: bytes | None, prompt: str = PROMPT) -> Path:
    return write_prompt(folder, "p", prompt, examples)


def test_a_good_prompt_and_examples_have_no_problems(tmp_path: Path) -> None:
    path = _write(tmp_path, b'{"country": "Peru", "expected": "Lima", "split": "dev"}\n')
    analysis = analyze(PROMPT, path)
    assert analysis.problems == () and analysis.prompt is not None
    assert analysis.examples_path == tmp_path / "p.examples.jsonl"
    quick = analyze(PROMPT, path, with_examples=False)
    assert quick.prompt is not None and quick.examples_path is None


def test_example_problems_are_located_in_the_example_file(tmp_path: Path) -> None:
    path = _write(tmp_path, b'{"country": "Peru", "expected": "Lima", "split": "dev"}\n'
                            b'{"expected": "Rome"}\n')
    analysis = analyze(PROMPT, path)
    assert analysis.prompt is not None
    assert [(p.path.name, p.line) for p in analysis.problems] == [("p.examples.jsonl", 2)]
    _write(tmp_path, b'{"country": "Peru", "expected": "Lima"}\n{"country": "P\xffru"}\n')
    [problem] = analyze(PROMPT, path).problems
    assert (problem.path.name, problem.line, problem.message) == (
        "p.examples.jsonl", 2, "not valid UTF-8")


def test_missing_examples_and_an_empty_dev_split(tmp_path: Path) -> None:
    path = _write(tmp_path, None)
    [problem] = analyze(PROMPT, path).problems
    assert problem.path == path and "example set not found" in problem.message
    _write(tmp_path, b'{"country": "Peru", "expected": "Lima", "split": "train"}\n')
    [problem] = analyze(PROMPT, path).problems
    assert problem.line == 1 and "dev split is empty" in problem.message


def test_a_broken_prompt_keeps_watching_its_default_example_file(tmp_path: Path) -> None:
    path = _write(tmp_path, b"{}\n")
    analysis = analyze("---\nmodel: [\n---\nHi {{x}}\n", path)
    assert analysis.prompt is None and analysis.problems[0].line == 2
    assert analysis.examples_path == tmp_path / "p.examples.jsonl"


def test_a_huge_document_is_not_parsed(tmp_path: Path) -> None:
    path = tmp_path / "big.prompt"
    [problem] = analyze("x" * (MAX_PROMPT_CHARS + 1), path).problems
    assert (problem.line, problem.column) == (1, 1) and "too large" in problem.message


def test_a_parser_crash_becomes_a_problem(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                          ) -> None:
    def explode(source: str, path: Path) -> None:
        raise RecursionError("too deep")

    # lsp_documents imports the parser when it first needs it, from its module.
    monkeypatch.setattr(promptfile, "parse_prompt", explode)
    [problem] = analyze(PROMPT, tmp_path / "p.prompt").problems
    assert problem.message == "gpo could not parse this file: too deep"


def test_read_lossy(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"a\xffb")
    assert read_lossy(tmp_path / "f") == "a\ufffdb"
    assert read_lossy(tmp_path / "missing") is None
