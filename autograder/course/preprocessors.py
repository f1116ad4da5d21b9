"""nbgrader preprocessors of the course (configured in nbgrader_config.py).

- ``CourseExecute``: while grading with the judge (``make grade``), no kernel runs: the
  cells get the outputs of the judge's student's process (autograder/isolation/judge.py),
  which ran the student's code once for both the tests and the feedback. Otherwise (the
  instructor's runs: validation, the notebooks' tests) it runs a notebook as nbgrader's
  ``Execute`` does, and also: skips, when autograding, the cells that only train or
  display for the student (tag ``run`` in the solution notebooks), gives the cells
  tagged ``slow`` a longer time limit, and survives a kernel that dies (``os._exit``, a
  crash) or that cannot be interrupted after its time limit (SIGINT ignored): the
  kernel is restarted, the cells before are run again, the culprit cell gets an error
  output that names the reason, and grading goes on. nbgrader alone fails the whole
  submission. Outputs are cut at the same byte limits either way (the module's
  MAX_CELL_OUTPUT and MAX_OUTPUT, which the judge uses; ``max_cell_output`` and
  ``max_output`` configure the kernel's).
- ``JudgeVerdicts`` (autograding with ``make grade``) gives the test cells the outputs
  of the judge, where the tests ran apart from the student's code.
- ``StderrToStdout`` moves what cells wrote to stderr (warnings, progress bars)
  to stdout: nbgrader gives 0 points to a graded cell with any stderr output.
- ``HideHiddenTests`` (feedback only) replaces hidden test code by a note and
  reduces the tracebacks of those cells to the error's message.
"""

from __future__ import annotations

import copy
import json
import os
import re
import sys
import time

from nbclient.exceptions import CellTimeoutError, DeadKernelError
from nbformat import from_dict
from nbformat.notebooknode import NotebookNode
from traitlets import Float, Integer, List, Unicode

from nbgrader.preprocessors import Execute, NbGraderPreprocessor
from nbgrader.preprocessors.execute import UnresponsiveKernelError

# the enames of the error outputs this module adds (defined where a process that only reads
# them need not import nbgrader)
from autograder.course import KERNEL_DIED, TAMPERING, TIME_LIMIT  # noqa: F401

HIDDEN = re.compile(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", re.S)
#: what the student's code prints or displays that the executed notebook keeps (bytes)
MAX_CELL_OUTPUT = 100_000  # per cell
MAX_OUTPUT = 1_000_000  # per submission
#: an error output's message and traceback are kept up to this (bytes, each)
MAX_ERROR_OUTPUT = 10_000
#: seconds the judge has past the submission's budget to write its verdicts, before it is killed
JUDGE_GRACE = 60
OUTPUT_TYPES = ("stream", "display_data", "execute_result", "error", "update_display_data")


def budget_note(budget: float, during: bool) -> str:
    if during:
        return (f"the submission's time budget of {budget:g} s ran out during this cell: it was interrupted, and "
                "the cells after it were not run")
    return f"the submission's time budget of {budget:g} s ran out before this cell: it and the cells after it were not run"


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
    verdicts = Unicode("", help="the judge's verdicts (autograder/isolation/judge.py): when set, no kernel runs: "
                                "the cells get the outputs of the judge's student's process (cut at the judge's "
                                "MAX_CELL_OUTPUT and MAX_OUTPUT), and JudgeVerdicts writes the test cells'").tag(config=True)
    deadline = Float(0.0, help="time.time() when the submission's time budget runs out (0: none); no cell "
                               "runs past it").tag(config=True)
    budget = Float(0.0, help="the submission's time budget (s), for the notes").tag(config=True)
    judge_pid = Integer(0, help="the judge's process (a child of this one): with ``verdicts``, its student's process "
                                "runs the cells, and their outputs are read once it has ended").tag(config=True)
    max_cell_output = Integer(MAX_CELL_OUTPUT, help="bytes of output kept per cell").tag(config=True)
    max_output = Integer(MAX_OUTPUT, help="bytes of output kept per notebook").tag(config=True)

    def _get_timeout(self, cell):
        if cell is not None and grade_id(cell) in self.slow_cells:
            timeout = self.slow_timeout
        else:
            timeout = super()._get_timeout(cell)
        if self.deadline and os.environ.get("NBGRADER_EXECUTION") == "autograde":
            left = max(1, int(self.deadline - time.time() + 1))
            timeout = left if timeout is None or timeout < 0 else min(timeout, left)
        return timeout

    def _over_budget(self) -> bool:
        return bool(self.deadline) and time.time() >= self.deadline

    # --- outputs bounded in bytes, per cell and per notebook, as they arrive
    def process_message(self, msg, cell, cell_index):
        # while grading only (the student's code): the instructor's own runs of the solutions
        # (validation, the tests of the notebooks) keep their figures whole
        if os.environ.get("NBGRADER_EXECUTION") == "autograde" and (
                msg.get("msg_type") in OUTPUT_TYPES or str(msg.get("msg_type")).startswith("comm")):
            msg = self._bounded(msg)
            if msg is None:
                return None
        return super().process_message(msg, cell, cell_index)

    def _bounded(self, msg):
        """The message, cut to what the limits leave (None: dropped); the dropped bytes are counted."""
        room = min(self.max_cell_output - self._cell_bytes, self.max_output - self._total_bytes)
        content, used, dropped = fit(msg["msg_type"], msg.get("content", {}), room)
        self._cell_bytes += used
        self._total_bytes += used
        self._dropped += dropped
        if content is None:
            return None
        msg["content"] = content
        return msg

    def preprocess_cell(self, cell, resources, index):
        self._cell_bytes = self._dropped = 0
        try:
            return super().preprocess_cell(cell, resources, index)
        finally:
            if self._dropped:
                cell.setdefault("outputs", []).append(dropped_note(self._dropped, self.max_cell_output,
                                                                   self.max_output))
                self._notes_dropped += self._dropped

    def preprocess(self, nb, resources=None, km=None):
        from nbclient import NotebookClient

        if self.verdicts:  # set only by the grader (autograder/course/config.py's api)
            return self._from_the_judge(nb, resources)
        NotebookClient.__init__(self, nb, km)
        self.reset_execution_trackers()
        self._check_assign_resources(resources)
        grading = os.environ.get("NBGRADER_EXECUTION") == "autograde"
        self._cell_bytes = self._total_bytes = self._dropped = self._notes_dropped = 0
        done: list[int] = []  # cells that ran without killing the kernel, to replay after a restart
        start, restarts = 0, 0
        while start < len(self.nb.cells):
            with self.setup_kernel():
                info = self.wait_for_reply(self.kc.kernel_info())
                self.nb.metadata["language_info"] = info["content"]["language_info"]
                total = self._total_bytes
                for index in done:
                    # a copy: the outputs kept are those of the first run (bounded per cell, not counted)
                    self._cell_bytes = 0
                    self.execute_cell(copy.deepcopy(self.nb.cells[index]), index, store_history=True)
                self._total_bytes, self._dropped = total, 0
                for index in range(start, len(self.nb.cells)):
                    cell = self.nb.cells[index]
                    if cell.cell_type != "code":
                        continue
                    if grading and grade_id(cell) in self.skip_cells:
                        cell.outputs = []
                        continue
                    if grading and self._over_budget():  # nothing more runs for this submission
                        cell.outputs = [_error(TIME_LIMIT, budget_note(self.budget, during=False))]
                        start = len(self.nb.cells)
                        break
                    try:
                        self.preprocess_cell(cell, resources, index)
                    except (DeadKernelError, CellTimeoutError, UnresponsiveKernelError) as error:
                        restarts += 1
                        if restarts > self.max_restarts:
                            raise
                        if grading and self._over_budget():
                            cell.outputs = [o for o in cell.get("outputs", []) if o.get("output_type") != "error"]
                            cell.outputs.append(_error(TIME_LIMIT, budget_note(self.budget, during=True)))
                            start = len(self.nb.cells)
                            break
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
                    over_budget = grading and bool(timed_out) and self._over_budget()
                    for output in timed_out:
                        output.ename = TIME_LIMIT
                        output.evalue = budget_note(self.budget, during=True) if over_budget else (
                            f"this cell ran over its time limit of {self._get_timeout(cell)} s and was "
                            "interrupted (an infinite loop?)"
                        )
                        output.traceback = [f"{TIME_LIMIT}: {output.evalue}"]
                    if over_budget:  # the interruption's own traceback says nothing more
                        cell.outputs = [o for o in cell.outputs if o.get("ename") != "KeyboardInterrupt"]
                        start = len(self.nb.cells)
                        break
                    if not timed_out:  # replaying it would cost the time limit again
                        done.append(index)
                else:
                    start = len(self.nb.cells)
        self.set_widgets_metadata()
        return self.nb, self.resources

    def _from_the_judge(self, nb, resources):
        """No kernel: the outputs of the cells are those of the judge's student's process,
        which ran them once (``verdicts["_cells"]``: [grade_id or None, outputs], in the
        notebook's order, already cut at the byte limits). A cell the student added has no
        grade_id: they go in order. A test cell gets its outputs from JudgeVerdicts."""
        wait_for_judge(self.judge_pid, self.deadline, self.log)
        try:
            with open(self.verdicts) as f:
                ran = json.load(f).get("_cells") or []
        except (OSError, ValueError, AttributeError):  # the judge failed: the submission is reported failed
            ran = []
        by_id = {entry[0]: entry[1] for entry in ran if entry[0] is not None}
        added = iter([entry[1] for entry in ran if entry[0] is None])
        count = 0
        for cell in nb.cells:
            if cell.cell_type != "code":
                continue
            cell.outputs, cell.execution_count = [], None
            name = grade_id(cell)
            outputs = by_id.get(name) if name is not None else (
                None if "run" in cell.metadata.get("tags", []) else next(added, None))
            if outputs is None:  # not run: a test, the set-up cell, a cell tagged run
                continue
            count += 1
            cell.execution_count = count
            cell.outputs = [from_dict({**output, "execution_count": count} if output["output_type"] == "execute_result"
                                      else output) for output in outputs]
        nb.metadata["language_info"] = from_dict(LANGUAGE_INFO)  # as a kernel says it
        return nb, resources


#: the notebook's language, as a Python kernel says it (the feedback's highlighting)
LANGUAGE_INFO = {"name": "python", "version": sys.version.split()[0], "mimetype": "text/x-python",
                 "codemirror_mode": {"name": "ipython", "version": 3}, "pygments_lexer": "ipython3",
                 "nbconvert_exporter": "python", "file_extension": ".py"}


def fit(kind: str, content: dict, room: int) -> tuple[dict | None, int, int]:
    """An output (its content, or an output of a notebook) cut to ``room`` bytes: (what is
    kept, None when nothing is; the bytes it counts; the bytes dropped). An error is always
    kept (the grader's notes name it), its message and traceback bounded; a stream keeps
    the head of its text that fits; any other output is kept whole or dropped."""
    if kind == "error":
        content["evalue"] = str(content.get("evalue", ""))[:MAX_ERROR_OUTPUT]
        trace, size = [], 0
        for line in reversed([str(t) for t in content.get("traceback", [])]):
            size += len(line)
            if size > MAX_ERROR_OUTPUT:
                break
            trace.append(line)
        content["traceback"] = trace[::-1]
        return content, 0, 0
    size = len(json.dumps(content, default=str).encode(errors="replace"))
    if size <= room:
        return content, size, 0
    if kind == "stream" and room > 0:  # the head of the text, as far as it fits
        data = str(content.get("text", "")).encode(errors="replace")
        kept = data[:room].decode(errors="ignore")
        content["text"] = kept
        return content, room, len(data) - len(kept.encode())
    return None, 0, size


def dropped_note(dropped: int, cell_limit: int, total_limit: int) -> NotebookNode:
    return NotebookNode(output_type="stream", name="stdout",
                        text=f"\n[{dropped} bytes of output dropped: the grader keeps {cell_limit} bytes "
                             f"of a cell's output, {total_limit} of a notebook's]\n")


def wait_for_judge(pid: int, deadline: float, log) -> None:
    """Waits for the judge (a child of this process) to end, and leaves its exit status to its
    parent's caller; JUDGE_GRACE seconds past the submission's budget (``deadline``, a
    time.time()), it is killed."""
    import signal

    while pid:
        try:
            if os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT | os.WNOHANG) is not None:
                return
        except ChildProcessError:
            return
        if deadline and time.time() > deadline + JUDGE_GRACE:
            log.error("the judge did not end %s s after the submission's budget: killed", JUDGE_GRACE)
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            deadline = 0.0
        time.sleep(0.1)


class JudgeVerdicts(NbGraderPreprocessor):
    """The outputs of the test cells, from the judge's verdicts (the tests ran there, apart
    from the student's code): what the test printed, and its error if it failed. A test
    the judge has no verdict for scores 0."""

    verdicts = Unicode("", help="the judge's verdicts file (JSON); empty: the kernel ran the tests").tag(config=True)
    judge_pid = Integer(0, help="the judge's process, a child of this one that runs while nbgrader starts: "
                                "its verdicts are read once it has ended (it is not reaped here)").tag(config=True)
    deadline = Float(0.0, help="time.time() when the submission's budget runs out: the judge ends by then "
                               "(it stops itself); JUDGE_GRACE seconds later it is killed").tag(config=True)

    def preprocess(self, nb, resources):
        if not self.verdicts:
            return nb, resources
        wait_for_judge(self.judge_pid, self.deadline, self.log)
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
