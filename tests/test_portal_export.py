"""The LMS export of hand-ins that came through the portal (issue 28: "the hand-ins flow into
the same course folder, so that make grade, formgrader and the LMS export work on them
unchanged"). The portal's students come from the roster given to ``portal tokens``, which
records it in ROOT/collected/people.csv; export takes their LMS ids, names and emails there.
The portal's hand-ins are graded here by a stand-in of the driver that writes the grader's
grades CSV (``write_reports``) and feedback page; the commands are typed as an instructor
types them, from the repository's root with relative paths."""

from __future__ import annotations

import csv
import json
import re
import shutil
import zipfile

import nbformat

from autograder.lms import formats
from autograder.portal.dispatch import Dispatcher
from autograder.portal.server import Portal
from autograder.portal.store import Limit
from autograder.reporting.results import GRADED, Result
from autograder.reporting.tables import write_reports
from conftest import REPO, cli

DDPG = "01-ddpg"
LOOSE = Limit(count=1000, window=3600)


def _course(name: str):
    root = REPO / "outputs" / "portal export" / name
    shutil.rmtree(root, ignore_errors=True)
    (root / "submitted").mkdir(parents=True)
    return root, str(root.relative_to(REPO))


def _notebook(points: int) -> bytes:
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(f"# {points} points"))
    return nbformat.writes(nb).encode()


def _grade(root, student, assignment, **kwargs):
    """The driver's grade(): the points the notebook says, in grades/<a>.csv and a feedback page."""
    text = (root / "submitted" / student / assignment / f"{assignment}.ipynb").read_text()
    points = float(re.search(r"# (\d+) points", text).group(1))
    page = root / "feedback" / student / assignment / f"{assignment}.html"
    page.parent.mkdir(parents=True, exist_ok=True)
    page.write_text(f"<p>{student}: {points:g}</p>")
    result = Result(student, assignment, GRADED, scores={"test_a": points}, max_scores={"test_a": 100.0})
    write_reports(root, [result])
    return [result]


def _hand_in_on_the_portal(root, hand_ins: dict[str, int], now: float = 1_800_000_000):
    portal = Portal(root, LOOSE, names=[DDPG])
    for student, points in hand_ins.items():
        sid = portal.store().receive(student, DDPG, now, LOOSE)
        portal.store_files(sid, {f"{DDPG}.ipynb": _notebook(points)})
        portal.store().queue(sid, now)
    assert Dispatcher(root, run="t", grade=_grade, log=lambda *a: None).once() == len(hand_ins)


def _worksheet(root):
    with (root / "grades" / f"moodle-{DDPG}.csv").open(newline="") as f:
        return {r["Identifier"]: r for r in csv.DictReader(f)}


def _moodle_reads(name: str) -> str | None:
    """The participant number Moodle's "Upload multiple feedback files in a zip" finds in a
    name of the zip (assignfeedback_file's importziplib: the path cut at "_" in at most 5
    parts, the second a number, then the plugin assignsubmission/file); None: ignored."""
    info = ("/" + name).split("_", 4)
    ok = len(info) == 5 and info[1].isdigit() and info[2:4] == ["assignsubmission", "file"]
    return info[1] if ok and re.match(formats.NAMED_REGEXP[formats.MOODLE], name) else None


def _tokens(rel, roster):
    tokens = cli("portal", "tokens", "--root", rel, "--roster", roster)
    assert tokens.returncode == 0, tokens.stderr
    return tokens


def test_a_portal_only_course_exports_to_moodle_and_canvas(capsys):
    root, rel = _course("portal only")
    (root / "roster.csv").write_text("id,name,email,lms_id\nada,Ada Lovelace,ada@uni.edu,101\n"
                                     "alan,Alan_Turing,alan@uni.edu,102\ncarol,Carol Shaw,,103\n")
    tokens = _tokens(rel, f"{rel}/roster.csv")
    assert f"recorded the roster's 3 people (LMS ids for export) in {rel}/collected/people.csv" in tokens.stdout
    _hand_in_on_the_portal(root, {"ada": 40, "alan": 55})
    record = json.loads((root / "collected" / f"{DDPG}.json").read_text())
    assert "lms" not in record and "lms_id" not in record["students"]["ada"]  # what the portal writes

    exported = cli("export", "--lms", "moodle", "--assignment", DDPG, "--root", rel)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout.splitlines()[0].startswith(f"wrote {rel}/grades/moodle-{DDPG}.csv (2 grades of 2 people")
    sheet = _worksheet(root)
    assert {i: (r["Grade"], r["Maximum grade"], r["Full name"], r["Email address"], r["Status"])
            for i, r in sheet.items()} == {
        "Participant 101": ("40", "100", "Ada Lovelace", "ada@uni.edu", "Submitted for grading"),
        "Participant 102": ("55", "100", "Alan_Turing", "alan@uni.edu", "Submitted for grading")}
    with zipfile.ZipFile(root / "grades" / f"moodle-{DDPG}-feedback.zip") as z:
        names = sorted(z.namelist())
        assert names == [f"Ada Lovelace_101_assignsubmission_file_/{DDPG}-feedback.html",
                         f"Alan Turing_102_assignsubmission_file_/{DDPG}-feedback.html"]
        assert [_moodle_reads(n) for n in names] == ["101", "102"]
        assert z.read(names[1]) == b"<p>alan: 55</p>"

    # Canvas: the gradebook by user id; no feedback zip entry (Canvas needs its own file ids)
    exported = cli("export", "--lms", "canvas", "--assignment", DDPG, "--root", rel)
    assert exported.returncode == 0, exported.stderr
    with (root / "grades" / f"canvas-{DDPG}.csv").open(newline="") as f:
        assert {r["ID"]: r[DDPG] for r in csv.DictReader(f)} == {"101": "40", "102": "55"}
    assert exported.stdout.splitlines()[2] == (
        "no feedback file in the zip for the 2 hand-ins made through the portal (ada, alan): Canvas's Re-Upload "
        "Submissions attaches a file only to a file handed in on Canvas (it reads that file's id in the name); "
        "they read their feedback on the portal")
    with zipfile.ZipFile(root / "grades" / f"canvas-{DDPG}-feedback.zip") as z:
        assert z.namelist() == []


def test_a_mixed_course_keeps_what_collect_recorded(capsys):
    root, rel = _course("mixed")
    # the roster's participant number of Ada is stale: the download's (collect's) wins
    (root / "roster.csv").write_text("id,name,email,lms_id\nada,Ada Lovelace,ada@uni.edu,999\n"
                                     "alan,Alan Turing,alan@uni.edu,202\n")
    with zipfile.ZipFile(root / "download.zip", "w") as z:
        z.writestr(f"Ada Lovelace_201_assignsubmission_file_/{DDPG}.ipynb", _notebook(10))
    collected = cli("collect", f"{rel}/download.zip", "--lms", "moodle", "--assignment", DDPG, "--root", rel,
                    "--roster", f"{rel}/roster.csv")
    assert collected.returncode == 0, collected.stderr
    _tokens(rel, f"{rel}/roster.csv")
    _hand_in_on_the_portal(root, {"ada": 70, "alan": 80})  # Ada hands in again on the portal

    exported = cli("export", "--lms", "moodle", "--assignment", DDPG, "--root", rel)
    assert exported.returncode == 0, exported.stderr
    assert {i: r["Grade"] for i, r in _worksheet(root).items()} == {"Participant 201": "70", "Participant 202": "80"}
    with zipfile.ZipFile(root / "grades" / f"moodle-{DDPG}-feedback.zip") as z:
        names = sorted(z.namelist())
    assert names == [f"Ada Lovelace_201_assignsubmission_file_/{DDPG}-feedback.html",
                     f"Alan Turing_202_assignsubmission_file_/{DDPG}-feedback.html"]
    assert [_moodle_reads(n) for n in names] == ["201", "202"]
    # the course was collected from Moodle: Canvas is still refused
    refused = cli("export", "--lms", "canvas", "--assignment", DDPG, "--root", rel)
    assert (refused.returncode, refused.stderr) == (
        1, f"error: {DDPG} was collected from moodle, not canvas: export with --lms moodle\n")


def test_a_portal_student_without_an_lms_id_is_named_in_one_line(capsys):
    root, rel = _course("no lms id")
    (root / "roster.csv").write_text("id,name,email,lms_id\nada,Ada Lovelace,,101\nalan,Alan Turing,,\n")
    _tokens(rel, f"{rel}/roster.csv")
    _hand_in_on_the_portal(root, {"ada": 40, "alan": 55})
    for lms, what in (("moodle", "their participant number in this assignment (Moodle's grading worksheet: "
                                 "'Participant N')"), ("canvas", "their Canvas user id")):
        refused = cli("export", "--lms", lms, "--assignment", DDPG, "--root", rel)
        assert (refused.returncode, refused.stderr) == (1, (
            f"error: alan handed in {DDPG} through the portal but has no LMS id (a number) in "
            f"{rel}/collected/people.csv: give {what} in its column lms_id (or run portal tokens --roster with a "
            "roster that has it), then export again\n"))
    assert not (root / "grades" / f"moodle-{DDPG}.csv").exists()
    # given in another roster (Moodle's numbers are each assignment's own): exported
    (root / "numbers.csv").write_text("id,name,email,lms_id\nada,Ada Lovelace,,301\nalan,Alan Turing,,302\n")
    exported = cli("export", "--lms", "moodle", "--assignment", DDPG, "--root", rel, "--roster", f"{rel}/numbers.csv")
    assert exported.returncode == 0, exported.stderr
    assert {i: r["Grade"] for i, r in _worksheet(root).items()} == {"Participant 301": "40", "Participant 302": "55"}
