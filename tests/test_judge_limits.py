"""The learning test is bounded by the CPU time of the student's code, not by wall-clock time,
which a loaded machine stretches: a slow test whose code waits longer than its limit (as a
correct TD3 does on a busy machine) passes, and one that computes past its limit is stopped,
with a message that says it is a time limit (autograder/isolation/judge.py, run_cell)."""

from __future__ import annotations

import time

from autograder.course.preprocessors import TIME_LIMIT
from autograder.isolation import judge

CELL = '''
import time

def waits(seconds):
    time.sleep(seconds)  # the wall clock runs, the CPU does not: a loaded machine, as seen by a test
    return 1

def computes(seconds):
    end = time.process_time() + seconds
    while time.process_time() < end:
        pass
    return 1
'''
NAMES = ["waits", "computes"]


def _judge(tmp_path, limit):
    student = judge.StudentProcess(tmp_path, [["functions", CELL]], NAMES, None, cell_timeout=30)
    return student, judge.Judge(student, NAMES, 30, {"test_learns": limit})


def test_a_slow_test_counts_cpu_time_not_the_wall_clock(tmp_path):
    student, grader = _judge(tmp_path, limit=2)
    try:
        # 3 s of waiting, over the 2 s limit: not stopped (the wall-clock limit is 3 x 2 s)
        waited = grader.run_cell("assert waits(3) == 1", "test_learns", test=True)
        assert waited["error"] is None, waited
        # 4 s of computing: stopped after about 2 CPU-seconds, as a time limit
        start = time.monotonic()
        computed = grader.run_cell("assert computes(4) == 1", "test_learns", test=True)
        assert computed["error"] is not None and computed["error"][0] == TIME_LIMIT, computed
        assert "CPU-seconds" in computed["error"][1] and "not a failure to learn" in computed["error"][1]
        assert time.monotonic() - start < 3.9
        # a test that is not slow keeps its wall-clock limit
        assert grader.run_cell("assert waits(0.1) == 1", "test_quick", test=True)["error"] is None
    finally:
        student.stop()
