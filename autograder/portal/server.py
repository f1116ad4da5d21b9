"""The portal's web server (Tornado): sign-in by a student's link, the hand-in form, the
submissions' states.

Refusals, each exact (``tests/test_portal.py``): no session 403, a POST without the XSRF
field 403 (Tornado's ``xsrf_cookies``), another student's submission 404 (as one that does
not exist), an upload over ``max_upload`` bytes 413 (before it is read: its Content-Length,
or as its bytes arrive), an unknown assignment 404, the rate limit 429 with the next
allowed time. The uploaded file's name is never used: the files are stored as the
assignment names them. Every page is HTML built with escaping and served with a
Content-Security-Policy that allows no script.
"""

from __future__ import annotations

import datetime
import html
import os
import secrets
import time
import tomllib
from pathlib import Path

import tornado.web
from tornado import httputil

from autograder.course import CourseError, assignments
from autograder.portal.store import FAILED, FEEDBACK, GRADING, QUEUED, RECEIVED, UPLOADS, Limit, RateLimited, Store
from autograder.reporting import late

#: the largest upload (a notebook with its outputs, and the experiment's results file)
MAX_UPLOAD = 20 * 2**20
#: the portal's own pages: no script at all, no framing by another site
PAGE_CSP = "default-src 'self'; script-src 'none'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; " \
           "form-action 'self'"
#: a feedback page (untrusted HTML): a sandboxed document, framed only by the portal's pages
FEEDBACK_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
SESSION = "session"
#: the instructor's session cookie (signed under its own name: a student's cookie is not one)
INSTRUCTOR_SESSION = "instructor"
#: the course's portal settings, in the course folder (optional)
SETTINGS = "portal.toml"
#: assignments handed in with a results file (as ``lms.collect`` names it), and its name
WITH_RESULTS = ("03-experiment",)
#: the class report, shown on the instructor's page
REPORT = Path("grades") / "report.html"


def _minutes(moment: datetime.datetime) -> str:
    return moment.isoformat(sep=" ", timespec="minutes")


def results_file(assignment: str) -> str:
    return f"{assignment}-results.npz"


def settings(root: Path) -> dict:
    """ROOT/portal.toml: ``late = true`` accepts hand-ins after the deadline (the penalty of
    deadlines.toml then applies); default: refused. CourseError, one line, when unreadable."""
    path = Path(root) / SETTINGS
    if not path.exists():
        return {"late": False}
    try:
        table = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise CourseError(f"{path}: not TOML ({error}): write late = true or late = false") from None
    table = table.get("portal", table)  # [portal] late = true, or late = true
    unknown = sorted(set(table) - {"late"})
    if unknown or not isinstance(table.get("late", False), bool):
        raise CourseError(f"{path}: {', '.join(unknown) or 'late = ' + repr(table.get('late'))}: the portal's "
                          "settings are late = true or late = false")
    return {"late": table.get("late", False)}


def _when(moment: float) -> str:
    return datetime.datetime.fromtimestamp(moment).isoformat(sep=" ", timespec="minutes")


class Base(tornado.web.RequestHandler):
    def initialize(self, portal: Portal):
        self.portal = portal

    def set_default_headers(self):
        self.set_header("Content-Security-Policy", PAGE_CSP)
        self.set_header("X-Content-Type-Options", "nosniff")
        self.set_header("Referrer-Policy", "no-referrer")

    def get_current_user(self) -> str | None:
        value = self.get_signed_cookie(SESSION, max_age_days=120)
        if not value:
            return None
        student, _, issued = value.decode().partition("|")
        return student if self.portal.store().session_valid(student, issued) else None

    def student(self) -> str:
        student = self.current_user
        if student is None:
            raise tornado.web.HTTPError(403, "sign in with your link")
        return student

    def instructor(self) -> None:
        """403 unless this is the instructor's session (a student's session never is)."""
        value = self.get_signed_cookie(INSTRUCTOR_SESSION, max_age_days=30)
        kind, _, issued = (value or b"").decode().partition("|")
        if kind == INSTRUCTOR_SESSION and self.portal.store().instructor_session_valid(issued):
            return
        if self.current_user is not None:
            raise tornado.web.HTTPError(403, "this page is the instructor's: a student's session does not open it")
        raise tornado.web.HTTPError(403, "sign in with the instructor's link (python -m autograder portal tokens "
                                         "--instructor)")

    def page(self, title: str, body: str) -> None:
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title></head>"
                    f"<body><h1>{html.escape(title)}</h1>{body}</body></html>")

    def write_error(self, status_code, **kwargs):
        reason = self._reason
        error = kwargs.get("exc_info", (None, None))[1]
        if isinstance(error, tornado.web.HTTPError) and error.log_message:
            reason = error.log_message % error.args if error.args else error.log_message
        self.page(f"{status_code}", f"<p>{html.escape(str(reason))}</p>")


class SignIn(Base):
    def get(self, token: str):
        student, issued = self.portal.store().sign_in(token)
        if student is None:
            raise tornado.web.HTTPError(403, "this link does not sign in: ask your instructor for a new one")
        self.set_signed_cookie(SESSION, f"{student}|{issued!r}", httponly=True, samesite="Strict",
                               secure=self.request.protocol == "https")
        self.redirect("/")


class Home(Base):
    def get(self):
        student = self.student()
        db = self.portal.store()
        rows = "".join(
            f"<tr><td><a href='/submissions/{s.id}'>{s.id}</a></td><td>{html.escape(s.assignment)}</td>"
            f"<td>{_when(s.received_at)}</td><td>{html.escape(s.state)}</td></tr>"
            for s in db.submissions(student))
        forms = "".join(
            f"<form method='post' action='/submit/{html.escape(a)}' enctype='multipart/form-data'>"
            f"{self.xsrf_form_html()}<label>{html.escape(a)}: <input type='file' name='notebook' accept='.ipynb'>"
            f"</label>" + (f"<label> and its results file {html.escape(results_file(a))}: <input type='file' "
                           f"name='results' accept='.npz'></label>" if a in self.portal.with_results else "")
            + f"<button>Hand in</button> {html.escape(self.portal.deadline_note(student, a))}</form>"
            for a in self.portal.assignments)
        self.page(f"Hand-ins of {student}", f"{forms}<table><tr><th>#</th><th>assignment</th><th>received</th>"
                                             f"<th>state</th></tr>{rows}</table>")


@tornado.web.stream_request_body
class Submit(Base):
    """A hand-in: its size checked before and while it arrives, then stored under the
    assignment's own file name."""

    def prepare(self):
        if self.request.method != "POST":
            return
        self.received = bytearray()
        length = self.request.headers.get("Content-Length")
        if length is not None and (not length.isdigit() or int(length) > self.portal.max_upload):
            raise self.too_big()
        self.student()  # no session: 403 before the body is read

    #: whether the form is parsed: Tornado checks XSRF before prepare(), when a streamed
    #: body has not arrived yet; the check is made in post(), on the form's field
    parsed = False

    def check_xsrf_cookie(self):
        if self.parsed:
            super().check_xsrf_cookie()

    def data_received(self, chunk: bytes):
        # an error raised here would only close the connection: the rest is counted, not
        # kept (HTTPServer's max_body_size bounds it), and post() answers 413
        self.size = getattr(self, "size", 0) + len(chunk)
        if self.size <= self.portal.max_upload:
            self.received += chunk

    def too_big(self) -> tornado.web.HTTPError:
        return tornado.web.HTTPError(413, f"a hand-in is at most {self.portal.max_upload / 2**20:g} MB")

    def post(self, assignment: str):
        student = self.student()
        if getattr(self, "size", 0) > self.portal.max_upload:
            raise self.too_big()
        arguments, files = {}, {}
        httputil.parse_body_arguments(self.request.headers.get("Content-Type", ""), bytes(self.received),
                                      arguments, files)
        self.request.body_arguments = arguments
        self.request.arguments.update(arguments)
        self.parsed = True
        self.check_xsrf_cookie()
        if assignment not in self.portal.assignments:
            raise tornado.web.HTTPError(404, "no such assignment")
        notebook = files.get("notebook")
        if not notebook or not notebook[0]["body"]:
            raise tornado.web.HTTPError(400, "choose the notebook to hand in")
        stored = {f"{assignment}.ipynb": notebook[0]["body"]}
        if assignment in self.portal.with_results:
            results = files.get("results")
            if not results or not results[0]["body"]:
                raise tornado.web.HTTPError(400, f"{assignment} is handed in with its results file "
                                                 f"{results_file(assignment)} (your notebook writes it): choose "
                                                 "it in the form's second field")
            if not results[0]["body"].startswith(b"PK"):
                raise tornado.web.HTTPError(400, f"the results file is not an .npz file: hand in the "
                                                 f"{results_file(assignment)} your notebook wrote")
            stored[results_file(assignment)] = results[0]["body"]  # its name is ours, never the client's
        closed = self.portal.closed(student, assignment, datetime.datetime.now())
        if closed:
            self.set_status(403)
            self.page("Hand-ins closed", f"<p>{html.escape(closed)}</p>")
            return
        db = self.portal.store()
        try:
            sid = db.receive(student, assignment, time.time(), self.portal.limit)
        except RateLimited as refused:
            self.set_status(429)
            self.page("Not yet", f"<p>You handed in {html.escape(assignment)} {self.portal.limit.count} times in "
                                 f"the last {self.portal.limit.window / 60:g} minutes. The next hand-in is allowed "
                                 f"at {_when(refused.next_allowed)}.</p>")
            return
        self.portal.store_files(sid, stored)
        db.queue(sid, time.time())
        self.redirect(f"/submissions/{sid}")


class Status(Base):
    def get(self, submission: str):
        student = self.student()
        found = self.portal.store().of_student(student, int(submission))
        if found is None:
            raise tornado.web.HTTPError(404, "no such submission")
        ahead = self.portal.store().position(found.id) if found.state == QUEUED else None
        where = f" ({ahead} ahead in the queue)" if ahead is not None else ""
        body = f"<p>{html.escape(found.assignment)}: {html.escape(found.state)}{html.escape(where)}</p>"
        if found.state in (QUEUED, GRADING, RECEIVED):
            self.set_header("Refresh", "10")  # the state, again in 10 s: no script needed
        if found.reason:
            body += f"<p>{html.escape(found.reason)}</p>"
        if found.result:
            body += "<table><tr><th>test</th><th>points</th></tr>" + "".join(
                f"<tr><td>{html.escape(test)}</td><td>{'to grade by hand' if points is None else f'{points:g}'}"
                f" / {found.result.get('max_scores', {}).get(test, 0):g}</td></tr>"
                for test, points in found.result.get("scores", {}).items()) + "</table>"
        if (self.portal.root / FEEDBACK / f"{found.id}.html").exists():
            # the feedback is the student's code's output: untrusted, in a sandboxed frame
            body += f"<iframe sandbox src='/feedback/{found.id}' title='feedback' width='100%' height='800'></iframe>"
        self.page(f"Submission {found.id}", body)


class Feedback(Base):
    """A submission's feedback page, as the grader wrote it: served only to its student,
    under a CSP that makes it a sandboxed document of its own (no script, a unique origin)
    even when opened outside its frame."""

    def set_default_headers(self):
        super().set_default_headers()
        self.set_header("Content-Security-Policy", FEEDBACK_CSP)

    def get(self, submission: str):
        student = self.student()
        found = self.portal.store().of_student(student, int(submission))
        page = self.portal.root / FEEDBACK / f"{submission}.html"
        if found is None or not page.exists():
            raise tornado.web.HTTPError(404, "no such feedback")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page.read_bytes())


class InstructorSignIn(Base):
    def get(self, token: str):
        issued = self.portal.store().instructor_sign_in(token)
        if issued is None:
            raise tornado.web.HTTPError(403, "this link does not sign in: make the instructor's link again "
                                             "(portal revoke --instructor, then portal tokens --instructor)")
        self.set_signed_cookie(INSTRUCTOR_SESSION, f"{INSTRUCTOR_SESSION}|{issued!r}", expires_days=None,
                               httponly=True, samesite="Strict", secure=self.request.protocol == "https")
        self.redirect("/instructor")


def _total(result: dict | None) -> str:
    if not result or not result.get("scores"):
        return ""
    points = sum(p for p in result["scores"].values() if p is not None)
    return f"{points:g} / {sum(result.get('max_scores', {}).values()):g}"


class Instructor(Base):
    """The class's live state: the queue, each student's attempts, the failures, and the
    class report (in a sandboxed frame). Every value from the roster, the students or the
    grader is escaped."""

    def get(self):
        self.instructor()
        db = self.portal.store()
        every = db.submissions()
        names = {row["id"]: row["name"] for row in db.students()}
        e = html.escape
        waiting = [s for s in every if s.state in (RECEIVED, QUEUED, GRADING)]
        queue = "".join(
            f"<tr><td>{s.id}</td><td>{e(s.student)}</td><td>{e(s.assignment)}</td><td>{e(s.state)}</td>"
            f"<td>{'' if s.state != QUEUED else db.position(s.id)}</td><td>{s.attempts}</td>"
            f"<td>{e(s.run or '')}</td><td>{_when(s.received_at)}</td></tr>" for s in waiting)
        failures = "".join(
            f"<tr><td>{s.id}</td><td>{e(s.student)}</td><td>{e(s.assignment)}</td><td>{s.attempts}</td>"
            f"<td>{e(s.reason or '')}</td></tr>" for s in every if s.state == FAILED)
        students = "".join(
            f"<tr><td>{e(s.student)}</td><td>{e(names.get(s.student, ''))}</td><td>{s.id}</td>"
            f"<td>{e(s.assignment)}</td><td>{_when(s.received_at)}</td><td>{e(s.state)}</td>"
            f"<td>{_total(s.result)}</td><td>{e('; '.join(map(str, (s.result or {}).get('notes', []))))}</td></tr>"
            for s in sorted(every, key=lambda s: (s.student, s.id)))
        report = (f"<iframe sandbox src='/instructor/report' title='class report' width='100%' height='900'>"
                  f"</iframe>" if (self.portal.root / REPORT).exists() else
                  "<p>No class report yet (python -m autograder report writes grades/report.html).</p>")
        self.set_header("Refresh", "30")
        self.page("The class", f"<h2>Queue ({len(waiting)})</h2><table><tr><th>#</th><th>student</th>"
                               f"<th>assignment</th><th>state</th><th>place</th><th>attempts</th><th>run</th>"
                               f"<th>received</th></tr>{queue}</table>"
                               f"<h2>Failures</h2><table><tr><th>#</th><th>student</th><th>assignment</th>"
                               f"<th>attempts</th><th>reason</th></tr>{failures}</table>"
                               f"<h2>Attempts</h2><table><tr><th>student</th><th>name</th><th>#</th>"
                               f"<th>assignment</th><th>received</th><th>state</th><th>score</th><th>notes</th>"
                               f"</tr>{students}</table><h2>Class report</h2>{report}")


class ClassReport(Base):
    """grades/report.html, to the instructor only, as untrusted HTML: the feedback's CSP."""

    def set_default_headers(self):
        super().set_default_headers()
        self.set_header("Content-Security-Policy", FEEDBACK_CSP)

    def get(self):
        self.instructor()
        page = self.portal.root / REPORT
        if not page.exists():
            raise tornado.web.HTTPError(404, "no class report yet")
        self.set_header("Content-Type", "text/html; charset=utf-8")
        self.finish(page.read_bytes())


class Portal:
    """The server's shared state: the course folder, its database (a connection per
    thread), the limits."""

    def __init__(self, root: Path, limit: Limit = Limit(), max_upload: int = MAX_UPLOAD, names=None,
                 with_results=WITH_RESULTS):
        self.root = Path(root)
        self.limit, self.max_upload = limit, max_upload
        self.assignments = list(names if names is not None else assignments())
        self.with_results = tuple(with_results)
        settings(self.root), late.policies(self.root)  # a course folder's mistake stops the start, in one line
        self._store = Store.of(self.root)

    def closed(self, student: str, assignment: str, now: datetime.datetime) -> str | None:
        """Why ``student`` can no longer hand in ``assignment`` (deadlines.toml, with its grace
        and their extension, read by ``reporting.late``; portal.toml's ``late``); None: they can."""
        try:
            policy = late.policies(self.root).get(assignment)
            allowed = settings(self.root)["late"]
        except CourseError as error:
            raise tornado.web.HTTPError(500, f"the course's settings cannot be read ({error}): tell your "
                                             "instructor") from None
        if policy is None or allowed:
            return None
        lateness = late.lateness(policy, student, now)
        if not lateness.days:
            return None
        given = "Your extended deadline" if lateness.extended else "The deadline"
        return (f"{given} for {assignment} was {_minutes(lateness.deadline)}: hand-ins are closed, and this "
                "course takes no late hand-ins.")

    def deadline_note(self, student: str, assignment: str) -> str:
        try:
            policy = late.policies(self.root).get(assignment)
            if policy is None:
                return ""
            closed = self.closed(student, assignment, datetime.datetime.now())
        except (CourseError, tornado.web.HTTPError):  # said at the hand-in, in one line
            return ""
        return f"(deadline {_minutes(policy.deadline_of(student))}{': closed' if closed else ''})"

    def store(self) -> Store:
        return self._store  # Tornado's handlers run on the one event loop thread

    def store_files(self, submission: int, files: dict[str, bytes]) -> Path:
        """The hand-in's files in portal/uploads/<id>/, whole or not at all (a crash leaves
        <id>.part/, which recover() counts as cut)."""
        final = self.root / UPLOADS / str(submission)
        partial = final.with_name(f"{submission}.part")
        partial.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            with open(partial / name, "wb") as out:
                out.write(data)
                out.flush()
                os.fsync(out.fileno())
        partial.rename(final)
        return final

    def complete(self, submission: int) -> bool:
        return (self.root / UPLOADS / str(submission)).is_dir()

    def application(self) -> tornado.web.Application:
        arguments = {"portal": self}
        return tornado.web.Application([
            (r"/", Home, arguments),
            (r"/signin/([^/]+)", SignIn, arguments),
            (r"/submit/([^/]+)", Submit, arguments),
            (r"/submissions/([0-9]{1,12})", Status, arguments),
            (r"/feedback/([0-9]{1,12})", Feedback, arguments),
            (r"/instructor", Instructor, arguments),
            (r"/instructor/report", ClassReport, arguments),
            (r"/instructor/signin/([^/]+)", InstructorSignIn, arguments),
        ], cookie_secret=self._store.secret("cookie_secret", lambda: secrets.token_urlsafe(48)),
            xsrf_cookies=True, xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"})
