"""A correct TD3 keeps every point on a loaded machine: graded as an instructor types it
while other processes keep both cores busy (a class graded two at a time, a notebook
training beside it). The learning test counts the student's CPU time, not the wall clock
that the load stretches (tests/test_judge_limits.py checks that rule on its own); here
every other limit of a TD3 submission (the 30 s cells, the submission's budget) is tried
under load too."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time

import sample_class
from conftest import REPO, cli

COURSE = "outputs/loaded-machine"
#: processes that keep a core busy each; a bounded loop, so that none outlives the test
SPINNERS = 2
SPIN = "import time\nend = time.monotonic() + 900\nwhile time.monotonic() < end:\n    pass\n"


def test_a_correct_td3_keeps_every_point_while_both_cores_are_busy():
    root = REPO / COURSE
    shutil.rmtree(root, ignore_errors=True)
    solution = next(s for s in sample_class.SAMPLES if s.student == "td3-solution")
    sample_class.write_sample(solution, root / "submitted")
    spinners = [subprocess.Popen([sys.executable, "-c", SPIN]) for _ in range(SPINNERS)]
    try:
        start = time.monotonic()
        run = cli("grade", "--root", COURSE, "--jobs", "1")
        wall = time.monotonic() - start
        assert all(s.poll() is None for s in spinners), "the load must last the whole grading"
    finally:
        for s in spinners:
            s.kill()
            s.wait()
    assert run.returncode == 0, run.stderr[-3000:]
    # every point of the solution, and its answers left to the instructor
    assert sample_class.check_grades(root, [solution]) == [], f"graded in {wall:.0f} s under load"
    print(f"td3-solution graded in {wall:.0f} s with {SPINNERS} busy processes on {os.cpu_count()} cores")
