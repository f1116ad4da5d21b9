"""The driver records in batches (autograder/grading/recording.py): each batch in one
transaction of the gradebook, so a driver killed midway loses no row and doubles none, and
the next run grades exactly what the killed one had not recorded."""

from __future__ import annotations

import dataclasses
import json
import pickle
import shutil
import signal
import sqlite3
import subprocess
import sys

import pytest

import sample_class
from autograder.course.release import ensure_released
from autograder.grading import driver as grading
from conftest import REPO

SOLUTION = next(s for s in sample_class.SAMPLES if s.student == "ddpg-solution")
CLASS = 50  # students handing in the same notebook
BATCH = 20  # results the stand-in engine gives the driver at once

#: the driver, with an engine that answers every submission with one real worker's outcome,
#: BATCH at a time; with KILL_AT > 0 it kills itself (SIGKILL, nothing runs after it) while
#: it records the KILL_AT-th result, in the middle of the second batch
DRIVER = r"""
import contextlib, json, os, pickle, signal, sys
from pathlib import Path
from autograder.grading import driver, recording
root, outcome, kill_at, batch = Path(sys.argv[1]), pickle.loads(Path(sys.argv[2]).read_bytes()), int(sys.argv[3]), int(sys.argv[4])
asked = []

@contextlib.contextmanager
def engine(scheduler, jobs, log):
    def run(common, work, limits):
        asked.extend(s for s, _, _ in work)
        for start in range(0, len(work), batch):
            yield [(s, a, outcome) for s, a, _ in work[start:start + batch]]
    yield run

if kill_at:
    scoring, calls = recording._Scoring.__call__, []
    def dying(self, *args):
        calls.append(1)
        if len(calls) == kill_at:
            os.kill(os.getpid(), signal.SIGKILL)
        return scoring(self, *args)
    recording._Scoring.__call__ = dying
driver.grade(root, assignment="01-ddpg", log=lambda *a: None, engine=engine)
print(json.dumps(asked))
"""


@pytest.fixture(scope="module")
def course(tmp_path_factory):
    """A class of CLASS students who hand in the DDPG solution, and one worker's real outcome
    of it (graded once here, in the sandbox)."""
    root = REPO / "outputs" / "recording course"
    shutil.rmtree(root, ignore_errors=True)
    for i in range(CLASS):
        sample_class.write_sample(dataclasses.replace(SOLUTION, student=f"student-{i:02d}"), root / "submitted")
    ensure_released(root, ["01-ddpg"])
    first, captured = sample_class.graded_with_outcome(root, "student-00", "01-ddpg")
    assert first.scores == sample_class.expected_scores(SOLUTION, sample_class.max_scores("01-ddpg")), first.notes
    outcome = tmp_path_factory.mktemp("recording") / "outcome.pickle"
    outcome.write_bytes(pickle.dumps(captured))
    yield root, outcome, first.scores
    shutil.rmtree(root, ignore_errors=True)


def _driver(root, outcome, kill_at=0):
    return subprocess.run([sys.executable, "-c", DRIVER, str(root), str(outcome), str(kill_at), str(BATCH)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)


def _rows(root) -> tuple[int, int, int]:
    """Submitted notebooks, their grade rows, and grade rows per (notebook, cell) at most."""
    with sqlite3.connect(root / "gradebook.db") as db:
        notebooks = db.execute("select count(*) from submitted_notebook").fetchone()[0]
        grades = db.execute("select count(*) from grade").fetchone()[0]
        most = db.execute("select coalesce(max(n), 0) from (select count(*) as n from grade "
                          "group by notebook_id, cell_id)").fetchone()[0]
    return notebooks, grades, most


def test_a_driver_killed_while_recording_loses_no_row_and_the_next_run_grades_the_rest(course):
    root, outcome, scores = course
    # killed while recording the 30th result: the first batch (20) was committed, the
    # second (10 of it scored) was not
    killed = _driver(root, outcome, kill_at=BATCH + 10)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    state = json.loads((root / "grades" / grading.STATE).read_text())
    notebooks, grades, _ = _rows(root)
    assert len(state) == notebooks == BATCH + 1  # student-00, graded by the fixture, and the first batch
    cells = grades // notebooks
    # the next run grades exactly the others, and records them
    again = _driver(root, outcome)
    assert again.returncode == 0, again.stderr[-2000:]
    asked = json.loads(again.stdout.splitlines()[-1])
    assert sorted(asked) == sorted(f"student-{i:02d}" for i in range(CLASS) if f"student-{i:02d}" not in
                                   {key.split("/")[0] for key in state})
    notebooks, grades, most = _rows(root)
    assert (notebooks, grades, most) == (CLASS, CLASS * cells, 1)  # no row lost, none doubled
    state = json.loads((root / "grades" / grading.STATE).read_text())
    assert len(state) == CLASS and all(entry["scores"] == scores for entry in state.values())
    # and each student's feedback, from the worker's pages
    assert all((root / "feedback" / f"student-{i:02d}" / "01-ddpg" / "01-ddpg.html").is_file() for i in range(CLASS))


def _new_students(root, *names):
    """Students who hand in the same notebook as student-00 (never graded yet)."""
    for name in names:
        shutil.rmtree(root / "submitted" / name, ignore_errors=True)
        shutil.copytree(root / "submitted" / "student-00", root / "submitted" / name)


def _notebooks_of(root, student) -> int:
    with sqlite3.connect(root / "gradebook.db") as db:
        return db.execute("select count(*) from submitted_notebook join submitted_assignment on "
                          "submitted_notebook.assignment_id = submitted_assignment.id where student_id = ?",
                          (student,)).fetchone()[0]


def test_a_result_nbgrader_cannot_record_fails_alone_and_the_batch_is_recorded(course):
    from autograder.grading import recording

    root, outcome, scores = course
    good = pickle.loads(outcome.read_bytes())
    broken = dict(good, files={**good["files"], "01-ddpg.ipynb": b"{ not a notebook"})
    _new_students(root, "alone-1", "alone-2", "alone-3")
    batch = [("alone-1", "01-ddpg", good), ("alone-2", "01-ddpg", broken), ("alone-3", "01-ddpg", good)]
    results = recording.record_batch(root, batch, trusted=False)
    assert [r.status for r in results] == ["graded", "failed", "graded"]
    assert results[0].scores == results[2].scores == scores
    assert "nbgrader could not record it" in results[1].notes[-1] and "grade it again" in results[1].notes[-1]
    assert [_notebooks_of(root, s) for s in ("alone-1", "alone-2", "alone-3")] == [1, 0, 1]
    assert not (root / "autograded" / "alone-2").exists()


def test_the_notes_made_while_the_files_are_written_reach_the_result(course):
    # an output that shows a line of a hidden test is removed from the feedback, and the
    # instructor is told (the note is made after the batch's commit)
    from autograder.reporting import feedback
    from autograder.grading import recording

    root, outcome, scores = course
    good = pickle.loads(outcome.read_bytes())
    secret = sorted(feedback._secret(root / "source" / "01-ddpg" / "01-ddpg.ipynb",
                                     root / "release" / "01-ddpg" / "01-ddpg.ipynb"))[0]
    notebook = json.loads(good["files"]["01-ddpg.ipynb"])
    cell = next(c for c in notebook["cells"] if c["cell_type"] == "code"
                and not c["metadata"].get("nbgrader", {}).get("grade"))
    cell["outputs"].append({"output_type": "stream", "name": "stdout", "text": secret + "\n"})
    leaky = dict(good, files={**good["files"], "01-ddpg.ipynb": json.dumps(notebook).encode()})
    _new_students(root, "leaky")
    [result] = recording.record_batch(root, [("leaky", "01-ddpg", leaky)], trusted=False)
    assert result.status == "graded" and result.scores == scores
    assert any(note.startswith("feedback: the output of") and "showed hidden tests" in note for note in result.notes), \
        result.notes
