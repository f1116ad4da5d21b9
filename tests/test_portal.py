"""The submission portal's state (autograder/portal/store.py) and its token commands. Fast:
no grading, no server; two connections stand for two threads or processes."""

from __future__ import annotations

import datetime
import hashlib
import multiprocessing
import re
import sqlite3
import subprocess
import threading
import time
from pathlib import Path

import pytest

from autograder.course import CourseError
from autograder.portal import store
from autograder.portal.store import FAILED, GRADED, GRADING, QUEUED, RECEIVED, Limit, RateLimited, Store

REPO = Path(__file__).resolve().parent.parent
LOOSE = Limit(count=1000, window=3600)


@pytest.fixture
def db(tmp_path):
    s = Store.of(tmp_path, run="first")
    s.add_students([("alice", "Alice A"), ("bob", "Bob B")])
    yield s
    s.close()


def _queued(s: Store, n: int, now: float = 100.0) -> list[int]:
    ids = []
    for i in range(n):
        sid = s.receive(f"student{i}", "01-ddpg", now, LOOSE)
        s.queue(sid, now)
        ids.append(sid)
    return ids


def _claim_all(path: str, run: str, out) -> None:
    s = Store(Path(path), run=run)
    mine = []
    while True:
        got = s.claim(now=200.0, limit=1)
        if not got:
            break
        mine += [g.id for g in got]
    out.put(mine)


def test_two_processes_never_claim_the_same_submission(tmp_path):
    s = Store.of(tmp_path, run="setup")
    s.add_students([(f"student{i}", "") for i in range(120)])
    ids = _queued(s, 120)
    out = multiprocessing.get_context("spawn").Queue()
    workers = [multiprocessing.get_context("spawn").Process(target=_claim_all, args=(str(s.path), f"run{k}", out))
               for k in range(3)]
    for w in workers:
        w.start()
    claimed = [out.get(timeout=60) for _ in workers]
    for w in workers:
        w.join(timeout=30)
    together = [i for c in claimed for i in c]
    assert sorted(together) == ids  # every one claimed, none twice
    assert all(s.get(i).attempts == 1 and s.get(i).state == GRADING for i in ids)
    assert {s.get(i).run for i in ids} <= {"run0", "run1", "run2"}


def test_a_claim_waits_for_another_claimers_transaction_and_does_not_take_its_submission(tmp_path, db):
    """Deterministic: another connection is between reading a queued submission and marking
    it claimed; a claim now must wait (not read the old state), then find nothing."""
    (sid,) = _queued_for(db, "alice")
    other = sqlite3.connect(db.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    other.execute("UPDATE submissions SET state = 'grading', run = 'other' WHERE id = ?", (sid,))
    got = []
    claimer = threading.Thread(target=lambda: got.append(db.claim(now=110)))
    claimer.start()
    claimer.join(timeout=0.5)
    assert claimer.is_alive() and got == []  # waiting for the write lock
    other.execute("COMMIT")
    claimer.join(timeout=30)
    assert got == [[]]
    assert db.get(sid).run == "other" and db.get(sid).attempts == 0


def test_a_claim_is_exclusive_and_only_its_holder_records_the_result(tmp_path, db):
    (sid,) = _queued_for(db, "alice")
    other = Store.of(tmp_path, run="second")  # a second connection, another run
    assert [c.id for c in db.claim(now=110)] == [sid]
    assert other.claim(now=111) == []  # already taken
    assert other.finish(sid, now=120, result={"score": 1}) is False  # not its claim: refused, nothing changed
    assert db.get(sid).state == GRADING
    assert db.finish(sid, now=121, result={"score": 9}) is True
    assert db.finish(sid, now=122, result={"score": 7}) is False  # recorded once
    assert db.get(sid).result == {"score": 9} and db.get(sid).state == GRADED
    assert [e for e, _ in db.events(sid)] == [RECEIVED, QUEUED, GRADING, GRADED]


def _queued_for(s: Store, student: str, now: float = 100.0, assignment: str = "01-ddpg") -> list[int]:
    sid = s.receive(student, assignment, now, LOOSE)
    s.queue(sid, now)
    return [sid]


def test_one_submission_per_student_and_assignment_is_graded_at_a_time(db):
    first = _queued_for(db, "alice", 100)[0]
    second = _queued_for(db, "alice", 101)[0]
    other = _queued_for(db, "alice", 102, assignment="02-td3")[0]
    bob = _queued_for(db, "bob", 103)[0]
    assert [c.id for c in db.claim(now=110)] == [first, other, bob]
    assert db.position(second) == 0
    assert db.claim(now=111) == []  # alice's 01-ddpg is still being graded
    db.finish(first, now=112, result={})
    assert [c.id for c in db.claim(now=113)] == [second]


def test_a_crash_between_claim_and_result_queues_it_again_and_it_is_graded_once(tmp_path, db):
    (sid,) = _queued_for(db, "alice")
    db.claim(now=110)
    db.close()  # the server dies: no result
    restarted = Store.of(tmp_path, run="second")
    assert [s.id for s in restarted.recover(now=130)] == [sid]
    assert restarted.get(sid).state == QUEUED and restarted.get(sid).run is None
    assert [c.id for c in restarted.claim(now=131)] == [sid]
    assert restarted.get(sid).attempts == 2
    late = Store.of(tmp_path, run="first")  # the dead run's result arrives after all
    assert late.finish(sid, now=140, result={"score": 1}) is False
    assert restarted.finish(sid, now=141, result={"score": 2}) is True
    assert restarted.recover(now=150) == []  # nothing left to recover
    states = [e for e, _ in restarted.events(sid)]
    assert states == [RECEIVED, QUEUED, GRADING, QUEUED, GRADING, GRADED]
    assert restarted.get(sid).result == {"score": 2}


def test_a_submission_whose_grading_crashes_the_portal_every_time_is_failed(tmp_path, db):
    (sid,) = _queued_for(db, "alice")
    for k in range(store.MAX_ATTEMPTS):
        run = Store.of(tmp_path, run=f"run{k}")
        run.recover(now=120 + k)
        assert [c.id for c in run.claim(now=121 + k)] == [sid]
    last = Store.of(tmp_path, run="last")
    last.recover(now=200)
    assert last.get(sid).state == FAILED
    assert "stopped 3 times" in last.get(sid).reason


def test_an_upload_cut_by_a_crash_fails_and_does_not_count(tmp_path, db):
    done = db.receive("alice", "01-ddpg", 100, Limit(2, 3600))
    cut = db.receive("alice", "01-ddpg", 101, Limit(2, 3600))
    restarted = Store.of(tmp_path, run="second")
    restarted.recover(now=110, complete=lambda i: i == done)
    assert restarted.get(done).state == QUEUED
    assert restarted.get(cut).state == FAILED and "hand in again" in restarted.get(cut).reason
    # the cut one does not count: a second hand-in is allowed
    assert restarted.next_allowed("alice", "01-ddpg", 111, Limit(2, 3600)) is None


def test_the_rate_limit_says_when_the_next_hand_in_is_allowed(db):
    limit = Limit(count=2, window=3600)
    db.receive("alice", "01-ddpg", 0, limit)
    db.receive("alice", "01-ddpg", 10, limit)
    with pytest.raises(RateLimited) as refused:
        db.receive("alice", "01-ddpg", 20, limit)
    assert refused.value.next_allowed == 3600  # the older of the two leaves the window
    assert db.next_allowed("alice", "01-ddpg", 20, limit) == 3600
    db.receive("alice", "02-td3", 20, limit)  # another assignment: its own count
    db.receive("bob", "01-ddpg", 20, limit)  # another student: theirs
    db.receive("alice", "01-ddpg", 3601, limit)
    with pytest.raises(RateLimited) as refused:
        db.receive("alice", "01-ddpg", 3602, limit)
    assert refused.value.next_allowed == 3610
    assert len([s for s in db.submissions("alice") if s.assignment == "01-ddpg"]) == 3  # the refused are not recorded


def test_tokens_are_stored_hashed_never_in_clear(tmp_path, db):
    token = db.issue_token("alice", now=1)
    student, _, secret = token.rpartition(".")
    assert student == "alice" and len(secret) >= 40
    assert db.authenticate(token) == "alice"
    db.close()
    stored = b"".join(p.read_bytes() for p in (tmp_path / "portal").iterdir())
    assert secret.encode() not in stored
    assert hashlib.sha256(secret.encode()).hexdigest().encode() in stored
    hashes = [r[0] for r in sqlite3.connect(tmp_path / store.DATABASE).execute("SELECT token_hash FROM students")]
    assert secret not in hashes and token not in hashes


def test_a_token_is_checked_in_constant_time(monkeypatch, db):
    token = db.issue_token("alice", now=1)
    calls = []
    real = store.hmac.compare_digest

    def spy(a, b):
        calls.append((a, b))
        return real(a, b)

    monkeypatch.setattr(store.hmac, "compare_digest", spy)
    assert db.authenticate(token) == "alice"
    assert db.authenticate(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert db.authenticate("bob." + token.rpartition(".")[2]) is None  # bob has no token
    assert db.authenticate("nobody.x") is None and db.authenticate("") is None
    assert len(calls) == 5  # every check, even of an unknown student, compares


def test_the_instructors_token_is_hashed_checked_in_constant_time_and_opens_no_student_session(monkeypatch, db):
    token = db.issue_instructor_token(now=5)
    name, _, secret = token.rpartition(".")
    assert name == store.INSTRUCTOR and len(secret) >= 40
    assert db.issue_instructor_token(now=6) is None  # held: printed once, revoke first
    hashes = [tuple(r) for r in sqlite3.connect(db.path).execute("SELECT token_hash FROM instructors")]
    assert hashes == [(hashlib.sha256(secret.encode()).hexdigest(),)]
    calls = []
    real = store.hmac.compare_digest
    monkeypatch.setattr(store.hmac, "compare_digest", lambda a, b: calls.append(1) or real(a, b))
    assert db.instructor_sign_in(token) == 5
    assert db.instructor_sign_in(token[:-1] + ("A" if token[-1] != "A" else "B")) is None
    assert db.instructor_sign_in("alice." + secret) is None  # the secret under another name
    assert db.authenticate(token) is None and db.sign_in(token) == (None, None)  # not a student's token
    assert len(calls) == 5  # every check compares
    alice = db.issue_token("alice", now=1)
    assert db.instructor_sign_in(alice) is None and db.instructor_sign_in("_instructor." + alice.split(".")[1]) is None
    assert db.revoke_instructor() is True and db.instructor_sign_in(token) is None
    assert db.revoke_instructor() is False and db.issue_instructor_token(now=7) is not None


def test_revoking_a_token_and_issuing_another(db):
    token = db.issue_token("alice", now=1)
    assert db.issue_token("alice", now=2) is None  # one at a time: it cannot be shown again
    assert db.revoke("alice") is True
    assert db.authenticate(token) is None
    assert db.revoke("alice") is False
    new = db.issue_token("alice", now=3)
    assert new != token and db.authenticate(new) == "alice" and db.authenticate(token) is None
    with pytest.raises(CourseError, match="no student 'carol'"):
        db.revoke("carol")


def test_a_student_sees_only_their_own_submissions(db):
    (sid,) = _queued_for(db, "alice")
    assert db.of_student("alice", sid).id == sid
    assert db.of_student("bob", sid) is None


def test_tokens_and_revoke_from_the_command_line(tmp_path, capsys):
    from autograder.cli import main

    def _cli(*args) -> subprocess.CompletedProcess:
        code = main(list(args))
        out, err = capsys.readouterr()
        return subprocess.CompletedProcess(args, code, out, err)

    roster = tmp_path / "roster.csv"
    roster.write_text("id,name,email,lms_id\nalice,Alice A,a@x,\nbob,Bob B,b@x,\n")
    (tmp_path / "submitted").mkdir()
    first = _cli("portal", "tokens", "--root", str(tmp_path), "--roster", str(roster),
                 "--url", "https://grader.example.org/rl")
    assert first.returncode == 0, first.stderr
    links = {line.split()[0]: line.split()[1] for line in first.stdout.splitlines() if "https://" in line}
    assert set(links) == {"alice", "bob"}
    assert links["alice"].startswith("https://grader.example.org/rl/signin/alice.")
    check = Store.of(tmp_path)
    assert check.authenticate(links["alice"].rpartition("/")[2]) == "alice"
    again = _cli("portal", "tokens", "--root", str(tmp_path), "--roster", str(roster))
    assert again.returncode == 0 and "https://" not in again.stdout and "http://" not in again.stdout
    assert "2 students already hold a token" in again.stdout
    revoked = _cli("portal", "revoke", "bob", "--root", str(tmp_path))
    assert revoked.returncode == 0 and "revoked bob's token" in revoked.stdout
    assert check.authenticate(links["bob"].rpartition("/")[2]) is None
    reissued = _cli("portal", "tokens", "--root", str(tmp_path), "--roster", str(roster))
    assert [line.split()[0] for line in reissued.stdout.splitlines() if "http://" in line] == ["bob"]
    unknown = _cli("portal", "revoke", "carol", "--root", str(tmp_path))
    assert unknown.returncode == 1 and unknown.stderr.startswith("error: no student 'carol'")
    assert "Traceback" not in unknown.stderr and len(unknown.stderr.splitlines()) == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("who,name\nalice,A\n")
    refused = _cli("portal", "tokens", "--root", str(tmp_path), "--roster", str(bad))
    assert refused.returncode == 1 and "no column id" in refused.stderr and "Traceback" not in refused.stderr
    teacher = _cli("portal", "tokens", "--instructor", "--root", str(tmp_path), "--url", "https://g.example.org/rl")
    (line,) = teacher.stdout.splitlines()
    link = line.split()[1]
    assert teacher.returncode == 0 and link.startswith("https://g.example.org/rl/instructor/signin/_instructor.")
    assert check.instructor_sign_in(link.rpartition("/")[2]) is not None
    twice = _cli("portal", "tokens", "--instructor", "--root", str(tmp_path))
    assert "https://" not in twice.stdout and "the instructor already holds a token" in twice.stdout
    assert "revoked the instructor's token" in _cli("portal", "revoke", "--instructor", "--root", str(tmp_path)).stdout
    assert check.instructor_sign_in(link.rpartition("/")[2]) is None
    nobody = _cli("portal", "revoke", "--root", str(tmp_path))
    assert nobody.returncode == 1 and nobody.stderr == "error: portal revoke: give the STUDENT whose token to " \
        "revoke, or --instructor\n"


# -- the server: each refusal exact ----------------------------------------------------

import shutil  # noqa: E402
import tempfile  # noqa: E402
import urllib.parse  # noqa: E402

from tornado.testing import AsyncHTTPTestCase  # noqa: E402

from autograder.portal.server import Portal  # noqa: E402


def _multipart(fields: dict[str, str], files: dict[str, tuple[str, bytes]]) -> tuple[str, bytes]:
    boundary = "----portal-test-boundary"
    parts = []
    for name, value in fields.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode())
    for name, (filename, data) in files.items():
        parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
                     f'Content-Type: application/octet-stream\r\n\r\n'.encode() + data + b"\r\n")
    return f"multipart/form-data; boundary={boundary}", b"".join(parts) + f"--{boundary}--\r\n".encode()


class TestServer(AsyncHTTPTestCase):
    def setUp(self):
        self.root = Path(tempfile.mkdtemp(prefix="portal-"))
        self.portal = Portal(self.root, Limit(count=2, window=3600), max_upload=4096, names=["01-ddpg", "02-td3", "03-experiment"])
        db = self.portal.store()
        db.add_students([("alice", "Alice"), ("bob", "Bob")])
        self.tokens = {s: db.issue_token(s, now=time.time()) for s in ("alice", "bob")}
        super().setUp()

    def tearDown(self):
        super().tearDown()
        shutil.rmtree(self.root, ignore_errors=True)

    def get_app(self):
        return self.portal.application()

    def session(self, student: str) -> dict[str, str]:
        """Signs in with the link; the cookies and the form's XSRF value of the student's page."""
        signed = self.fetch(f"/signin/{self.tokens[student]}", follow_redirects=False)
        assert signed.code == 302, signed.code
        cookies = _cookies(signed)
        home = self.fetch("/", headers={"Cookie": _cookie_header(cookies)})
        assert home.code == 200
        cookies.update(_cookies(home))
        xsrf = re.search(r'name="_xsrf" value="([^"]+)"', home.body.decode()).group(1)
        return {"cookie": _cookie_header(cookies), "xsrf": xsrf}

    def hand_in(self, session: dict | None, assignment="01-ddpg", data=b'{"cells": []}', filename="nb.ipynb",
                xsrf: str | None = "right", more: dict | None = None):
        fields = {} if xsrf is None else {"_xsrf": session["xsrf"] if xsrf == "right" else xsrf}
        kind, body = _multipart(fields, {"notebook": (filename, data), **(more or {})})
        headers = {"Content-Type": kind}
        if session:
            headers["Cookie"] = session["cookie"]
        return self.fetch(f"/submit/{assignment}", method="POST", body=body, headers=headers,
                          follow_redirects=False, raise_error=False)

    def test_without_a_session_everything_is_403(self):
        assert self.fetch("/").code == 403
        assert self.fetch("/submissions/1").code == 403
        assert self.hand_in(None, xsrf="x").code == 403
        assert self.fetch("/signin/alice.not-her-token", follow_redirects=False).code == 403
        assert self.portal.store().submissions() == []

    def test_a_hand_in_is_stored_under_the_assignments_name_and_queued(self):
        alice = self.session("alice")
        sent = self.hand_in(alice, filename="../../../etc/evil.ipynb")
        assert sent.code == 302, sent.body
        (found,) = self.portal.store().submissions("alice")
        assert sent.headers["Location"] == f"/submissions/{found.id}" and found.state == QUEUED
        assert sorted(p.name for p in (self.root / "portal" / "uploads").iterdir()) == [str(found.id)]
        assert [p.name for p in (self.root / "portal" / "uploads" / str(found.id)).iterdir()] == ["01-ddpg.ipynb"]
        assert not (self.root / "etc").exists()
        page = self.fetch(sent.headers["Location"], headers={"Cookie": alice["cookie"]})
        assert page.code == 200 and b"queued (0 ahead in the queue)" in page.body
        assert "script-src 'none'" in page.headers["Content-Security-Policy"]

    def test_another_students_submission_is_404(self):
        sent = self.hand_in(self.session("alice"))
        where = sent.headers["Location"]
        assert self.fetch(where, headers={"Cookie": self.session("bob")["cookie"]}).code == 404
        assert self.fetch("/submissions/999", headers={"Cookie": self.session("bob")["cookie"]}).code == 404

    def test_a_post_without_the_xsrf_field_or_with_another_is_403(self):
        alice = self.session("alice")
        assert self.hand_in(alice, xsrf=None).code == 403
        assert self.hand_in(alice, xsrf=self.session("bob")["xsrf"]).code == 403  # bob's, for his own cookie
        assert self.hand_in(alice, xsrf="2|00000000|" + "0" * 32 + "|1").code == 403
        assert self.portal.store().submissions() == []

    def test_an_upload_over_the_limit_is_413_and_not_recorded(self):
        alice = self.session("alice")
        assert self.hand_in(alice, data=b"x" * 5000).code == 413
        assert self.portal.store().submissions() == []
        assert self.hand_in(alice, data=b"x" * 3000).code == 302  # under the limit, with the form around it

    def test_a_chunked_upload_over_the_limit_is_413_as_it_arrives(self):
        alice = self.session("alice")
        kind, body = _multipart({"_xsrf": alice["xsrf"]}, {"notebook": ("nb.ipynb", b"x" * 5000)})

        async def chunks(write):  # no Content-Length: the size is known only as the bytes come
            for start in range(0, len(body), 1000):
                await write(body[start:start + 1000])

        refused = self.fetch("/submit/01-ddpg", method="POST", body_producer=chunks, raise_error=False,
                             headers={"Content-Type": kind, "Cookie": alice["cookie"]}, follow_redirects=False)
        assert "Content-Length" not in refused.request.headers
        assert refused.code == 413
        assert self.portal.store().submissions() == []

    def test_the_rate_limit_is_429_with_the_next_allowed_time(self):
        alice = self.session("alice")
        assert [self.hand_in(alice).code for _ in range(2)] == [302, 302]
        refused = self.hand_in(alice)
        assert refused.code == 429
        first = self.portal.store().submissions("alice")[0].received_at
        allowed = datetime.datetime.fromtimestamp(first + 3600).isoformat(sep=" ", timespec="minutes")
        assert f"The next hand-in is allowed at {allowed}.".encode() in refused.body
        assert len(self.portal.store().submissions("alice")) == 2
        assert self.hand_in(alice, assignment="02-td3").code == 302

    def test_an_unknown_assignment_is_404_and_a_revoked_token_ends_the_session(self):
        alice = self.session("alice")
        assert self.hand_in(alice, assignment="04-sac").code == 404
        self.portal.store().revoke("alice")
        assert self.fetch("/", headers={"Cookie": alice["cookie"]}).code == 403
        assert self.fetch(f"/signin/{self.tokens['alice']}", follow_redirects=False).code == 403

    def test_feedback_is_served_sandboxed_to_its_student_only(self):
        alice = self.session("alice")
        where = self.hand_in(alice).headers["Location"]
        sid = int(where.rpartition("/")[2])
        db = self.portal.store()
        (claimed,) = db.claim(now=time.time())
        db.finish(sid, now=time.time(), result={"scores": {"test_<b>": 2.0, "q1": None}, "max_scores": {"test_<b>": 3.0}})
        page = self.root / "portal" / "feedback" / f"{sid}.html"
        page.parent.mkdir(parents=True)
        page.write_text("<p>out</p><script>alert(1)</script>")
        status = self.fetch(where, headers={"Cookie": alice["cookie"]})
        assert status.code == 200
        text = status.body.decode()
        assert "<td>test_&lt;b&gt;</td><td>2 / 3</td>" in text and "<td>q1</td><td>to grade by hand / 0</td>" in text
        assert f"<iframe sandbox src='/feedback/{sid}'" in text and "allow-" not in text
        shown = self.fetch(f"/feedback/{sid}", headers={"Cookie": alice["cookie"]})
        assert shown.code == 200 and shown.body == page.read_bytes()
        policy = [p.strip() for p in shown.headers["Content-Security-Policy"].split(";")]
        assert policy[0] == "sandbox" and "default-src 'none'" in policy  # no script, a unique origin
        assert self.fetch(f"/feedback/{sid}", headers={"Cookie": self.session("bob")["cookie"]}).code == 404
        assert self.fetch(f"/feedback/{sid}").code == 403


    # -- the deadline and the late policy (deadlines.toml, read by reporting.late; portal.toml) -----

    def deadlines(self, text: str, settings: str | None = None) -> None:
        (self.root / "deadlines.toml").write_text(text)
        if settings is not None:
            (self.root / "portal.toml").write_text(settings)

    def test_after_the_deadline_a_hand_in_is_403_naming_it_and_not_recorded(self):
        self.deadlines("[01-ddpg]\ndeadline = 2001-02-03T04:05:00\n[02-td3]\ndeadline = 2100-01-01T00:00:00\n")
        alice = self.session("alice")
        refused = self.hand_in(alice)
        assert refused.code == 403
        assert ("<p>The deadline for 01-ddpg was 2001-02-03 04:05: hand-ins are closed, and this course takes no "
                "late hand-ins.</p>") in refused.body.decode()
        assert self.portal.store().submissions() == [] and not (self.root / "portal" / "uploads").exists()
        assert self.hand_in(alice, assignment="02-td3").code == 302  # before its deadline
        home = self.fetch("/", headers={"Cookie": alice["cookie"]}).body.decode()
        assert "(deadline 2001-02-03 04:05: closed)" in home and "(deadline 2100-01-01 00:00)" in home

    def test_the_grace_period_and_a_students_extension_apply(self):
        past = (datetime.datetime.now() - datetime.timedelta(minutes=5)).replace(microsecond=0).isoformat()
        self.deadlines(f"[01-ddpg]\ndeadline = {past}\ngrace_minutes = 15\n"
                       "[02-td3]\ndeadline = 2001-01-01T00:00:00\n[02-td3.extensions]\nbob = 2100-01-01T12:00:00\n")
        alice, bob = self.session("alice"), self.session("bob")
        assert self.hand_in(alice).code == 302  # 5 minutes late, within 15 minutes' grace
        assert self.hand_in(bob, assignment="02-td3").code == 302  # his extension
        refused = self.hand_in(alice, assignment="02-td3")
        assert refused.code == 403 and b"The deadline for 02-td3 was 2001-01-01 00:00" in refused.body
        self.deadlines("[02-td3]\ndeadline = 2100-01-01T00:00:00\n[02-td3.extensions]\nbob = 2001-01-01T12:00:00\n")
        late = self.hand_in(bob, assignment="02-td3")  # an extension can also be earlier: it is his deadline
        assert late.code == 403 and b"Your extended deadline for 02-td3 was 2001-01-01 12:00" in late.body

    def test_a_course_that_takes_late_hand_ins_accepts_them(self):
        self.deadlines("[01-ddpg]\ndeadline = 2001-02-03T04:05:00\n", "[portal]\nlate = true\n")
        assert self.hand_in(self.session("alice")).code == 302
        (self.root / "portal.toml").write_text("late = false\n")
        assert self.hand_in(self.session("bob")).code == 403
        (self.root / "portal.toml").write_text("late = 'yes'\n")
        broken = self.hand_in(self.session("bob"))
        assert broken.code == 500 and "portal.toml: late = &#x27;yes&#x27;: the portal&#x27;s settings are late = " \
            "true or late = false): tell your instructor" in broken.body.decode()
        with pytest.raises(CourseError, match=r"portal.toml: late = 'yes': the portal's settings are late = true"):
            Portal(self.root)  # and the server does not start

    # -- the experiment's results file -----------------------------------------------------

    def test_the_experiments_results_file_is_stored_under_its_own_name_and_placed_next_to_the_notebook(self):
        alice = self.session("alice")
        assert b"name='results' accept='.npz'" in self.fetch("/", headers={"Cookie": alice["cookie"]}).body
        results = _npz()
        sent = self.hand_in(alice, assignment="03-experiment", filename="../nb.ipynb",
                            more={"results": ("../../evil.npz", results)})
        assert sent.code == 302, sent.body
        (found,) = self.portal.store().submissions("alice")
        upload = self.root / "portal" / "uploads" / str(found.id)
        assert sorted(p.name for p in upload.iterdir()) == ["03-experiment-results.npz", "03-experiment.ipynb"]
        assert (upload / "03-experiment-results.npz").read_bytes() == results
        assert not list(self.root.parent.glob("evil.npz")) and not list(self.root.rglob("evil.npz"))
        Dispatcher(self.root, run="d", grade=StandIn(), log=lambda *a: None).once()
        placed = self.root / "submitted" / "alice" / "03-experiment"
        assert sorted(p.name for p in placed.iterdir()) == ["03-experiment-results.npz", "03-experiment.ipynb"]
        assert (placed / "03-experiment-results.npz").read_bytes() == results

    def test_the_experiment_without_its_results_file_is_refused_in_one_line(self):
        alice = self.session("alice")
        for more in ({}, {"results": ("r.npz", b"")}):
            refused = self.hand_in(alice, assignment="03-experiment", more=more)
            assert refused.code == 400
            assert ("<p>03-experiment is handed in with its results file 03-experiment-results.npz (your notebook "
                    "writes it): choose it in the form&#x27;s second field</p>") in refused.body.decode()
        wrong = self.hand_in(alice, assignment="03-experiment", more={"results": ("r.npz", b"not a zip")})
        assert wrong.code == 400 and (b"<p>the results file is not an .npz file: hand in the "
                                      b"03-experiment-results.npz your notebook wrote</p>") in wrong.body
        assert self.portal.store().submissions() == []
        # another assignment takes no results file: one sent along is not stored
        assert self.hand_in(alice, more={"results": ("r.npz", _npz())}).code == 302
        (found,) = self.portal.store().submissions("alice")
        assert [p.name for p in (self.root / "portal" / "uploads" / str(found.id)).iterdir()] == ["01-ddpg.ipynb"]

    def test_the_size_limit_is_on_the_whole_hand_in(self):
        alice = self.session("alice")
        big = self.hand_in(alice, assignment="03-experiment", data=b"x" * 2500,
                           more={"results": ("r.npz", b"PK" + b"y" * 2000)})  # each under 4096, not together
        assert big.code == 413 and self.portal.store().submissions() == []

    # -- the instructor's page ---------------------------------------------------------

    def instructor_session(self) -> dict[str, str]:
        token = self.portal.store().issue_instructor_token(now=time.time())
        signed = self.fetch(f"/instructor/signin/{token}", follow_redirects=False)
        assert signed.code == 302 and signed.headers["Location"] == "/instructor"
        return {"cookie": _cookie_header(_cookies(signed))}

    def test_the_instructors_page_is_403_without_the_instructors_session(self):
        alice = self.session("alice")
        for path in ("/instructor", "/instructor/report"):
            none = self.fetch(path)
            assert none.code == 403 and b"sign in with the instructor&#x27;s link" in none.body
            student = self.fetch(path, headers={"Cookie": alice["cookie"]})
            assert student.code == 403
            assert b"this page is the instructor&#x27;s: a student&#x27;s session does not open it" in student.body
        # a student's token is no instructor's link, and the reverse
        assert self.fetch(f"/instructor/signin/{self.tokens['alice']}", follow_redirects=False).code == 403
        teacher = self.instructor_session()
        assert self.fetch("/instructor", headers={"Cookie": teacher["cookie"]}).code == 200
        token = self.portal.store().issue_instructor_token
        self.portal.store().revoke_instructor()
        assert token(now=time.time()) is not None  # a new link: the old session ends
        assert self.fetch("/instructor", headers={"Cookie": teacher["cookie"]}).code == 403
        # a student's cookie renamed to the instructor's fails its signature
        forged = alice["cookie"].replace("session=", "instructor=")
        assert self.fetch("/instructor", headers={"Cookie": forged}).code == 403

    def test_the_instructor_sees_every_students_attempts_the_queue_and_the_failures_escaped(self):
        db = self.portal.store()
        db.add_students([("alice", "<script>alert('name')</script>")])
        a1 = int(self.hand_in(self.session("alice")).headers["Location"].rpartition("/")[2])
        b1 = int(self.hand_in(self.session("bob")).headers["Location"].rpartition("/")[2])
        b2 = int(self.hand_in(self.session("bob"), assignment="02-td3").headers["Location"].rpartition("/")[2])
        claimed = {s.id for s in db.claim(now=time.time(), limit=2)}
        assert claimed == {a1, b1}
        db.finish(a1, now=time.time(), result={"scores": {"t1": 2.0, "t2": None}, "max_scores": {"t1": 3.0, "t2": 4.0},
                                                "notes": ["<script>alert('notes')</script>"]})
        db.finish(b1, now=time.time(), reason="timeout: <img src=x onerror=alert(1)>")
        report = self.root / "grades" / "report.html"
        report.parent.mkdir()
        report.write_text("<h1>class</h1><script>alert('report')</script>")
        teacher = self.instructor_session()
        page = self.fetch("/instructor", headers={"Cookie": teacher["cookie"]})
        assert page.code == 200
        text = page.body.decode()
        assert "<script" not in text and "<img" not in text
        assert "&lt;script&gt;alert(&#x27;name&#x27;)&lt;/script&gt;" in text
        assert "&lt;script&gt;alert(&#x27;notes&#x27;)&lt;/script&gt;" in text
        # the queue: bob's 02-td3, queued, first in line, never claimed
        assert f"<tr><td>{b2}</td><td>bob</td><td>02-td3</td><td>queued</td><td>0</td><td>0</td>" in text
        # the failures, with why
        assert (f"<tr><td>{b1}</td><td>bob</td><td>01-ddpg</td><td>1</td>"
                "<td>timeout: &lt;img src=x onerror=alert(1)&gt;</td></tr>") in text
        # each student's attempts, with their states and scores
        assert f"<td>{a1}</td><td>01-ddpg</td>" in text and "<td>graded</td><td>2 / 7</td>" in text
        assert text.count("<td>bob</td><td>Bob</td>") == 2 and f"<td>{b2}</td><td>02-td3</td>" in text
        assert "<iframe sandbox src='/instructor/report'" in text and "allow-" not in text
        assert "script-src 'none'" in page.headers["Content-Security-Policy"]
        shown = self.fetch("/instructor/report", headers={"Cookie": teacher["cookie"]})
        assert shown.code == 200 and shown.body == report.read_bytes()
        policy = [p.strip() for p in shown.headers["Content-Security-Policy"].split(";")]
        assert policy[0] == "sandbox" and "default-src 'none'" in policy


def _npz() -> bytes:
    import io

    import numpy as np

    out = io.BytesIO()
    np.savez(out, returns=np.arange(3.0))
    return out.getvalue()


def _cookies(response) -> dict[str, str]:
    found = {}
    for header in response.headers.get_list("Set-Cookie"):
        name, _, rest = header.partition("=")
        found[name] = rest.split(";")[0]
    return found


def _cookie_header(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


# -- the dispatcher, with a stand-in for the driver ---------------------------------------

from autograder.portal.dispatch import Dispatcher  # noqa: E402
from autograder.reporting.results import GRADED as RESULT_GRADED, Result  # noqa: E402


class StandIn:
    """The driver's grade(): records what it was asked, writes a feedback page, scores the
    notebook by its content."""

    def __init__(self, crash_on: str | None = None):
        self.calls, self.crash_on = [], crash_on

    def __call__(self, root, student, assignment, **kwargs):
        notebook = (root / "submitted" / student / assignment / f"{assignment}.ipynb").read_bytes()
        self.calls.append((student, assignment, notebook))
        if self.crash_on and self.crash_on.encode() in notebook:
            raise KeyboardInterrupt  # the server dies here: nothing after this runs
        page = root / "feedback" / student / assignment / f"{assignment}.html"
        page.parent.mkdir(parents=True, exist_ok=True)
        page.write_bytes(b"<p>feedback of " + notebook + b"</p>")
        return [Result(student, assignment, RESULT_GRADED, scores={"test_a": float(len(notebook))},
                       max_scores={"test_a": 100.0})]


def _hand_in(root: Path, student: str, data: bytes, now: float, assignment: str = "01-ddpg") -> int:
    from autograder.portal.server import Portal

    portal = Portal(root, LOOSE, names=[assignment])
    sid = portal.store().receive(student, assignment, now, LOOSE)
    portal.store_files(sid, {f"{assignment}.ipynb": data})
    portal.store().queue(sid, now)
    return sid


def test_the_dispatcher_puts_hand_ins_in_submitted_and_records_their_grades(tmp_path, db):
    first = _hand_in(tmp_path, "alice", b"one", now=1_800_000_000)
    grade = StandIn()
    assert Dispatcher(tmp_path, run="d1", grade=grade, log=lambda *a: None).once() == 1
    assert grade.calls == [("alice", "01-ddpg", b"one")]
    assert db.get(first).state == GRADED and db.get(first).result["scores"] == {"test_a": 3.0}
    assert (tmp_path / "portal" / "feedback" / f"{first}.html").read_bytes() == b"<p>feedback of one</p>"
    # the hand-in time where reporting.late reads it
    from autograder.reporting import late

    assert late.handed_in(tmp_path, "01-ddpg") == {"alice": datetime.datetime.fromtimestamp(1_800_000_000)}
    second = _hand_in(tmp_path, "alice", b"second", now=1_800_000_100)
    Dispatcher(tmp_path, run="d2", grade=grade, log=lambda *a: None).once()
    assert (tmp_path / "submitted" / "alice" / "01-ddpg" / "01-ddpg.ipynb").read_bytes() == b"second"
    kept = tmp_path / "collected" / "kept" / "alice" / "01-ddpg" / f"portal-{second}" / "01-ddpg.ipynb"
    assert kept.read_bytes() == b"one"
    assert (tmp_path / "portal" / "feedback" / f"{first}.html").read_bytes() == b"<p>feedback of one</p>"
    assert db.get(second).result["scores"] == {"test_a": 6.0}


def test_a_server_killed_while_grading_grades_the_hand_in_after_its_restart_once(tmp_path, db):
    before = _hand_in(tmp_path, "alice", b"old", now=50)
    Dispatcher(tmp_path, run="earlier", grade=StandIn(), log=lambda *a: None).once()
    sid = _hand_in(tmp_path, "alice", b"kills the server", now=100)
    with pytest.raises(KeyboardInterrupt):
        Dispatcher(tmp_path, run="dies", grade=StandIn(crash_on="kills"), log=lambda *a: None).once()
    assert db.get(sid).state == GRADING
    grade = StandIn()
    restarted = Dispatcher(tmp_path, run="restarted", grade=grade, log=lambda *a: None)
    assert [s.id for s in restarted.recover()] == [sid]
    assert restarted.once() == 1 and restarted.once() == 0
    assert grade.calls == [("alice", "01-ddpg", b"kills the server")]
    assert [e for e, _ in db.events(sid)].count(GRADED) == 1 and db.get(sid).state == GRADED
    # placed twice (before the crash, and after): the previous hand-in is the one kept aside
    kept = tmp_path / "collected" / "kept" / "alice" / "01-ddpg"
    assert [p.name for p in kept.iterdir()] == [f"portal-{sid}"]
    assert (kept / f"portal-{sid}" / "01-ddpg.ipynb").read_bytes() == b"old" and db.get(before).state == GRADED


def test_a_grader_error_fails_the_hand_in_with_why_and_the_dispatcher_goes_on(tmp_path, db):
    bad = _hand_in(tmp_path, "alice", b"x", now=100)
    good = _hand_in(tmp_path, "bob", b"y", now=101)

    def grade(root, student, assignment, **kwargs):
        if student == "alice":
            raise RuntimeError("disk full")
        return StandIn()(root, student, assignment)

    Dispatcher(tmp_path, run="d", grade=grade, log=lambda *a: None).once()
    assert db.get(bad).state == FAILED and db.get(bad).reason == "the grader stopped on it (RuntimeError: disk full)"
    assert db.get(good).state == GRADED


def test_a_hand_in_placed_again_after_a_crash_is_not_kept_aside_as_its_own_predecessor(tmp_path, db):
    sid = _hand_in(tmp_path, "alice", b"kills the server", now=100)
    with pytest.raises(KeyboardInterrupt):
        Dispatcher(tmp_path, run="dies", grade=StandIn(crash_on="kills"), log=lambda *a: None).once()
    restarted = Dispatcher(tmp_path, run="restarted", grade=StandIn(), log=lambda *a: None)
    restarted.recover()
    restarted.once()
    assert db.get(sid).state == GRADED
    assert not (tmp_path / "collected" / "kept").exists()


def test_a_second_portal_on_the_same_course_folder_is_refused(tmp_path):
    from autograder.portal.serve import only_server

    with only_server(tmp_path):
        with pytest.raises(CourseError, match="another portal serves .*: stop it first"):
            with only_server(tmp_path):
                pass
    with only_server(tmp_path):  # released: the next start may
        pass


QUIET_PROBE = """
import logging, sys
from pathlib import Path
from autograder.grading.driver import _quiet
from autograder.portal import serve
log = serve.server_log() if sys.argv[2] == "set-up" else print
with _quiet(Path(sys.argv[1])):  # as while the driver records a submission
    logging.getLogger("tornado.access").warning("200 GET /submissions/7")
    log("portal: a line of the server")
"""


@pytest.mark.parametrize("set_up", ["set-up", "not"])
def test_the_servers_log_does_not_land_in_a_submissions_log(tmp_path, set_up):
    import sys

    submission_log = tmp_path / "alice.log"
    run = subprocess.run([sys.executable, "-c", QUIET_PROBE, str(submission_log), set_up], cwd=REPO,
                         capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    lines = ("200 GET /submissions/7", "portal: a line of the server")
    if set_up == "set-up":  # serve()'s own set-up: on the terminal, not in the submission's log
        assert submission_log.read_text() == ""
        assert all(line in run.stderr for line in lines)
    else:  # without it, both land in the submission's log (the risk this guards against)
        assert all(line in submission_log.read_text() for line in lines)
