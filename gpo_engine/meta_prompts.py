"""The optimizer's meta-prompts: what GPO asks the optimizer model.

One meta-prompt per step shows the retrieved prompts with their scores, a few
examples of what the current prompt made the task model answer, the current
prompt and the edit budget; the optimizer writes each new prompt between
<START> and <END>. A chat model is given instructions; a base model, which
continues patterns instead of following them, a document to continue.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gpo_engine.direction import ScoredPrompt
from gpo_engine.instruction import split_instruction
from gpo_engine.template import template_tags

START = "<START>"
END = "<END>"

# Exemplar text in the chat meta-prompt is cut to this many characters: a
# long input would crowd out the prompts themselves. (The base-model
# meta-prompt shows one short line of each exemplar.)
_EXEMPLAR_CHARS = 1200

Messages = list[dict[str, str]]


@dataclass(frozen=True)
class Exemplar:
    input: str  # the task model's input (the rendered prompt or the example's inputs)
    expected: str
    output: str  # what the task model answered with the current prompt
    correct: bool


def budget_sentence(budget: int) -> str:
    return f"Change at most {budget} words of the current prompt."


def score_text(value: float) -> str:
    """A 0..100 score as the meta-prompts show it: 65.5, 40."""
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def pick_exemplars(exemplars: Sequence[Exemplar], count: int) -> list[Exemplar]:
    """The `count` exemplars a meta-prompt shows: wrong answers first."""
    # Wrong answers show the optimizer where the prompt fails; right ones only
    # fill the remaining slots. Stable, so the caller's order decides ties.
    wrong = [e for e in exemplars if not e.correct]
    right = [e for e in exemplars if e.correct]
    return (wrong + right)[:count]


def _keep_tags_sentence(current: str) -> str:
    tags = template_tags(current)
    if not tags:
        return ""
    return f"Keep these template tags exactly as written: {', '.join(tags)}."


def chat_meta_prompt(
    current: str, direction: Sequence[ScoredPrompt], shown: Sequence[Exemplar], budget: int
) -> Messages:
    """A chat model's input for one step: instructions in one user message.

    `direction` is what direction.retrieve returned (ascending scores, the
    current prompt last); `shown` are the exemplars to show (pick_exemplars).
    """
    limit = _EXEMPLAR_CHARS
    parts = [
        "You are improving the prompt that a language model receives for a task. The prompt "
        "is a template: each tag in double braces, such as {{name}}, is replaced by an "
        "example's input before the model reads it."
    ]
    if direction:
        listing = "\n\n".join(f"Prompt: {p.text}\nScore: {score_text(p.score)}" for p in direction)
        parts.append(
            "Here are earlier versions of the prompt with the score each one reached on "
            "held-out examples, from lowest to highest score among the earlier ones; the "
            "current prompt comes last. Scores go from 0 to 100, and higher is better.\n\n"
            + listing
        )
    parts.append(f"The current prompt is:\n{current}")
    if shown:
        blocks = "\n\n".join(
            f"Input:\n{_clip(e.input, limit)}\nExpected answer: {_clip(e.expected, limit)}\n"
            f"Model answer: {_clip(e.output, limit)}\n"
            f"Verdict: {'correct' if e.correct else 'wrong'}"
            for e in shown
        )
        parts.append(
            "Here is how the model answered some examples with the current prompt. An answer "
            "is wrong when it differs from the expected answer.\n\n" + blocks
        )
    closing = [
        "Think about which changes raised the scores of the earlier prompts and why the "
        "current prompt gets the wrong answers above, then write an improved version of the "
        "current prompt.",
        _keep_tags_sentence(current),
        budget_sentence(budget),
        f"Write the new prompt between {START} and {END}, and nothing else between them.",
    ]
    parts.append("\n".join(line for line in closing if line))
    return [{"role": "user", "content": "\n\n".join(parts)}]


# A base model does not follow instructions; it continues patterns. So the
# base-model meta-prompt is a few-shot document of instruction rewrites on
# unrelated tasks, each naming the form of its answers, ending with the
# current task's open entry. Measured on Gemma 3 270M: a "revision log" of
# whole templates gave 0 usable candidates of 12 (it copied the template or
# dropped its tags); this document gives mostly plausible instructions.
# The rewrites are about tasks unlike the shipped examples, so they never
# hand the model an answer.
_REWRITE_DEMOS = (
    ("12, 7, 30", "Solve this.", "Work out the result and reply with just the number."),
    ("sports, politics, science", "What is this about?",
     "Name the topic of the article in one word: sports, politics or science."),
    ("yes, no", "Think about the question.",
     "Read the question carefully and answer with a single word: yes or no."),
    ("bonjour, merci", "French.",
     "Translate the English word into French and write only the French word."),
)


def base_meta_prompt(
    current: str, direction: Sequence[ScoredPrompt], shown: Sequence[Exemplar], budget: int
) -> Messages:
    """A base model's input for one step: a document that ends after <START>."""
    blocks = ["Each instruction below was rewritten into a better one: clear, specific, and "
              "naming the form of the answer."]
    for answers, before, after in _REWRITE_DEMOS:
        blocks.append(f"Answers look like: {answers}\nInstruction: {before}\n"
                      f"Better instruction: {START}{after}{END}")
    final = []
    if shown:
        final.append("Answers look like: " + ", ".join(_one_line(e.expected, 30) for e in shown))
        final.append("Inputs look like: " + " | ".join(_one_line(e.input, 60) for e in shown))
    earlier = [p for p in direction if p.text != current]
    if earlier:
        final.append("Earlier instructions: " + "; ".join(
            f"{_one_line(_instruction_of(p.text), 80)} (score {score_text(p.score)})"
            for p in earlier))
    final.append(f"Instruction: {_one_line(_instruction_of(current), 200)}")
    final.append(f"Better instruction (at most {budget} words changed): {START}")
    blocks.append("\n".join(final))
    return [{"role": "user", "content": "\n\n".join(blocks)}]


def _instruction_of(prompt: str) -> str:
    instruction, _ = split_instruction(prompt)
    return instruction.strip() or "(none)"


def _one_line(text: str, limit: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3].rstrip() + "..."


def base_revision_request(candidate: str, current: str, budget: int, distance: int) -> Messages:
    """Ask a base model once to bring an over-budget candidate back within the
    budget: a revision log whose accepted edit the model writes, after <START>."""
    document = "\n\n".join(
        [
            "Prompt revision log. Each edit may change at most "
            f"{budget} words of the current prompt.",
            f"Current prompt:\n{START}{current}{END}",
            f"Rejected edit ({distance} words changed, too many):\n{START}{candidate}{END}",
            f"Accepted edit (keeps the most useful changes; {budget} words or fewer changed):",
        ]
    )
    return [{"role": "user", "content": document}, {"role": "assistant", "content": START}]


def chat_revision_request(candidate: str, current: str, budget: int, distance: int) -> Messages:
    """Ask a chat model once to bring an over-budget candidate back within the budget."""
    content = "\n\n".join(
        [
            f"The current prompt is:\n{current}",
            f"A proposed new version is:\n{candidate}",
            f"The new version changes {distance} words of the current prompt, but at most "
            f"{budget} may change. Rewrite the new version so that it keeps its most useful "
            "changes and differs from the current prompt by no more than "
            f"{budget} words (a word added, removed or replaced counts as one).",
            "\n".join(
                line
                for line in (
                    _keep_tags_sentence(current),
                    budget_sentence(budget),
                    f"Write the new prompt between {START} and {END}, and nothing else "
                    "between them.",
                )
                if line
            ),
        ]
    )
    return [{"role": "user", "content": content}]
