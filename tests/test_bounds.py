"""Issue 21's bounds, piece by piece and fast (the hostile class checks them end to end,
in tests/test_sandbox.py): graded cells from the release, outputs cut in bytes, the
sandbox's output relayed to the log bounded and marked, the judge's own work and a
submission's time budget bounded, a claimed evaluation refused."""

from __future__ import annotations

import copy
import io
import os
import sys
import time

import nbformat
import pytest

from conftest import REPO

from autograder.isolation import judge, sandbox
from autograder.course.preprocessors import MAX_CELL_OUTPUT, TIME_LIMIT, CourseExecute
from autograder.grading.submission import release_metadata

RELEASE = nbformat.read(str(REPO / "notebooks" / "01-ddpg.ipynb"), as_version=4)


def _index(notebook, grade_id):
    return next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _graded(notebook):
    return [(c.metadata["nbgrader"]["grade_id"], c.metadata["nbgrader"].get("points"))
            for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade")]


def test_the_honest_notebook_keeps_its_metadata_without_a_note():
    submitted = copy.deepcopy(RELEASE)
    assert release_metadata(RELEASE, submitted) == []
    assert submitted == RELEASE


def test_forged_and_duplicated_graded_cells_are_ignored_with_a_note():
    submitted = copy.deepcopy(RELEASE)
    index = _index(submitted, "test_critic_loss_value")
    forged = copy.deepcopy(submitted.cells[index])
    forged.source, forged.metadata["nbgrader"]["points"] = "pass", 1e9
    submitted.cells.insert(index, forged)  # a copy before the test, worth 1e9 points
    submitted.cells[_index(submitted, "test_actor_loss")].metadata["nbgrader"]["points"] = 1000
    bonus = nbformat.v4.new_code_cell("pass")
    bonus.metadata["nbgrader"] = {"grade": True, "grade_id": "test_bonus\x1b[2J", "points": 100, "solution": False}
    submitted.cells.append(bonus)
    accidental = copy.deepcopy(submitted.cells[_index(submitted, "test_soft_update_value")])
    submitted.cells.append(accidental)
    notes = release_metadata(RELEASE, submitted)
    assert notes == [
        "metadata of cell test_critic_loss_value forged or duplicated: ignored",
        "metadata of cell test_actor_loss forged or duplicated: ignored",
        "metadata of cell test_bonus\\x1b[2J forged or duplicated: ignored",
        "metadata of cell test_soft_update_value forged or duplicated: ignored",
    ]
    assert _graded(submitted) == _graded(RELEASE)  # the release's graded cells, once each, with their points


def _executor():
    client = CourseExecute()
    client._cell_bytes = client._total_bytes = client._dropped = 0
    return client


def _stream(text):
    return {"msg_type": "stream", "content": {"name": "stdout", "text": text}, "parent_header": {}}


def test_a_cell_keeps_the_head_of_its_output_up_to_its_byte_limit():
    client = _executor()
    kept = client._bounded(_stream("é" * (32 * 2**20)))
    assert len(kept["content"]["text"].encode()) <= MAX_CELL_OUTPUT
    assert len(kept["content"]["text"]) > MAX_CELL_OUTPUT // 4
    assert client._bounded(_stream("more")) is None
    assert client._dropped >= 64 * 2**20 - MAX_CELL_OUTPUT


def test_a_notebook_keeps_its_outputs_up_to_its_byte_limit():
    client = _executor()
    kept = 0
    for _ in range(50):  # 50 cells of 100 KB of images: 1 MB is kept in all
        client._cell_bytes = 0
        message = {"msg_type": "display_data", "parent_header": {},
                   "content": {"data": {"image/png": "A" * 90_000}, "metadata": {}}}
        kept += client._bounded(message) is not None
    assert kept == 11 and client._total_bytes <= client.max_output


def test_what_the_sandbox_writes_on_its_pipes_reaches_the_log_bounded_and_marked(capfd):
    read, write = os.pipe()
    thread = sandbox.relay(os.fdopen(read, "rb"), "student's kernel", limit=4096)
    with os.fdopen(write, "wb") as pipe:
        pipe.write(b"[ERROR] forged\n\x1b]52;c;cGF3bmVk\x07\r\x1b[1A" + b"x\n" * 2**20)
    thread.join(10)
    err = capfd.readouterr().err
    lines = err.splitlines()
    assert all(line.startswith("[student's kernel] ") for line in lines), lines[:3]
    assert lines[0] == "[student's kernel] [ERROR] forged"
    assert lines[1] == "[student's kernel] \\x1b]52;c;cGF3bmVk\\x07\\x0d\\x1b[1Ax"
    assert len(err) < 4096 * 2 and lines[-1].endswith("more bytes dropped: the log keeps 4096)")


class _Student:
    """A student's process that is always there and never asked anything."""

    alive, tampering, generation = True, [], 1
    budget_deadline = float("inf")

    def stop(self):
        pass


def test_the_judges_own_work_counts_against_the_tests_limit():
    judge_ = judge.Judge(_Student(), [], timeout=1, slow={})
    start = time.monotonic()
    outcome = judge_.run_cell("while True:\n    pass", "test_busy", test=True)
    assert time.monotonic() - start < 5
    assert outcome["error"][0] == TIME_LIMIT and "time limit of 1 s" in outcome["error"][1]


def test_a_submission_over_its_budget_scores_0_on_the_tests_left():
    judge_ = judge.Judge(_Student(), [], timeout=30, slow={})
    judge_.budget, judge_.budget_deadline = 1, time.monotonic() + 1
    first = judge_.run_cell("import time\nwhile True:\n    time.sleep(0.1)", "test_first", test=True)
    then = judge_.run_cell("pass", "test_then", test=True)
    assert first["error"] == (TIME_LIMIT, judge.budget_message(1, "test_first", here=True))
    assert then["error"] == (TIME_LIMIT, judge.budget_message(1, "test_then", here=False))


class _Claims:
    """A judge whose student's TD3 claims its best policy at evaluation ``evaluation``."""

    def __init__(self, evaluation):
        self.evaluation, self.generation = evaluation, 1

    def request(self, op, body, remote):
        import torch

        return {"state": {"weight": torch.zeros(1)}, "evaluation": self.evaluation, "best_reward": 0.0}


@pytest.mark.parametrize("evaluation", [judge.MAX_EVALUATIONS, 100_000, -1, "7"])
def test_a_best_policy_claimed_past_the_evaluations_replayed_is_refused(evaluation):
    remote = judge.Remote(_Claims(evaluation), 1, 1, "TD3", "TD3()", False)
    start = time.monotonic()
    with pytest.raises(AssertionError, match="refused, not replayed"):
        remote.evaluate_best(cfg=None)
    assert time.monotonic() - start < 1


def test_the_kernel_binds_its_sockets_in_the_sandbox_and_sees_its_connection_file_read_only():
    from pathlib import Path

    args = sandbox.command(["python"], Path("/submission"), Path("/ipc"), sandbox.Limits(), "bwrap")
    assert "--bind" not in args and args[args.index("/ipc") - 1] == "--ro-bind"
    assert sandbox.SandboxKernelManager().ip == sandbox.KERNEL_IPC


def test_the_sandbox_can_write_its_two_folders_and_a_small_dev_shm_only(tmp_path):
    import subprocess

    try:
        bwrap = sandbox.check_available()
    except sandbox.SandboxUnavailable as error:
        pytest.skip(str(error))
    probe = """
import os
for folder, size in (("/dev", 1), ("/dev/shm", 64), ("/sandbox/submission", 1), ("/", 1), ("/etc", 1)):
    written = 0
    try:
        with open(folder + "/probe.bin", "wb") as f:
            for _ in range(size):
                f.write(b"0" * 2**20)
                f.flush()
                written += 1
        print(folder, "written", written)
    except OSError as error:
        print(folder, "stopped at", written, "MB")
"""
    command = sandbox.command([sys.executable, "-c", probe], tmp_path, None, sandbox.Limits(), bwrap)
    out = subprocess.run(command, capture_output=True, text=True, timeout=60).stdout.splitlines()
    assert out == ["/dev stopped at 0 MB", f"/dev/shm stopped at {sandbox.SHM // 2**20} MB",
                   "/sandbox/submission stopped at 0 MB", "/ stopped at 0 MB", "/etc stopped at 0 MB"], out



def test_a_sandboxed_process_draws_with_the_font_list_made_once_not_its_own(tmp_path):
    # matplotlib's list of fonts, made once and copied into every sandbox from a read-only
    # bind: without it, each student's process that imports matplotlib.pyplot makes its own
    # (fc-list: 0.85 CPU-s for the import against 0.55)
    import subprocess

    try:
        bwrap = sandbox.check_available()
    except sandbox.SandboxUnavailable as error:
        pytest.skip(str(error))
    probe = ("import glob, logging\nlogging.basicConfig(level=logging.INFO)\n"
             "import matplotlib\nmatplotlib.use('Agg')\nimport matplotlib.pyplot as plt\n"
             "fig = plt.figure()\nfig.text(0.5, 0.5, 'returns')\nfig.savefig('/tmp/figure.png')\nprint('drawn')\n"
             "for bound in glob.glob('/sandbox/fontlist-v*.json'):\n"
             "    try:\n        open(bound, 'a').close()\n        print('the bound list is writable')\n"
             "    except OSError:\n        pass\n")
    made = sandbox.font_list(bwrap)
    assert made is not None
    for fonts, made_its_own in ((True, False), (False, True)):  # the second: what the test would see without it
        command = sandbox.command([sys.executable, "-c", probe], tmp_path, None, sandbox.Limits(), bwrap, fonts=fonts)
        run = subprocess.run(command, capture_output=True, text=True, timeout=120)
        assert run.stdout.strip() == "drawn", (run.stdout, run.stderr[-2000:])
        assert ("generated new fontManager" in run.stderr) == made_its_own, run.stderr[-2000:]
        if fonts:
            assert run.stderr == ""  # nor a warning: every font it lists is there

    def with_list(path, deleted=False):
        """The probe in a sandbox whose font list is ``path`` (``deleted`` once its command is made)."""
        sandbox._font_lists[bwrap] = path
        try:
            command = sandbox.command([sys.executable, "-c", probe], tmp_path, None, sandbox.Limits(), bwrap)
        finally:
            sandbox._font_lists[bwrap] = made
        if deleted:
            path.unlink()
        return subprocess.run(command, capture_output=True, text=True, timeout=120)

    # a list gone stale (a font removed since it was made) is made again, without a warning on
    # stderr (a graded cell's output): the sandbox has a copy it can write, not the list itself
    stale = tmp_path / "stale" / made.name
    stale.parent.mkdir()
    stale.write_text(made.read_text().replace("/DejaVuSans.ttf", "/gone/DejaVuSans.ttf"))
    run = with_list(stale)
    assert run.stdout.strip() == "drawn", run.stderr[-2000:]
    assert "generated new fontManager" in run.stderr, run.stderr[-2000:]
    assert all(line.startswith("INFO:matplotlib") for line in run.stderr.splitlines()), run.stderr[-2000:]
    # a list deleted after it was found (the cache emptied during a grading): the process starts
    # all the same and makes its own; the next command finds the list again
    run = with_list(stale, deleted=True)
    assert run.stdout.strip() == "drawn", run.stderr[-2000:]
    assert "generated new fontManager" in run.stderr, run.stderr[-2000:]
    sandbox._font_lists[bwrap] = stale  # gone: the cache's list is found again
    try:
        assert sandbox.font_list(bwrap) == made
    finally:
        sandbox._font_lists[bwrap] = made


if __name__ == "__main__":
    sys.exit(pytest.main([__file__]))
