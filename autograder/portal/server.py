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
from pathlib import Path

import tornado.web
from tornado import httputil

from autograder.course import assignments
from autograder.portal.store import FEEDBACK, GRADING, QUEUED, RECEIVED, UPLOADS, Limit, RateLimited, Store

#: the largest upload (a notebook with its outputs, and the experiment's results file)
MAX_UPLOAD = 20 * 2**20
#: the portal's own pages: no script at all, no framing by another site
PAGE_CSP = "default-src 'self'; script-src 'none'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; " \
           "form-action 'self'"
#: a feedback page (untrusted HTML): a sandboxed document, framed only by the portal's pages
FEEDBACK_CSP = "sandbox; default-src 'none'; img-src data:; style-src 'unsafe-inline'; frame-ancestors 'self'"
SESSION = "session"


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
            f"</label><button>Hand in</button></form>" for a in self.portal.assignments)
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
        db = self.portal.store()
        try:
            sid = db.receive(student, assignment, time.time(), self.portal.limit)
        except RateLimited as refused:
            self.set_status(429)
            self.page("Not yet", f"<p>You handed in {html.escape(assignment)} {self.portal.limit.count} times in "
                                 f"the last {self.portal.limit.window / 60:g} minutes. The next hand-in is allowed "
                                 f"at {_when(refused.next_allowed)}.</p>")
            return
        self.portal.store_files(sid, {f"{assignment}.ipynb": notebook[0]["body"]})
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


class Portal:
    """The server's shared state: the course folder, its database (a connection per
    thread), the limits."""

    def __init__(self, root: Path, limit: Limit = Limit(), max_upload: int = MAX_UPLOAD, names=None):
        self.root = Path(root)
        self.limit, self.max_upload = limit, max_upload
        self.assignments = list(names if names is not None else assignments())
        self._store = Store.of(self.root)

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
        ], cookie_secret=self._store.secret("cookie_secret", lambda: secrets.token_urlsafe(48)),
            xsrf_cookies=True, xsrf_cookie_kwargs={"httponly": True, "samesite": "Strict"})
