"""Late hand-ins (autograder/reporting/late.py): the course folder's deadlines.toml, the
hand-in times that collect recorded, the penalty in the CSVs, the class report, the
feedback and the LMS export; an extension beats the deadline; without deadlines.toml
nothing changes. Synthetic results, no grading: the policy is applied when the CSVs are
written, at the end of every grading run."""

from __future__ import annotations

import csv
import datetime
import json

import pytest

from autograder.course import CourseError
from autograder.reporting import late
from autograder.reporting.results import GRADED, Result
from autograder.reporting.tables import write_reports

A = "01-ddpg"
POLICY = f"""
[{A}]
deadline = 2026-12-20T23:59:00
grace_minutes = 15
penalty_per_day = 1.5
cap = 4

[{A}.extensions]
bob = 2026-12-23T12:00:00
"""
#: hand-in times as collect records them (collected/<assignment>.json)
HANDED = {
    "ada": "2026-12-20T23:00:00",  # on time
    "bea": "2026-12-21T00:10:00",  # within the 15 min of grace
    "cal": "2026-12-21T00:30:00",  # 1 day (part of a day) late: -1.5
    "dan": "2026-12-23T01:00:00",  # 3 days late: -4.5, capped at 4
    "bob": "2026-12-23T01:00:00",  # 3 days after the deadline, before his extension: on time
    "eve": "2026-12-21T09:00:00",  # 1 day late, but 1 point before the penalty: 0, never below
}


def _result(student, points=10.0):
    return Result(student, A, GRADED, {"test_a": points, "test_b": 4.0 if points > 1 else 0.0},
                  {"test_a": 10.0, "test_b": 4.0})


def _course(tmp_path, policy=POLICY):
    root = tmp_path / "course"
    (root / "collected").mkdir(parents=True)
    (root / "collected" / f"{A}.json").write_text(json.dumps(
        {"lms": "moodle", "students": {s: {"name": s.title(), "handed_in": t} for s, t in HANDED.items()}}))
    if policy is not None:
        (root / late.DEADLINES).write_text(policy)
    for student in [*HANDED, "fay"]:  # fay: put in submitted/ by hand, no hand-in time
        page = root / "feedback" / student / A / f"{A}.html"
        page.parent.mkdir(parents=True)
        page.write_text('<html><head></head><body class="jp-Notebook">\n<p>the tests</p></body></html>')
    return root


def _rows(root):
    with (root / "grades" / f"{A}.csv").open(newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def _results():
    return [_result(s) for s in ("ada", "bea", "cal", "dan", "bob", "fay")] + [_result("eve", points=1.0)]


def test_the_penalty_per_day_with_grace_cap_and_extension_reaches_the_csvs(tmp_path):
    root = _course(tmp_path)
    write_reports(root, _results())
    rows = _rows(root)
    got = {s: (r["days_late"], r["before_penalty"], r["late_penalty"], r["total"]) for s, r in rows.items()}
    assert got == {
        "ada": ("0", "14", "0", "14"),
        "bea": ("0", "14", "0", "14"),
        "cal": ("1", "14", "1.5", "12.5"),
        "dan": ("3", "14", "4", "10"),
        "bob": ("0", "14", "0", "14"),
        "eve": ("1", "1", "1", "0"),
        "fay": ("0", "14", "0", "14"),
    }
    assert rows["cal"]["handed_in"] == "2026-12-21T00:30:00" and rows["fay"]["handed_in"] == ""
    header = list(rows["ada"])
    assert header[:12] == ["student", "status", "autograded", "autograded_max", "by_hand", "to_grade", "total",
                           "total_max", "handed_in", "days_late", "before_penalty", "late_penalty"]
    with (root / "grades" / "summary.csv").open(newline="") as f:
        summary = {row["student"]: row[A] for row in csv.DictReader(f)}
    assert summary["dan"] == "10" and summary["ada"] == "14", "the summary's totals are after the penalty"


def test_the_feedback_says_when_it_was_handed_in_and_what_it_cost(tmp_path):
    root = _course(tmp_path)
    write_reports(root, _results())
    page = lambda s: (root / "feedback" / s / A / f"{A}.html").read_text()  # noqa: E731
    assert ("Handed in 2026-12-21 00:30, 1 day after the deadline (2026-12-20 23:59): a late penalty of 1.5 "
            "points. Total: 12.5/14 (14 before the penalty).") in page("cal")
    assert "before your extended deadline (2026-12-23 12:00): on time." in page("bob")
    assert "late-hand-in" not in page("fay"), "no hand-in time: nothing said"
    assert "a late penalty of 1 point. Total: 0/14 (1 before the penalty)." in page("eve"), "never below 0"
    assert page("cal").index('<div id="late-hand-in"') > page("cal").index("<body")
    # an extension given afterwards: the next run takes the penalty and the note back
    (root / late.DEADLINES).write_text(POLICY + "cal = 2026-12-21T12:00:00\n")
    write_reports(root, _results())
    assert _rows(root)["cal"]["total"] == "14" and page("cal").count('id="late-hand-in"') == 1
    assert "a late penalty" not in page("cal")


def test_without_deadlines_nothing_changes(tmp_path):
    root = _course(tmp_path, policy=None)
    before = {s: (root / "feedback" / s / A / f"{A}.html").read_text() for s in HANDED}
    write_reports(root, _results())
    rows = _rows(root)
    assert not set(late.CSV_COLUMNS) & set(rows["dan"]) and rows["dan"]["total"] == "14"
    assert {s: (root / "feedback" / s / A / f"{A}.html").read_text() for s in HANDED} == before


@pytest.mark.parametrize("text, message", [
    ("[01-ddpg]\ngrace_minutes = 5\n", "[01-ddpg] has no deadline: add deadline = 2026-12-20T23:59:00"),
    ("[01-ddpg]\ndeadline = 'friday'\n", "[01-ddpg] deadline is 'friday', not a date and time"),
    ("[01-ddpg]\ndeadline = 2026-12-20T23:59:00\npenalty_per_day = -1\n", "cannot be negative"),
    ("[01-ddpg\n", "not TOML"),
])
def test_a_bad_deadlines_file_is_one_line_naming_it(tmp_path, text, message):
    root = _course(tmp_path, policy=text)
    with pytest.raises(CourseError) as error:
        write_reports(root, _results())
    assert message in str(error.value) and "deadlines.toml" in str(error.value) and "\n" not in str(error.value)


def test_the_report_and_the_lms_comment_show_the_penalty(tmp_path):
    from autograder.lms.export import _comment
    from autograder.reporting import report

    root = _course(tmp_path)
    write_reports(root, _results())
    assignment = report.collect(root, A)
    assert {t.name for t in assignment.tests} == {"test_a", "test_b"}, "the late columns are not tests"
    assert assignment.totals["dan"] == 10.0
    section = report.section(assignment)
    assert "<h3>Late hand-ins</h3>" in section
    assert "<tr><td>dan</td><td>2026-12-23T01:00:00</td><td class=n>3</td><td class=n>-4</td>" in section
    assert "<td>ada</td>" not in section.split("<h3>Late hand-ins</h3>")[1].split("</table>")[0]
    comment = _comment(_rows(root)["dan"], True)
    assert comment == ("Autograded: 14/14; handed in 3 days late: -4 (before the penalty: 14). Total: 10/14. "
                       "The attached feedback file shows each test.")


def test_lateness_counts_every_started_day_after_the_grace():
    policy = late.Policy(datetime.datetime(2026, 1, 1, 12), datetime.timedelta(minutes=10), 2.0, None, {})
    at = lambda **kw: late.lateness(policy, "x", datetime.datetime(2026, 1, 1, 12) + datetime.timedelta(**kw))  # noqa: E731
    assert (at(minutes=10).days, at(minutes=11).days, at(hours=24).days, at(hours=24, seconds=1).days) == (0, 1, 1, 2)
    assert at(days=10).penalty == 20.0, "no cap: every day counts"
    assert late.lateness(policy, "x", None).days == 0


def test_a_moodle_download_collected_then_graded_late_with_and_without_an_extension(tmp_path, capsys):
    """The hand-in times come from the download (Moodle: each file's time in the zip), as
    collect records them; the penalty follows, and an extension takes it back."""
    import zipfile

    import nbformat

    from autograder import cli

    notebook = nbformat.writes(nbformat.v4.new_notebook()).encode()
    archive = tmp_path / "RL-01-ddpg.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, number, when in (("Ada Lovelace", 11, (2026, 12, 20, 22, 0, 0)),
                                   ("Alan Turing", 12, (2026, 12, 22, 9, 0, 0))):
            z.writestr(zipfile.ZipInfo(f"{name}_{number}_assignsubmission_file_/{A}.ipynb", date_time=when), notebook)
    root = tmp_path / "course"
    root.mkdir()
    assert cli.main(["collect", str(archive), "--lms", "moodle", "--assignment", A, "--root", str(root)]) == 0
    (root / late.DEADLINES).write_text(f"[{A}]\ndeadline = 2026-12-20T23:59:00\npenalty_per_day = 2\n")
    results = [_result("ada-lovelace"), _result("alan-turing")]
    write_reports(root, results)
    rows = _rows(root)
    assert [(rows[s]["handed_in"], rows[s]["days_late"], rows[s]["total"]) for s in ("ada-lovelace", "alan-turing")] == [
        ("2026-12-20T22:00:00", "0", "14"), ("2026-12-22T09:00:00", "2", "10")]
    with (root / late.DEADLINES).open("a") as f:
        f.write(f"[{A}.extensions]\nalan-turing = 2026-12-22T12:00:00\n")
    write_reports(root, results)
    assert (_rows(root)["alan-turing"]["days_late"], _rows(root)["alan-turing"]["total"]) == ("0", "14")
    capsys.readouterr()
