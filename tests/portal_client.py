"""The portal seen from outside, for the end-to-end, browser and load tests and the
benchmark: a server started as an instructor starts it (a subprocess), and students who
sign in by their link and hand in over HTTP (httpx), as a browser would.
"""

from __future__ import annotations

import csv
import html
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_roster(root: Path, students: list[str]) -> Path:
    path = Path(root) / "roster.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "email", "lms_id"])
        for student in students:
            writer.writerow([student, student.replace("-", " ").title(), f"{student}@example.edu", ""])
    return path


def sign_in_links(course: str, students: list[str], port: int) -> dict[str, str]:
    """The roster of ``students`` written in the course folder ``course`` (relative to the
    repository), and their links made by `portal tokens` as an instructor types it."""
    from conftest import cli

    write_roster(REPO / course, students)
    made = cli("portal", "tokens", "--root", course, "--roster", f"{course}/roster.csv",
               "--url", f"http://127.0.0.1:{port}")
    assert made.returncode == 0, made.stderr
    found = links(made.stdout)
    assert sorted(found) == sorted(students), made.stdout
    return found


def links(tokens_output: str) -> dict[str, str]:
    """{student: sign-in link} from what `portal tokens` printed."""
    found = {}
    for line in tokens_output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "/signin/" in parts[1]:
            found[parts[0]] = parts[1]
    return found


class Server:
    """A portal server process (its own process group: its Dask workers and sandboxes are
    killed with it), its output in ``log``."""

    def __init__(self, command: list[str], port: int, log: Path, cwd: Path = REPO, env=None):
        self.command, self.port, self.log, self.cwd, self.env = command, port, Path(log), cwd, env
        self.base = f"http://127.0.0.1:{port}"
        self.process = None

    def start(self, timeout: float = 120) -> Server:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = self.log.open("ab")
        self.process = subprocess.Popen(self.command, cwd=self.cwd, stdout=out, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL, start_new_session=True, env=self.env)
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the portal stopped at start ({self.process.returncode}): {self.output()[-3000:]}")
            try:
                httpx.get(self.base + "/", timeout=2)
                return self
            except httpx.TransportError:
                time.sleep(0.3)
        self.kill()
        raise TimeoutError(f"the portal did not answer within {timeout} s: {self.output()[-3000:]}")

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL to the server and everything it started (a crash, a power cut)."""
        if self.process is not None and self.process.poll() is None:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.process.wait(30)

    def stop(self) -> None:
        """Ctrl-C, as an instructor stops it; SIGKILL if it does not end."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGINT)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            pass
        self.kill()  # what is left of its group (Dask's workers)
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cli_server(root: str, port: int, log: Path, *extra: str) -> Server:
    """``python -m autograder portal serve --root ROOT --port PORT`` as typed from the repository's root."""
    return Server([sys.executable, "-m", "autograder", "portal", "serve", "--root", root, "--port", str(port),
                   *extra], port, log)


def trusted_server(root: str, port: int, log: Path, per_hour: int = 3, jobs: int = 2) -> Server:
    """The same server without the sandbox (``serve(..., limits=None)``; the command line has
    no --trusted): for the load test, where the sandbox's cost is not what is measured."""
    code = ("import sys; from pathlib import Path; from autograder.course import course_root; "
            "from autograder.portal.serve import serve; from autograder.portal.store import Limit; "
            f"serve(course_root({root!r}), '127.0.0.1', {port}, None, {jobs}, None, Limit({per_hour}, 3600))")
    return Server([sys.executable, "-c", code], port, log)


class Student:
    """A student's browser session: the session cookie from their link, the _xsrf cookie from the form."""

    def __init__(self, link: str, timeout: float = 60):
        base = link.split("/signin/")[0]
        self.client = httpx.Client(base_url=base, timeout=timeout, follow_redirects=False)
        signed = self.client.get(link[len(base):])
        assert signed.status_code == 302 and signed.headers["location"] == "/", (signed.status_code, signed.text)
        home = self.client.get("/")
        assert home.status_code == 200, home.text
        self.xsrf = self.client.cookies.get("_xsrf")
        assert self.xsrf, "the hand-in form set no _xsrf cookie"

    def hand_in(self, assignment: str, data: bytes, filename: str | None = None) -> int:
        answer = self.client.post(f"/submit/{assignment}", data={"_xsrf": self.xsrf},
                                  files={"notebook": (filename or f"{assignment}.ipynb", data,
                                                      "application/x-ipynb+json")})
        assert answer.status_code == 302, (answer.status_code, answer.text[:500])
        return int(answer.headers["location"].rsplit("/", 1)[1])

    def status(self, submission: int) -> tuple[str, dict[str, float | None], str]:
        """(state, {test: points or None (to grade by hand)}, the page) of a submission's page."""
        page = self.client.get(f"/submissions/{submission}")
        assert page.status_code == 200, page.text
        return parse_status(page.text)

    def wait(self, submission: int, timeout: float, every: float = 1.0) -> tuple[str, dict, str]:
        deadline = time.monotonic() + timeout
        while True:
            state, scores, page = self.status(submission)
            if state in ("graded", "failed") or time.monotonic() > deadline:
                return state, scores, page
            time.sleep(every)

    def close(self):
        self.client.close()


def parse_status(page: str) -> tuple[str, dict[str, float | None], str]:
    state = re.search(r"<p>[^<:]+: (\w+)", page)
    scores = {}
    for test, points in re.findall(r"<tr><td>([^<]*)</td><td>([^<]*) / [^<]*</td></tr>", page):
        scores[html.unescape(test)] = None if points == "to grade by hand" else float(points)
    return (state.group(1) if state else "?"), scores, page
