"""The student's code runs once per submission (issue 27): the judge's student's process runs
the notebook's cells for the tests and for the feedback, and no kernel runs them again. What
the cells print, display, show as their last value, draw and raise reaches the feedback."""

import json
import os
import shutil
import subprocess
import sys

import pytest

import sample_class
from sample_class import DDPG, Edit, Sample

REPO = sample_class.REPO
COURSE = "outputs/run-once course"

SHOWS = [
    ("ddpg-critic-loss", 'print("run-once: printed")\n'
                         'import sys\n'
                         'print("run-once: on stderr", file=sys.stderr)'),
    ("ddpg-actor-loss", 'from IPython.display import HTML, display\n'
                        'display(HTML("<b>run-once: displayed</b>"))\n'
                        '"run-once: the last value"'),
    ("ddpg-soft-update", 'import matplotlib.pyplot as plt\n'
                         'plt.plot([1, 2, 3])'),
    ("ddpg-update-critic", 'raise ValueError("run-once: raised")'),
]


def _counting(path) -> str:
    # without a sandbox the cell can write where the test reads: once per run of the notebook
    return f'with open({str(path)!r}, "a") as _counter:\n    _counter.write("ran\\n")'


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    counter = tmp_path_factory.mktemp("counter") / "runs.txt"
    root = REPO / COURSE
    shutil.rmtree(root, ignore_errors=True)
    samples = [
        Sample("run-once-shows", DDPG, "prints, displays, draws and raises in cells it added", edits=[
            Edit("new:ddpg-imports", new=_counting(counter)),
            *[Edit(f"new:{after}", new=source) for after, source in SHOWS]]),
        # ends its process in the last cell it runs: every start of the process ends there
        Sample("run-once-exits", DDPG, "os._exit in a cell it added", edits=[
            Edit("new:ddpg-critic-loss", new='print("run-once: before the exit")'),
            Edit("new:ddpg-update-actor", new="import os\nos._exit(3)")]),
    ]
    for sample in samples:
        sample_class.write_sample(sample, root / "submitted")
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", "--root", COURSE, "--trusted", "--jobs", "1",
                          "--json", f"{COURSE}/results.json"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    results = {r["student"]: r for r in json.loads((root / "results.json").read_text())}
    yield {"root": root, "results": results, "runs": counter.read_text().count("ran")}
    shutil.rmtree(root, ignore_errors=True)


def _cells(graded, student) -> list:
    path = graded["root"] / "autograded" / student / DDPG / f"{DDPG}.ipynb"
    return [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]


def _added(graded, student, after) -> dict:
    cells = _cells(graded, student)
    index = next(i for i, c in enumerate(cells) if c["metadata"].get("nbgrader", {}).get("grade_id") == after)
    return cells[index + 1]


def test_the_students_cells_run_once(graded):
    # a kernel for the feedback and the judge's process for the tests ran them twice
    assert graded["runs"] == 1
    result = graded["results"]["run-once-shows"]  # a correct notebook, whatever it adds, keeps every point
    assert result["status"] == "graded" and result["scores"] == {
        name: None if score is None else result["max_scores"][name] for name, score in result["scores"].items()
    }, result["notes"]


def test_what_the_cells_print_display_draw_and_raise_is_in_the_feedback(graded):
    student = "run-once-shows"
    printed = _added(graded, student, "ddpg-critic-loss")["outputs"]
    text = "".join("".join(o.get("text", "")) for o in printed)
    assert "run-once: printed\n" in text and "run-once: on stderr\n" in text
    assert all(o["name"] == "stdout" for o in printed)  # stderr moved to stdout (a warning zeroes nothing)
    shown = _added(graded, student, "ddpg-actor-loss")
    kinds = [o["output_type"] for o in shown["outputs"]]
    assert kinds == ["display_data", "execute_result"], kinds
    assert "".join(shown["outputs"][0]["data"]["text/html"]) == "<b>run-once: displayed</b>"
    assert "".join(shown["outputs"][1]["data"]["text/plain"]) == "'run-once: the last value'"
    assert shown["outputs"][1]["execution_count"] == shown["execution_count"] is not None
    drawn = _added(graded, student, "ddpg-soft-update")["outputs"]
    assert [sorted(o["data"]) for o in drawn if o["output_type"] == "display_data"] == [["image/png", "text/plain"]]
    raised = _added(graded, student, "ddpg-update-critic")
    [error] = [o for o in raised["outputs"] if o["output_type"] == "error"]
    assert (error["ename"], error["evalue"]) == ("ValueError", "run-once: raised")
    assert any("raised ValueError: run-once: raised" in note for note in graded["results"][student]["notes"])
    page = (graded["root"] / "feedback" / student / DDPG / f"{DDPG}.html").read_text()
    assert "run-once: printed" in page and "<b>run-once: displayed</b>" in page and "data:image/png;base64," in page


def test_the_cell_that_ended_the_process_says_so_and_the_cells_before_it_keep_their_outputs(graded):
    student = "run-once-exits"
    before = _added(graded, student, "ddpg-critic-loss")["outputs"]
    assert "run-once: before the exit" in "".join("".join(o.get("text", "")) for o in before)
    [error] = _added(graded, student, "ddpg-update-actor")["outputs"]
    assert error["ename"] == "KernelDied"
    assert error["evalue"].startswith("the student's code ended its process while it ran this cell (exit code 3")
    assert error["evalue"].endswith("the cells after it did not run here")
    after = _cells(graded, student)[-1]
    assert after["outputs"] == [] and after["execution_count"] is None
    notes = " ".join(graded["results"][student]["notes"])
    assert "the student's code ended its process while it ran this cell (exit code 3" in notes
