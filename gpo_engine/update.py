"""GPO's generation-based update: ask the optimizer model for new prompts.

One meta-prompt per step shows the retrieved prompts with their scores, a few
examples of what the current prompt made the task model answer, the current
prompt and the edit budget; the optimizer writes each new prompt between
<START> and <END>. Everything the model returns is treated as untrusted text:
junk, duplicates, lost template variables and edits over the budget become
`Rejected` records (data for reports), never exceptions.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rapidfuzz import fuzz, process
from rapidfuzz.distance import Levenshtein

from gpo_engine.direction import ScoredPrompt
from gpo_engine.errors import ModelCallError
from gpo_engine.evaluate import gather_all
from gpo_engine.template import template_error

START = "<START>"
END = "<END>"
MAX_EXEMPLARS = 3
REVISION_SAMPLE_OFFSET = 1000  # sample index of the revision of sample i: 1000 + i

# The leak guard: a candidate that copies training text (an input or an
# expected output) into the prompt would score well on rows like it and
# generalize badly. Copied = rapidfuzz partial_ratio at or above the threshold.
LEAK_THRESHOLD = 90.0
LEAK_MIN_CHARS = 20  # shorter texts ("yes", "Paris") are answers a prompt may well name
LEAK_WINDOW_WORDS = 8  # long texts are compared in overlapping windows of this many words

# Exemplar text is cut to these many characters: the embedded model has a
# 2048-token context, and a long input would crowd out the prompts themselves.
_EXEMPLAR_CHARS = {False: 1200, True: 400}
_REJECTED_TEXT_CHARS = 2000

Messages = list[dict[str, str]]
Complete = Callable[[Messages, int], Awaitable[str]]


@dataclass(frozen=True)
class Exemplar:
    input: str  # the task model's input (the rendered prompt or the example's inputs)
    expected: str
    output: str  # what the task model answered with the current prompt
    correct: bool


@dataclass(frozen=True)
class Candidate:
    text: str
    distance: int  # word-level Levenshtein distance to the current prompt
    revised: bool  # True if it came back from the one shortening request


@dataclass(frozen=True)
class Rejected:
    text: str
    # "unparseable" | "empty" | "over_budget" | "lost_variable" | "duplicate" | "model_error"
    # | "broken_template" | "leak"; the optimizer adds "lost_structure" (optimizer._in_place)
    reason: str
    detail: str


@dataclass(frozen=True)
class Generation:
    candidates: tuple[Candidate, ...]
    rejected: tuple[Rejected, ...]


def word_distance(a: str, b: str) -> int:
    """Words inserted, deleted or substituted to turn `a` into `b`."""
    return int(Levenshtein.distance(a.split(), b.split()))


# ---------------------------------------------------------------- meta-prompts

_TAG = re.compile(r"\{\{\{?.*?\}?\}\}", re.DOTALL)


def template_tags(text: str) -> list[str]:
    """Distinct Handlebars tags ({{x}}, {{{x}}}, {{#if x}} ...) in order of appearance."""
    return list(dict.fromkeys(_TAG.findall(text)))


def budget_sentence(budget: int) -> str:
    return f"Change at most {budget} words of the current prompt."


def _score(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _clip(text: str, limit: int) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[: limit - 3].rstrip() + "..."


def _pick_exemplars(exemplars: Sequence[Exemplar], count: int) -> list[Exemplar]:
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


def build_meta_prompt(
    current: str,
    direction: Sequence[ScoredPrompt],
    exemplars: Sequence[Exemplar],
    budget: int,
    base_model: bool,
) -> Messages:
    """The optimizer's input for one step.

    `direction` is what direction.retrieve returned (ascending scores, the
    current prompt last); `exemplars` may be the whole train minibatch, the
    first MAX_EXEMPLARS wrong answers (then right ones) are shown.
    """
    shown = _pick_exemplars(exemplars, MAX_EXEMPLARS if not base_model else 2)
    if base_model:
        return _base_meta_prompt(current, direction, shown, budget)
    return [{"role": "user", "content": _chat_meta_prompt(current, direction, shown, budget)}]


def _chat_meta_prompt(
    current: str, direction: Sequence[ScoredPrompt], shown: Sequence[Exemplar], budget: int
) -> str:
    limit = _EXEMPLAR_CHARS[False]
    parts = [
        "You are improving the prompt that a language model receives for a task. The prompt "
        "is a template: each tag in double braces, such as {{name}}, is replaced by an "
        "example's input before the model reads it."
    ]
    if direction:
        listing = "\n\n".join(f"Prompt: {p.text}\nScore: {_score(p.score)}" for p in direction)
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
    return "\n\n".join(parts)


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


def _base_meta_prompt(
    current: str, direction: Sequence[ScoredPrompt], shown: Sequence[Exemplar], budget: int
) -> Messages:
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
            f"{_one_line(_instruction_of(p.text), 80)} (score {_score(p.score)})"
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


def build_revision_request(
    candidate: str, current: str, budget: int, distance: int, base_model: bool
) -> Messages:
    """Ask once to bring an over-budget candidate back within the budget."""
    if base_model:
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


# ---------------------------------------------------------------- parsing

_START_MARK = re.compile(r"<\s*/?\s*start\s*>", re.IGNORECASE)
_END_MARK = re.compile(r"<\s*/?\s*end\s*>", re.IGNORECASE)
_FENCE = re.compile(r"^```[\w+-]*[ \t]*\n?(.*?)\n?```$", re.DOTALL)
_QUOTES = (('"', '"'), ("'", "'"), ("\u201c", "\u201d"), ("\u2018", "\u2019"), ("`", "`"))
_LABEL = re.compile(
    r"^(?:new |improved |revised |updated |final )?(?:prompt|instruction)s?\s*"
    r"(?:\(.*?\))?\s*:\s*",
    re.IGNORECASE,
)
# Lines that belong to the meta-prompt's own structure: a base model that
# forgot <END> often goes on with the next log entry or an example.
_STRUCTURE_LINE = re.compile(
    r"^\s*(?:version \d+\b|score\s*:|input\s*:|expected answer\s*:|answer with the current"
    r"|model answer\s*:|verdict\s*:|task examples\s*:|prompt revision log|current prompt\s*:"
    r"|rejected edit|accepted edit)",
    re.IGNORECASE | re.MULTILINE,
)
# Phrases of the meta-prompts; a candidate that contains one (and the current
# prompt does not) is echoing the instructions instead of being a prompt.
_META_PHRASES = (
    "change at most",
    "words of the current prompt",
    "between <start> and <end>",
    "higher is better",
    "the current prompt is",
    "earlier versions of the prompt",
    "prompt revision log",
    "template tags exactly as written",
    "write the new prompt",
    "improved version of the current prompt",
    "words changed)",  # the budget note of the base-model meta-prompt's last line
)


_SCORE_NOTE = re.compile(r"\s*\(score [^)]*\)", re.IGNORECASE)


@dataclass(frozen=True)
class _Parsed:
    text: str | None
    reason: str  # "" when text is set, else "empty" | "unparseable"
    detail: str


def parse_candidate(text: str, prefilled: bool, current: str | None = None) -> str | None:
    """The new prompt in an optimizer answer, or None when there is no usable one.

    `prefilled`: the request ended with "<START>", so the answer starts inside
    the prompt. `current` (optional) enables the checks relative to the
    current prompt: length at most 4x, no meta-prompt phrases it lacks.
    """
    return _parse(text, prefilled, current).text


def _parse(raw: str, prefilled: bool, current: str | None) -> _Parsed:
    text = _END_MARK.sub(END, _START_MARK.sub(START, raw))
    if prefilled:
        text = START + text
    if START in text:
        # Every <START> opens a possible prompt; the first usable one wins, so
        # an answer that quotes the markers before using them still parses.
        pieces = [
            segment.split(END, 1)[0] if END in segment else _cut_run_on(segment, current)
            for segment in text.split(START)[1:]
        ]
    elif END in text:
        # The opening marker was left out: the prompt runs from the start.
        pieces = [text.split(END, 1)[0]]
    else:
        fenced = _FENCE.match(text.strip())
        if fenced is None:
            if not text.strip():
                return _Parsed(None, "empty", "the model returned no text")
            return _Parsed(None, "unparseable", f"no {START}/{END} markers in the answer")
        pieces = [fenced.group(1)]
    first: _Parsed | None = None
    for piece in pieces:
        parsed = _clean(piece, current)
        if parsed.text is not None:
            return parsed
        first = first or parsed
    assert first is not None
    return first


def _cut_run_on(text: str, current: str | None) -> str:
    """An unterminated prompt (no <END>: a stop sequence, max_tokens, or a
    base model running on) ends where the meta-prompt's structure resumes."""
    own = _own_labels(current)
    for match in _STRUCTURE_LINE.finditer(text):
        if match.group(0).strip().lower() not in own:
            text = text[: match.start()]
            break
    if current is not None and "\n\n" not in current.strip():
        # A one-paragraph prompt's rewrite ends at the first blank line.
        text = text.strip().split("\n\n", 1)[0]
    return text


def _own_labels(current: str | None) -> set[str]:
    """Structure labels the current prompt itself uses (a prompt may well say "Input:")."""
    if not current:
        return set()
    return {m.group(0).strip().lower() for m in _STRUCTURE_LINE.finditer(current)}


def _unwrap(text: str) -> str:
    for _ in range(3):
        before = text
        text = text.strip()
        fenced = _FENCE.match(text)
        if fenced is not None:
            text = fenced.group(1).strip()
        for left, right in _QUOTES:
            if len(text) >= 2 and text.startswith(left) and text.endswith(right):
                inner = text[len(left) : len(text) - len(right)]
                # Only a wrapping pair: '"a" or "b"' is quoted text, not wrapped.
                if left not in inner and right not in inner:
                    text = inner.strip()
        if text == before:
            break
    return text


def _clean(piece: str, current: str | None) -> _Parsed:
    text = _unwrap(piece)
    label = _LABEL.match(text)
    if label is not None and not (current and _LABEL.match(current.strip())):
        text = _unwrap(text[label.end() :])
    if not text:
        return _Parsed(None, "empty", "nothing between the markers")
    problem = _junk(text, current)
    if problem:
        return _Parsed(None, "unparseable", problem)
    return _Parsed(text, "", "")


def _junk(text: str, current: str | None) -> str:
    """Why `text` is not a plausible prompt, or '' when it is."""
    if START in text or END in text:
        return "contains another <START>/<END> marker"
    if len(_TAG.sub(" ", text).split()) < 2:
        return "too short to be a prompt"
    bare = _TAG.sub(" ", text)
    visible = [c for c in bare if not c.isspace()]
    letters = sum(c.isalpha() for c in visible)
    if letters < 2:
        return "no words besides template tags"
    if letters < 0.5 * len(visible):
        return "mostly non-letters"
    lowered = text.lower()
    current_lowered = (current or "").lower()
    for phrase in _META_PHRASES:
        if phrase in lowered and phrase not in current_lowered:
            return f"repeats the meta-prompt ({phrase!r})"
    opening = _STRUCTURE_LINE.match(text)
    if opening is not None and opening.group(0).strip().lower() not in _own_labels(current):
        return "continues the meta-prompt's structure instead of writing a prompt"
    words = text.split()
    if len(words) >= 20 and len(set(words)) < 0.25 * len(words):
        return "repeats itself"
    if current is not None and len(text) > 4 * max(len(current.strip()), 50):
        return f"{len(text)} characters, over 4x the current prompt"
    return ""


# ---------------------------------------------------------------- variables

_NAME = re.compile(r"[A-Za-z_@][\w@-]*(?:\.[\w@-]+)*")
_LITERAL = re.compile(r"\"[^\"]*\"|'[^']*'")
_KEYWORDS = frozenset(
    {
        "if",
        "unless",
        "each",
        "with",
        "else",
        "this",
        "role",
        "history",
        "media",
        "section",
        "json",
        "lookup",
        "log",
        "as",
        "true",
        "false",
        "null",
        "undefined",
    }
)


def _tag_names(text: str) -> set[str]:
    """Root names used inside the Handlebars tags of `text`."""
    names: set[str] = set()
    for tag in _TAG.findall(text):
        inner = _LITERAL.sub(" ", tag.strip("{}"))
        for name in _NAME.findall(inner):
            names.add(name.split(".", 1)[0])
    return names


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
        if _tag_names(line):
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


def check_variables(candidate: str, variables: Sequence[str]) -> list[str]:
    """Template variables (in the given order) that the candidate no longer uses."""
    used = _tag_names(candidate)
    return [name for name in variables if name not in used]


def _invented_names(candidate: str, current: str) -> list[str]:
    # A tag name the current prompt never used would render as an empty
    # string: usually a variable the optimizer renamed or made up.
    known = _tag_names(current) | _KEYWORDS
    return sorted(n for n in _tag_names(candidate) - known if not n.startswith("@"))


# ---------------------------------------------------------------- generation


async def _ask(complete: Complete, messages: Messages, index: int) -> str | ModelCallError:
    try:
        return await complete(messages, index)
    except ModelCallError as error:
        return error


async def _ask_all(
    complete: Complete, requests: Sequence[tuple[Messages, int]]
) -> list[str | ModelCallError]:
    # A systemic failure (spend limit, cancellation) stops the step; gather_all
    # does not leave the sibling requests running behind it.
    return await gather_all(_ask(complete, m, i) for m, i in requests)


def _norm(text: str) -> str:
    return " ".join(text.split())


def _short(text: str) -> str:
    return text if len(text) <= _REJECTED_TEXT_CHARS else text[:_REJECTED_TEXT_CHARS] + "..."


def _fold(text: str) -> str:
    return " ".join(text.lower().split())


def leak_pieces(texts: Sequence[str], current: str) -> list[str]:
    """The pieces of training texts a candidate must not copy: each text of at
    least LEAK_MIN_CHARS (in overlapping windows when long), minus the pieces
    the current prompt already contains (few-shot examples the user wrote)."""
    folded_current = _fold(current)
    pieces: dict[str, None] = {}
    for text in texts:
        words = _fold(text).split()
        step = LEAK_WINDOW_WORDS // 2
        starts = range(0, max(1, len(words) - LEAK_WINDOW_WORDS + step), step)
        for start in starts if len(words) > LEAK_WINDOW_WORDS else [0]:
            piece = " ".join(words[start : start + LEAK_WINDOW_WORDS])
            if len(piece) >= LEAK_MIN_CHARS:
                pieces[piece] = None
    return [p for p in pieces
            if fuzz.partial_ratio(p, folded_current) < LEAK_THRESHOLD]


def find_leak(candidate: str, pieces: Sequence[str]) -> tuple[str, float] | None:
    """The training piece `candidate` copies best (with its 0-100 match), if any reaches
    LEAK_THRESHOLD."""
    if not pieces:
        return None
    hit = process.extractOne(_fold(candidate), pieces, scorer=fuzz.partial_ratio,
                             processor=None, score_cutoff=LEAK_THRESHOLD)
    return None if hit is None else (str(hit[0]), float(hit[1]))


def _screen(
    answer: str | ModelCallError,
    prefilled: bool,
    current: str,
    variables: Sequence[str],
    seen: dict[str, str],
    leaks: Sequence[str] = (),
) -> tuple[str | None, Rejected | None]:
    """The usable prompt in one answer, or why there is none."""
    if isinstance(answer, ModelCallError):
        return None, Rejected("", "model_error", str(answer))
    parsed = _parse(answer, prefilled, current)
    if parsed.text is None:
        return None, Rejected(_short(answer), parsed.reason, parsed.detail)
    # Base models copy the score notes of the listed instructions into their own.
    text = _SCORE_NOTE.sub("", parsed.text).strip() if prefilled else parsed.text
    if not text:
        return None, Rejected(_short(answer), "empty", "only a score note")
    if template_tags(current) and not template_tags(text):
        # An answer without any template tag is an instruction, as in the paper,
        # where prompts are instructions placed before the question. Small
        # models answer this way almost always, so it replaces the current
        # prompt's instruction and the lines that carry the inputs (or a
        # partial, in a system message) are kept.
        text = with_instruction(text, current)
    broken = template_error(text)
    if broken is not None:
        return None, Rejected(text, "broken_template", broken)
    if _norm(text) in seen:
        return None, Rejected(text, "duplicate", seen[_norm(text)])
    missing = check_variables(text, variables)
    invented = _invented_names(text, current)
    if missing or invented:
        problems = [f"drops {{{{{name}}}}}" for name in missing]
        problems += [f"uses unknown {{{{{name}}}}}" for name in invented]
        return None, Rejected(text, "lost_variable", "; ".join(problems))
    leak = find_leak(text, leaks)
    if leak is not None:
        return None, Rejected(text, "leak", f"copies training text {leak[0]!r} "
                                            f"({leak[1]:.0f}% match)")
    return text, None


async def generate(
    complete: Complete,
    *,
    current: str,
    direction: Sequence[ScoredPrompt],
    exemplars: Sequence[Exemplar],
    budget: int,
    n: int,
    variables: Sequence[str],
    base_model: bool,
    train_texts: Sequence[str] = (),
) -> Generation:
    """Ask for n candidates concurrently and keep the usable ones.

    `train_texts` (the training rows' inputs and expected outputs) arm the
    leak guard: a candidate that copies one of them is rejected as "leak".

    `complete(messages, sample_index)` returns the optimizer's text; samples
    use indexes 0..n-1 and the revision of sample i uses 1000 + i, so each has
    its own response-cache entry. Candidates come back in sample order.
    """
    if n <= 0:
        return Generation((), ())
    messages = build_meta_prompt(current, direction, exemplars, budget, base_model)
    answers = await _ask_all(complete, [(messages, i) for i in range(n)])

    # Texts already known: proposing one again would only re-measure it.
    seen: dict[str, str] = {_norm(current): "same as the current prompt"}
    for prompt in direction:
        seen.setdefault(
            _norm(prompt.text), f"same as an earlier prompt (score {_score(prompt.score)})"
        )

    accepted: dict[int, Candidate] = {}
    rejected: dict[int, Rejected] = {}
    over_budget: dict[int, tuple[str, int]] = {}
    leaks = leak_pieces(train_texts, current)

    for index, answer in enumerate(answers):
        text, problem = _screen(answer, base_model, current, variables, seen, leaks)
        if problem is not None:
            rejected[index] = problem
            continue
        assert text is not None
        seen[_norm(text)] = f"same as sample {index}"
        distance = word_distance(current, text)
        if distance <= budget:
            accepted[index] = Candidate(text, distance, False)
        else:
            over_budget[index] = (text, distance)

    if over_budget:
        pending = list(over_budget.items())
        requests = [
            (
                build_revision_request(text, current, budget, distance, base_model),
                REVISION_SAMPLE_OFFSET + index,
            )
            for index, (text, distance) in pending
        ]
        revisions = await _ask_all(complete, requests)
        for (index, (text, distance)), answer in zip(pending, revisions, strict=True):
            note = f"{distance} words changed, budget {budget}"
            revised, problem = _screen(answer, base_model, current, variables, seen, leaks)
            if problem is not None:
                if problem.reason in ("model_error", "leak"):
                    rejected[index] = Rejected(problem.text or text, problem.reason,
                                               f"{note}; {problem.detail}")
                else:
                    rejected[index] = Rejected(
                        text, "over_budget", f"{note}; revision unusable: {problem.detail}"
                    )
                continue
            assert revised is not None
            new_distance = word_distance(current, revised)
            if new_distance > budget:
                rejected[index] = Rejected(
                    text, "over_budget", f"{note}; the revision still changed {new_distance}"
                )
                continue
            seen[_norm(revised)] = f"same as sample {index}"
            accepted[index] = Candidate(revised, new_distance, True)

    return Generation(
        candidates=tuple(accepted[i] for i in sorted(accepted)),
        rejected=tuple(rejected[i] for i in sorted(rejected)),
    )
