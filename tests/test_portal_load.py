"""The portal under load, killed mid-way: 50 students hand in 01-ddpg at once (the
sample class's solution, rewrites and bugs, in turn) to a server on 127.0.0.1; when about
half are recorded by the grader, the server and everything it started get SIGKILL; it is
started again. Then every hand-in is graded exactly once (the portal's events: one
``graded`` each), none is lost, each student's page shows their sample's exact scores,
and the course's gradebook and grades/01-ddpg.csv hold the 50. Trusted mode (no sandbox),
to bound it: the sandbox is tested in tests/test_portal_e2e.py. Heavy (about 4 minutes on
two cores; 7.5 minutes measured): run it under ``flock /tmp/heavy.lock``.
"""

from __future__ import annotations

import csv
import os
import shutil
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import sample_class
from conftest import REPO
from portal_client import Student, free_port, sign_in_links, trusted_server

COURSE = "outputs/portal load"
ASSIGNMENT = sample_class.DDPG
#: the class's size (PORTAL_LOAD_SIZE: fewer, to try a change quickly)
CLASS = int(os.environ.get("PORTAL_LOAD_SIZE", 50))
#: the hand-ins: DDPG samples that are graded (the solution, correct rewrites, bugs), in turn
KINDS = [s for s in sample_class.SAMPLES if s.assignment == ASSIGNMENT and s.status == "graded" and not s.blank
         and not s.student.startswith(("bad-", "probe-"))][:8]
LIMIT = 60 + 12 * CLASS  # seconds: a failure, not a slow machine, beyond this


def _database(root):
    return sqlite3.connect(f"file:{root / 'portal' / 'portal.sqlite'}?mode=ro", uri=True, timeout=30)


def _count(root, state: str) -> int:
    with _database(root) as db:
        return db.execute("SELECT COUNT(*) FROM submissions WHERE state = ?", (state,)).fetchone()[0]


def _recorded(root) -> int:
    """Hand-ins whose result the grader has written into the course folder (its feedback page)."""
    return len(list((root / "feedback").glob(f"*/{ASSIGNMENT}/{ASSIGNMENT}.html")))


def _wait(condition, until: float, server, what: str):
    while not condition():
        assert time.monotonic() < until, f"{what}: not within {LIMIT} s\n{server.output()[-3000:]}"
        time.sleep(0.5)


def test_fifty_hand_ins_at_once_and_a_kill_mid_way_each_graded_exactly_once():
    root = REPO / COURSE
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    students = [f"student-{i:02d}" for i in range(CLASS)]
    samples = {s: KINDS[i % len(KINDS)] for i, s in enumerate(students)}
    notebooks = {k.student: sample_class.write_sample(k, root / "samples").read_bytes() for k in KINDS}
    port = free_port()
    signin = sign_in_links(COURSE, students, port)
    start = time.monotonic()
    until = start + LIMIT
    server = trusted_server(COURSE, port, root / "server.log").start()
    try:
        sessions = {s: Student(signin[s]) for s in students}
        posted = time.monotonic()
        with ThreadPoolExecutor(CLASS) as pool:  # all at once
            ids = dict(zip(students, pool.map(
                lambda s: sessions[s].hand_in(ASSIGNMENT, notebooks[samples[s].student]), students)))
        print(f"\n{CLASS} hand-ins received in {time.monotonic() - posted:.1f} s")
        assert len(set(ids.values())) == CLASS
        half = CLASS // 2 - CLASS // 10  # recorded by the grader (its pages) or graded in the portal
        _wait(lambda: _recorded(root) + _count(root, "graded") >= half or _count(root, "graded") >= CLASS,
              until, server, "half of them graded")
        killed_at = (_recorded(root), _count(root, "graded"))
        server.kill()
        print(f"killed at {time.monotonic() - start:.1f} s: {killed_at[0]} recorded by the grader, "
              f"{killed_at[1]} graded in the portal")
        assert killed_at[1] < CLASS, "all were graded before the kill: nothing was tested"
        server.start()
        _wait(lambda: _count(root, "graded") + _count(root, "failed") >= CLASS, until, server, "all graded")
        elapsed = time.monotonic() - start
        print(f"{CLASS} hand-ins graded in {elapsed:.1f} s (server start, upload, kill and restart included)")
        with _database(root) as db:
            states = dict(db.execute("SELECT id, state FROM submissions").fetchall())
            graded_events = dict(db.execute(
                "SELECT submission, COUNT(*) FROM events WHERE state = 'graded' GROUP BY submission").fetchall())
            requeued = db.execute("SELECT COUNT(*) FROM events WHERE note LIKE 'queued again%'").fetchone()[0]
        assert sorted(states) == sorted(ids.values()), "a hand-in lost or one too many"
        assert set(states.values()) == {"graded"}, server.output()[-3000:]
        assert all(graded_events.get(i) == 1 for i in ids.values()), \
            {i: n for i, n in graded_events.items() if n != 1}
        assert requeued >= 1, "the kill left nothing to grade again: the restart was not tested"
        maxima = sample_class.max_scores(ASSIGNMENT)
        for student in students:
            state, scores, _ = sessions[student].status(ids[student])
            assert (state, scores) == ("graded", sample_class.expected_scores(samples[student], maxima)), student
        with (root / "grades" / f"{ASSIGNMENT}.csv").open(newline="") as f:
            rows = list(csv.DictReader(f))
        assert sorted(r["student"] for r in rows) == students and {r["status"] for r in rows} == {"graded"}
        with sqlite3.connect(root / "gradebook.db") as db:
            assert db.execute("SELECT COUNT(*) FROM submitted_assignment s JOIN assignment a "
                              "ON s.assignment_id = a.id WHERE a.name = ?", (ASSIGNMENT,)).fetchone()[0] == CLASS
        for session in sessions.values():
            session.close()
    finally:
        server.stop()
