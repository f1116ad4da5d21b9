"""``python -m autograder portal serve``: the portal's web server and its dispatcher, in one
process (one per course folder: a lock on ``ROOT/portal/server.lock``).

Start-up order matters for exactly-once: the lock, then ``recover`` (what a dead server
left claimed or half-received), then the dispatcher, then the port.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import threading
from pathlib import Path

from autograder.course import CourseError
from autograder.portal.dispatch import Dispatcher
from autograder.portal.server import Portal
from autograder.portal.store import Limit

LOCK = Path("portal") / "server.lock"


@contextlib.contextmanager
def only_server(root: Path):
    """Holds the course folder's portal lock; CourseError when another server holds it."""
    path = root / LOCK
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CourseError(f"another portal serves {root} (it holds {path}): stop it first") from None
        yield


def server_log() -> callable:
    """The server's own log, on the terminal it started on, whatever fds 1 and 2 become:
    the driver sends them to a submission's log while it records one (``driver._quiet``),
    and Tornado's log lines written meanwhile (from this thread) would land there. A copy
    of fd 2 taken now is where Tornado's loggers and the returned ``log`` write."""
    terminal = os.fdopen(os.dup(2), "w", buffering=1)
    handler = logging.StreamHandler(terminal)
    handler.setFormatter(logging.Formatter("portal %(asctime)s %(name)s: %(message)s"))
    for name in ("tornado.access", "tornado.application", "tornado.general"):
        logger = logging.getLogger(name)
        logger.handlers, logger.propagate = [handler], False
        logger.setLevel(logging.INFO)
    return lambda *text: print(*text, file=terminal, flush=True)


def serve(root: Path, host: str, port: int, scheduler: str | None, jobs: int, limits, limit: Limit = Limit(),
          log=print) -> None:
    import tornado.httpserver
    import tornado.ioloop

    from autograder.grading import distribute

    if log is print:
        log = server_log()
    with only_server(root):
        portal = Portal(root, limit)
        with distribute.client(scheduler, jobs) as connected:
            distribute.check_workers(connected)

            @contextlib.contextmanager
            def engine(_scheduler, _jobs, _log):  # the client stays open: no cluster per hand-in
                yield lambda common, work, limits: distribute.grade(connected, common, work, limits)

            dispatcher = Dispatcher(root, engine=engine, limits=limits, jobs=jobs, scheduler=scheduler, log=log,
                                    batch=True)
            again = dispatcher.recover()
            if again:
                log(f"portal: {len(again)} hand-ins left by a stopped server: "
                    + ", ".join(f"#{s.id} {s.state}" for s in again))
            stop = threading.Event()
            worker = threading.Thread(target=dispatcher.forever, args=(stop,), name="portal-dispatcher", daemon=True)
            worker.start()
            server = tornado.httpserver.HTTPServer(portal.application(), max_body_size=4 * portal.max_upload)
            try:
                server.listen(port, host)
            except OSError as error:
                stop.set()
                raise CourseError(f"cannot listen on {host}:{port} ({error.strerror}): give another --port") from None
            log(f"portal: http://{host}:{port}/ (students sign in with their links: python -m autograder portal "
                f"tokens; the instructor's page /instructor with portal tokens --instructor); grading on "
                f"{scheduler or f'{jobs} local workers'}; Ctrl-C stops it")
            try:
                tornado.ioloop.IOLoop.current().start()
            except KeyboardInterrupt:
                log("portal: stopped; hand-ins being graded are graded again at the next start")
            finally:
                stop.set()
                server.stop()
                worker.join(timeout=5)
