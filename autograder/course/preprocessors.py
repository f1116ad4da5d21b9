"""nbgrader preprocessors of the course (configured in nbgrader_config.py).

- ``CourseExecute`` runs a submission as nbgrader's ``Execute`` does, and also:
  skips, when autograding, the cells that only train or display for the student
  (tag ``run`` in the solution notebooks), gives the cells tagged ``slow`` a longer time limit, and
  survives a kernel that dies (``os._exit``, a crash) or that cannot be
  interrupted after its time limit (SIGINT ignored): the kernel is restarted, the
  cells before are run again, the culprit cell gets an error output that names
  the reason, and grading goes on. nbgrader alone fails the whole submission.
- ``JudgeVerdicts`` (autograding with ``make grade``) gives the test cells the outputs
  of the judge (autograder/isolation/judge.py), where the tests ran apart from the student's code;
  ``CourseExecute`` then does not run them in the student's kernel.
- ``StderrToStdout`` moves what cells wrote to stderr (warnings, progress bars)
  to stdout: nbgrader gives 0 points to a graded cell with any stderr output.
- ``HideHiddenTests`` (feedback only) replaces hidden test code by a note and
  reduces the tracebacks of those cells to the error's message.
"""

from __future__ import annotations

import copy
import os
import re

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import from_dict
from nbformat.notebooknode import NotebookNode
from traitlets import Integer, List, Unicode

from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.preprocessors.execute import UnresponsiveKernelError

#: enames of the error outputs this module adds (the grader's report looks for them)
TIME_LIMIT = "TimeLimitExceeded"
KERNEL_DIED = "KernelDied"
TAMPERING = "TamperingSuspected"  # a test that ran while the student's code had tampered (judge.py)
HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)


def grade_id(cell) -> str | None:
    return cell.metadata.get("nbgrader", {}).get("grade_id")


def is_test(cell) -> bool:
    meta = cell.metadata.get("nbgrader", {})
    return cell.cell_type == "code" and bool(meta.get("grade")) and not meta.get("solution")


def _error(ename: str, evalue: str) -> NotebookNode:
    return NotebookNode(output_type="error", ename=ename, evalue=evalue, traceback=[f"{ename}: {evalue}"])


class CourseExecute(Execute):
    """nbgrader's Execute, with skipped cells, per-cell time limits and kernel restarts."""

    skip_cells = List([], help="grade_ids of cells not run while grading").tag(config=True)
    slow_cells = List([], help="grade_ids of cells that get slow_timeout").tag(config=True)
    slow_timeout = Integer(180, help="time limit (s) of the slow cells").tag(config=True)
    max_restarts = Integer(5, help="kernel restarts per notebook before giving up").tag(config=True)
    verdicts = Unicode("", help="the judge's verdicts (autograder/isolation/judge.py): when set, the test cells are "
                                "not run in the student's kernel; JudgeVerdicts writes their outputs").tag(config=True)

    def _get_timeout(self, cell):
        if cell is not None and grade_id(cell) in self.slow_cells:
            return self.slow_timeout
        return super()._get_timeout(cell)

    def preprocess(self, nb, resources=None, km=None):
        from nbclient import NotebookClient

        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        grading = os.environ.get("NBGRADER_EXECUTION") == "autograde"
        done: list[int] = []  # cells that ran without killing the kernel, to replay after a restart
        start, restarts = 0, 0
        while start < len(self.nb.cells):
            with self.setup_kernel():
                info = self.wait_for_reply(self.kc.kernel_info())
                self.nb.metadata["language_info"] = info["content"]["language_info"]
                for index in done:
                    # a copy: the outputs kept are those of the first run
                    self.execute_cell(copy.deepcopy(self.nb.cells[index]), index, store_history=True)
                for index in range(start, len(self.nb.cells)):
                    cell = self.nb.cells[index]
                    if cell.cell_type != "code":
                        continue
                    if grading and (grade_id(cell) in self.skip_cells or (self.verdicts and is_test(cell))):
                        cell.outputs = []
                        continue
                    try:
                        self.preprocess_cell(cell, resources, index)
                    except (DeadKernelError, CellTimeoutError, UnresponsiveKernelError) as error:
                        restarts += 1
                        if restarts > self.max_restarts:
                            raise
                        cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") != "error"]
                        violation = getattr(self.km, "violation", None)  # the sandbox's watchdog
                        if violation:
                            cell.outputs.append(_error(
                                KERNEL_DIED,
                                f"the sandbox stopped the kernel while it ran this cell: it used {violation}; "
                                "the kernel was restarted and this cell scores 0",
                            ))
                        elif isinstance(error, DeadKernelError):
                            cell.outputs.append(_error(
                                KERNEL_DIED,
                                "the kernel died while running this cell (os._exit, exit(), a crash or "
                                "too much memory); it was restarted and this cell scores 0",
                            ))
                        else:
                            cell.outputs.append(_error(
                                TIME_LIMIT,
                                f"this cell ran over its time limit of {self._get_timeout(cell)} s and "
                                "ignored the interruption; the kernel was restarted and this cell scores 0",
                            ))
                        self.log.warning("cell %s (%s): %s", index, grade_id(cell), type(error).__name__)
                        start = index + 1
                        break
                    timed_out = [o for o in cell.outputs if o.get("ename") == "CellTimeoutError"]
                    for output in timed_out:
                        output.ename = TIME_LIMIT
                        output.evalue = (
                            f"this cell ran over its time limit of {self._get_timeout(cell)} s and was "
                            "interrupted (an infinite loop?)"
                        )
                        output.traceback = [f"{TIME_LIMIT}: {output.evalue}"]
                    if not timed_out:  # replaying it would cost the time limit again
                        done.append(index)
                else:
                    start = len(self.nb.cells)
        self.set_widgets_metadata()
        return self.nb, self.resources


class JudgeVerdicts(NbGraderPreprocessor):
    """The outputs of the test cells, from the judge's verdicts (the tests ran there, apart
    from the student's code): what the test printed, and its error if it failed. A test
    the judge has no verdict for scores 0."""

    verdicts = Unicode("", help="the judge's verdicts file (JSON); empty: the kernel ran the tests").tag(config=True)
    judge_pid = Integer(0, help="the judge's process, a child of this one that runs while the kernel does: "
                                "its verdicts are read once it has ended (it is not reaped here)").tag(config=True)

    def preprocess(self, nb, resources):
        if not self.verdicts:
            return nb, resources
        import json

        if self.judge_pid:
            try:  # waits for the judge to end, and leaves its exit status to its parent's caller
                os.waitid(os.P_PID, self.judge_pid, os.WEXITED | os.WNOWAIT)
            except ChildProcessError:
                pass
        try:
            with open(self.verdicts) as f:
                self._verdicts = json.load(f)
        except (OSError, ValueError):  # the judge failed: the submission is reported failed
            self._verdicts = {}
        return super().preprocess(nb, resources)

    def preprocess_cell(self, cell, resources, index):
        if not is_test(cell):
            return cell, resources
        verdict = self._verdicts.get(grade_id(cell))
        if verdict is None:
            cell.outputs = [_error("NotGraded", "the judge has no verdict for this test; it scores 0")]
            return cell, resources
        outputs = []
        if verdict.get("stdout"):
            outputs.append(NotebookNode(output_type="stream", name="stdout", text=verdict["stdout"]))
        for shown in verdict.get("displays", []):  # figures the judge made (the learning curve)
            outputs.append(from_dict(shown))
        if verdict.get("error"):
            outputs.append(_error(*verdict["error"]))
        cell.outputs = outputs
        cell.execution_count = None
        return cell, resources


class StderrToStdout(NbGraderPreprocessor):
    """Stream outputs to stderr become stdout, so that a warning does not zero a test."""

    def preprocess_cell(self, cell, resources, index):
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                output.name = "stdout"
        return cell, resources


class HideHiddenTests(NbGraderPreprocessor):
    """Feedback: hidden tests replaced by a note, tracebacks of their cells reduced."""

    def preprocess_cell(self, cell, resources, index):
        if cell.cell_type == "code" and HIDDEN.search(cell.source):
            cell.source = HIDDEN.sub("# (hidden tests: if one failed, its message is below)", cell.source)
            for output in cell.get("outputs", []):
                if output.get("output_type") == "error":
                    output.traceback = [f"{output.ename}: {output.evalue}"]
        return cell, resources
