"""Grades the class: every submission in nbgrader's layout, or one student's.

    python -m autograder grade [--student ID] [--assignment NAME] [--root DIR] [--jobs N]

Submissions are read from ``DIR/submitted/<student>/<assignment>/<assignment>.ipynb``
(``DIR`` is autograder/ by default). Each one is checked first (missing, misnamed,
not a notebook), then autograded by nbgrader with the course's configuration
(cells over their time limit or that kill the kernel score 0 and grading goes
on), and its feedback written to ``DIR/feedback/<student>/<assignment>/``.

Prints a table of students by tests per assignment and writes
``DIR/grades/<assignment>.csv`` (a column per test, the status and the notes)
and ``DIR/grades/summary.csv``. A problem with one submission is reported on
its row, with its reason, and never stops the others.
"""

from __future__ import annotations

import csv
import difflib
import json
import os
import shlex
import sys
import textwrap
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
from tqdm import tqdm

from autograder import course, feedback, sandbox
from autograder.preprocessors import KERNEL_DIED, TIME_LIMIT

#: statuses of a submission
GRADED = "graded"  # autograded (notes may say what went wrong in some cells)
MISSING = "missing"  # no notebook
MISNAMED = "misnamed"  # a notebook under another name
UNREADABLE = "unreadable"  # not a valid notebook
FAILED = "failed"  # nbgrader could not grade it (the reason is in the notes)


@dataclass
class Result:
    student: str
    assignment: str
    status: str
    scores: dict[str, float | None] = field(default_factory=dict)  # test -> points (None: manual)
    max_scores: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0
    manual: list[str] = field(default_factory=list)  # answers graded by hand (not in the totals)

    @property
    def auto_score(self) -> float | None:
        """The points of the autograded tests."""
        if self.status != GRADED:
            return None
        return sum(v for k, v in self.scores.items() if k not in self.manual and v is not None)

    @property
    def auto_max(self) -> float | None:
        if self.status != GRADED:
            return None
        return sum(m for k, m in self.max_scores.items() if k not in self.manual)

    @property
    def hand_score(self) -> float | None:
        """The points of the answers graded by hand so far."""
        if self.status != GRADED:
            return None
        return sum(v for k, v in self.scores.items() if k in self.manual and v is not None)

    @property
    def to_grade(self) -> list[str]:
        """The cells that wait for a grade by hand (formgrader)."""
        return [k for k, v in self.scores.items() if v is None]

    @property
    def total(self) -> float | None:
        """Every point given so far: autograded, and graded by hand."""
        if self.status != GRADED:
            return None
        return sum(v for v in self.scores.values() if v is not None)

    @property
    def total_max(self) -> float | None:
        return None if self.status != GRADED else sum(self.max_scores.values())


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def check_submission(root: Path, student: str, assignment: str) -> Result | None:
    """A Result for a submission that cannot be graded (missing, misnamed, unreadable), or None."""
    folder = root / "submitted" / student / assignment
    expected = folder / f"{assignment}.ipynb"
    where = _relative(folder, root)
    if not expected.exists():
        others = sorted(p.name for p in folder.glob("*.ipynb")) if folder.is_dir() else []
        if others:
            return Result(student, assignment, MISNAMED, notes=[
                f"{where} holds {', '.join(others)} but no {expected.name}: rename the student's notebook "
                f"to {expected.name} and grade again"
            ])
        return Result(student, assignment, MISSING, notes=[f"no {expected.name} in {where}"])
    try:
        notebook = nbformat.read(str(expected), as_version=4)
        nbformat.validate(notebook)
    except Exception as error:  # invalid JSON, or JSON that is not a notebook
        reason = str(error).splitlines()[0][:200]
        return Result(student, assignment, UNREADABLE, notes=[
            f"{_relative(expected, root)} is not a valid notebook ({type(error).__name__}: {reason}); "
            "ask the student for the file again, or repair it, and grade again"
        ])
    return None


def _cell_label(cell, index: int) -> str:
    grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
    return grade_id or f"cell {index + 1}"


def changed_cells(root: Path, student: str, assignment: str) -> list[str]:
    """Notes on the test and locked cells the student deleted or edited (nbgrader grades
    with the release's version of each)."""
    release = nbformat.read(str(root / "release" / assignment / f"{assignment}.ipynb"), as_version=4)
    submitted = nbformat.read(str(root / "submitted" / student / assignment / f"{assignment}.ipynb"), as_version=4)
    theirs = {}
    for cell in submitted.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id:
            theirs.setdefault(grade_id, cell)
    notes = []
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader", {})
        is_test = meta.get("grade") and not meta.get("solution")
        if not (is_test or meta.get("locked")):
            continue
        kind = "test cell" if is_test else "locked cell"
        mine = theirs.get(meta["grade_id"])
        if mine is None:
            if is_test:
                notes.append(f"{kind} {meta['grade_id']} was deleted (or lost its nbgrader metadata): put back and run")
        elif mine.source.strip() != cell.source.strip():
            notes.append(f"{kind} {meta['grade_id']} was edited: graded with the release's version")
    return notes


def execution_notes(notebook) -> list[str]:
    """Notes on the cells that ran over time, killed the kernel, or raised outside the tests."""
    notes = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        is_test = meta.get("grade") and not meta.get("solution")
        for output in cell.get("outputs", []):
            if output.get("output_type") != "error":
                continue
            label = _cell_label(cell, index)
            if output.ename in (TIME_LIMIT, KERNEL_DIED):
                notes.append(f"{label}: {output.evalue}")
            elif not is_test and output.ename not in ("NotImplementedError",):
                notes.append(f"{label} raised {output.ename}: {str(output.evalue)[:160]}")
    return notes


def _grades(root: Path, api, student: str, assignment: str) -> tuple[dict, dict, list]:
    """The points of each graded cell, in the notebook's order, from the gradebook."""
    from nbgrader.api import Gradebook

    release = nbformat.read(str(root / "release" / assignment / f"{assignment}.ipynb"), as_version=4)
    order = [c.metadata.get("nbgrader", {}).get("grade_id") for c in release.cells]
    manual = [
        c.metadata["nbgrader"]["grade_id"] for c in release.cells
        if c.metadata.get("nbgrader", {}).get("grade") and c.metadata["nbgrader"].get("solution")
    ]
    scores, max_scores = {}, {}
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        submission = gradebook.find_submission_notebook(assignment, assignment, student)
        grades = sorted(submission.grades, key=lambda g: order.index(g.name) if g.name in order else len(order))
        for grade in grades:
            scores[grade.name] = None if grade.needs_manual_grade else float(grade.score)
            max_scores[grade.name] = float(grade.max_score)
    return scores, max_scores, manual


def _solution_sources(path: Path) -> dict[str, str]:
    """{grade_id: source} of the cells a student writes (solutions and answers), or {}."""
    if not path.exists():
        return {}
    try:
        notebook = nbformat.read(str(path), as_version=4)
    except Exception:
        return {}
    return {
        cell.metadata["nbgrader"]["grade_id"]: cell.source.strip()
        for cell in notebook.cells
        if cell.metadata.get("nbgrader", {}).get("solution") and cell.metadata["nbgrader"].get("grade_id")
    }


def keep_hand_grades(root: Path, api, student: str, assignment: str, before: dict[str, str]) -> list[str]:
    """After autograding again: the grades given by hand (formgrader) stay final where the
    student's work they judged did not change; nbgrader alone flags them all for review.

    ``before`` holds the student's cells as graded by hand (the previous autograded
    notebook). An answer keeps its grade if its cell is unchanged; a test cell whose
    score the instructor overrode keeps it if none of the student's cells changed.
    Returns notes on the hand grades that must be given again.
    """
    from nbgrader.api import Gradebook

    now = _solution_sources(root / "submitted" / student / assignment / f"{assignment}.ipynb")
    notes = []
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        submission = gradebook.find_submission_notebook(assignment, assignment, student)
        for grade in submission.grades:
            if grade.manual_score is None:
                continue
            same = before.get(grade.name) == now.get(grade.name) if grade.name in now else before == now
            if before and same:
                grade.needs_manual_grade = False
            else:
                notes.append(f"{grade.name} was graded by hand ({grade.manual_score:g}) but the student's work "
                             "changed since: grade it again in formgrader")
        gradebook.db.commit()
    return notes


#: the note on every row graded without a sandbox
TRUSTED_NOTE = "graded without a sandbox (--trusted): the student's code ran with the grader's rights"


def grade_one(root: Path, student: str, assignment: str, limits: sandbox.Limits | None = sandbox.Limits()) -> Result:
    """Autogrades one submission and writes its feedback; never raises for a bad submission.

    The student's kernel runs in the sandbox with ``limits``; None grades it without one."""
    start = time.perf_counter()
    problem = check_submission(root, student, assignment)
    if problem is not None:
        return problem
    api = course.api(root, sandbox=limits)
    notes = changed_cells(root, student, assignment) + ([TRUSTED_NOTE] if limits is None else [])
    autograded = root / "autograded" / student / assignment / f"{assignment}.ipynb"
    graded_before = _solution_sources(autograded)  # what any hand grade was given on
    outcome = api.autograde(assignment, student, force=True, create=True)
    if not outcome.get("success"):
        log = (outcome.get("log", "") + outcome.get("error", "")).strip().splitlines()
        errors = [line for line in log if line.startswith("[ERROR]") or "Error" in line]
        reason = (errors[-1] if errors else (log[-1] if log else "no log"))[:300]
        return Result(student, assignment, FAILED, notes=notes + [
            f"nbgrader could not grade it: {reason} (autograded notebook removed; the gradebook has no score "
            "for it). Fix the submission's notebook by hand or grade it manually."
        ], seconds=time.perf_counter() - start)
    graded = nbformat.read(str(autograded), as_version=4)
    notes += execution_notes(graded)
    notes += keep_hand_grades(root, api, student, assignment, graded_before)
    scores, max_scores, manual = _grades(root, api, student, assignment)
    notes += feedback.clean_autograded(root, student, assignment)
    generated = api.generate_feedback(assignment, student, force=True)
    if not generated.get("success"):
        notes.append(f"feedback not written: {generated.get('error', '')[-300:]}")
    return Result(student, assignment, GRADED, scores, max_scores, notes, time.perf_counter() - start, manual)


def _grade_job(job) -> dict:
    """One submission, in a worker process whose output (nbgrader's log, the kernel's
    messages) goes to logs/<student>-<assignment>.log under the course folder."""
    root, student, assignment, limits = job
    logs = Path(root) / "logs"
    logs.mkdir(exist_ok=True)
    log = open(logs / f"{student}-{assignment}.log", "w")
    sys.stdout.flush()
    sys.stderr.flush()
    os.dup2(log.fileno(), 1)
    os.dup2(log.fileno(), 2)
    try:
        return asdict(grade_one(Path(root), student, assignment, limits))
    except Exception as error:  # the grader's own failure: reported, the class goes on
        return asdict(Result(student, assignment, FAILED, notes=[f"the grader failed: {type(error).__name__}: {error}"]))


def students(root: Path) -> list[str]:
    submitted = root / "submitted"
    if not submitted.is_dir():
        raise course.CourseError(
            f"{submitted} does not exist: put the submissions in {submitted}/<student>/<assignment>/"
        )
    return sorted(p.name for p in submitted.iterdir() if p.is_dir() and not p.name.startswith("."))


def _some(names: list[str], most: int = 12) -> str:
    shown = ", ".join(names[:most])
    return shown + (f" and {len(names) - most} more" if len(names) > most else "")


def course_root(path: str | Path) -> Path:
    """The course folder an instructor typed (relative, with ~, with spaces), as an absolute path."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise course.CourseError(
            f"no course folder {path} ({root} does not exist): give --root the folder that holds submitted/"
        )
    return root


def ensure_released(root: Path, assignments: list[str]) -> None:
    """The assignments in the gradebook (generated from solutions/ if they are not yet), and
    the course folder's nbgrader_config.py, so that nbgrader's own commands run there
    (formgrader, nbgrader generate_feedback) use the course's configuration."""
    from nbgrader.api import Gradebook, MissingEntry

    course.write_course_config(root)
    api = course.api(root)
    with Gradebook(api.coursedir.db_url, api.coursedir.course_id) as gradebook:
        known = set()
        for name in assignments:
            try:
                gradebook.find_assignment(name)
                known.add(name)
            except MissingEntry:
                pass
    if set(assignments) - known or not (root / "release").is_dir():
        course.prepare_source(root)
        for name in assignments:
            course._check(api.generate_assignment(name, force=True, create=True), f"nbgrader generate_assignment {name}")


def grade(root: Path = course.AUTOGRADER, student: str | None = None, assignment: str | None = None,
          jobs: int = 2, log=print, progress: bool = False, limits: sandbox.Limits | None = sandbox.Limits()) -> list[Result]:
    """Grades the submissions (all, or one student's, or one assignment's); returns the results.

    Submissions that cannot be graded (missing, misnamed, unreadable) are found here at
    once; the others are graded in worker processes. ``progress`` shows a bar (counts, ETA).
    Students' kernels run in the sandbox with ``limits`` (None: without a sandbox, and
    every row says so); a machine where no sandbox can start is a CourseError.
    """
    root = course_root(root)
    if limits is not None:
        try:
            sandbox.check_available()
        except sandbox.SandboxUnavailable as error:
            raise course.CourseError(str(error)) from None
    names = course.assignments()
    if assignment is not None and assignment not in names:
        raise course.CourseError(f"no assignment {assignment!r}: the assignments are {', '.join(names)}")
    who = students(root)
    if student is not None:
        if student not in who:
            close = difflib.get_close_matches(student, who, n=3)
            hint = f"did you mean {' or '.join(close)}? " if close else ""
            raise course.CourseError(
                f"no folder {_shown(root / 'submitted' / student)}: {hint}"
                f"the {len(who)} students are {_some(who) or 'none'}"
            )
        who = [student]
    chosen = [assignment] if assignment else names
    ensure_released(root, chosen)
    results, job_list = [], []
    for s in who:
        for a in chosen:
            problem = check_submission(root, s, a)
            if problem is None:
                job_list.append((str(root), s, a, limits))
            else:
                results.append(problem)
    log(f"grading {len(job_list)} submissions of {len(who)} students ({', '.join(chosen)}) on {jobs} workers"
        + (f"; {len(results)} cannot be graded (missing, misnamed or unreadable)" if results else ""))
    bar = tqdm(total=len(job_list), unit="submission", disable=not progress or not job_list, file=sys.stderr)
    # a fresh process per submission: nothing of one student's grading leaks into another's
    with ProcessPoolExecutor(max(1, jobs), max_tasks_per_child=1) as pool, bar:
        for data in pool.map(_grade_job, job_list):
            result = Result(**data)
            results.append(result)
            score = "" if result.auto_score is None else f"{result.auto_score:g}/{result.auto_max:g}"
            line = f"  {result.student:24} {result.assignment:13} {result.status:10} {score:>8}  {result.seconds:5.0f} s"
            bar.write(line, file=sys.stdout) if progress else log(line)
            bar.update()
    write_reports(root, results)
    return results


def _short(test: str) -> str:
    return test.removeprefix("test_").removeprefix("answer_")


#: how the table and the CSVs show a cell that waits for a grade by hand
TO_GRADE = "to grade"


def table(results: list[Result], assignment: str) -> str:
    """A text table: one row per student who handed something in, one column per test of
    the assignment; the students with nothing handed in on one line."""
    rows = [r for r in results if r.assignment == assignment and r.status != MISSING]
    missing = sorted(r.student for r in results if r.assignment == assignment and r.status == MISSING)
    tests = []
    for r in rows:
        for test in r.max_scores:
            if test not in tests:
                tests.append(test)
    maxima = {t: next(r.max_scores[t] for r in rows if t in r.max_scores) for t in tests}
    width = max([len("student")] + [len(r.student) for r in rows])
    header = f"{'student':{width}}  {'status':10} {'points':>7}  " + " ".join(f"T{i + 1:<3}" for i in range(len(tests)))
    lines = [f"{assignment}", header, "-" * len(header)]
    for r in rows:
        cells = []
        for test in tests:
            value = r.scores.get(test, "")
            cells.append("  - " if r.status != GRADED else ("hand" if value is None else f"{value:<4g}"))
        score = "" if r.total is None else f"{r.total:g}/{r.total_max:g}"
        lines.append(f"{r.student:{width}}  {r.status:10} {score:>7}  " + " ".join(cells))
    if not rows:
        lines.append("(no submission)")
    legend = ", ".join(f"T{i + 1} {_short(t)} ({maxima[t]:g})" for i, t in enumerate(tests))
    if legend:
        lines += textwrap.wrap(f"tests: {legend}; hand: {TO_GRADE} by hand (make formgrader)", WIDTH,
                               subsequent_indent="  ", break_on_hyphens=False)
    if missing:
        lines += textwrap.wrap(f"missing ({len(missing)}): {_some(missing)}", WIDTH, subsequent_indent="  ", break_on_hyphens=False)
    for r in rows:
        for note in r.notes:
            lines += textwrap.wrap(f"{r.student}: {note}", WIDTH, initial_indent="  ", subsequent_indent="      ", break_on_hyphens=False)
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
    out = root / "grades"
    out.mkdir(exist_ok=True)
    written = []
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
                tests += [t for t in reader.fieldnames or [] if t not in tests and t not in CSV_COLUMNS]
        columns = [*CSV_COLUMNS[:-1], *tests, CSV_COLUMNS[-1]]
        for r in rows:
            graded = r.status == GRADED
            previous[r.student] = {
                "student": r.student,
                "status": r.status,
                "autograded": _points(r.auto_score),
                "autograded_max": _points(r.auto_max),
                "by_hand": _points(r.hand_score),
                "to_grade": str(len(r.to_grade)) if graded else "",
                "total": _points(r.total),
                "total_max": _points(r.total_max),
                **{t: (TO_GRADE if r.scores.get(t, 0) is None else _points(r.scores.get(t))) if graded else "" for t in tests},
                "notes": " | ".join(r.notes),
            }
        with path.open("w", newline="") as f:
            writer = csv.DictWriter(f, columns, extrasaction="ignore")
            writer.writeheader()
            for name in sorted(previous):
                writer.writerow(previous[name])
        written.append(path)
    summary = out / "summary.csv"
    totals = {}
    for path in sorted(out.glob("*.csv")):
        if path == summary:
            continue
        with path.open(newline="") as f:
            for row in csv.DictReader(f):
                student = totals.setdefault(row["student"], {"to_grade": 0})
                student[path.stem] = row["total"] if row["status"] == GRADED else row["status"]
                student["to_grade"] += int(row.get("to_grade") or 0)
    with summary.open("w", newline="") as f:
        stems = sorted(p.stem for p in out.glob("*.csv") if p != summary)
        writer = csv.writer(f)
        writer.writerow(["student", *stems, "to_grade"])
        for student in sorted(totals):
            writer.writerow([student, *(totals[student].get(s, "") for s in stems), totals[student]["to_grade"]])
    written.append(summary)
    return written


#: the columns of grades/<assignment>.csv around the tests' (which come before notes)
CSV_COLUMNS = ["student", "status", "autograded", "autograded_max", "by_hand", "to_grade", "total", "total_max", "notes"]


def _shown(path: Path) -> str:
    """A path as the instructor typed it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m autograder grade", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student")
    parser.add_argument("--assignment")
    parser.add_argument("--root", default=str(course.AUTOGRADER), help="the course folder (autograder/)")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), help="submissions graded at once")
    parser.add_argument("--json", type=Path, help="also write the results to this JSON file")
    parser.add_argument("--trusted", action="store_true",
                        help="grade WITHOUT a sandbox: only for code you trust (every row says so)")
    parser.add_argument("--memory", type=float, default=sandbox.Limits.memory / sandbox.GB,
                        help="the sandbox's memory limit, in GB (default %(default)g)")
    parser.add_argument("--cpu-seconds", type=int, default=sandbox.Limits.cpu_seconds,
                        help="CPU seconds of a submission's kernel (default %(default)s)")
    args = parser.parse_args(argv)
    limits = None if args.trusted else sandbox.Limits(memory=int(args.memory * sandbox.GB), cpu_seconds=args.cpu_seconds)
    try:
        root = course_root(args.root)
        results = grade(root, args.student, args.assignment, args.jobs, progress=True, limits=limits)
    except course.CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print()
    for assignment in sorted({r.assignment for r in results}):
        print(table(results, assignment))
        print()
    graded = [r for r in results if r.status == GRADED]
    waiting = sum(len(r.to_grade) for r in graded)
    print(f"grades:   {_shown(root / 'grades')}/ (a CSV per assignment, and summary.csv)")
    print(f"feedback: {_shown(root / 'feedback')}/<student>/<assignment>/")
    print(f"logs:     {_shown(root / 'logs')}/")
    if waiting:
        print(f"{waiting} answers of {len({r.student for r in graded})} students wait for a grade by hand: "
              f"make formgrader{'' if root == course.AUTOGRADER else ' ROOT=' + shlex.quote(_shown(root))}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0
