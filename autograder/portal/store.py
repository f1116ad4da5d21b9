"""The portal's state: a SQLite database in the course folder, ``ROOT/portal/portal.sqlite``
(not nbgrader's gradebook, which the grading driver alone writes).

Students and their tokens
    A token is ``<student>.<secret>``, the secret from ``secrets.token_urlsafe``; only the
    secret's SHA-256 is stored, and a presented token is checked with
    ``hmac.compare_digest`` (also when the student is unknown or has no token, against a
    stand-in, so that the time taken says nothing). Revoking clears the hash.

Submissions and their states::

    received --(its files are on disk)--> queued --(claim)--> grading --> graded
        |                                    ^                   |    \\-> failed
        \\--(crash before the files were      \\--(crash: recover)-/
             on disk: recover)--> failed

    Every change of state is one transaction, and appends a row to ``events``. ``claim``
    takes queued submissions in one ``BEGIN IMMEDIATE`` transaction, so that two
    connections (two threads, two processes) never claim the same one; it records who
    claimed it (a ``run``: one per server process) and counts the attempt. ``finish``
    records a result only for the run that holds the claim, so that a result that comes
    back after its run was declared dead is refused: a submission is graded (its result
    recorded) exactly once. ``recover``, when a server starts, puts back in the queue what
    a dead run had claimed (up to ``MAX_ATTEMPTS`` claims; then it is failed, with why).

Rate limit
    At most ``Limit.count`` submissions per student per assignment within ``Limit.window``
    seconds; a submission failed before it was ever claimed (an upload cut by a crash)
    does not count. The refusal says when the next one is allowed. It is checked in the
    transaction that records the submission, so two uploads at once cannot both pass.

Times are seconds since the epoch (``time.time()``), given by the caller (the tests give
their own clock).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import secrets
import sqlite3
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from autograder.course import CourseError

#: the database, in the course folder
DATABASE = Path("portal") / "portal.sqlite"
#: each hand-in's files, ROOT/portal/uploads/<id>/ (<id>.part/ while they are written)
UPLOADS = Path("portal") / "uploads"
#: each graded hand-in's feedback page, ROOT/portal/feedback/<id>.html (the course's feedback/ holds the latest)
FEEDBACK = Path("portal") / "feedback"
RECEIVED, QUEUED, GRADING, GRADED, FAILED = "received", "queued", "grading", "graded", "failed"
STATES = (RECEIVED, QUEUED, GRADING, GRADED, FAILED)
#: claims of a submission after which a crash fails it instead of queueing it again
MAX_ATTEMPTS = 3
#: a student id, as the roster's (``autograder.lms.collect.read_people``)
STUDENT_ID = r"[A-Za-z0-9][A-Za-z0-9._-]*"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS students (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL DEFAULT '',
    token_hash TEXT,              -- hex SHA-256 of the token's secret; NULL: no valid token
    token_issued REAL
);
CREATE TABLE IF NOT EXISTS instructors (
    id TEXT PRIMARY KEY,          -- INSTRUCTOR: one instructor token per course folder
    token_hash TEXT,
    token_issued REAL
);
CREATE TABLE IF NOT EXISTS submissions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    student TEXT NOT NULL REFERENCES students(id),
    assignment TEXT NOT NULL,
    received_at REAL NOT NULL,
    state TEXT NOT NULL CHECK (state IN ({', '.join(repr(s) for s in STATES)})),
    attempts INTEGER NOT NULL DEFAULT 0,   -- how many times it was claimed
    run TEXT,                              -- the run that holds the claim
    claimed_at REAL,
    finished_at REAL,
    result TEXT,                           -- JSON: scores, status, notes (graded)
    reason TEXT                            -- why it failed
);
CREATE INDEX IF NOT EXISTS submissions_by_state ON submissions (state, id);
CREATE INDEX IF NOT EXISTS submissions_by_student ON submissions (student, assignment, received_at);
CREATE TABLE IF NOT EXISTS events (
    submission INTEGER NOT NULL REFERENCES submissions(id),
    at REAL NOT NULL,
    state TEXT NOT NULL,
    run TEXT,
    note TEXT
);
"""
#: the instructor's token is ``_instructor.<secret>``: no student id starts with "_"
INSTRUCTOR = "_instructor"
#: compared against when a token names nobody, so that the check takes the same time
_STAND_IN = hashlib.sha256(b"no such token").hexdigest()


@dataclass(frozen=True)
class Limit:
    count: int = 3
    window: float = 3600.0


@dataclass(frozen=True)
class Submission:
    id: int
    student: str
    assignment: str
    received_at: float
    state: str
    attempts: int
    run: str | None
    result: dict | None
    reason: str | None


class RateLimited(CourseError):
    def __init__(self, student: str, assignment: str, limit: Limit, next_allowed: float):
        self.next_allowed = next_allowed
        super().__init__(f"{student} handed in {assignment} {limit.count} times in the last "
                         f"{limit.window / 60:g} minutes: the next hand-in is allowed at {next_allowed:.0f}")


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def _row(row: sqlite3.Row) -> Submission:
    return Submission(row["id"], row["student"], row["assignment"], row["received_at"], row["state"],
                      row["attempts"], row["run"], json.loads(row["result"]) if row["result"] else None,
                      row["reason"])


class Store:
    """One connection to the portal's database (one per thread or process)."""

    def __init__(self, path: Path, run: str | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        #: this process's run: what its claims are recorded under
        self.run = run or secrets.token_hex(8)
        try:
            # isolation_level=None: no implicit transactions, each one is begun here
            self.db = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self.db.row_factory = sqlite3.Row
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA foreign_keys=ON")
            self.db.execute("PRAGMA synchronous=FULL")
            with self.transaction() as db:
                for statement in _statements(SCHEMA):
                    db.execute(statement)
        except sqlite3.DatabaseError as error:
            raise CourseError(f"{self.path}: not the portal's database ({error}): move it aside, the portal "
                              "starts a new one") from None

    @classmethod
    def of(cls, root: Path, run: str | None = None) -> Store:
        return cls(Path(root) / DATABASE, run)

    def close(self) -> None:
        self.db.close()

    @contextmanager
    def transaction(self):
        """A write transaction that holds SQLite's write lock from its first statement."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- students and tokens ------------------------------------------------------------

    def add_students(self, people: list[tuple[str, str]]) -> None:
        """Adds (id, name) pairs; a known student keeps their token, their name is updated."""
        with self.transaction() as db:
            for sid, name in people:
                db.execute("INSERT INTO students (id, name) VALUES (?, ?) "
                           "ON CONFLICT (id) DO UPDATE SET name = excluded.name", (sid, name))

    def students(self) -> list[sqlite3.Row]:
        return self.db.execute("SELECT id, name, token_hash IS NOT NULL AS has_token FROM students "
                               "ORDER BY id").fetchall()

    def issue_token(self, student: str, now: float) -> str | None:
        """A new token for ``student``, or None when they hold one already (revoke it first)."""
        secret = secrets.token_urlsafe(32)
        with self.transaction() as db:
            row = db.execute("SELECT token_hash FROM students WHERE id = ?", (student,)).fetchone()
            if row is None:
                raise CourseError(f"no student {student!r} in the portal: add them to the roster and run "
                                  "`portal tokens` again")
            if row["token_hash"] is not None:
                return None
            db.execute("UPDATE students SET token_hash = ?, token_issued = ? WHERE id = ?",
                       (_hash(secret), now, student))
        return f"{student}.{secret}"

    def revoke(self, student: str) -> bool:
        """Invalidates ``student``'s token; False when they had none."""
        with self.transaction() as db:
            row = db.execute("SELECT token_hash FROM students WHERE id = ?", (student,)).fetchone()
            if row is None:
                known = [r["id"] for r in db.execute("SELECT id FROM students ORDER BY id LIMIT 5")]
                raise CourseError(f"no student {student!r} in the portal (its students include "
                                  f"{', '.join(known) or 'nobody yet'}): give a roster id")
            db.execute("UPDATE students SET token_hash = NULL, token_issued = NULL WHERE id = ?", (student,))
        return row["token_hash"] is not None

    def authenticate(self, token: str) -> str | None:
        """The student whose token this is, or None. Constant time in the secret."""
        student, _, secret = str(token).rpartition(".")
        row = self.db.execute("SELECT token_hash FROM students WHERE id = ?", (student,)).fetchone()
        stored = row["token_hash"] if row is not None and row["token_hash"] is not None else None
        matches = hmac.compare_digest(_hash(secret), stored or _STAND_IN)
        return student if matches and stored is not None and secret else None

    def sign_in(self, token: str) -> tuple[str | None, float | None]:
        """(student, when their token was issued) for a valid token; (None, None) otherwise.
        A session records the issue time: revoking or issuing anew ends it."""
        student = self.authenticate(token)
        if student is None:
            return None, None
        return student, self.db.execute("SELECT token_issued FROM students WHERE id = ?", (student,)).fetchone()[0]

    def session_valid(self, student: str, issued: str) -> bool:
        """Whether a session of ``student`` made from the token issued at ``issued`` still holds."""
        row = self.db.execute("SELECT token_issued FROM students WHERE id = ? AND token_hash IS NOT NULL",
                              (student,)).fetchone()
        return row is not None and repr(row[0]) == issued

    # -- the instructor's token (its own table: a student's token never opens it) ----------

    def issue_instructor_token(self, now: float) -> str | None:
        """The instructor's new token, or None when one is held (revoke it first)."""
        secret = secrets.token_urlsafe(32)
        with self.transaction() as db:
            row = db.execute("SELECT token_hash FROM instructors WHERE id = ?", (INSTRUCTOR,)).fetchone()
            if row is not None and row["token_hash"] is not None:
                return None
            db.execute("INSERT INTO instructors (id, token_hash, token_issued) VALUES (?, ?, ?) ON CONFLICT (id) "
                       "DO UPDATE SET token_hash = excluded.token_hash, token_issued = excluded.token_issued",
                       (INSTRUCTOR, _hash(secret), now))
        return f"{INSTRUCTOR}.{secret}"

    def revoke_instructor(self) -> bool:
        """Invalidates the instructor's token (and their sessions); False when none was held."""
        with self.transaction() as db:
            changed = db.execute("UPDATE instructors SET token_hash = NULL, token_issued = NULL "
                                 "WHERE id = ? AND token_hash IS NOT NULL", (INSTRUCTOR,)).rowcount
        return bool(changed)

    def instructor_sign_in(self, token: str) -> float | None:
        """When the instructor's token was issued, if ``token`` is it; None otherwise.
        Constant time in the secret (``hmac.compare_digest``, a stand-in when none is held)."""
        name, _, secret = str(token).rpartition(".")
        row = self.db.execute("SELECT token_hash, token_issued FROM instructors WHERE id = ?",
                              (INSTRUCTOR,)).fetchone()
        stored = row["token_hash"] if row is not None else None
        matches = hmac.compare_digest(_hash(secret), stored or _STAND_IN)
        return row["token_issued"] if matches and stored is not None and secret and name == INSTRUCTOR else None

    def instructor_session_valid(self, issued: str) -> bool:
        row = self.db.execute("SELECT token_issued FROM instructors WHERE id = ? AND token_hash IS NOT NULL",
                              (INSTRUCTOR,)).fetchone()
        return row is not None and repr(row[0]) == issued

    def secret(self, key: str, make) -> str:
        """A server secret kept in the database (made once by ``make()``)."""
        with self.transaction() as db:
            row = db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
            if row is not None:
                return row[0]
            value = make()
            db.execute("INSERT INTO meta (key, value) VALUES (?, ?)", (key, value))
        return value

    # -- submissions --------------------------------------------------------------------

    def next_allowed(self, student: str, assignment: str, now: float, limit: Limit) -> float | None:
        """When ``student`` may hand in ``assignment`` again; None: now."""
        return self._next_allowed(self.db, student, assignment, now, limit)

    @staticmethod
    def _next_allowed(db, student, assignment, now, limit: Limit) -> float | None:
        recent = [r["received_at"] for r in db.execute(
            "SELECT received_at FROM submissions WHERE student = ? AND assignment = ? AND received_at > ? "
            "AND NOT (state = ? AND attempts = 0) ORDER BY received_at DESC",
            (student, assignment, now - limit.window, FAILED))]
        if len(recent) < limit.count:
            return None
        return recent[limit.count - 1] + limit.window

    def receive(self, student: str, assignment: str, now: float, limit: Limit) -> int:
        """Records a hand-in as ``received`` (its files are written next, then ``queue``);
        its id. RateLimited when the student has used their hand-ins for the window."""
        with self.transaction() as db:
            after = self._next_allowed(db, student, assignment, now, limit)
            if after is not None:
                raise RateLimited(student, assignment, limit, after)
            cursor = db.execute("INSERT INTO submissions (student, assignment, received_at, state) "
                                "VALUES (?, ?, ?, ?)", (student, assignment, now, RECEIVED))
            self._event(db, cursor.lastrowid, now, RECEIVED)
        return cursor.lastrowid

    def queue(self, submission: int, now: float) -> None:
        """received -> queued, once the submission's files are on disk."""
        with self.transaction() as db:
            self._move(db, submission, RECEIVED, QUEUED, now)

    def claim(self, now: float, limit: int | None = None) -> list[Submission]:
        """Takes queued submissions for this run (oldest first, at most one per student and
        assignment: their folder in submitted/ holds one hand-in at a time): queued ->
        grading. Two connections never claim the same submission."""
        with self.transaction() as db:
            rows = db.execute(
                "SELECT id FROM submissions AS s WHERE state = ? AND NOT EXISTS ("
                "  SELECT 1 FROM submissions AS o WHERE o.student = s.student AND o.assignment = s.assignment"
                "  AND (o.state = ? OR (o.state = ? AND o.id < s.id))) ORDER BY id",
                (QUEUED, GRADING, QUEUED)).fetchall()
            ids = []
            for row in rows[:limit]:
                if db.execute("UPDATE submissions SET state = ?, run = ?, claimed_at = ?, attempts = attempts + 1 "
                              "WHERE id = ? AND state = ?", (GRADING, self.run, now, row["id"], QUEUED)).rowcount:
                    self._event(db, row["id"], now, GRADING)
                    ids.append(row["id"])
        return [self.get(i) for i in ids]

    def finish(self, submission: int, now: float, result: dict | None = None, reason: str | None = None) -> bool:
        """grading -> graded (a ``result``) or failed (a ``reason``), only if this run still
        holds the claim; False (nothing changed) for a result that comes too late."""
        state = GRADED if reason is None else FAILED
        with self.transaction() as db:
            changed = db.execute(
                "UPDATE submissions SET state = ?, finished_at = ?, result = ?, reason = ? "
                "WHERE id = ? AND state = ? AND run = ?",
                (state, now, None if result is None else json.dumps(result), reason, submission, GRADING,
                 self.run)).rowcount
            if changed:
                self._event(db, submission, now, state, reason)
        return bool(changed)

    def recover(self, now: float, complete=lambda submission: True) -> list[Submission]:
        """At start-up: what other runs claimed goes back to the queue (or fails after
        MAX_ATTEMPTS claims), and a hand-in left ``received`` is queued when
        ``complete(id)`` says its files are all on disk, failed otherwise. The submissions
        changed."""
        changed = []
        with self.transaction() as db:
            for row in db.execute("SELECT * FROM submissions WHERE state IN (?, ?) AND "
                                  "(state = ? OR run IS NOT ?) ORDER BY id",
                                  (RECEIVED, GRADING, RECEIVED, self.run)).fetchall():
                if row["state"] == RECEIVED:
                    if complete(row["id"]):
                        self._move(db, row["id"], RECEIVED, QUEUED, now, "queued after a restart")
                    else:
                        self._fail(db, row["id"], RECEIVED, now, "the upload was cut by a restart of the portal: "
                                                                "hand in again (it does not count)")
                elif row["attempts"] >= MAX_ATTEMPTS:
                    self._fail(db, row["id"], GRADING, now, f"the portal stopped {row['attempts']} times while "
                                                           "grading it: the instructor was told")
                else:
                    db.execute("UPDATE submissions SET state = ?, run = NULL WHERE id = ? AND state = ?",
                               (QUEUED, row["id"], GRADING))
                    self._event(db, row["id"], now, QUEUED, f"queued again: run {row['run']} stopped")
                changed.append(row["id"])
        return [self.get(i) for i in changed]

    def get(self, submission: int) -> Submission:
        row = self.db.execute("SELECT * FROM submissions WHERE id = ?", (submission,)).fetchone()
        if row is None:
            raise KeyError(submission)
        return _row(row)

    def of_student(self, student: str, submission: int) -> Submission | None:
        """A submission if it is ``student``'s; None otherwise (another's looks like none)."""
        row = self.db.execute("SELECT * FROM submissions WHERE id = ? AND student = ?",
                              (submission, student)).fetchone()
        return None if row is None else _row(row)

    def submissions(self, student: str | None = None) -> list[Submission]:
        query, args = "SELECT * FROM submissions", ()
        if student is not None:
            query, args = query + " WHERE student = ?", (student,)
        return [_row(r) for r in self.db.execute(query + " ORDER BY id", args)]

    def position(self, submission: int) -> int | None:
        """How many queued submissions are ahead of this queued one (0: next); None when it is not queued."""
        row = self.db.execute("SELECT state FROM submissions WHERE id = ?", (submission,)).fetchone()
        if row is None or row["state"] != QUEUED:
            return None
        return self.db.execute("SELECT COUNT(*) FROM submissions WHERE state = ? AND id < ?",
                               (QUEUED, submission)).fetchone()[0]

    def events(self, submission: int) -> list[tuple[str, str | None]]:
        return [(r["state"], r["note"]) for r in self.db.execute(
            "SELECT state, note FROM events WHERE submission = ? ORDER BY rowid", (submission,))]

    def _move(self, db, submission: int, old: str, new: str, now: float, note: str | None = None) -> None:
        if not db.execute("UPDATE submissions SET state = ? WHERE id = ? AND state = ?",
                          (new, submission, old)).rowcount:
            raise CourseError(f"submission {submission} is not {old}: it cannot become {new}")
        self._event(db, submission, now, new, note)

    def _fail(self, db, submission: int, old: str, now: float, reason: str) -> None:
        db.execute("UPDATE submissions SET state = ?, finished_at = ?, reason = ? WHERE id = ? AND state = ?",
                   (FAILED, now, reason, submission, old))
        self._event(db, submission, now, FAILED, reason)

    def _event(self, db, submission: int, now: float, state: str, note: str | None = None) -> None:
        db.execute("INSERT INTO events (submission, at, state, run, note) VALUES (?, ?, ?, ?, ?)",
                   (submission, now, state, self.run, note))


def _statements(script: str) -> list[str]:
    """The statements of a script without comments (executescript would commit the transaction)."""
    lines = [line.split("--")[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
