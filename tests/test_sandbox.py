"""The sandbox against the hostile class (tests/hostile_class.py): each probe gets its
exact outcome, the gradebook and the other students' files stay as they were, nothing
reaches the network, no feedback shows a hidden test, no script of a student runs in the
instructor's browser (feedback, formgrader's view, report) and no escape sequence reaches
their terminal or CSVs. The same class graded with
--trusted shows that each probe does what it says when nothing stops it, and that the
feedback still drops what would show the hidden tests."""

from __future__ import annotations

import csv
import hashlib
import html
import json
import os
import re
import shutil
import socket
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

import browser
import hostile_class
import sample_class
from autograder.grading.submission import TRUSTED_NOTE
from autograder.reporting.results import Result
from conftest import REPO, cli

SANDBOXED, TRUSTED = "outputs/hostile course", "outputs/hostile course trusted"
TRUSTED_TAMPERING = "outputs/tampering course trusted"
OTHER = "submitted/ddpg-solution/01-ddpg/01-ddpg.ipynb"


class Server(threading.Thread):
    """A TCP server on 127.0.0.1 that counts the connections it gets (stops with the module)."""

    def __init__(self):
        super().__init__(daemon=True)
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.socket.settimeout(0.5)
        self.port = self.socket.getsockname()[1]
        self.connections = 0
        self.stopped = threading.Event()

    def run(self):
        while not self.stopped.is_set():
            try:
                connection, _ = self.socket.accept()
            except TimeoutError:
                continue
            self.connections += 1
            connection.close()


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _prepared(folder, server, only=None):
    root = REPO / folder
    shutil.rmtree(root, ignore_errors=True)
    samples = hostile_class.write_hostile_class(root, REPO, server.port)
    if only is not None:  # a class of some probes only
        samples = [s for s in samples if s.student in only]
        for student in (root / "submitted").iterdir():
            if student.name not in only:
                shutil.rmtree(student)
    other = _digest(root / OTHER) if (root / OTHER).exists() else None
    return {"root": root, "samples": {s.student: s for s in samples}, "other": other, "server": server}


@pytest.fixture(scope="module")
def runs():
    """The hostile class graded three times, each course with its own server (the
    connections each gets are its own): sandboxed, and the tampering probes with --trusted,
    at once; then the attack probes with --trusted, alone (unsandboxed, they fill 5 GB of
    memory, fork 200 processes and write 1.5 GB: no other grading shares the machine with
    them). The tampering probes have a course of their own: the trusted class's
    probe-write (unsandboxed) rewrites every grade in its gradebook."""
    servers = [Server() for _ in range(3)]
    for server in servers:
        server.start()
    phases = [
        {"sandboxed": (_prepared(SANDBOXED, servers[0]), ["--jobs", "2"]),
         "trusted_tampering": (_prepared(TRUSTED_TAMPERING, servers[1], only=set(TAMPERING)),
                               ["--jobs", "1", "--trusted"])},
        {"trusted": (_prepared(TRUSTED, servers[2], only=set(PROBES)), ["--jobs", "2", "--trusted"])},
    ]
    graded = {}
    for phase in phases:
        processes = {}
        for name, (course, options) in phase.items():
            folder = str(course["root"].relative_to(REPO))
            processes[name] = subprocess.Popen(
                [sys.executable, "-m", "autograder", "grade", "--root", folder, "--assignment", "01-ddpg",
                 "--json", f"{folder}/results.json", *options], cwd=REPO, stdout=subprocess.PIPE,
                stderr=subprocess.PIPE, text=True)
        for name, (course, _) in phase.items():
            out, err = processes[name].communicate(timeout=900)
            assert processes[name].returncode == 0, err[-3000:]
            results = {d["student"]: Result(**d)
                       for d in json.loads((course["root"] / "results.json").read_text())}
            graded[name] = {**course, "results": results, "connections": course["server"].connections, "stdout": out}
    yield graded
    for server in servers:
        server.stopped.set()


@pytest.fixture(scope="module")
def sandboxed(runs):
    return runs["sandboxed"]


@pytest.fixture(scope="module")
def trusted(runs):
    return runs["trusted"]


def _feedback(run, student):
    page = run["root"] / "feedback" / student / "01-ddpg" / "01-ddpg.html"
    return html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))


def _failed_tests(run, student):
    """The graded test cells of ``student``'s autograded notebook that ended in an error."""
    notebook = json.loads((run["root"] / "autograded" / student / "01-ddpg" / "01-ddpg.ipynb").read_text())
    return [cell["metadata"]["nbgrader"]["grade_id"] for cell in notebook["cells"]
            if cell["cell_type"] == "code" and cell["metadata"].get("nbgrader", {}).get("grade")
            and any(output["output_type"] == "error" for output in cell.get("outputs", []))]


PROBES = ["ddpg-solution", "probe-read", "probe-write", "probe-network", "probe-memory", "probe-fork", "probe-disk"]
TAMPERING = [sample.student for sample in hostile_class.tampering_probes()]
MARKUP = "probe-markup"
BOUNDS = [sample.student for sample in hostile_class.bounds_probes() if sample.student != "probe-sleeps"]


@pytest.mark.parametrize("student", PROBES + TAMPERING + [MARKUP] + BOUNDS)
def test_each_probe_gets_exactly_its_expected_outcome(sandboxed, student):
    sample, result = sandboxed["samples"][student], sandboxed["results"][student]
    assert result.status == "graded", result.notes
    expected = sample_class.expected_scores(sample, sample_class.max_scores("01-ddpg"))
    assert result.scores == expected, (sample.why, result.notes)
    for text in sample.notes:
        assert any(text in note for note in result.notes), (text, result.notes)
    if not sample.notes:
        assert result.notes == [], result.notes


@pytest.mark.parametrize("student, printed", [
    ("probe-read", ["probe read: 0 course files"]),
    ("probe-write", ["probe gradebook: refused OperationalError", "probe other student: refused FileNotFoundError",
                     "probe plans: 0 folders"]),
    ("probe-network", ["probe network: refused ConnectionRefusedError"]),
    ("probe-disk", ["probe file size: stopped at 256 MB, OSError", "probe disk: stopped below "]),
])
def test_each_attack_fails_in_the_sandbox(sandboxed, student, printed):
    text = _feedback(sandboxed, student)
    for line in printed:  # printed, on a line of its own (the probe's source, in the feedback too, is not)
        assert re.search(rf"^{re.escape(line)}", text, re.M), (student, line)


@pytest.fixture(scope="module")
def trusted_tampering(runs):
    return runs["trusted_tampering"]


@pytest.mark.parametrize("student", TAMPERING)
def test_no_tampering_gains_a_point_without_the_sandbox_either(trusted_tampering, student):
    # the verdicts are computed apart from the student's code, sandbox or not
    sample, result = trusted_tampering["samples"][student], trusted_tampering["results"][student]
    assert result.scores == sample_class.expected_scores(sample, sample_class.max_scores("01-ddpg")), result.notes
    for text in sample.notes:
        assert any(text in note for note in result.notes), (text, result.notes)


def test_the_student_code_never_sees_the_tests_that_call_it(sandboxed, trusted_tampering):
    # the tests run in the judge: the student's process gets the arguments, not the caller
    for run in (sandboxed, trusted_tampering):
        assert run["results"]["probe-spy"].auto_score == run["results"]["probe-spy"].auto_max
        assert "probe spy: 0 names of the tests, 0 lines of hidden tests" in _feedback(run, "probe-spy")


def test_a_forged_answer_is_caught_and_shown_to_the_student(sandboxed):
    text = _feedback(sandboxed, "probe-forged-answer")
    assert "tampering suspected: the student's process sent an answer that is not data" in text


def test_a_forged_in_place_report_loses_through_the_verdict(sandboxed, trusted_tampering):
    # the student's process said "in place, no graph" (and, for the second, hid from the tampering
    # watch): the judge read the shared memory itself and saw the target's tensors replaced
    message = "soft_update_params must update the target's parameters in place (not replace them or their .data)"
    for run in (sandboxed, trusted_tampering):
        assert message in _feedback(run, "probe-hidden-side-effects")
        assert "replaced the channel's Server.op_call" in _feedback(run, "probe-forged-side-effects")


def test_probe_memory_fails_for_lack_of_memory(sandboxed):
    assert "compute_actor_loss raised MemoryError" in _feedback(sandboxed, "probe-memory")
    assert _failed_tests(sandboxed, "probe-memory") == ["test_actor_loss"]


def test_nothing_outside_the_submission_changed(sandboxed):
    root = sandboxed["root"]
    assert _digest(root / OTHER) == sandboxed["other"], "another student's notebook was written"
    with sqlite3.connect(root / "gradebook.db") as db:
        assert db.execute("select count(*) from grade where manual_score = 100").fetchone()[0] == 0
    assert sandboxed["connections"] == 0, "a probe reached the server on 127.0.0.1"
    left = list(root.rglob("left-by-probe.txt"))
    assert left == [], "the working directory is the sandbox's own copy, not the course folder"


def test_no_feedback_shows_hidden_tests(sandboxed, trusted):
    hidden = sample_class.hidden_lines("01-ddpg")
    for run in (sandboxed, trusted):
        for student in run["results"]:
            text = _feedback(run, student)
            leaked = [line for line in hidden if line in text]
            assert not leaked, (student, leaked[:3])


def test_without_sandbox_each_probe_does_what_it_says(trusted):
    results = trusted["results"]
    for student, result in results.items():
        assert TRUSTED_NOTE in result.notes, student
    assert trusted["connections"] >= 1, "probe-network reached the server"
    assert re.search(r"^probe network: connected$", _feedback(trusted, "probe-network"), re.M)
    # printed lines, on lines of their own (the probe's source, in the feedback too, holds their words)
    written = _feedback(trusted, "probe-write")
    assert re.search(r"^probe other student: written$", written, re.M)
    # the folders where judges ask the engine for retrainings: its own grading's at least, writable
    assert re.search(r"^probe plans: [1-9]\d* folders$", written, re.M) and \
        re.search(r"^probe plans: written$", written, re.M)
    assert re.search(r"^probe file size: not stopped$", _feedback(trusted, "probe-disk"), re.M)
    assert re.search(r"^probe disk: not stopped$", _feedback(trusted, "probe-disk"), re.M)
    # the working directory is a copy of the submission, sandbox or not (the judge's student's
    # process; no kernel runs in the course folder): what the student's code writes there is gone
    assert not list(trusted["root"].rglob("left-by-probe.txt")), "the student's code ran in the course folder"
    # without limits, the memory and fork probes cost nothing: the sandbox is what stops them.
    # (Their tests' outputs, not their scores: this class's probe-write rewrites every grade in
    # its gradebook to 100, before or after theirs are recorded, as the workers' order falls.)
    for student in ("probe-memory", "probe-fork"):
        assert _failed_tests(trusted, student) == [], (student, results[student].notes)
    # the read probe found the hidden tests and printed them: the feedback dropped that output
    assert "feedback: the output of ddpg-actor-loss was removed" in " ".join(results["probe-read"].notes)
    assert "(output removed from this feedback" in _feedback(trusted, "probe-read")
    autograded = (trusted["root"] / "autograded" / "probe-read" / "01-ddpg" / "01-ddpg.ipynb").read_text()
    assert "probe read: 0 course files" not in autograded


def test_no_sandbox_is_a_clear_refusal(sandboxed):
    run = cli("grade", "--root", SANDBOXED, "--student", "ddpg-solution", env={**os.environ, "COURSE_BWRAP": "false"})
    assert run.returncode == 1
    assert re.fullmatch(r"error: bwrap \(\S+\) cannot start a sandbox here: .*or pass --trusted to grade without a sandbox\n",
                        run.stderr), run.stderr


def test_the_runtime_is_mounted_over_the_private_tmp():
    # a virtual environment under /tmp (a clone in /tmp, in CI) must stay visible in the sandbox
    from pathlib import Path

    from autograder.isolation import sandbox

    args = sandbox.command(["python"], Path("/submission"), Path("/ipc"), sandbox.Limits(), "bwrap")
    tmpfs = args.index("--tmpfs")
    assert args[tmpfs + 1] == "/tmp"
    for path in sandbox._runtime_paths():
        assert args.index(path) > tmpfs, f"{path} is mounted before /tmp's tmpfs, which would hide it"


# --- what comes out of the sandbox is inert: probe-markup's scripts never run, its escapes never reach a terminal
def _controls(text):
    """The control characters of ``text`` other than newlines (and tabs)."""
    import unicodedata

    return sorted({repr(c) for c in text if c not in "\n\t" and unicodedata.category(c) in ("Cc", "Cf")})


def test_escape_sequences_reach_neither_the_terminal_nor_the_csv(sandboxed):
    # the error message writes the clipboard (OSC 52) and rewrites the line above: the
    # instructor reads it, every control character shown
    assert _controls(sandboxed["stdout"]) == [], "the table printed by `grade` holds control characters"
    assert hostile_class.ESCAPES_SHOWN in " ".join(line.strip() for line in sandboxed["stdout"].splitlines())
    root = sandboxed["root"]
    for path in [*(root / "grades").glob("*.csv"), root / "logs" / f"{MARKUP}-01-ddpg.log"]:
        assert _controls(path.read_text()) == [], path.name
    row = next(r for r in csv.DictReader((root / "grades" / "01-ddpg.csv").open(newline="")) if r["student"] == MARKUP)
    assert hostile_class.ESCAPES_SHOWN in row["notes"]


def formgrader_view(root, student, out):
    """The page formgrader shows of a student's autograded notebook, rendered as formgrader
    renders it: its exporter (HTMLExporter), with the configuration it loads from the course
    folder (whose nbgrader_config.py loads the course's), and its template; its own scripts
    (jQuery, Backbone, formgrade.js) load from nbgrader's files, so that the page's scripts run
    as in formgrader."""
    import nbgrader

    static = (Path(nbgrader.__file__).parent / "server_extensions").as_uri()
    script = """if True:
        import os, sys
        from nbconvert.exporters import HTMLExporter
        from nbgrader.server_extensions.formgrader.formgrader import FormgradeExtension
        extension = FormgradeExtension()
        extension.root_dir = os.getcwd()
        extension.initialize([])
        exporter = HTMLExporter(config=extension.config)  # as FormgradeExtension.init_tornado_settings
        assert exporter.template_name == "formgrade", exporter.template_name
        page, _ = exporter.from_filename(sys.argv[1], resources={
            "assignment_id": "01-ddpg", "notebook_id": "01-ddpg", "submission_id": "id", "index": 0, "total": 1,
            "base_url": sys.argv[4], "student": sys.argv[3], "last_name": None, "first_name": None, "notebook_path": ""})
        open(sys.argv[2], "w").write(page)
    """
    notebook = root / "autograded" / student / "01-ddpg" / "01-ddpg.ipynb"
    run = subprocess.run([sys.executable, "-c", script, str(notebook), str(out), student, static], cwd=root,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def _markers(page):
    return [m for m in page.console if "MARKER-" in m] + [url for url in page.remote if "MARKER-" in url]


def test_no_student_markup_runs_in_the_instructor_browser(sandboxed, tmp_path):
    # probe-markup plants scripts (in an HTML output, an onerror, a javascript: link, a
    # Javascript output, an image's size, its markdown answer): each would log a marker and
    # ask for an address. The browser listens on the console and the network.
    if browser.executable() is None:
        reason = "no Chromium here: install Debian's chromium (apt-get install chromium; .ci/run does)"
        if os.environ.get("REQUIRE_BROWSER"):  # CI: it must run
            pytest.fail(reason)
        pytest.skip(reason)
    from autograder.isolation import inert

    root = sandboxed["root"]
    feedback = root / "feedback" / MARKUP / "01-ddpg" / "01-ddpg.html"
    written = feedback.read_text()
    assert inert.CSP_META in written
    # the cleaning alone, without the policy: what nbgrader generate_feedback run by hand writes
    cleaned_only = tmp_path / "feedback-without-policy.html"
    cleaned_only.write_text(written.replace(inert.CSP_META, ""))
    # the policy alone: a script and a handler that got through would still not run
    planted = tmp_path / "feedback-with-a-script.html"
    script = "<script>console.log('MARKER-csp-script')</script>"
    planted.write_text(written.replace(inert.CSP_META, inert.CSP_META + script)
                       .replace("<body>", "<body><img src=x onerror=\"console.log('MARKER-csp-onerror')\">", 1))
    pages = {
        "feedback": feedback,
        "feedback without its policy": cleaned_only,
        "feedback with a planted script": planted,
        "formgrader's view": formgrader_view(root, MARKUP, tmp_path / "formgrade.html"),
        "report": root / "grades" / "report.html",
    }
    ran, blocked = {}, {}
    with browser.Chromium() as chromium:
        for name, path in pages.items():
            page = chromium.open(path, click_links=True)
            if _markers(page):
                ran[name] = _markers(page)
            if name in ("feedback", "feedback without its policy", "report"):
                # nothing blocked either: no script reached these pages at all, nothing was fetched
                if page.errors or page.scripts or page.remote:
                    blocked[name] = (page.errors[:3], page.scripts, page.remote)
    assert ran == {}, f"the student's scripts ran: {ran}"
    assert blocked == {}, blocked
    # and honest content still shows: the probe's pixel and the text of its HTML output
    assert "<b>probe markup</b>" in written and "data:image/png;base64,iVBORw0KGgo" in written


# --- issue 21: every output bounded in size, the sandbox writes nothing on the host that
# --- is not bounded, graded cells from the release, every part of grading bounded in time

#: what a submission's files may weigh once graded (the honest ones: 0.08 MB autograded,
#: 0.29 MB of feedback): the notebook's outputs are cut at 1 MB, a test's prints at 20,000
#: characters
MAX_AUTOGRADED, MAX_FEEDBACK = 1_500_000, 2_000_000
#: a log of the grader: the worker's last 200,000 bytes, and what the driver's nbgrader says
MAX_LOG = 300_000


def _outputs(run, student):
    notebook = run["root"] / "autograded" / student / "01-ddpg" / "01-ddpg.ipynb"
    cells = json.loads(notebook.read_text())["cells"]
    return "\n".join(str(output.get("text", "")) + str(output.get("evalue", ""))
                     for cell in cells for output in cell.get("outputs", []))


def test_outputs_are_cut_at_their_byte_limits(sandboxed):
    root = sandboxed["root"]
    for student in sandboxed["results"]:
        for path in (root / "autograded" / student).rglob("*.ipynb"):
            assert path.stat().st_size < MAX_AUTOGRADED, (student, path.stat().st_size)
        for path in (root / "feedback" / student).rglob("*.html"):
            assert path.stat().st_size < MAX_FEEDBACK, (student, path.stat().st_size)
    for path in (root / "logs").iterdir():
        assert path.stat().st_size < MAX_LOG, (path.name, path.stat().st_size)
    text = _outputs(sandboxed, "probe-huge-print")
    # the cell that printed 32 MB in the kernel, and the test whose function printed 32 MB at
    # each of its calls (test_actor_loss calls compute_actor_loss three times)
    assert re.search(r"\[33\d{6} bytes of output dropped: the grader keeps 100000 bytes of a cell's output", text)
    dropped = re.search(r"\[(\d+) bytes of printed output dropped: a test keeps 20000 characters\]", text)
    assert dropped and int(dropped.group(1)) >= 2 * hostile_class.HUGE_PRINT, text[:2000]


def test_the_sandbox_writes_nothing_unbounded_on_the_host_and_no_line_of_the_log(sandboxed):
    text = _outputs(sandboxed, "probe-writes")
    # no kernel runs the student's code while grading (the judge's student's process does, once):
    # no kernel's connection folder is there to find
    assert "probe ipc: 0 folders" in text
    assert "probe /dev stopped at 0 MB" in text and "probe /dev/shm stopped at 16 MB" in text
    log = (sandboxed["root"] / "logs" / "probe-writes-01-ddpg.log").read_text()
    assert hostile_class.FORGED_LOG_LINE in log  # relayed, marked as the student's
    forged = [line for line in log.splitlines() if hostile_class.FORGED_LOG_LINE in line]
    assert all(line.startswith("[student's process] ") for line in forged), forged[:3]
    assert len(log) < MAX_LOG


def test_graded_cells_come_from_the_release(sandboxed):
    expected = sample_class.max_scores("01-ddpg")
    for student in ("probe-forged-cells", "probe-duplicated-cell"):
        assert sandboxed["results"][student].max_scores == expected, sandboxed["results"][student].max_scores


def _alone(folder, samples, options, assignment):
    """A course of ``samples`` alone, graded with ``options``: {root, samples, results}."""
    root = REPO / folder
    shutil.rmtree(root, ignore_errors=True)
    hostile_class.write_hostile_class(root, REPO, 0, samples)
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", "--root", folder, "--assignment", assignment,
                          "--json", f"{folder}/results.json", "--jobs", "1", *options], cwd=REPO,
                         capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {d["student"]: Result(**d) for d in json.loads((root / "results.json").read_text())}
    return {"root": root, "samples": {s.student: s for s in samples}, "results": results}


def test_a_submission_is_stopped_at_its_time_budget():
    # 3 cells of 50 sleeps of 0.5 s in the student's process, 25 s of sleeps in soft_update_params: each
    # under its cell's limit (30 s), together over the submission's budget
    samples = [s for s in hostile_class.bounds_probes() if s.student == "probe-sleeps"]
    budget = hostile_class.SLEEPS_BUDGET
    run = _alone("outputs/budget course", samples, ["--budget", str(budget)], "01-ddpg")
    sample, result = samples[0], run["results"]["probe-sleeps"]
    assert result.status == "graded", result.notes
    assert result.scores == sample_class.expected_scores(sample, sample_class.max_scores("01-ddpg")), result.notes
    for text in sample.notes:
        assert any(text in note for note in result.notes), (text, result.notes)
    # the cell of sleeps that runs when the budget ends says so (the feedback's outputs)
    assert any(re.fullmatch(rf"cell \d+: the submission's time budget of {budget} s ran out during this cell.*", note)
               for note in result.notes), result.notes
    assert result.seconds < budget + 20, result.seconds


def test_a_best_policy_claimed_at_a_huge_evaluation_is_refused_not_replayed():
    samples = hostile_class.td3_probes()
    run = _alone("outputs/evaluations course", samples, [], "02-td3")
    sample, result = samples[0], run["results"]["probe-evaluations"]
    assert result.status == "graded", result.notes
    assert result.scores == sample_class.expected_scores(sample, sample_class.max_scores("02-td3")), result.notes
    for text in sample.notes:
        assert any(text in note for note in result.notes), (text, result.notes)
    assert result.seconds < 120, result.seconds  # 0.5 s per evaluation replayed: no replay
