"""``python -m autograder collect``: an LMS's download of all submissions into nbgrader's
layout, ``ROOT/submitted/<student>/<assignment>/``.

Everything is checked before anything is written: a refused download (``archive``'s
checks, two notebooks that could both be the assignment, a person missing from the
roster) leaves the course folder as it was. A hand-in whose files differ from the ones
collected before replaces them, and the old ones are kept aside in
``ROOT/collected/kept/<student>/<assignment>/<time>/``; the grader sees the new files and
grades them again (its change detection), and only them.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from nbgrader.plugins.zipcollect import FileNameCollectorPlugin

from autograder.course import COLLECTED, CourseError, assignments, shown
from autograder.isolation import inert
from autograder.lms import formats
from autograder.lms.archive import MAX_BYTES, BadArchive, unpack

PEOPLE = "people.csv"
ROSTER_COLUMNS = ["id", "name", "email", "lms_id"]

#: the per-student outcomes the table shows
NEW, UNCHANGED, REPLACED, OLDER, NOTHING = "new", "unchanged", "replaced", "older (kept aside)", "nothing usable"
NORMALISED, UNLISTED = "name normalised", "not on roster"


@dataclass
class Person:
    id: str
    name: str
    email: str = ""
    lms_id: str = ""


@dataclass
class HandIn:
    lms_id: str
    name: str
    prefix: str  # the download's name for the person's files (the feedback zip uses it again)
    late: bool = False
    files: dict[str, Path] = field(default_factory=dict)  # path in the person's folder -> unpacked file
    times: dict[str, tuple] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)
    prefixes: dict[str, str] = field(default_factory=dict)  # each file's prefix (Canvas: its own file id)


@dataclass
class Row:
    student: str
    name: str
    status: str
    handed_in: str = ""
    flags: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


class Collector(FileNameCollectorPlugin):
    """nbgrader's file name collector, with the LMS's named regular expression."""


def read_people(path: Path) -> list[Person]:
    """A roster CSV (id,name,email,lms_id); CourseError naming the file and the line."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            missing = [c for c in ("id", "name") if c not in (reader.fieldnames or [])]
            if missing:
                raise CourseError(f"{path}: no column {', '.join(missing)}: a roster's first line is "
                                  f"{','.join(ROSTER_COLUMNS)}")
            people = []
            for line, row in enumerate(reader, start=2):
                sid = (row.get("id") or "").strip()
                if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", sid):
                    raise CourseError(f"{path}, line {line}: id {sid!r} is not a student id (letters, digits, "
                                      ". _ -): fix it and collect again")
                people.append(Person(sid, (row.get("name") or "").strip(), (row.get("email") or "").strip(),
                                     (row.get("lms_id") or "").strip()))
    except OSError as error:
        raise CourseError(f"cannot read the roster {path} ({error.strerror}): give --roster a CSV file") from None
    except (UnicodeDecodeError, csv.Error) as error:
        raise CourseError(f"{path} is not a CSV file in UTF-8 ({error}): save the roster as CSV UTF-8") from None
    return people


def write_people(path: Path, people: list[Person]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(ROSTER_COLUMNS)
        for p in sorted(people, key=lambda p: p.id):
            writer.writerow([p.id, p.name, p.email, p.lms_id])


def merge_people(path: Path, people: list[Person]) -> None:
    """Records a roster's people in ``path`` (``ROOT/collected/people.csv``, which export reads):
    a person already there keeps what the roster leaves blank; the others are added."""
    known = {p.id: p for p in (read_people(path) if path.exists() else [])}
    for person in people:
        before = known.get(person.id)
        if before is None:
            known[person.id] = Person(person.id, person.name, person.email, person.lms_id)
        else:
            before.name, before.email = person.name or before.name, person.email or before.email
            before.lms_id = person.lms_id or before.lms_id
    write_people(path, list(known.values()))


def gather(folder: Path, lms: str, times: dict[str, tuple]) -> tuple[dict[str, HandIn], list[str]]:
    """The unpacked download's files by person (the LMS's id), and the files of nobody."""
    collector = Collector(named_regexp=formats.NAMED_REGEXP[lms], valid_ext=[".ipynb", ".npz"])
    people: dict[str, HandIn] = {}
    stray = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = str(path.relative_to(folder))
        if any(part.startswith(".") or part == "__MACOSX" for part in Path(relative).parts):
            continue
        match = collector._match(relative)
        if match is None:
            stray.append(relative)
            continue
        hand_in = people.setdefault(match["student_id"], HandIn(
            match["student_id"], match.get("name") or "", relative[: len(relative) - len(match["file_id"])],
            late=bool(match.get("late"))))
        if collector.collect(relative) is None:
            hand_in.ignored.append(match["file_id"])
            continue
        hand_in.files[match["file_id"]] = path
        hand_in.prefixes[match["file_id"]] = relative[: len(relative) - len(match["file_id"])]
        hand_in.times[match["file_id"]] = times.get(relative)
    return people, stray


def _stem(name: str, suffix: str) -> str:
    """A file's name as the student meant it: 'Copy of 01-ddpg (1).ipynb' -> '01-ddpg'."""
    stem = Path(name).name[: -len(suffix)] if name.lower().endswith(suffix) else Path(name).name
    stem = re.sub(r"^(copy of |copie de )+", "", stem.strip(), flags=re.I)
    stem = re.sub(r"(\s*\(\d+\))+$", "", stem)
    return stem


def _attempt(name: str, base: str, suffix: str) -> int | None:
    """Canvas's numbering of a file handed in again: 01-ddpg.ipynb 0, 01-ddpg-2.ipynb 2."""
    match = re.fullmatch(re.escape(base) + r"(?:-(\d+))?" + re.escape(suffix), Path(name).name)
    return None if match is None else int(match.group(1) or 0)


def choose(names: list[str], base: str, suffix: str, who: str) -> tuple[str | None, list[str]]:
    """The one file of ``names`` that is ``base + suffix``, and the older attempts; BadArchive
    when two could both be it."""
    if not names:
        return None, []
    if len(names) == 1:
        return names[0], []
    candidates = [n for n in names if re.sub(r"[-_]\d+$", "", _stem(n, suffix)) == base or _stem(n, suffix) == base]
    if not candidates:
        candidates = names
    if len(candidates) == 1:
        return candidates[0], []
    attempts = {n: _attempt(n, base, suffix) for n in candidates}
    if all(a is not None for a in attempts.values()) and len(set(attempts.values())) == len(attempts):
        ordered = sorted(candidates, key=lambda n: attempts[n])
        return ordered[-1], ordered[:-1]
    raise BadArchive(f"{who} handed in {len(candidates)} files that could each be {base}{suffix} "
                     f"({', '.join(sorted(candidates))}): ask them which one, remove the others from the download "
                     "and collect again")


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _time(value: tuple | None) -> str:
    return "" if not value else datetime.datetime(*value).isoformat(timespec="seconds")


class People:
    """The LMS's people to the course's student ids: the roster's, or ids made from names and
    recorded in ROOT/collected/people.csv (which the export reads, and which can be the next
    roster)."""

    def __init__(self, root: Path, lms: str, roster: Path | None, unlisted: bool):
        self.lms, self.unlisted, self.roster = lms, unlisted, roster
        self.path = root / COLLECTED / PEOPLE
        self.known = read_people(roster) if roster else (read_people(self.path) if self.path.exists() else [])
        self.added: list[Person] = []

    def _matches(self, hand_in: HandIn) -> list[Person]:
        everyone = self.known + self.added
        if self.lms == formats.CANVAS:  # Moodle's participant ids are the assignment's own: by name only
            by_id = [p for p in everyone if p.lms_id and p.lms_id == hand_in.lms_id]
            if by_id:
                return by_id
        if not hand_in.name:
            return []
        if self.lms == formats.MOODLE:
            return [p for p in everyone if formats.plain(p.name) == formats.plain(hand_in.name)]
        return [p for p in everyone if formats.plain(hand_in.name) in formats.canvas_keys(p.name)]

    def find(self, hand_in: HandIn, archive: str) -> tuple[Person, list[str]]:
        who = f"{hand_in.name or 'anonymous'} ({self.lms} id {hand_in.lms_id})"
        found = self._matches(hand_in)
        if len(found) > 1:
            raise BadArchive(f"{archive}: {who} matches {len(found)} people ({', '.join(p.id for p in found)}) of "
                             f"{shown(self.roster or self.path)}: give each their LMS id (column lms_id) and collect again")
        if found:
            return found[0], []
        if self.roster and not self.unlisted:
            raise BadArchive(f"{archive}: {who} is not on the roster {shown(self.roster)}: add them (id,name,email,"
                             "lms_id) and collect again, or collect with --unlisted to give them an id from their name")
        taken = {p.id for p in self.known + self.added}
        sid = formats.slug(hand_in.name) if hand_in.name else f"{self.lms}-{hand_in.lms_id}"
        if sid in taken:
            sid = f"{sid}-{hand_in.lms_id}"
        person = Person(sid, hand_in.name, "", hand_in.lms_id if self.lms == formats.CANVAS else "")
        self.added.append(person)
        return person, [UNLISTED] if self.roster else []

    def save(self) -> None:
        if self.added:
            existing = read_people(self.path) if self.path.exists() else []
            write_people(self.path, existing + self.added)


def collect(root: Path, archive: Path, lms: str, assignment: str, roster: Path | None = None,
            unlisted: bool = False, max_bytes: int = MAX_BYTES) -> list[Row]:
    """Collects ``archive`` into ``root``; the table's rows. BadArchive (nothing written)
    when the download is refused."""
    if assignment not in assignments():
        raise CourseError(f"no assignment {assignment!r}: the assignments are {', '.join(assignments())}")
    archive = Path(archive).expanduser()
    if not archive.is_file():
        raise CourseError(f"no file {archive}: give collect the zip downloaded from the LMS")
    name = archive.name
    with tempfile.TemporaryDirectory(prefix="collect-") as scratch:
        times = unpack(archive, Path(scratch), max_bytes)
        hand_ins, stray = gather(Path(scratch), lms, times)
        if not hand_ins:
            raise BadArchive(f"{name} holds no file in {lms.capitalize()}'s layout"
                             + (f" (such as {stray[0]})" if stray else "")
                             + f": is it the 'Download all submissions' zip of a {lms.capitalize()} assignment?")
        people = People(root, lms, roster, unlisted)
        plan = []
        # everything is decided first: a refusal leaves the course folder as it was
        for hand_in in sorted(hand_ins.values(), key=lambda h: (h.name, h.lms_id)):
            person, flags = people.find(hand_in, name)
            who = f"{name}: {hand_in.name or person.id} ({lms} id {hand_in.lms_id})"
            notebooks = [f for f in hand_in.files if f.lower().endswith(".ipynb")]
            chosen, older = choose(notebooks, assignment, ".ipynb", who)
            files, notes = {}, []
            if chosen is not None:
                target = f"{assignment}.ipynb"
                if Path(chosen).name != target:
                    flags.append(NORMALISED)
                    notes.append(f"{chosen} -> {target}")
                files[target] = chosen
                results = [f for f in hand_in.files if f.lower().endswith(".npz")]
                kept, _ = choose(results, f"{assignment}-results", ".npz", who) if results else (None, [])
                if kept:
                    files[f"{assignment}-results.npz"] = kept
            notes += [f"older attempt {o} not used" for o in older]
            if hand_in.ignored:
                notes.append(f"ignored: {', '.join(sorted(hand_in.ignored))}")
            handed = max((_time(hand_in.times.get(f)) for f in files.values()), default="")
            if chosen is not None:
                hand_in.prefix = hand_in.prefixes[chosen]
            plan.append((person, hand_in, files, flags, notes, handed, older))
        pids = [p.id for p, *_ in plan]
        twice = sorted({p for p in pids if pids.count(p) > 1})
        if twice:
            raise BadArchive(f"{name}: {', '.join(twice)} would receive two people's hand-ins: give each person "
                             "their own row in the roster (with their LMS id) and collect again")
        return _apply(root, name, lms, assignment, plan, people)


def _apply(root: Path, archive: str, lms: str, assignment: str, plan: list, people: People) -> list[Row]:
    record_path = root / COLLECTED / f"{assignment}.json"
    try:
        record = json.loads(record_path.read_text()) if record_path.exists() else {}
    except ValueError:
        record = {}
    students = record.setdefault("students", {})
    record["lms"] = lms
    stamp = datetime.datetime.now().strftime("%Y%m%dT%H%M%S")
    while any((root / COLLECTED / "kept" / p.id / assignment / stamp).exists() for p, *_ in plan):
        stamp += "-1"
    rows = []
    for person, hand_in, files, flags, notes, handed, older in plan:
        row = Row(person.id, hand_in.name, NOTHING, handed, flags, notes)
        rows.append(row)
        folder = root / "submitted" / person.id / assignment
        entry = {"name": person.name or hand_in.name, "email": person.email, "lms_id": hand_in.lms_id,
                 "prefix": hand_in.prefix, "late": hand_in.late, "handed_in": handed, "archive": archive}
        if not files:
            row.notes.append("no notebook in the hand-in")
            students.setdefault(person.id, {}).update({k: v for k, v in entry.items() if k != "handed_in"})
            continue
        new = {target: _digest(hand_in.files[source]) for target, source in files.items()}
        before = students.get(person.id, {})
        present = sorted(p for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []
        current = {str(p.relative_to(folder)): _digest(p) for p in present}
        kept = root / COLLECTED / "kept" / person.id / assignment / stamp
        if not present:
            row.status = NEW
        elif current == new:
            row.status = UNCHANGED
        elif handed and before.get("handed_in") and handed < before["handed_in"]:
            row.status = OLDER
            kept.mkdir(parents=True, exist_ok=True)
            for target, source in files.items():
                shutil.copyfile(hand_in.files[source], kept / target)
            row.notes.append(f"handed in {handed}, before the one collected ({before['handed_in']}): "
                             f"kept in {shown(kept)}")
            continue
        else:
            row.status = REPLACED
            kept.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(folder), str(kept))
            row.notes.append(f"the previous hand-in kept in {shown(kept)}")
        if row.status != UNCHANGED:
            folder.mkdir(parents=True, exist_ok=True)
            for target, source in files.items():
                shutil.copyfile(hand_in.files[source], folder / target)
        for old in older:
            aside = root / COLLECTED / "kept" / person.id / assignment / f"{stamp}-older"
            aside.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(hand_in.files[old], aside / Path(old).name)
        students[person.id] = {**entry, "files": new}
    people.save()
    record_path.parent.mkdir(parents=True, exist_ok=True)
    temporary = record_path.with_suffix(".tmp")
    temporary.write_text(json.dumps(record, indent=1, sort_keys=True))
    temporary.replace(record_path)
    return rows


def table(rows: list[Row]) -> str:
    """What collect did, one line per person."""
    width = max([len("student")] + [len(inert.text(r.student)) for r in rows])
    name_width = max([len("name in the LMS")] + [len(inert.text(r.name)) for r in rows])
    lines = [f"{'student':{width}}  {'name in the LMS':{name_width}}  {'handed in':19}  status",
             "-" * (width + name_width + 40)]
    for r in rows:
        status = ", ".join([r.status, *r.flags])
        extra = f"  ({'; '.join(r.notes)})" if r.notes else ""
        lines.append(inert.text(f"{r.student:{width}}  {r.name:{name_width}}  {r.handed_in:19}  {status}{extra}"))
    counts = {}
    for r in rows:
        counts[r.status] = counts.get(r.status, 0) + 1
    lines.append(", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
