"""What a student's function did to its arguments is read by the judge itself: the tensors of a
call live in memory shared with the student's process, so that a process that reports "in place"
for a tensor it replaced gains nothing (autograder/isolation/judge.py, Arena)."""

from __future__ import annotations

import time

import pytest
import torch

from autograder.isolation import judge

CELL = '''
import torch

def in_place(net, target, tau):
    with torch.no_grad():
        for p, t in zip(net.parameters(), target.parameters()):
            t.mul_(1 - tau).add_(p, alpha=tau)

def replaces_data(net, target, tau):
    for p, t in zip(net.parameters(), target.parameters()):
        t.data = tau * p.data + (1 - tau) * t.data

def adds_one(x):
    x += 1
    return x.sum()
'''
#: the channel's Server.op_call replaced to report every change as made in place
FORGER = '''
import sys
_server = sys.modules["__main__"].Server
_original = _server.op_call
def _forged(self, body, sent):
    answer = _original(self, body, sent)
    answer["changed"] = [[i, v, False] for i, v, _ in answer.get("changed", [])]
    return answer
_server.op_call = _forged
_server.tampering = lambda self: []
'''
NAMES = ["in_place", "replaces_data", "adds_one"]


def _judge(tmp_path, cells):
    student = judge.StudentProcess(tmp_path, cells, NAMES, None, cell_timeout=30)
    grader = judge.Judge(student, NAMES, 30, {})
    grader.ensure_started()
    grader.deadline = time.monotonic() + 60
    return student, grader


def _soft_update(grader, name):
    net, target = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    pointers = [p.data_ptr() for p in target.parameters()]
    expected = [0.3 * p + 0.7 * t for p, t in zip(net.parameters(), target.parameters())]
    grader.namespace[name](net, target, 0.3)
    right = all(torch.allclose(e, t) for e, t in zip(expected, target.parameters()))
    return right, pointers == [p.data_ptr() for p in target.parameters()]


@pytest.mark.parametrize("forged", [False, True])
def test_in_place_is_what_the_judge_reads(tmp_path, forged):
    cells = [["functions", CELL]] + ([["forger", FORGER]] if forged else [])
    student, grader = _judge(tmp_path, cells)
    try:
        assert student.arena is not None, "no shared memory on this system"
        assert student.tampering == []
        assert _soft_update(grader, "in_place") == (True, True)
        # replaced (.data): the right values, not in place, whatever the student's process says
        assert _soft_update(grader, "replaces_data") == (True, False)
        x = torch.arange(4.0)
        assert grader.namespace["adds_one"](x).item() == 10.0
        assert x.tolist() == [1.0, 2.0, 3.0, 4.0]  # modified in place, as the judge read it
    finally:
        student.stop()


WATCHED = '''
import torch
from torch.overrides import _get_current_function_mode_stack

def modes():
    return len(_get_current_function_mode_stack())

def records(x):
    return (x * 2).sum()
'''


def test_the_students_process_watches_for_a_graph_only_when_a_test_does(tmp_path):
    # the watch (a torch function mode) slows each torch operation of the student's code by
    # about a third, a training's too: only a test's records_autograd() turns it on there
    from bbrl_course.checks import records_autograd

    student = judge.StudentProcess(tmp_path, [["functions", WATCHED]], ["modes", "records"], None, cell_timeout=30)
    grader = judge.Judge(student, ["modes", "records"], 30, {})
    grader.ensure_started()
    grader.deadline = time.monotonic() + 60
    try:
        assert grader.namespace["modes"]() == 0
        with records_autograd() as graph:
            assert grader.namespace["modes"]() == 1
        assert not graph.built
        x = torch.ones(3, requires_grad=True)
        with records_autograd() as graph:  # what the student's function recorded, seen by the test
            grader.namespace["records"](x)
        assert graph.built
    finally:
        student.stop()
