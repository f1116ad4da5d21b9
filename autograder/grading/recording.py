"""The driver's recording: what workers graded, written in the course folder in batches.

A worker grades a submission with nbgrader in a course folder of its own: its nbgrader
sanitizes the notebook (the release's metadata, the source's test cells), executes it and
scores it there. The driver then records the worker's autograded notebook: it scores its
outputs with nbgrader's own preprocessors (``SaveAutoGrades``, ``AssignLatePenalties``,
nothing executed again) and writes autograded/, feedback/ and the gradebook. It alone
writes them.

A batch (the results that came back together, at most ``BATCH``) is scored in **one
transaction** of the gradebook: nbgrader's preprocessors commit after each cell, which costs
SQLite a synchronous write each; here their commits only flush, and the batch commits once.
Only then are autograded/ and feedback/ written, and ``grades/.graded.json`` saved. A driver
killed before the commit leaves the gradebook as it was before the batch, and the next run
grades the batch again: no row is lost or doubled. (Killed between the commit and the state's
save, the batch's rows are in the gradebook and the next run grades it again, updating them
in place.) A result that cannot be read or scored fails alone (the batch is scored again one
result at a time); one whose files cannot be written after the commit fails alone too, with
the reason, and is graded again by the next run.
"""

from __future__ import annotations

import contextlib
import shutil
import warnings
from pathlib import Path

import nbformat

from autograder.course.config import api
from autograder.grading.submission import (
    TRUSTED_NOTE,
    _grades,
    _solution_sources,
    _write_tree,
    changed_cells,
    check_submission,
    check_tree,
    course_files,
    execution_notes,
    hand_given,
    keep_hand_grades,
    submission_files,
    work_in_folder,
)
from autograder.isolation import inert, sandbox
from autograder.reporting import feedback
from autograder.reporting.results import FAILED, GRADED, Result

#: results recorded in one transaction at most: a kill loses at most this many (graded again),
#: and the gradebook's write lock (which formgrader waits for, 5 s at most) is held about a second
BATCH = 25


#: indexes nbgrader's gradebook lacks: a submitted notebook's grades and comments (its
#: ``grades`` and ``comments``) are otherwise a scan of every student's
INDEXES = ("CREATE INDEX IF NOT EXISTS ix_course_grade_notebook ON grade (notebook_id)",
           "CREATE INDEX IF NOT EXISTS ix_course_comment_notebook ON comment (notebook_id)")


_ANALYZED: dict[str, int] = {}  # gradebook: its submitted notebooks when SQLite last counted them


def _tune(session, db_url: str) -> None:
    """The gradebook's indexes, and SQLite's statistics for its query planner (a sample of
    each index) each time the class recorded in it has doubled since they were made: without
    them, nbgrader's query for one grade reads the grades of that cell for every student, so
    recording slowed down as the class grew. Both are outside the batch's transaction (SQLite
    commits them at once): a few small writes per driver run."""
    from sqlalchemy import text

    notebooks = session.execute(text("SELECT count(*) FROM submitted_notebook")).scalar() or 0
    if db_url in _ANALYZED and notebooks < 2 * _ANALYZED[db_url] + 50:
        return
    for statement in INDEXES:
        session.execute(text(statement))
    session.execute(text("PRAGMA analysis_limit=400"))
    session.execute(text("ANALYZE"))
    session.commit()
    _ANALYZED[db_url] = notebooks


class _Flushing:
    """A session whose ``commit`` only flushes: nbgrader's gradebook methods and preprocessors
    commit after each change; the batch commits once, at its end."""

    def __init__(self, session):
        self._session = session
        self._deferred = False

    def commit(self):
        if not self._deferred:
            self._session.flush()

    @contextlib.contextmanager
    def deferred(self):
        """Commits do nothing at all (not even a flush) until the end of the block."""
        self._deferred = True
        try:
            yield
        finally:
            self._deferred = False

    def __getattr__(self, name):
        return getattr(self._session, name)


class _Scoring:
    """nbgrader's SaveAutoGrades and AssignLatePenalties (as the course configures them), on
    the batch's open gradebook instead of one of their own per notebook."""

    def __init__(self, gradebook, config):
        from nbgrader.preprocessors import AssignLatePenalties, SaveAutoGrades

        self.gradebook = gradebook
        self.save = SaveAutoGrades(config=config)
        self.late = AssignLatePenalties(config=config)
        self.late.init_plugin()

    def __call__(self, notebook, student: str, assignment: str) -> None:
        save, late = self.save, self.late
        for step in (save, late):
            step.gradebook = self.gradebook
            step.notebook_id = step.assignment_id = assignment
            step.student_id = student
        session = self.gradebook.db
        session.flush()  # the submission's rows, which the cells' queries find
        with session.no_autoflush, session.deferred():
            # SaveAutoGrades.preprocess, on this gradebook: each cell's grade and comment are
            # found by their own query and changed in place, flushed together at the end
            for index, cell in enumerate(notebook.cells):
                save.preprocess_cell(cell, {}, index)
        session.flush()
        # AssignLatePenalties.preprocess, on this gradebook
        submitted = self.gradebook.find_submission(assignment, student)
        graded = self.gradebook.find_submission_notebook(assignment, assignment, student)
        graded.late_submission_penalty = None
        if submitted.total_seconds_late > 0:
            penalty = late.plugin_inst.late_submission_penalty(student, graded.score, submitted.total_seconds_late)
            if penalty is not None:
                graded.late_submission_penalty = late._check_late_penalty(graded, penalty)


def _timestamp(files: dict[str, bytes]):
    """The submission's timestamp.txt (nbgrader's exchange writes one), parsed as nbgrader
    parses it; None without one (or with one nbgrader cannot read: the course's deadlines,
    ``reporting.late``, do not use it)."""
    from nbgrader.utils import parse_utc

    with contextlib.suppress(Exception):
        text = files.get("timestamp.txt", b"").decode().strip()
        return parse_utc(text) if text else None
    return None


def record(root: Path, student: str, assignment: str, outcome: dict, trusted: bool) -> Result:
    """One result recorded (``record_batch`` of one)."""
    return record_batch(root, [(student, assignment, outcome)], trusted)[0]


def record_batch(root: Path, batch: list[tuple[str, str, dict]], trusted: bool) -> list[Result]:
    """Records workers' outcomes in the course folder (gradebook, autograded/, feedback/), in
    one transaction of the gradebook; the results, in the batch's order."""
    try:
        return _record(root, batch, trusted)
    except Exception as error:  # nothing of the batch was written: each on its own
        if len(batch) == 1:
            student, assignment, outcome = batch[0]
            try:
                notes = _notes(root, student, assignment, outcome, trusted)
            except Exception:
                notes = list(outcome.get("notes", []))
            return [Result(student, assignment, FAILED, notes=notes + [
                f"nbgrader could not record it ({type(error).__name__}: {str(error)[:300]}): the gradebook has no "
                "new score for it; fix the submission's notebook by hand or grade it again"],
                seconds=outcome.get("seconds", 0.0))]
        return [result for item in batch for result in record_batch(root, [item], trusted)]


def _notes(root: Path, student: str, assignment: str, outcome: dict, trusted: bool, submitted=None) -> list[str]:
    return (changed_cells(root, student, assignment, submitted) + ([TRUSTED_NOTE] if trusted else [])
            + list(outcome["notes"]))


def _record(root: Path, batch: list[tuple[str, str, dict]], trusted: bool) -> list[Result]:
    """Reads and checks the batch, scores it in one transaction of the gradebook (an error
    before the commit raises, with nothing of the batch written), then writes autograded/
    and feedback/ (an error there fails that result alone)."""
    from nbgrader.api import Gradebook

    nbgrader = api(root)
    coursedir = nbgrader.coursedir
    results: list[Result | None] = []
    graded = []  # (index, student, assignment, outcome, notes, the student's notebook, the autograded one)
    befores = {}  # index: the student's cells as the last grading saw them (what any hand grade was given on)
    for student, assignment, outcome in batch:
        # the student's notebook, read once (checked readable before it was graded)
        submitted = nbformat.read(str(root / "submitted" / student / assignment / f"{assignment}.ipynb"), as_version=4)
        notes = _notes(root, student, assignment, outcome, trusted, submitted)
        if outcome["status"] != GRADED:
            results.append(Result(student, assignment, outcome["status"], notes=notes,
                                  seconds=outcome.get("seconds", 0.0)))
            continue
        # _write_tree checks too, but after the commit it would be too late to fail alone
        check_tree(root / "autograded" / student / assignment, outcome["files"])
        check_tree(root / "feedback" / student / assignment, outcome.get("feedback") or {})
        notebook = nbformat.reads(outcome["files"][f"{assignment}.ipynb"].decode(), as_version=4)
        befores[len(results)] = _solution_sources(root / "autograded" / student / assignment / f"{assignment}.ipynb")
        graded.append((len(results), student, assignment, outcome, notes, submitted, notebook))
        results.append(None)
    if not graded:
        return results
    hand, grades = set(), {}
    with warnings.catch_warnings(), Gradebook(coursedir.db_url, coursedir.course_id) as gradebook:
        # nbgrader's add_submission builds a submission's rows while the session autoflushes,
        # and SQLAlchemy warns about the half-built ones; nbgrader's own autograde does the same
        warnings.filterwarnings("ignore", message=r".*not in session, add operation along")
        session = gradebook.db
        _tune(session, coursedir.db_url)
        gradebook.db = _Flushing(session)
        try:
            score = _Scoring(gradebook, nbgrader.config)
            for index, student, assignment, outcome, notes, submitted, notebook in graded:
                gradebook.update_or_create_student(student)
                timestamp = _timestamp(outcome["files"])
                gradebook.update_or_create_submission(
                    assignment, student, **({"timestamp": timestamp} if timestamp else {}))
                score(notebook, student, assignment)
                notes += execution_notes(notebook)
                notes += keep_hand_grades(root, gradebook, student, assignment, befores[index], submitted)
                grades[index] = _grades(root, gradebook, student, assignment)
                if hand_given(gradebook, student, assignment):
                    hand.add(index)
            session.commit()
        except BaseException:
            session.rollback()
            raise
    for index, student, assignment, outcome, notes, submitted, notebook in graded:
        seconds = outcome.get("seconds", 0.0)
        try:
            notes += _write_files(root, nbgrader, student, assignment, outcome, notebook, submitted, index in hand)
        except Exception as error:  # its rows are committed; .graded.json will not list it: graded again
            results[index] = Result(student, assignment, FAILED, notes=notes + [
                f"its scores are in the gradebook but its files could not be written ({type(error).__name__}: "
                f"{str(error)[:300]}): grade it again"], seconds=seconds)
            continue
        scores, max_scores, manual = grades[index]
        results[index] = Result(student, assignment, GRADED, scores, max_scores, notes, seconds, manual)
    return results


def _write_files(root: Path, nbgrader, student: str, assignment: str, outcome: dict, notebook, submitted,
                 hand: bool) -> list[str]:
    """autograded/ and feedback/ of a result whose scores are committed; notes for the instructor."""
    folder = root / "autograded" / student / assignment
    shutil.rmtree(folder, ignore_errors=True)
    _write_tree(folder, outcome["files"])
    notes = feedback.clean_autograded(root, student, assignment, notebook, submitted)
    pages = outcome.get("feedback")
    if pages and not hand:
        # the worker's feedback, made from the same notebook cleaned the same way
        folder = root / "feedback" / student / assignment
        shutil.rmtree(folder, ignore_errors=True)
        _write_tree(folder, pages)
    else:  # what a worker could not know (a hand grade), or it could not write it
        generated = nbgrader.generate_feedback(assignment, student, force=True)
        if not generated.get("success"):
            notes.append(f"feedback not written: {generated.get('error', '')[-300:]}")
    inert.protect_feedback(root / "feedback" / student / assignment)
    return notes


def recorded(root: Path, student: str, assignment: str, before: dict) -> Result:
    """The result of a submission graded before and unchanged since, from the gradebook (hand
    grades given since included: its feedback is then written again, with them)."""
    from nbgrader.api import Gradebook

    nbgrader = api(root)
    with Gradebook(nbgrader.coursedir.db_url, nbgrader.coursedir.course_id) as gradebook:
        scores, max_scores, manual = _grades(root, gradebook, student, assignment)
    if scores != before.get("scores"):
        generated = nbgrader.generate_feedback(assignment, student, force=True)
        if not generated.get("success"):
            before["notes"] = [*before["notes"], f"feedback not written: {generated.get('error', '')[-300:]}"]
        inert.protect_feedback(root / "feedback" / student / assignment)
    return Result(student, assignment, GRADED, scores, max_scores, before["notes"], before["seconds"], manual)


def grade_one(root: Path, student: str, assignment: str, limits: sandbox.Limits | None = sandbox.Limits()) -> Result:
    """Grades one submission here, as a worker and the driver would; never raises for a bad
    submission. The student's code runs in the sandbox with ``limits``; None: without one."""
    problem = check_submission(root, student, assignment)
    if problem is not None:
        return problem
    common = course_files(root, [assignment])
    outcome = work_in_folder(common, student, assignment, submission_files(root, student, assignment), limits)
    return record(root, student, assignment, outcome, trusted=limits is None)
