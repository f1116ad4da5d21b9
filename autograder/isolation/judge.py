"""The judge: runs a submission's test cells in a process where the student's code never
runs, and writes their verdicts.

Two processes grade one submission:

- the **student's process** (``autograder.isolation.channel``, in the sandbox) runs the
  notebook's cells (the student's solution cells and the given cells, in the student's
  order), never a test cell, and then answers requests;
- the **judge** (this module, outside the sandbox) runs the instructor's test cells,
  hidden tests included, exactly as released. The names the student defines
  (``compute_critic_loss``, ``TD3``, ...) are stand-ins (``Remote``): a call sends its
  arguments to the student's process, which runs the student's function and sends back
  the result as data (tensors by value) or as a handle to an object that stays there.
  A call's tensor arguments live in memory shared with the student's process
  (``Arena``): what the function wrote in them in place, the judge reads itself. What
  else it did (a tensor or its ``.data`` replaced, an autograd graph recorded) and the
  gradient of a scalar result are reported by the student's process and done again to
  the judge's own objects; a report that "it was in place" counts for nothing unless the
  shared memory holds the values, and whether a graph was recorded, the gradients and
  ``count_updates``'s counts rest on the report (README: "What the verdicts rest on").

The verdict (``close``, ``unchanged``, the asserts) is therefore computed with the
judge's torch, numpy and ``bbrl_course.checks``, which the student's code cannot reach:
a patched ``torch.isclose``, a replaced ``checking``, IPython's hooks (there is no
IPython in either process) or printed "passed" messages change at most what the
student's process answers, which the student's own code could answer anyway. The
hidden tests never enter the sandbox, so the student's code cannot read them either.
An exit, a crash or a time limit ends the student's process: the test scores 0 and
the process is started again for the next test.

The TD3 learning test does not take the student's word for its return: the judge
evaluates the student's best policy itself (``Remote.evaluate_best``).

What the student's process changes that no honest notebook changes (a comparison
function, a course helper, IPython's hooks, a trace function) is also noted; the tests
during which it was in place score 0, with a note ``tampering suspected: ...``.

    python -m autograder.isolation.judge SOURCE.ipynb SUBMISSION_FOLDER VERDICTS.json [--trusted]
"""

from __future__ import annotations

import argparse
import ast
import builtins
import contextlib
import io
import json
import os
import pickle
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import nbformat

from autograder.isolation import channel, sandbox
from autograder.course.preprocessors import (
    HIDDEN, KERNEL_DIED, MAX_CELL_OUTPUT, MAX_ERROR_OUTPUT, MAX_OUTPUT, TAMPERING, TIME_LIMIT, budget_note,
    dropped_note, fit, is_test,
)

CHANNEL_INSIDE = f"{sandbox.SANDBOX}/lib/channel.py"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
#: a slow test (the learning test) is bounded by the CPU time of the student's code, which a
#: loaded machine does not stretch; its wall-clock limit is this many times longer, for
#: code that waits instead of computing
SLOW_WALL_FACTOR = 3


class StudentGone(BaseException):
    """The student's process ended (exit, crash, sandbox limit) or ran out of time."""

    def __init__(self, ename: str, message: str):
        super().__init__(message)
        self.ename, self.message = ename, message


class BrokenChannel(BaseException):
    """The student's process answered something that is not an answer."""


class JudgeOverTime(BaseException):
    """The test's time (or the submission's budget) ran out while the judge itself worked
    on the student's behalf (replaying evaluations, say): raised by an alarm."""


def _over_time(signum, frame):
    raise JudgeOverTime()


#: most evaluations the judge replays to measure a best policy (the learning test's
#: configuration evaluates 7 times: 6,000 steps, one every 1,000, and once at the end)
MAX_EVALUATIONS = 20
#: what the student's process printed that a test keeps (bytes of UTF-8, per test)
MAX_TEST_PRINTED = channel.MAX_PRINTED
#: longest error message of a test kept in its verdict
MAX_ERROR = 4000


def budget_message(budget: float, label: str, here: bool) -> str:
    if here:
        return (f"the submission's time budget of {budget:g} s ran out at {label}: the student's code was stopped "
                "and this test and the next ones score 0")
    return f"the submission's time budget of {budget:g} s had run out before this test; it scores 0"


# --- the student's process ------------------------------------------------------------------

class Arena:
    """Memory shared with the student's process (a memfd, sealed at ``channel.ARENA_SIZE``: it
    cannot grow): the tensors of a call's arguments live there, so that what the call wrote in
    them in place is read by the judge itself, not reported by the student's process.
    Each tensor gets its own place for the life of the process (the student's code may keep
    an argument); when it is full, tensors go by value (and their changes as reported)."""

    ALIGN = 64

    def __init__(self):
        import fcntl
        import mmap

        self.fd = os.memfd_create("course-arguments", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, channel.ARENA_SIZE)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_GROW | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_SEAL)
            self.map = mmap.mmap(self.fd, channel.ARENA_SIZE)
        except BaseException:
            os.close(self.fd)
            raise
        self.used = 0

    @classmethod
    def make(cls) -> "Arena | None":
        """An arena, or None where the system has no sealed memfd (then changes are as reported)."""
        if not hasattr(os, "memfd_create"):
            return None
        try:
            return cls()
        except (OSError, AttributeError, ValueError):
            return None

    def put(self, value) -> tuple | None:
        """Places ``value`` (a fresh clone) here: (offset, dtype, shape, stride, nbytes), or None
        when it cannot be shared (not a dense CPU tensor, empty, or no room left)."""
        import torch

        nbytes = value.numel() * value.element_size()
        if (value.layout != torch.strided or value.device.type != "cpu" or value.is_complex() or value.is_conj()
                or value.is_neg() or value.is_quantized or nbytes == 0 or value.storage_offset() != 0
                or value.untyped_storage().nbytes() != nbytes):
            return None
        start = -(-self.used // self.ALIGN) * self.ALIGN
        if start + nbytes > channel.ARENA_SIZE:
            return None
        # the standard strides of its shape, whatever the value's (a clone of an expanded tensor of
        # one element keeps a stride of 0, which no byte view of it accepts)
        place = (start, value.dtype, tuple(value.shape), tuple(torch.empty(value.shape, device="meta").stride()), nbytes)
        with torch.no_grad():
            channel.shared_tensor(self.map, torch, *place).copy_(value)
        self.used = start + nbytes
        return place

    def read(self, place):
        """What is at ``place`` now (a copy)."""
        import torch

        return channel.shared_tensor(self.map, torch, *place).clone()

    def close(self):
        with contextlib.suppress(OSError):
            os.close(self.fd)
        with contextlib.suppress(BufferError, ValueError):
            self.map.close()  # else when the views of it are gone


class Forked:
    """A student's process forked from this one (``fork_channel``), with what the judge uses
    of a ``subprocess.Popen``: its pid, its pipes, ``poll`` and ``wait``."""

    def __init__(self, pid: int, stdin, stdout, stderr):
        self.pid, self.stdin, self.stdout, self.stderr = pid, stdin, stdout, stderr
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            try:
                done, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:  # reaped already: it ended
                self.returncode = -signal.SIGKILL
            else:
                if done:
                    self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        end = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if end is not None and time.monotonic() > end:
                raise subprocess.TimeoutExpired("the student's process", timeout)
            time.sleep(0.005)
        return self.returncode


def fork_channel(workdir: str, arena_fd: int | None) -> Forked:
    """The student's process without a sandbox (``--trusted``, the mutation audit), forked
    from this process rather than started anew: it then starts with this process's imports
    (torch, the course module: about 1.6 CPU-seconds that a new Python pays). Only for a
    process that has imported but never computed nor started a thread (torch's thread pools
    do not survive a fork): a judge at its first student's process, forked itself from a
    process that only imported (``autograder.grading.zygote``, the audit's workers). The child
    is what ``python channel.py`` would be: a session of its own, its pipes on 0, 1 and 2 and
    no other descriptor but the shared memory's, the submission's copy as working directory,
    Python's default signal handlers, the channel as ``__main__``, ``channel.main``; it never
    returns into this process's code."""
    pipes = [os.pipe() for _ in range(3)]
    for stream in (sys.stdout, sys.stderr):  # nothing of this process's buffers goes to the child
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setsid()
            for target, fd in enumerate((pipes[0][0], pipes[1][1], pipes[2][1])):
                os.dup2(fd, target)
            kept = {0, 1, 2} if arena_fd is None else {0, 1, 2, arena_fd}
            for fd in [int(name) for name in os.listdir("/proc/self/fd")]:
                if fd not in kept:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            os.chdir(workdir)
            os.environ["MPLBACKEND"] = "Agg"
            for number in (signal.SIGTERM, signal.SIGALRM, signal.SIGHUP, signal.SIGUSR1, signal.SIGUSR2,
                           signal.SIGCHLD):
                signal.signal(number, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            sys.modules["__main__"] = channel  # as in ``python channel.py``: the student's code finds it there
            channel.main([] if arena_fd is None else [str(arena_fd)])
            code = 0
        except SystemExit as exit:
            code = exit.code if isinstance(exit.code, int) else 1
        except BaseException:
            import traceback

            traceback.print_exc()
        finally:
            with contextlib.suppress(Exception):
                sys.stderr.flush()
            os._exit(code)
    for fd in (pipes[0][0], pipes[1][1], pipes[2][1]):
        os.close(fd)
    return Forked(pid, os.fdopen(pipes[0][1], "wb"), os.fdopen(pipes[1][0], "rb"), os.fdopen(pipes[2][0], "rb"))


class StudentProcess:
    """The sandboxed process that runs the student's notebook and answers requests."""

    def __init__(self, folder: Path, cells: list, names: list[str], limits: sandbox.Limits | None,
                 cell_timeout: float, fork: bool = False):
        self.folder, self.cells, self.names, self.limits = folder, cells, names, limits
        self.cell_timeout = cell_timeout
        #: without a sandbox, its first start may fork this process (``fork_channel``) instead of
        #: starting Python anew: only the caller knows that this process is fit for it
        self.fork = fork and limits is None
        # each cell has its own limit there; this bounds them all, and the imports
        self.setup_timeout = cell_timeout * len(cells) + 60
        self.budget_deadline = float("inf")  # monotonic: the submission's budget ends there
        self.start_failures: list[StudentGone] = []
        self.cpu_limit: float | None = None  # cpu_seconds() at which the current test stops
        self.process: subprocess.Popen | None = None
        self.watchdog: sandbox.Watchdog | None = None
        self.generation = 0
        self.tampering: list[str] = []
        self.setup_errors: list = []
        self.names_found: dict = {}
        self._workdir: Path | None = None
        self.arena: Arena | None = None
        #: the outputs of the cells in the first process's run of them, for the feedback:
        #: [grade_id or None, outputs] in order (``_shown``)
        self.shown: list = []
        self._left = MAX_OUTPUT  # bytes of outputs the notebook has left
        self.budget = 0.0  # the submission's time budget (s), for the notes

    def start(self):
        if len(self.start_failures) >= 2:  # twice is enough: the notebook's own cells end the process
            raise self.start_failures[-1]
        channel_file = str(Path(channel.__file__).resolve())
        env = dict(os.environ, MPLBACKEND="Agg")  # without the sandbox; inside, sandbox.command passes it
        self.arena = Arena.make()  # a new one for each process: nothing of the last one is shared
        shared = [str(self.arena.fd)] if self.arena is not None else []
        if self.limits is not None:
            bwrap = sandbox.check_available()
            inner = [sys.executable, CHANNEL_INSIDE, *shared]
            cmd = sandbox.command(inner, self.folder, None, self.limits, bwrap, files={channel_file: CHANNEL_INSIDE})
            cwd = None
        else:  # --trusted: no sandbox, a copy of the submission as working directory
            self._workdir = Path(tempfile.mkdtemp(prefix="course-student-"))
            shutil.copytree(self.folder, self._workdir, dirs_exist_ok=True)
            cmd, cwd = [sys.executable, channel_file, *shared], str(self._workdir)
        forked = self.fork and threading.active_count() == 1
        self.fork = False  # a process started again is started anew: this one has run tests since
        # its stderr is the student's to write: relayed to the log, bounded and marked as theirs
        if forked:
            self.process = fork_channel(cwd, self.arena.fd if self.arena is not None else None)
        else:
            self.process = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                            stderr=subprocess.PIPE, cwd=cwd, env=env, start_new_session=True,
                                            pass_fds=(self.arena.fd,) if self.arena is not None else ())
        sandbox.relay(self.process.stderr, "student's process")
        if self.limits is not None:
            self.watchdog = sandbox.Watchdog(self.process, self.limits)
            self.watchdog.start()
        self.generation += 1
        first = self.generation == 1
        try:
            answer = self.request("setup", ([[*cell[:2], cell[3] if len(cell) > 3 else True] for cell in self.cells], self.names, self.cell_timeout, (MAX_CELL_OUTPUT, MAX_OUTPUT)),
                                  min(time.monotonic() + self.setup_timeout, self.budget_deadline),
                                  during="the notebook's cells", progress=self._shown if first else _dropped)
        except StudentGone as gone:
            self.start_failures.append(gone)
            if first and len(self.shown) < len(self.cells):  # the cell it was running says why it stopped
                self.shown.append([self._id(len(self.shown)), [self._stopped(gone)]])
            raise
        self.setup_errors = answer.get("errors", [])
        self.names_found = answer.get("names", {})
        return answer

    def _shown(self, progress) -> None:
        """A cell's outputs, as the student's process sent them (``[index, outputs, dropped]``),
        made into a notebook's outputs here: only what a notebook holds, as plain data, each
        string cut before anything else is done with it, at most MAX_SHOWN outputs and one
        error per cell, cut again at the byte limits (the process is the student's to change:
        what it sends costs this process at most a frame's size)."""
        if type(progress) is not list or len(progress) != 3 or len(self.shown) >= len(self.cells):
            raise BrokenChannel("a cell's outputs that are not [index, outputs, dropped]")
        _, raw, dropped = progress
        outputs, used, errors = [], 0, 0
        dropped = min(dropped, 2**40) if type(dropped) is int and dropped > 0 else 0
        for item in raw[:MAX_SHOWN] if type(raw) is list else []:
            output = _output(item, self.cell_timeout)
            if output is None or (output["output_type"] == "error" and errors):
                continue
            room = min(MAX_CELL_OUTPUT - used, self._left)
            output, size, lost = fit(output["output_type"], output, room)
            if output is not None and output["output_type"] == "error":
                errors += 1
                size = len(json.dumps(output))  # kept whole (the notes name it), and counted
            used += size
            self._left -= size
            dropped += lost
            if output is not None:
                outputs.append(output)
        if dropped:
            outputs.append(dict(dropped_note(dropped, MAX_CELL_OUTPUT, MAX_OUTPUT)))
        self.shown.append([self._id(len(self.shown)), outputs])

    def _id(self, index: int) -> str | None:
        """The grade_id of the cell ``index`` (``student_cells``'s third item), None for a cell the student added."""
        cell = self.cells[index]
        return cell[2] if len(cell) > 2 else cell[0]

    def _stopped(self, gone: StudentGone) -> dict:
        """The error output of the cell during which the student's process ended."""
        if gone.ename == TIME_LIMIT and time.monotonic() >= self.budget_deadline - 0.01:
            message = budget_note(self.budget, during=True)
        elif gone.ename == TIME_LIMIT:
            message = (f"this cell ran over its time limit of {self.cell_timeout:g} s and ignored the interruption: "
                       "the student's process was stopped")
        else:
            message = gone.message.replace("the notebook's cells", "this cell").removesuffix("; this test scores 0")
        if not message.startswith("the submission's time budget"):  # which says so already
            message += "; the cells after it did not run here"
        return {"output_type": "error", "ename": gone.ename, "evalue": message, "traceback": [f"{gone.ename}: {message}"]}

    @property
    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def cpu_seconds(self) -> float:
        """The CPU time used so far by the student's process and everything it started (in
        the sandbox: bwrap and its PID namespace), its threads included."""
        if self.process is None:
            return 0.0
        ticks = 0
        for pid in sandbox._tree(self.process.pid):
            with contextlib.suppress(OSError, IndexError, ValueError):
                with open(f"/proc/{pid}/stat") as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                # utime, stime, and the children that ended (cutime, cstime): each second once
                ticks += sum(int(value) for value in fields[11:15])
        return ticks / CLOCK_TICKS

    def stop(self):
        if self.process is not None:
            if self.watchdog is not None:
                self.watchdog.stop()
            for pid in reversed(sandbox._tree(self.process.pid)):
                with contextlib.suppress(OSError):
                    os.kill(pid, 9)
            with contextlib.suppress(Exception):
                self.process.wait(timeout=10)
            for stream in (self.process.stdin, self.process.stdout):
                with contextlib.suppress(Exception):
                    stream.close()
            self.process = None
        if self.arena is not None:
            self.arena.close()
            self.arena = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def request(self, op: str, payload: bytes | tuple, deadline: float, during: str = "this test",
                progress=None) -> dict:
        """Sends a request (a pickle, or a tuple to pickle) and waits for its answer until
        ``deadline``. Frames ``{"progress": ...}`` before it (the set-up's, a cell's outputs)
        go to ``progress``, or are ignored."""
        if not isinstance(payload, bytes):
            payload = pickle.dumps((op, payload))
        try:
            channel.write_frame(self.process.stdin, payload)
        except (BrokenPipeError, OSError, ValueError):
            raise self._gone(during) from None
        frames = _Frames()
        while True:
            if time.monotonic() > deadline:  # frames already read do not wait, nor stop the clock
                self.stop()
                raise StudentGone(TIME_LIMIT, "time")
            frame = self._read(deadline, during, frames)
            try:
                import torch

                answer = torch.load(io.BytesIO(frame), weights_only=True)
            except Exception as error:
                raise BrokenChannel(f"an answer that is not data ({type(error).__name__})") from None
            if type(answer) is not dict:
                raise BrokenChannel("an answer that is not a dict")
            if "progress" not in answer:
                break
            if progress is None:
                raise BrokenChannel("a cell's outputs that answer no set-up")
            try:
                progress(answer["progress"])
            except BrokenChannel:
                raise
            except Exception as error:
                raise BrokenChannel(f"a cell's outputs that are not data ({type(error).__name__})") from None
        tampering = answer.get("tampering", [])
        if type(tampering) is list:
            self.tampering = [str(t)[:200] for t in tampering][:20]
        return answer

    def _read(self, deadline: float, during: str, frames: "_Frames | None" = None) -> bytes:
        """The next frame; with ``frames``, what was read past it is kept there for the next
        call (several frames answer a set-up), else dropped."""
        fd = self.process.stdout.fileno()
        frames = frames if frames is not None else _Frames()
        data = frames.data
        while True:
            available = len(data) - frames.start
            if available >= channel.HEADER.size:
                (size,) = channel.HEADER.unpack_from(data, frames.start)
                if size > channel.MAX_FRAME:
                    self.stop()
                    raise BrokenChannel(f"an answer of {size} bytes")
                if available >= channel.HEADER.size + size:
                    begin = frames.start + channel.HEADER.size
                    frames.start = begin + size
                    frame = bytes(data[begin:frames.start])
                    if frames.start * 2 > len(data):  # what was used goes, a copy of less than half
                        del data[:frames.start]
                        frames.start = 0
                    return frame
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise StudentGone(TIME_LIMIT, "time")
            ready, _, _ = select.select([fd], [], [], min(left, 1.0))
            if self.cpu_limit is not None and self.cpu_seconds() > self.cpu_limit:
                self.stop()
                raise StudentGone(TIME_LIMIT, "cpu")
            if not ready:
                if self.process.poll() is not None:
                    raise self._gone(during)
                continue
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise self._gone(during)
            data += chunk

    def _gone(self, during: str) -> StudentGone:
        violation = self.watchdog.violation if self.watchdog else None
        with contextlib.suppress(Exception):
            self.process.wait(timeout=5)
        code = self.process.poll() if self.process else None
        self.stop()
        if violation:
            return StudentGone(KERNEL_DIED, f"the sandbox stopped the student's code while it ran {during}: it used "
                                            f"{violation}; this test scores 0")
        how = f"exit code {code}" if code is not None and code >= 0 else f"signal {-code}" if code else "no exit code"
        return StudentGone(KERNEL_DIED, f"the student's code ended its process while it ran {during} ({how}: "
                                        "os._exit, exit(), a crash or too much memory); this test scores 0")


#: outputs of one cell taken from the student's process (each within the byte limits too)
MAX_SHOWN = 100
#: what the student's process sends in one output's nested data (application/json) or
#: metadata: nodes, plus the characters of their strings
MAX_PLAIN = 20_000
#: enames only the grader gives: the student's code raising one of them is shown as its own
GRADER_ENAMES = (TIME_LIMIT, KERNEL_DIED, TAMPERING)
JSON_MIME = re.compile(r"^application/(.*\+)?json$")


def _text(value, limit: int) -> str | None:
    """A string from the student's process, cut at ``limit`` characters before anything else,
    and encodable (a lone surrogate would stop nbgrader writing the notebook); None if it
    is not a string."""
    if type(value) is not str:
        return None
    return value[:limit].encode("utf-8", "replace").decode("utf-8")


def _plain(value, budget: list, depth: int = 0):
    """Nested data from the student's process, copied within ``budget`` ([nodes and
    characters left]: shared references count each time); ValueError past it."""
    budget[0] -= 1
    if budget[0] < 0 or depth > 20:
        raise ValueError("too much")
    if value is None or type(value) in (bool, int, float):
        return value
    if type(value) is str:
        budget[0] -= len(value)
        if budget[0] < 0:
            raise ValueError("too much")
        return _text(value, len(value))
    if type(value) is list:
        return [_plain(item, budget, depth + 1) for item in value]
    if type(value) is dict:
        copy = {}
        for key, item in value.items():
            if type(key) is not str:
                raise ValueError("not plain data")
            copy[_plain(key, budget, depth + 1)] = _plain(item, budget, depth + 1)
        return copy
    raise ValueError("not plain data")


def _output(item, cell_timeout: float) -> dict | None:
    """One output from the student's process, rebuilt field by field as a notebook's output
    (None: not one)."""
    if type(item) is not dict:
        return None
    kind = item.get("output_type")
    if kind == "stream":
        text = _text(item.get("text"), MAX_CELL_OUTPUT + 1)
        return None if text is None else {"output_type": "stream",
                                          "name": "stderr" if item.get("name") == "stderr" else "stdout", "text": text}
    if kind in ("display_data", "execute_result"):
        data, meta = item.get("data"), item.get("metadata")
        if type(data) is not dict or len(data) > 20:
            return None
        bundle, budget = {}, [MAX_PLAIN]
        try:
            for key, value in data.items():
                mime = _text(key, 100)
                if mime is None:
                    continue
                value = _plain(value, budget) if JSON_MIME.match(mime) else _text(value, MAX_CELL_OUTPUT + 1)
                if value is not None:
                    bundle[mime] = value
            # metadata: by mime type, a mapping of names to plain values (an image's size)
            metadata = {}
            for key, value in (meta.items() if type(meta) is dict and len(meta) <= 20 else ()):
                if type(key) is str and type(value) is dict and len(value) <= 20:
                    metadata[_text(key, 100)] = {_text(k, 100): v if type(v) in (bool, int, float) else _text(v, 200)
                                                 for k, v in value.items()
                                                 if type(k) is str and (type(v) in (bool, int, float, str))}
        except ValueError:
            return None
        return {"output_type": kind, "data": bundle, "metadata": metadata} if bundle else None
    if kind == "error":
        if item.get("timed_out") is True:
            message = (f"this cell ran over its time limit of {cell_timeout:g} s and was interrupted "
                       "(an infinite loop?)")
            return {"output_type": "error", "ename": TIME_LIMIT, "evalue": message,
                    "traceback": [f"{TIME_LIMIT}: {message}"]}
        ename = _text(item.get("ename"), 200) or "Error"
        if ename in GRADER_ENAMES:
            ename += " (raised by the student's code)"
        trace = item.get("traceback")
        lines = [_text(line, MAX_ERROR_OUTPUT) for line in trace[-200:]] if type(trace) is list else []
        return {"output_type": "error", "ename": ename, "evalue": _text(item.get("evalue"), MAX_ERROR_OUTPUT) or "",
                "traceback": [line for line in lines if line is not None]}
    return None


# --- the stand-ins of the student's objects -----------------------------------------------

class _Frames:
    """The bytes read from the student's process during one request, and where the next frame starts."""

    def __init__(self):
        self.data, self.start = bytearray(), 0


class Remote:
    """A stand-in, in the judge, for an object of the student's process (a function, a
    class, an instance): attribute reads, calls and iteration are requests to it."""

    __slots__ = ("_judge", "_oid", "_generation", "_type", "_repr", "_callable")

    def __init__(self, judge, oid, generation, type_name, text, is_callable):
        for name, value in (("_judge", judge), ("_oid", oid), ("_generation", generation), ("_type", type_name),
                            ("_repr", text), ("_callable", is_callable)):
            object.__setattr__(self, name, value)

    def __getattr__(self, name):
        if name.startswith("__") and name.endswith("__"):
            raise AttributeError(name)
        return self._judge.request("getattr", (self, name), self)

    def __setattr__(self, name, value):
        raise AttributeError(f"cannot set {name} on the student's {self._type}")

    def __call__(self, *args, **kwargs):
        return self._judge.call(self, args, kwargs)

    def __iter__(self):
        return self._judge.request("iter", self, self)

    def __next__(self):
        return self._judge.request("next", self, self)

    def __len__(self):
        return self._judge.request("len", self, self)

    def __getitem__(self, key):
        return self._judge.request("getitem", (self, key), self)

    def __repr__(self):
        return self._repr

    def call_through(self, helper, *args):
        """Runs the course helper ``helper(self, *args)`` (``bbrl_course.checks.run_update``, a
        module-level function, sent by name) in the student's process, graded as a call of this
        function: what it did to the arguments is read back as for any call."""
        return self._judge.call(self, (self, *args), {}, target=helper)

    def run_helper(self, name: str, *args):
        """A course helper that runs this function under its instruments (``count_updates``)."""
        return self._judge.request("helper", (name, self, args), self)

    def evaluate_best(self, cfg) -> float:
        """The best evaluation return of this trained algorithm, measured here: the student's
        best policy (its weights) is evaluated by the course's code, with ``cfg``, on the
        start states of the evaluation where the student's process found it."""
        from bbrl_course.algo import evaluate_policy

        best = self._judge.request("helper", ("best_policy", self, ()), self)
        if not isinstance(best, dict) or not best.get("state"):
            raise AssertionError("the algorithm has no best policy: it was never evaluated")
        evaluation = best.get("evaluation")
        if type(evaluation) is not int or not 0 <= evaluation < MAX_EVALUATIONS:
            self._judge.refused = True  # a forged claim: no retraining to name a function either
            raise AssertionError(
                f"the algorithm claims its best policy was found at evaluation {str(evaluation)[:40]}; the grader "
                f"replays at most {MAX_EVALUATIONS} evaluations (the learning test makes 7): refused, not replayed")
        measured = evaluate_policy(cfg, best["state"], evaluation)
        claimed = best.get("best_reward")
        if not isinstance(claimed, float) or abs(measured - claimed) > 0.01 * max(1.0, abs(claimed)):
            print(f"The grader evaluated your best policy again: {measured:.1f} (your notebook's TD3 said {claimed}).")
        self._judge.show_learning_curve(best.get("curve"), measured)
        return measured


class _Linked:
    """A scalar result whose gradient with respect to the judge's tensors is known."""

    @staticmethod
    def make(value, grads, inputs):
        import torch

        class Linked(torch.autograd.Function):
            @staticmethod
            def forward(ctx, value, *inputs):
                return value.clone()

            @staticmethod
            def backward(ctx, grad_output):
                return (None, *[None if g is None else grad_output * g.to(grad_output.dtype) for g in grads])

        return Linked.apply(value, *inputs)


class Judge:
    """Runs the test cells of one submission; ``verdicts`` maps each test's grade_id to its outputs."""

    def __init__(self, student: StudentProcess, names: list[str], timeout: float, slow: dict[str, float]):
        self.student, self.names, self.timeout, self.slow = student, names, timeout, slow
        self.mirrors: dict[int, object] = {}  # the student's objects seen so far, by their id there
        self.deadline = float("inf")
        self.printed: list[str] = []
        self.printed_size = 0  # bytes of self.printed
        self.dropped = 0  # bytes of printed output dropped in this test
        self.budget = 0.0  # the submission's time budget (s), 0: none
        self.budget_deadline = float("inf")  # monotonic
        self.displays: list[dict] = []  # outputs of the test other than text (the learning curve)
        self.requests = 0
        self.refused = False  # the student's process claimed what the judge refuses to replay
        self.namespace: dict = {"__name__": "__main__", "__builtins__": builtins}

    # --- requests
    def ensure_started(self):
        if not self.student.alive:
            self.mirrors.clear()
            self.student.start()
            for name in self.names:
                found = self.student.names_found.get(name)
                if found is not None:
                    self.namespace[name] = self.decode(found)
                else:
                    self.namespace[name] = _undefined(name)

    def request(self, op, body, remote: Remote | None = None):
        if remote is not None and remote._generation != self.student.generation:
            raise RuntimeError("this object was lost when the student's process was started again "
                               "(after an exit, a crash or a time limit in an earlier test)")
        self.requests += 1
        payload, _ = _pickle(op, body)
        return self.finish(self.student.request(op, payload, self.deadline))

    def call(self, remote: Remote, args, kwargs, target=None):
        """Calls the student's function ``remote``; or, with ``target`` (a course helper, sent
        by name), calls ``target(*args, **kwargs)`` there, the student's function among args."""
        import torch

        if remote._generation != self.student.generation:
            raise RuntimeError("this function was lost when the student's process was started again")
        arena, places = self.student.arena, {}
        payload, sent = _pickle("call", (remote if target is None else target, args, kwargs, _graph_watched()),
                                arena, places)
        modules = channel._modules_in(args, torch.nn.Module)
        self.requests += 1
        answer = self.student.request("call", payload, self.deadline)
        if "raise" in answer:
            return self.finish(answer)
        self._apply_changes(sent, places, arena, _rows(answer.get("changed"), 3))
        for path, owner, name, encoded in _rows(answer.get("replaced"), 4):
            module = modules.get(tuple(path))
            if module is not None:
                owner_module = module.get_submodule(str(owner)) if owner else module
                owner_module._parameters[str(name)] = self.decode(encoded)
        if answer.get("built") is True:
            with torch.enable_grad():  # what the student's function recorded, recorded here too
                torch.ones((), requires_grad=True) * 1.0
        result = self.finish(answer)
        grads = answer.get("grads")
        if isinstance(result, torch.Tensor) and type(grads) is list and grads:
            rows = [(sent[int(i)], None if g is None else _tensor(g)) for i, g in _rows(grads, 2)]
            if result.numel() == 1 and any(g is not None for _, g in rows):
                result = _Linked.make(result.detach(), [g for _, g in rows], [t for t, _ in rows])
        return result

    def _apply_changes(self, sent: dict, places: dict, arena, rows: list):
        """Does again to the judge's tensors what the call did to the student's copies.

        For a tensor in the shared memory, the judge reads itself what is there now: that is
        what the call wrote in place. The student's report counts only where it can cost the
        student: a tensor it says moved, or whose value it gives is not what the shared memory
        holds, has been replaced (or its ``.data``), and gets that value in new storage (so that
        a test of an update in place fails). A process that claims "in place" for a replaced
        tensor therefore gains nothing, unless it writes the values in place itself, which is
        the update in place. Tensors that were not shared (no room, not dense) are as reported."""
        import torch

        reported = {}
        for index, value, moved in rows:
            if type(index) is not int or index not in sent:
                raise BrokenChannel("a change to a tensor that was not sent")
            reported[index] = (_tensor(value), moved is True)
        with torch.no_grad():
            for index, tensor in sent.items():
                row = reported.get(index)
                if index in places:
                    now = arena.read(places[index])
                    if row is not None and (row[1] or not _same(row[0], now)):
                        tensor.data = row[0].clone()  # no longer the storage the judge shares: replaced
                    elif not _same(now, tensor.detach()):
                        tensor.copy_(now)
                elif row is not None:
                    value, moved = row
                    if moved or tensor.shape != value.shape or tensor.dtype != value.dtype:
                        tensor.data = value.clone()
                    else:
                        tensor.copy_(value)

    def finish(self, answer: dict):
        printed = answer.get("printed")
        dropped = answer.get("printed_dropped")
        if type(dropped) is int and 0 < dropped < 2**40:  # the student's process's word: only shown
            self.dropped += dropped
        if type(printed) is str and printed:
            size = len(printed.encode(errors="replace"))
            room = MAX_TEST_PRINTED - self.printed_size
            if size > room:
                kept = printed.encode(errors="replace")[:max(room, 0)].decode(errors="ignore")
                self.dropped += size - len(kept.encode())
                printed = kept
            if printed:
                self.printed.append(printed)
                self.printed_size += len(printed.encode())
        if "raise" in answer:
            _raise(answer["raise"])
        return self.decode(answer.get("value"))

    # --- answers: data, or stand-ins
    def decode(self, value, depth=0):
        import torch

        if value is None or type(value) in (bool, int, float, str):
            return value
        if type(value) is not dict or depth > 30:
            raise BrokenChannel("an answer of an unknown form")
        kind = value.get("~")
        if kind == "tensor":
            return self._mirror(value)
        if kind == "ndarray":
            return _tensor(value.get("value")).numpy()
        if kind in ("list", "tuple"):
            items = [self.decode(v, depth + 1) for v in _list(value.get("items"))]
            return items if kind == "list" else tuple(items)
        if kind == "dict":
            return {self.decode(k, depth + 1): self.decode(v, depth + 1) for k, v in _rows(value.get("items"), 2)}
        if kind == "handle":
            oid = value.get("id")
            if type(oid) is not int:
                raise BrokenChannel("a handle without a number")
            known = self.mirrors.get(oid)
            if isinstance(known, Remote):
                return known
            remote = Remote(self, oid, self.student.generation, str(value.get("type"))[:100],
                            str(value.get("repr"))[:200], bool(value.get("callable")))
            self.mirrors[oid] = remote
            return remote
        raise BrokenChannel(f"an answer of an unknown kind {str(kind)[:40]!r}")

    def _mirror(self, value: dict):
        """The judge's copy of one of the student's tensors: the same copy each time (so that
        ``is`` compares as there), updated to its current value."""
        import torch

        oid, data = value.get("id"), _tensor(value.get("value"))
        known = self.mirrors.get(oid)
        if isinstance(known, torch.Tensor):
            with torch.no_grad():
                if known.shape == data.shape and known.dtype == data.dtype:
                    known.copy_(data)
                else:
                    known.data = data
            return known
        requires_grad = value.get("requires_grad") is True and (data.is_floating_point() or data.is_complex())
        if value.get("param") is True:
            mirror = torch.nn.Parameter(data, requires_grad=requires_grad)
        elif requires_grad and value.get("leaf") is not True:
            mirror = data.requires_grad_(True) * 1  # not a leaf, as there
        else:
            mirror = data.requires_grad_(requires_grad)
        if type(oid) is int:
            self.mirrors[oid] = mirror
        return mirror

    def show_learning_curve(self, curve, measured: float):
        """The learning test's figure in the test's outputs (the curve as the student's process
        recorded it: shown, never scored), and when the best return is not above the
        threshold, what the curve suggests."""
        from bbrl_course import learning_test
        from bbrl_course.checks import LEARNING_THRESHOLD

        points = learning_test.clean_curve(curve)
        self.displays.append(learning_test.display_output(points, LEARNING_THRESHOLD, measured))
        if not measured > LEARNING_THRESHOLD:
            print("What the curve suggests: " + learning_test.diagnosis(points, LEARNING_THRESHOLD))

    # --- the cells
    def run_cell(self, source: str, label: str, test: bool) -> dict:
        """Runs one cell; for a test, its outcome: stdout, and the error if it failed."""
        self.printed = []
        self.printed_size = self.dropped = 0
        self.displays = []
        self.requests = 0
        limit = self.slow.get(label, self.timeout)
        # a slow test counts the CPU time of the student's code (a loaded machine stretches
        # its wall-clock time, not its work), within a wall-clock limit SLOW_WALL_FACTOR longer
        cpu = label in self.slow
        wall = limit * SLOW_WALL_FACTOR if cpu else limit
        out = io.StringIO()
        error: tuple[str, str] | None = None
        start = time.monotonic()
        if start >= self.budget_deadline:  # nothing more runs for this submission
            error = (TIME_LIMIT, budget_message(self.budget, label, here=False))
            return {"stdout": "", "error": error, "seconds": 0.0, "displays": [], "budget": "after"}
        self.deadline = min(start + wall, self.budget_deadline)
        self.student.budget_deadline = self.budget_deadline
        previous = signal.signal(signal.SIGALRM, _over_time)
        try:
            self.ensure_started()
            # the set-up of a restarted process is not the test's time (the budget's, still)
            self.deadline = min(time.monotonic() + wall, self.budget_deadline)
            self.student.cpu_limit = self.student.cpu_seconds() + limit if cpu else None
            # the judge's own work for the student (an evaluation replayed) counts too
            signal.setitimer(signal.ITIMER_REAL, max(self.deadline - time.monotonic(), 0.001))
            with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
                exec(compile(source, f"<{label}>", "exec"), self.namespace)
            signal.setitimer(signal.ITIMER_REAL, 0)
        except (StudentGone, JudgeOverTime) as gone:
            signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(gone, JudgeOverTime):
                self.student.stop()  # a request may be under way: the next test starts it again
                gone = StudentGone(TIME_LIMIT, "time")
            if gone.ename == TIME_LIMIT and time.monotonic() >= self.budget_deadline - 0.01:
                self.student.stop()
                error = (TIME_LIMIT, budget_message(self.budget, label, here=True))
            elif gone.ename == TIME_LIMIT and gone.message == "cpu":
                error = (TIME_LIMIT, f"this cell's student code used more than its limit of {limit:g} CPU-seconds "
                                     "(a time limit, not a failure to learn); the student's code was stopped (and "
                                     "started again for the next tests) and this cell scores 0")
            elif gone.ename == TIME_LIMIT:
                error = (TIME_LIMIT, f"this cell ran over its time limit of {wall:g} s; the student's code was "
                                     "stopped (and started again for the next tests) and this cell scores 0")
            else:
                error = (gone.ename, gone.message)
        except BrokenChannel as broken:
            signal.setitimer(signal.ITIMER_REAL, 0)
            self.student.stop()
            error = (TAMPERING, f"tampering suspected: the student's process sent {broken}; this test scores 0")
        except BaseException as exception:  # the test failed: an assert, or an error of the test's own code
            signal.setitimer(signal.ITIMER_REAL, 0)
            if isinstance(exception, KeyboardInterrupt):
                raise
            error = (type(exception).__name__, str(exception)[:MAX_ERROR])
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, previous)
        if test and self.requests and self.student.tampering:  # what was in place while this test asked
            seen = "; ".join(self.student.tampering)
            error = (TAMPERING, f"tampering suspected: the student's code {seen}; this test scores 0")
        self.student.cpu_limit = None
        printed = out.getvalue() + "".join(self.printed)
        if len(printed) > channel.MAX_PRINTED:
            self.dropped += len(printed[:-channel.MAX_PRINTED].encode(errors="replace"))
            printed = printed[-channel.MAX_PRINTED:]
        if self.dropped:
            printed = (f"[{self.dropped} bytes of printed output dropped: a test keeps {channel.MAX_PRINTED} "
                       "characters]\n" + printed)
        outcome = {"stdout": printed, "error": error, "seconds": time.monotonic() - start, "displays": self.displays}
        if error is not None and error[0] == TIME_LIMIT and error[1].startswith("the submission's time budget"):
            outcome["budget"] = "here"
        return outcome


def _pickle(op: str, body, arena: Arena | None = None, places: dict | None = None) -> tuple[bytes, dict]:
    """A request: stand-ins go as their handles, tensors by value (numbered, so that the
    answer can say which of them the student's function modified); with an ``arena``, the
    tensors that fit go in the memory shared with the student's process, and ``places``
    gets where (index -> place)."""
    import torch

    sent: dict[int, torch.Tensor] = {}
    by_id: dict[int, int] = {}
    values: dict[int, torch.Tensor] = {}  # the copies sent, pickled as they are

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, Remote):
                return ("ref", obj._oid)
            if isinstance(obj, torch.Tensor) and id(obj) not in values:
                index = by_id.setdefault(id(obj), len(by_id))
                sent[index] = obj
                value = obj.detach().clone()
                values[id(value)] = value
                place = arena.put(value) if arena is not None else None
                if place is not None:
                    places[index] = place
                    return ("shared", index, place, bool(obj.requires_grad), isinstance(obj, torch.nn.Parameter))
                return ("tensor", index, value, bool(obj.requires_grad), isinstance(obj, torch.nn.Parameter))
            return None

    buffer = io.BytesIO()
    Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL).dump((op, body))
    return buffer.getvalue(), sent


def _dropped(progress) -> None:
    """The outputs of a process started again: the feedback has the first one's."""


def _graph_watched() -> bool:
    """Whether a test watches for an autograd graph now (``records_autograd()``, a torch function
    mode, is on here): only then does the student's process watch the call it makes (that
    watch slows each torch operation by about a third, the learning test's training
    included), and only then is what it saw recorded again here."""
    from torch.overrides import _get_current_function_mode_stack

    from bbrl_course.checks import _GraphWatcher

    return any(isinstance(mode, _GraphWatcher) for mode in _get_current_function_mode_stack())


def _same(a, b) -> bool:
    """Whether two tensors hold the same bits (NaN included), with the same shape and dtype."""
    import torch

    if a.shape != b.shape or a.dtype != b.dtype:
        return False
    # into fresh memory: a one-element tensor may keep a stride of 0 (a clone of an expanded
    # one, such as an actor's action bounds), which no byte view accepts
    flat = [torch.empty(t.numel(), dtype=t.dtype).copy_(t.detach().cpu().reshape(-1)).view(torch.uint8)
            for t in (a, b)]
    return torch.equal(flat[0], flat[1])


def _undefined(name):
    def undefined(*args, **kwargs):
        raise NameError(f"name '{name}' is not defined: run the cell that defines it")

    undefined.__qualname__ = "<module>"
    return undefined


def _raise(described):
    """Raises, in the judge, the exception the student's function raised: the same type for
    Python's own exceptions, an Exception of the same name for others; a stub's
    NotImplementedError still names the function it was raised in (``checking`` says so)."""
    if type(described) is not dict:
        raise BrokenChannel("an error of an unknown form")
    name, message = str(described.get("type"))[:100], str(described.get("message"))[:2000]
    where = str(described.get("where"))[:200] or "<module>"
    cls = getattr(builtins, name, None) if described.get("builtin") is True else None
    if not (isinstance(cls, type) and issubclass(cls, Exception)):
        cls = type(name if name.isidentifier() else "StudentError", (Exception,), {})
    try:
        error = cls(message)
    except Exception:
        error = RuntimeError(f"{name}: {message}")

    def raised_there():
        raise error

    if all(part.isidentifier() or part == "<locals>" for part in where.split(".")) or where == "<module>":
        raised_there.__code__ = raised_there.__code__.replace(co_qualname=where, co_name=where.rsplit(".", 1)[-1])
    raised_there()


def _tensor(value):
    import torch

    if not isinstance(value, torch.Tensor):
        raise BrokenChannel("a tensor that is not a tensor")
    return value


def _list(value) -> list:
    if type(value) is not list:
        raise BrokenChannel("a list that is not a list")
    return value


def _rows(value, width: int) -> list:
    if value is None:
        return []
    rows = _list(value)
    if not all(type(row) is list and len(row) == width for row in rows):
        raise BrokenChannel("rows of an unknown form")
    return rows


# --- which cells run where ---------------------------------------------------------------

def _meta(cell) -> dict:
    return cell.metadata.get("nbgrader", {})


def student_names(source_nb) -> list[str]:
    """The names the student writes: top-level functions and classes of the solution cells."""
    names = []
    for cell in source_nb.cells:
        if cell.cell_type == "code" and _meta(cell).get("solution"):
            with contextlib.suppress(SyntaxError):
                for node in ast.parse(cell.source).body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                        names.append(node.name)
    return list(dict.fromkeys(names))


def _tags(cell) -> list[str]:
    return list(cell.metadata.get("tags", []))


def student_cells(source_nb, submitted_nb) -> list[list]:
    """What the student's process runs: the student's notebook in its order, without its test
    cells, the cells the grader skips (tag ``run``) and the set-up cell, with the release's
    version of every locked cell (as nbgrader does). [label, source, grade_id or None, whether
    the feedback shows its figures]: the student's cells, not the given ones (the same for
    every student: their figures would cost each feedback about 100 KB)."""
    from autograder.course.setup_cell import is_setup_cell

    source = {_meta(c).get("grade_id"): c for c in source_nb.cells if _meta(c).get("grade_id")}
    cells = []
    for index, cell in enumerate(submitted_nb.cells):
        if cell.cell_type != "code":
            continue
        grade_id = _meta(cell).get("grade_id")
        mine = source.get(grade_id)
        if mine is not None:
            if is_test(mine) or "run" in _tags(mine) or is_setup_cell(mine):
                continue
            text = cell.source if _meta(mine).get("solution") else HIDDEN.sub("", mine.source)
        elif "run" in _tags(cell):
            continue  # skipped, as the kernel skips it
        else:
            # a cell the student added runs in full, as in the kernel and in bbrl_course.nbload:
            # its helpers (``mse = nn.MSELoss()``) are there for the tests; a training run
            # left in it costs at most the cell's time limit
            text = cell.source
        cells.append([grade_id or f"cell {index + 1}", text, grade_id or None,
                      mine is None or bool(_meta(mine).get("solution"))])
    return cells


def judge_cells(source_nb) -> list[tuple[str, str, bool]]:
    """What the judge runs, in the source's order: the given cells (not the student's, not the
    set-up, not those tagged ``run``) and every test cell. (label, source, is_test)."""
    from autograder.course.setup_cell import is_setup_cell

    cells = []
    for cell in source_nb.cells:
        meta = _meta(cell)
        if cell.cell_type != "code" or meta.get("solution") or is_setup_cell(cell) or "run" in _tags(cell):
            continue
        cells.append((meta.get("grade_id", "cell"), cell.source, is_test(cell)))
    return cells


def references(source_nb, names: list[str]) -> dict[str, str]:
    """The instructor's definition of each name the student writes (its ``def`` or ``class``,
    from the source's solution cells), by name."""
    found = {}
    for cell in source_nb.cells:
        if cell.cell_type == "code" and _meta(cell).get("solution"):
            with contextlib.suppress(SyntaxError):
                for node in ast.parse(cell.source).body:
                    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) and node.name in names:
                        found[node.name] = ast.get_source_segment(cell.source, node)
    return found


def _ranked(source_nb, verdicts: dict, learning: str, candidates: list[str]) -> list[tuple[int, str]]:
    """(rank, name): 0 named by a failed test's message, 1 called by a failed test, 2 other."""
    failed = {label: v for label, v in verdicts.items()
              if not label.startswith("_") and label != learning and v.get("error")}
    texts = {_meta(c).get("grade_id"): c.source for c in source_nb.cells if is_test(c)}

    def called(name):
        return any(re.search(rf"\b{re.escape(name)}\b", texts.get(label, "")) for label in failed)

    def named(name):
        return any(re.search(rf"\b{re.escape(name)}\b", str(v["error"][1])) for v in failed.values())

    ranked = [(0 if named(n) else 1 if called(n) else 2, n) for n in candidates]
    return sorted(ranked, key=lambda item: (item[0], candidates.index(item[1])))


def swaps(source_nb, verdicts: dict, learning: str, candidates: list[str]) -> list[tuple[str, ...]]:
    """What to try, in order: each function a failed test names, alone; then each pair of them
    (two wrong functions: neither alone makes it learn); then the other suspects alone."""
    ranked = _ranked(source_nb, verdicts, learning, candidates)
    named = [name for rank, name in ranked if rank == 0]
    pairs = [(a, b) for i, a in enumerate(named) for b in named[i + 1:]]
    return [(name,) for name in named] + pairs + [(name,) for rank, name in ranked if rank > 0]


def _both(names: tuple[str, ...]) -> str:
    return " and ".join(names)


def not_run(swap) -> dict:
    """A retraining's answer when it did not run (no time left, a name the course does not
    define, the engine could not run it)."""
    return {"swap": list(swap), "ran": False, "restored": False, "best": None, "what": ""}


def retrain(source_nb, submission: Path, cells: list, names: list[str], limits: sandbox.Limits | None,
            timeout: float, slow: dict, learning: str, swap: tuple[str, ...], budget_deadline: float) -> dict:
    """One retraining of ``attribute``: the learning test run again with the student's ``swap``
    (one function, or two) replaced by the instructor's, in a student's process of its own.
    Returns {swap, ran, restored, best, what}: names and figures only, never what that process
    printed or raised beyond a built-in exception's name (it may hold the course's code)."""
    reference = references(source_nb, names)
    answer = not_run(swap)
    if any(name not in reference for name in swap) or time.monotonic() >= budget_deadline - 30:
        return answer
    given = [(label, text) for label, text, test in judge_cells(source_nb) if not test]
    test_text = next(text for label, text, test in judge_cells(source_nb) if label == learning)
    process = StudentProcess(submission, [*cells, *([f"reference {n}", reference[n]] for n in swap)], names,
                             limits, cell_timeout=timeout)
    other = Judge(process, names, timeout, slow)
    other.budget_deadline = budget_deadline
    try:
        for label, text in given:
            other.run_cell(text, label, False)
        outcome = other.run_cell(test_text, learning, True)
    finally:
        process.stop()
    best = other.namespace.get("best")
    best = best if isinstance(best, float) else None
    error = outcome["error"]
    answer.update(ran=True, best=best, restored=error is None)
    if error is None:
        return answer
    # the test's own `checking` says "run_td3 raised ValueError: ..." (the rest is the process's)
    raised = re.match(r"([\w.]+) raised (\w+): ", str(error[1] or "")) if error[0] == "AssertionError" else None
    ename = raised.group(2) if raised else str(error[0])
    if error[0] == TIME_LIMIT:
        answer["what"] = "it ran out of time"
    elif ename != "AssertionError":
        # only a built-in exception's name: what this process says may hold the course's code
        known = isinstance(getattr(builtins, ename, None), type) and issubclass(getattr(builtins, ename),
                                                                               BaseException)
        answer["what"] = (f"the training raised {ename if known else 'an error'}"
                          + (f" in {raised.group(1)}" if raised else "")
                          + ": your code and the course's version do not fit together, or another of your "
                            "functions fails")
    else:
        answer["what"] = "it still does not learn" + ("" if best is None else f" (best {best:.0f})")
    return answer


def _read(source: Path, submission: Path, slow_timeout: float):
    """The instructor's notebook, the names the student writes, the student's cells and the
    slow tests' time limits (torch on one thread, as every grading process)."""
    import torch

    torch.set_num_threads(1)
    source_nb = nbformat.read(str(source), as_version=4)
    submitted_nb = nbformat.read(str(submission / source.name), as_version=4)
    names = student_names(source_nb)
    slow = {_meta(c).get("grade_id"): slow_timeout for c in source_nb.cells if "slow" in _tags(c)}
    return source_nb, names, student_cells(source_nb, submitted_nb), slow


@contextlib.contextmanager
def _in_a_copy_of(submission: Path):
    """In a fresh copy of the submission's folder, as the current directory (removed after)."""
    workdir = Path(tempfile.mkdtemp(prefix="course-judge-"))
    shutil.copytree(submission, workdir, dirs_exist_ok=True)
    here = os.getcwd()
    os.chdir(workdir)
    try:
        yield workdir
    finally:
        os.chdir(here)
        shutil.rmtree(workdir, ignore_errors=True)


def retrain_submission(source: Path, submission: Path, limits: sandbox.Limits | None, learning: str,
                       swap: tuple[str, ...], deadline: float, timeout: float = 30, slow_timeout: float = 180) -> dict:
    """``retrain`` for a submission's folder, in a process of its own (a task of the grading
    engine: see ``autograder.grading.submission.retrain_in_folder``); ``deadline`` is the
    submission's, a time.time()."""
    source_nb, names, cells, slow = _read(source, submission, slow_timeout)
    if learning not in slow:
        return not_run(swap)
    with _in_a_copy_of(submission):
        return retrain(source_nb, submission, cells, names, limits, timeout, slow, learning, tuple(swap),
                       time.monotonic() + (deadline - time.time()))


class EngineRetrainings:
    """The retrainings asked of the grading engine: the judge writes the swaps still to try
    (``plan-K.json``) in ``folder``; the worker's task (``autograder.grading.submission``)
    runs as many of them at once as the engine has room for, as tasks of its own, and writes
    their answers (``answer-K.json``). Called with the swaps in order, returns the answers of
    those that ran ([] when no answer came before the budget's end)."""

    def __init__(self, folder: Path, learning: str):
        self.folder, self.learning, self.asked = folder, learning, 0

    def __call__(self, pending: list[tuple[str, ...]], budget_deadline: float) -> list[dict]:
        plan = self.folder / f"plan-{self.asked}.json"
        answer = self.folder / f"answer-{self.asked}.json"
        self.asked += 1
        partial = plan.with_suffix(".partial")
        partial.write_text(json.dumps({"learning": self.learning, "swaps": [list(s) for s in pending],
                                       "deadline": time.time() + (budget_deadline - time.monotonic())}))
        partial.rename(plan)
        while time.monotonic() < budget_deadline:
            if answer.exists():
                return json.loads(answer.read_text())
            time.sleep(0.2)
        return []


def _local(retrain_one):
    """The retrainings one at a time, in this process's children (no grading engine)."""
    def run(pending: list[tuple[str, ...]], budget_deadline: float) -> list[dict]:
        return [dict(retrain_one(pending[0], budget_deadline), worker="here")]
    return run


def attribute(source_nb, submission: Path, cells: list, names: list[str], limits: sandbox.Limits | None,
              timeout: float, slow: dict, learning: str, verdicts: dict, retrainings: int,
              budget_deadline: float, engine: Path | None = None) -> dict:
    """When the learning test failed: the learning test run again with one of the student's
    functions replaced by the instructor's (``retrain``), in the order of ``swaps``, at most
    ``retrainings`` times, each in a student's process of its own (the reference's source
    never enters the process that graded the student's code; from it only the judge's
    measurements come back). With ``engine`` (a folder: see ``EngineRetrainings``), the
    grading engine runs them, several at once when it has idle workers; else one after another
    here. Stops at the first swap, in order, that restores learning.
    Returns it as a notebook output: its text (names and figures only) for the feedback, and in
    its metadata (``attribution``) the function that restored learning, for the class report."""
    from bbrl_course.checks import LEARNING_THRESHOLD

    reference = references(source_nb, names)
    order = swaps(source_nb, verdicts, learning, [n for n in names if n in reference])
    planned = order[:retrainings]
    runner = EngineRetrainings(engine, learning) if engine is not None else _local(
        lambda swap, deadline: retrain(source_nb, submission, cells, names, limits, timeout, slow, learning, swap,
                                       deadline))
    answers: dict[tuple[str, ...], dict] = {}
    waves: list[list[str]] = []

    def first_restored():
        return next((swap for swap in planned if answers.get(swap, {}).get("restored")), None)

    def settled():  # a swap restored learning and every swap before it in the order has run
        restored = first_restored()
        return restored is not None and all(swap in answers for swap in planned[:planned.index(restored)])

    while not settled() and len(answers) < len(planned) and time.monotonic() < budget_deadline - 30:
        pending = [swap for swap in planned if swap not in answers]
        ran = [a for a in runner(pending, budget_deadline) if tuple(a["swap"]) in pending and a.get("ran")]
        if not ran:
            break
        waves.append([_both(tuple(a["swap"])) for a in ran])
        answers.update((tuple(a["swap"]), a) for a in ran)
    restored = first_restored()
    tried = [(swap, answers[swap]) for swap in planned if swap in answers]
    untried = [_both(w) for w in order if w not in answers]
    lines = ["Which of your functions stops your TD3 from learning? The grader trained it again with the "
                 "course's version of one of your functions (or of two) in place of yours, one swap per training "
                 "(those your failed tests point at first):"]
    for swap, answer in tried:
        if swap == restored:
            continue
        if answer["restored"]:
            best = answer["best"]
            lines.append(f"- with the course's {_both(swap)}: it learns too"
                         + ("" if best is None else f" (best {best:.0f})") + ";")
        else:
            lines.append(f"- with the course's {_both(swap)}: {answer['what']};")
    if restored is not None:
        best = answers[restored]["best"]
        figure = "" if best is None else f" (best {best:.0f}, above {LEARNING_THRESHOLD:.0f})"
        lines.append(f"- with the course's {_both(restored)} in place of yours, your TD3 learns{figure}.")
        lines.append(f"So look at your {_both(restored)} first" + (
            ": both are wrong (neither alone makes it learn)." if len(restored) > 1 else "."))
    elif not tried:
        lines[0] = ("Which of your functions stops your TD3 from learning? The grader could not train it again to "
                    "find out (no time was left in the submission's time budget, or the grading engine could not "
                    "run the retrainings).")
    else:
        lines.append(f"None of the {len(tried)} swaps tried makes your TD3 learn: more than one of your functions "
                     "may be wrong, or what stops it is elsewhere." + (
                         f" Not tried (the grader trains again at most {retrainings} times, within the submission's "
                         f"time budget): {', '.join(untried)}." if untried else ""))
    info = {"restored_by": None if restored is None else _both(restored),
            "best": None if restored is None else answers[restored]["best"],
            "tried": [_both(swap) for swap, _ in tried], "waves": waves,
            "runs": [{"swap": _both(swap), **{k: a[k] for k in ("worker", "started", "ended") if k in a}}
                     for swap, a in tried]}
    return {"output_type": "display_data", "data": {"text/plain": "\n".join(lines).strip() + "\n"},
            "metadata": {"attribution": info}}


def run(source: Path, submission: Path, limits: sandbox.Limits | None, timeout: float = 30,
        slow_timeout: float = 180, deadline: float = 0.0, budget: float = 0.0, retrainings: int = 0,
        engine: Path | None = None, fork: bool = False) -> dict:
    """The verdicts of a submission's tests: {grade_id: {stdout, error, seconds}}, plus
    "_notes" (what the judge noticed) and "_tampering". When a learning test (tag ``slow``)
    fails, and ``retrainings`` allows, what ``attribute`` finds (on the grading engine when
    ``engine`` is given) is added to its output. ``fork``: without a sandbox, the student's
    process is forked from this one (``fork_channel``): for a caller that has only imported."""
    source_nb, names, cells, slow = _read(source, submission, slow_timeout)
    student = StudentProcess(submission, cells, names, limits, cell_timeout=timeout, fork=fork)
    judge = Judge(student, names, timeout, slow)
    if deadline:  # time.time() when the submission's budget ends
        judge.budget = student.budget = budget
        judge.budget_deadline = time.monotonic() + (deadline - time.time())
    verdicts: dict = {}
    # the test cells read the student's files (the experiment's results) from a copy of them
    with _in_a_copy_of(submission):
        try:
            for label, text, test in judge_cells(source_nb):
                outcome = judge.run_cell(text, label, test)
                if test:
                    verdicts[label] = outcome
            student.stop()
            for label in slow:
                error = verdicts.get(label, {}).get("error")
                # not for code left unwritten (its error says so already), a time limit or tampering
                unwritten = error and (error[0] == "NotImplementedError" or "is not written yet:" in str(error[1]))
                if retrainings and error and error[0] not in (TIME_LIMIT, TAMPERING) and not unwritten \
                        and not student.tampering and not judge.refused:
                    verdicts[label]["displays"].append(attribute(source_nb, submission, cells, names, limits,
                                                                 timeout, slow, label, verdicts, retrainings,
                                                                 judge.budget_deadline, engine))
        finally:
            student.stop()
    verdicts["_tampering"] = student.tampering
    verdicts["_cells"] = student.shown  # the feedback's outputs of the cells the student's process ran
    return verdicts


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m autograder.isolation.judge", description=__doc__.split("\n\n")[0])
    parser.add_argument("source", type=Path, help="the instructor's notebook (with the hidden tests)")
    parser.add_argument("submission", type=Path, help="the folder of the student's notebook")
    parser.add_argument("verdicts", type=Path, help="where to write the verdicts (JSON)")
    parser.add_argument("--trusted", action="store_true", help="run the student's code without the sandbox")
    parser.add_argument("--timeout", type=float, default=30)
    parser.add_argument("--slow-timeout", type=float, default=180)
    parser.add_argument("--limits", default="{}", help="the sandbox's limits, as JSON")
    parser.add_argument("--retrainings", type=int, default=0,
                        help="when the learning test fails, train again with one of the student's functions replaced "
                             "by the course's, at most this many times")
    args = parser.parse_args(argv)
    limits = None if args.trusted else sandbox.Limits(**json.loads(args.limits))
    verdicts = run(args.source.resolve(), args.submission.resolve(), limits, args.timeout, args.slow_timeout,
                   retrainings=args.retrainings)
    args.verdicts.write_text(json.dumps(verdicts, indent=1))


if __name__ == "__main__":
    main()
