"""Grading speed: one full TD3 submission, the sandbox, a class of 10, and Dask.

    python benchmarks/grading.py [--class-size 10] [--jobs 2] [--distribution-size 100]
    python benchmarks/grading.py --only one|sandbox|class|distribution|floor|recording

1. One TD3 submission (the solution, filled into the student notebook), graded
   by `python -m autograder grade` on one worker, against the same submission
   autograded by nbgrader alone (its default preprocessors, the course's time
   limit raised so that it finishes) in the same command: nbgrader alone also
   runs the training, plot and video cells meant for the student.
2. The sandbox's cost: the solution of each assignment graded on one worker in the
   sandbox and with --trusted (no sandbox), alternately, ``--repeats`` times each, in
   the same command; seconds per submission and their ratio (goal: at most 1.10).
3. A class of N students, each handing in both notebooks, graded on ``--jobs``
   workers.
4. Dask: a synthetic class of ``--distribution-size`` DDPG submissions (the sample
   class's solution, rewrites and bugs, in turn), graded on a LocalCluster of 1 and then
   2 workers, and on a process pool of 2 workers (the peer: the same tasks and driver),
   in one command: submissions per minute, the scaling efficiency from 1 to 2 workers
   (goal: at least 0.9) and Dask's overhead against the pool (goal: at most 5 %).

5. The floor (``--only floor``): what a submission's work needs at least, against what
   grading it costs its worker, in one command. TD3's floor is its notebook's cells that
   grading runs (the solution's code, then every test, the learning test's training
   and evaluation included) executed once in a bare process that has imported torch,
   BBRL and the course's module; DDPG's is the same for its notebook (its tests on a warm
   process). Each is then graded end to end on one worker (the course's grader, the
   sandbox, the judge and its student's process, nbgrader); its worker's seconds over the floor is the
   ratio. Ends with ``ratio to the floor: TD3 <r>, DDPG <r>``.
6. The driver's recording (``--only recording``): one DDPG submission graded once, then
   ``--recording-size`` students handing in the same notebook recorded by the driver from
   an engine that returns that outcome at once (no worker): the driver alone, as when a
   class's results come back faster than it records them. Ends with ``recording: <n>
   results/s``.

Prints seconds and ratios; writes bench-results/grading.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import sample_class  # noqa: E402
from autograder import course  # noqa: E402
from autograder.course.release import ensure_released  # noqa: E402
from autograder.grading import driver as grade, submission  # noqa: E402


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


def sandbox_overhead(base: Path, repeats: int, figures: dict) -> None:
    """Each assignment's solution, graded sandboxed and trusted, alternately."""
    from autograder.isolation import sandbox

    root = base / "sandbox"
    for assignment in course.assignments():
        _write(root, f"solution-{assignment}", assignment)
    ensure_released(root, course.assignments())
    seconds = {(mode, a): [] for mode in ("sandboxed", "trusted") for a in course.assignments()}
    for repeat in range(repeats):
        modes = [("sandboxed", sandbox.Limits()), ("trusted", None)]
        for mode, limits in modes if repeat % 2 == 0 else modes[::-1]:
            for result in grade.grade(root, jobs=1, log=lambda *a: None, limits=limits, force=True):
                if result.status == "missing":  # each solution student hands in one notebook
                    continue
                assert result.status == "graded" and result.auto_score == result.auto_max, (mode, result.notes)
                seconds[(mode, result.assignment)].append(result.seconds)
    for assignment in course.assignments():
        sandboxed = statistics.mean(seconds[("sandboxed", assignment)])
        trusted = statistics.mean(seconds[("trusted", assignment)])
        figures[f"{assignment} solution, sandboxed (s)"] = round(sandboxed, 2)
        figures[f"{assignment} solution, trusted (s)"] = round(trusted, 2)
        print(f"{assignment}: {sandboxed:.1f} s sandboxed, {trusted:.1f} s trusted (mean of {repeats}): "
              f"ratio {sandboxed / trusted:.3f}", flush=True)
    total = sum(statistics.mean(seconds[("sandboxed", a)]) for a in course.assignments())
    total_trusted = sum(statistics.mean(seconds[("trusted", a)]) for a in course.assignments())
    figures["sandbox overhead, all three solutions (ratio)"] = round(total / total_trusted, 3)
    print(f"the three solutions: {total:.1f} s sandboxed, {total_trusted:.1f} s trusted: ratio {total / total_trusted:.3f}")


@contextlib.contextmanager
def process_pool(scheduler, jobs, log):
    """The peer of Dask: the process pool the grader used before, with the same tasks and
    the same driver (each task starts its own grading process, as on Dask)."""
    with ProcessPoolExecutor(jobs) as pool:
        def run(common, work, limits):
            futures = {pool.submit(submission.work_in_folder, common, s, a, files, limits): (s, a)
                       for s, a, files in work}
            for future in as_completed(futures):
                yield [(*futures[future], future.result())]
        yield run


def distribution(base: Path, size: int, figures: dict) -> None:
    """A synthetic class of ``size`` DDPG submissions (the sample class's solution, rewrites
    and bugs, in turn), graded on Dask with 1 and then 2 local workers, and on a process
    pool of 2 workers, in one command; each run checks every grade."""
    samples = [s for s in sample_class.SAMPLES if s.assignment == sample_class.DDPG and s.status == "graded"
               and not s.blank and not s.notes]
    root = base / "distribution"
    chosen = {}
    for i in range(size):
        sample = samples[i % len(samples)]
        student = f"student-{i + 1:03d}"
        chosen[student] = sample
        sample_class.write_sample(sample_class.Sample(student, sample.assignment, sample.why, sample.edits),
                                  root / "submitted")
    ensure_released(root, [sample_class.DDPG])
    maxima = sample_class.max_scores(sample_class.DDPG)
    seconds = {}
    for label, jobs, engine in (("Dask, 1 worker", 1, None), ("Dask, 2 workers", 2, None),
                                ("process pool, 2 workers", 2, process_pool)):
        start = time.perf_counter()
        results = grade.grade(root, assignment=sample_class.DDPG, jobs=jobs, log=lambda *a: None, force=True,
                              engine=engine)
        seconds[label] = time.perf_counter() - start
        for result in results:
            assert result.scores == sample_class.expected_scores(chosen[result.student], maxima), (label, result.notes)
        rate = 60 * size / seconds[label]
        figures[f"{size} submissions, {label} (s)"] = round(seconds[label], 1)
        figures[f"{size} submissions, {label} (per minute)"] = round(rate, 1)
        print(f"{size} DDPG submissions, {label}: {seconds[label]:.0f} s, {rate:.1f} submissions per minute", flush=True)
    efficiency = seconds["Dask, 1 worker"] / seconds["Dask, 2 workers"] / 2
    overhead = seconds["Dask, 2 workers"] / seconds["process pool, 2 workers"] - 1
    figures["scaling efficiency, 1 to 2 workers"] = round(efficiency, 3)
    figures["Dask's overhead against the process pool"] = round(overhead, 3)
    worker_seconds = 2 * seconds["Dask, 2 workers"] / size
    figures["worker seconds per DDPG submission"] = round(worker_seconds, 2)
    print(f"scaling efficiency from 1 to 2 workers: {efficiency:.2f} (goal >= 0.9); Dask's overhead against the "
          f"process pool: {100 * overhead:+.1f} % (goal <= 5 %); {worker_seconds:.1f} worker-seconds per submission")


#: a bare process: imports first (not counted), then the notebook's graded path, timed
FLOOR_SCRIPT = r"""
import json, os, sys, time
import nbformat, torch, bbrl, bbrl_course  # noqa: F401  the imports a warm worker has made
from autograder.course.config import load_config
from autograder.course.preprocessors import grade_id
path, = sys.argv[1:]
skipped = set(load_config().CourseExecute.get("skip_cells", []))
cells = [c for c in nbformat.read(path, as_version=4).cells
         if c.cell_type == "code" and grade_id(c) not in skipped]
namespace = {"__name__": "__main__"}
wall, cpu = time.perf_counter(), time.process_time()
for cell in cells:
    source = "\n".join(line for line in cell.source.splitlines() if not line.lstrip().startswith(("%", "!")))
    exec(compile(source, grade_id(cell) or "cell", "exec"), namespace)
print(json.dumps({"wall": time.perf_counter() - wall, "cpu": time.process_time() - cpu}))
"""


def floor_of(assignment: str) -> dict:
    """The solution's cells that grading runs, executed once in a bare process (after its
    imports): seconds of wall-clock and CPU time."""
    import subprocess

    with tempfile.TemporaryDirectory(prefix="floor-") as tmp:
        env = {**__import__("os").environ, "BBRL_COURSE_OUTPUTS": tmp, "NBGRADER_EXECUTION": "autograde",
               "MPLBACKEND": "Agg"}
        env.pop("BBRL_COURSE_FAST", None)
        run = subprocess.run([sys.executable, "-c", FLOOR_SCRIPT, str(REPO / "solutions" / f"{assignment}.ipynb")],
                             cwd=tmp, env=env, capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"the floor of {assignment} failed: {run.stderr.strip().splitlines()[-1:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def floor(base: Path, figures: dict) -> None:
    ratios = {}
    for assignment, label in (("02-td3", "TD3"), ("01-ddpg", "DDPG")):
        bare = floor_of(assignment)
        root = base / f"floor-{assignment}"
        _write(root, "student-1", assignment)
        ensure_released(root, course.assignments())
        [result] = grade.grade(root, student="student-1", assignment=assignment, jobs=1, log=lambda *a: None,
                               force=True)
        assert result.status == "graded" and result.auto_score == result.auto_max, (result.scores, result.notes)
        ratios[label] = result.seconds / bare["wall"]
        figures[f"{label} floor (s, wall; cpu)"] = [round(bare["wall"], 1), round(bare["cpu"], 1)]
        figures[f"{label} graded, its worker's seconds"] = round(result.seconds, 1)
        print(f"{label}: floor {bare['wall']:.1f} s ({bare['cpu']:.1f} CPU-s) in a bare process; graded end to end "
              f"in {result.seconds:.1f} s on its worker ({result.seconds - bare['wall']:+.1f} s)", flush=True)
    figures["ratio to the floor"] = {k: round(v, 2) for k, v in ratios.items()}
    print(f"ratio to the floor: TD3 {ratios['TD3']:.2f}, DDPG {ratios['DDPG']:.2f}")


def recording(base: Path, size: int, figures: dict) -> None:
    """The driver alone: ``size`` results recorded from an engine that has them all at once (as a
    Dask cluster whose workers finished them while the driver was busy): the driver records
    them in batches of ``recording.BATCH``."""
    root = base / "recording"
    assignment = "01-ddpg"
    _write(root, "student-0000", assignment)
    ensure_released(root, course.assignments())
    first, outcome = sample_class.graded_with_outcome(root, "student-0000", assignment)
    assert first.status == "graded", first.notes
    source = root / "submitted" / "student-0000"
    for i in range(1, size + 1):
        shutil.copytree(source, root / "submitted" / f"student-{i:04d}")

    @contextlib.contextmanager
    def at_once(scheduler, jobs, log):
        def run(common, work, limits):
            yield [(s, a, outcome) for s, a, _files in work]
        yield run

    shown = {"n": 0}

    def progress(line):
        if line.startswith("  student-"):
            shown["n"] += 1
            if shown["n"] % max(size // 10, 1) == 0:
                print(f"  {shown['n']} of {size} recorded, {time.perf_counter() - start:.0f} s", flush=True)

    start = time.perf_counter()
    results = grade.grade(root, assignment=assignment, jobs=1, log=progress, force=True, engine=at_once)
    seconds = time.perf_counter() - start
    recorded = [r for r in results if r.status == "graded" and r.student != "student-0000"]
    assert len(recorded) == size, (len(recorded), size)
    assert all(r.scores == first.scores for r in recorded), "a result recorded with other scores than it was graded"
    rate = size / seconds
    figures[f"recording {size} results (s)"] = round(seconds, 1)
    figures["recording (results/s)"] = round(rate, 2)
    print(f"recording: {rate:.2f} results/s ({size} results in {seconds:.0f} s, the driver alone)")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--class-size", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2, help="gradings of each solution per mode (sandbox cost)")
    parser.add_argument("--only", choices=["one", "sandbox", "class", "distribution", "floor", "recording"],
                        help="run one part only")
    parser.add_argument("--recording-size", type=int, default=3000, help="results the driver records (--only recording)")
    parser.add_argument("--distribution-size", type=int, default=100, help="submissions of the Dask benchmark")
    args = parser.parse_args(argv)
    figures = {}
    base = Path(tempfile.mkdtemp(prefix="grading-bench-"))
    try:
        if args.only == "sandbox":
            sandbox_overhead(base, args.repeats, figures)
            raise _Done
        if args.only == "distribution":
            distribution(base, args.distribution_size, figures)
            raise _Done
        if args.only == "floor":
            floor(base, figures)
            raise _Done
        if args.only == "recording":
            recording(base, args.recording_size, figures)
            raise _Done
        # 1. one TD3 submission: the course's grader, then nbgrader alone
        root = base / "one"
        _write(root, "student-1", "02-td3")
        ensure_released(root, course.assignments())
        start = time.perf_counter()
        [result] = grade.grade(root, student="student-1", assignment="02-td3", jobs=1, log=lambda *a: None, force=True)
        ours = time.perf_counter() - start
        assert result.status == "graded" and result.auto_score == result.auto_max, (result.scores, result.notes)
        peer = nbgrader_alone(root, "student-1", "02-td3")
        figures["one TD3 submission, course grader (s)"] = round(ours, 1)
        figures["one TD3 submission, nbgrader alone (s)"] = round(peer, 1)
        print(f"one TD3 submission: {ours:.0f} s with the course's grader (full marks), "
              f"{peer:.0f} s with nbgrader alone; ratio {ours / peer:.2f}", flush=True)

        if args.only == "one":
            raise _Done
        # 2. the sandbox's cost
        sandbox_overhead(base, args.repeats, figures)
        # 3. a class: every student hands in both notebooks (--class-size 0: skipped)
        if args.class_size == 0:
            raise _Done
        root = base / "class"
        for i in range(1, args.class_size + 1):
            for assignment in course.assignments():
                _write(root, f"student-{i:02d}", assignment)
        start = time.perf_counter()
        results = grade.grade(root, jobs=args.jobs, log=lambda *a: None, force=True)
        total = time.perf_counter() - start
        assert all(r.status == "graded" and r.auto_score == r.auto_max for r in results)
        per = {a: statistics.mean(r.seconds for r in results if r.assignment == a) for a in course.assignments()}
        figures[f"class of {args.class_size}, both notebooks, {args.jobs} workers (s)"] = round(total, 1)
        figures.update({f"mean per {a} submission (s)": round(s, 1) for a, s in per.items()})
        print(f"class of {args.class_size} (both notebooks each, {len(results)} submissions) on {args.jobs} workers: "
              f"{total:.0f} s, {total / args.class_size:.0f} s per student; "
              + ", ".join(f"{a} {s:.0f} s per submission" for a, s in per.items()))
        # 4. Dask: 1 and 2 workers, and the process pool
        distribution(base, args.distribution_size, figures)
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
