"""Where one submission's grading spends its time, phase by phase, on its worker.

    python benchmarks/profile_submission.py [--assignment 01-ddpg] [--repeats 3] [--trusted]
    python benchmarks/profile_submission.py --end-to-end [--repeats 3]

Grades the solution of an assignment (filled into the student notebook) as a worker's
grading process does (``submission.work``, in a child forked from this process after the
fork server's preparation, as the server forks it), with the phases timed: the release's
metadata, the judge's fork, its student process's start (bwrap, its imports, the
student's cells) and its tests, nbgrader's API, its two conversions (sanitizing, then
the course's preprocessors: the cells' outputs from the judge's student's process, the
judge's verdicts...), the wait for the judge, the feedback. Each phase: wall seconds,
and the CPU seconds of its process (``time.process_time``; the student process's own
CPU is its children's, shown apart). Since the student's code runs once (2026-12-07), no
kernel starts while grading: the kernel's rows stay empty. The first run is a warm-up unless
``--repeats 1``; the table is the median of the others.

``--end-to-end``: no table; the submission graded ``--repeats`` times by ``recording.grade_one``
(a worker's fork server, started by the first, then the driver's recording), with its
worker's seconds (``Result.seconds``: the grading process, forked from the server).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import functools
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

EVENTS = Path(tempfile.gettempdir()) / f"profile-submission-{os.getpid()}.jsonl"


def _record(label: str, start: float, wall: float, cpu: float):
    with open(EVENTS, "a") as f:
        f.write(json.dumps({"label": label, "pid": os.getpid(), "start": start, "wall": wall, "cpu": cpu}) + "\n")


def timed(owner, name: str, label: str | None = None, detail=None):
    """Replaces owner.name by a wrapper that records each call's wall and CPU seconds
    (``detail(args)``: a suffix of the label, per call)."""
    original = getattr(owner, name)
    label = label or f"{getattr(owner, '__name__', owner)}.{name}"

    @functools.wraps(original)
    def wrapper(*args, **kwargs):
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            return original(*args, **kwargs)
        finally:
            _record(label + (detail(args) if detail else ""), wall, time.perf_counter() - wall,
                    time.process_time() - cpu)

    setattr(owner, name, wrapper)


def instrument():
    import nbclient
    import nbconvert.exporters
    import nbgrader.apps
    import nbgrader.converters.autograde as autograde
    import nbgrader.converters.base as base
    import nbgrader.converters.generate_feedback as generate_feedback
    from autograder.course import preprocessors as course_pp
    from autograder.grading import submission
    from autograder.isolation import judge
    from autograder.reporting import feedback
    from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor
    import nbgrader.preprocessors as ngp
    from autograder.isolation import inert

    timed(submission, "use_release_metadata", "worker: release metadata")
    timed(submission, "start_judge", "worker: fork the judge")
    timed(submission, "judge_failure", "worker: wait for the judge")
    timed(submission, "api", "worker: NbGraderAPI()")
    timed(nbgrader.apps.NbGraderAPI, "autograde", "nbgrader autograde (all)")
    timed(autograde.Autograde, "init_assignment", "  autograde: init_assignment (gradebook, copies)")
    timed(base.BaseConverter, "convert_single_notebook", "  nbconvert pass (sanitize / autograde / feedback)")
    timed(nbclient.NotebookClient, "start_new_kernel", "    kernel: start (sandbox, ipykernel)")
    timed(nbclient.NotebookClient, "start_new_kernel_client", "    kernel: client ready")
    timed(course_pp.CourseExecute, "preprocess_cell", "    kernel: a cell")
    timed(course_pp.CourseExecute, "preprocess", "    pp CourseExecute (kernel start+cells+stop)")
    for cls in (course_pp.JudgeVerdicts, course_pp.StderrToStdout, ngp.IgnorePattern, ClearMetadataPreprocessor,
                ngp.LimitOutput, ngp.SaveAutoGrades, ngp.AssignLatePenalties, ngp.CheckCellMetadata, ngp.ClearOutput,
                ngp.DeduplicateIds, ngp.OverwriteKernelspec, ngp.OverwriteCells, ngp.GetGrades,
                course_pp.HideHiddenTests, inert.SanitizeOutputs, CSSHTMLHeaderPreprocessor):
        timed(cls, "preprocess", f"    pp {cls.__name__}")
    timed(nbconvert.exporters.HTMLExporter, "from_notebook_node", "    HTML export (feedback)")
    timed(feedback, "clean_autograded", "worker: clean_autograded")
    timed(nbgrader.apps.NbGraderAPI, "generate_feedback", "worker: generate_feedback (all)")
    timed(generate_feedback.GenerateFeedback, "init_assignment", "  feedback: init_assignment")
    # the judge (a forked child of this process)
    timed(judge, "run", "judge: run (all)")
    timed(judge.StudentProcess, "start", "  judge: student process start (bwrap, imports, student cells)")
    timed(judge.Judge, "run_cell", "  judge: cell ", detail=lambda args: args[2])
    timed(judge.StudentProcess, "request", "    judge: request ", detail=lambda args: args[1])
    timed(judge.StudentProcess, "stop", "  judge: stop the student process")
    timed(submission, "work", "worker: work (all)")


def one(root: Path, student: str, assignment: str, limits):
    from autograder.grading import submission

    EVENTS.unlink(missing_ok=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="profile-work-") as tmp:
        folder = Path(tmp)
        common = submission.course_files(root, [assignment])
        submission._write_tree(folder, common)
        submission._write_tree(folder / "submitted" / student / assignment,
                               submission.submission_files(root, student, assignment))
        pid = os.fork()  # as the fork server does: each grading starts from the prepared process
        if pid == 0:
            code = 1
            try:
                outcome = submission.work(folder, student, assignment, limits)
                (folder / "status").write_text(f"{outcome['status']} {outcome['notes']}")
                code = 0
            finally:
                os._exit(code)
        os.waitpid(pid, 0)
        status = (folder / "status").read_text()
    total = time.perf_counter() - wall
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    children = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    assert status.startswith("graded"), status
    events = [json.loads(line) for line in EVENTS.read_text().splitlines()]
    return total, children, events


STUDENT = "student-1"


@contextlib.contextmanager
def solution_course(assignment: str):
    """A course folder of its own holding the assignment's solution, handed in by STUDENT."""
    import sample_class
    from autograder.course.release import ensure_released

    with tempfile.TemporaryDirectory(prefix="profile-course-") as tmp:
        root = Path(tmp)
        sample_class.write_sample(sample_class.Sample(STUDENT, assignment, "the solution"), root / "submitted")
        ensure_released(root, [assignment])
        yield root


def end_to_end(args):
    from autograder.grading import recording
    from autograder.isolation import sandbox

    limits = None if args.trusted else sandbox.Limits()
    student = STUDENT
    with solution_course(args.assignment) as root:
        seconds = []
        for _ in range(args.repeats):
            result = recording.grade_one(root, student, args.assignment, limits)
            assert result.status == "graded" and result.auto_score == result.auto_max, (result.scores, result.notes)
            seconds.append(result.seconds)
    print(f"{args.assignment} solution graded end to end: {', '.join(f'{s:.2f}' for s in seconds)} s of its worker "
          f"(the first starts the fork server); median of the others {statistics.median(seconds[1:] or seconds):.2f} s")


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--assignment", default="01-ddpg")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--trusted", action="store_true")
    parser.add_argument("--end-to-end", action="store_true")
    args = parser.parse_args()
    if args.end_to_end:
        return end_to_end(args)

    t0 = time.perf_counter()
    from autograder.grading import zygote

    os.environ["MPLBACKEND"] = "Agg"
    zygote.prepare()
    print(f"the fork server's preparation: {time.perf_counter() - t0:.2f} s (paid once per worker)")
    from autograder.isolation import sandbox

    instrument()
    limits = None if args.trusted else sandbox.Limits()
    with solution_course(args.assignment) as root:
        runs = [one(root, STUDENT, args.assignment, limits) for _ in range(args.repeats)]
    measured = runs[1:] if len(runs) > 1 else runs
    print(f"work(): {', '.join(f'{r[0]:.2f}' for r in runs)} s wall; "
          f"{', '.join(f'{r[1]:.2f}' for r in runs)} CPU-s in the grading process and its children (those it "
          "waited for: the judge and its student's process)")
    table = collections.defaultdict(lambda: [[], [], []])
    for _, _, events in measured:
        sums = collections.defaultdict(lambda: [0.0, 0.0, 0])
        for e in events:
            s = sums[e["label"]]
            s[0] += e["wall"]
            s[1] += e["cpu"]
            s[2] += 1
        for label, (w, c, n) in sums.items():
            table[label][0].append(w)
            table[label][1].append(c)
            table[label][2].append(n)
    order = []
    for e in sorted(measured[-1][2], key=lambda e: e["start"]):
        if e["label"] not in order:
            order.append(e["label"])
    print(f"{'phase':70} {'wall s':>7} {'cpu s':>7} {'calls':>5}   (median of {len(measured)} runs)")
    for label in order:
        w, c, n = table[label]
        print(f"{label:70} {statistics.median(w):7.2f} {statistics.median(c):7.2f} {max(n):5d}")


if __name__ == "__main__":
    main()
