"""The prompt checked against its example set (lsp_lint), the analysis that carries it, and
the hover's messages line; the server publishing all of it is in test_lsp_lint_server.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from gpo_engine.examples import load_examples
from gpo_engine.promptfile import PromptFile, parse_prompt
from gpo_server.lsp_documents import analyze
from gpo_server.lsp_hover import format_messages, hover_markdown, messages_line
from gpo_server.lsp_lint import (
    check_examples,
    column_location,
    tag_offset,
    tag_offsets,
    unread_column_problems,
    unread_columns,
    variables_read,
)
from gpo_server.prompt_state import parse_state
from tests.lsp_samples import INITIAL, state_dict

BODY = "Capital of {{country}}?\n{{#if hint}}Hint: {{hint}}{{/if}}\n"


def prompt_in(folder: Path, body: str = BODY, *front: str) -> PromptFile:
    source = "---\nmodel: openai/x\n" + "".join(f"{line}\n" for line in front) + "---\n" + body
    path = folder / "p.prompt"
    path.write_text(source, encoding="utf-8")
    return parse_prompt(source, path)


def jsonl(folder: Path, *rows: dict[str, Any]) -> Path:
    path = folder / "p.examples.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def located(problems: Any) -> list[tuple[str, int, int, str]]:
    return [(p.path.name, p.line, p.column, p.message) for p in problems]


# --- where a variable is first read -------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "offset"),
    [
        ("Hi {{name}}", 3),
        ("{{!-- {{name}} --}}{{! name }}x {{name}}", 32),  # comments read nothing
        ('{{lookup "name" other}} {{#if name}}', 24),  # a quoted string is not a read
        ("{{a.name}} {{@name}} {{x name=1}} {{{name}}}", 34),  # paths, data, hash keys
        ("{{named}} {{name-x}} {{name.first}}", 21),  # the whole head, not a prefix
        ("no tag reads it", None),
    ],
)
def test_tag_offset_finds_the_first_tag_reading_a_variable(body: str, offset: int | None
                                                             ) -> None:
    assert tag_offset(body, "name") == offset


def test_tag_offsets_of_many_names_in_one_pass_agree_with_one_at_a_time() -> None:
    body = ("{{!-- {{a}} --}}{{b.a}} {{x a=1}} {{#each items as |it|}}{{it.a}}{{/each}} "
            "{{a}} {{c-d}} {{$e}} {{lookup 'f' g}} {{h}}{{h}}")
    names = ["a", "b", "c-d", "$e", "f", "g", "h", "it", "x", "missing", "items"]
    found = tag_offsets(body, names)
    assert found == {n: tag_offset(body, n) for n in names if tag_offset(body, n) is not None}
    assert found["a"] == body.rindex("{{a}}") and found["h"] == body.index("{{h}}")
    assert found["$e"] == body.index("{{$e}}")  # not a word run: searched tag by tag
    assert "f" not in found and "missing" not in found


def test_tag_offsets_of_5000_variables() -> None:
    """5,000 variables (23 s with one scan of the body each) are placed in one pass."""
    names = [f"v{i}" for i in range(5000)]
    body = " ".join(f"{{{{{name}}}}}" for name in names)
    found = tag_offsets(body, names)
    assert found["v4999"] == body.index("{{v4999}}") and len(found) == 5000


# --- a variable no row has ----------------------------------------------------------------


def test_a_variable_every_row_lacks_is_one_error_at_its_tag(tmp_path: Path) -> None:
    prompt = prompt_in(tmp_path)
    path = jsonl(tmp_path, {"country": "Peru", "expected": "Lima"},
                 {"country": "Chile", "expected": "Santiago"})
    with pytest.raises(Exception, match="lacks template variable 'hint'"):  # the flood today
        load_examples(path, prompt.variables)
    check = check_examples(prompt, path)
    # Once, in the prompt, at `{{#if hint}}` (line 5, column 1), and no row errors.
    assert located(check.problems) == [
        ("p.prompt", 5, 1, "variable 'hint' is not in the example set p.examples.jsonl")]
    assert check.examples is not None and len(check.examples.examples) == 2


def test_a_variable_some_rows_lack_stays_a_row_error(tmp_path: Path) -> None:
    prompt = prompt_in(tmp_path)
    path = jsonl(tmp_path, {"country": "Peru", "hint": "h", "expected": "Lima"},
                 {"country": "Chile", "expected": "Santiago"})
    check = check_examples(prompt, path)
    assert check.examples is None
    assert located(check.problems) == [
        ("p.examples.jsonl", 2, 1, "row lacks template variable 'hint'")]


def test_every_row_lacking_with_other_row_errors_keeps_the_row_errors(tmp_path: Path) -> None:
    prompt = prompt_in(tmp_path, "Capital of {{country}}?\n")
    path = tmp_path / "p.examples.jsonl"
    path.write_text('{"expected": "Lima"}\n{"expected": \n', encoding="utf-8")
    check = check_examples(prompt, path)
    # Without readable rows nobody can tell "every row": the file's problems as they were.
    assert [p.line for p in check.problems] == [1, 2]
    assert "lacks template variable 'country'" in check.problems[0].message


def test_a_csv_header_without_the_variable_points_at_the_tag(tmp_path: Path) -> None:
    prompt = prompt_in(tmp_path)
    path = tmp_path / "p.examples.csv"
    path.write_text("country,expected\nPeru,Lima\n", encoding="utf-8")
    assert located(check_examples(prompt, path).problems) == [
        ("p.prompt", 5, 1, "variable 'hint' is not in the example set p.examples.csv")]


def test_input_schema_and_default_count_as_present(tmp_path: Path) -> None:
    rows = ({"country": "Peru", "expected": "Lima"},)
    declared = prompt_in(tmp_path, BODY, "input:", "  schema:", "    country: string",
                         "    hint?: string")
    assert check_examples(declared, jsonl(tmp_path, *rows)).problems == ()
    defaulted = prompt_in(tmp_path, BODY, "input:", "  default:", "    hint: none")
    assert check_examples(defaulted, jsonl(tmp_path, *rows)).problems == ()
    # Declared elsewhere in the schema only: the schema lets rows omit it, so rows load,
    # and the variable nobody gives is still an error at its tag.
    other = prompt_in(tmp_path, BODY, "input:", "  schema:", "    country: string")
    check = check_examples(other, jsonl(tmp_path, *rows))
    assert check.examples is not None
    assert located(check.problems) == [
        ("p.prompt", other.body_line + 1, 1,
         "variable 'hint' is not in the example set p.examples.jsonl (nor in input.schema)")]


# --- columns the template never reads -----------------------------------------------------


def test_unread_columns_warn_once_at_their_first_occurrence(tmp_path: Path) -> None:
    prompt = prompt_in(tmp_path, "Capital of {{country}}?\n")
    path = jsonl(tmp_path,
                 {"country": "Peru", "expected": "Lima", "split": "dev"},
                 {"country": "Chile", "notes": "long", "expected": "Santiago",
                  "messages": [{"role": "user", "content": [{"text": "hi"}]}]},
                 {"country": "Spain", "notes": "x", "id": 3, "target": "Madrid"})
    examples = load_examples(path, prompt.variables)
    assert [(c, r.line) for c, r in unread_columns(examples.examples, {"country"})] == [
        ("notes", 2), ("id", 3)]
    problems = unread_column_problems(prompt, examples, path.read_text(encoding="utf-8"))
    assert located(problems) == [
        ("p.examples.jsonl", 2, 22, "example column 'notes' is never read by the template"),
        ("p.examples.jsonl", 3, 36, "example column 'id' is never read by the template")]
    assert {p.severity for p in problems} == {"warning"}


def test_metrics_that_read_columns_and_partials_count_as_reads(tmp_path: Path) -> None:
    (tmp_path / "_extra.prompt").write_text("Notes: {{notes}}", encoding="utf-8")
    path = jsonl(tmp_path, {"country": "Peru", "notes": "n", "expected": "Lima"})
    with_partial = prompt_in(tmp_path, "Capital of {{country}}? {{> extra}}\n")
    assert variables_read(with_partial) == {"country", "notes"}
    examples = load_examples(path, with_partial.variables)
    assert unread_column_problems(with_partial, examples, path.read_text()) == []
    judged = prompt_in(tmp_path, "Capital of {{country}}?\n", "gpo.metric: judge")
    assert unread_column_problems(judged, examples, path.read_text()) == []


@pytest.mark.parametrize(
    ("suffix", "text", "row_line", "where"),
    [
        (".csv", "\n id , country,\"notes\",expected\nPeru,x,Lima\n", 3, (2, 16)),
        (".jsonl", '{"a": "\\"notes\\": no", "notes": 1}\n', 1, (1, 24)),
        (".yaml", "- country: Peru\n  expected: Lima\n- country: Chile\n  'notes': x\n", 3,
         (4, 3)),
        (".yml", "- country: Peru\n", 1, (1, 1)),  # not found: the row's start
    ],
)
def test_column_location_per_format(suffix: str, text: str, row_line: int,
                                    where: tuple[int, int]) -> None:
    assert column_location(text, suffix, "notes", row_line) == where


# --- the analysis the server publishes ------------------------------------------------------


def test_analysis_keeps_warnings_apart_and_the_first_row(tmp_path: Path) -> None:
    prompt = prompt_in(tmp_path, "Capital of {{country}}?\n")
    jsonl(tmp_path, {"country": "Peru", "notes": "n", "expected": "Lima", "split": "dev"})
    analysis = analyze(prompt.source, prompt.path)
    assert [p.severity for p in analysis.problems] == ["warning"]
    assert analysis.errors == ()  # a warning does not stop a run
    assert analysis.sample is not None and analysis.sample.inputs["country"] == "Peru"


# --- the hover's messages line ---------------------------------------------------------------


def test_messages_line_renders_the_first_row_with_its_history(tmp_path: Path) -> None:
    body = '{{role "system"}}Answer briefly.\n{{history}}{{role "user"}}{{question}}\n'
    prompt = prompt_in(tmp_path, body)
    history = [{"role": "user", "content": [{"text": "hi"}]},
               {"role": "model", "content": [{"text": "hello"}]}]
    jsonl(tmp_path, {"question": "q", "expected": "a", "split": "dev", "messages": history})
    sample = analyze(prompt.source, prompt.path).sample
    assert messages_line(prompt, sample) == "messages: 4 (system, user, model, user)"
    assert messages_line(prompt, None) == "messages: 2 (system, user)"  # placeholders


def test_messages_line_is_none_when_the_body_does_not_render(tmp_path: Path) -> None:
    (tmp_path / "_gone.prompt").write_text("part", encoding="utf-8")
    prompt = prompt_in(tmp_path, "Hi {{> gone}}\n")
    (tmp_path / "_gone.prompt").unlink()
    assert messages_line(prompt, None) is None


def test_format_messages_and_the_hover_line() -> None:
    assert format_messages([]) == "messages: 0"
    assert format_messages(["user"] * 10) == (
        "messages: 10 (user, user, user, user, user, user, user, user, …)")
    assert hover_markdown(None, INITIAL, messages="messages: 1 (user)").endswith(
        "start GPO.\n\n- messages: 1 (user)")
    text = hover_markdown(parse_state(state_dict()), INITIAL, messages="messages: 1 (user)")
    assert text.splitlines()[-1] == "- messages: 1 (user)"
    assert "messages" not in hover_markdown(parse_state(state_dict()), INITIAL)
