"""Grading by hand, end to end without a browser: grade, give an answer its points as
formgrader does (nbgrader's gradebook API), grade again, and check the CSVs and the
feedback; the course folder's nbgrader_config.py makes nbgrader's own commands use the
course's configuration. Also: every path an instructor may type (~, spaces), and make."""

from __future__ import annotations

import csv
import html
import os
import re
import shutil
import subprocess

import nbformat
import pytest

import sample_class
from autograder import course
from conftest import REPO, cli

COURSE = "outputs/hand grading"  # relative to the repository's root, with a space
STUDENT, ANSWER = "ddpg-solution", "answer_must_bootstrap"
#: the points of 01-ddpg: autograded, and its answer's (graded by hand)
_POINTS = sample_class.max_scores("01-ddpg")
HAND = _POINTS[ANSWER]
AUTO = sum(v for t, v in _POINTS.items() if not t.startswith("answer_"))


def _g(x: float) -> str:
    return f"{x:g}"


def _row(root, assignment="01-ddpg", student=STUDENT):
    with (root / "grades" / f"{assignment}.csv").open(newline="") as f:
        return next(row for row in csv.DictReader(f) if row["student"] == student)


def _grade(root, student=STUDENT, assignment="01-ddpg"):
    run = cli("grade", "--root", COURSE, "--student", student, "--assignment", assignment, "--jobs", "1")
    assert run.returncode == 0, run.stderr[-3000:]
    return run


def _give_points(root, points, student=STUDENT):
    """What formgrader does when the instructor types a score."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "ddpg-td3") as gradebook:
        grade = gradebook.find_grade(ANSWER, "01-ddpg", "01-ddpg", student)
        grade.manual_score = points
        grade.needs_manual_grade = False
        gradebook.db.commit()


@pytest.fixture(scope="module")
def root():
    root = REPO / COURSE
    shutil.rmtree(root, ignore_errors=True)
    sample_class.write_sample(sample_class.SAMPLES[0], root / "submitted")  # ddpg-solution
    assert sample_class.SAMPLES[0].student == STUDENT
    return root


def test_hand_grades_reach_the_csvs_and_survive_regrading(root):
    run = _grade(root)
    row = _row(root)
    assert (row[ANSWER], row["to_grade"], row["autograded"], row["total"]) == ("to grade", "1", _g(AUTO), _g(AUTO))
    assert "1 answers of 1 students wait for a grade by hand: make formgrader ROOT='outputs/hand grading'" in run.stdout
    assert (root / "nbgrader_config.py").is_file()

    _give_points(root, 1.5)
    _grade(root)  # grading again never discards a hand grade, nor asks for it again
    row = _row(root)
    assert (row[ANSWER], row["to_grade"], row["by_hand"], row["total"], row["total_max"]) == (
        "1.5", "0", "1.5", _g(AUTO + 1.5), _g(AUTO + HAND))
    with (root / "grades" / "summary.csv").open(newline="") as f:
        summary = next(r for r in csv.DictReader(f) if r["student"] == STUDENT)
    assert summary["01-ddpg"] == _g(AUTO + 1.5) and summary["to_grade"] == "0"
    page = root / "feedback" / STUDENT / "01-ddpg" / "01-ddpg.html"
    text = html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))
    assert re.search(r"Score:\s*1\.5\s*/\s*2", text), "the feedback shows the hand grade"
    # graded again in full (--force): the worker's feedback cannot know the hand grade, the
    # driver's does
    page.unlink()
    run = cli("grade", "--root", COURSE, "--student", STUDENT, "--assignment", "01-ddpg", "--jobs", "1", "--force")
    assert run.returncode == 0, run.stderr[-3000:]
    assert _row(root)[ANSWER] == "1.5"
    text = html.unescape(re.sub(r"<[^>]+>", " ", page.read_text()))
    assert re.search(r"Score:\s*1\.5\s*/\s*2", text), "the feedback shows the hand grade after --force"


def test_a_changed_answer_must_be_graded_again(root):
    path = root / "submitted" / STUDENT / "01-ddpg" / "01-ddpg.ipynb"
    notebook = nbformat.read(str(path), as_version=4)
    cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == ANSWER)
    cell.source += "\n\nOne more sentence, written after the grade."
    nbformat.write(notebook, str(path))
    _grade(root)
    row = _row(root)
    assert row[ANSWER] == "to grade" and row["to_grade"] == "1"
    assert f"{ANSWER} was graded by hand (1.5) but the student's work changed since" in row["notes"]


def test_nbgrader_own_feedback_command_uses_the_course_configuration(root):
    # run from the course folder, nbgrader reads its nbgrader_config.py: hidden tests stay hidden
    shutil.rmtree(root / "feedback", ignore_errors=True)
    bin_dir = str(REPO / ".venv" / "bin")
    env = {**os.environ, "PATH": bin_dir + os.pathsep + os.environ["PATH"]}
    run = subprocess.run([f"{bin_dir}/nbgrader", "generate_feedback", "01-ddpg", "--force"], cwd=root,
                         capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr[-2000:]
    page = (root / "feedback" / STUDENT / "01-ddpg" / "01-ddpg.html").read_text()
    assert "BEGIN HIDDEN TESTS" not in page and "_random_net" not in page
    assert "hidden tests: if one failed, its message is below" in html.unescape(page)


def test_a_course_folder_under_home_given_with_a_tilde(tmp_path):
    # `--root ~/course` typed in a shell without expansion (quoted, or in a Makefile variable)
    home = tmp_path / "home"
    sample = next(s for s in sample_class.SAMPLES if s.student == "exp-solution")
    sample_class.write_sample(sample, home / "my course" / "submitted")
    run = cli("grade", "--root", "~/my course", "--assignment", "03-experiment", "--jobs", "1",
              env={**os.environ, "HOME": str(home)})
    assert run.returncode == 0, run.stderr[-2000:]
    total = round(sum(sample_class.max_scores("03-experiment").values()))  # 5 by the tests, the rest by hand
    assert re.search(rf"^exp-solution\s+graded\s+5/{total}", run.stdout, re.M), run.stdout
    assert (home / "my course" / "grades" / "03-experiment.csv").is_file()


def test_make_grade_with_a_relative_root_that_has_a_space(root):
    run = subprocess.run(["make", "grade", f"ROOT={COURSE}", f"STUDENT={STUDENT}", "ASSIGNMENT=01-ddpg"],
                         cwd=REPO, capture_output=True, text=True)
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    assert re.search(rf"^{STUDENT}\s+graded", run.stdout, re.M)


def test_course_config_points_nbgrader_at_the_course_folder(root):
    text = (root / "nbgrader_config.py").read_text()
    assert f"c.CourseDirectory.root = {str(root.resolve())!r}" in text
    assert str(course.AUTOGRADER / "nbgrader_config.py") in text
