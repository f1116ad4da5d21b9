"""A local stand-in for the course's GitHub repository, for the tests of the set-up
cell's git install and of `python -m autograder publish`: a bare repository holding
one commit of the checkout's tracked files as they are (uncommitted edits included;
untracked files are not), with or without the tag the notebooks install from.

The set-up cells and `publish` are pointed at it with BBRL_COURSE_REPOSITORY.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from conftest import REPO

#: an identity for the snapshot's commit (the machine may have none configured)
IDENTITY = ["-c", "user.name=course tests", "-c", "user.email=tests@localhost"]


def _git(*args, cwd=REPO) -> str:
    return subprocess.run(["git", *IDENTITY, *map(str, args)], cwd=cwd, check=True, capture_output=True,
                          text=True).stdout.strip()


def bare_repository(folder: Path, tag: str | None) -> str:
    """A bare repository in folder/course.git with the checkout's snapshot on branch main,
    and on tag `tag` when given; its file:// URL."""
    bare = Path(folder) / "course.git"
    _git("init", "--quiet", "--bare", bare)
    _git("symbolic-ref", "HEAD", "refs/heads/main", cwd=bare)  # as GitHub's: a clone checks main out
    # `git stash create` records the working tree's tracked files without touching them
    # (nothing when there is no change); a commit of that tree alone, without history
    snapshot = _git("stash", "create") or "HEAD"
    commit = _git("commit-tree", _git("rev-parse", f"{snapshot}^{{tree}}"), "-m", "the checkout, for the tests")
    _git("push", "--quiet", bare, f"{commit}:refs/heads/main", *([f"{commit}:refs/tags/{tag}"] if tag else []))
    # file://localhost/...: the pip of Python 3.11's venv (23.2) refuses git+file:/// (no host)
    return f"file://localhost{bare.resolve()}"
