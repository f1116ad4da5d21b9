"""What a grading run shows and writes: the table per assignment, grades/<assignment>.csv
and grades/summary.csv (the points given by hand included)."""

from __future__ import annotations

import csv
import textwrap
from pathlib import Path

from autograder.isolation import inert
from autograder.reporting.results import GRADED, MISSING, Result


def _some(names: list[str], most: int = 12) -> str:
    """At most ``most`` names, then how many more."""
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def _short(test: str) -> str:
    return test.removeprefix("test_").removeprefix("answer_")


#: how the table and the CSVs show a cell that waits for a grade by hand
TO_GRADE = "to grade"


def table(results: list[Result], assignment: str) -> str:
    """A text table: one row per student who handed something in, one column per test of
    the assignment; the students with nothing handed in on one line."""
    rows = [r for r in results if r.assignment == assignment and r.status != MISSING]
    missing = sorted(inert.text(r.student) for r in results if r.assignment == assignment and r.status == MISSING)
    tests = []
    for r in rows:
        for test in r.max_scores:
            if test not in tests:
                tests.append(test)
    maxima = {t: next(r.max_scores[t] for r in rows if t in r.max_scores) for t in tests}
    width = max([len("student")] + [len(inert.text(r.student)) for r in rows])
    lead = width + 2 + 11 + 7 + 2
    # a column of 3 characters per test; the tests that do not fit in WIDTH go in another block
    per_block = max(1, (WIDTH - lead + 1) // 4)
    blocks = [range(start, min(start + per_block, len(tests))) for start in range(0, len(tests), per_block)] or [range(0)]
    lines = [f"{assignment}"]
    for block in blocks:
        header = f"{'student':{width}}  {'status':10} {'points':>7}  " + " ".join(f"T{i + 1:<2}" for i in block)
        lines += [header.rstrip(), "-" * len(header.rstrip())]
        for r in rows:
            cells = []
            for test in (tests[i] for i in block):
                value = r.scores.get(test, "")
                cells.append("-  " if r.status != GRADED else ("h  " if value is None else f"{value:<3g}"))
            score = "" if r.total is None else f"{r.total:g}/{r.total_max:g}"
            lines.append((f"{inert.text(r.student):{width}}  {inert.text(r.status):10} {score:>7}  "
                          + " ".join(cells)).rstrip())
    if not rows:
        lines.append("(no submission)")
    legend = ", ".join(f"T{i + 1} {_short(t)} ({maxima[t]:g})" for i, t in enumerate(tests))
    if legend:
        lines += textwrap.wrap(f"tests: {legend}; h: {TO_GRADE} by hand (make formgrader)", WIDTH,
                               subsequent_indent="  ", break_on_hyphens=False)
    if missing:
        lines += textwrap.wrap(f"missing ({len(missing)}): {_some(missing)}", WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    for r in rows:
        for note in r.notes:
            lines += textwrap.wrap(inert.text(f"{r.student}: {note}"), WIDTH, initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
    return "\n".join(lines)


#: the width of the printed tables (a terminal's)
WIDTH = 110


def _points(value: float | None) -> str:
    return "" if value is None else f"{value:g}"


def write_reports(root: Path, results: list[Result]) -> list[Path]:
    """grades/<assignment>.csv (a column per test) and grades/summary.csv, under root.

    A row's points are the autograded ones, those given by hand so far (formgrader), and
    their total; a cell still waiting for a grade by hand says so.
    """
    from autograder.reporting import late

    out = root / "grades"
    out.mkdir(exist_ok=True)
    written = []
    policies = late.policies(root)  # {} without ROOT/deadlines.toml: nothing below changes
    for assignment in sorted({r.assignment for r in results}):
        rows = sorted((r for r in results if r.assignment == assignment), key=lambda r: r.student)
        tests = []
        for r in rows:
            tests += [t for t in r.max_scores if t not in tests]
        path = out / f"{assignment}.csv"
        # merge with the rows of students not graded this time (grading one student)
        previous = {}
        if path.exists():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                previous = {row["student"]: row for row in reader}
                tests += [t for t in reader.fieldnames or [] if t not in tests and t not in CSV_COLUMNS
                          and t not in late.CSV_COLUMNS]
        policy = policies.get(assignment)
        extra = list(late.CSV_COLUMNS) if policy else []
        columns = [*CSV_COLUMNS[:-1], *extra, *tests, CSV_COLUMNS[-1]]
        times = late.handed_in(root, assignment) if policy else {}
        for r in rows:
            graded = r.status == GRADED
            # text that reaches a spreadsheet: inert, and never a formula (autograder/isolation/inert.py)
            previous[inert.csv_cell(r.student)] = {
                "student": inert.csv_cell(r.student),
                "status": inert.csv_cell(r.status),
                "autograded": _points(r.auto_score),
                "autograded_max": _points(r.auto_max),
                "by_hand": _points(r.hand_score),
                "to_grade": str(len(r.to_grade)) if graded else "",
                "total": _points(r.total),
                "total_max": _points(r.total_max),
                **{t: (TO_GRADE if r.scores.get(t, 0) is None else _points(r.scores.get(t))) if graded else "" for t in tests},
                "notes": inert.csv_cell(" | ".join(r.notes)),
            }
            if policy and graded:  # the total after the late penalty, and the feedback says it
                lateness = late.lateness(policy, r.student, times.get(r.student))
                late.apply(previous[inert.csv_cell(r.student)], lateness)
                late.mark_feedback(root / "feedback" / r.student / assignment / f"{assignment}.html",
                                   lateness.note(r.total, r.total_max))
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            for name in sorted(previous):
                writer.writerow(previous[name])
        written.append(path)
    summary = out / "summary.csv"
    totals = {}
    for path in _assignment_csvs(out):
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                student = totals.setdefault(row["student"], {"to_grade": 0})
                student[path.stem] = row["total"] if row["status"] == GRADED else row["status"]
                student["to_grade"] += int(row.get("to_grade") or 0)
    with summary.open("w", newline="") as f:
        stems = sorted(p.stem for p in _assignment_csvs(out))
        writer = csv.writer(f)
        writer.writerow(["student", *stems, "to_grade"])
        for student in sorted(totals):
            writer.writerow([student, *(totals[student].get(s, "") for s in stems), totals[student]["to_grade"]])
    written.append(summary)
    return written


def _assignment_csvs(out: Path) -> list[Path]:
    """The grader's CSVs in grades/, one per assignment: not summary.csv, nor the other CSVs
    kept there (an LMS's grade file written by `python -m autograder export`, the audit's)."""
    found = []
    for path in sorted(out.glob("*.csv")):
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if path.name != "summary.csv" and header[:2] == CSV_COLUMNS[:2]:
            found.append(path)
    return found


#: the columns of grades/<assignment>.csv around the tests' (which come before notes)
CSV_COLUMNS = ["student", "status", "autograded", "autograded_max", "by_hand", "to_grade", "total", "total_max", "notes"]
