"""The grading of one submission: checked (missing, misnamed, unreadable), autograded by
nbgrader with the course's configuration (the student's code run once, in the judge's
sandboxed student's process, which gives the cells their outputs), its hand grades kept,
its feedback cleaned and written; the result as a ``Result``.

The distribution of the work is ``autograder.grading.driver``'s and ``distribute``'s; the
sandbox and the judge are ``autograder.isolation``'s; the tables and CSVs
``autograder.reporting``'s.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import os
import re
import shutil
import tempfile
import threading
import time
import uuid
from pathlib import Path

import nbformat

from autograder import course
from autograder.course.config import api, check
from autograder.course import KERNEL_DIED, TAMPERING, TIME_LIMIT
from autograder.grading import zygote
from autograder.isolation import sandbox
from autograder.reporting import feedback
from autograder.reporting.results import FAILED, GRADED, MISNAMED, MISSING, UNREADABLE, Result
from autograder.isolation import inert

REPOSITORY = course.REPO

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


def _their_meta(cell) -> dict:
    """A student's cell's nbgrader metadata, {} when it is not a mapping (the student's file
    may hold anything there: a string, a list)."""
    meta = cell.get("metadata", {}).get("nbgrader", {}) if isinstance(cell.get("metadata"), dict) else {}
    return meta if isinstance(meta, dict) else {}


def _release(root: Path, assignment: str):
    """An assignment's release notebook (``course.course_notebook``: shared, never change it)."""
    return course.course_notebook(root / "release" / assignment / f"{assignment}.ipynb")


def changed_cells(root: Path, student: str, assignment: str, submitted=None) -> list[str]:
    """Notes on the test and locked cells the student deleted or edited (nbgrader grades
    with the release's version of each). ``submitted``: the student's notebook, already read."""
    release = _release(root, assignment)
    if submitted is None:
        submitted = nbformat.read(str(root / "submitted" / student / assignment / f"{assignment}.ipynb"), as_version=4)
    theirs = {}
    for cell in submitted.cells:
        grade_id = _their_meta(cell).get("grade_id")
        if isinstance(grade_id, str) and grade_id:
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


#: the nbgrader metadata that decides how a cell is graded (compared with the release's)
GRADING_KEYS = ("grade_id", "grade", "solution", "locked", "task", "points", "cell_type")


def _shown_id(value) -> str:
    """A grade_id from the student's notebook, shown inert (printable, bounded)."""
    text = value if isinstance(value, str) else repr(value)
    text = "".join(ch if ch.isprintable() else f"\\x{ord(ch):02x}" for ch in text[:80])
    return text + ("..." if len(str(value)) > 80 else "")


def release_metadata(release, submitted) -> list[str]:
    """Gives the submitted notebook the release's grading metadata, in place; notes on what
    it ignored. A graded cell's metadata comes from the release, never from the submission:
    the first cell with a release grade_id (and its type) gets the release's metadata (its
    points, its kind); a second cell with that grade_id (a copied test cell), a cell with a
    grade_id the release does not have (a new graded cell), or of another type, loses its
    nbgrader metadata and is graded as any cell the student added (that costs nothing);
    changed points or kinds are put back. nbgrader itself would fail the whole submission
    on a duplicated test cell (KeyError 'grade_id')."""
    released = {}
    for cell in release.cells:
        meta = cell.metadata.get("nbgrader")
        if isinstance(meta, dict) and meta.get("grade_id"):
            released[meta["grade_id"]] = (cell.cell_type, meta)
    notes, seen = [], set()
    for index, cell in enumerate(submitted.cells):
        meta = cell.metadata.get("nbgrader")
        if meta is None:
            continue
        grade_id = meta.get("grade_id") if isinstance(meta, dict) else None
        key = grade_id if isinstance(grade_id, str) else None
        original = released.get(key)
        if original is not None and key not in seen and original[0] == cell.cell_type:
            seen.add(key)
            if any(meta.get(k) != original[1].get(k) for k in GRADING_KEYS):
                notes.append(f"metadata of cell {_shown_id(grade_id)} forged or duplicated: ignored")
            cell.metadata["nbgrader"] = copy.deepcopy(original[1])
            continue
        del cell.metadata["nbgrader"]
        claims = not isinstance(meta, dict) or any(meta.get(k) for k in ("grade", "solution", "locked", "task"))
        if claims or original is not None:
            label = _shown_id(grade_id) if grade_id is not None else f"cell {index + 1}"
            notes.append(f"metadata of cell {label} forged or duplicated: ignored")
    notes = list(dict.fromkeys(notes))
    if len(notes) > MAX_METADATA_NOTES:  # a notebook of thousands of forged cells gets a few lines
        notes[MAX_METADATA_NOTES:] = [f"and {len(notes) - MAX_METADATA_NOTES} more cells whose metadata was forged "
                                      "or duplicated: ignored"]
    return notes


#: notes on forged or duplicated cells kept per submission
MAX_METADATA_NOTES = 10


def use_release_metadata(root: Path, student: str, assignment: str) -> list[str]:
    """Rewrites the submission's notebook in ``root`` (a worker's own copy) with the
    release's grading metadata (``release_metadata``); the notes."""
    path = root / "submitted" / student / assignment / f"{assignment}.ipynb"
    release = nbformat.read(str(root / "release" / assignment / f"{assignment}.ipynb"), as_version=4)
    submitted = nbformat.read(str(path), as_version=4)
    notes = release_metadata(release, submitted)
    if notes:
        nbformat.write(submitted, str(path))
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
            if is_test and str(output.evalue).startswith("the submission's time budget"):
                continue  # said once for all its tests (budget_notes)
            if output.ename in (TIME_LIMIT, KERNEL_DIED):
                notes.append(f"{label}: {output.evalue}")
            elif not is_test and output.ename not in ("NotImplementedError",):
                notes.append(f"{label} raised {output.ename}: {str(output.evalue)[:160]}")
    return notes


def _grades(root: Path, gradebook, student: str, assignment: str) -> tuple[dict, dict, list]:
    """The points of each graded cell, in the notebook's order, from an open gradebook."""
    release = _release(root, assignment)
    order = [c.metadata.get("nbgrader", {}).get("grade_id") for c in release.cells]
    manual = [
        c.metadata["nbgrader"]["grade_id"] for c in release.cells
        if c.metadata.get("nbgrader", {}).get("grade") and c.metadata["nbgrader"].get("solution")
    ]
    scores, max_scores = {}, {}
    submission = gradebook.find_submission_notebook(assignment, assignment, student)
    grades = sorted(submission.grades, key=lambda g: order.index(g.name) if g.name in order else len(order))
    for grade in grades:
        scores[grade.name] = None if grade.needs_manual_grade else float(grade.score)
        max_scores[grade.name] = float(grade.max_score)
    return scores, max_scores, manual


def _solution_sources(path: Path, notebook=None) -> dict[str, str]:
    """{grade_id: source} of the cells a student writes (solutions and answers), or {}
    (``notebook``: the one at ``path``, already read)."""
    if notebook is None:
        if not path.exists():
            return {}
        try:
            notebook = nbformat.read(str(path), as_version=4)
        except Exception:
            return {}
    return {
        str(_their_meta(cell)["grade_id"]): cell.source.strip()
        for cell in notebook.cells
        if _their_meta(cell).get("solution") and _their_meta(cell).get("grade_id")
    }


def keep_hand_grades(root: Path, gradebook, student: str, assignment: str, before: dict[str, str],
                     submitted=None) -> list[str]:
    """After autograding again: the grades given by hand (formgrader) stay final where the
    student's work they judged did not change; nbgrader alone flags them all for review.

    ``before`` holds the student's cells as graded by hand (the previous autograded
    notebook). An answer keeps its grade if its cell is unchanged; a test cell whose
    score the instructor overrode keeps it if none of the student's cells changed.
    Returns notes on the hand grades that must be given again. ``gradebook`` is open (the
    caller commits); ``submitted``, the student's notebook, already read.
    """
    now = _solution_sources(root / "submitted" / student / assignment / f"{assignment}.ipynb", submitted)
    notes = []
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
    return notes


#: the note on every row graded without a sandbox
TRUSTED_NOTE = "graded without a sandbox (--trusted): the student's code ran with the grader's rights"


#: seconds added to the sum of an assignment's cell time limits, for its default time budget
BUDGET_MARGIN = 120
#: seconds a worker gives a grading process past its budget (nbgrader's start and its
#: scoring, the feedback) before it kills it
GRADING_GRACE = 300


def default_budget(root: Path, assignment: str) -> float:
    """A submission's default time budget (s): the sum of the time limits of the cells that
    grading runs (30 s; the slow ones, bounded by CPU time, their wall-clock limit of 180 s
    times SLOW_WALL_FACTOR), plus BUDGET_MARGIN."""
    from autograder.course.config import load_config
    from autograder.course.preprocessors import grade_id
    from autograder.isolation.judge import SLOW_WALL_FACTOR

    config = load_config()
    timeout = float(config.Execute.get("timeout", 30))
    slow = float(config.CourseExecute.get("slow_timeout", 180)) * SLOW_WALL_FACTOR
    slow_cells, skipped = set(config.CourseExecute.get("slow_cells", [])), set(config.CourseExecute.get("skip_cells", []))
    notebook = nbformat.read(str(root / "source" / assignment / f"{assignment}.ipynb"), as_version=4)
    total = 0.0
    for cell in notebook.cells:
        if cell.cell_type == "code" and grade_id(cell) not in skipped:
            total += slow if grade_id(cell) in slow_cells or "slow" in cell.metadata.get("tags", []) else timeout
    return total + BUDGET_MARGIN


def budget_notes(verdicts: dict, budget: float) -> list[str]:
    """The note on the tests that scored 0 because the submission's time budget ran out."""
    stopped = [name for name, v in verdicts.items() if not name.startswith("_") and isinstance(v, dict)
               and v.get("budget")]
    if not stopped:
        return []
    at = next((name for name in stopped if verdicts[name].get("budget") == "here"), stopped[0])
    return [f"the submission's time budget of {budget:g} s ran out at {at}: the student's code was stopped "
            f"({', '.join(stopped)} scored 0)"]


def _as_the_judge(title: str) -> None:
    """This process, set up as the judge runs: its title, nbgrader's environment, the repository
    importable and current."""
    zygote.title(title)
    os.environ.update(NBGRADER_EXECUTION="autograde", MPLBACKEND="Agg")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), os.environ.get("PYTHONPATH")]))
    os.chdir(REPOSITORY)


def start_judge(root: Path, student: str, assignment: str, limits: sandbox.Limits | None, verdicts: Path,
                deadline: float = 0.0, budget: float = 0.0, retrainings: int = 0, engine: Path | None = None) -> int:
    """Starts the judge (``autograder.isolation.judge``) on the submission's tests, apart from the
    student's code, in a process of its own forked from this one (its imports are done); it
    writes their verdicts. Returns its pid (``judge_failure`` says how it ended). With
    ``engine``, its retrainings are asked of the grading engine (``Retrainings``)."""
    from autograder.isolation import judge

    source = root / "source" / assignment / f"{assignment}.ipynb"
    submission = root / "submitted" / student / assignment

    def judged():
        _as_the_judge(f"python -m autograder.isolation.judge {submission}")
        # without a sandbox, the student's process is forked from this judge (it has only imported)
        outcome = judge.run(source.resolve(), submission.resolve(), limits, deadline=deadline, budget=budget,
                            retrainings=retrainings, engine=engine, fork=limits is None)
        partial = verdicts.with_suffix(".partial")
        partial.write_text(json.dumps(outcome, indent=1))
        partial.rename(verdicts)  # whole, or not there

    return zygote.fork_start(judged, (), verdicts.with_suffix(".log"))


def judge_failure(pid: int, verdicts: Path, until: float = 0.0) -> str | None:
    """Waits for the judge (killed at ``until``, a time.time(), if it has not ended by then);
    why it could not give its verdicts, or None."""
    code = zygote.wait(pid, until)
    if code != 0 or not verdicts.exists():
        log = verdicts.with_suffix(".log")
        lines = log.read_text(errors="replace").strip().splitlines() if log.exists() else []
        lines = [line for line in lines if not line.startswith("[student's")]  # relayed: the student's text
        tail = (lines or [f"exit code {code}"])[-1][:300]
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
        elif error and "refused, not replayed" in str(error[1]):
            concerned.setdefault(f"{name}: {str(error[1])[:300]}", [])
    return [f"{what} ({', '.join(tests)} scored 0)" if tests else what for what, tests in concerned.items()]


#: largest submission folder sent to a worker
MAX_SUBMISSION = 200 * 2**20


def submission_files(root: Path, student: str, assignment: str) -> dict[str, bytes]:
    """The files of a submission, to send to a worker (no shared file system needed)."""
    folder = root / "submitted" / student / assignment
    return _read_tree(folder)


def _read_tree(folder: Path) -> dict[str, bytes]:
    files, size = {}, 0
    for path in sorted(folder.rglob("*")):
        if path.is_file() and not path.is_symlink():
            size += path.stat().st_size
            if size > MAX_SUBMISSION:
                raise course.CourseError(f"{folder} holds more than {MAX_SUBMISSION >> 20} MB: remove what is not "
                                         "the student's work (datasets, videos) and grade again")
            files[str(path.relative_to(folder))] = path.read_bytes()
    return files


def check_tree(folder: Path, files: dict[str, bytes]) -> None:
    """Raises ValueError for a file that would land outside ``folder``."""
    for name in files:
        if folder.resolve() not in (folder / name).resolve().parents:
            raise ValueError(f"a file outside its folder: {name}")


def _write_tree(folder: Path, files: dict[str, bytes]) -> None:
    check_tree(folder, files)
    for name, data in files.items():
        path = (folder / name).resolve()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)


def work(root: Path, student: str, assignment: str, limits: sandbox.Limits | None,
         budget: float | None = None, retrainings: int = course.RETRAININGS, engine: Path | None = None) -> dict:
    """A worker's part: the student's cells run once, in the judge's sandboxed student's
    process, the tests in the judge, in ``root``, a course folder of the worker's own,
    within the submission's time budget (``budget`` seconds for the student's process and
    the judge together; None: ``default_budget``). Returns the outcome (status, notes, the autograded folder's
    files) for the driver to record; writes nothing else that lasts."""
    from autograder.course.preprocessors import JUDGE_GRACE

    start = time.perf_counter()
    budget = budget or default_budget(root, assignment)
    deadline = time.time() + budget
    metadata_notes = use_release_metadata(root, student, assignment)
    with tempfile.TemporaryDirectory(prefix="course-verdicts-") as scratch:
        verdicts_file = Path(scratch) / "verdicts.json"
        # the judge runs the tests and its student's process the student's cells; nbgrader
        # starts no kernel: once the judge has ended, the cells get the outputs of its
        # student's process and the test cells its verdicts
        judge = start_judge(root, student, assignment, limits, verdicts_file, deadline, budget, retrainings, engine)
        try:
            nbgrader = api(root, verdicts=verdicts_file, judge_pid=judge, deadline=deadline, budget=budget)
            outcome = nbgrader.autograde(assignment, student, force=True, create=True)
        finally:
            failure = judge_failure(judge, verdicts_file, deadline + JUDGE_GRACE)
            judge_log = verdicts_file.with_suffix(".log")
            if judge_log.exists():  # what the student's process wrote on its stderr, marked as theirs
                print(judge_log.read_text(errors="replace"), end="")
        print(f"graded in {time.perf_counter() - start:.1f} s (the student's code run once, in the judge's "
              "student's process)")
        if failure is not None:
            return {"status": FAILED, "notes": metadata_notes + [failure], "seconds": time.perf_counter() - start,
                    "files": {}}
        verdicts = json.loads(verdicts_file.read_text())
        notes = metadata_notes + judge_notes(verdicts) + budget_notes(verdicts, budget)
    if not outcome.get("success"):
        log = (outcome.get("log", "") + outcome.get("error", "")).strip().splitlines()
        errors = [line for line in log if line.startswith("[ERROR]") or "Error" in line]
        reason = (errors[-1] if errors else (log[-1] if log else "no log"))[:300]
        return {"status": FAILED, "seconds": time.perf_counter() - start, "files": {}, "notes": notes + [
            f"nbgrader could not grade it: {reason} (the gradebook has no score for it). Fix the submission's "
            "notebook by hand or grade it manually."]}
    files = _read_tree(root / "autograded" / student / assignment)
    # the feedback too, here on the worker (about two thirds of what recording a result cost
    # the driver, which records one after another): from a copy of the autograded notebook
    # cleaned as the driver cleans its own (the scores come from the uncleaned one, sent above)
    # the driver scores the notebook as it was executed (cleaning replaces outputs): the
    # cleaned copy lives only while the feedback is made
    notebook = root / "autograded" / student / assignment / f"{assignment}.ipynb"
    executed = notebook.read_bytes()
    feedback.clean_autograded(root, student, assignment)  # its notes are the driver's to give
    try:
        generated = api(root).generate_feedback(assignment, student, force=True)
    finally:
        notebook.write_bytes(executed)
    return {"status": GRADED, "notes": notes, "seconds": time.perf_counter() - start, "files": files,
            "feedback": bool(generated.get("success"))}  # the pages: root/feedback/<student>/<assignment>/


def hand_given(gradebook, student: str, assignment: str) -> bool:
    """Whether the gradebook (open) holds anything given by hand for this submission (a
    score, a comment, extra credit), which its feedback shows: a worker's feedback cannot."""
    submission = gradebook.find_submission_notebook(assignment, assignment, student)
    return any(g.manual_score is not None or g.extra_credit for g in submission.grades) or any(
        c.manual_comment for c in submission.comments)


def grader_version() -> str:
    """A digest of the grader's code and the course module: a change regrades everything."""
    digest = hashlib.sha256()
    for folder in (REPOSITORY / "autograder", REPOSITORY / "bbrl_course"):
        for path in sorted(folder.rglob("*.py")):
            digest.update(str(path.relative_to(folder)).encode() + path.read_bytes())
    return digest.hexdigest()


#: where a course folder keeps the course's files last sent to workers (for the next run)
COURSE_FILES = ".course-files"
#: the file, among the course's files, that holds the driver's grader_version()
GRADER_VERSION = "grader-version"
#: the file, among the course's files, that holds the time budget of a submission (s; absent:
#: each assignment's default_budget)
BUDGET = "time-budget"
#: the file, among the course's files, that holds each assignment's default_budget (JSON), worked
#: out by the driver: a worker that computed it would import nbgrader for it (its configuration)
DEFAULT_BUDGETS = "default-budgets.json"
#: the file, among the course's files, that holds how many times a learning test that failed
#: may be run again with one of the student's functions replaced by the course's (absent: RETRAININGS)
RETRAININGS_FILE = "retrainings"


class VersionMismatch(RuntimeError):
    """A worker's grader (autograder/, bbrl_course/) is not the driver's."""


def check_version(common: dict[str, bytes]) -> None:
    """Raises VersionMismatch when this worker's grader differs from the driver's: a worker
    started from another checkout would grade with other tests or another course module."""
    theirs = common.get(GRADER_VERSION, b"").decode()
    if theirs and theirs != grader_version():
        import socket

        raise VersionMismatch(
            f"the worker on {socket.gethostname()} ({REPOSITORY}) runs another version of the grader than the "
            "driver (autograder/ or bbrl_course/ differ): start the workers from the driver's commit "
            "(git checkout <commit>), then grade again")


def course_files(root: Path, assignments: list[str], version: str | None = None) -> dict[str, bytes]:
    """What every worker needs besides the submission: the assignments' source notebooks
    (with the hidden tests), their release and a gradebook that knows them (no student).
    Kept in the course folder (``.course-files/``) for the next run, while the source
    notebooks and the grader are the same."""
    digest = hashlib.sha256((version or grader_version()).encode())
    for name in assignments:
        digest.update(name.encode() + b"\0" + (root / "source" / name / f"{name}.ipynb").read_bytes())
    kept = root / COURSE_FILES / digest.hexdigest()[:32]
    if kept.is_dir():
        return _read_tree(kept)
    with tempfile.TemporaryDirectory(prefix="course-template-") as tmp:
        template = Path(tmp)
        for name in assignments:
            shutil.copytree(root / "source" / name, template / "source" / name)
        nbgrader = api(template)
        for name in assignments:
            check(nbgrader.generate_assignment(name, force=True, create=True), f"nbgrader generate_assignment {name}")
        files = {f"source/{k}": v for k, v in _read_tree(template / "source").items()}
        files.update({f"release/{k}": v for k, v in _read_tree(template / "release").items()})
        files["gradebook.db"] = (template / "gradebook.db").read_bytes()
        files[GRADER_VERSION] = (version or grader_version()).encode()
        files[DEFAULT_BUDGETS] = json.dumps({name: default_budget(template, name) for name in assignments}).encode()
    try:  # the last one only; kept whole or not at all (a cache: failing to keep it costs time only)
        shutil.rmtree(root / COURSE_FILES, ignore_errors=True)
        (root / COURSE_FILES).mkdir()
        partial = Path(tempfile.mkdtemp(prefix="partial-", dir=root / COURSE_FILES))
        _write_tree(partial, files)
        partial.rename(kept)
    except OSError:
        pass
    return files


def _in_folder(folder: Path, common: dict[str, bytes], student: str, assignment: str, files: dict[str, bytes],
               limits: sandbox.Limits | None) -> list[str]:
    """``folder`` made a course folder holding the course's files and the submission; the
    grading process's first arguments for it."""
    _write_tree(folder, common)
    _write_tree(folder / "submitted" / student / assignment, files)
    argv = [str(folder), student, assignment]
    return argv + (["--trusted"] if limits is None else ["--limits", json.dumps(dataclasses.asdict(limits))])


def work_in_folder(common: dict[str, bytes], student: str, assignment: str, files: dict[str, bytes],
                   limits: sandbox.Limits | None) -> dict:
    """A worker's task: a course folder of its own (the course's files and the submission,
    sent by the driver), graded by a fresh process (nothing of a grading stays in the
    worker), forked from this worker's fork server (``autograder.grading.zygote``). Returns the
    outcome, with the grading's log. A worker whose grader is not the driver's raises
    VersionMismatch before grading. On a Dask worker, the retrainings its judge asks for
    are tasks of their own (``Retrainings``), run at once on idle workers."""
    check_version(common)
    with tempfile.TemporaryDirectory(prefix="course-work-") as tmp:
        folder = Path(tmp)
        argv = _in_folder(folder, common, student, assignment, files, limits)
        budget = float(common.get(BUDGET, b"0") or 0) or _default_budget(common, assignment)
        argv += ["--budget", str(budget)]
        retrainings = int(common.get(RETRAININGS_FILE, str(course.RETRAININGS).encode()))
        argv += ["--retrainings", str(retrainings)]
        engine = folder / "retraining-plans" if retrainings and _dask_worker() else None
        if engine is not None:
            engine.mkdir()
            argv += ["--engine", str(engine)]
        log_file = folder / "grading.log"
        began = time.monotonic()
        serve = None if engine is None else Retrainings(common, student, assignment, files, limits, retrainings,
                                                        time.time() + budget)
        code = _run_serving(argv, log_file, budget + GRADING_GRACE, engine, serve)
        log = _log_tail(log_file)
        answer = folder / "outcome.json"
        if code == -9 and time.monotonic() - began >= budget + GRADING_GRACE:
            return {"status": FAILED, "seconds": time.monotonic() - began, "files": {}, "log": log, "notes": [
                f"its grading ran {GRADING_GRACE} s past the submission's time budget of {budget:g} s and was "
                "stopped (the gradebook has no new score for it); grade it again, and if it happens again, report "
                "it with logs/ to the course's maintainers"]}
        if code != 0 or not answer.exists():
            last = (log.strip().splitlines() or ["no message"])[-1][:300]
            raise RuntimeError(f"the grading process failed ({last})")
        outcome = json.loads(answer.read_text())
        outcome["files"] = _read_tree(folder / "autograded" / student / assignment) if outcome["status"] == GRADED else {}
        outcome["feedback"] = _read_tree(folder / "feedback" / student / assignment) if outcome.get("feedback") else None
        outcome["log"] = log
        return outcome


def _default_budget(common: dict[str, bytes], assignment: str) -> float:
    """The assignment's default budget, as the driver worked it out (``course_files``)."""
    return float(json.loads(common[DEFAULT_BUDGETS])[assignment])


def _dask_worker() -> str | None:
    """The address of the Dask worker running this task, or None (not on a Dask worker)."""
    with contextlib.suppress(ImportError, ValueError):
        from distributed import get_worker

        return get_worker().address
    return None


def _run_serving(argv: list[str], log: Path, timeout: float, engine: Path | None, serve) -> int:
    """The grading process (``zygote.run``); meanwhile, with ``engine``, each plan of
    retrainings its judge writes there (``plan-K.json``) answered (``answer-K.json``) by
    ``serve``."""
    if engine is None:
        return zygote.run("autograder.grading.submission", argv, log, timeout=timeout)
    ended: dict = {}

    def grading():
        try:
            ended["code"] = zygote.run("autograder.grading.submission", argv, log, timeout=timeout)
        except BaseException as error:  # raised again in the task's thread
            ended["error"] = error

    thread = threading.Thread(target=grading, name="grading", daemon=True)
    thread.start()
    asked = 0
    while thread.is_alive():
        plan = engine / f"plan-{asked}.json"
        if plan.exists():
            try:
                answers = serve(json.loads(plan.read_text()))
            except Exception as error:  # the engine could not run them: the judge says none was tried
                print(f"the retrainings could not be run on the grading engine: {type(error).__name__}: {error}")
                answers = []
            partial = engine / f"answer-{asked}.partial"
            partial.write_text(json.dumps(answers))
            partial.rename(engine / f"answer-{asked}.json")
            asked += 1
        thread.join(0.2)
    if "error" in ended:
        raise ended["error"]
    return ended["code"]


#: Dask priority of a retraining: before any submission waiting to be graded
RETRAINING_PRIORITY = 10**9


class Retrainings:
    """A submission's retrainings (``autograder.isolation.judge.attribute``) on the grading
    engine, from the task that grades it: each plan's first swaps, as many as the cluster has
    room for now (this task's own slot, given up while it waits, and each idle thread: see
    ``slots``), at most ``retrainings`` in all, each a task (``retrain_in_folder``) placed in
    one of those slots, before any waiting submission. On a busy cluster that is one at a
    time, as without an engine; on idle workers, several at once."""

    def __init__(self, common, student, assignment, files, limits, retrainings: int, deadline: float):
        self.common, self.student, self.assignment, self.files, self.limits = common, student, assignment, files, limits
        self.left, self.deadline, self.seceded = retrainings, deadline, False

    def __call__(self, plan: dict) -> list[dict]:
        from distributed import get_client, secede

        from autograder.isolation import judge

        name = re.compile(r"\w+$")
        learning = str(plan.get("learning", ""))
        swaps = [tuple(str(n) for n in swap) for swap in plan.get("swaps", []) if isinstance(swap, list)]
        swaps = [swap for swap in swaps if swap and all(name.match(n) for n in swap)]
        deadline = min(float(plan.get("deadline", 0) or 0), self.deadline)
        if not name.match(learning) or not swaps or self.left <= 0 or deadline <= time.time():
            return []
        client = get_client()
        places = slots(client, _dask_worker())
        wave = swaps[:min(self.left, len(places))]
        self.left -= len(wave)
        run = uuid.uuid4().hex[:8]
        # each where there is room for it (this task's own slot first): left to the scheduler,
        # two could land on one worker while another is idle. Loose: a worker gone meanwhile
        # leaves its retraining to any other.
        futures = [client.submit(retrain_in_folder, self.common, self.student, self.assignment, self.files,
                                 self.limits, learning, swap, deadline, pure=False, priority=RETRAINING_PRIORITY,
                                 workers=[place] if place else None, allow_other_workers=True,
                                 key=f"retrain-{self.student}-{self.assignment}-{'+'.join(swap)}-{run}")
                   for swap, place in zip(wave, places)]
        if not self.seceded:  # this task's slot, for its own retrainings first (the highest priority)
            secede()
            self.seceded = True
        answers = []
        for swap, future in zip(wave, futures):
            try:
                answers.append(future.result(timeout=max(1.0, deadline - time.time()) + GRADING_GRACE))
            except Exception:  # lost, or past the budget: not run, as the judge's message says
                future.cancel()
                answers.append(judge.not_run(swap))
        return answers


def slots(client, here: str | None) -> list[str | None]:
    """Where the cluster can start tasks now for a task on worker ``here`` that gives up its
    own slot: ``here`` (None: anywhere), then each worker once per thread with nothing to run."""
    places: list[str | None] = [here]
    with contextlib.suppress(Exception):
        processing = client.processing()
        for worker, n in sorted(client.nthreads().items()):
            places += [worker] * max(0, n - len(processing.get(worker, ())))
    return places


def retrain_in_folder(common: dict[str, bytes], student: str, assignment: str, files: dict[str, bytes],
                      limits: sandbox.Limits | None, learning: str, swap: tuple[str, ...], deadline: float) -> dict:
    """A worker's task: one retraining of a submission's learning test with ``swap`` replaced
    by the course's (``autograder.isolation.judge.retrain``), in a course folder of its own,
    by a fresh grading process. Returns the judge's answer, where and when it ran."""
    from autograder.isolation import judge

    check_version(common)
    started = time.time()
    answer = judge.not_run(swap)
    with tempfile.TemporaryDirectory(prefix="course-retrain-") as tmp:
        folder = Path(tmp)
        argv = _in_folder(folder, common, student, assignment, files, limits)
        argv += ["--retrain", learning, ",".join(swap), repr(deadline)]
        code = zygote.run("autograder.grading.submission", argv, folder / "retraining.log",
                          timeout=max(1.0, deadline - time.time()) + GRADING_GRACE)
        written = folder / "retrained.json"
        if code == 0 and written.exists():
            answer = json.loads(written.read_text())
    return {**answer, "worker": _dask_worker() or "here", "started": started, "ended": time.time()}


#: bytes of a grading's log sent back to the driver (the last ones)
MAX_LOG = 200_000


def _log_tail(path: Path) -> str:
    """The last MAX_LOG bytes of a grading's log, read without reading the whole file."""
    if not path.exists():
        return ""
    with open(path, "rb") as f:
        f.seek(max(path.stat().st_size - MAX_LOG, 0))
        return f.read(MAX_LOG).decode(errors="replace")


def main(argv=None):
    """``python -m autograder.grading.submission FOLDER STUDENT ASSIGNMENT``: a worker's grading process."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m autograder.grading.submission")
    parser.add_argument("folder", type=Path)
    parser.add_argument("student")
    parser.add_argument("assignment")
    parser.add_argument("--trusted", action="store_true")
    parser.add_argument("--limits", default="{}")
    parser.add_argument("--budget", type=float, default=None)
    parser.add_argument("--retrainings", type=int, default=course.RETRAININGS)
    parser.add_argument("--engine", type=Path, default=None,
                        help="a folder where the judge asks the grading engine for its retrainings")
    parser.add_argument("--retrain", nargs=3, metavar=("LEARNING", "SWAP", "DEADLINE"),
                        help="only one retraining: the learning test with SWAP (names, comma-separated) replaced "
                             "by the course's, before DEADLINE (a time.time()); writes retrained.json")
    args = parser.parse_args(argv)
    limits = None if args.trusted else sandbox.Limits(**json.loads(args.limits))
    if args.retrain:
        from autograder.isolation import judge

        learning, swap, deadline = args.retrain
        source = args.folder / "source" / args.assignment / f"{args.assignment}.ipynb"
        submission = args.folder / "submitted" / args.student / args.assignment
        _as_the_judge(f"python -m autograder.isolation.judge {submission} (retraining)")
        answer = judge.retrain_submission(source.resolve(), submission.resolve(), limits, learning,
                                          tuple(swap.split(",")), float(deadline))
        (args.folder / "retrained.json").write_text(json.dumps(answer))
        return
    outcome = work(args.folder, args.student, args.assignment, limits, args.budget, args.retrainings, args.engine)
    outcome.pop("files")
    (args.folder / "outcome.json").write_text(json.dumps(outcome))


if __name__ == "__main__":
    main()
