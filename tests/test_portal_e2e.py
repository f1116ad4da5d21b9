"""The submission portal end to end, with real grading: the server started as an
instructor starts it (``python -m autograder portal serve``, in the sandbox), the links
made by ``portal tokens``, students who sign in by their link and hand in over HTTP, and
one in headless Chromium. The scores shown must be the sample class's exactly, the
feedback must hold no hidden test, and the hand-ins and grades must be where ``make
grade`` and the exports find them. Heavy (a Dask cluster, three gradings): run it under
``flock /tmp/heavy.lock``.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import sqlite3
import time
from pathlib import Path

import pytest

import browser
import sample_class
from conftest import REPO, cli
from portal_client import Student, cli_server, free_port, sign_in_links

#: relative to the repository's root, with a space, as instructors name folders
COURSE = "outputs/portal e2e"
ASSIGNMENT = sample_class.DDPG
SAMPLES = {s.student: s for s in sample_class.SAMPLES}
SOLUTION, BUG = SAMPLES["ddpg-solution"], SAMPLES["bug-actor-sign"]
#: the browser's student: the solution with a cell whose output is markup with scripts
BROWSER_STUDENT = "ddpg-in-browser"
MARKER = "PORTAL-SCRIPT-RAN"
GRADING = 420  # seconds for a hand-in to be graded (a loaded machine: two cores for four engineers)


def _notebook(sample) -> bytes:
    folder = REPO / COURSE / "samples"
    return sample_class.write_sample(sample, folder).read_bytes()


def _with_script_output() -> bytes:
    """The solution, and a cell the student added that displays markup with scripts."""
    sample = sample_class.Sample(BROWSER_STUDENT, ASSIGNMENT, "the solution, and an output with scripts", edits=[
        sample_class.Edit("new:ddpg-noise-plot", new=(
            "from IPython.display import HTML, display\n"
            f"display(HTML(\"<b>hi</b><script>console.log('{MARKER}')</script>"
            f"<img src='data:,' onerror=\\\"console.log('{MARKER}')\\\">\"))"))])
    return _notebook(sample)


@pytest.fixture(scope="module")
def portal():
    root = REPO / COURSE
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    students = [SOLUTION.student, BUG.student, BROWSER_STUDENT]
    port = free_port()
    signin = sign_in_links(COURSE, students, port)
    server = cli_server(COURSE, port, root / "server.log", "--jobs", "2").start()
    try:
        yield {"root": root, "links": signin, "server": server}
    finally:
        server.stop()


@pytest.fixture(scope="module")
def graded(portal):
    """The solution and a bug handed in at once by two students, each waited for until graded."""
    handed = {}
    for sample in (SOLUTION, BUG):
        student = Student(portal["links"][sample.student])
        handed[sample.student] = (student, student.hand_in(ASSIGNMENT, _notebook(sample)))
    start = time.monotonic()
    shown = {name: student.wait(sid, GRADING) for name, (student, sid) in handed.items()}
    print(f"two hand-ins graded through the portal in {time.monotonic() - start:.1f} s")
    yield {"shown": shown, "handed": handed}
    for student, _ in handed.values():
        student.close()


def _text(page: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", page))


def test_two_students_hand_in_and_see_exactly_their_scores(graded, portal):
    maxima = sample_class.max_scores(ASSIGNMENT)
    for sample in (SOLUTION, BUG):
        state, scores, page = graded["shown"][sample.student]
        assert state == "graded", portal["server"].output()[-3000:] + page
        assert scores == sample_class.expected_scores(sample, maxima), sample.why
        assert "<iframe sandbox src='/feedback/" in page


def test_the_feedback_holds_no_hidden_test(graded):
    for name, (student, sid) in graded["handed"].items():
        answer = student.client.get(f"/feedback/{sid}")
        assert answer.status_code == 200
        assert answer.headers["Content-Security-Policy"].startswith("sandbox;")
        text = _text(answer.text)
        assert "test_actor_loss" in text  # it is the feedback
        leaked = [line for line in sample_class.hidden_lines(ASSIGNMENT) if line in text]
        assert not leaked and "BEGIN HIDDEN TESTS" not in text, (name, leaked[:3])
        # another student's feedback is not theirs to read
        other = next(s for n, (_, s) in graded["handed"].items() if n != name)
        assert student.client.get(f"/feedback/{other}").status_code == 404


def test_hand_ins_and_grades_are_where_make_grade_and_export_find_them(graded, portal):
    root = portal["root"]
    for sample in (SOLUTION, BUG):
        placed = root / "submitted" / sample.student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"
        assert placed.read_bytes() == _notebook(sample)
    assert sample_class.check_grades(root, [SOLUTION, BUG]) == []  # grades/01-ddpg.csv
    with sqlite3.connect(root / "gradebook.db") as db:
        rows = db.execute("SELECT s.student_id FROM submitted_assignment s JOIN assignment a "
                          "ON s.assignment_id = a.id WHERE a.name = ?", (ASSIGNMENT,)).fetchall()
    assert {SOLUTION.student, BUG.student} <= {r[0] for r in rows}
    handed_in = json.loads((root / "collected" / f"{ASSIGNMENT}.json").read_text())["students"]
    assert {SOLUTION.student, BUG.student} <= set(handed_in)


# --- a student in headless Chromium


def _chromium_or_skip():
    if browser.executable() is None:
        reason = "no Chromium here: install Debian's chromium (apt-get install chromium; .ci/run does)"
        if os.environ.get("REQUIRE_BROWSER"):  # CI: it must run
            pytest.fail(reason)
        pytest.skip(reason)


class Tab:
    """One page of a Chromium (tests/browser.py's protocol), with its frames: a sandboxed
    frame runs in a process of its own, attached paused, listened to (its console), then run."""

    def __init__(self, chromium: browser.Chromium):
        self.chromium = chromium
        self.target = chromium.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = chromium.send("Target.attachToTarget", {"targetId": self.target,
                                                               "flatten": True})["sessionId"]
        self.frames: list[str] = []  # the frames' sessions, latest last
        for domain in ("Page", "Runtime", "DOM"):
            chromium.send(f"{domain}.enable", {}, self.session)
        chromium.send("Target.setAutoAttach", {"autoAttach": True, "waitForDebuggerOnStart": True,
                                               "flatten": True}, self.session)

    def _pump(self, method: str) -> None:
        """Reads the browser's messages until ``method`` on the page, starting each new frame."""
        deadline = time.monotonic() + self.chromium.timeout
        while True:
            event = next((e for e in self.chromium.events if e.get("sessionId") == self.session and e.get("method") in (
                "Target.attachedToTarget", "Target.detachedFromTarget", method)), None)
            if event is None:
                assert time.monotonic() < deadline, f"no {method}"
                self.chromium._handle(self.chromium._read())
                continue
            self.chromium.events.remove(event)
            params = event.get("params", {})
            if event["method"] == "Target.attachedToTarget":  # a frame of the page, paused
                child = params["sessionId"]
                self.frames.append(child)
                self.chromium.send("Runtime.enable", {}, child)
                self.chromium.send("Runtime.runIfWaitingForDebugger", {}, child)
            elif event["method"] == "Target.detachedFromTarget":
                if params.get("sessionId") in self.frames:
                    self.frames.remove(params["sessionId"])
            else:
                return

    def evaluate(self, expression: str, session: str | None = None, context: int | None = None):
        params = {"expression": expression, "returnByValue": True}
        if context is not None:
            params["contextId"] = context
        answer = self.chromium.send("Runtime.evaluate", params, session or self.session)
        return answer["result"].get("value")

    def navigate(self, url: str) -> None:
        # not waited for: the new page's process is attached paused, and navigate answers only
        # once it runs (_pump runs it)
        self.chromium.send_async("Page.navigate", {"url": url}, self.session)
        self._pump("Page.loadEventFired")

    def submit(self, form_selector: str) -> None:
        """form.submit() called by the test (the page has no script), then its next page loaded."""
        self.evaluate(f"document.querySelector({json.dumps(form_selector)}).submit()")
        self._pump("Page.loadEventFired")

    def hand_in(self, base: str, form: str, notebook: Path) -> tuple[str, dict]:
        """From the hand-in page: the notebook chosen in the form's file input, the form sent,
        its submission's page read again until graded. Its path and the scores it shows."""
        document = self.chromium.send("DOM.getDocument", {}, self.session)["root"]["nodeId"]
        field = self.chromium.send("DOM.querySelector", {"nodeId": document, "selector": f"{form} input[type=file]"},
                                   self.session)["nodeId"]
        assert field
        self.chromium.send("DOM.setFileInputFiles", {"files": [str(notebook)], "nodeId": field}, self.session)
        self.submit(form)
        path = self.evaluate("location.pathname")
        assert re.fullmatch(r"/submissions/\d+", path), path
        deadline = time.monotonic() + GRADING
        while "graded" not in (state := self.evaluate("document.querySelector('p').innerText")):
            assert "failed" not in state and time.monotonic() < deadline, state
            time.sleep(2)
            self.navigate(f"{base}{path}")
        shown = self.evaluate("Array.from(document.querySelectorAll('tr')).slice(1)"
                              ".map(r => [r.cells[0].innerText, r.cells[1].innerText])")
        return path, {test: None if points.startswith("to grade by hand") else float(points.split(" / ")[0])
                      for test, points in shown}

    def frame_text(self) -> str:
        """The text of the page's one iframe, read in the frame itself (another origin)."""
        tree = self.chromium.send("Page.getFrameTree", {}, self.session)["frameTree"]
        for child in tree.get("childFrames", []):  # the frame in the page's process
            world = self.chromium.send("Page.createIsolatedWorld", {"frameId": child["frame"]["id"]},
                                       self.session)
            return self.evaluate("document.body ? document.body.innerText : ''", context=world["executionContextId"])
        assert self.frames, "the page has no iframe"
        return self.evaluate("document.body ? document.body.innerText : ''", session=self.frames[-1])

    def console(self) -> list[str]:
        """Every console message of the page and its frames so far."""
        return [" ".join(str(a.get("value", a.get("description", ""))) for a in e["params"].get("args", []))
                for e in self.chromium.events if e.get("method") == "Runtime.consoleAPICalled"]


def test_a_student_hands_in_with_a_browser(portal, tmp_path):
    _chromium_or_skip()
    notebook = tmp_path / "my 01-ddpg.ipynb"
    notebook.write_bytes(_with_script_output())
    with browser.Chromium(timeout=60) as chromium:
        tab = Tab(chromium)
        tab.navigate(portal["links"][BROWSER_STUDENT])  # redirected to the hand-in page
        assert tab.evaluate("location.pathname") == "/"
        form = f"form[action='/submit/{ASSIGNMENT}']"
        base = f"http://127.0.0.1:{portal['server'].port}"
        path, scores = tab.hand_in(base, form, notebook)
        assert scores == sample_class.expected_scores(SOLUTION, sample_class.max_scores(ASSIGNMENT))
        time.sleep(1)  # the frame's load
        text = tab.frame_text()
        assert "test_actor_loss" in text and "hi" in text, text[:500]
        leaked = [line for line in sample_class.hidden_lines(ASSIGNMENT) if line in text]
        assert not leaked, leaked[:3]
        assert not [m for m in tab.console() if MARKER in m], tab.console()
        # the grader took the scripts out and its page forbids scripts itself (a CSP <meta>);
        # the portal's sandbox must hold on its own: a feedback page that lost both, loaded again
        sid = path.rsplit("/", 1)[1]
        page = portal["root"] / "portal" / "feedback" / f"{sid}.html"
        assert "script-src 'none'" in page.read_text()
        page.write_text(f"<!doctype html><html><body><p>hi</p><script>console.log('{MARKER}')</script>"
                        f"<img src='data:,' onerror=\"console.log('{MARKER}')\"></body></html>")
        tab.navigate(f"{base}{path}")
        time.sleep(1.5)
        tab.evaluate("1")
        assert "hi" in tab.frame_text()
        assert not [m for m in tab.console() if MARKER in m], tab.console()
        # opened on its own (not in its frame), the page is still a sandbox without script
        tab.navigate(f"{base}/feedback/{sid}")
        time.sleep(1.5)
        tab.evaluate("1")
        assert not [m for m in tab.console() if MARKER in m], tab.console()
        # then the same student hands in a bug (bug-actor-sign's notebook) and reads its exact scores
        buggy = tmp_path / "01-ddpg again.ipynb"
        buggy.write_bytes(_notebook(BUG))
        tab.navigate(f"{base}/")
        second, scores = tab.hand_in(base, form, buggy)
        assert second != path, second
        assert scores == sample_class.expected_scores(BUG, sample_class.max_scores(ASSIGNMENT))
        time.sleep(1)
        text = tab.frame_text()
        assert "test_actor_loss" in text
        assert not [line for line in sample_class.hidden_lines(ASSIGNMENT) if line in text]


def test_the_instructor_sees_both_students_in_a_browser(graded, portal):
    # the instructor's link, as an instructor makes it; the page in headless Chromium
    _chromium_or_skip()
    port = portal["server"].port
    made = cli("portal", "tokens", "--instructor", "--root", COURSE, "--url", f"http://127.0.0.1:{port}")
    assert made.returncode == 0, made.stderr
    [link] = re.findall(r"http://127\.0\.0\.1:\d+/instructor/signin/\S+", made.stdout)
    with browser.Chromium(timeout=60) as chromium:
        tab = Tab(chromium)
        tab.navigate(link)
        assert tab.evaluate("location.pathname") == "/instructor"
        rows = tab.evaluate("Array.from(document.querySelectorAll('table')[2].rows).slice(1)"
                            ".map(r => Array.from(r.cells).map(c => c.innerText))")
        for sample in (SOLUTION, BUG):
            expected = sample_class.expected_scores(sample, sample_class.max_scores(ASSIGNMENT))
            total = sum(p for p in expected.values() if p is not None)
            mine = [r for r in rows if r[0] == sample.student]
            assert len(mine) == 1, rows
            assert mine[0][3] == ASSIGNMENT and mine[0][5] == "graded", mine
            assert float(mine[0][6].split(" / ")[0]) == total, (mine, total)
    with browser.Chromium(timeout=60) as chromium:  # a browser of its own: a student's, whose link does not open it
        tab = Tab(chromium)
        tab.navigate(portal["links"][SOLUTION.student])
        tab.navigate(f"http://127.0.0.1:{port}/instructor")
        assert "this page is the instructor's" in tab.evaluate("document.body.innerText")
