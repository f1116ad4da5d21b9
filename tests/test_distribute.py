"""Grading on Dask: a real scheduler and two workers on 127.0.0.1 (started as an instructor
would, with `dask scheduler` and `dask worker`), a worker killed while it grades, a
submission whose worker dies twice, Ctrl-C, and what the driver alone writes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from types import SimpleNamespace

import psutil
import pytest

import sample_class
from autograder.grading import driver as grading
from autograder.reporting.results import Result
from conftest import REPO, cli

SOLUTION = next(s for s in sample_class.SAMPLES if s.student == "ddpg-solution")
WRONG_SIGN = next(s for s in sample_class.SAMPLES if s.student == "bug-actor-sign")
#: correct, but slow: 6 s at the top of a cell (in the student's process)
SLOW = sample_class.Sample("slow-solution", sample_class.DDPG, "correct, sleeps 6 s", edits=[
    sample_class.Edit("ddpg-actor-loss", "def compute_actor_loss(", "import time\ntime.sleep(6)\n\n\ndef compute_actor_loss(")])


def _course(folder: str, samples) -> object:
    root = REPO / folder
    shutil.rmtree(root, ignore_errors=True)
    for sample in samples:
        sample_class.write_sample(sample, root / "submitted")
    return root


def _results(root, name="results.json"):
    return {r["student"]: Result(**r) for r in json.loads((root / name).read_text())}


def _expected(sample):
    return sample_class.expected_scores(sample, sample_class.max_scores("01-ddpg"))


def readme_cluster_commands() -> tuple[str, str]:
    """The README's commands that start a scheduler and its workers by hand, as written."""
    text = (REPO / "README.md").read_text()
    block = text[text.index("Start a cluster by hand"):]
    block = block[block.index("```sh"):]
    block = block[:block.index("```", 5)]
    lines = [line for line in block.splitlines() if "dask " in line and not line.startswith("#")]
    scheduler = next(line for line in lines if "dask scheduler" in line)
    worker = next(line for line in lines if "dask worker" in line)
    return scheduler, worker


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """A scheduler and two workers (each with its nanny, which restarts a killed worker),
    started with the README's commands as an instructor types them: by a shell, from a
    folder outside the repository, with no PYTHONPATH; only the places the README leaves to
    the instructor are filled in (where the course is, the port, the scheduler's host, the
    number of workers)."""
    folder = tmp_path_factory.mktemp("dask")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["HOME"] = str(folder)  # the README's ~/ddpg-td3 is the course's repository
    (folder / "ddpg-td3").symlink_to(REPO)
    port = _free_port()
    scheduler, worker = (line.replace("8786", str(port)).replace("tcp://SCHEDULER:", "tcp://127.0.0.1:")
                         .replace("--nworkers 8", "--nworkers 2") for line in readme_cluster_commands())
    log = open(folder / "cluster.log", "w")
    processes = [subprocess.Popen(["bash", "-c", command], cwd=folder, env=env, stdout=log, stderr=log,
                                  start_new_session=True) for command in (scheduler, worker)]
    address = f"tcp://127.0.0.1:{port}"
    if not _wait_for_workers(address, 2):
        raise AssertionError((folder / "cluster.log").read_text()[-3000:])
    yield address
    for process in processes:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_for_workers(address, n):
    """True once the scheduler at ``address`` answers with ``n`` workers (it may still be starting)."""
    from distributed import Client

    for _ in range(150):
        try:
            with Client(address, timeout="2s") as client:
                client.wait_for_workers(n, timeout=60)
            return True
        except OSError:
            time.sleep(0.2)
    return False


def _grading_processes(student):
    """The worker's grading processes of ``student`` (python -m autograder.grading.submission ... student ...)."""
    found = []
    for process in psutil.process_iter(["cmdline"]):
        cmdline = process.info["cmdline"] or []
        if "autograder.grading.submission" in cmdline and student in cmdline:
            found.append(process)
    return found


def _kill_worker_of(student, timeout=120):
    """Kills the Dask worker that is grading ``student`` (and its grading processes)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for process in _grading_processes(student):
            worker = process.parent()  # up past the worker's fork server (autograder.grading.zygote)
            while any("autograder.grading.zygote" in part or "autograder.grading.submission" in part for part in worker.cmdline()):
                worker = worker.parent()
            for victim in [*worker.children(recursive=True), worker]:
                try:
                    victim.kill()
                except psutil.NoSuchProcess:  # it ended between the listing and the kill
                    pass
            return
        time.sleep(0.2)
    raise AssertionError(f"no worker graded {student} within {timeout} s")


def _wait_for_new_grading(student, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(p.is_running() and p.status() != psutil.STATUS_ZOMBIE for p in _grading_processes(student)):
            return
        time.sleep(0.2)
    raise AssertionError(f"{student} was not graded again within {timeout} s")


def _start_grading(folder, *options):
    return subprocess.Popen([sys.executable, "-m", "autograder", "grade", "--root", folder, "--assignment", "01-ddpg",
                             "--json", f"{folder}/results.json", *options], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)


def test_a_dask_cluster_grades_exactly_as_the_local_one(cluster):
    folder = "outputs/dask course"
    root = _course(folder, [SOLUTION, WRONG_SIGN])
    run = cli("grade", "--root", folder, "--assignment", "01-ddpg", "--scheduler", cluster,
              "--json", f"{folder}/results.json")
    assert run.returncode == 0, run.stderr[-3000:]
    assert f"grading 2 submissions of 2 students (01-ddpg) on {cluster}" in run.stdout
    results = _results(root)
    for sample in (SOLUTION, WRONG_SIGN):
        assert results[sample.student].scores == _expected(sample), results[sample.student].notes
    # the driver recorded them: its gradebook, autograded/ and feedback/ (no .incoming/ folder: it records the
    # worker's notebook itself, nbgrader's autograde is not run again)
    with sqlite3.connect(root / "gradebook.db") as db:
        assert db.execute("select count(*) from submitted_notebook").fetchone()[0] == 2
    assert (root / "feedback" / "bug-actor-sign" / "01-ddpg" / "01-ddpg.html").is_file()
    assert not (root / ".incoming").exists()


def test_a_worker_killed_while_grading_is_replaced_and_no_row_is_lost_or_doubled(cluster):
    folder = "outputs/dask course killed"
    root = _course(folder, [SLOW, SOLUTION, WRONG_SIGN])
    grading_run = _start_grading(folder, "--scheduler", cluster)
    _kill_worker_of(SLOW.student)
    out, err = grading_run.communicate(timeout=600)
    assert grading_run.returncode == 0, err[-3000:]
    results = json.loads((root / "results.json").read_text())
    assert sorted(r["student"] for r in results) == sorted([SLOW.student, SOLUTION.student, WRONG_SIGN.student])
    by_student = _results(root)
    for sample in (SLOW, SOLUTION, WRONG_SIGN):
        assert by_student[sample.student].scores == _expected(sample), by_student[sample.student].notes
    with sqlite3.connect(root / "gradebook.db") as db:
        assert db.execute("select count(*) from submitted_notebook").fetchone()[0] == 3


def test_a_submission_whose_worker_dies_twice_is_reported_failed(cluster):
    folder = "outputs/dask course failed"
    root = _course(folder, [SLOW, SOLUTION])
    grading_run = _start_grading(folder, "--scheduler", cluster)
    _kill_worker_of(SLOW.student)
    time.sleep(1)
    _wait_for_new_grading(SLOW.student)
    _kill_worker_of(SLOW.student)
    out, err = grading_run.communicate(timeout=600)
    assert grading_run.returncode == 0, err[-3000:]
    results = _results(root)
    assert results[SLOW.student].status == "failed"
    assert any("its worker died twice while grading it" in note for note in results[SLOW.student].notes)
    assert results[SOLUTION.student].scores == _expected(SOLUTION)
    # the next run grades it again (a failure is not remembered as graded)
    run = cli("grade", "--root", folder, "--assignment", "01-ddpg", "--scheduler", cluster)
    assert "grading 1 submission of 2 students (01-ddpg)" in run.stdout, run.stdout


def test_ctrl_c_leaves_the_gradebook_consistent_and_the_next_run_grades_the_rest():
    folder = "outputs/dask course interrupted"
    root = _course(folder, [SOLUTION, SLOW, WRONG_SIGN])
    grading_run = _start_grading(folder, "--jobs", "1")
    state = root / "grades" / grading.STATE
    deadline = time.monotonic() + 300
    # Ctrl-C once a submission is recorded, while the slow one (the last, by name) sleeps in its grading
    while time.monotonic() < deadline and not (state.exists() and json.loads(state.read_text() or "{}")
                                               and _grading_processes(SLOW.student)):
        time.sleep(0.2)
    at_signal = json.loads(state.read_text() or "{}") if state.exists() else {}
    os.killpg(grading_run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does
    out, err = grading_run.communicate(timeout=120)
    assert grading_run.returncode == 1, (f"recorded when Ctrl-C was sent: {sorted(at_signal)}", out[-3000:], err[-3000:])
    assert "error: interrupted: " in err and "run the same command again to grade the others" in err
    graded = json.loads(state.read_text())
    with sqlite3.connect(root / "gradebook.db") as db:
        assert db.execute("select count(*) from submitted_notebook").fetchone()[0] == len(graded)
    assert 1 <= len(graded) < 3
    run = cli("grade", "--root", folder, "--assignment", "01-ddpg", "--jobs", "1", "--json", f"{folder}/results.json")
    assert run.returncode == 0, run.stderr[-2000:]
    assert f"grading {3 - len(graded)} submission{'' if 3 - len(graded) == 1 else 's'} of 3 students" in run.stdout, run.stdout
    results = _results(root)
    for sample in (SOLUTION, SLOW, WRONG_SIGN):
        assert results[sample.student].scores == _expected(sample), results[sample.student].notes


def test_a_worker_with_another_version_of_the_grader_is_refused(monkeypatch):
    # a worker started from another checkout would grade with other tests: the driver refuses
    # such a cluster at once, and a worker that joins later refuses its first task
    from autograder.grading import distribute, submission
    from autograder.course import CourseError

    mine = submission.grader_version()
    def cluster(workers, scheduler=mine):
        return SimpleNamespace(run=lambda f, on_error="raise": workers, run_on_scheduler=lambda f: scheduler)

    with pytest.raises(CourseError, match=r"1 Dask worker\(s\) run another version .*tcp://10.0.0.2:2"):
        distribute.check_workers(cluster({"tcp://10.0.0.1:1": mine, "tcp://10.0.0.2:2": "0" * 64}))
    with pytest.raises(CourseError, match=r"^the Dask scheduler runs another version of the grader"):
        distribute.check_workers(cluster({"tcp://10.0.0.1:1": mine}, scheduler="0" * 64))
    missing = ModuleNotFoundError("No module named 'autograder'")
    with pytest.raises(CourseError, match=r"1 Dask worker\(s\) cannot import the grader \(ModuleNotFoundError: No "
                                          r"module named 'autograder'\): tcp://10.0.0.2:2; start every scheduler"):
        distribute.check_workers(cluster({"tcp://10.0.0.1:1": mine, "tcp://10.0.0.2:2": missing}))
    distribute.check_workers(cluster({"tcp://10.0.0.1:1": mine}))

    submission.check_version({submission.GRADER_VERSION: mine.encode()})
    with pytest.raises(submission.VersionMismatch, match="start the workers from the driver's commit"):
        submission.work_in_folder({submission.GRADER_VERSION: b"0" * 64}, "s", "01-ddpg", {}, None)


#: a Dask process started from an environment without the grader: the course's Python with
#: its editable install of autograder and bbrl_course hidden
WITHOUT_GRADER = ("import sys; sys.meta_path[:] = [f for f in sys.meta_path if 'editable' not in repr(f).lower()]; "
                  "sys.argv = ['dask'] + sys.argv[1:]; from distributed.cli.dask_{0} import main; main()")


def _start(kind: str, args: list[str], folder, grader: bool):
    command = ([str(REPO / ".venv" / "bin" / "dask"), kind] if grader
               else [sys.executable, "-c", WITHOUT_GRADER.format(kind)])
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.Popen(command + args, cwd=folder, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


@pytest.mark.parametrize("missing", ["scheduler", "worker"])
def test_a_cluster_that_cannot_import_the_grader_gets_one_line_before_any_submission(tmp_path, missing):
    # the instructor forgot the course's environment on the scheduler, or on a worker: one
    # line says which process and what to do, before any submission is sent
    root = _course("outputs/test-distribute-missing", [SOLUTION])
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    processes = [_start("scheduler", ["--host", "127.0.0.1", "--port", str(port), "--no-dashboard"], tmp_path,
                        grader=missing != "scheduler")]
    try:
        processes.append(_start("worker", [address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                           "--memory-limit", "0"], tmp_path, grader=missing != "worker"))
        _wait_for_workers(address, 1)
        run = cli("grade", "--root", str(root.relative_to(REPO)), "--scheduler", address)
    finally:
        for process in processes:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert run.returncode == 1, run.stdout[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    expected = ("error: the Dask scheduler cannot import the grader (" if missing == "scheduler"
                else "error: 1 Dask worker(s) cannot import the grader (")
    assert line.startswith(expected) and "start every scheduler and worker from the course's environment" in line, line
    assert "ModuleNotFoundError" in line and "autograder" in line, line
    with sqlite3.connect(root / "gradebook.db") as db:
        assert db.execute("select count(*) from submitted_notebook").fetchone()[0] == 0
    assert not (root / "feedback").exists()


def test_no_scheduler_at_the_address_is_one_line():
    root = _course("outputs/test-distribute-missing", [SOLUTION])
    run = cli("grade", "--root", str(root.relative_to(REPO)), "--scheduler", f"tcp://127.0.0.1:{_free_port()}",
              env={**os.environ, "COURSE_SCHEDULER_TIMEOUT": "3s"})
    assert run.returncode == 1
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    [line] = [line for line in run.stderr.splitlines() if line.startswith("error:")]
    assert line.startswith("error: no Dask scheduler answers at tcp://127.0.0.1:"), line


def test_a_td3_that_does_not_learn_is_retrained_on_both_workers_at_once(cluster):
    """Attribution's retrainings are tasks of the grading engine: with both workers free, the
    first two swaps run at once, one on each worker, and the one that restores learning is named."""
    sample = next(s for s in sample_class.SAMPLES if s.student == "bug-copied-actor-loss")
    folder = "outputs/dask course retrained"
    root = _course(folder, [sample])
    run = cli("grade", "--root", folder, "--assignment", "02-td3", "--scheduler", cluster, "--retrainings", "2",
              "--json", f"{folder}/results.json")
    assert run.returncode == 0, run.stderr[-3000:]
    result = _results(root)[sample.student]
    assert result.scores == sample_class.expected_scores(sample, sample_class.max_scores("02-td3")), result.notes
    notebook = json.loads((root / "autograded" / sample.student / "02-td3" / "02-td3.ipynb").read_text())
    [info] = [o["metadata"]["attribution"] for c in notebook["cells"] for o in c.get("outputs", [])
              if "attribution" in o.get("metadata", {})]
    assert info["restored_by"] == sample.culprit == "compute_actor_loss"
    assert len(info["waves"]) == 1 and len(info["waves"][0]) == 2, info
    first, second = info["runs"]
    assert first["worker"] != second["worker"] and "here" not in (first["worker"], second["worker"]), info
    assert max(first["started"], second["started"]) < min(first["ended"], second["ended"]), info  # at once
    page = (root / "feedback" / sample.student / "02-td3" / "02-td3.html").read_text()
    assert "with the course&#39;s compute_actor_loss in place of yours, your TD3 learns" in page \
        or "with the course's compute_actor_loss in place of yours, your TD3 learns" in page


def test_each_retraining_is_placed_where_there_is_room_its_own_slot_first(monkeypatch):
    """Left to the scheduler, two retrainings could queue on one worker while another is idle
    (both go to the least busy worker, a tie once the first is placed): each is pinned, loosely,
    to a slot that is free, the grading task's own (which it gives up) first."""
    import distributed

    from autograder.grading import submission

    submitted = []

    class Client:
        def nthreads(self):
            return {"tcp://b:2": 1, "tcp://a:1": 1, "tcp://c:3": 2}

        def processing(self):  # a grades the submission; b grades another; c has one thread free
            return {"tcp://a:1": ("grade-s",), "tcp://b:2": ("grade-t",), "tcp://c:3": ("grade-u",)}

        def submit(self, function, *args, **options):
            submitted.append((args[6], options.get("workers"), options.get("allow_other_workers")))
            return SimpleNamespace(result=lambda timeout: {"swap": list(args[6]), "learned": False})

    monkeypatch.setattr(distributed, "get_client", Client)
    monkeypatch.setattr(distributed, "secede", lambda: None)
    monkeypatch.setattr(submission, "_dask_worker", lambda: "tcp://a:1")
    assert submission.slots(Client(), "tcp://a:1") == ["tcp://a:1", "tcp://c:3"]
    serve = submission.Retrainings({}, "s", "02-td3", {}, None, 3, time.time() + 60)
    plan = {"learning": "td3_learns", "swaps": [["f"], ["g"], ["h"]], "deadline": time.time() + 60}
    assert len(serve(plan)) == 2
    assert submitted == [(("f",), ["tcp://a:1"], True), (("g",), ["tcp://c:3"], True)]


#: what a Dask worker (or scheduler) imports to take a grading task: the task's module, the
#: limits, a result; then the task's default budget, from the course's files
WORKER_IMPORTS = '''
import json, sys
from autograder.grading import distribute, submission
from autograder.isolation import sandbox
from autograder.reporting.results import Result
Result("s", "01-ddpg", "graded", notes=["a note"])
common = {submission.DEFAULT_BUDGETS: json.dumps({"01-ddpg": 450.0}).encode()}
print(submission._default_budget(common, "01-ddpg"),
      sorted(m for m in ("nbgrader", "nbconvert", "torch") if m in sys.modules))
'''


def test_a_worker_takes_a_task_without_importing_nbgrader_or_nbconvert():
    """The grading runs in a process forked from the worker's fork server, which imported them
    once; the worker itself only sends the work there (0.7 CPU-seconds less in every worker,
    and every time a worker is started again)."""
    run = subprocess.run([sys.executable, "-c", WORKER_IMPORTS], cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.split() == ["450.0", "[]"]


def test_the_driver_works_out_each_assignments_default_budget_for_the_workers(tmp_path):
    from autograder.course.release import ensure_released
    from autograder.grading import submission

    names = ["01-ddpg", "02-td3"]
    ensure_released(tmp_path, names)
    budgets = json.loads(submission.course_files(tmp_path, names)[submission.DEFAULT_BUDGETS])
    assert budgets == {name: submission.default_budget(tmp_path, name) for name in names}
    assert budgets["02-td3"] > budgets["01-ddpg"]  # the learning test's limit is longer
