"""Tests for gpo_engine.promptfile: settings, template checks, variables, rendering, writing."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from gpo_engine.errors import ConfigError, SourceError
from gpo_engine.models import DEFAULT_LOCAL_MODEL
from gpo_engine.promptfile import load_prompt, parse_prompt, with_body
from gpo_engine.settings import METRICS, BudgetSettings, Settings
from gpo_engine.template import template_error, template_names, template_variables

P = Path("t.prompt")


def problems_of(source: str) -> list[tuple[int, int, str]]:
    with pytest.raises(SourceError) as caught:
        parse_prompt(source, P)
    assert all(problem.path == P for problem in caught.value.problems)
    return [(p.line, p.column, p.message) for p in caught.value.problems]


def doc(*frontmatter: str, body: str = "Classify {{review}}.\n") -> str:
    return "---\n" + "".join(line + "\n" for line in frontmatter) + "---\n" + body


# --- parsing a good file ---------------------------------------------------------------


def test_full_frontmatter_is_read() -> None:
    source = doc(
        "model: openai/gpt-4o-mini",
        "gpo.optimizer: openai/gpt-4o",
        "gpo.metric: regex",
        "gpo.pattern: 'Answer: (\\w+)'",
        "gpo.judge: openai/judge",
        "gpo.examples: data/s.jsonl",
        "gpo.steps: 5",
        "gpo.candidates: 4",
        "gpo.k: 2",
        "gpo.retrieval: recency",
        "gpo.embedding: openai/text-embedding-3-small",
        "gpo.budget: {initial: 40, final: 5, decay: linear, warmup: 2}",
        "gpo.temperature: 0.7",
        "gpo.max_tokens: 64",
        "gpo.batch_size: 16",
        "gpo.racing: false",
        "gpo.race_size: 4",
        "gpo.max_cost: 2",
        "gpo.concurrency: 2",
        "gpo.timeout: 30",
        "gpo.seed: 7",
        "gpo.split: [0.5, 0.25, 0.25]",
    )
    prompt = parse_prompt(source, P)
    s = prompt.settings
    assert s.model == "openai/gpt-4o-mini"
    assert s.optimizer == "openai/gpt-4o"
    assert (s.metric, s.pattern, s.judge) == ("regex", "Answer: (\\w+)", "openai/judge")
    assert s.examples == "data/s.jsonl"
    assert (s.steps, s.candidates, s.k, s.retrieval) == (5, 4, 2, "recency")
    assert s.embedding == "openai/text-embedding-3-small"
    assert s.budget == BudgetSettings(initial=40, final=5, decay="linear", warmup=2)
    assert s.temperature == 0.7 and isinstance(s.temperature, float)
    assert (s.max_tokens, s.batch_size, s.racing, s.race_size) == (64, 16, False, 4)
    assert s.max_cost == 2.0 and isinstance(s.max_cost, float)
    assert (s.concurrency, s.timeout, s.seed) == (2, 30.0, 7)
    assert s.split == (0.5, 0.25, 0.25)
    assert prompt.variables == ("review",)
    assert prompt.body == "Classify {{review}}.\n"
    assert prompt.body_line == 25
    assert prompt.frontmatter + prompt.body == source


def test_defaults_without_gpo_keys() -> None:
    prompt = parse_prompt(doc("model: openai/x"), P)
    assert prompt.settings == Settings(model="openai/x")
    assert prompt.settings.budget == BudgetSettings(50, 10, "cosine", 0)
    assert prompt.settings.split == pytest.approx((1 / 3, 1 / 3, 1 / 3))


def test_file_without_frontmatter_is_valid() -> None:
    source = "Answer {{question}} briefly.\n"
    prompt = parse_prompt(source, P)
    assert prompt.frontmatter == ""
    assert prompt.body == source
    assert prompt.body_line == 1
    assert prompt.settings == Settings()
    assert prompt.variables == ("question",)


def test_empty_frontmatter_block() -> None:
    prompt = parse_prompt("---\n---\nHi {{x}}", P)
    assert prompt.frontmatter == "---\n---\n"
    assert prompt.body == "Hi {{x}}"
    assert prompt.body_line == 3
    assert prompt.settings == Settings()


def test_comment_lines_before_frontmatter_belong_to_frontmatter() -> None:
    source = "# a note\n\n---\ngpo.steps: 3\n---\nHi {{x}}\n"
    prompt = parse_prompt(source, P)
    assert prompt.settings.steps == 3
    assert prompt.frontmatter == "# a note\n\n---\ngpo.steps: 3\n---\n"
    assert prompt.body_line == 6


def test_crlf_file_positions_and_body() -> None:
    source = "---\r\nmodel: m\r\ngpo.steps: 2\r\n---\r\nLine {{a}}\r\nLine {{b}}\r\n"
    prompt = parse_prompt(source, P)
    assert prompt.frontmatter == "---\r\nmodel: m\r\ngpo.steps: 2\r\n---\r\n"
    assert prompt.body == "Line {{a}}\r\nLine {{b}}\r\n"
    assert prompt.body_line == 5
    assert prompt.variables == ("a", "b")


def test_crlf_file_problem_lines() -> None:
    source = "---\r\nmodel: m\r\ngpo.stepz: 2\r\n---\r\nx {{a}}\r\n"
    assert problems_of(source) == [(3, 1, "unknown setting gpo.stepz; did you mean gpo.steps?")]


def test_utf8_bom_is_kept_in_frontmatter() -> None:
    source = "\ufeff---\ngpo.steps: 4\n---\nHi {{x}}\n"
    prompt = parse_prompt(source, P)
    assert prompt.settings.steps == 4
    assert prompt.frontmatter.startswith("\ufeff---")
    assert with_body(prompt, "Yo {{x}}") == "\ufeff---\ngpo.steps: 4\n---\nYo {{x}}\n"


def test_flat_budget_keys() -> None:
    prompt = parse_prompt(doc("gpo.budget.initial: 30", "gpo.budget.decay: fixed"), P)
    assert prompt.settings.budget == BudgetSettings(initial=30, final=10, decay="fixed")


def test_other_dotted_namespaces_are_left_alone() -> None:
    prompt = parse_prompt(doc("myorg.owner: ada", "config: {temperature: 0}"), P)
    assert prompt.settings == Settings()


def test_null_optional_settings() -> None:
    prompt = parse_prompt(doc("gpo.optimizer: null", "gpo.max_cost: null"), P)
    assert prompt.settings.optimizer is None and prompt.settings.max_cost is None


def test_metrics_and_default_model_constants() -> None:
    assert METRICS == ("exact", "contains", "choice", "number", "regex", "f1", "judge", "json")
    assert DEFAULT_LOCAL_MODEL == "local/gemma-3-270m"
    for metric in METRICS:
        extra = ["gpo.pattern: '(\\d+)'"] if metric == "regex" else []
        assert parse_prompt(doc(f"gpo.metric: {metric}", *extra), P).settings.metric == metric


# --- frontmatter errors -----------------------------------------------------------------


def test_broken_yaml_reports_line_and_column() -> None:
    source = "---\nmodel: m\ngpo.steps: [1, 2\n---\nHi {{x}}\n"
    [(line, column, message)] = problems_of(source)
    assert line == 3 and column >= 1
    assert message.startswith("frontmatter: ")
    assert "invalid YAML" in message


def test_yaml_error_column_points_inside_line() -> None:
    [(line, column, message)] = problems_of("---\nmodel: [\n---\nx")
    assert (line, column) == (2, 9)
    assert message == (
        "frontmatter: invalid YAML: expected the node content, but found '<stream end>'")


@pytest.mark.parametrize(
    ("frontmatter", "where", "reason"),
    [
        # The parser's own words and mark, in whole-file lines (the '---' is line 1).
        ("model: x\nconfig: a: b\n", (3, 10), "mapping values are not allowed here"),
        ("model: x\ninput:\n\t- a\n", (4, 1),
         "found character '\\t' that cannot start any token"),
        ("a: 'open\n", (2, 9), "found unexpected end of stream"),  # end of the line
    ],
)
def test_broken_yaml_gives_the_parsers_reason_at_its_mark(
    frontmatter: str, where: tuple[int, int], reason: str
) -> None:
    assert problems_of("---\n" + frontmatter + "---\nHi {{x}}\n") == [
        (*where, f"frontmatter: invalid YAML: {reason}")]


def test_broken_yaml_after_comments_and_a_bom_counts_whole_file_lines() -> None:
    source = "\ufeff# header comment\n---\nmodel: x\ngpo.steps: 3: 4\n---\nHi\n"
    assert problems_of(source) == [
        (4, 13, "frontmatter: invalid YAML: mapping values are not allowed here")]


def test_missing_closing_delimiter() -> None:
    assert problems_of("---\nmodel: m\nHi {{x}}\n") == [
        (1, 1, "frontmatter: missing closing delimiter")
    ]


def test_duplicate_key_and_non_mapping_frontmatter() -> None:
    assert problems_of("---\ngpo.k: 1\ngpo.k: 2\n---\nx") == [
        (3, 1, "frontmatter: duplicate mapping keys are not allowed")
    ]
    assert problems_of("---\n- a\n---\nx") == [(2, 1, "frontmatter: frontmatter must be a mapping")]


def test_model_of_wrong_type() -> None:
    assert problems_of("---\nmodel: 3\n---\nx") == [
        (2, 8, "frontmatter: invalid recognized field type")
    ]


def test_unknown_metric_lists_choices() -> None:
    assert problems_of(doc("model: m", "gpo.metric: foo")) == [
        (3, 1, "unknown metric 'foo'; choose one of " + ", ".join(METRICS)),
    ]


def test_unknown_key_with_suggestion() -> None:
    assert problems_of(doc("gpo.stpes: 3")) == [
        (2, 1, "unknown setting gpo.stpes; did you mean gpo.steps?")
    ]


def test_unknown_key_without_close_match_lists_known() -> None:
    [(line, _, message)] = problems_of(doc("gpo.zzzzqqq: 3"))
    assert line == 2
    assert message.startswith("unknown setting gpo.zzzzqqq; known settings: gpo.optimizer, ")
    assert "gpo.split" in message


def test_nested_gpo_block_is_an_error() -> None:
    [(line, column, message)] = problems_of(doc("model: m", "gpo:", "  metric: exact"))
    assert (line, column) == (3, 1)
    assert "gpo.metric" in message and "nested" in message


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("gpo.steps: 0", "gpo.steps must be >= 1, got 0"),
        ("gpo.steps: three", "gpo.steps must be a whole number >= 1, got 'three'"),
        ("gpo.steps: true", "gpo.steps must be a whole number >= 1, got True"),
        ("gpo.steps: 2.5", "gpo.steps must be a whole number >= 1, got 2.5"),
        ("gpo.steps: null", "gpo.steps must be a whole number >= 1, got null"),
        ("gpo.candidates: 0", "gpo.candidates must be >= 1, got 0"),
        ("gpo.k: -1", "gpo.k must be >= 1, got -1"),
        ("gpo.seed: -1", "gpo.seed must be >= 0, got -1"),
        ("gpo.racing: 1", "gpo.racing must be true or false, got 1"),
        ("gpo.temperature: -0.5", "gpo.temperature must be a number >= 0, got -0.5"),
        ("gpo.temperature: hot", "gpo.temperature must be a number >= 0, got 'hot'"),
        ("gpo.timeout: 0", "gpo.timeout must be a number > 0, got 0"),
        ("gpo.max_cost: -1", "gpo.max_cost must be a number > 0, got -1"),
        ("gpo.optimizer: 5", "gpo.optimizer must be a non-empty text, got 5"),
        ("gpo.examples: ''", "gpo.examples must be a non-empty text, got ''"),
        (
            "gpo.retrieval: random",
            "unknown retrieval 'random'; choose one of relevance, recency, importance",
        ),
        ("gpo.target: model", "unknown target 'model'; choose one of system, user, all"),
        (
            "gpo.split: [0.5, 0.5]",
            "gpo.split must be three positive numbers (train, dev, test) summing to 1, "
            "got [0.5, 0.5]",
        ),
        (
            "gpo.split: [0.5, 0.5, 0]",
            "gpo.split must be three positive numbers (train, dev, test) summing to 1, "
            "got [0.5, 0.5, 0]",
        ),
        ("gpo.split: [0.5, 0.5, 0.5]", "gpo.split must sum to 1, got 1.5"),
        (
            "gpo.split: thirds",
            "gpo.split must be three positive numbers (train, dev, test) "
            "summing to 1, got 'thirds'",
        ),
    ],
)
def test_bad_values(setting: str, message: str) -> None:
    assert problems_of(doc("model: m", setting)) == [(3, 1, message)]


@pytest.mark.parametrize(
    ("setting", "message"),
    [
        ("gpo.check_alpha: 0", "gpo.check_alpha must be a number between 0 and 1, got 0"),
        ("gpo.check_alpha: 1", "gpo.check_alpha must be a number between 0 and 1, got 1"),
        ("gpo.check_alpha: .nan", "gpo.check_alpha must be a number between 0 and 1, got nan"),
        ("gpo.check_alpha: high", "gpo.check_alpha must be a number between 0 and 1, "
                                  "got 'high'"),
        ("gpo.check_tolerance: -1", "gpo.check_tolerance must be a number of points from 0 "
                                    "to 100, got -1"),
        ("gpo.check_tolerance: 101", "gpo.check_tolerance must be a number of points from 0 "
                                     "to 100, got 101"),
        ("gpo.check_tolerance: true", "gpo.check_tolerance must be a number of points from 0 "
                                      "to 100, got True"),
    ],
)
def test_bad_check_values(setting: str, message: str) -> None:
    assert problems_of(doc("model: m", setting)) == [(3, 1, message)]


def test_fields_setting_is_read_and_checked() -> None:
    settings = parse_prompt(doc("gpo.metric: json", "gpo.fields: [name, address.city]"),
                            P).settings
    assert settings.fields == ("name", "address.city")
    assert Settings().fields is None
    assert parse_prompt(doc("gpo.fields: null"), P).settings.fields is None
    assert Settings().replace(fields=["a", "b.c"]).fields == ("a", "b.c")
    with pytest.raises(ConfigError, match=r"gpo\.fields must be a non-empty list"):
        Settings().replace(fields=[])


@pytest.mark.parametrize("value", ["[]", "name", "[1]", "['']", "[a, '  ']", "['a..b']",
                                   "['.a']", "{a: 1}", "true"])
def test_bad_fields_values_are_located(value: str) -> None:
    shown = {"[]": "[]", "name": "'name'", "[1]": "[1]", "['']": "['']",
             "[a, '  ']": "['a', '  ']", "['a..b']": "['a..b']", "['.a']": "['.a']",
             "{a: 1}": "{'a': 1}", "true": "True"}[value]
    assert problems_of(doc("model: m", "gpo.metric: json", f"gpo.fields: {value}")) == [
        (4, 1, "gpo.fields must be a non-empty list of field names (dotted paths such as "
               f"address.city for nested fields), got {shown}"),
    ]


def test_fields_enter_the_fingerprint_only_when_set() -> None:
    base = Settings(model="m", metric="json")
    assert "fields" not in base.fingerprint()  # trajectories saved before gpo.fields resume
    chosen = base.replace(fields=["name"]).fingerprint()
    assert chosen["fields"] == ["name"] and json.loads(json.dumps(chosen)) == chosen
    assert chosen != base.replace(fields=["age"]).fingerprint()


def test_target_setting_enters_the_fingerprint_only_when_not_the_default() -> None:
    assert Settings().target == "system"
    assert parse_prompt(doc("gpo.target: user"), P).settings.target == "user"
    base = Settings(model="m")
    # Trajectories saved before gpo.target existed keep their keys.
    assert "target" not in base.fingerprint()
    assert base.replace(target="system").fingerprint() == base.fingerprint()
    assert base.replace(target="all").fingerprint()["target"] == "all"
    assert base.replace(target="user").fingerprint() != base.replace(target="all").fingerprint()
    with pytest.raises(ConfigError, match="unknown target 'x'; choose one of system, user, all"):
        base.replace(target="x")


def test_check_settings_are_read_and_left_out_of_the_fingerprint() -> None:
    settings = parse_prompt(doc("gpo.check_alpha: 0.01", "gpo.check_tolerance: 0"), P).settings
    assert (settings.check_alpha, settings.check_tolerance) == (0.01, 0.0)
    assert (Settings().check_alpha, Settings().check_tolerance) == (0.05, 5.0)
    assert settings.fingerprint() == Settings().fingerprint()
    assert Settings().replace(check_tolerance=2).check_tolerance == 2.0
    with pytest.raises(ConfigError, match=r"gpo\.check_alpha"):
        Settings().replace(check_alpha=2)


def test_split_within_tolerance_is_accepted() -> None:
    prompt = parse_prompt(doc("gpo.split: [0.3333333, 0.3333333, 0.3333334]"), P)
    assert sum(prompt.settings.split) == pytest.approx(1.0)


def test_regex_metric_without_pattern() -> None:
    assert problems_of(doc("gpo.metric: regex")) == [
        (2, 1, "metric 'regex' needs gpo.pattern: a regular expression")
    ]


def test_invalid_regex() -> None:
    [(line, column, message)] = problems_of(doc("gpo.metric: regex", "gpo.pattern: '(['"))
    assert (line, column) == (3, 1)
    assert message.startswith("gpo.pattern is not a valid regular expression: ")


def test_budget_problems() -> None:
    assert problems_of(doc("gpo.budget: {initial: 5, final: 10}")) == [
        (2, 1, "gpo.budget: initial (5) must be >= final (10)")
    ]
    # initial alone below the default final is caught too
    assert problems_of(doc("gpo.budget.initial: 3")) == [
        (2, 1, "gpo.budget: initial (3) must be >= final (10)")
    ]
    assert problems_of(doc("gpo.budget: {decay: sine}")) == [
        (2, 14, "unknown decay 'sine'; choose one of cosine, linear, fixed")
    ]
    assert problems_of(doc("gpo.budget: 20")) == [
        (
            2,
            1,
            "gpo.budget must be a mapping such as {initial: 50, final: 10, decay: cosine}, got 20",
        )
    ]


def test_budget_nested_keys_are_located() -> None:
    source = doc("gpo.budget:", "  initial: x", "  finall: 3")
    assert problems_of(source) == [
        (3, 3, "gpo.budget.initial must be a whole number >= 0, got 'x'"),
        (4, 3, "unknown setting gpo.budget.finall; did you mean gpo.budget.final?"),
    ]


def test_all_problems_are_collected_in_line_order() -> None:
    source = doc(
        "model: m",
        "gpo.metric: exct",
        "gpo.stpes: 3",
        "gpo.budget: {initial: 5, final: 10}",
        "gpo.split: [0.5, 0.5]",
        "gpo.racing: 1",
        body="Hi {{#if x}}\n",
    )
    found = problems_of(source)
    assert [line for line, _, _ in found] == [3, 4, 5, 6, 7, 9]
    assert found[0][2].startswith("unknown metric 'exct'")
    assert found[1][2] == "unknown setting gpo.stpes; did you mean gpo.steps?"
    assert found[-1] == (9, 4, "template error: unclosed block")


# --- template problems -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "line", "column", "message"),
    [
        ("Hi\nthere {{#if x}}\nyes\n", 2, 7, "template error: unclosed block"),
        ("a\n b {{#if x}}\n{{/each}}", 3, 1, "template error: unexpected closing tag each"),
        ("a\nb {{else}}", 2, 3, "template error: {{else}} outside a block"),
        ("a\n\n  {{x", 3, 3, "template error: unclosed tag"),
        ("x {{foo bar}}\nline2", 1, 3, 'template error: Missing helper: "foo"'),
        ("a {{ }}", 1, 3, "template error: empty tag"),
        ("see {{> part}}", 1, 5, "partial 'part' not found: looked for _part.prompt"),
        ("{{#each xs}}{{#if y}}{{/each}}", 1, 22, "template error: unexpected closing tag each"),
    ],
)
def test_template_errors_are_located(body: str, line: int, column: int, message: str) -> None:
    # doc() puts the body on line 4
    assert problems_of(doc("model: m", body=body)) == [(line + 3, column, message)]


def test_template_error_without_frontmatter() -> None:
    assert problems_of("one\ntwo {{/if}}") == [(2, 5, "template error: unexpected closing tag if")]


def test_missing_helper_inside_else_branch_is_found() -> None:
    found = problems_of(doc(body="{{#if x}}ok{{else}}{{nope 1}}{{/if}}\n"))
    assert found == [(3, 20, 'template error: Missing helper: "nope"')]


def test_empty_body() -> None:
    assert problems_of(doc("model: m", body="  \n\n")) == [(4, 1, "the prompt body is empty")]
    assert problems_of("---\nmodel: m\n---") == [(3, 1, "the prompt body is empty")]
    assert problems_of("") == [(1, 1, "the prompt body is empty")]


def test_dotprompt_helpers_are_valid_in_templates() -> None:
    body = (
        '{{role "system"}}Be brief.\n'
        '{{role "user"}}{{json data}} {{#ifEquals a b}}eq{{/ifEquals}}\n'
    )
    prompt = parse_prompt(doc(body=body), P)
    assert prompt.variables == ("data", "a", "b")


# --- load_prompt -------------------------------------------------------------------------


def test_load_prompt_reads_file(tmp_path: Path) -> None:
    path = tmp_path / "s.prompt"
    path.write_bytes(doc("model: m", "gpo.steps: 3").encode())
    prompt = load_prompt(str(path))
    assert prompt.path == path
    assert prompt.settings.steps == 3


def test_load_prompt_problem_paths_are_the_file(tmp_path: Path) -> None:
    path = tmp_path / "s.prompt"
    path.write_text(doc("gpo.k: 0"))
    with pytest.raises(SourceError) as caught:
        load_prompt(path)
    assert str(caught.value) == f"{path}:2:1: gpo.k must be >= 1, got 0"


def test_load_prompt_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.prompt"
    with pytest.raises(SourceError) as caught:
        load_prompt(path)
    [problem] = caught.value.problems
    assert (problem.path, problem.line, problem.column, problem.message) == (
        path,
        1,
        1,
        "file not found",
    )


def test_load_prompt_folder(tmp_path: Path) -> None:
    with pytest.raises(SourceError) as caught:
        load_prompt(tmp_path)
    assert caught.value.problems[0].message == "is a folder, not a file"


def test_load_prompt_invalid_utf8(tmp_path: Path) -> None:
    path = tmp_path / "bad.prompt"
    path.write_bytes(b"---\nmodel: m\n---\nfine line\nab\xffcd {{x}}\n")
    with pytest.raises(SourceError) as caught:
        load_prompt(path)
    [problem] = caught.value.problems
    assert (problem.line, problem.column, problem.message) == (5, 3, "not valid UTF-8")


def test_load_prompt_invalid_utf8_after_multibyte_chars(tmp_path: Path) -> None:
    path = tmp_path / "bad.prompt"
    path.write_bytes("é€x".encode() + b"\xc3(")
    with pytest.raises(SourceError) as caught:
        load_prompt(path)
    assert (caught.value.line, caught.value.problems[0].column) == (1, 4)


# --- template_variables ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{x}} {{{y}}} {{ z }} {{&w}}", ("x", "y", "z", "w")),
        ("{{b}} {{a}} {{b}}", ("b", "a")),
        ("{{user.name}} {{user.age}}", ("user",)),
        ("{{#if flag}}{{a}}{{else}}{{c}}{{/if}}", ("flag", "a", "c")),
        ("{{#unless u}}x{{else if v}}{{w}}{{/unless}}", ("u", "v", "w")),
        ("{{#each items}}{{name}} {{this}} {{@index}} {{../q}}{{/each}}", ("items", "q")),
        ("{{#each items as |it|}}{{it.name}}{{/each}} {{it}}", ("items", "it")),
        ("{{#with p}}{{n}}{{/with}}", ("p",)),
        ("{{#each a}}{{#each b}}{{../c}} {{../../d}}{{/each}}{{/each}}", ("a", "d")),
        ('{{role "user"}}{{history}}{{media url=img}}{{section "x"}}', ("img",)),
        ("{{json obj indent=2}} {{lookup m key}}", ("obj", "m", "key")),
        ("{{#if (lookup m k)}}y{{/if}}", ("m", "k")),
        ('{{#ifEquals a "b"}}y{{/ifEquals}}', ("a",)),
        ("{{this.t}} {{@root.r}} {{@root}} {{@first}} {{this}}", ("t", "r")),
        ("{{!-- {{hidden}} --}} {{! also}} \\{{literal}} {{shown}}", ("shown",)),
        ("{{[weird key]}} {{x.[0]}} {{a/b}}", ("weird key", "x", "a")),
        ("{{#items}}{{inner}}{{/items}}", ("items",)),
        ('{{"literal"}} {{123}} {{true}}', ()),
        ("no variables at all", ()),
    ],
)
def test_template_variables(template: str, expected: tuple[str, ...]) -> None:
    assert template_variables(template) == expected


@pytest.mark.parametrize(
    ("template", "expected"),
    [
        ("{{#each items}}{{name}} {{this}} {{@index}} {{../q}}{{/each}}", ("items", "name", "q")),
        ("{{#each items as |it|}}{{it.name}}{{/each}} {{it}}", ("items", "it")),
        ("{{#with p}}{{n}}{{/with}}", ("p", "n")),
        ("{{#each a}}{{#each b}}{{../c}} {{../../d}}{{/each}}{{/each}}", ("a", "b", "c", "d")),
        ("{{#items}}{{inner}}{{/items}}", ("items", "inner")),
        ('{{#ifEquals a "b"}}{{c}}{{/ifEquals}} {{! note }} {{@root.r}}', ("a", "c", "r")),
        ('{{role "user"}}{{history}}{{> header}}{{json x}}', ("x",)),
        ("{{x}} {{{y}}} {{user.name}}", ("x", "y", "user")),
    ],
)
def test_template_names_include_the_fields_blocks_read(template: str,
                                                       expected: tuple[str, ...]) -> None:
    assert template_names(template) == expected
    # The input variables are the names read outside #each / #with.
    assert set(template_variables(template)) <= set(expected)


def test_template_variables_of_a_broken_template_is_best_effort() -> None:
    assert template_variables("Hello {{name}} {{#if x}} {{ other }}") == ("name", "other")


# --- template_error ------------------------------------------------------------------


def test_template_error_screens_candidates() -> None:
    assert template_error("Fine {{x}} {{#if y}}a{{else}}b{{/if}}") is None
    assert template_error("Broken {{#if y}}") == "unclosed block"
    assert template_error('{{#if y}}{{bogus "a"}}{{/if}}') == 'Missing helper: "bogus"'


# --- with_body ---------------------------------------------------------------------------


def test_with_body_round_trip_is_identity() -> None:
    for source in [
        doc("model: m", "gpo.steps: 3  # comment kept", "gpo.budget: {initial: 40}"),
        "No frontmatter {{x}}\n",
        "No frontmatter, no newline {{x}}",
        "---\r\nmodel: m\r\n---\r\nCRLF {{x}}\r\nline two\r\n",
        "# lead comment\n---\nmodel: m\n---\n\n\nBody after blank lines {{x}}\n\n",
    ]:
        prompt = parse_prompt(source, P)
        assert with_body(prompt, prompt.body) == source


def test_with_body_keeps_frontmatter_bytes() -> None:
    source = "---\nmodel:   m   # odd spacing\ngpo.steps: 3\n---\nOld {{x}}\n"
    prompt = parse_prompt(source, P)
    new = with_body(prompt, "New {{x}} text")
    assert new == "---\nmodel:   m   # odd spacing\ngpo.steps: 3\n---\nNew {{x}} text\n"
    assert parse_prompt(new, P).settings == prompt.settings


def test_with_body_crlf_file_gets_crlf_body() -> None:
    source = "---\r\nmodel: m\r\n---\r\nOld {{x}}\r\n"
    prompt = parse_prompt(source, P)
    new = with_body(prompt, "New\n{{x}}")
    assert new == "---\r\nmodel: m\r\n---\r\nNew\r\n{{x}}\r\n"
    assert new.startswith(prompt.frontmatter)


def test_with_body_crlf_body_not_doubled() -> None:
    prompt = parse_prompt("---\r\nmodel: m\r\n---\r\nOld\r\n", P)
    assert with_body(prompt, "A\r\nB\r\n") == "---\r\nmodel: m\r\n---\r\nA\r\nB\r\n"


def test_with_body_lf_file_leaves_body_alone() -> None:
    prompt = parse_prompt("---\nmodel: m\n---\nOld", P)
    assert with_body(prompt, "New\r\nX") == "---\nmodel: m\n---\nNew\r\nX"


def test_with_body_no_frontmatter() -> None:
    prompt = parse_prompt("Old {{x}}\n", P)
    assert with_body(prompt, "New {{x}}") == "New {{x}}\n"


# --- Settings.replace and fingerprint ----------------------------------------------------


def test_replace_applies_and_validates() -> None:
    base = Settings(model="m")
    changed = base.replace(steps=3, metric="regex", pattern=r"(\d+)", optimizer="o")
    assert (changed.steps, changed.metric, changed.pattern, changed.optimizer) == (
        3,
        "regex",
        r"(\d+)",
        "o",
    )
    assert base.steps == 12  # frozen original unchanged
    assert base.replace(model="other").model == "other"


def test_replace_budget_forms() -> None:
    base = Settings()
    assert base.replace(budget={"initial": 30}).budget == BudgetSettings(30, 10, "cosine", 0)
    whole = BudgetSettings(20, 2, "linear", 1)
    assert base.replace(budget=whole).budget == whole


def test_replace_collects_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        Settings().replace(steps=0, metric="nope", stepz=1, budget={"initial": 1})
    text = str(caught.value)
    assert "gpo.steps must be >= 1, got 0" in text
    assert "unknown metric 'nope'" in text
    assert "unknown setting stepz; did you mean steps?" in text
    assert "initial (1) must be >= final (10)" in text


def test_replace_cross_checks() -> None:
    with pytest.raises(ConfigError, match=r"needs gpo\.pattern"):
        Settings().replace(metric="regex")
    with pytest.raises(ConfigError, match="must be a mapping"):
        Settings().replace(budget=5)
    with pytest.raises(ConfigError, match="model must be a model name"):
        Settings().replace(model=5)


def test_replace_split_normalizes_to_floats() -> None:
    split = Settings().replace(split=[0.5, 0.25, 0.25]).split
    assert split == (0.5, 0.25, 0.25) and isinstance(split, tuple)
    with pytest.raises(ConfigError, match=r"gpo\.split must sum to 1"):
        Settings().replace(split=[1, 1, 1])


def test_fingerprint_is_json_and_tracks_result_fields() -> None:
    base = Settings(model="m")
    fp = base.fingerprint()
    assert json.loads(json.dumps(fp)) == fp
    assert fp["budget"] == {"initial": 50, "final": 10, "decay": "cosine", "warmup": 0}
    assert base.replace(concurrency=1, timeout=5.0, max_cost=1.0).fingerprint() == fp
    assert base.replace(examples="other.jsonl").fingerprint() == fp
    for change in [
        {"steps": 3},
        {"seed": 1},
        {"metric": "f1"},
        {"temperature": 0.5},
        {"budget": {"final": 5}},
        {"split": (0.5, 0.25, 0.25)},
        {"racing": False},
        {"optimizer": "o"},
        {"model": "n"},
    ]:
        assert base.replace(**change).fingerprint() != fp, change


def test_settings_field_set_matches_contract() -> None:
    names = [field.name for field in dataclasses.fields(Settings)]
    assert names == [
        "model",
        "optimizer",
        "metric",
        "pattern",
        "judge",
        "fields",
        "examples",
        "partials",
        "steps",
        "candidates",
        "k",
        "retrieval",
        "embedding",
        "target",
        "budget",
        "temperature",
        "max_tokens",
        "batch_size",
        "racing",
        "race_size",
        "max_cost",
        "concurrency",
        "timeout",
        "seed",
        "split",
        "check_alpha",
        "check_tolerance",
    ]


# --- the task call's frontmatter: model, config, output --------------------------------


def test_an_unknown_model_provider_is_located_at_the_model_line() -> None:
    [(line, column, message)] = problems_of(doc("gpo.steps: 2", "model: acme/model-1"))
    assert (line, column) == (3, 1)
    assert message.startswith("unknown model provider 'acme/'; known prefixes: googleai/")
    assert parse_prompt(doc("model: googleai/gemini-2.5-flash"), P).settings.model == (
        "googleai/gemini-2.5-flash")  # Genkit's spelling is kept; the call maps it


def test_bad_config_values_are_located_at_their_keys() -> None:
    source = doc("model: openai/x", "config:", "  temperature: hot", "  maxOutputTokens: 0",
                 "  stopSequences: [1]", "  logprobs: true")
    assert problems_of(source) == [
        (4, 3, "config.temperature must be a number >= 0, got 'hot'"),
        (5, 3, "config.maxOutputTokens must be a whole number >= 1, got 0"),
        (6, 3, "config.stopSequences must be a list of texts, got [1]"),
    ]


def test_config_output_and_input_are_read_as_dotprompt_reads_them() -> None:
    prompt = parse_prompt(doc(
        "config: {temperature: 0.2, maxOutputTokens: 64}",
        "input:", "  schema: {review: string}", "  default: {review: nice}",
        "output:", "  format: json", "  schema: {label: string}",
        "gpo.max_tokens: 9"), P)
    assert prompt.config == {"temperature": 0.2, "maxOutputTokens": 64}
    assert prompt.input_defaults == {"review": "nice"}
    assert prompt.input_schema is not None and prompt.input_schema["required"] == ["review"]
    assert prompt.output["format"] == "json"
    assert prompt.output["schema"]["properties"] == {"label": {"type": "string"}}
    assert "max_tokens" in prompt.explicit
