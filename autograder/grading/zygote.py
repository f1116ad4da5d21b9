"""A fork server for the grading processes of a worker.

Each submission is graded by a fresh process (nothing of one grading stays for the next),
but a fresh Python process pays for its imports again: torch, nbgrader and the course's
code take about 2.5 CPU-seconds, twice per submission (the grading process, and the
judge). A worker thread starts one server, once, that imports them; each submission is
then graded by a child forked from it, which is as fresh as a new process and starts with
everything imported. The judge is forked from that child the same way (``fork_start``), and
runs while nbgrader starts; its student's process runs the student's cells.

Forking is safe here because the server never runs torch or starts a thread: it imports
and forks, nothing else. The student's code never runs in these processes (it runs in
the sandbox, started anew for every submission).

    python -m autograder.grading.zygote      # the server: reads requests on stdin, one per line
"""

from __future__ import annotations

import copy
import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[2]
#: what every grading imports (the grading process, the judge and the course's given cells);
#: not torch._dynamo, which torch.optim imports on an optimizer's first step or zero_grad
#: (the judge's reference of an update test makes some): ``preload`` spares it instead
PRELOAD = ("torch", "bbrl", "bbrl_course", "bbrl_course.algo", "bbrl_course.checks",
           "matplotlib.pyplot", "nbgrader.apps", "nbgrader.preprocessors", "autograder.grading.submission",
           "autograder.isolation.judge")


def preload():
    """The imports of ``PRELOAD``, and torch.optim's optimizers made to run without importing
    torch._dynamo (``channel.spare_dynamo``, as in the student's process: 0.9 CPU-seconds of
    imports in every fork server, for graph breaks that only matter while dynamo traces).
    Imports and replaces functions: computes nothing, starts no thread."""
    for name in PRELOAD:
        importlib.import_module(name)
    import torch

    from autograder.isolation import channel

    channel.spare_dynamo(torch)


class Zygote:
    """A client of one server: ``run(argv, log)`` grades in a child of it."""

    def __init__(self):
        env = dict(os.environ, MPLBACKEND="Agg")
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPOSITORY), env.get("PYTHONPATH")]))
        self.process = subprocess.Popen([sys.executable, "-m", "autograder.grading.zygote"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, env=env, cwd=str(REPOSITORY))
        self._pending = b""  # what the server wrote past the last line read

    def _line(self, timeout: float | None) -> bytes | None:
        """The server's next line (b"" when it ended); None after ``timeout`` seconds."""
        end = None if timeout is None else time.monotonic() + timeout
        fd = self.process.stdout.fileno()
        while b"\n" not in self._pending:
            left = None if end is None else max(end - time.monotonic(), 0)
            ready, _, _ = select.select([fd], [], [], left)
            if not ready:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return b""
            self._pending += chunk
        line, self._pending = self._pending.split(b"\n", 1)
        return line + b"\n"

    def run(self, module: str, argv: list[str], log: Path, timeout: float | None = None) -> int:
        """``python -m MODULE ARGV`` (its ``main(argv)``) in a forked child, its output in
        ``log``; its exit code. A child still running after ``timeout`` seconds is killed
        (its exit code is then -9)."""
        self.process.stdin.write((json.dumps({"module": module, "argv": argv, "log": str(log)}) + "\n").encode())
        self.process.stdin.flush()
        started = self._line(900)  # {"pid": the child's} (after the server's imports)
        if not started:
            raise RuntimeError("the grading fork server ended (killed?) or did not answer")
        pid = int(json.loads(started)["pid"])
        answer = self._line(timeout)
        if answer is None:  # over its time: killed; the server reaps it and answers
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            answer = self._line(60)
        if not answer:
            raise RuntimeError("the grading fork server ended (killed?)")
        return int(json.loads(answer)["status"])


_idle: list[Zygote] = []  # servers of this process, waiting for a request
_lock = threading.Lock()


def prestart():
    """Starts a server in the background if none is idle (its imports then overlap with what
    the driver does before the first task: ``distribute.engine`` calls it on every worker)."""
    with _lock:
        if not any(server.process.poll() is None for server in _idle):
            _idle.append(Zygote())


def run(module: str, argv: list[str], log: Path, timeout: float | None = None) -> int:
    """``python -m MODULE ARGV`` (the grading of a submission) with an idle server of this
    process (started if there is none, or if it died); one request at a time per server; a
    grading still running after ``timeout`` s is killed."""
    with _lock:
        alive = [server for server in _idle if server.process.poll() is None]
        server = alive.pop() if alive else Zygote()
        _idle[:] = alive
    code = server.run(module, argv, log, timeout)  # a server that died raises: it is not used again
    with _lock:
        _idle.append(server)
    return code


def fork_start(function, args: tuple, log: Path) -> int:
    """``function(*args)`` in a forked child, its output in ``log``; the child's pid. Its
    exit code (``wait``) is 0 when it returned, 1 when it raised (the traceback is in the log)."""
    pid = os.fork()
    if pid == 0:
        _child(lambda: function(*args), log)
    return pid


def wait(pid: int, until: float = 0.0) -> int:
    """The exit code of a child started by ``fork_start`` (negative: the signal that killed it);
    with ``until`` (a time.time()), a child still running then is killed."""
    while until:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        if time.time() > until:
            try:
                os.kill(pid, signal.SIGKILL)
            except OSError:
                pass
            break
        time.sleep(0.1)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def _die_with_parent():
    """This process is killed when its parent ends (Linux): a grading process or a judge
    never outlives what waits for it."""
    try:
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except Exception:
        pass


def _child(work, log: Path):
    """In a forked child: ``work()`` with stdout and stderr in ``log``; never returns."""
    code = 1
    _die_with_parent()
    try:
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        os.close(fd)
        os.close(null)
        work()
        code = 0
    except SystemExit as exit:
        code = exit.code if isinstance(exit.code, int) else 1
    except BaseException:
        traceback.print_exc()
    finally:
        try:
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def title(text: str):
    """What ps and top show for this process (the student it grades)."""
    try:
        from setproctitle import setproctitle
    except ImportError:
        return
    setproctitle(text)


def _main_of(module: str, argv: list[str]):
    """``python -m MODULE ARGV``, in a forked child (the module is among those preloaded)."""
    title(f"python -m {module} " + " ".join(argv))
    importlib.import_module(module).main(argv)


#: a small notebook as nbgrader's kernel leaves it (its lexer IPython's), for ``warm_up``
_WARM_UP_NOTEBOOK = {
    "nbformat": 4, "nbformat_minor": 5,
    "metadata": {"language_info": {"name": "python", "pygments_lexer": "ipython3", "file_extension": ".py",
                                   "codemirror_mode": {"name": "ipython", "version": 3}, "mimetype": "text/x-python"}},
    "cells": [
        {"cell_type": "markdown", "id": "a", "metadata": {}, "source": "# A *title*\n\n- `code`, $x^2$, [a](#a)"},
        {"cell_type": "code", "id": "b", "execution_count": 1,
         "metadata": {"nbgrader": {"grade": True, "solution": False, "locked": True, "task": False, "grade_id": "t",
                                   "points": 1, "score": 0.0, "comment": "a *comment*"}}, "source": "import torch\nx = 1  # a",
         "outputs": [{"output_type": "stream", "name": "stdout", "text": "printed\n"},
                     {"output_type": "error", "ename": "AssertionError", "evalue": "wrong",
                      "traceback": ["\x1b[0;31mAssertionError\x1b[0m: wrong"]}]},
    ],
}


def feedback_exporter():
    """nbconvert's HTMLExporter as nbgrader's generate_feedback makes it: the course's
    configuration, nbgrader's feedback template."""
    import os.path

    import nbgrader
    from nbconvert.exporters import HTMLExporter
    from traitlets.config import Config

    from autograder.course.config import load_config

    config = load_config()
    formgrader = os.path.join(os.path.dirname(nbgrader.__file__), "server_extensions", "formgrader")
    feedback = Config()
    feedback.HTMLExporter.template_name = "feedback"
    feedback.HTMLExporter.extra_template_basedirs = [os.path.join(formgrader, "templates")]
    feedback.HTMLExporter.extra_template_paths = [
        os.path.join(formgrader, "static", "node_modules", "bootstrap", "dist", "css")]
    config.merge(feedback)
    return HTMLExporter(config=config)


#: what nbgrader's GetGrades gives the feedback's template
WARM_UP_RESOURCES = {"nbgrader": {"notebook": "warm-up", "score": 0.0, "max_score": 1.0, "late_penalty": 0.0}}


def warm_up():
    """Renders a small notebook as a submission's feedback is rendered
    (``feedback_exporter``): each grading process forked from the server then starts with
    what its first page costs once per process (the lexers' and IPython's imports, regular
    expressions compiled: about 0.5 CPU-seconds of every submission). No student's
    notebook, no thread, no file written."""
    import nbformat

    feedback_exporter().from_notebook_node(nbformat.from_dict(_WARM_UP_NOTEBOOK), copy.deepcopy(WARM_UP_RESOURCES))


def course_bytecode() -> bool:
    """Writes the bytecode of the course module (``bbrl_course``) where Python would, if it
    is missing or stale. Every student's process imports that module, and the sandbox never
    writes there: with PYTHONDONTWRITEBYTECODE set (as in many containers, and on CI
    machines), nothing else writes it either, and each student's process then compiles the
    module again (0.12 CPU-seconds). True when the bytecode is there; False when it cannot
    be written (a read-only folder: each process compiles it, as before)."""
    import compileall
    import importlib.util

    folder = importlib.util.find_spec("bbrl_course").submodule_search_locations[0]
    return bool(compileall.compile_dir(folder, maxlevels=0, quiet=2))


def prepare():
    """What the server does before its first fork: the course module's bytecode, the
    imports, the feedback's warm-up."""
    course_bytecode()
    preload()
    warm_up()


def main():
    prepare()
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(lambda: _main_of(request["module"], request["argv"]), Path(request["log"]))
        sys.stdout.write(json.dumps({"pid": pid}) + "\n")
        sys.stdout.flush()
        _, status = os.waitpid(pid, 0)
        sys.stdout.write(json.dumps({"status": os.waitstatus_to_exitcode(status)}) + "\n")
        sys.stdout.flush()


if __name__ == "__main__":
    main()
