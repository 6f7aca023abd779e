"""A self-contained HTML report of one optimization run.

Everything a person needs to judge a run on one page that opens from disk,
offline, in any browser: the score per step on dev and test with 95%
intervals, the word budget per step, every candidate with its score, status
and words changed, the spend, and the diff of the suggestion. The chart is
inline SVG drawn here (no script, no font, no stylesheet from anywhere), and
a Content-Security-Policy forbids every fetch, so the page cannot phone home
even by accident. Every piece of user text (prompts, paths, model names,
error details) goes through `html.escape`.

This module only renders: `build_report` takes plain data (a Trajectory and
the scores the caller computed), `render_html` turns it into a string. The
`gpo report` command does the model calls.
"""

from __future__ import annotations

import difflib
import html
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from gpo_engine.offer import Score, Verdict
from gpo_engine.trajectory import CandidateRecord, StepRecord, Trajectory
from gpo_engine.update import word_distance

# Chart geometry, in SVG user units (the SVG scales to the page width).
_W, _H = 760, 320
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 56, 34, 44
_DEV, _TEST, _BUDGET, _CAND = "#2563eb", "#ea580c", "#6b7280", "#94a3b8"


@dataclass(frozen=True)
class Point:
    """The prompt in force after `step` steps (0 = the starting prompt)."""

    step: int
    text: str
    dev: Score
    test: Score | None  # None when the test split is empty or was not scored


@dataclass(frozen=True)
class Report:
    path: str
    task_model: str
    optimizer_model: str
    metric: str
    total_steps: int
    points: tuple[Point, ...]  # steps_done + 1 entries: the start, then one per finished step
    budgets: tuple[int, ...]  # B_t for every planned step (total_steps entries)
    steps: tuple[StepRecord, ...]
    file_text: str  # the prompt body in the file now
    suggestion: str | None
    suggestion_dev: float | None
    budget_now: int
    guard: Verdict | None  # the held-out verdict on the suggestion
    spend: tuple[tuple[str, Mapping[str, Any]], ...]  # (label, Usage.to_dict()) sections


def build_report(
    trajectory: Trajectory,
    *,
    task_model: str,
    optimizer_model: str,
    metric: str,
    budgets: Sequence[int],
    dev: Mapping[str, Score],
    test: Mapping[str, Score],
    file_text: str,
    suggestion: tuple[str, float] | None,
    budget_now: int,
    guard: Verdict | None = None,
    path: str | None = None,
    spend: Iterable[tuple[str, Mapping[str, Any]]] = (),
) -> Report:
    """Collect what the page shows; `dev` and `test` map prompt text to its interval.

    A history prompt missing from `dev` gets its interval from the
    trajectory's recorded per-row outcomes, else a point interval at its
    recorded score; one missing from `test` is drawn without a test point.
    """
    points = []
    for text, dev_score, step in trajectory.history():
        points.append(Point(step, text, dev.get(text) or _recorded(trajectory, text, dev_score),
                            test.get(text)))
    return Report(
        path=path or trajectory.path, task_model=task_model, optimizer_model=optimizer_model,
        metric=metric, total_steps=trajectory.total_steps, points=tuple(points),
        budgets=tuple(budgets), steps=tuple(trajectory.steps), file_text=file_text,
        suggestion=suggestion[0] if suggestion else None,
        suggestion_dev=suggestion[1] if suggestion else None,
        budget_now=budget_now, guard=guard, spend=tuple(spend))


def _recorded(trajectory: Trajectory, text: str, score: float) -> Score:
    """The recorded dev Score; without per-row outcomes a point interval at the score."""
    recorded = trajectory.dev_score(text)
    if recorded is None:
        return Score(score, trajectory.dev_n, score, score)
    if recorded.low is None or recorded.high is None:
        return Score(recorded.value, recorded.n, recorded.value, recorded.value)
    return recorded


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _pct(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}%"


# ------------------------------------------------------------------ the chart


def render_chart(report: Report) -> str:
    """Inline SVG: dev and test per step with interval bars, candidates, and the budget curve."""
    steps_axis = max(report.total_steps, len(report.points) - 1, 1)
    plot_w, plot_h = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM
    max_budget = max([*report.budgets, 1])

    def x(step: float) -> float:
        return _LEFT + plot_w * step / steps_axis

    def y(score: float) -> float:
        return _TOP + plot_h * (1.0 - max(0.0, min(100.0, score)) / 100.0)

    def yb(words: float) -> float:
        return _TOP + plot_h * (1.0 - words / max_budget)

    out = [f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_W} {_H}" '
           f'role="img" aria-labelledby="chart-title">',
           '<title id="chart-title">Score per step on dev and test, with 95% intervals, '
           'and the word budget per step</title>']
    # Grid and axes.
    for tick in (0, 25, 50, 75, 100):
        out.append(f'<line class="grid" x1="{_LEFT}" x2="{_W - _RIGHT}" y1="{y(tick):.1f}" '
                   f'y2="{y(tick):.1f}" stroke="#e5e7eb"/>')
        out.append(f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end" '
                   f'class="tick">{tick}%</text>')
    for words in sorted({0, max_budget // 2, max_budget}):
        out.append(f'<text x="{_W - _RIGHT + 6}" y="{yb(words) + 4:.1f}" class="tick" '
                   f'fill="{_BUDGET}">{words}</text>')
    label_every = max(1, steps_axis // 12)
    for step in range(steps_axis + 1):
        if step % label_every == 0 or step == steps_axis:
            out.append(f'<text x="{x(step):.1f}" y="{_H - _BOTTOM + 16}" text-anchor="middle" '
                       f'class="tick">{"start" if step == 0 else step}</text>')
    out.append(f'<text x="{_LEFT + plot_w / 2:.1f}" y="{_H - 8}" text-anchor="middle" '
               f'class="axis">step</text>')
    out.append(f'<text transform="translate(14 {_TOP + plot_h / 2:.1f}) rotate(-90)" '
               f'text-anchor="middle" class="axis">score</text>')
    out.append(f'<text transform="translate({_W - 10} {_TOP + plot_h / 2:.1f}) rotate(90)" '
               f'text-anchor="middle" class="axis" fill="{_BUDGET}">budget (words)</text>')
    out.append(f'<rect x="{_LEFT}" y="{_TOP}" width="{plot_w}" height="{plot_h}" fill="none" '
               f'stroke="#9ca3af"/>')

    # The budget curve: B_t belongs to step t+1 (the step it bounds).
    if report.budgets:
        pts = " ".join(f"{x(t + 1):.1f},{yb(b):.1f}" for t, b in enumerate(report.budgets))
        out.append(f'<polyline id="budget-curve" points="{pts}" fill="none" stroke="{_BUDGET}" '
                   f'stroke-width="1.5" stroke-dasharray="5 4"/>')
        for t, b in enumerate(report.budgets):
            out.append(f'<rect class="budget" data-step="{t + 1}" x="{x(t + 1) - 2.5:.1f}" '
                       f'y="{yb(b) - 2.5:.1f}" width="5" height="5" fill="{_BUDGET}">'
                       f'<title>step {t + 1}: budget {b} words</title></rect>')

    # Every candidate with a dev score, faint; raced-out ones (scored on a slice) hollow.
    for record in report.steps:
        for i, cand in enumerate(record.candidates):
            if cand.dev is None or cand.status not in ("scored", "raced_out"):
                continue
            full = cand.status == "scored"
            out.append(f'<circle class="candidate" data-step="{record.step + 1}" '
                       f'cx="{x(record.step + 1) + 7:.1f}" cy="{y(cand.dev):.1f}" r="2.5" '
                       f'fill="{_CAND if full else "none"}" stroke="{_CAND}">'
                       f'<title>step {record.step + 1} candidate {i + 1}: {_pct(cand.dev)} '
                       f'on {cand.dev_n} dev rows ({_e(cand.status)})</title></circle>')

    for name, colour, offset in (("test", _TEST, 4.0), ("dev", _DEV, -4.0)):
        series = [(p.step, p.dev if name == "dev" else p.test, p.text) for p in report.points]
        known = [(s, iv, t) for s, iv, t in series if iv is not None]
        if not known:
            continue
        band = ([f"{x(s):.1f},{y(iv.high):.1f}" for s, iv, _ in known]
                + [f"{x(s):.1f},{y(iv.low):.1f}" for s, iv, _ in reversed(known)])
        out.append(f'<polygon class="band {name}" points="{" ".join(band)}" fill="{colour}" '
                   f'fill-opacity="0.10" stroke="none"/>')
        line = " ".join(f"{x(s):.1f},{y(iv.value):.1f}" for s, iv, _ in known)
        out.append(f'<polyline class="series {name}" points="{line}" fill="none" '
                   f'stroke="{colour}" stroke-width="2"/>')
        for step, iv, text in known:
            cx = x(step) + offset
            out.append(f'<line class="interval {name}" data-step="{step}" x1="{cx:.1f}" '
                       f'x2="{cx:.1f}" y1="{y(iv.low):.1f}" y2="{y(iv.high):.1f}" '
                       f'stroke="{colour}" stroke-width="1.5"/>')
            kind = "start" if step == 0 else "step"
            where = "starting prompt" if step == 0 else f"after step {step}"
            out.append(f'<circle class="point {name} {kind}" data-step="{step}" '
                       f'cx="{cx:.1f}" cy="{y(iv.value):.1f}" r="{5 if step == 0 else 4}" '
                       f'fill="{"#fff" if step == 0 else colour}" stroke="{colour}" '
                       f'stroke-width="2"><title>{where}: {name} {iv.value:.1f}% '
                       f'[{iv.low:.1f}–{iv.high:.1f}], n={iv.n}\n{_e(text)}</title></circle>')

    # Legend.
    items = [("dev", _DEV, "line"), ("test", _TEST, "line"), ("budget (words)", _BUDGET, "dash"),
             ("candidates (dev)", _CAND, "dot")]
    lx = _LEFT
    for label, colour, shape in items:
        if shape == "dot":
            out.append(f'<circle cx="{lx + 8}" cy="14" r="3" fill="{colour}"/>')
        else:
            dash = ' stroke-dasharray="5 4"' if shape == "dash" else ""
            out.append(f'<line x1="{lx}" x2="{lx + 18}" y1="14" y2="14" stroke="{colour}" '
                       f'stroke-width="2"{dash}/>')
        out.append(f'<text x="{lx + 24}" y="18" class="legend">{label}</text>')
        lx += 40 + 7 * len(label)
    out.append("</svg>")
    return "\n".join(out)


# ------------------------------------------------------------------ the page


_CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;color:#111827;margin:0;
background:#f9fafb}
main{max-width:1000px;margin:0 auto;padding:24px}
h1{font-size:22px;margin:0 0 4px} h2{font-size:18px;margin:28px 0 8px}
h3{font-size:15px;margin:18px 0 6px}
.meta{color:#4b5563;margin:0 0 16px}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(170px,1fr));gap:10px}
.card{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:10px 12px}
.card b{display:block;font-size:20px} .card span{color:#6b7280;font-size:13px}
section.panel{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:12px 14px}
svg{width:100%;height:auto;display:block}
svg .tick{font-size:11px;fill:#6b7280} svg .axis{font-size:12px;fill:#374151}
svg .legend{font-size:12px;fill:#374151}
table{border-collapse:collapse;width:100%;background:#fff;font-size:14px}
th,td{border-bottom:1px solid #e5e7eb;padding:5px 8px;text-align:left;vertical-align:top}
th{background:#f3f4f6;font-weight:600} td.num{text-align:right;white-space:nowrap}
tr.chosen td{background:#eff6ff}
pre{margin:0;white-space:pre-wrap;word-break:break-word;font:13px/1.4 ui-monospace,
"SFMono-Regular",Menlo,Consolas,monospace}
.status{display:inline-block;border-radius:10px;padding:0 8px;font-size:12px;
background:#e5e7eb;white-space:nowrap}
.status.scored{background:#dcfce7} .status.raced_out{background:#fef9c3}
.diff{background:#fff;border:1px solid #e5e7eb;border-radius:8px;padding:8px 0}
.diff span{display:block;padding:0 12px} .diff .add{background:#dcfce7}
.diff .del{background:#fee2e2} .diff .hunk{color:#6b7280}
.note{color:#4b5563}
"""

# No fetch of any kind: inline styles and data: images only.
_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:"


def render_html(report: Report) -> str:
    """The whole page as one string."""
    start, last = report.points[0], report.points[-1]
    best = max(report.points, key=lambda p: (p.dev.value, -p.step))
    done = len(report.points) - 1
    title = f"gpo report: {report.path}"
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{_CSP}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{_e(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{_e(report.path)}</h1>",
        f'<p class="meta">task model <code>{_e(report.task_model)}</code> · optimizer '
        f'<code>{_e(report.optimizer_model)}</code> · metric <code>{_e(report.metric)}</code>'
        f" · {done} of {report.total_steps} steps done</p>",
        '<div class="cards">',
        _card("dev at start", start.dev),
        _card(f"dev, best (step {best.step})" if best.step else "dev, best (the start)",
              best.dev),
        _card("test at start", start.test),
        _card(f"test of the best (step {best.step})" if best.step else "test of the best",
              best.test),
        f'<div class="card"><b>{report.budget_now} words</b><span>budget now</span></div>',
        "</div>",
        '<h2>Score per step</h2><section class="panel">',
        render_chart(report),
        '<p class="note">Dev (blue) and test (orange) score of the prompt in force after '
        "each step, with 95% intervals (bars and band); the hollow point is the starting "
        "prompt. Grey dots are the step's candidates on dev (hollow: raced out on a slice). "
        "The dashed curve is the word budget of each step (right axis).</p></section>",
        _points_table(report),
        "<h2>Suggestion</h2>",
        _suggestion(report),
        "<h2>Candidates</h2>",
        _dropped_summary(report.steps),
        *(_step_section(record, report.total_steps) for record in report.steps),
        "<h2>Spend</h2>",
        _spend(report.spend),
        f"<p class=\"note\">Last prompt in force: step {last.step}. Generated by gpo.</p>",
        "</main></body></html>",
    ]
    return "\n".join(parts) + "\n"


def _card(label: str, iv: Score | None) -> str:
    if iv is None:
        return f'<div class="card"><b>–</b><span>{_e(label)}: not scored</span></div>'
    return (f'<div class="card"><b>{iv.value:.1f}%</b><span>{_e(label)}<br>'
            f"[{iv.low:.1f}–{iv.high:.1f}], n={iv.n}</span></div>")


def _iv(iv: Score | None) -> str:
    if iv is None:
        return "–"
    return f"{iv.value:.1f}% [{iv.low:.1f}–{iv.high:.1f}] n={iv.n}"


def _points_table(report: Report) -> str:
    rows = ["<h3>Per step</h3><table id=\"points\"><tr><th>step</th><th>budget</th>"
            "<th>dev</th><th>test</th><th>prompt in force</th></tr>"]
    for p in report.points:
        budget = report.budgets[p.step - 1] if 0 < p.step <= len(report.budgets) else None
        rows.append(f'<tr data-step="{p.step}"><td>{"start" if p.step == 0 else p.step}</td>'
                    f'<td class="num">{"–" if budget is None else budget}</td>'
                    f'<td class="num">{_iv(p.dev)}</td><td class="num">{_iv(p.test)}</td>'
                    f"<td><pre>{_e(p.text)}</pre></td></tr>")
    rows.append("</table>")
    return "\n".join(rows)


def _suggestion(report: Report) -> str:
    if report.suggestion is None:
        return (f'<p class="note" id="no-suggestion">No suggestion: no prompt in the trajectory '
                f"within {report.budget_now} words of the file's text beats it on dev.</p>")
    diff = list(difflib.unified_diff(report.file_text.splitlines(),
                                     report.suggestion.splitlines(),
                                     fromfile="in the file", tofile="suggested", lineterm=""))
    lines = []
    for line in diff:
        cls = ("hunk" if line.startswith("@@") else "file" if line.startswith(("---", "+++"))
               else "add" if line.startswith("+") else "del" if line.startswith("-") else "ctx")
        lines.append(f'<span class="{cls}">{_e(line) or " "}</span>')
    words = word_distance(report.file_text, report.suggestion)
    return (f'<p>Dev {_pct(report.suggestion_dev)}; {words} of {report.budget_now} words '
            f"changed against the file's text.</p>{_guard(report.guard)}"
            f'<pre class="diff" id="diff">{"".join(lines)}</pre>')


def _guard(guard: Verdict | None) -> str:
    """The overfitting guard's held-out verdict, in words."""
    if guard is None:
        return ""
    if guard.verdict == "untested":
        said = f"not checked on test: {_e(guard.reason)}"
    else:
        delta, p = guard.delta, guard.p_value
        p_text = "p &lt; 0.001" if p is not None and p < 0.001 else f"p = {p}"
        numbers = f" (test {delta:+.1f} pts, {p_text})" \
            if delta is not None and p is not None else ""
        words = guard.words()
        than = "from" if words.endswith("different") else "than"
        said = (f"{words} {than} the file's text on held-out test rows"
                + (": gpo optimize withholds it" if guard.worse else ""))
        said += numbers
    return f'<p class="guard {_e(guard.verdict)}" id="guard">Overfitting guard: {said}.</p>'



def _dropped_summary(steps: Sequence[StepRecord]) -> str:
    counts = Counter(c.status for s in steps for c in s.candidates)
    if not counts:
        return '<p class="note">No step has finished yet.</p>'
    listed = ", ".join(f"{_e(status)} {n}" for status, n in sorted(counts.items()))
    return f'<p class="note">Candidates by status: {listed}.</p>'


def _step_section(record: StepRecord, total: int) -> str:
    head = (f'<h3 id="step-{record.step + 1}">Step {record.step + 1} of {total} · budget '
            f"{record.budget} words · current prompt {record.train_score:.1f}% on its train "
            f"minibatch · chosen {record.chosen_dev:.1f}% on dev</h3>")
    if record.message:
        head += f'<p class="note">{_e(record.message)}</p>'
    rows = ['<table class="candidates"><tr><th>#</th><th>status</th><th>dev</th>'
            "<th>words changed</th><th>prompt</th></tr>"]
    for i, cand in enumerate(record.candidates):
        rows.append(_candidate_row(i, cand, cand.text == record.chosen
                                   and cand.status == "scored"))
    rows.append("</table>")
    return head + "\n".join(rows)


def _candidate_row(index: int, cand: CandidateRecord, chosen: bool) -> str:
    score = "–" if cand.dev is None else f"{cand.dev:.1f}% (n={cand.dev_n})"
    distance = "–" if cand.distance < 0 else str(cand.distance)
    detail = f'<div class="note">{_e(cand.detail)}</div>' if cand.detail else ""
    mark = " ✓ chosen" if chosen else ""
    return (f'<tr class="candidate{" chosen" if chosen else ""}"><td class="num">{index + 1}</td>'
            f'<td><span class="status {_e(cand.status)}">{_e(cand.status)}</span>{mark}</td>'
            f'<td class="num">{score}</td><td class="num">{distance}</td>'
            f"<td><pre>{_e(cand.text)}</pre>{detail}</td></tr>")


def _spend(sections: Sequence[tuple[str, Mapping[str, Any]]]) -> str:
    if not sections:
        return '<p class="note">No spend recorded.</p>'
    out = []
    for label, usage in sections:
        rows = [f"<h3>{_e(label)}</h3>", '<table class="spend"><tr><th>model</th><th>calls</th>'
                "<th>cache hits</th><th>failures</th><th>tokens in</th><th>tokens out</th>"
                "<th>cost</th></tr>"]
        per_model = usage.get("per_model") or {}
        for model, u in sorted(per_model.items()):
            rows.append(_spend_row(_e(model), u))
        rows.append(_spend_row("<b>total</b>", usage))
        rows.append("</table>")
        if usage.get("unknown_price"):
            rows.append('<p class="note">Some model has no known price: the cost undercounts.'
                        "</p>")
        out.append("\n".join(rows))
    return "\n".join(out)


def _spend_row(name: str, u: Mapping[str, Any]) -> str:
    return (f"<tr><td>{name}</td><td class=\"num\">{int(u.get('calls', 0))}</td>"
            f"<td class=\"num\">{int(u.get('cache_hits', 0))}</td>"
            f"<td class=\"num\">{int(u.get('failures', 0))}</td>"
            f"<td class=\"num\">{int(u.get('prompt_tokens', 0))}</td>"
            f"<td class=\"num\">{int(u.get('completion_tokens', 0))}</td>"
            f"<td class=\"num\">${float(u.get('cost', 0.0)):.4f}</td></tr>")
