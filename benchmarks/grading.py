"""Grading speed: one full TD3 submission, and a class of 10.

    python benchmarks/grading.py [--class-size 10] [--jobs 2]

1. One TD3 submission (the solution, filled into the student notebook), graded
   by `python -m autograder grade` on one worker, against the same submission
   autograded by nbgrader alone (its default preprocessors, the course's time
   limit raised so that it finishes) in the same command: nbgrader alone also
   runs the training, plot and video cells meant for the student.
2. A class of N students, each handing in both notebooks, graded on ``--jobs``
   workers.

Prints seconds and ratios; writes bench-results/grading.json.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import sample_class  # noqa: E402
from autograder import course, grade  # noqa: E402


class _Done(Exception):
    pass


def _write(root: Path, student: str, assignment: str):
    sample = sample_class.Sample(student, assignment, "the solution")
    sample_class.write_sample(sample, root / "submitted")


def nbgrader_alone(root: Path, student: str, assignment: str) -> float:
    """Autograde with nbgrader's own preprocessors (the peer)."""
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory
    from traitlets.config import Config

    config = Config()
    config.CourseDirectory.root = str(root)
    config.CourseDirectory.course_id = "ddpg-td3"
    config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    config.Execute.timeout = 600
    api = NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)
    start = time.perf_counter()
    result = api.autograde(assignment, student, force=True, create=True)
    seconds = time.perf_counter() - start
    if not result.get("success"):
        print(result.get("log", "")[-2000:])
        raise SystemExit("nbgrader alone failed on the solution")
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--class-size", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args(argv)
    figures = {}
    base = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        # 1. one TD3 submission: the course's grader, then nbgrader alone
        root = base / "one"
        _write(root, "student-1", "02-td3")
        grade.ensure_released(root, course.assignments())
        start = time.perf_counter()
        [result] = grade.grade(root, student="student-1", assignment="02-td3", jobs=1, log=lambda *a: None)
        ours = time.perf_counter() - start
        assert result.status == "graded" and result.auto_score == result.auto_max, (result.scores, result.notes)
        peer = nbgrader_alone(root, "student-1", "02-td3")
        figures["one TD3 submission, course grader (s)"] = round(ours, 1)
        figures["one TD3 submission, nbgrader alone (s)"] = round(peer, 1)
        print(f"one TD3 submission: {ours:.0f} s with the course's grader (full marks), "
              f"{peer:.0f} s with nbgrader alone; ratio {ours / peer:.2f}", flush=True)

        # 2. a class: every student hands in both notebooks (--class-size 0: skipped)
        if args.class_size == 0:
            raise _Done
        root = base / "class"
        for i in range(1, args.class_size + 1):
            for assignment in course.assignments():
                _write(root, f"student-{i:02d}", assignment)
        start = time.perf_counter()
        results = grade.grade(root, jobs=args.jobs, log=lambda *a: None)
        total = time.perf_counter() - start
        assert all(r.status == "graded" and r.auto_score == r.auto_max for r in results)
        per = {a: statistics.mean(r.seconds for r in results if r.assignment == a) for a in course.assignments()}
        figures[f"class of {args.class_size}, both notebooks, {args.jobs} workers (s)"] = round(total, 1)
        figures.update({f"mean per {a} submission (s)": round(s, 1) for a, s in per.items()})
        print(f"class of {args.class_size} (both notebooks each, {len(results)} submissions) on {args.jobs} workers: "
              f"{total:.0f} s, {total / args.class_size:.0f} s per student; "
              + ", ".join(f"{a} {s:.0f} s per submission" for a, s in per.items()))
    except _Done:
        pass
    finally:
        shutil.rmtree(base, ignore_errors=True)
    out = REPO / "bench-results" / "grading.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    print(f"wrote {out.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
