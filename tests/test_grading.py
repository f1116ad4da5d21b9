"""The autograder on the sample class (tests/sample_class.py): exact scores, named
failures, feedback without hidden tests, reports, regrading.

The class is graded once per session, through the command line as an instructor types
it: from the repository's root, with a relative course folder whose name has a space.
"""

from __future__ import annotations

import csv
import html
import json
import os
import re
import shutil
import sqlite3

import nbformat
import pytest

import browser
import sample_class
from autograder.grading import driver as grading
from autograder.reporting.results import Result
from autograder.reporting.tables import CSV_COLUMNS, table
from conftest import REPO, cli

SAMPLES = {sample.student: sample for sample in sample_class.SAMPLES}
assert len(SAMPLES) == len(sample_class.SAMPLES), "two samples share a student id: the tests would grade one"
#: the course folder, relative to the repository's root (with a space, as instructors name folders)
COURSE = "outputs/test course"


@pytest.fixture(scope="session")
def course_root():
    root = REPO / COURSE
    shutil.rmtree(root, ignore_errors=True)
    sample_class.write_class(root / "submitted")
    return root


def _results(path):
    return {(r.student, r.assignment): r for r in (Result(**d) for d in json.loads(path.read_text()))}


#: `make demo`'s course folder: the class graded here is left there, as the demo grades it (the
#: same hand-ins, grader and course module), so that a `make demo` after `make test` (as in CI)
#: grades only what changed since
DEMO = "outputs/demo-course"


@pytest.fixture(scope="session")
def graded_output(course_root):
    run = cli("grade", "--root", COURSE, "--jobs", "2", "--json", f"{COURSE}/results.json")
    assert run.returncode == 0, run.stderr[-3000:]
    shutil.rmtree(REPO / DEMO, ignore_errors=True)
    shutil.copytree(course_root, REPO / DEMO, ignore=shutil.ignore_patterns("results.json"))
    return run.stdout


@pytest.fixture(scope="session")
def graded(graded_output, course_root):
    return _results(course_root / "results.json")


_max_scores = sample_class.max_scores


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


_hidden_lines = sample_class.hidden_lines


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


def test_the_workers_feedback_is_what_the_driver_would_write(graded, course_root, tmp_path):
    """Workers write the feedback (the driver only copies it, unless a hand grade must show):
    it must be the page nbgrader writes from the driver's gradebook and autograded notebook."""
    from autograder.course.config import api
    from autograder.isolation import inert

    students = ["ddpg-noisy", "bug-broadcast", "td3-solution", "bug-returns-forward", "ddpg-helper-cell"]
    copy = tmp_path / "course"
    for name in ("source", "release", "autograded", "submitted"):
        shutil.copytree(course_root / name, copy / name)
    shutil.copy(course_root / "gradebook.db", copy / "gradebook.db")
    for student in students:
        assignment = SAMPLES[student].assignment
        assert api(copy).generate_feedback(assignment, student, force=True)["success"]
        folder = copy / "feedback" / student / assignment
        inert.protect_feedback(folder)
        ours = (course_root / "feedback" / student / assignment / f"{assignment}.html").read_text()
        assert (folder / f"{assignment}.html").read_text() == ours, student


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
    text = table(list(graded.values()), "01-ddpg")
    assert "T1 critic_loss_is_a_scalar (1)" in text
    assert re.search(r"^bad-not-json\s+unreadable", text, re.M)
    assert "bad-kills-kernel: test_soft_update_value: the student's code ended its process" in " ".join(text.split())


def test_a_table_too_wide_for_a_screen_goes_on_in_another_block():
    tests = {f"test_{i}": 1.0 for i in range(20)}
    long = "a-very-long-student-identifier-from-an-lms"
    text = table([Result(long, "02-td3", "graded", dict(tests), dict(tests))], "02-td3")
    assert max(len(line) for line in text.splitlines()) <= 110, text
    headers = [line for line in text.splitlines() if line.startswith("student ")]
    assert len(headers) == 2 and headers[1].split()[3] == "T12" and headers[1].split()[-1] == "T20", headers
    assert len([line for line in text.splitlines() if line.startswith(long)]) == 2


def test_demo_check_finds_every_sample_graded_as_expected(graded, course_root):
    run = sample_class_check(COURSE)
    assert run.returncode == 0 and f"{len(SAMPLES)}/{len(SAMPLES)} sample submissions graded as expected" in run.stdout, run.stdout


def test_demo_check_fails_on_a_wrong_grade(graded, course_root, tmp_path):
    # the same grades with one score changed: the check must see it and exit non-zero
    shutil.copytree(course_root / "grades", tmp_path / "grades")
    path = tmp_path / "grades" / "01-ddpg.csv"
    rows = list(csv.DictReader(path.open(newline="")))
    for row in rows:
        if row["student"] == "bug-actor-sign":
            row["test_actor_loss"] = "1"
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    run = sample_class_check(str(tmp_path))
    assert run.returncode == 1
    assert "bug-actor-sign: test_actor_loss scored '1', expected 0" in run.stdout
    assert f"{len(SAMPLES) - 1}/{len(SAMPLES)} sample submissions graded as expected" in run.stdout


def sample_class_check(folder):
    import subprocess
    import sys

    return subprocess.run([sys.executable, "tests/sample_class.py", "check", folder], cwd=REPO,
                          capture_output=True, text=True)


def test_output_groups_missing_submissions_and_says_where_the_files_are(graded_output):
    text = graded_output
    # each sample student hands in one notebook: the others are missing, one line per assignment
    assert re.search(r"^missing \(\d+\): bad-missing, ", text, re.M)
    assert "no 02-td3.ipynb in" not in text
    assert len(re.findall(r"^missing \(", text, re.M)) == 3
    assert f"grades:   {COURSE}/grades/" in text and f"feedback: {COURSE}/feedback/" in text
    table = text[text.index("01-ddpg\nstudent"):text.index("02-td3\nstudent")]
    assert max(len(line) for line in table.splitlines()) <= 110, "the table fits on a screen"
    assert not re.search(r"^ddpg-solution .*missing", text, re.M)


def test_regrading_one_student_gives_the_same_result_and_keeps_the_others(graded, course_root):
    database = course_root / "gradebook.db"
    with sqlite3.connect(database) as db:
        before = db.execute("select count(*) from submitted_notebook").fetchone()[0]
    with (course_root / "grades" / "01-ddpg.csv").open(newline="") as f:
        rows_before = list(csv.DictReader(f))
    run = cli("grade", "--root", COURSE, "--student", "bad-kills-kernel", "--assignment", "01-ddpg", "--jobs", "1",
              "--force", "--json", f"{COURSE}/again.json")
    assert "grading 1 submission of 1 student (01-ddpg) on 1 local worker\n" in run.stdout
    assert run.returncode == 0, run.stderr[-2000:]
    again = list(_results(course_root / "again.json").values())
    first = graded[("bad-kills-kernel", "01-ddpg")]
    assert [(r.status, r.scores, r.notes) for r in again] == [(first.status, first.scores, first.notes)]
    with sqlite3.connect(database) as db:
        assert db.execute("select count(*) from submitted_notebook").fetchone()[0] == before
    with (course_root / "grades" / "01-ddpg.csv").open(newline="") as f:
        assert list(csv.DictReader(f)) == rows_before


@pytest.mark.parametrize("args, message", [
    (["--student", "bug-actor-sing"],
     "error: no folder outputs/test course/submitted/bug-actor-sing: did you mean bug-actor-sign( or [\\w-]+)*\\? "
     f"the {len(SAMPLES)} students are "),
    (["--assignment", "03-sac"], "error: no assignment '03-sac': the assignments are 01-ddpg, 02-td3, 03-experiment"),
    (["--root", "outputs/no such course"], "error: no course folder outputs/no such course .*give --root the folder"),
])
def test_a_typo_is_a_one_line_error_that_says_what_exists(course_root, args, message):
    if "--root" not in args:
        args = ["--root", COURSE, *args]
    run = cli("grade", *args)
    assert run.returncode == 1
    assert re.fullmatch(message + ".*\n", run.stderr, re.S) and run.stderr.count("\n") == 1, run.stderr
    assert "Traceback" not in run.stderr + run.stdout


def test_the_judge_measures_the_learning_test_as_the_notebook_does(graded, course_root):
    # the learning test's return is measured again by the judge, from the student's best
    # policy; for every TD3 that trained, it must agree with what the student's process said
    for sample in sample_class.SAMPLES:
        if sample.trains:
            feedback = (course_root / "feedback" / sample.student / "02-td3" / "02-td3.html").read_text()
            assert "The grader evaluated your best policy again" not in feedback, sample.student


def test_a_td3_that_does_not_learn_is_told_which_function_stops_it(graded, course_root):
    # the judge trains it again with the course's version of one function at a time (suspects
    # first): the feedback names the one that makes it learn; a TD3 that learns gets no such line
    attributed = [s for s in sample_class.SAMPLES if s.assignment == "02-td3" and "test_td3_learns" in s.loses
                  and not s.student.startswith("probe-")]
    assert {s.student for s in attributed if s.culprit} == {s.student for s in attributed if not s.blank}
    for sample in sample_class.SAMPLES:
        if sample.assignment != "02-td3" or sample.status != "graded":
            continue
        page = course_root / "feedback" / sample.student / "02-td3" / "02-td3.html"
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text()))
        if sample.culprit:
            assert f"with the course's {sample.culprit} in place of yours, your TD3 learns (best " in text, sample.student
        elif sample.student == "probe-attribution-leak":
            # its run_td3 found the course's update_critics where it was swapped in, printed it and raised it:
            # the feedback has only the exception's name; what it printed and raised there never comes back
            assert "with the course's update_critics: the training raised ValueError in run_td3: your code and the course's" in text
            assert "probe attribution: found <cell td3-updates>" in text  # its own, printed in its own grading
            assert "probe attribution: leaked <cell" not in text and "<cell reference" not in text
            assert "None of the 4 swaps tried makes your TD3 learn" in text
        elif not sample.blank:
            assert "Which of your functions stops your TD3 from learning?" not in text, sample.student
    # and the class report counts them by function
    report = (course_root / "grades" / "report.html").read_text()
    by = {}
    for sample in attributed:
        if sample.culprit:
            by.setdefault(sample.culprit, []).append(sample.student)
    failed = [s for s in sample_class.SAMPLES if s.assignment == "02-td3" and "test_td3_learns" in s.loses
              and not s.blank]  # the leak probe too: no swap restores it
    assert f"of the {len(failed)} whose learning test failed" in report
    for name, students in by.items():
        assert (f"the course's <code>{name}</code> restores learning for {len(students)} "
                f"({', '.join(sorted(students))})") in report, name


def test_grading_again_grades_only_what_changed(graded, course_root):
    run = cli("grade", "--root", COURSE, "--assignment", "03-experiment")
    assert run.returncode == 0, run.stderr[-2000:]
    experiment = [s for s in sample_class.SAMPLES if s.assignment == "03-experiment"]
    assert (f"grading 0 submissions of {len(SAMPLES)} students (03-experiment) on 2 local workers; "
            f"{len(experiment)} unchanged since they were graded (--force grades them again)") in run.stdout
    rows = {r["student"]: r for r in csv.DictReader((course_root / "grades" / "03-experiment.csv").open(newline=""))}
    assert rows["exp-solution"]["autograded"] == "5"  # the unchanged keep their grades
    # a submission that changed is graded again, alone
    results = course_root / "submitted" / "exp-no-results" / "03-experiment" / "03-experiment-results.npz"
    shutil.copy(course_root / "submitted" / "exp-solution" / "03-experiment" / "03-experiment-results.npz", results)
    try:
        run = cli("grade", "--root", COURSE, "--assignment", "03-experiment")
        assert f"grading 1 submission of {len(SAMPLES)} students" in run.stdout, run.stdout
        total = round(sum(_max_scores("03-experiment").values()))  # 15: 5 by the tests, 10 by hand
        assert re.search(rf"^exp-no-results\s+graded\s+5/{total}", run.stdout, re.M), run.stdout
    finally:
        results.unlink()
        cli("grade", "--root", COURSE, "--assignment", "03-experiment", "--student", "exp-no-results")


# --- the class report (grades/report.html) and the learning test's figure in the feedback
def _loses(test, assignment):
    return {s.student for s in sample_class.SAMPLES if s.assignment == assignment and s.status == "graded"
            and test in sample_class.expected_scores(s, _max_scores(assignment))
            and sample_class.expected_scores(s, _max_scores(assignment))[test] == 0.0}


def test_report_counts_each_failure_status_and_learning_test_of_the_class(graded, course_root):
    from autograder.reporting import report

    for assignment in (sample_class.DDPG, sample_class.TD3, sample_class.EXPERIMENT):
        found = report.collect(course_root, assignment)
        samples = [s for s in sample_class.SAMPLES if s.assignment == assignment]
        assert set(found.totals) == {s.student for s in samples if s.status == "graded"}
        for test in found.tests:
            if test.by_hand:
                continue
            assert set(test.failed) == _loses(test.name, assignment), test.name
            assert sorted(s for names in test.messages.values() for s in names) == sorted(test.failed)
        for status in ("missing", "misnamed", "unreadable"):
            expected = {s.student for s in samples if s.status == status}
            assert set(found.statuses.get(status, [])) == expected or (status == "missing" and expected <= set(
                found.statuses[status])), status
    ddpg = report.collect(course_root, sample_class.DDPG)
    assert set(ddpg.statuses["time limit"]) == {"bad-infinite-loop", "bad-ignores-interrupt"}
    assert set(ddpg.statuses["process ended or killed"]) == {"bad-kills-kernel"}
    messages = {m: names for t in ddpg.tests if t.name == "test_actor_loss" for m, names in t.messages.items()}
    assert any("bug-actor-sign" in names for names in messages.values()), messages
    td3 = report.collect(course_root, sample_class.TD3)
    # the learning test's figure exists exactly for the TD3s that trained; the grader's returns
    trained = {s.student for s in sample_class.SAMPLES if s.trains}
    assert set(td3.learning) == trained
    below = {s for s, best in td3.learning.items() if best <= td3.threshold}
    assert below == {"bug-actor-ascends"}
    assert set(td3.seconds) == set(td3.totals)


#: the class report written as the driver writes it after each run; the course module's
#: package and torch, if they were imported for it
REPORT_ALONE = """
import sys
from pathlib import Path
from autograder import course
from autograder.reporting import report
report.write(Path(sys.argv[1]), course.assignments())
print(sorted(name for name in ("torch", "bbrl_course") if name in sys.modules))
"""


def test_the_report_imports_neither_torch_nor_the_course_module(graded, course_root):
    # the learning test's figure reads the reference's file: importing bbrl_course for it cost
    # every grading's driver 1.7 CPU-seconds (its package imports torch)
    import subprocess
    import sys

    from autograder.reporting import report
    from bbrl_course import learning_test

    run = subprocess.run([sys.executable, "-c", REPORT_ALONE, str(course_root)], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]", run.stdout
    assert "the learning test" in (course_root / "grades" / "report.html").read_text().lower()
    assert report.learning_reference() == learning_test.reference()


def test_report_is_one_offline_file_and_make_report_writes_it_again(graded, course_root):
    path = course_root / "grades" / "report.html"
    first = path.read_text()
    for assignment in (sample_class.DDPG, sample_class.TD3, sample_class.EXPERIMENT):
        assert f'<section id="{assignment}">' in first
    assert '<section id="audit"><h2>What the tests catch (for the instructor)</h2>' in first
    images = re.findall(r'<img src="([^"]+)"', first)
    assert len(images) >= 10 and all(src.startswith("data:image/png;base64,") for src in images)
    assert not re.search(r'(src|href)="(https?:)?//', first), "nothing to fetch: it opens offline"
    path.unlink()
    run = cli("report", "--root", COURSE)
    assert run.returncode == 0 and run.stdout == f"wrote {COURSE}/grades/report.html\n", run.stdout + run.stderr
    assert path.read_text() == first
    run = cli("report", "--root", "outputs")
    assert run.returncode == 1 and "error: nothing graded in outputs: no grades/<assignment>.csv" in run.stderr


def test_report_shows_the_instructor_what_the_tests_catch(tmp_path):
    """The class report's instructor section: the mutation audit's table per function, from
    the audit's baseline (counted here from a baseline written in the test)."""
    from autograder.reporting import report

    baseline = tmp_path / "baseline.json"
    baseline.write_text(json.dumps({"outcomes": {
        "01-ddpg:compute_actor_loss:sign:1": "caught-visible",
        "01-ddpg:compute_actor_loss:detach:2": "caught-hidden",
        "01-ddpg:compute_actor_loss:mean:3": "equivalent",
        "01-ddpg:soft_update_params:tau:4": "survived",
        "01-ddpg:soft_update_params:tau:5": "caught-visible",
        "02-td3:update_targets:swap:6": "caught-visible",
    }}))
    page = report.audit_section(["01-ddpg"], baseline)
    cells = re.findall(r"<tr><td>([^<]*)</td><td><code>([^<]*)</code></td>((?:<td class=n>\d+</td>)+)</tr>", page)
    rows = {(a, f): [int(n) for n in re.findall(r"\d+", counts)] for a, f, counts in cells}
    # mutants, caught, caught by the visible tests, equivalent, surviving; 02-td3 not graded here
    assert rows == {("01-ddpg", "compute_actor_loss"): [3, 2, 1, 1, 0],
                    ("01-ddpg", "soft_update_params"): [2, 1, 1, 0, 1]}, page
    assert "make audit" in report.audit_section(["01-ddpg"], tmp_path / "none.json")
    # the course's own audit is in the class report, one row per function a student writes
    recorded = report.audit_table()
    assert recorded and {a for a, _ in recorded} == {sample_class.DDPG, sample_class.TD3, sample_class.EXPERIMENT}


def test_report_escapes_what_a_student_wrote(tmp_path):
    from autograder.reporting import report

    root = tmp_path / "course"
    (root / "grades").mkdir(parents=True)
    shutil.copytree(REPO / "notebooks", root / "release" / "01-ddpg", ignore=lambda d, names: [
        n for n in names if n != "01-ddpg.ipynb"])
    autograded = root / "autograded" / "eve" / "01-ddpg"
    notebook = nbformat.read(str(REPO / "notebooks" / "01-ddpg.ipynb"), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_actor_loss":
            cell.outputs = [nbformat.v4.new_output(
                "error", ename="AssertionError", evalue="<script>document.title='pwned'</script>", traceback=[])]
    autograded.mkdir(parents=True)
    nbformat.write(notebook, str(autograded / "01-ddpg.ipynb"))
    columns = [*CSV_COLUMNS[:-1], "test_actor_loss", "notes"]
    with (root / "grades" / "01-ddpg.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)
        writer.writeheader()
        writer.writerow({"student": "eve", "status": "graded", "autograded": "0", "total": "0", "total_max": "1",
                         "test_actor_loss": "0", "notes": "<img src=x onerror=alert(1)> time limit"})
    page = report.write(root, ["01-ddpg"]).read_text()
    assert "<script>document" not in page and "&lt;script&gt;document.title=&#x27;pwned&#x27;" in page
    assert "<img src=x" not in page


def test_report_and_a_feedback_page_in_a_real_browser(graded, course_root):
    if browser.executable() is None:
        reason = ("no Chromium here: install Debian's chromium (apt-get install chromium; .ci/run does) to open "
                  "the report and a feedback page in a real browser")
        if os.environ.get("REQUIRE_BROWSER"):  # CI: it must run
            pytest.fail(reason)
        pytest.skip(reason)
    # screenshots in outputs/screenshots/ (docs/report.png in the README is one of them)
    shots = REPO / "outputs" / "screenshots"
    pages = {
        "report": course_root / "grades" / "report.html",
        "feedback-bug-actor-ascends": course_root / "feedback" / "bug-actor-ascends" / "02-td3" / "02-td3.html",
        "feedback-td3-solution": course_root / "feedback" / "td3-solution" / "02-td3" / "02-td3.html",
    }
    with browser.Chromium() as chromium:
        for name, path in pages.items():
            page = chromium.open(path, screenshot=shots / f"{name}.png")
            assert page.errors == [], (name, page.errors)
            assert page.images and all(i["width"] > 0 and i["height"] > 0 for i in page.images), (name, page.images)
            # nothing fetched, no script at all (their policy forbids any: autograder/isolation/inert.py)
            assert page.remote == [] and page.scripts == 0, (name, page.remote, page.scripts)
            assert (shots / f"{name}.png").stat().st_size > 10_000
            if name == "report":
                assert len(page.images) >= 10
            else:  # the learning test's figure, and the note under a failed one
                assert len(page.images) == 1, page.images
            if name == "feedback-bug-actor-ascends":  # which function stops it, as the student sees it
                assert "with the course's compute_actor_loss in place of yours, your TD3 learns (best" in page.text
            if name == "report":
                assert "the course's compute_actor_loss restores learning for 2" in page.text
    failed = html.unescape(re.sub(r"<[^>]+>", "", pages["feedback-bug-actor-ascends"].read_text()))
    assert "What the curve suggests: The curve stays at the level of a random policy" in failed
    passed = html.unescape(re.sub(r"<[^>]+>", "", pages["feedback-td3-solution"].read_text()))
    assert "What the curve suggests" not in passed


def test_the_submissions_whose_tests_train_are_handed_out_first():
    # a stand-in for Dask records the order in which the driver hands the work over: the
    # TD3 submissions (a learning test of ten times a DDPG submission's work) come first,
    # so that the short ones fill the workers' last gaps
    import contextlib

    from autograder.reporting.results import FAILED

    root = REPO / "outputs" / "order course"
    shutil.rmtree(root, ignore_errors=True)
    chosen = ["bug-actor-sign", "exp-solution", "td3-solution", "ddpg-solution", "bug-no-delay"]
    sample_class.write_class(root / "submitted", [SAMPLES[s] for s in chosen])
    order = []

    @contextlib.contextmanager
    def engine(scheduler, jobs, log):
        def run(common, work, limits):
            for student, assignment, _ in work:
                order.append(student)
                yield [(student, assignment, {"status": FAILED, "notes": ["not graded (order test)"],
                                              "seconds": 0.0, "files": {}})]
        yield run

    grading.grade(root, limits=None, log=lambda *a: None, engine=engine)
    assert sorted(order[:2]) == ["bug-no-delay", "td3-solution"], order
    assert sorted(order[2:]) == ["bug-actor-sign", "ddpg-solution", "exp-solution"], order
