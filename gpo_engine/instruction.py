"""A prompt's instruction and its scaffold.

The instruction is the text before the first template tag; the scaffold is
the rest (the lines that carry the inputs, and any worked examples). A small
optimizer model often answers with an instruction alone, as in the GPO paper,
where prompts are instructions placed before the question: with_instruction
puts it in place of the old one and keeps the scaffold.
"""

from __future__ import annotations

import re

from gpo_engine.template import template_tags

# "Review: ..." / "Q: ..." / "Sentiment:": a line that starts with a short label.
_LINE_LABEL = re.compile(r"\s*([^:{}\n]{1,40}?)\s*:")


def _line_label(line: str) -> str | None:
    found = _LINE_LABEL.match(line)
    return found.group(1).strip().lower() if found else None


def split_instruction(prompt: str) -> tuple[str, str]:
    """(instruction, scaffold): the lines before the first template tag, and the rest.

    Worked examples above the first tag belong to the scaffold, not the
    instruction: a line labelled like one of the template's own lines
    ("Review: I loved it." over "Review: {{review}}") starts them. An
    instruction that replaced them would throw the prompt's examples away.
    """
    lines = prompt.splitlines(keepends=True)
    for i, line in enumerate(lines):
        if template_tags(line):
            labels = {_line_label(rest) for rest in lines[i:]} - {None}
            start = next((j for j in range(i) if _line_label(lines[j]) in labels), i)
            return "".join(lines[:start]), "".join(lines[start:])
    return prompt, ""


def with_instruction(instruction: str, current: str) -> str:
    """`current` with its instruction lines replaced by `instruction`."""
    _, scaffold = split_instruction(current)
    if not scaffold:
        return instruction.strip()
    return instruction.strip() + "\n" + scaffold
