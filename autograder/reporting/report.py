"""The class report, grades/report.html: where a class stands, per assignment, at a glance.

One HTML file, its figures embedded (it opens offline and can be mailed), written at the
end of every grading run and again by ``python -m autograder report`` (``make report``)
from what grading left in the course folder, without grading again:

- grades/<assignment>.csv: each student's status, points per test, notes;
- autograded/<student>/<assignment>/: the failure message of each test, and the
  learning test's figures (the output's metadata written by the judge);
- grades/.graded.json: the grading time of each submission;
- release/<assignment>/: the points of each test, and which are graded by hand;
- autograder/audit/baseline.json, the course's last mutation audit (``make audit``): per
  function a student writes, the plausible bugs the tests catch, in a section for the
  instructor ("What the tests catch").

Everything a student's code could have written (messages, notes) is escaped, its control
characters shown (autograder/isolation/inert.py); the page runs no script (a Content-Security-Policy
forbids any).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder.isolation import inert
from autograder.reporting.late import CSV_COLUMNS as LATE_COLUMNS
from autograder.reporting.tables import CSV_COLUMNS, TO_GRADE

REPORT = "report.html"
#: the mutation audit's last full outcome, committed with the course (autograder/audit/; read
#: as data: the audit grades, a layer above this one)
AUDIT_BASELINE = Path(__file__).resolve().parents[1] / "audit" / "baseline.json"
AUDIT_COLUMNS = ("mutants", "caught", "caught by the visible tests", "equivalent", "surviving")
#: failure messages shown per test, most frequent first
TOP_MESSAGES = 5
#: kinds of trouble found in the notes, and the words that find them
NOTE_KINDS = {
    "time limit": ("time limit",),
    "process ended or killed": ("ended its process", "kernel died", "sandbox stopped"),
    "tampering suspected": ("tampering suspected",),
    "test cells edited or deleted": ("was edited", "was deleted"),
    "outputs removed from the feedback": ("feedback: the output",),
    "graded without a sandbox": ("graded without a sandbox",),
}


@dataclass
class Test:
    name: str
    points: float
    by_hand: bool
    passed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    messages: dict[str, list[str]] = field(default_factory=dict)  # message -> students


@dataclass
class Assignment:
    name: str
    rows: list[dict]
    tests: list[Test]
    totals: dict[str, float]  # student -> points
    total_max: float
    statuses: dict[str, list[str]]  # status or kind of note -> students
    seconds: dict[str, float]
    learning: dict[str, float | None]  # student -> best return measured by the grader
    threshold: float | None = None
    #: student -> the function whose course version made their TD3 learn ("" for none found),
    #: for those whose learning test failed (autograder.isolation.judge.attribute)
    attribution: dict[str, str] = field(default_factory=dict)


def _points(cells) -> list[tuple[str, float, bool]]:
    out = []
    for cell in cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("grade"):
            out.append((meta["grade_id"], float(meta.get("points", 0)), bool(meta.get("solution"))))
    return out


def _message(output) -> str:
    # the first line (a carriage return or another break of splitlines() stays, shown by _e)
    text = f"{output.get('evalue', '')}".strip().split("\n")
    return (text[0] if text else output.get("ename", "error"))[:240]


def _key(message: str) -> str:
    """Messages that differ only in their numbers are one kind of failure."""
    return re.sub(r"-?\d[\d,.]*", "#", message)


def _read_autograded(path: Path) -> tuple[dict[str, str], dict | None]:
    """{test: failure message} and the learning test's figures (with, under "attribution",
    what the judge found when it failed), from an autograded notebook."""
    failures, learning, attribution = {}, None, None
    try:
        notebook = nbformat.read(str(path), as_version=4)
    except Exception:
        return failures, learning
    for cell in notebook.cells:
        meta = cell.metadata.get("nbgrader", {})
        if cell.cell_type != "code" or not meta.get("grade") or meta.get("solution"):
            continue
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                failures[meta["grade_id"]] = _message(output)
            found = output.get("metadata", {}).get("learning_test")
            if isinstance(found, dict):
                learning = found
            found = output.get("metadata", {}).get("attribution")
            if isinstance(found, dict):
                attribution = found
    if attribution is not None:  # the learning test failed, with or without a curve
        learning = {**(learning or {}), "attribution": str(attribution.get("restored_by") or "")}
    return failures, learning


def collect(root: Path, name: str) -> Assignment | None:
    """What the report shows of one assignment, or None if it was never graded."""
    path = root / "grades" / f"{name}.csv"
    release = root / "release" / name / f"{name}.ipynb"
    if not path.exists():
        return None
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    columns = list(rows[0]) if rows else []
    points = {t: (p, hand) for t, p, hand in _points(nbformat.read(str(release), as_version=4).cells)} if release.exists() else {}
    names = [c for c in columns if c not in CSV_COLUMNS and c not in LATE_COLUMNS]
    tests = [Test(t, points.get(t, (0.0, False))[0], points.get(t, (0.0, False))[1]) for t in names]
    state = {}
    state_file = root / "grades" / ".graded.json"
    if state_file.exists():
        try:
            state = json.loads(state_file.read_text())
        except ValueError:
            state = {}
    totals, statuses, seconds, learning, threshold, attribution = {}, defaultdict(list), {}, {}, None, {}
    for row in rows:
        student = row["student"]
        if row["status"] != "graded":
            statuses[row["status"]].append(student)
            continue
        totals[student] = float(row["total"] or 0)
        for kind, words in NOTE_KINDS.items():
            if any(w in row.get("notes", "").lower() for w in words):
                statuses[kind].append(student)
        if f"{student}/{name}" in state:
            seconds[student] = float(state[f"{student}/{name}"].get("seconds") or 0)
        failures, figures = _read_autograded(root / "autograded" / student / name / f"{name}.ipynb")
        if figures is not None and "curve" in figures:
            learning[student] = figures.get("best")
            threshold = figures.get("threshold", threshold)
        if figures is not None and "attribution" in figures:
            attribution[student] = figures["attribution"]
        for test in tests:
            value = row.get(test.name, "")
            if test.by_hand or value in ("", TO_GRADE):
                continue
            if float(value) >= test.points:
                test.passed.append(student)
            else:
                test.failed.append(student)
                message = failures.get(test.name, "no message (the test's output was lost)")
                test.messages.setdefault(message, []).append(student)
    total_max = sum(t.points for t in tests)
    return Assignment(name, rows, tests, totals, total_max, dict(statuses), seconds, learning, threshold, attribution)


# --- figures
def _png(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def _figure(width=6.4, height=3.2):
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=90)
    return fig, fig.subplots()


def histogram_of_scores(a: Assignment) -> str:
    fig, ax = _figure()
    values = list(a.totals.values())
    top = max([a.total_max, *values, 1.0])
    bins = [x - 0.5 for x in range(int(math.ceil(top)) + 2)]
    ax.hist(values, bins=bins, color="tab:blue", edgecolor="white")
    ax.set_xlabel(f"points (out of {a.total_max:g}, autograded and by hand)")
    ax.set_ylabel("students")
    ax.set_title(f"{a.name}: scores of the {len(values)} graded submissions")
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _png(fig)


def pass_rates(a: Assignment) -> str:
    tests = [t for t in a.tests if not t.by_hand]
    fig, ax = _figure(height=0.35 * len(tests) + 1.2)
    rates = [100 * len(t.passed) / max(1, len(t.passed) + len(t.failed)) for t in tests]
    ax.barh(range(len(tests)), rates, color=["tab:green" if r >= 50 else "tab:orange" for r in rates])
    ax.set_yticks(range(len(tests)), [t.name for t in tests], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("students who pass (%)")
    for i, (t, r) in enumerate(zip(tests, rates)):
        ax.text(min(r + 1, 88), i, f"{len(t.passed)}/{len(t.passed) + len(t.failed)}", va="center", fontsize=7)
    fig.tight_layout()
    return _png(fig)


def learning_reference() -> dict:
    """The learning test's reference (``bbrl_course.learning_test.reference``: the file
    ``learning_reference.json`` of the course module), read without importing the course
    module, whose package imports torch and BBRL: 1.7 CPU-seconds in every grading's driver,
    which writes this report after each run."""
    import importlib.util

    folder = Path(importlib.util.find_spec("bbrl_course").submodule_search_locations[0])
    return json.loads((folder / "learning_reference.json").read_text())


def learning_returns(a: Assignment) -> str:
    ref = learning_reference()
    fig, ax = _figure(height=2.6)
    values = sorted((v, s) for s, v in a.learning.items() if v is not None)
    ax.axvspan(ref["best"]["low"], ref["best"]["high"], color="tab:green", alpha=0.18,
               label=f"reference TD3, {ref['seeds']} seeds")
    if a.threshold is not None:
        ax.axvline(a.threshold, color="tab:red", label=f"threshold ({a.threshold:,.0f})")
    ax.axvline(ref["random"], color="0.5", ls=":", label=f"random actions ({ref['random']:,.0f})")
    ys = [(i % 5) * 0.2 for i in range(len(values))]
    ax.scatter([v for v, _ in values], ys, color="tab:blue", zorder=3, label="students")
    ax.set_yticks([])
    ax.set_ylim(-0.3, 1.1)
    ax.set_xlabel("best evaluation return, measured by the grader")
    ax.legend(fontsize=7, loc="upper left")
    fig.tight_layout()
    return _png(fig)


def grading_times(a: Assignment) -> str:
    fig, ax = _figure(height=2.6)
    ax.hist(list(a.seconds.values()), bins=20, color="tab:purple", edgecolor="white")
    ax.set_xlabel("seconds to grade one submission (on a worker)")
    ax.set_ylabel("submissions")
    ax.yaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return _png(fig)


# --- the page
def _e(text) -> str:
    """Text a student's code may have written, shown as text: escaped, control characters visible."""
    return html.escape(inert.text(text), quote=True)


def _names(students: list[str], most: int = 30) -> str:
    shown = ", ".join(_e(s) for s in sorted(students)[:most])
    return shown + (f" and {len(students) - most} more" if len(students) > most else "")


def _img(data: str, alt: str) -> str:
    return f'<img src="data:image/png;base64,{data}" alt="{_e(alt)}">'


def section(a: Assignment) -> str:
    graded = len(a.totals)
    parts = [f'<section id="{_e(a.name)}"><h2>{_e(a.name)}</h2>']
    mean = sum(a.totals.values()) / graded if graded else 0
    parts.append(f"<p>{graded} graded of {len(a.rows)} students"
                 + (f"; mean {mean:.1f} of {a.total_max:g} points" if graded else "") + ".</p>")
    if graded:
        parts.append(_img(histogram_of_scores(a), f"{a.name}: histogram of scores"))
        parts.append("<h3>Pass rate of each test</h3>")
        parts.append(_img(pass_rates(a), f"{a.name}: pass rate of each test"))
    parts.append("<h3>Most frequent failures</h3>")
    failing = [t for t in a.tests if t.failed]
    if not failing:
        parts.append("<p>No test failed.</p>")
    for test in failing:
        kinds: dict[str, list[tuple[str, list[str]]]] = defaultdict(list)
        for message, students in test.messages.items():
            kinds[_key(message)].append((message, students))
        ranked = sorted(kinds.values(), key=lambda group: -sum(len(s) for _, s in group))
        parts.append(f"<h4>{_e(test.name)} <small>({len(test.failed)} of {len(test.failed) + len(test.passed)} "
                     f"fail; {test.points:g} points)</small></h4><table><tr><th>students</th><th>message</th>"
                     "<th>who</th></tr>")
        for group in ranked[:TOP_MESSAGES]:
            students = [s for _, names in group for s in names]
            parts.append(f"<tr><td class=n>{len(students)}</td><td>{_e(group[0][0])}</td>"
                         f"<td>{_names(students)}</td></tr>")
        if len(ranked) > TOP_MESSAGES:
            rest = sum(len(s) for group in ranked[TOP_MESSAGES:] for _, s in group)
            parts.append(f"<tr><td class=n>{rest}</td><td colspan=2>{len(ranked) - TOP_MESSAGES} other messages"
                         "</td></tr>")
        parts.append("</table>")
    if a.learning:
        below = sorted(s for s, v in a.learning.items() if v is None or a.threshold is None or v <= a.threshold)
        parts.append("<h3>The learning test: best returns across the class</h3>")
        parts.append(_img(learning_returns(a), f"{a.name}: best returns of the learning test"))
        parts.append(f"<p>{len(a.learning)} TD3s trained; at or below the threshold: {_names(below) or 'none'}.</p>")
    if a.attribution:
        by = defaultdict(list)
        for student, name in a.attribution.items():
            by[name].append(student)
        found = [f"the course's <code>{_e(name)}</code> restores learning for {len(who)} ({_names(sorted(who))})"
                 for name, who in sorted(by.items(), key=lambda item: (-len(item[1]), item[0])) if name]
        if by.get(""):
            found.append(f"no single swap for {len(by[''])} ({_names(sorted(by['']))})")
        parts.append(f"<p>Which function stops them (the learning test trained again with one of the student's "
                     f"functions replaced by the course's at a time): of the {len(a.attribution)} whose learning "
                     f"test failed, {'; '.join(found)}.</p>")
    penalised = [r for r in a.rows if r.get("status") == "graded" and float(r.get("late_penalty") or 0) > 0]
    if any("late_penalty" in r for r in a.rows):
        parts.append("<h3>Late hand-ins</h3>")
        if not penalised:
            parts.append("<p>No hand-in was late (deadlines.toml).</p>")
        else:
            parts.append("<table><tr><th>student</th><th>handed in</th><th>days late</th><th>penalty</th>"
                         "<th>before</th><th>total</th></tr>")
            for r in sorted(penalised, key=lambda r: r["student"]):
                parts.append(f"<tr><td>{_e(r['student'])}</td><td>{_e(r['handed_in'])}</td>"
                             f"<td class=n>{_e(r['days_late'])}</td><td class=n>-{_e(r['late_penalty'])}</td>"
                             f"<td class=n>{_e(r['before_penalty'])}</td><td class=n>{_e(r['total'])}</td></tr>")
            parts.append("</table>")
    parts.append("<h3>Statuses</h3>")
    if a.statuses:
        parts.append("<table><tr><th>status</th><th>students</th><th>who</th></tr>")
        for status, students in sorted(a.statuses.items(), key=lambda item: -len(item[1])):
            parts.append(f"<tr><td>{_e(status)}</td><td class=n>{len(students)}</td><td>{_names(students)}</td></tr>")
        parts.append("</table><p class=hint>Each student's notes are in the CSV's notes column and in "
                     "logs/&lt;student&gt;-&lt;assignment&gt;.log.</p>")
    else:
        parts.append("<p>Every submission was graded, with nothing to report.</p>")
    if a.seconds:
        times = sorted(a.seconds.values())
        slowest = sorted(a.seconds, key=a.seconds.get, reverse=True)[:5]
        parts.append("<h3>Grading time</h3>")
        parts.append(_img(grading_times(a), f"{a.name}: grading time per submission"))
        parts.append(f"<p>Median {times[len(times) // 2]:.0f} s, longest {times[-1]:.0f} s per submission "
                     f"(slowest: {', '.join(f'{_e(s)} {a.seconds[s]:.0f} s' for s in slowest)}).</p>")
    parts.append("</section>")
    return "\n".join(parts)


STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1000px; margin: 2em auto; padding: 0 1em; color: #222; }
h2 { border-bottom: 2px solid #ddd; margin-top: 2em; }
h4 small, .hint { color: #666; font-weight: normal; }
table { border-collapse: collapse; margin: 0.5em 0 1em; font-size: 0.9em; }
td, th { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
td.n { text-align: right; }
img { max-width: 100%; display: block; margin: 0.5em 0; }
nav a { margin-right: 1em; }
"""


def audit_table(path: Path = AUDIT_BASELINE) -> dict[tuple[str, str], dict[str, int]]:
    """{(assignment, function): counts} from the audit's baseline (mutant ids are
    ``assignment:function:rule:digest``); empty when there is none or it cannot be read."""
    try:
        outcomes = json.loads(path.read_text())["outcomes"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    table: dict[tuple[str, str], dict[str, int]] = {}
    for mutant, status in sorted(outcomes.items()):
        assignment, function = (mutant.split(":") + ["?"])[:2]
        line = table.setdefault((assignment, function), dict.fromkeys(AUDIT_COLUMNS, 0))
        line["mutants"] += 1
        line["caught"] += status in ("caught-visible", "caught-hidden")
        line["caught by the visible tests"] += status == "caught-visible"
        line["equivalent"] += status == "equivalent"
        line["surviving"] += status == "survived"
    return table


def audit_section(names: list[str], path: Path = AUDIT_BASELINE) -> str:
    """For the instructor: what the course's tests catch, per function a student writes."""
    table = {key: line for key, line in audit_table(path).items() if key[0] in names}
    parts = ['<section id="audit"><h2>What the tests catch (for the instructor)</h2>']
    if not table:
        parts.append("<p>No mutation audit is recorded: <code>make audit</code>, then "
                     "<code>python -m autograder audit --write-baseline</code>, records one.</p></section>")
        return "\n".join(parts)
    parts.append("<p class=hint>The mutation audit (<code>make audit</code>) grades small changes of the "
                 "solutions (a sign flipped, an index swapped, a term dropped, ...) with the tests. Caught by the "
                 "visible tests: what a student sees before handing in. Equivalent: the same behaviour as the "
                 "solution. Surviving: a plausible bug that no test catches. From "
                 "<code>autograder/audit/baseline.json</code>, the last full audit.</p>")
    parts.append("<table><tr><th>notebook</th><th>function</th>"
                 + "".join(f"<th>{_e(c)}</th>" for c in AUDIT_COLUMNS) + "</tr>")
    for (assignment, function), line in table.items():
        parts.append(f"<tr><td>{_e(assignment)}</td><td><code>{_e(function)}</code></td>"
                     + "".join(f"<td class=n>{line[c]}</td>" for c in AUDIT_COLUMNS) + "</tr>")
    parts.append("</table></section>")
    return "\n".join(parts)


def write(root: Path, assignments: list[str]) -> Path | None:
    """Writes grades/report.html for the assignments graded in ``root``; None if none was."""
    found = [a for a in (collect(root, name) for name in assignments) if a is not None]
    if not found:
        return None
    nav = " ".join(f'<a href="#{_e(a.name)}">{_e(a.name)}</a>' for a in found) + ' <a href="#audit">the tests</a>'
    page = (f"<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>{inert.CSP_META}<title>Class report</title>"
            f"<style>{STYLE}</style></head><body><h1>Class report</h1>"
            f"<p class=hint>From {_e(root.name)}/grades/ and autograded/; regenerate with "
            f"<code>make report</code>.</p><nav>{nav}</nav>\n"
            + "\n".join(section(a) for a in found) + "\n" + audit_section([a.name for a in found])
            + "\n</body></html>\n")
    path = root / "grades" / REPORT
    path.write_text(page)
    return path
