"""Dotprompt's own conformance suite, run through gpo's renderer.

Every case of ../shared/dotprompt-spec/ (google/dotprompt's `spec/` folder)
is rendered by `gpo_engine.rendering.PromptRenderer` the way gpo renders a
`.prompt` file: partials are written as `_name.prompt` files beside the
prompt, as a Genkit prompt folder holds them. The messages (roles, text,
media and metadata parts) must equal the suite's, and for the frontmatter
cases so must the parsed config, schemas (Picoschema turned into JSON
Schema), `raw` and `ext`.

A user's clone has no ../shared: the whole module is skipped then, and
tests/test_rendering.py keeps representative cases of its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from dotpromptz import parse_document

from gpo_engine.promptfile import dotprompt_meta
from gpo_engine.rendering import PromptRenderer, RowData

SPEC = Path(__file__).resolve().parents[2] / "shared" / "dotprompt-spec"

if not SPEC.is_dir():
    pytest.skip(f"Dotprompt's spec suite is not here ({SPEC}): it ships only beside the "
                "project's own checkout, not in a user's clone", allow_module_level=True)

# Cases that cannot apply to gpo, with the reason.
_NAMED_SCHEMAS = ("named schemas are registered in application code (Genkit's defineSchema); "
                  "a .prompt file on its own cannot name them, so gpo reports the name as an "
                  "unknown type at the `output:` line")
NOT_APPLICABLE: dict[str, str] = {
    "picoschema.yaml::named_schema_override_description::returns as expected": _NAMED_SCHEMAS,
    "picoschema.yaml::nested_named_schema::returns as expected": _NAMED_SCHEMAS,
}

# Metadata fields the suite may expect and gpo exposes (PromptFile.meta / the renderer).
_META_FIELDS = ("config", "input", "output", "raw", "ext", "model")


def _cases() -> list[Any]:
    cases = []
    for path in sorted(SPEC.rglob("*.yaml")):
        for suite in yaml.safe_load(path.read_text(encoding="utf-8")) or []:
            for test in suite.get("tests", []):
                case_id = f"{path.relative_to(SPEC)}::{suite['name']}::{test['desc']}"
                marks = ([pytest.mark.skip(reason=NOT_APPLICABLE[case_id])]
                         if case_id in NOT_APPLICABLE else [])
                cases.append(pytest.param(suite, test, id=case_id, marks=marks))
    return cases


CASES = _cases()


def test_the_suite_is_all_there() -> None:
    # 117 cases at google/dotprompt aa4bf02119c3; fewer means a file went missing.
    assert len(CASES) >= 117


def _data(suite: dict[str, Any], test: dict[str, Any]) -> RowData:
    data = {**(suite.get("data") or {}), **(test.get("data") or {})}
    return RowData(input=data.get("input") or {}, messages=data.get("messages") or (),
                   context=data.get("context"), docs=data.get("docs") or ())


def _write_partials(suite: dict[str, Any], folder: Path) -> None:
    for key in ("partials", "resolverPartials"):
        for name, source in (suite.get(key) or {}).items():
            target = folder / f"_{name}.prompt"
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(source, encoding="utf-8")


def _plain(value: Any) -> Any:
    """YAML's and pydantic's values compared as JSON-like data."""
    if hasattr(value, "model_dump"):
        return _plain(value.model_dump(exclude_none=True, by_alias=True))
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items() if v is not None}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@pytest.mark.parametrize(("suite", "test"), CASES)
def test_spec_case(suite: dict[str, Any], test: dict[str, Any], tmp_path: Path) -> None:
    _write_partials(suite, tmp_path)
    meta, problems = dotprompt_meta(parse_document(suite["template"]))
    assert problems == []
    renderer = PromptRenderer(meta, [tmp_path])
    expect = test["expect"]
    options = test.get("options")
    messages = renderer.render_sync(meta.template, _data(suite, test), options=options)
    assert [m.to_json() for m in messages] == _plain(expect.get("messages", []))
    rendered_meta = renderer.metadata(options)
    for name in _META_FIELDS:
        if name in expect:
            assert _plain(rendered_meta.get(name)) == _plain(expect[name]), name
