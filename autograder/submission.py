"""The grading of one submission: checked (missing, misnamed, unreadable), autograded by
nbgrader with the course's configuration (the student's kernel in the sandbox), its hand
grades kept, its feedback cleaned and written; the result as a ``Result``.

The distribution of the work is ``autograder/grade.py``'s; the sandbox is
``autograder/sandbox.py``'s; the tables and CSVs are ``autograder/reports.py``'s.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

from autograder import course, feedback, sandbox
from autograder.preprocessors import KERNEL_DIED, TAMPERING, TIME_LIMIT

REPOSITORY = Path(__file__).resolve().parent.parent

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


def run_judge(root: Path, student: str, assignment: str, limits: sandbox.Limits | None, verdicts: Path) -> str | None:
    """Runs the submission's tests in the judge (autograder/judge.py), apart from the
    student's code; writes their verdicts. Returns why it could not, or None."""
    source = root / "source" / assignment / f"{assignment}.ipynb"
    submission = root / "submitted" / student / assignment
    command = [sys.executable, "-m", "autograder.judge", str(source), str(submission), str(verdicts)]
    if limits is None:
        command.append("--trusted")
    else:
        command += ["--limits", json.dumps(dataclasses.asdict(limits))]
    env = dict(os.environ, NBGRADER_EXECUTION="autograde", MPLBACKEND="Agg")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=str(REPOSITORY))
    if done.returncode != 0 or not verdicts.exists():
        tail = (done.stderr.strip().splitlines() or ["no message"])[-1][:300]
        return (f"the judge could not run the tests ({tail}); the gradebook has no new score for it. "
                "Grade it again; if it fails again, report it with logs/ to the course's maintainers.")
    return None


def judge_notes(verdicts: dict) -> list[str]:
    """The notes on tests that scored 0 because tampering was seen while they ran: one per
    kind of tampering, with its tests."""
    concerned: dict[str, list[str]] = {}
    for name, verdict in verdicts.items():
        error = verdict.get("error") if not name.startswith("_") else None
        if error and error[0] == TAMPERING:
            what = error[1].removesuffix("; this test scores 0")
            concerned.setdefault(what, []).append(name)
    return [f"{what} ({', '.join(tests)} scored 0)" for what, tests in concerned.items()]


def grade_one(root: Path, student: str, assignment: str, limits: sandbox.Limits | None = sandbox.Limits()) -> Result:
    """Autogrades one submission and writes its feedback; never raises for a bad submission.

    The student's kernel runs in the sandbox with ``limits``; None grades it without one."""
    start = time.perf_counter()
    problem = check_submission(root, student, assignment)
    if problem is not None:
        return problem
    notes = changed_cells(root, student, assignment) + ([TRUSTED_NOTE] if limits is None else [])
    with tempfile.TemporaryDirectory(prefix="course-verdicts-") as scratch:
        verdicts_file = Path(scratch) / "verdicts.json"
        failure = run_judge(root, student, assignment, limits, verdicts_file)
        if failure is not None:
            return Result(student, assignment, FAILED, notes=notes + [failure], seconds=time.perf_counter() - start)
        verdicts = json.loads(verdicts_file.read_text())
        notes += judge_notes(verdicts)
        api = course.api(root, sandbox=limits, verdicts=verdicts_file)
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
