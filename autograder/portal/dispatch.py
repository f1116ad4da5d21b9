"""The portal's dispatcher: takes queued hand-ins, puts each in the course folder's
``submitted/<student>/<assignment>/`` (where ``make grade``, formgrader and the LMS export
find it), and grades it with the existing driver (``autograder.grading.driver.grade``), which
alone writes the gradebook, ``feedback/`` and ``grades/``. One dispatcher per server, in
one thread: the course folder has one writer, as with ``make grade``.

Exactly once: a hand-in is claimed (``Store.claim``) before it is copied, and its result
recorded (``Store.finish``) only by the run that claimed it. If the server dies between the
two, ``recover`` at the next start queues it again; grading it again is harmless, because
the driver grades only what changed since it recorded a result (its digests).
"""

from __future__ import annotations

import datetime
import json
import shutil
import time
from pathlib import Path

from autograder.course import COLLECTED
from autograder.grading import driver
from autograder.portal.store import FEEDBACK, UPLOADS, Store, Submission
from autograder.reporting.results import GRADED


def handed_in(root: Path, submission: Submission) -> None:
    """Records the hand-in time where ``reporting.late`` reads it (``collected/<a>.json``),
    keeping what ``collect`` recorded there."""
    path = root / COLLECTED / f"{submission.assignment}.json"
    try:
        record = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        record = {}
    entry = record.setdefault("students", {}).setdefault(submission.student, {})
    entry["handed_in"] = datetime.datetime.fromtimestamp(submission.received_at).isoformat(timespec="seconds")
    entry["portal_submission"] = submission.id
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True))
    temporary.replace(path)


def place(root: Path, submission: Submission) -> Path:
    """The hand-in's files into submitted/<student>/<assignment>/; what was there is kept
    in collected/kept/<student>/<assignment>/portal-<id>/ (as collect keeps a replaced one)."""
    folder = root / "submitted" / submission.student / submission.assignment
    upload = root / UPLOADS / str(submission.id)
    if folder.exists():
        kept = root / COLLECTED / "kept" / submission.student / submission.assignment / f"portal-{submission.id}"
        if kept.exists() or _files(folder) == _files(upload):  # placed already, before a crash
            shutil.rmtree(folder)
        else:
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(folder), str(kept))
    shutil.copytree(upload, folder)
    handed_in(root, submission)
    return folder


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class Dispatcher:
    """Grades what the portal's students hand in, one claimed batch at a time.

    ``grade`` is the driver's (a test gives a stand-in); ``engine`` its Dask engine (the
    server gives one on a client it keeps open, so that no cluster starts per hand-in)."""

    def __init__(self, root: Path, run: str | None = None, grade=driver.grade, engine=None, limits=None,
                 jobs: int = 2, scheduler: str | None = None, log=print, batch: bool = False):
        self.root = Path(root)
        self.store = Store.of(self.root, run)
        self.grade, self.engine, self.limits = grade, engine, limits
        self.jobs, self.scheduler, self.log = jobs, scheduler, log
        #: one ``grade`` call per assignment for the whole claimed batch (its submissions
        #: graded at once on the workers), instead of one call per hand-in, one after another
        self.batch = batch

    def recover(self) -> list[Submission]:
        return self.store.recover(time.time(), complete=lambda i: (self.root / UPLOADS / str(i)).is_dir())

    def once(self) -> int:
        """Claims what is queued and grades it; how many hand-ins were finished."""
        claimed = self.store.claim(time.time())
        for submission in claimed:
            place(self.root, submission)
        graded: dict[int, list | Exception] = {}
        if self.batch:  # the driver grades what changed in the assignment: every hand-in just placed
            for assignment in dict.fromkeys(s.assignment for s in claimed):
                try:
                    results = self.grade(self.root, None, assignment, jobs=self.jobs, log=self.log,
                                         limits=self.limits, scheduler=self.scheduler, engine=self.engine)
                except Exception as error:  # noqa: BLE001 - the batch's rows fail, never the server
                    results = error
                graded.update({s.id: results for s in claimed if s.assignment == assignment})
        for submission in claimed:
            if submission.id in graded:
                results = graded[submission.id]
            else:
                try:
                    results = self.grade(self.root, submission.student, submission.assignment, jobs=self.jobs,
                                         log=self.log, limits=self.limits, scheduler=self.scheduler,
                                         engine=self.engine)
                except Exception as error:  # noqa: BLE001 - one hand-in's failure is its row, never the server's
                    results = error
            if isinstance(results, Exception):
                self.store.finish(submission.id, time.time(),
                                  reason=f"the grader stopped on it ({type(results).__name__}: {results})")
                continue
            result = next((r for r in results if (r.student, r.assignment) ==
                           (submission.student, submission.assignment)), None)
            if result is None:
                self.store.finish(submission.id, time.time(), reason="the grader returned no result for it")
                continue
            page = self.root / "feedback" / submission.student / submission.assignment / \
                f"{submission.assignment}.html"
            if page.exists():
                (self.root / FEEDBACK).mkdir(parents=True, exist_ok=True)
                shutil.copyfile(page, self.root / FEEDBACK / f"{submission.id}.html")
            summary = {"status": result.status, "scores": result.scores, "max_scores": result.max_scores,
                       "notes": result.notes, "seconds": result.seconds}
            if result.status == GRADED:
                self.store.finish(submission.id, time.time(), result=summary)
            else:
                self.store.finish(submission.id, time.time(), result=summary,
                                  reason=f"{result.status}: {'; '.join(result.notes) or 'see the feedback'}")
        return len(claimed)

    def forever(self, stop, idle: float = 1.0) -> None:
        """Grades until ``stop`` (a threading.Event) is set, polling the queue when idle."""
        while not stop.is_set():
            try:
                if self.once():
                    continue
            except Exception as error:  # noqa: BLE001 - the server goes on; the claim is recovered at restart
                self.log(f"portal: the dispatcher stopped a batch ({type(error).__name__}: {error})")
            stop.wait(idle)
