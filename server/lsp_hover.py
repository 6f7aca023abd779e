"""Hover markdown for a `.prompt` file, from the cached prompt state and the buffer's body.

Plain markdown lines and bullets only (no tables or HTML): VS Code renders
it, and Neovim 0.7 shows it readable in a float as it is.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from gpo_engine.offer import Score, Verdict
from gpo_engine.stats import held_out_words
from gpo_server.lsp_actions import apply_title, format_gain
from gpo_server.lsp_diagnostics import KEY_HINT
from gpo_server.lsp_link import DOWN_LINE
from gpo_server.prompt_state import Elsewhere, Job, PromptState, same_prompt

if TYPE_CHECKING:
    from gpo_engine.examples import Example
    from gpo_engine.promptfile import PromptFile

_BARS = "▁▂▃▄▅▆▇█"
SPARK_WIDTH = 24  # newest scores kept in the sparkline
ROLES_SHOWN = 8  # roles listed in the messages line; a long history is cut short


def sparkline(values: Sequence[float], width: int = SPARK_WIDTH) -> str:
    """One bar per score, scaled between the lowest and highest shown; flat -> middle bars."""
    shown = list(values)[-width:]
    if not shown:
        return ""
    low, high = min(shown), max(shown)
    if high - low < 1e-9:
        return _BARS[len(_BARS) // 2 - 1] * len(shown)
    top = len(_BARS) - 1
    return "".join(_BARS[round((v - low) / (high - low) * top)] for v in shown)


def _score(value: float) -> str:
    return f"{value:.1f}"


def format_summary(summary: Score) -> str:
    """'72.5 (n=40, 95% CI 57.1-84.3)'; the interval is left out when unknown."""
    parts = [f"n={summary.n}"]
    if summary.low is not None and summary.high is not None:
        parts.append(f"95% CI {_score(summary.low)}–{_score(summary.high)}")
    return f"**{_score(summary.value)}** ({', '.join(parts)})"


def format_spend(cost: float, unknown_price: bool) -> str:
    if unknown_price and cost == 0:
        return "spend unknown (no price for the model)"
    text = f"${cost:.4f}" if cost < 1 else f"${cost:.2f}"
    return f"spend {text}" + (" (some prices unknown)" if unknown_price else "")


# How the optimizer's rejection reasons read in a hover.
_REASONS = {"leak": "copied training text (leak)", "over_budget": "over the word budget",
            "lost_variable": "lost or invented a variable", "duplicate": "duplicate",
            "unparseable": "unparseable", "empty": "empty", "model_error": "model error",
            "broken_template": "broken template",
            "lost_structure": "lost a role marker, partial or helper"}


def format_guard(guard: Verdict) -> str:
    """The held-out verdict in words, with the paired test's numbers when known."""
    if guard.verdict == "untested":
        return f"not tested on held-out rows ({guard.reason or 'no test outcomes yet'})"
    numbers = []
    if guard.delta is not None:
        numbers.append(f"{format_gain(guard.delta)} pts on test")
    if guard.p_value is not None:
        numbers.append("p < 0.001" if guard.p_value < 0.001 else f"p = {guard.p_value:.3f}")
    if guard.n is not None:
        numbers.append(f"n = {guard.n}")
    detail = f" ({', '.join(numbers)})" if numbers else ""
    words = held_out_words(guard.verdict, guard.delta, guard.p_value)
    return f"{words} on held-out test rows{detail}"


def job_lines(job: Job | None) -> list[str]:
    """What the file's job is doing: its step, why it retries, or why it failed."""
    if job is None:
        return []
    if job.retrying:
        return [f"- optimizing: {job.state}, step {job.step}/{job.total_steps}; retrying "
                f"after: {job.message or 'model calls fail'}"]
    if job.active:
        return [f"- optimizing: {job.status}, step {job.step}/{job.total_steps}"]
    if job.status != "failed":
        return []
    lines = [f"- last run failed: {job.message or 'no reason given'}"]
    return lines + ([f"- {KEY_HINT}"] if job.error_kind == "auth" else [])


def elsewhere_lines(elsewhere: Elsewhere | None) -> list[str]:
    """A run of the prompt in another process: where, and how far its steps are."""
    if elsewhere is None:
        return []
    host = elsewhere.host or "another machine"
    pid = f" (pid {elsewhere.pid})" if elsewhere.pid is not None else ""
    return [f"- optimizing on {host}{pid}: step {elsewhere.steps_done}/{elsewhere.total_steps}"]


def format_messages(roles: Sequence[str]) -> str:
    """'messages: 2 (system, user)': how many messages, and their roles in order."""
    shown = ", ".join(roles[:ROLES_SHOWN]) + (", …" if len(roles) > ROLES_SHOWN else "")
    return f"messages: {len(roles)}" + (f" ({shown})" if roles else "")


def messages_line(prompt: PromptFile, sample: Example | None) -> str | None:
    """What Dotprompt makes of the body: rendered with `sample` (the example set's first
    row, its history included), else with each variable set to a placeholder.

    None when it does not render: the diagnostics already say why. A local
    Handlebars render takes about a millisecond, so the hover does it inline.
    """
    from gpo_engine.errors import GpoError  # the renderer loads dotpromptz: on first hover
    from gpo_engine.rendering import RowData

    if sample is not None:
        row = RowData(input=sample.render_values, messages=sample.messages)
    else:
        row = RowData({name: f"<{name}>" for name in prompt.variables})
    try:
        messages = prompt.renderer().render_sync(prompt.body, row)
    except (GpoError, OSError, ValueError):
        return None
    return format_messages([message.role for message in messages])


def scoring_now(state: PromptState | None, body: str, file_text: str | None,
                rescoring: bool) -> bool:
    """Whether `body` is being scored right now: a Re-score of it is under way, or the
    file's job is measuring the file's own text (which the buffer is) before step 1."""
    if rescoring:
        return True
    job = state.job if state is not None else None
    if state is None or job is None or not job.active or file_text is None:
        return False
    return state.lookup(body) is None and same_prompt(file_text, body)


def hover_markdown(state: PromptState | None, body: str, messages: str | None = None,
                   daemon_down: bool = False, scoring: bool = False) -> str:
    """Scores of `body`, the trajectory's best, step, budget, spend and score history,
    and `messages` (see messages_line) when given; `daemon_down`: the link to the daemon
    broke, and what is shown is from before (lsp_link); `scoring`: `body` is being scored
    now (scoring_now), said instead of "not yet scored"."""
    shape = [f"- {messages}"] if messages else []
    down = [DOWN_LINE] if daemon_down else []
    if state is None:
        first = ("**GPO**: scoring… this text is being scored now." if scoring
                 else "**GPO**: not yet scored.")
        return "\n\n".join([
            first,
            "Run the code action *Re-score* to score this prompt, "
            "or *Optimize this prompt* to start GPO.", *down, *shape])
    lines = [f"**GPO** · step {state.steps_done}/{state.total_steps} · budget {state.budget} words",
             *down]
    current = state.lookup(body)
    if current is None:
        lines.append("")
        lines.append("*Scoring…*: this text is being scored now." if scoring else
                     "*Not yet scored*: this text differs from every evaluated prompt.")
        lines.append("")
    else:
        lines.append("")
        lines.append(f"- dev: {format_summary(current.dev)}")
        if current.test is not None:
            lines.append(f"- test: {format_summary(current.test)}")
        else:
            lines.append("- test: not measured")
    best = state.best()
    if best is not None:
        where = "the initial text" if best.step == 0 else f"step {best.step}"
        relation = ""
        if current is not None:
            relation = (
                " (this text)"
                if best is current
                else f" ({format_gain(best.dev.value - current.dev.value)} pts)"
            )
        lines.append(f"- best in trajectory: **{_score(best.dev.value)}** dev, {where}{relation}")
    if state.history:
        oldest, newest = state.history[0], state.history[-1]
        lines.append(
            f"- history: `{sparkline(state.history)}` {_score(oldest)} → {_score(newest)} "
            f"({len(state.history)} scores)"
        )
    suggestion = state.suggestion_for(body)
    if suggestion is not None:
        lines.append(f"- ready: {apply_title(suggestion, state.budget)}")
        lines.append(f"- held-out check: {format_guard(suggestion.verdict)}")
    withheld = state.withheld
    if withheld is not None and same_prompt(withheld.base, body):
        lines.append(f"- withheld: a prompt {format_gain(withheld.gain)} pts on dev is "
                     f"{format_guard(withheld.verdict)}: it overfits the dev rows")
    if state.rejected:
        dropped = ", ".join(f"{count} {_REASONS.get(reason, reason)}"
                            for reason, count in state.rejected)
        lines.append(f"- dropped candidates: {dropped}")
    lines.extend(job_lines(state.job))
    lines.extend(elsewhere_lines(state.elsewhere))
    usage = state.usage
    lines.append(
        f"- tokens: {usage.prompt_tokens:,} prompt + {usage.completion_tokens:,} completion · "
        f"{format_spend(usage.cost, usage.unknown_price)}"
    )
    return "\n".join([*lines, *shape])
