"""The course: where its files are, its assignments, and the errors an instructor fixes.

The course's layers, from the bottom (no module imports one above it):

- ``autograder.course``: the course itself: its paths and assignments (here), nbgrader's
  configuration and API (``config``), the notebooks' set-up cell (``setup_cell``), the
  release and hand-out (``release``), nbgrader's preprocessors (``preprocessors``),
  formgrader (``formgrader``), headless execution of notebooks (``run_notebooks``);
- ``autograder.isolation``: the student's code apart from the verdicts: the sandbox,
  the student's process (``channel``), the judge, and what makes the student's text and
  markup inert (``inert``);
- ``autograder.reporting``: what grading leaves for people: the results, the tables and
  CSVs, the class report, the feedback's last check;
- ``autograder.grading``: grading a class: the driver, one submission, Dask, the fork server;
- ``autograder.cli``: the command line, ``python -m autograder``;
- ``autograder/nbgrader_config.py``: nbgrader's configuration, loaded by path (by
  ``course.config`` and by nbgrader in a course folder), which may use every layer.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
AUTOGRADER = REPO / "autograder"
SOLUTIONS = REPO / "solutions"
NOTEBOOKS = REPO / "notebooks"
README = REPO / "README.md"
HANDOUT = REPO / "outputs" / "handout"

BADGE_CELL_ID = "open-in-colab"
#: where a course folder keeps what `python -m autograder collect` recorded (people, hand-in times)
COLLECTED = "collected"
#: how many times a learning test that failed trains again, with one of the student's functions
#: replaced by the course's each time, to name the one that stops it (``grade --retrainings``)
RETRAININGS = 4
#: enames of the error outputs the grader adds to a notebook (``autograder.course.preprocessors``
#: writes them, the judge and the reports read them); here, so that a process that only reads
#: them (a Dask worker) need not import nbgrader
TIME_LIMIT = "TimeLimitExceeded"
KERNEL_DIED = "KernelDied"
TAMPERING = "TamperingSuspected"  # a test that ran while the student's code had tampered (judge.py)


def count(n: int, noun: str, plural: str | None = None) -> str:
    """``n`` and its noun, singular for one: ``count(1, "student")`` is "1 student"."""
    return f"{n} {noun if n == 1 else plural or noun + 's'}"


class CourseError(Exception):
    """A problem an instructor must fix; the message says what and where."""


def assignments() -> list[str]:
    """The assignments: one per solution notebook, named after it (01-ddpg, 02-td3)."""
    names = sorted(p.stem for p in SOLUTIONS.glob("*.ipynb"))
    if not names:
        raise CourseError(f"no notebook in {SOLUTIONS}: the solution notebooks are the course's source")
    return names


def repository_url() -> str:
    """The course's repository, from pyproject.toml: the one place where it is set."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    try:
        url = project["urls"]["Repository"].rstrip("/")
    except KeyError:
        raise CourseError("pyproject.toml has no [project.urls] Repository = \"https://github.com/OWNER/NAME\"") from None
    if not re.fullmatch(r"https://github\.com/[\w.-]+/[\w.-]+", url):
        raise CourseError(f"pyproject.toml: Repository = {url!r} is not https://github.com/OWNER/NAME")
    return url


def colab_url(notebook_name: str, branch: str = "main") -> str:
    path = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{branch}/notebooks/{notebook_name}"


def course_root(path: str | Path) -> Path:
    """The course folder an instructor typed (relative, with ~, with spaces), as an absolute path."""
    root = Path(path).expanduser().resolve()
    if not root.is_dir():
        raise CourseError(
            f"no course folder {path} ({root} does not exist): give --root the folder that holds submitted/"
        )
    return root


def shown(path: Path) -> str:
    """A path as the instructor typed it: relative to the working directory when inside it."""
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


_NOTEBOOKS: dict[tuple, object] = {}


def course_notebook(path: Path):
    """A notebook of the course's own (a source or a release, never a student's), read once
    while the file is unchanged: the driver records thousands of results of a few
    assignments. Shared between callers: read it, never change it."""
    import nbformat

    stat = path.stat()
    key = (str(path.resolve()), stat.st_mtime_ns, stat.st_size)
    if key not in _NOTEBOOKS:
        if len(_NOTEBOOKS) > 64:
            _NOTEBOOKS.clear()
        _NOTEBOOKS[key] = nbformat.read(str(path), as_version=4)
    return _NOTEBOOKS[key]
