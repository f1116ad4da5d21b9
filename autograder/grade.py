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

This module distributes the work (one worker process per submission) and is the
command line; the grading of one submission is ``autograder/submission.py``'s, the
tables and CSVs ``autograder/reports.py``'s, the sandbox ``autograder/sandbox.py``'s.
"""

from __future__ import annotations

import difflib
import json
import os
import shlex
import sys
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from pathlib import Path

from tqdm import tqdm

from autograder import course, sandbox
from autograder.reports import _some, table, write_reports
from autograder.submission import FAILED, GRADED, Result, check_submission, grade_one


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
