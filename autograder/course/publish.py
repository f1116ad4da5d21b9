"""Publishing: the check that the course's repository holds the tag ``v<version>`` from
which the notebooks' set-up cells install the course module (``python -m autograder
publish``, ``make publish``; ``release`` prints it as a reminder)."""

from __future__ import annotations

import os
import re
import subprocess

from autograder.course import repository_url
from autograder.course import setup_cell

#: Another repository for the course module than pyproject.toml's, for `publish`'s check
#: and the set-up cells (the tests use a local bare repository); the released notebooks
#: always carry pyproject.toml's address
REPOSITORY_VARIABLE = "BBRL_COURSE_REPOSITORY"
#: git's words when it could not reach the host at all (offline, no DNS, a firewall)
UNREACHABLE = re.compile(
    r"could not resolve (host|proxy)|failed to connect|couldn't connect|timed out|connection refused"
    r"|network is unreachable|no route to host|temporary failure in name resolution|from proxy|tunnel failed",
    re.IGNORECASE,
)


def check_tag(url: str | None = None, version: str | None = None, timeout: float = 30) -> tuple[str, str]:
    """Whether the repository that the notebooks install the course module from holds its
    tag, by ``git ls-remote``: ("present" | "missing" | "unreachable", one line to print).

    "missing" covers a repository that answers without the tag and one that does not
    answer as a repository (absent, private, mistyped): pip would fail in both.
    "unreachable" is no answer from the host at all (offline): nothing was checked.
    """
    url = url or os.environ.get(REPOSITORY_VARIABLE) or repository_url()
    tag = f"v{version or setup_cell.course_version()}"
    push = f"push the tag (`git tag {tag} && git push origin {tag}`) from the released commit"
    command = ["git", "ls-remote", url, f"refs/tags/{tag}"]
    environment = {**os.environ, "GIT_TERMINAL_PROMPT": "0", "GIT_ASKPASS": "", "SSH_ASKPASS": ""}
    try:
        answer = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=environment,
                                stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return "unreachable", f"skipped the check of tag {tag} on {url}: git is not installed"
    except subprocess.TimeoutExpired:
        return "unreachable", f"skipped the check of tag {tag} on {url}: no answer within {timeout:g} s"
    if answer.returncode != 0:
        reason = next((line.removeprefix("fatal: ") for line in answer.stderr.splitlines() if line.strip()), "no message")
        if UNREACHABLE.search(answer.stderr):
            return "unreachable", (f"skipped the check of tag {tag} on {url}: could not reach it ({reason}); "
                                   f"check again where it answers, before telling students")
        return "missing", (f"{url} does not answer as a git repository ({reason}): students could not install the "
                           f"course module; check [project.urls] Repository in pyproject.toml and that the "
                           f"repository is public, then {push}")
    if not answer.stdout.strip():
        return "missing", f"{url} has no tag {tag}: students could not install the course module; {push}"
    return "present", f"{url} holds tag {tag} ({answer.stdout.split()[0][:12]}): the notebooks can install the course module"
