"""The class loop through the LMS (autograder/lms/): a Moodle or Canvas download collected
into nbgrader's layout, graded, exported back; and the downloads that are refused, each
with its exact message, the course folder left as it was. The archives are built here,
in each LMS's layout (autograder/lms/formats.py says which versions)."""

from __future__ import annotations

import csv
import functools
import io
import json
import shutil
import stat
import zipfile

import nbformat
import pytest

import sample_class
from autograder import cli as autograder_cli
from conftest import REPO, cli

DDPG = "01-ddpg"


@functools.lru_cache(maxsize=None)
def notebook(text: str = "") -> bytes:
    """A small notebook (collect does not read it: the grader checks it)."""
    nb = nbformat.v4.new_notebook()
    nb.cells.append(nbformat.v4.new_code_cell(f"# {text}"))
    return nbformat.writes(nb).encode()


def moodle(path, hand_ins: dict[tuple[str, int], dict[str, bytes]], extra: list | None = None):
    """Moodle's 'Download all submissions' (folders): <Full name>_<id>_assignsubmission_file_/<file>."""
    with zipfile.ZipFile(path, "w") as z:
        for (name, participant), files in hand_ins.items():
            for file, data in files.items():
                z.writestr(f"{name}_{participant}_assignsubmission_file_/{file}", data)
        for info, data in extra or []:
            z.writestr(info, data)
    return path


def canvas(path, files: dict[str, bytes]):
    """Canvas's 'Download Submissions': <lastfirst>[_late]_<user id>_<file id>_<file name>."""
    with zipfile.ZipFile(path, "w") as z:
        for name, data in files.items():
            z.writestr(name, data)
    return path


def run(capsys, *argv) -> tuple[int, str, str]:
    """``python -m autograder ARGV``, in this process (the loop's own test runs it as typed)."""
    code = autograder_cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def tree(root) -> dict[str, bytes | None]:
    return {str(p.relative_to(root)): (p.read_bytes() if p.is_file() else None) for p in sorted(root.rglob("*"))}


@pytest.fixture
def course(tmp_path, capsys):
    """A course folder with a first download collected (Ada and Alan, Moodle)."""
    root = tmp_path / "course"
    root.mkdir()
    first = moodle(tmp_path / "first.zip", {("Ada Lovelace", 101): {f"{DDPG}.ipynb": notebook("ada")},
                                           ("Alan Turing", 102): {f"{DDPG}.ipynb": notebook("alan")}})
    code, out, err = run(capsys, "collect", first, "--lms", "moodle", "--assignment", DDPG, "--root", root)
    assert code == 0, err
    return root


# --- collect


def test_moodle_download_is_collected_with_stable_ids(tmp_path, capsys):
    root = tmp_path / "course"
    root.mkdir()
    archive = moodle(tmp_path / "a.zip", {
        ("Ada Lovelace", 101): {f"Copy of {DDPG}.ipynb": notebook("ada"), "notes.txt": b"x"},
        ("Émile Zola", 102): {f"{DDPG} (1).ipynb": notebook("emile")},
        ("Grace Hopper", 103): {"report.pdf": b"%PDF"},
    })
    code, out, err = run(capsys, "collect", archive, "--lms", "moodle", "--assignment", DDPG, "--root", root)
    assert code == 0, err
    lines = {line.split()[0]: line for line in out.splitlines()[2:5]}
    assert "new, name normalised" in lines["ada-lovelace"] and "ignored: notes.txt" in lines["ada-lovelace"]
    assert "new, name normalised" in lines["emile-zola"]
    assert "nothing usable" in lines["grace-hopper"]
    assert out.splitlines()[5] == "2 new, 1 nothing usable"
    assert (root / "submitted" / "ada-lovelace" / DDPG / f"{DDPG}.ipynb").read_bytes() == notebook("ada")
    assert (root / "submitted" / "emile-zola" / DDPG / f"{DDPG}.ipynb").read_bytes() == notebook("emile")
    assert not (root / "submitted" / "grace-hopper").exists()
    # the ids are recorded, so that the next download (another assignment's participant
    # numbers) finds the same people, and so that export finds each again
    with (root / "collected" / "people.csv").open() as f:
        assert [r["id"] for r in csv.DictReader(f)] == ["ada-lovelace", "emile-zola", "grace-hopper"]
    record = json.loads((root / "collected" / f"{DDPG}.json").read_text())
    assert record["students"]["ada-lovelace"]["prefix"] == "Ada Lovelace_101_assignsubmission_file_/"
    second = moodle(tmp_path / "b.zip", {("Ada Lovelace", 7): {f"{DDPG}.ipynb": notebook("ada")}})
    code, out, err = run(capsys, "collect", second, "--lms", "moodle", "--assignment", DDPG, "--root", root)
    assert code == 0, err
    assert out.splitlines()[2].startswith("ada-lovelace  Ada Lovelace") and out.splitlines()[2].endswith("  unchanged")


def test_a_resubmission_replaces_and_the_old_one_is_kept_aside(course, tmp_path, capsys):
    before = (course / "submitted" / "alan-turing" / DDPG / f"{DDPG}.ipynb").read_bytes()
    again = moodle(tmp_path / "again.zip", {("Ada Lovelace", 101): {f"{DDPG}.ipynb": notebook("ada")},
                                           ("Alan Turing", 102): {f"{DDPG}.ipynb": notebook("alan, better")}})
    code, out, err = run(capsys, "collect", again, "--lms", "moodle", "--assignment", DDPG, "--root", course)
    assert code == 0, err
    rows = {line.split()[0]: line for line in out.splitlines()[2:4]}
    assert "  unchanged" in rows["ada-lovelace"] and "  replaced" in rows["alan-turing"]
    assert (course / "submitted" / "alan-turing" / DDPG / f"{DDPG}.ipynb").read_bytes() == notebook("alan, better")
    kept = list((course / "collected" / "kept" / "alan-turing" / DDPG).glob(f"*/{DDPG}.ipynb"))
    assert [k.read_bytes() for k in kept] == [before]
    assert not (course / "collected" / "kept" / "ada-lovelace").exists()


def test_canvas_latest_attempt_roster_and_results_file(tmp_path, capsys):
    root = tmp_path / "course"
    root.mkdir()
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email,lms_id\ns1,Ada Lovelace,ada@uni.edu,5001\ns2,Alan Turing,alan@uni.edu,\n")
    archive = canvas(tmp_path / "c.zip", {
        "lovelaceada_late_5001_9001_03-experiment-1.ipynb": notebook("old"),
        "lovelaceada_late_5001_9002_03-experiment-2.ipynb": notebook("new"),
        "lovelaceada_late_5001_9003_03-experiment-results (1).npz": b"results",
        "turingalan_5002_9004_03-experiment.ipynb": notebook("alan"),  # by name: no lms_id in the roster
    })
    code, out, err = run(capsys, "collect", archive, "--lms", "canvas", "--assignment", "03-experiment",
                         "--root", root, "--roster", roster)
    assert code == 0, err
    folder = root / "submitted" / "s1" / "03-experiment"
    assert sorted(p.name for p in folder.iterdir()) == ["03-experiment-results.npz", "03-experiment.ipynb"]
    assert (folder / "03-experiment.ipynb").read_bytes() == notebook("new")
    assert "older attempt 03-experiment-1.ipynb not used" in out
    assert (root / "submitted" / "s2" / "03-experiment" / "03-experiment.ipynb").read_bytes() == notebook("alan")
    record = json.loads((root / "collected" / "03-experiment.json").read_text())["students"]
    assert (record["s1"]["late"], record["s1"]["prefix"], record["s1"]["email"]) == (True, "lovelaceada_late_5001_9002_", "ada@uni.edu")
    assert record["s1"]["handed_in"]  # the time of the file in the download


# --- refused downloads: one line naming the file and what to do; the course folder as it was


def _symlink(name):
    info = zipfile.ZipInfo(name)
    info.external_attr = (stat.S_IFLNK | 0o777) << 16
    return info


def _nested(levels: int) -> bytes:
    data = notebook("deep")
    name = f"{DDPG}.ipynb"
    for level in range(levels):
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as z:
            z.writestr(name, data)
        data, name = buffer.getvalue(), f"level{level}.zip"
    return data


ADA = "Ada Lovelace_101_assignsubmission_file_"
BAD = {
    "traversal": (lambda p: moodle(p, {}, [(f"{ADA}/../../../evil.ipynb", b"x")]),
                  [], f"error: bad.zip has an entry outside its folder ('{ADA}/../../../evil.ipynb'): this is not an LMS "
                      "download as it came; download it again from the LMS"),
    "absolute": (lambda p: moodle(p, {}, [("/tmp/evil.ipynb", b"x")]),
                 [], "error: bad.zip has an entry outside its folder ('/tmp/evil.ipynb'): this is not an LMS download as "
                     "it came; download it again from the LMS"),
    "symlink": (lambda p: moodle(p, {}, [(_symlink(f"{ADA}/{DDPG}.ipynb"), "/etc/passwd")]),
                [], f"error: bad.zip holds a symbolic link ({ADA}/{DDPG}.ipynb): an LMS download has none; download it "
                    "again from the LMS"),
    "too large": (lambda p: moodle(p, {("Ada Lovelace", 101): {f"{DDPG}.ipynb": b" " * (3 * 2**20)}}),
                  ["--max-size", "2"], "error: bad.zip holds more than 2 MB once unpacked: download the submissions of "
                                       "this assignment only, or raise --max-size if the download is genuine"),
    "zip in a zip": (lambda p: moodle(p, {("Ada Lovelace", 101): {"work.zip": _nested(2)}}),
                     [], f"error: bad.zip: {ADA}/work.zip holds another zip (level0.zip): zips are unpacked one level "
                         "only; ask the student for the notebook itself, take it out of the download and collect again"),
    "rar": (lambda p: p.with_suffix(".rar").write_bytes(b"Rar!\x1a\x07\x01\x00" + b"\0" * 64) and p.with_suffix(".rar"),
            [], "error: bad.rar is a RAR archive: download the submissions again as the LMS gives them (a .zip), or "
                "unpack it and zip it again"),
    "7z": (lambda p: p.with_suffix(".7z").write_bytes(b"7z\xbc\xaf\x27\x1c\x00\x04" + b"\0" * 64) and p.with_suffix(".7z"),
           [], "error: bad.7z is a 7z archive: download the submissions again as the LMS gives them (a .zip), or "
               "unpack it and zip it again"),
    "two notebooks": (lambda p: moodle(p, {("Ada Lovelace", 101): {f"{DDPG}.ipynb": notebook("a"),
                                                                   f"Copy of {DDPG}.ipynb": notebook("b")}}),
                      [], f"error: bad.zip: Ada Lovelace (moodle id 101) handed in 2 files that could each be "
                          f"{DDPG}.ipynb ({DDPG}.ipynb, Copy of {DDPG}.ipynb): ask them which one, remove the others "
                          "from the download and collect again"),
    "not on the roster": (lambda p: moodle(p, {("Grace Hopper", 103): {f"{DDPG}.ipynb": notebook("g")}}),
                          ["--roster", "ROSTER"],
                          "error: bad.zip: Grace Hopper (moodle id 103) is not on the roster ROSTER: add them "
                          "(id,name,email,lms_id) and collect again, or collect with --unlisted to give them an id "
                          "from their name"),
}


@pytest.mark.parametrize("kind", list(BAD))
def test_a_bad_download_is_refused_and_changes_nothing(kind, course, tmp_path, capsys):
    build, options, expected = BAD[kind]
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email,lms_id\nada-lovelace,Ada Lovelace,,\nalan-turing,Alan Turing,,\n")
    options = [str(roster) if o == "ROSTER" else o for o in options]
    archive = build(tmp_path / "bad.zip")
    before = tree(course)
    code, out, err = run(capsys, "collect", archive, "--lms", "moodle", "--assignment", DDPG, "--root", course, *options)
    assert (code, out, err) == (1, "", expected.replace("ROSTER", str(roster)) + "\n")
    assert tree(course) == before
    assert not (tmp_path / "evil.ipynb").exists() and not list(tmp_path.parent.glob("evil.ipynb"))


def test_a_zip_handed_in_is_unpacked_once(course, tmp_path, capsys):
    archive = moodle(tmp_path / "z.zip", {("Alan Turing", 102): {"work.zip": _nested(1)}})
    code, out, err = run(capsys, "collect", archive, "--lms", "moodle", "--assignment", DDPG, "--root", course)
    assert code == 0, err
    assert (course / "submitted" / "alan-turing" / DDPG / f"{DDPG}.ipynb").read_bytes() == notebook("deep")
    assert "replaced" in out


def test_unlisted_people_get_an_id_when_asked(course, tmp_path, capsys):
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email,lms_id\nada-lovelace,Ada Lovelace,,\n")
    archive = moodle(tmp_path / "u.zip", {("Grace Hopper", 103): {f"{DDPG}.ipynb": notebook("g")}})
    code, out, err = run(capsys, "collect", archive, "--lms", "moodle", "--assignment", DDPG, "--root", course,
                         "--roster", roster, "--unlisted")
    assert code == 0, err
    assert "new, not on roster" in out.splitlines()[2]
    assert (course / "submitted" / "grace-hopper" / DDPG / f"{DDPG}.ipynb").exists()


def test_export_before_grading_is_refused(course, capsys):
    code, out, err = run(capsys, "export", "--lms", "moodle", "--assignment", DDPG, "--root", course)
    assert (code, err) == (1, "error: 2 hand-ins are not graded (ada-lovelace, alan-turing): run grade; or export with "
                              "--partial to send the grades as they are\n")
    code, out, err = run(capsys, "export", "--lms", "canvas", "--assignment", DDPG, "--root", course)
    assert (code, err) == (1, f"error: {DDPG} was collected from moodle, not canvas: export with --lms moodle\n")


# --- the loop: collected, graded (as typed), exported; then a resubmission


BUGGY = "bug-no-discount"
#: the points of 01-ddpg: autograded, its one answer graded by hand, and what BUGGY loses
_POINTS = sample_class.max_scores(DDPG)
ANSWERS = [t for t in _POINTS if t.startswith("answer_")]
AUTO = sum(v for t, v in _POINTS.items() if t not in ANSWERS)
LOST = sum(_POINTS[t] for t in next(s for s in sample_class.SAMPLES if s.student == BUGGY).loses)


def _g(x: float) -> str:
    return f"{x:g}"


def _sample_bytes(tmp_path, student):
    sample = next(s for s in sample_class.SAMPLES if s.student == student)
    return sample_class.write_sample(sample, tmp_path / "samples").read_bytes()


def _give_points(root, student, points):
    """What formgrader does when the instructor types a score."""
    from nbgrader.api import Gradebook

    with Gradebook(f"sqlite:///{root / 'gradebook.db'}", "ddpg-td3") as gradebook:
        grade = gradebook.find_grade("answer_must_bootstrap", DDPG, DDPG, student)
        grade.manual_score = points
        grade.needs_manual_grade = False
        gradebook.db.commit()


def _totals(root):
    with (root / "grades" / f"{DDPG}.csv").open(newline="") as f:
        return {row["student"]: row["total"] for row in csv.DictReader(f)}


def test_the_class_loop_through_moodle_then_canvas(tmp_path):
    root = REPO / "outputs" / "lms loop"
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    solution, buggy = _sample_bytes(tmp_path, "ddpg-solution"), _sample_bytes(tmp_path, BUGGY)
    download = moodle(tmp_path / "RL-01-ddpg.zip", {("Ada Lovelace", 11): {f"Copy of {DDPG}.ipynb": solution},
                                                   ("Alan Turing", 12): {f"{DDPG}.ipynb": buggy}})
    typed = ["--assignment", DDPG, "--root", str(root)]
    run_ = cli("collect", str(download), "--lms", "moodle", *typed)
    assert run_.returncode == 0, run_.stderr
    graded = cli("grade", *typed)
    assert graded.returncode == 0, graded.stderr[-3000:]
    assert ANSWERS == ["answer_must_bootstrap"] and _POINTS[ANSWERS[0]] == 2
    assert _totals(root) == {"ada-lovelace": _g(AUTO), "alan-turing": _g(AUTO - LOST)}  # the critic loss's tests lost
    refused = cli("export", "--lms", "moodle", *typed)
    assert refused.returncode == 1
    assert refused.stderr == ("error: 2 answers of 2 students wait for a grade by hand (ada-lovelace: 1, alan-turing: 1): "
                              "grade them in formgrader, then run grade again; or export with --partial to send the "
                              "grades as they are\n")
    _give_points(root, "ada-lovelace", 2)
    _give_points(root, "alan-turing", 0.5)
    assert cli("grade", *typed).returncode == 0  # unchanged: the hand grades reach the CSV
    totals = _totals(root)
    assert totals == {"ada-lovelace": _g(AUTO + 2), "alan-turing": _g(AUTO - LOST + 0.5)}
    exported = cli("export", "--lms", "moodle", *typed)
    assert exported.returncode == 0, exported.stderr
    with (root / "grades" / f"moodle-{DDPG}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["Identifier", "Full name", "Email address", "Status", "Grade", "Maximum grade",
                             "Grade can be changed", "Last modified (submission)", "Last modified (grade)",
                             "Feedback comments"]
    assert {r["Identifier"]: r["Grade"] for r in rows} == {"Participant 11": totals["ada-lovelace"],
                                                          "Participant 12": totals["alan-turing"]}
    assert {r["Maximum grade"] for r in rows} == {_g(AUTO + 2)}
    assert rows[0]["Feedback comments"] == (f"Autograded: {AUTO:g}/{AUTO:g}; graded by hand: 2. Total: {AUTO + 2:g}/"
                                           f"{AUTO + 2:g}. The attached feedback file shows each test.")
    with zipfile.ZipFile(root / "grades" / f"moodle-{DDPG}-feedback.zip") as z:
        names = sorted(z.namelist())
        assert names == [f"Ada Lovelace_11_assignsubmission_file_/{DDPG}-feedback.html",
                         f"Alan Turing_12_assignsubmission_file_/{DDPG}-feedback.html"]
        assert z.read(names[1]) == (root / "feedback" / "alan-turing" / DDPG / f"{DDPG}.html").read_bytes()

    # a second download: Alan hands in again (fixed); only he is graded again
    again = moodle(tmp_path / "RL-01-ddpg (2).zip", {("Ada Lovelace", 11): {f"Copy of {DDPG}.ipynb": solution},
                                                    ("Alan Turing", 12): {f"{DDPG}.ipynb": solution}})
    collected = cli("collect", str(again), "--lms", "moodle", *typed)
    assert collected.returncode == 0, collected.stderr
    assert [line.split("  ")[0] for line in collected.stdout.splitlines()[2:4]] == ["ada-lovelace", "alan-turing"]
    assert "unchanged" in collected.stdout.splitlines()[2] and "replaced" in collected.stdout.splitlines()[3]
    regraded = cli("grade", *typed)
    assert regraded.returncode == 0, regraded.stderr[-3000:]
    assert "grading 1 submission of 2 students (01-ddpg) on 1 local worker; 1 unchanged since they were graded" in regraded.stdout
    # his answer (a text cell) is unchanged: it keeps its hand grade; his code now scores full marks
    assert _totals(root) == {"ada-lovelace": _g(AUTO + 2), "alan-turing": _g(AUTO + 0.5)}
    assert cli("export", "--lms", "moodle", *typed).returncode == 0
    with (root / "grades" / f"moodle-{DDPG}.csv").open(newline="") as f:
        assert {r["Identifier"]: r["Grade"] for r in csv.DictReader(f)} == {"Participant 11": _g(AUTO + 2), "Participant 12": _g(AUTO + 0.5)}

    # the same class through Canvas, from a copy of the graded course: nothing graded again
    other = REPO / "outputs" / "lms loop canvas"
    shutil.rmtree(other, ignore_errors=True)
    shutil.copytree(root, other)
    (other / "collected" / f"{DDPG}.json").unlink()
    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email,lms_id\nada-lovelace,Ada Lovelace,ada@uni.edu,5001\nalan-turing,Alan Turing,,5002\n")
    cdownload = canvas(tmp_path / "canvas.zip", {f"lovelaceada_5001_901_{DDPG}.ipynb": solution,
                                                 f"turingalan_late_5002_902_{DDPG}-1.ipynb": solution})
    ctyped = ["--assignment", DDPG, "--root", str(other)]
    assert cli("collect", str(cdownload), "--lms", "canvas", "--roster", str(roster), *ctyped).returncode == 0
    regraded = cli("grade", *ctyped)
    assert "grading 0 submissions" in regraded.stdout
    assert cli("export", "--lms", "canvas", "--column", "DDPG (77)", *ctyped).returncode == 0
    with (other / "grades" / f"canvas-{DDPG}.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "DDPG (77)"]
    assert {r["ID"]: r["DDPG (77)"] for r in rows} == {"5001": _totals(other)["ada-lovelace"],
                                                      "5002": _totals(other)["alan-turing"]}
    with zipfile.ZipFile(other / "grades" / f"canvas-{DDPG}-feedback.zip") as z:
        assert sorted(z.namelist()) == [f"lovelaceada_5001_901_{DDPG}-feedback.html",
                                        f"turingalan_late_5002_902_{DDPG}-feedback.html"]


def test_other_csvs_in_grades_are_not_taken_for_assignments(tmp_path):
    """An LMS's grade file (and the audit's audit.csv) sit in grades/ beside the grader's CSVs:
    summary.csv reads only the grader's (they made grading fail with KeyError 'student')."""
    from autograder.reporting.results import Result
    from autograder.reporting.tables import write_reports

    (tmp_path / "grades").mkdir()
    (tmp_path / "grades" / f"moodle-{DDPG}.csv").write_text("Identifier,Full name,Grade\nParticipant 1,Ada,3\n")
    (tmp_path / "grades" / "audit.csv").write_text("id,assignment,function\nm1,01-ddpg,f\n")
    write_reports(tmp_path, [Result("ada", DDPG, "graded", scores={"t": 1.0}, max_scores={"t": 1.0})])
    assert (tmp_path / "grades" / "summary.csv").read_text().splitlines() == ["student,01-ddpg,to_grade", "ada,1,0"]


def test_the_feedback_comment_counts_the_answers_waiting_in_good_english():
    from autograder.lms.export import _comment

    row = {"status": "graded", "autograded": "14", "autograded_max": "14", "total": "14", "total_max": "16",
           "by_hand": "", "to_grade": "1", "notes": ""}
    assert _comment(row, True) == ("Autograded: 14/14. Total: 14/16. 1 answer is still to be graded by hand. The "
                                   "attached feedback file shows each test.")
    assert "2 answers are still to be graded by hand." in _comment({**row, "to_grade": "2"}, True)
