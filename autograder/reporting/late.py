"""Late hand-ins: a deadline per assignment, a grace period, a penalty per day and a cap,
and extensions per student (the model of nbgrader's ``LateSubmissionPlugin``, with the
per-day penalty that courses ask for).

The policy is the course folder's ``deadlines.toml``; without it, nothing is late and
nothing here changes a grade or a file::

    # ROOT/deadlines.toml (times as the LMS gives the hand-in times: local, without a zone)
    [01-ddpg]
    deadline = 2026-12-20T23:59:00
    grace_minutes = 15        # handed in up to 15 min after the deadline: on time
    penalty_per_day = 1.0     # points off per day late, or part of a day
    cap = 5.0                 # at most 5 points off (default: no cap; never below 0 points)

    [01-ddpg.extensions]      # an extension beats the deadline, for that student only
    ada-lovelace = 2026-12-22T23:59:00

A hand-in's time is the one ``python -m autograder collect`` recorded from the LMS's
download (``ROOT/collected/<assignment>.json``); a submission put in ``submitted/`` by
hand has none and is never counted late.
"""

from __future__ import annotations

import datetime
import html
import json
import math
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from autograder.course import COLLECTED, CourseError

#: the course folder's late policy
DEADLINES = "deadlines.toml"
#: the CSV columns of an assignment that has a deadline, after total_max
CSV_COLUMNS = ("handed_in", "days_late", "before_penalty", "late_penalty")
#: the feedback's note on a hand-in's time (replaced at every grading run)
NOTE_ID = "late-hand-in"


@dataclass(frozen=True)
class Policy:
    deadline: datetime.datetime
    grace: datetime.timedelta
    penalty_per_day: float
    cap: float | None
    extensions: dict[str, datetime.datetime]

    def deadline_of(self, student: str) -> datetime.datetime:
        return self.extensions.get(student, self.deadline)


@dataclass(frozen=True)
class Late:
    handed_in: datetime.datetime | None
    deadline: datetime.datetime
    extended: bool
    days: int  # 0: on time (or within the grace period)
    penalty: float  # points off, before the total's floor of 0

    def note(self, before: float, total_max: float) -> str:
        """What the student's feedback says."""
        if self.handed_in is None:
            return ""
        given = "your extended deadline" if self.extended else "the deadline"
        if not self.days:
            return f"Handed in {_shown(self.handed_in)}, before {given} ({_shown(self.deadline)}): on time."
        off = min(self.penalty, before)
        return (f"Handed in {_shown(self.handed_in)}, {self.days} day{'s' if self.days > 1 else ''} after {given} "
                f"({_shown(self.deadline)}): a late penalty of {off:g} point{'s' if off != 1 else ''}. "
                f"Total: {before - off:g}/{total_max:g} ({before:g} before the penalty).")


def _shown(moment: datetime.datetime) -> str:
    return moment.isoformat(sep=" ", timespec="minutes")


def _moment(value, where: str) -> datetime.datetime:
    if isinstance(value, datetime.datetime):
        return value.replace(tzinfo=None) if value.tzinfo is None else value.astimezone().replace(tzinfo=None)
    if isinstance(value, datetime.date):
        return datetime.datetime.combine(value, datetime.time(23, 59, 59))
    raise CourseError(f"{DEADLINES}: {where} is {value!r}, not a date and time (write 2026-12-20T23:59:00)")


def policies(root: Path) -> dict[str, Policy]:
    """{assignment: its policy} from ROOT/deadlines.toml; {} without the file."""
    path = Path(root) / DEADLINES
    if not path.exists():
        return {}
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CourseError(f"{path}: not TOML ({error}): fix it (its first lines say how)") from None
    found = {}
    for assignment, entry in table.items():
        if not isinstance(entry, dict) or "deadline" not in entry:
            raise CourseError(f"{path}: [{assignment}] has no deadline: add deadline = 2026-12-20T23:59:00")
        try:
            per_day = float(entry.get("penalty_per_day", 0.0))
            cap = None if entry.get("cap") is None else float(entry["cap"])
            grace = datetime.timedelta(minutes=float(entry.get("grace_minutes", 0)))
        except (TypeError, ValueError) as error:
            raise CourseError(f"{path}: [{assignment}]: {error}: penalty_per_day, cap and grace_minutes are "
                              "numbers") from None
        if per_day < 0 or (cap is not None and cap < 0) or grace < datetime.timedelta(0):
            raise CourseError(f"{path}: [{assignment}]: penalty_per_day, cap and grace_minutes cannot be negative")
        extensions = {str(student): _moment(moment, f"[{assignment}.extensions] {student}")
                      for student, moment in dict(entry.get("extensions", {})).items()}
        found[assignment] = Policy(_moment(entry["deadline"], f"[{assignment}] deadline"), grace, per_day, cap,
                                   extensions)
    return found


def handed_in(root: Path, assignment: str) -> dict[str, datetime.datetime]:
    """{student: hand-in time} as collect recorded it; {} when nothing was collected."""
    path = Path(root) / COLLECTED / f"{assignment}.json"
    try:
        students = json.loads(path.read_text()).get("students", {})
    except (OSError, ValueError, AttributeError):
        return {}
    times = {}
    for student, entry in students.items():
        try:
            times[student] = datetime.datetime.fromisoformat(entry["handed_in"]).replace(tzinfo=None)
        except (KeyError, TypeError, ValueError):
            continue
    return times


def lateness(policy: Policy, student: str, moment: datetime.datetime | None) -> Late:
    """How late a hand-in is, and its penalty: every day or part of a day after the
    (extended) deadline counts, unless the hand-in is within the grace period."""
    deadline = policy.deadline_of(student)
    extended = student in policy.extensions
    if moment is None or moment <= deadline + policy.grace:
        return Late(moment, deadline, extended, 0, 0.0)
    days = math.ceil((moment - deadline) / datetime.timedelta(days=1))
    penalty = days * policy.penalty_per_day
    if policy.cap is not None:
        penalty = min(penalty, policy.cap)
    return Late(moment, deadline, extended, days, penalty)


def apply(row: dict, late: Late) -> None:
    """A CSV row (total as points before the penalty) given its late columns and total."""
    before = float(row["total"])
    off = min(late.penalty, before)
    row.update({"handed_in": "" if late.handed_in is None else late.handed_in.isoformat(timespec="seconds"),
                "days_late": str(late.days), "before_penalty": f"{before:g}", "late_penalty": f"{off:g}",
                "total": f"{before - off:g}"})


_NOTE = re.compile(rf'<div id="{NOTE_ID}"[^>]*>.*?</div>\n?', re.S)
_BODY = re.compile(r"<body[^>]*>")


def mark_feedback(page: Path, text: str) -> None:
    """The feedback page with ``text`` in a note at its top (replacing an earlier note), or
    without any note when ``text`` is empty."""
    if not page.exists():
        return
    content = _NOTE.sub("", page.read_text())
    if text:
        note = (f'<div id="{NOTE_ID}" style="border:1px solid #c90;background:#fff8e5;padding:6px 10px;'
                f'margin:8px 0">{html.escape(text)}</div>\n')
        found = _BODY.search(content)
        content = content[:found.end()] + "\n" + note + content[found.end():] if found else note + content
    page.write_text(content)
