"""Headless Chromium for the tests, driven over the DevTools protocol on a pipe
(``--remote-debugging-pipe``: no port, no extra package).

    with Chromium() as browser:
        page = browser.open(path, screenshot=out_png)
        page.images   # [{src, width, height}] of every <img>, natural sizes
        page.errors   # console errors, uncaught exceptions, failed loads
        page.remote   # the addresses outside the file the page asked for
        page.console  # every console message (log, info, error, ...), as text
        page.scripts  # how many <script> elements the page holds

Requests to other hosts are answered by the test itself, never the network: with an
empty stylesheet or script, or an error for anything else, and listed in ``remote`` (a
page that loads MathJax from a CDN, as formgrader's do, cannot reach it in CI).
``open(..., click_links=True)`` also clicks every ``javascript:`` link the page holds, as
an instructor could.
"""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

#: where Debian puts it (.ci/run installs the package when it is missing)
CANDIDATES = ("chromium", "chromium-browser", "google-chrome")


def executable() -> str | None:
    return next((found for name in CANDIDATES if (found := shutil.which(name))), None)


@dataclass
class Page:
    images: list[dict] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    remote: list[str] = field(default_factory=list)
    console: list[str] = field(default_factory=list)
    scripts: int = 0
    title: str = ""
    text: str = ""  # what the page shows (document.body.innerText)


class Chromium:
    def __init__(self, timeout: float = 60):
        self.timeout = timeout
        self.next_id = 0
        self.events: list[dict] = []
        self.buffer = b""

    def __enter__(self):
        self.profile = tempfile.mkdtemp(prefix="chromium-profile-")
        to_browser_r, self.to_browser = os.pipe()
        self.from_browser, from_browser_w = os.pipe()
        # the browser reads commands on fd 3 and writes answers on fd 4: the child moves its
        # ends there (Python's own descriptors are not inherited, these two are)
        ends = [fcntl.fcntl(fd, fcntl.F_DUPFD, 100) for fd in (to_browser_r, from_browser_w)]

        def fds():
            os.dup2(ends[0], 3)
            os.dup2(ends[1], 4)

        self.process = subprocess.Popen(
            [executable(), "--headless", "--remote-debugging-pipe", "--no-sandbox", "--disable-gpu",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", "--disable-quic", "--hide-scrollbars", f"--user-data-dir={self.profile}",
             "about:blank"],
            close_fds=False, preexec_fn=fds, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        for fd in (to_browser_r, from_browser_w, *ends):
            os.close(fd)
        return self

    def __exit__(self, *exc):
        try:
            self.send("Browser.close")
        except Exception:
            pass
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
        os.close(self.to_browser)
        os.close(self.from_browser)
        shutil.rmtree(self.profile, ignore_errors=True)

    # --- the protocol: JSON messages, each ended by a NUL byte
    def send(self, method: str, params: dict | None = None, session: str | None = None) -> dict:
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            message["sessionId"] = session
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")
        while True:
            answer = self._read()
            if answer.get("id") == self.next_id:
                if "error" in answer:
                    raise RuntimeError(f"{method}: {answer['error']}")
                return answer.get("result", {})
            self._handle(answer)

    def _read(self) -> dict:
        deadline = time.monotonic() + self.timeout
        while b"\0" not in self.buffer:
            if time.monotonic() > deadline:
                raise TimeoutError("Chromium did not answer")
            chunk = os.read(self.from_browser, 1 << 16)
            if not chunk:
                raise RuntimeError("Chromium ended")
            self.buffer += chunk
        message, self.buffer = self.buffer.split(b"\0", 1)
        return json.loads(message)

    def _wait_for(self, method: str, session: str) -> dict:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for event in list(self.events):
                if event.get("method") == method and event.get("sessionId") == session:
                    self.events.remove(event)
                    return event
            self._handle(self._read())
        raise TimeoutError(f"no {method}")

    def _handle(self, event: dict):
        if event.get("method") == "Fetch.requestPaused":
            self._answer_remote(event)
        else:
            self.events.append(event)

    def _answer_remote(self, event: dict):
        params, session = event["params"], event.get("sessionId")
        url = params["request"]["url"]
        self.page.remote.append(url)
        kind = params.get("resourceType")
        if kind in ("Script", "Stylesheet"):
            body = base64.b64encode(b"/* not fetched in the test */").decode()
            self.send_async("Fetch.fulfillRequest", {"requestId": params["requestId"], "responseCode": 200,
                                                     "body": body}, session)
        else:
            self.send_async("Fetch.failRequest", {"requestId": params["requestId"], "errorReason": "BlockedByClient"},
                            session)

    def send_async(self, method, params, session):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params, "sessionId": session}
        os.write(self.to_browser, json.dumps(message).encode() + b"\0")

    # --- a page
    def open(self, path: Path, screenshot: Path | None = None, width: int = 1100, click_links: bool = False) -> Page:
        self.page = Page()
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log"):
            self.send(f"{domain}.enable", {}, session)
        self.send("Fetch.enable", {"patterns": [{"urlPattern": "http*"}]}, session)
        self.send("Emulation.setDeviceMetricsOverride",
                  {"width": width, "height": 900, "deviceScaleFactor": 1, "mobile": False}, session)
        self.send("Page.navigate", {"url": Path(path).resolve().as_uri()}, session)
        self._wait_for("Page.loadEventFired", session)
        if click_links:
            self.send("Runtime.evaluate", {"expression": (
                "document.querySelectorAll('a[href]').forEach(a => { if (a.protocol === 'javascript:') a.click(); })")},
                session)
        settle = time.monotonic() + 1.0  # late console messages
        while time.monotonic() < settle:
            self.send("Runtime.evaluate", {"expression": "1"}, session)
            time.sleep(0.1)
        found = self.send("Runtime.evaluate", {"returnByValue": True, "expression": (
            "JSON.stringify({title: document.title, scripts: document.scripts.length, "
            "text: document.body ? document.body.innerText : '', "
            "images: Array.from(document.images).map(i => "
            "({src: i.src.slice(0, 80), complete: i.complete, width: i.naturalWidth, height: i.naturalHeight}))})")},
            session)
        value = json.loads(found["result"]["value"])
        self.page.images, self.page.title, self.page.scripts = value["images"], value["title"], value["scripts"]
        self.page.text = value["text"]
        for event in list(self.events):
            if event.get("sessionId") != session:
                continue
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled":
                self.page.console.append(" ".join(str(a.get("value", a.get("description", "")))
                                                  for a in params.get("args", [])))
            if method == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                self.page.errors.append("console: " + " ".join(str(a.get("value", a.get("description", "")))
                                                               for a in params.get("args", [])))
            elif method == "Runtime.exceptionThrown":
                details = params.get("exceptionDetails", {})
                self.page.errors.append("exception: " + str(details.get("exception", {}).get("description")
                                                            or details.get("text")))
            elif method == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                entry = params["entry"]
                self.page.errors.append(f"log: {entry.get('text')} {entry.get('url', '')}")
        if screenshot is not None:
            metrics = self.send("Page.getLayoutMetrics", {}, session)
            height = int(metrics["cssContentSize"]["height"])
            self.send("Emulation.setDeviceMetricsOverride",
                      {"width": width, "height": min(height, 16000), "deviceScaleFactor": 1, "mobile": False}, session)
            shot = self.send("Page.captureScreenshot", {"format": "png"}, session)
            Path(screenshot).parent.mkdir(parents=True, exist_ok=True)
            Path(screenshot).write_bytes(base64.b64decode(shot["data"]))
        self.send("Target.closeTarget", {"targetId": target})
        self.events = [e for e in self.events if e.get("sessionId") != session]
        return self.page
