"""The autograder on the sample class (tests/sample_class.py): exact scores, named
failures, feedback without hidden tests, reports, regrading.

The class is graded once per session (about 8 minutes on 2 cores: six TD3
submissions train for the learning test).
"""

from __future__ import annotations

import csv
import html
import re
import sqlite3

import nbformat
import pytest

import sample_class
from autograder import grade as grading
from conftest import SOLUTIONS

SAMPLES = {sample.student: sample for sample in sample_class.SAMPLES}


@pytest.fixture(scope="session")
def course_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    sample_class.write_class(root / "submitted")
    return root


@pytest.fixture(scope="session")
def graded(course_root):
    results = grading.grade(course_root, jobs=2)
    return {(r.student, r.assignment): r for r in results}


def _max_scores(assignment):
    notebook = nbformat.read(str(SOLUTIONS / f"{assignment}.ipynb"), as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
        for c in notebook.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


@pytest.mark.parametrize("student", list(SAMPLES))
def test_each_sample_gets_exactly_its_expected_scores(graded, student):
    sample = SAMPLES[student]
    result = graded[(student, sample.assignment)]
    assert result.status == sample.status, result.notes
    for text in sample.notes:
        assert any(text in note for note in result.notes), (text, result.notes)
    if sample.status != "graded":
        assert result.scores == {} and result.auto_score is None
        return
    expected = sample_class.expected_scores(sample, _max_scores(sample.assignment))
    assert result.scores == expected, f"{sample.why}: notes {result.notes}"
    if not sample.notes:
        assert result.notes == [], result.notes


def test_every_autograded_test_is_lost_by_a_buggy_sample():
    # a test that no wrong implementation fails is a defect
    for assignment in (sample_class.DDPG, sample_class.TD3, sample_class.EXPERIMENT):
        tests = {t for t in _max_scores(assignment) if t.startswith("test_")}
        lost = {t for s in sample_class.SAMPLES if s.assignment == assignment and not s.blank for t in s.loses}
        assert tests <= lost, f"{assignment}: no buggy sample loses {sorted(tests - lost)}"


def test_correct_rewrites_and_stderr_noise_get_full_marks(graded):
    for student in ("ddpg-rewritten", "ddpg-noisy", "td3-rewritten"):
        result = graded[(student, SAMPLES[student].assignment)]
        assert result.auto_score == result.auto_max > 0, (student, result.scores)


def _hidden_lines(assignment):
    notebook = nbformat.read(str(SOLUTIONS / f"{assignment}.ipynb"), as_version=4)
    # text that also appears outside the hidden regions (solution code, visible tests and
    # their messages) is public: only the rest must not show
    visible = "\n".join(
        re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", c.source, flags=re.S) for c in notebook.cells
    )
    lines = set()
    for cell in notebook.cells:
        for region in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", cell.source, re.S):
            lines |= {line.strip() for line in region.splitlines() if len(line.strip()) >= 12}
    return {line for line in lines if line not in visible}


def test_feedback_holds_no_hidden_test_text(graded, course_root):
    checked = 0
    for (student, assignment), result in graded.items():
        if result.status != "graded":
            continue
        page = course_root / "feedback" / student / assignment / f"{assignment}.html"
        assert page.exists(), f"no feedback for {student}"
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        leaked = [line for line in _hidden_lines(assignment) if line in text]
        assert not leaked, f"{page.name} of {student} shows hidden tests: {leaked[:3]}"
        assert "BEGIN HIDDEN TESTS" not in text
        checked += 1
    assert checked >= 20


def test_failed_hidden_tests_still_say_why_in_the_feedback(graded, course_root):
    page = course_root / "feedback" / "bug-not-in-place" / "01-ddpg" / "01-ddpg.html"
    text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
    assert "soft_update_params must update the target's parameters in place" in text


def test_csv_has_a_column_per_test_and_a_row_per_student(graded, course_root):
    for assignment in (sample_class.DDPG, sample_class.TD3, sample_class.EXPERIMENT):
        with (course_root / "grades" / f"{assignment}.csv").open(newline="") as f:
            rows = {row["student"]: row for row in csv.DictReader(f)}
        assert set(rows) == {s for s, a in graded}
        some = next(iter(rows.values()))
        assert set(_max_scores(assignment)) <= set(some), "a column per test"
        for (student, a), result in graded.items():
            if a != assignment:
                continue
            row = rows[student]
            assert row["status"] == result.status
            if result.status == "graded":
                assert float(row["autograded"]) == result.auto_score
            else:
                assert row["autograded"] == "" and row["notes"], "a reason, never a silent zero"
    with (course_root / "grades" / "summary.csv").open(newline="") as f:
        summary = {row["student"]: row for row in csv.DictReader(f)}
    assert summary["bad-missing"]["01-ddpg"] == "missing"
    assert summary["ddpg-solution"]["02-td3"] == "missing"  # sample students hand in one notebook
    assert float(summary["td3-solution"]["02-td3"]) == graded[("td3-solution", "02-td3")].auto_max


def test_table_lists_students_by_tests_with_the_reasons(graded):
    text = grading.table(list(graded.values()), "01-ddpg")
    assert "T1 critic_loss_is_a_scalar (1)" in text
    assert re.search(r"^bad-not-json\s+unreadable", text, re.M)
    assert "bad-kills-kernel: test_soft_update_value: the kernel died" in text


def test_regrading_one_student_gives_the_same_result_and_keeps_the_others(graded, course_root):
    database = course_root / "gradebook.db"
    with sqlite3.connect(database) as db:
        before = db.execute("select count(*) from submitted_notebook").fetchone()[0]
    with (course_root / "grades" / "01-ddpg.csv").open(newline="") as f:
        rows_before = list(csv.DictReader(f))
    again = grading.grade(course_root, student="bad-kills-kernel", assignment="01-ddpg", jobs=1)
    first = graded[("bad-kills-kernel", "01-ddpg")]
    assert [(r.status, r.scores, r.notes) for r in again] == [(first.status, first.scores, first.notes)]
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from submitted_notebook").fetchone()[0] == before
    with (course_root / "grades" / "01-ddpg.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == rows_before


def test_unknown_student_or_assignment_is_a_clear_error(course_root):
    with pytest.raises(grading.course.CourseError, match="no folder .*nobody"):
        grading.grade(course_root, student="nobody")
    with pytest.raises(grading.course.CourseError, match="no assignment '03-sac'"):
        grading.grade(course_root, assignment="03-sac")
