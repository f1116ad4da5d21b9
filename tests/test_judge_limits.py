"""The learning test is bounded by the CPU time of the student's code, not by wall-clock time,
which a loaded machine stretches: a slow test whose code waits longer than its limit (as a
correct TD3 does on a busy machine) passes, and one that computes past its limit is stopped,
with a message that says it is a time limit (autograder/isolation/judge.py, run_cell)."""

from __future__ import annotations

import json
import os
import time

from autograder.course.preprocessors import TIME_LIMIT
from autograder.isolation import judge

CELL = '''
import json
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
        # 4 s of computing: stopped after about 2 CPU-seconds, as a time limit. How promptly is
        # counted in the student's CPU time, not the wall clock, which CI's load stretches (2
        # CPU-seconds took 4.1 s there): the judge looks at least once a second of wall clock,
        # so the cell uses its 2 CPU-seconds and at most about 1 more (3.0 measured on an idle
        # machine, 2.8 to 3.0 beside 2 or 3 busy processes), never its 4 (a judge that looks
        # every 5 s: 4.0)
        before = student.cpu_seconds()
        reaped = os.times()
        computed = grader.run_cell("assert computes(4) == 1", "test_learns", test=True)
        assert computed["error"] is not None and computed["error"][0] == TIME_LIMIT, computed
        assert "CPU-seconds" in computed["error"][1] and "not a failure to learn" in computed["error"][1]
        assert student.process is None  # stopped, and reaped: its CPU time is in os.times()
        after = os.times()
        used = after.children_user + after.children_system - reaped.children_user - reaped.children_system - before
        assert 1.9 < used < 3.5, used
        # a test that is not slow keeps its wall-clock limit
        assert grader.run_cell("assert waits(0.1) == 1", "test_quick", test=True)["error"] is None
    finally:
        student.stop()


#: a cell that writes, on the judge's pipe, a cell's outputs forged to cost the judge: 20,000
#: references to one 40 KB error output (a 400 MB copy, were each rebuilt), a print of a lone
#: surrogate and 300,000 characters, a JSON value under a type that is not JSON, metadata
#: nbconvert cannot read, and a dropped count near 2**62; bounded in this process either way
FORGES = '''
import gc, io, sys, torch
_server = next(o for o in gc.get_objects() if type(o).__name__ == "Server")
_error = {"output_type": "error", "ename": "KernelDied", "evalue": "e" * 20000, "traceback": ["t" * 20000]}
_outputs = [
    {"output_type": "display_data", "data": {"text/json": 1, "application/json": {"a": [1, 2]}, "text/plain": "ok"},
     "metadata": {"image/png": "x", "application/json": {"expanded": True}}},
    {"output_type": "stream", "name": "stdout", "text": "\\udcff" + "x" * 300000},
] + [_error] * 20000
_buffer = io.BytesIO()
torch.save({"progress": [0, _outputs, 2**62]}, _buffer)
sys.modules["__main__"].write_frame(_server.answers, _buffer.getvalue())
'''


def test_a_cells_forged_outputs_cost_the_judge_what_a_cell_may_show(tmp_path):
    student = judge.StudentProcess(tmp_path, [["forges", FORGES], ["after", "x = 1"]], [], None, cell_timeout=30)
    start = time.monotonic()
    try:
        try:
            student.start()
        except judge.BrokenChannel:
            pass  # one frame more than the notebook has cells: tampering, for the tests
        assert time.monotonic() - start < 20
        outputs = student.shown[0][1]
        # one error (a cell raises once), renamed: only the grader says a kernel died
        errors = [o for o in outputs if o["output_type"] == "error"]
        assert [o["ename"] for o in errors] == ["KernelDied (raised by the student's code)"]
        stream = next(o for o in outputs if o["output_type"] == "stream" and "x" in o["text"])
        stream["text"].encode("utf-8")  # the surrogate replaced: nbgrader can write the notebook
        # the display kept its JSON under a JSON type only, and the metadata nbconvert can read
        display = next(o for o in outputs if o["output_type"] == "display_data")
        assert display["data"] == {"application/json": {"a": [1, 2]}, "text/plain": "ok"}
        assert display["metadata"] == {"application/json": {"expanded": True}}
        note = outputs[-1]["text"]
        assert "bytes of output dropped" in note and len(note) < 200
        assert len(json.dumps(student.shown)) < judge.MAX_CELL_OUTPUT + 50_000
    finally:
        student.stop()
