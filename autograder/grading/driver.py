"""The driver: grades the class, every submission in nbgrader's layout or one student's
(``python -m autograder grade``, whose command line is ``autograder.cli``'s).

Submissions are read from ``ROOT/submitted/<student>/<assignment>/<assignment>.ipynb``.
Each one is checked first (missing, misnamed, not a notebook), then graded on Dask
(``autograder.grading.distribute``), one submission by ``autograder.grading.submission``.
The driver finds the work, skips what was graded and has not changed since, and records
each result as it comes back: it alone writes the course folder (the gradebook,
autograded/, feedback/, grades/ and logs/). The tables and CSVs are
``autograder.reporting``'s, the sandbox ``autograder.isolation``'s.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import sys
import threading
from pathlib import Path

from tqdm import tqdm

from autograder import course
from autograder.course import course_root, shown
from autograder.course.release import ensure_released
from autograder.grading.submission import (
    BUDGET,
    RETRAININGS_FILE,
    check_submission,
    course_files,
    grader_version,
    submission_files,
)
from autograder.grading.recording import BATCH, record_batch, recorded
from autograder.isolation import inert, sandbox
from autograder.reporting.results import FAILED, GRADED, Result
from autograder.reporting.tables import _some, write_reports


@contextlib.contextmanager
def _quiet(log_path: Path):
    """Sends what nbgrader prints while the driver records a submission to its log file."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with open(log_path, "a") as log:
        os.dup2(log.fileno(), 1)
        os.dup2(log.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


#: what was graded, and from what (grades/.graded.json): a submission, its assignment's
#: tests and the grader unchanged since are not graded again
STATE = ".graded.json"


def submission_digest(root: Path, student: str, assignment: str, files: dict[str, bytes], version: str,
                      limits) -> str:
    digest = hashlib.sha256(version.encode())
    digest.update(repr(limits).encode())
    digest.update((root / "source" / assignment / f"{assignment}.ipynb").read_bytes())
    for name, data in sorted(files.items()):
        digest.update(name.encode() + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def _load_state(root: Path) -> dict:
    try:
        return json.loads((root / "grades" / STATE).read_text())
    except (OSError, ValueError):
        return {}


def _save_state(root: Path, state: dict) -> None:
    path = root / "grades" / STATE
    path.parent.mkdir(exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(state, separators=(",", ":")))  # compact: json's C encoder
    temporary.replace(path)  # atomic: an interruption leaves the old state or the new one


def slow_tests(root: Path, assignment: str) -> int:
    """How many cells of an assignment's source are tagged ``slow`` (tests that train)."""
    import nbformat

    notebook = nbformat.read(str(root / "source" / assignment / f"{assignment}.ipynb"), as_version=4)
    return sum(1 for cell in notebook.cells if "slow" in cell.metadata.get("tags", []))


def students(root: Path) -> list[str]:
    submitted = root / "submitted"
    if not submitted.is_dir():
        raise course.CourseError(
            f"{submitted} does not exist: put the submissions in {submitted}/<student>/<assignment>/"
        )
    return sorted(p.name for p in submitted.iterdir() if p.is_dir() and not p.name.startswith("."))


def grade(root: Path = course.AUTOGRADER, student: str | None = None, assignment: str | None = None,
          jobs: int = 2, log=print, progress: bool = False, limits: sandbox.Limits | None = sandbox.Limits(),
          scheduler: str | None = None, force: bool = False, engine=None, budget: float | None = None,
          retrainings: int | None = None) -> list[Result]:
    """Grades the submissions (all, or one student's, or one assignment's); returns the results.

    Submissions that cannot be graded (missing, misnamed, unreadable) are found here at
    once; the others are graded on Dask (``autograder.grading.distribute``): a LocalCluster of
    ``jobs`` workers, or the cluster at ``scheduler``. This process alone writes the course
    folder (gradebook, autograded/, feedback/, grades/, logs/), as each result comes back.
    A submission graded before, unchanged since (its files, its tests, the grader) is not
    graded again unless ``force``. ``progress`` shows a bar (counts, ETA). Students' code
    runs in the sandbox with ``limits`` (None: without a sandbox, and every row says so);
    a machine where no sandbox can start is a CourseError. ``engine`` replaces Dask
    (``distribute.engine``) by another (the benchmark's process pool): a context manager
    giving ``run(common, work, limits)``, which yields lists of (student, assignment, outcome). ``budget``: each
    submission's time budget in seconds, for the student's process and the judge
    together (None: the sum of its assignment's cell time limits plus 120 s). ``retrainings``:
    how many times a failed learning test may train again with one of the student's functions
    replaced by the course's, to name the one that stops it (None: ``course.RETRAININGS``;
    0: never).
    """
    from autograder.grading import distribute

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
                f"no folder {shown(root / 'submitted' / student)}: {hint}"
                + (f"the {len(who)} students are {_some(who)}" if len(who) > 1
                   else f"the only student is {_some(who)}" if who else "there are no students")
            )
        who = [student]
    chosen = [assignment] if assignment else names
    ensure_released(root, chosen)
    (root / "logs").mkdir(exist_ok=True)
    (root / "logs" / "recording.log").write_text("")  # what nbgrader says while this run records
    state = {} if force else _load_state(root)
    version = grader_version()
    results, work, digests = [], [], {}
    for s in who:
        for a in chosen:
            problem = check_submission(root, s, a)
            if problem is not None:
                results.append(problem)
                continue
            try:
                files = submission_files(root, s, a)
            except course.CourseError as error:
                results.append(Result(s, a, FAILED, notes=[str(error)]))
                continue
            options = limits if budget is None and retrainings is None else (limits, budget, retrainings)
            digests[(s, a)] = submission_digest(root, s, a, files, version, options)
            before = state.get(f"{s}/{a}")
            if before and before["digest"] == digests[(s, a)]:
                with _quiet(root / "logs" / f"{s}-{a}.log"):
                    result = recorded(root, s, a, before)
                results.append(result)
                before["scores"] = result.scores
            else:
                work.append((s, a, files))
    # the longest first (the assignments whose tests train: a TD3 learning test takes ten
    # times a DDPG submission), the short ones then fill the workers' last gaps
    slow = {a: slow_tests(root, a) for a in chosen}
    work.sort(key=lambda item: -slow[item[1]])
    if not scheduler and work and not any(slow[a] for _, a, _ in work):
        # no more local workers than submissions: each is a process with the grader's imports and a
        # fork server (about 7 CPU-seconds to start), which one without a submission would only cost.
        # Submissions whose tests train keep every worker: a TD3 that does not learn is trained
        # again on the idle ones, several swaps at once
        jobs = min(jobs, len(work))
    unchanged = sum(1 for r in results if r.status == GRADED)
    log(f"grading {course.count(len(work), 'submission')} of {course.count(len(who), 'student')} ({', '.join(chosen)})"
        + (f" on {scheduler}" if scheduler else f" on {course.count(jobs, 'local worker')}")
        + (f"; {unchanged} unchanged since they were graded (--force grades them again)" if unchanged else "")
        + (f"; {len(results) - unchanged} cannot be graded (missing, misnamed or unreadable)"
           if len(results) > unchanged else ""))
    known = _load_state(root)
    known.update(state)  # with the scores of the unchanged ones, as now in the gradebook
    state = known
    _save_state(root, state)
    done = 0
    try:
        if work:
            # the bar once the cluster is checked: an error about it is one line, without a bar
            with (engine or distribute.engine)(scheduler, jobs, log) as run, \
                    tqdm(total=len(work), unit="submission", disable=not progress, file=sys.stderr) as bar:
                common = course_files(root, sorted({a for _, a, _ in work}), version)
                if budget is not None:
                    common = {**common, BUDGET: str(float(budget)).encode()}
                if retrainings is not None:
                    common = {**common, RETRAININGS_FILE: str(int(retrainings)).encode()}
                for batch in run(common, work, limits):
                    # an engine yields lists of (student, assignment, outcome): what finished
                    # together (Dask's as_completed); each part recorded in one transaction
                    for start in range(0, len(batch), BATCH):
                        part = batch[start:start + BATCH]
                        for s, a, outcome in part:
                            (root / "logs" / f"{s}-{a}.log").write_text(inert.text(outcome.get("log", ""), keep="\n\t"))
                        with _deferred_interrupt(), _quiet(root / "logs" / "recording.log"):
                            recorded_part = record_batch(root, part, trusted=limits is None)
                            for result in recorded_part:
                                key = f"{result.student}/{result.assignment}"
                                if result.status == GRADED:
                                    state[key] = {"digest": digests[(result.student, result.assignment)],
                                                  "notes": result.notes, "seconds": result.seconds,
                                                  "scores": result.scores}
                                else:
                                    state.pop(key, None)
                            _save_state(root, state)  # after the gradebook's commit
                        for result in recorded_part:
                            results.append(result)
                            done += 1
                            score = "" if result.auto_score is None else f"{result.auto_score:g}/{result.auto_max:g}"
                            line = inert.text(f"  {result.student:24} {result.assignment:13} {result.status:10} "
                                              f"{score:>8}  {result.seconds:5.0f} s")
                            bar.write(line, file=sys.stdout) if progress else log(line)
                            bar.update()
    except KeyboardInterrupt:
        _reports(root, results, log)
        raise course.CourseError(
            f"interrupted: {done} of {len(work)} submissions graded and recorded (the gradebook holds them); run the "
            "same command again to grade the others"
        ) from None
    _reports(root, results, log)
    return results


def _reports(root: Path, results: list[Result], log) -> None:
    """The CSVs, then the class report (grades/report.html); a report that cannot be drawn
    is said, never a lost grade."""
    from autograder.reporting import report

    write_reports(root, results)
    try:
        report.write(root, course.assignments())
    except Exception as error:  # the grades are written: the report is a view of them
        log(f"warning: grades/{report.REPORT} not written ({type(error).__name__}: {error}); "
            "`python -m autograder report` writes it again")


@contextlib.contextmanager
def _deferred_interrupt():
    """Ctrl-C while a result is recorded takes effect once it is: the gradebook, autograded/,
    feedback/ and grades/.graded.json stay consistent."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    received = []
    previous = signal.signal(signal.SIGINT, lambda *args: received.append(True))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
        if received:
            raise KeyboardInterrupt


