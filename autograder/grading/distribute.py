"""The distribution of the grading: Dask.

By default a ``LocalCluster`` of ``jobs`` single-threaded worker processes on this
machine (no server to start); with ``scheduler="tcp://HOST:PORT"``, any Dask cluster
(SLURM or PBS through dask-jobqueue, Kubernetes through dask-kubernetes, or workers
started by hand: see the README). Dask schedules, retries and shows its dashboard; this
module only says what a task is and what a failure means for a grade:

- each worker starts its fork server of grading processes (``autograder.grading.zygote``) as
  soon as it joins, while the driver prepares the course's files;
- a task is ``submission.work_in_folder``: the course's files and the submission go
  with it (the course's files once, as the result of a task of their own, which Dask
  computes again if the worker that holds it is lost), so workers need no shared file
  system;
  the outcome (status, notes, the autograded notebook) comes back, and the driver
  alone records it (``recording.record_batch``, those that finished together at once);
- a task whose worker dies is run again on another worker by Dask; after a second
  death (the scheduler's ``allowed-failures``, 1 here) it is reported ``failed``; a task
  that raises is retried once (``retries=1``), then reported ``failed`` with its error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator

from autograder.grading import submission, zygote
from autograder.grading.recording import BATCH
from autograder.isolation import sandbox

#: deaths of a task's worker after which the task is failed (Dask's default is 3)
ALLOWED_FAILURES = 1


@contextlib.contextmanager
def client(scheduler: str | None, jobs: int):
    """A Dask client: on a new LocalCluster of ``jobs`` workers, or on ``scheduler``'s cluster
    (which must answer within $COURSE_SCHEDULER_TIMEOUT, 30 s by default)."""
    import dask
    from distributed import Client, LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES}):
        if scheduler:
            from autograder.course import CourseError

            try:
                connected = Client(scheduler, timeout=os.environ.get("COURSE_SCHEDULER_TIMEOUT", "30s"))
            except (OSError, ValueError, TypeError) as error:
                raise CourseError(f"no Dask scheduler answers at {scheduler} ({_reason(error)}): start it (see the "
                                  "README's cluster commands) or give its address as tcp://HOST:PORT") from None
            with connected:
                yield connected
            return
        with LocalCluster(n_workers=max(1, jobs), threads_per_worker=1, processes=True, memory_limit=0,
                          dashboard_address="127.0.0.1:0", silence_logs=logging.ERROR) as cluster, \
                Client(cluster) as connected:
            yield connected


@contextlib.contextmanager
def engine(scheduler: str | None, jobs: int, log=print):
    """Grading on Dask, as ``grade.grade`` uses it: yields ``run(common, jobs, limits)``, an
    iterator of (student, assignment, outcome) as the submissions finish."""
    with client(scheduler, jobs) as connected:
        link = dashboard(connected)
        if link:
            log(f"Dask dashboard: {link}")
        check_workers(connected)
        with contextlib.suppress(Exception):  # a head start only: the first task starts it otherwise
            connected.run(zygote.prestart)
        yield lambda common, work, limits: grade(connected, common, work, limits)


def check_workers(connected) -> None:
    """A CourseError, before any submission is sent, when the scheduler or a worker cannot
    import the grader (started from another environment) or runs another version of it
    (started from another checkout); a worker that joins later is checked by its first task."""
    from autograder.course import CourseError

    mine = submission.grader_version()
    fix = ("start every scheduler and worker from the course's environment at the driver's commit (after make "
           "setup: /path/to/the/course/.venv/bin/dask ...), then grade again")
    try:
        on_scheduler = connected.run_on_scheduler(submission.grader_version)
    except Exception as error:  # the scheduler cannot even read the function: no grader there
        raise CourseError(f"the Dask scheduler cannot import the grader ({_reason(error)}): {fix}") from None
    if on_scheduler != mine:
        raise CourseError(f"the Dask scheduler runs another version of the grader than this checkout "
                          f"(autograder/ or bbrl_course/ differ): {fix}")
    answers = connected.run(submission.grader_version, on_error="return")
    missing = sorted(address for address, answer in answers.items() if isinstance(answer, BaseException))
    if missing:
        raise CourseError(f"{len(missing)} Dask worker(s) cannot import the grader "
                          f"({_reason(answers[missing[0]])}): {', '.join(missing)}; {fix}")
    others = sorted(address for address, version in answers.items() if version != mine)
    if others:
        raise CourseError(
            f"{len(others)} Dask worker(s) run another version of the grader than this checkout (autograder/ or "
            f"bbrl_course/ differ): {', '.join(others)}; {fix}")


def _reason(error: BaseException) -> str:
    """The root cause of an error that Dask wrapped, in one line."""
    while error.__cause__ is not None or error.__context__ is not None:
        error = error.__cause__ or error.__context__
    return f"{type(error).__name__}: {str(error).splitlines()[0][:200] if str(error) else ''}".rstrip(": ")


def dashboard(connected) -> str | None:
    """The address of the cluster's dashboard, if it has one (Bokeh installed there)."""
    with contextlib.suppress(Exception):
        info = connected.scheduler_info()
        if "dashboard" in info.get("services", {}):
            return connected.dashboard_link
    return None


def grade(connected, common: dict[str, bytes], jobs: list[tuple[str, str, dict[str, bytes]]],
          limits: sandbox.Limits | None) -> Iterator[tuple[str, str, dict]]:
    """Grades ``jobs`` (student, assignment, files) on the cluster, started in their order;
    yields them as they finish, in batches: a list of (student, assignment, outcome) that
    finished together (the driver records a batch at once). A failure is an outcome with
    status ``failed``."""
    from distributed.scheduler import KilledWorker

    # keys of this run only: two drivers on one cluster never share a task (Dask would give
    # the second the first one's result for the same key)
    run = uuid.uuid4().hex[:8]
    # the course's files are a task's result, not scattered data: Dask's active memory
    # manager keeps one replica of scattered data, and a worker lost with it would cancel
    # every submission waiting for it ("already forgotten"); a result is computed again
    shared = connected.submit(_course_files, common, key=f"course-files-{run}", pure=False,
                              priority=len(jobs) + 1)
    futures = {}
    for index, (student, assignment, files) in enumerate(jobs):
        # in the order given (the driver puts the longest first): Dask runs higher priorities first
        future = connected.submit(submission.work_in_folder, shared, student, assignment, files, limits,
                                  key=f"grade-{student}-{assignment}-{run}", retries=1, pure=False,
                                  priority=len(jobs) - index)
        futures[future] = (student, assignment)
    try:
        for finished in _as_completed(futures, common):
            if finished is None:  # nothing finished in time: the cluster is stuck or lost
                yield [(*futures.pop(other), _failed(
                    f"no submission finished in {STALL:g} s past the longest grading's time: the Dask cluster "
                    "has no live worker or is stuck; check it (its dashboard), then grade again"))
                    for other in list(futures)]
                return
            finished = list(finished)
            # BATCH outcomes fetched at a time: the driver holds no more than it records at once
            for start in range(0, len(finished), BATCH):
                batch = []
                for future in finished[start:start + BATCH]:
                    student, assignment = futures.pop(future)
                    try:
                        outcome = future.result(timeout=60)
                    except KilledWorker:
                        outcome = _failed(f"its worker died twice while grading it (out of memory, or the machine "
                                          f"was lost); grade it alone: make grade STUDENT={student} "
                                          f"ASSIGNMENT={assignment}")
                    except Exception as error:
                        outcome = _failed(f"the grader failed twice: {type(error).__name__}: {str(error)[:300]}")
                    batch.append((student, assignment, outcome))
                yield batch
    finally:
        for future in futures:  # interrupted: nothing of this run goes on grading
            future.cancel()


#: seconds past a grading's own bound (its budget and grace) that the driver waits for the next
#: submission to finish, before it reports the rest failed (no live worker, a stuck cluster)
STALL = 600.0


def _as_completed(futures: dict, common: dict):
    """The futures as they finish, in sets of those that finished together; None once none
    has finished for longer than any grading may take (the driver never waits without a
    limit)."""
    from distributed import wait

    budget = float(common.get(submission.BUDGET, b"0") or 0) or 3600.0
    limit = budget + submission.GRADING_GRACE + STALL
    pending = set(futures)
    while pending:
        try:
            done, pending = wait(pending, timeout=limit, return_when="FIRST_COMPLETED")
        except TimeoutError:
            yield None
            return
        yield done  # every future finished by now: those that finished while the driver recorded too


def _course_files(files: dict[str, bytes]) -> dict[str, bytes]:
    """The course's files, as the result of a task (see ``grade``)."""
    return files


def _failed(reason: str) -> dict:
    return {"status": submission.FAILED, "notes": [reason], "seconds": 0.0, "files": {}, "log": reason}
