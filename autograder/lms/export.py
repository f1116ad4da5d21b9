"""``python -m autograder export``: an assignment's grades and feedback, in what the LMS
imports (``formats`` says which versions).

The grades are the course's own (``grades/<assignment>.csv``, written by the grader, with
the points given by hand once graded again after formgrader); the people are those
``collect`` recorded (``collected/<assignment>.json``). Nothing is exported while answers
wait for a grade by hand, or hand-ins wait to be graded, unless ``partial``.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from pathlib import Path

from autograder.course import CourseError, assignments, count, shown
from autograder.isolation import inert
from autograder.lms import formats
from autograder.lms.collect import COLLECTED
from autograder.reporting.results import GRADED


def _grades(root: Path, assignment: str) -> dict[str, dict]:
    path = root / "grades" / f"{assignment}.csv"
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        return {row["student"]: row for row in csv.DictReader(f)}


def _comment(row: dict | None, files: bool) -> str:
    if row is None:
        return "Nothing usable was handed in." if not files else "Not graded yet."
    if row["status"] != GRADED:
        notes = f" {row['notes']}" if row.get("notes") else ""
        return f"Not graded: {row['status']}.{notes}"
    text = f"Autograded: {row['autograded']}/{row['autograded_max']}"
    if float(row["autograded_max"] or 0) < float(row["total_max"] or 0) and not int(row.get("to_grade") or 0):
        text += f"; graded by hand: {row['by_hand']}"
    if float(row.get("late_penalty") or 0) > 0:  # ROOT/deadlines.toml (autograder/reporting/late.py)
        days = int(row.get("days_late") or 0)
        text += (f"; handed in {days} day{'s' if days > 1 else ''} late: -{row['late_penalty']} "
                 f"(before the penalty: {row['before_penalty']})")
    text += f". Total: {row['total']}/{row['total_max']}."
    if int(row.get("to_grade") or 0):
        waiting = int(row["to_grade"])
        text += f" {waiting} answer{'s are' if waiting > 1 else ' is'} still to be graded by hand."
    return text + " The attached feedback file shows each test."


def moodle_prefix(name: str, participant: str) -> str:
    """The folder Moodle's "Download all submissions" gives a participant's files, which its
    "Upload multiple feedback files in a zip" reads back (it matches the participant number
    and the plugin, ``assignsubmission_file``; the name is Moodle's full name without "_")."""
    name = re.sub(r'[\x00-\x1f\x7f/\\:*?"<>|]', "", name.replace("_", " ")).strip() or "Participant"
    return f"{name}_{participant}_assignsubmission_file_/"


def _people(root: Path, assignment: str, lms: str, students: dict, roster: Path | None) -> tuple[dict, list[str]]:
    """Each person of the record with the LMS fields export needs. A hand-in that came only
    through the portal (its entry has ``portal_submission`` and none of collect's fields)
    takes the person's name, email and LMS id from the roster (``portal tokens --roster``
    recorded it in ROOT/collected/people.csv); collect's entry, where there is one, wins.
    Also the students whose hand-in came through the portal (for the Canvas note)."""
    from autograder.lms.collect import PEOPLE, read_people

    path = Path(roster) if roster else root / COLLECTED / PEOPLE
    portal = sorted(s for s, p in students.items() if "lms_id" not in p and p.get("portal_submission"))
    known = {p.id: p for p in read_people(path)} if portal and (roster or path.exists()) else {}
    missing = [s for s in portal if s not in known or not known[s].lms_id.isdigit()]
    if missing:
        what = {formats.MOODLE: "their participant number in this assignment (Moodle's grading worksheet: "
                                "'Participant N')", formats.CANVAS: "their Canvas user id"}[lms]
        raise CourseError(f"{', '.join(missing)} handed in {assignment} through the portal but "
                          f"{'have' if len(missing) > 1 else 'has'} no LMS id (a number) in {shown(path)}: give "
                          f"{what} in its column lms_id (or run portal tokens --roster with a roster that has it), "
                          "then export again")
    people = {}
    for student, entry in students.items():
        entry = dict(entry)
        if student in portal:
            person = known[student]
            entry.update(name=person.name or student, email=person.email, lms_id=person.lms_id,
                         files={"portal": entry["portal_submission"]},
                         prefix=moodle_prefix(person.name, person.lms_id) if lms == formats.MOODLE else "")
        elif entry.get("portal_submission") and not entry.get("files"):
            entry["files"] = {"portal": entry["portal_submission"]}  # collected empty, then handed in on the portal
        entry.setdefault("name", student)
        entry.setdefault("prefix", "")
        people[student] = entry
    return people, portal


def export(root: Path, lms: str, assignment: str, partial: bool = False, column: str | None = None,
           roster: Path | None = None) -> list[str]:
    """Writes the LMS's grade CSV and feedback zip under root/grades/; the lines to print."""
    if assignment not in assignments():
        raise CourseError(f"no assignment {assignment!r}: the assignments are {', '.join(assignments())}")
    record_path = root / COLLECTED / f"{assignment}.json"
    if not record_path.exists():
        raise CourseError(f"nothing collected for {assignment} in {shown(root)} (no {shown(record_path)}): export "
                          f"sends back what `python -m autograder collect ... --assignment {assignment}` brought in")
    record = json.loads(record_path.read_text())
    if record.get("lms") not in (None, lms):  # None: every hand-in came through the portal
        raise CourseError(f"{assignment} was collected from {record.get('lms')}, not {lms}: export with --lms "
                          f"{record.get('lms')}")
    people, portal = _people(root, assignment, lms, record.get("students", {}), roster)
    grades = _grades(root, assignment)
    waiting = {s: int(grades[s].get("to_grade") or 0) for s in people
               if s in grades and grades[s]["status"] == GRADED and int(grades[s].get("to_grade") or 0)}
    ungraded = sorted(s for s, p in people.items() if p.get("files") and s not in grades)
    if (waiting or ungraded) and not partial:
        problems = []
        if waiting:
            total = sum(waiting.values())
            problems.append(f"{count(total, 'answer')} of {count(len(waiting), 'student')} "
                            f"wait{'s' if total == 1 else ''} for a grade by hand ("
                            + ", ".join(f"{s}: {n}" for s, n in sorted(waiting.items()))
                            + "): grade them in formgrader, then run grade again")
        if ungraded:
            problems.append(f"{len(ungraded)} hand-ins are not graded ({', '.join(ungraded)}): run grade")
        raise CourseError("; ".join(problems) + "; or export with --partial to send the grades as they are")
    out = root / "grades"
    out.mkdir(exist_ok=True)
    csv_path = out / f"{lms}-{assignment}.csv"
    zip_path = out / f"{lms}-{assignment}-feedback.zip"
    text = io.StringIO()
    writer = csv.writer(text)
    feedback = {}
    exported = 0
    if lms == formats.MOODLE:
        writer.writerow(formats.MOODLE_WORKSHEET)
    else:
        writer.writerow([*formats.CANVAS_GRADEBOOK, column or assignment])
    for student in sorted(people, key=lambda s: int(people[s]["lms_id"]) if people[s]["lms_id"].isdigit() else 0):
        person = people[student]
        row = grades.get(student)
        graded = row is not None and row["status"] == GRADED
        grade = row["total"] if graded else ""
        comment = _comment(row, bool(person.get("files")))
        # the people's text is made inert (never a formula); "-" is Moodle's own "never" (no check of
        # the grade's time: the worksheet's grade replaces the one in Moodle)
        cells = [f"Participant {person['lms_id']}", inert.csv_cell(person["name"]),
                 inert.csv_cell(person.get("email", "")),
                 "Submitted for grading" if person.get("files") else "No submission",
                 grade, row["total_max"] if graded else "", "Yes", person.get("handed_in", ""), "-",
                 inert.csv_cell(comment)]
        if lms == formats.MOODLE:
            writer.writerow(cells)
        else:
            writer.writerow([inert.csv_cell(person["name"]), person["lms_id"], "", "", "", grade])
        exported += graded
        html = root / "feedback" / student / assignment / f"{assignment}.html"
        if graded and html.exists() and person["prefix"]:
            feedback[f"{person['prefix']}{assignment}-feedback.html"] = html
    temporary = csv_path.with_suffix(".tmp")
    temporary.write_text(text.getvalue())
    temporary.replace(csv_path)
    temporary = zip_path.with_suffix(".tmp")
    with zipfile.ZipFile(temporary, "w", zipfile.ZIP_DEFLATED) as z:
        for name, path in sorted(feedback.items()):
            z.write(path, name)
    temporary.replace(zip_path)
    upload = {formats.MOODLE: ("Grading action 'Upload grading worksheet'", "'Upload multiple feedback files in a zip'"),
              formats.CANVAS: ("Grades > Import", "the assignment's 'Re-Upload Submissions'")}[lms]
    lines = [f"wrote {shown(csv_path)} ({exported} grades of {len(people)} people; upload it with {upload[0]})",
             f"wrote {shown(zip_path)} ({len(feedback)} feedback files; upload it with {upload[1]})"]
    if lms == formats.CANVAS and portal:
        lines.append(f"no feedback file in the zip for the {len(portal)} hand-ins made through the portal "
                     f"({', '.join(portal)}): Canvas's Re-Upload Submissions attaches a file only to a file handed "
                     "in on Canvas (it reads that file's id in the name); they read their feedback on the portal")
    if waiting:
        lines.append(f"partial: {count(sum(waiting.values()), 'answer')} of {', '.join(sorted(waiting))} "
                     f"{'is' if sum(waiting.values()) == 1 else 'are'} not graded by hand yet")
    if ungraded:
        lines.append(f"partial: not graded, exported without a grade: {', '.join(ungraded)}")
    return lines
