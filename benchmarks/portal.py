"""The submission portal's overhead: the same hand-ins graded by ``python -m autograder
grade`` and handed in through the portal, in one command.

    python benchmarks/portal.py [--size 10] [--jobs 2] [--sandbox]

1. ``grade``: a course folder with ``--size`` 01-ddpg hand-ins in submitted/ (the sample
   class's solution, rewrites and bugs, in turn), graded by ``python -m autograder grade
   --root ... --assignment 01-ddpg --jobs J`` (``--trusted`` unless ``--sandbox``): its
   wall time, Dask's start-up included.
2. The portal: another course folder, the same hand-ins, one student each. The server is
   started (``portal serve``; without ``--sandbox``, its ``serve(..., limits=None)``, as
   the load test), the students sign in, then all post at once over HTTP; the time from
   the server's start to the last ``graded`` (start-up, uploads, claims, placing,
   grading, recording, the status pages polled every 0.5 s), and from the first post.

Prints both, the portal's overhead per hand-in ((portal - grade) / size) and the ratio;
checks that both graded every hand-in with the same scores; writes
bench-results/portal.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))

import sample_class  # noqa: E402
from portal_client import Student, cli_server, free_port, links, trusted_server, write_roster  # noqa: E402

ASSIGNMENT = sample_class.DDPG
KINDS = [s for s in sample_class.SAMPLES if s.assignment == ASSIGNMENT and s.status == "graded" and not s.blank
         and not s.student.startswith(("bad-", "probe-"))][:8]


def _scores(root: Path) -> dict[str, dict]:
    with (root / "grades" / f"{ASSIGNMENT}.csv").open(newline="") as f:
        return {r["student"]: {k: v for k, v in r.items() if k.startswith(("test_", "answer_"))}
                for r in csv.DictReader(f)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--sandbox", action="store_true", help="grade in the sandbox (default: trusted, both)")
    args = parser.parse_args()
    base = REPO / "outputs" / "bench-portal"
    shutil.rmtree(base, ignore_errors=True)
    students = [f"student-{i:02d}" for i in range(args.size)]
    samples = {s: KINDS[i % len(KINDS)] for i, s in enumerate(students)}
    load = [os.getloadavg()[0]]

    # 1. grade
    graded = base / "grade"
    for student, sample in samples.items():
        folder = graded / "submitted" / student / ASSIGNMENT
        folder.mkdir(parents=True)
        shutil.copyfile(sample_class.write_sample(sample, base / "samples"), folder / f"{ASSIGNMENT}.ipynb")
    command = [sys.executable, "-m", "autograder", "grade", "--root", str(graded.relative_to(REPO)),
               "--assignment", ASSIGNMENT, "--jobs", str(args.jobs), *([] if args.sandbox else ["--trusted"])]
    start = time.perf_counter()
    run = subprocess.run(command, cwd=REPO, capture_output=True, text=True)
    grade_seconds = time.perf_counter() - start
    if run.returncode != 0:
        raise SystemExit(f"grade failed: {run.stderr[-2000:]}")
    print(f"grade: {args.size} hand-ins in {grade_seconds:.1f} s ({' '.join(command[1:])})", flush=True)
    load.append(os.getloadavg()[0])

    # 2. the portal
    portal = base / "portal"
    write_roster(portal, students)
    port = free_port()
    made = subprocess.run([sys.executable, "-m", "autograder", "portal", "tokens", "--root",
                           str(portal.relative_to(REPO)), "--roster", str((portal / "roster.csv").relative_to(REPO)),
                           "--url", f"http://127.0.0.1:{port}"], cwd=REPO, capture_output=True, text=True)
    signin = links(made.stdout)
    relative = str(portal.relative_to(REPO))
    server = (cli_server(relative, port, portal / "server.log", "--jobs", str(args.jobs)) if args.sandbox
              else trusted_server(relative, port, portal / "server.log", jobs=args.jobs))
    start = time.perf_counter()
    server.start()
    started = time.perf_counter() - start
    try:
        sessions = {s: Student(signin[s]) for s in students}
        notebooks = {s: sample_class.write_sample(samples[s], base / "samples").read_bytes() for s in students}
        posted = time.perf_counter()
        with ThreadPoolExecutor(len(students)) as pool:
            ids = dict(zip(students, pool.map(lambda s: sessions[s].hand_in(ASSIGNMENT, notebooks[s]), students)))
        received = time.perf_counter() - posted
        with ThreadPoolExecutor(len(students)) as pool:
            states = list(pool.map(lambda s: sessions[s].wait(ids[s], 1800, every=0.5)[0], students))
        after_post = time.perf_counter() - posted
        portal_seconds = time.perf_counter() - start
    finally:
        server.stop()
    load.append(os.getloadavg()[0])
    if set(states) != {"graded"}:
        raise SystemExit(f"the portal did not grade them all: {states}\n{server.output()[-3000:]}")
    same = _scores(graded) == _scores(portal)
    overhead = (portal_seconds - grade_seconds) / args.size
    figures = {
        "size": args.size, "jobs": args.jobs, "sandbox": args.sandbox,
        "grade (s)": round(grade_seconds, 1), "portal, start to last graded (s)": round(portal_seconds, 1),
        "portal start-up (s)": round(started, 1), "uploads received (s)": round(received, 2),
        "portal, first post to last graded (s)": round(after_post, 1),
        "overhead per hand-in (s)": round(overhead, 2), "ratio": round(portal_seconds / grade_seconds, 3),
        "same scores": same, "load average (1 min) before, between, after": load,
    }
    print(f"portal: server started in {started:.1f} s, {args.size} uploads received in {received:.2f} s, "
          f"all graded {after_post:.1f} s after the first post: {portal_seconds:.1f} s from start")
    print(f"overhead per hand-in: {overhead:+.2f} s; ratio portal / grade: {portal_seconds / grade_seconds:.3f}; "
          f"same scores in grades/{ASSIGNMENT}.csv: {same}; load average {', '.join(f'{x:.1f}' for x in load)}")
    out = REPO / "bench-results" / "portal.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps(figures, indent=1))
    if not same:
        raise SystemExit("the portal's grades differ from grade's")


if __name__ == "__main__":
    main()
