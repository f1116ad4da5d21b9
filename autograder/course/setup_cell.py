"""The notebooks' set-up cell: one source, written into every notebook by `make release`.

The cell installs what the notebook's code imports at run time (its own imports, the
course module's, and what comes in through bbrl: ``bootstrapped`` for ``bbrl.stats``)
and is missing, or present at another version where the version matters. A second
run installs nothing. The versions come from requirements.txt and
requirements-nodeps.txt, the course module's from pyproject.toml: a pin changes in one
place, and the release writes it into the notebooks.

Why not easypip (the BBRL course's own installer)? It can pin versions and pass
``--no-deps`` through its lower-level ``install``, but it must itself be installed
first, it runs one pip call per package (pip cannot resolve the set together, and a
Colab start-up pays each call), and a ``name @ git+URL`` requirement counts as
satisfied by any installed version, so a student's stale course module would not be
replaced by the version the notebook was released with. This cell does the same
version check with ``importlib.metadata``, in one pip call per kind of install.

A failed install stops the notebook with one line (``SetupError``, whose
``_render_traceback_`` is what Jupyter and Colab show instead of a traceback): when the
course module was among what failed, ``git ls-remote`` tells whether its repository
lacks the tag ``v<version>`` or cannot be read, and the line says to ask the instructor
to push the tag there; otherwise it gives pip's own error. ``python -m autograder
publish`` makes the same check before students are told. ``BBRL_COURSE_REPOSITORY``, when
set, replaces the repository the cell installs from (tests/test_colab.py points it at a
local bare repository); the released cell carries pyproject.toml's address.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

#: (distribution, why): installed at requirements.txt's pin, and replaced when another
#: version is installed (Colab's moviepy 1 lacks moviepy 2's API)
EXACT = [
    ("gymnasium", "the environments (with Pendulum and LunarLander's Box2D)"),
    ("box2d", "LunarLanderContinuous-v3"),
    ("omegaconf", "the configurations"),
    ("moviepy", "the videos (Colab has moviepy 1)"),
    ("bootstrapped", "bbrl.stats, Welch's t-test in the experiment"),
]
#: installed at requirements.txt's pin only when missing: Colab has them (any version works)
PRESENT = ["torch", "numpy", "scipy", "pandas", "matplotlib", "tqdm", "tensorboard", "nbformat"]
#: installed with --no-deps (bbrl declares torchvision and opencv-python, never imported)
NO_DEPS = ["bbrl"]

SETUP_ID = re.compile(r"-setup$")

TEMPLATE = '''\
# Set-up: installs what this notebook needs and is missing (in Colab, for instance),
# pinned; does nothing when everything is there. The same cell is in every notebook
# of the course (written by `make release` from autograder/course/setup_cell.py).
import importlib.metadata
import os
import re
import subprocess
import sys

# The course's repository, and the version of its module `bbrl_course` that this
# notebook was released with (a later change of the module cannot break it)
COURSE_REPOSITORY = "{repository}"
COURSE_VERSION = "{version}"
# (the course's own tests install from a copy of the repository: BBRL_COURSE_REPOSITORY)
COURSE_REPOSITORY = os.environ.get("BBRL_COURSE_REPOSITORY", COURSE_REPOSITORY)
COURSE_TAG = f"v{{COURSE_VERSION}}"

# (distribution, version, pip requirement, exact): exact=True replaces another
# installed version; exact=False accepts any (Colab's own torch, numpy, ...)
PACKAGES = [
{packages}
]
# bbrl declares torchvision and opencv-python but never imports them: --no-deps
PACKAGES_NO_DEPS = [
{packages_no_deps}
    ("bbrl-course", COURSE_VERSION, f"bbrl-course @ git+{{COURSE_REPOSITORY}}@{{COURSE_TAG}}", True),
]


class SetupError(Exception):
    """Stops the notebook with one line, without a traceback (as Jupyter and Colab show it)."""

    def _render_traceback_(self):
        return [f"SetupError: {{self}}"]


def needs_install(distribution, version, exact):
    try:
        installed = importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return True
    return exact and installed != version


def course_tag_problem():
    """Why pip cannot fetch the course module's tag from its repository, or None."""
    command = ["git", "ls-remote", COURSE_REPOSITORY, f"refs/tags/{{COURSE_TAG}}"]
    try:
        answer = subprocess.run(command, capture_output=True, text=True, env={{**os.environ, "GIT_TERMINAL_PROMPT": "0"}})
    except OSError:
        return "git is not installed"
    if answer.returncode != 0:
        return "could not read the repository (" + (answer.stderr.strip().splitlines() or ["no answer"])[0] + ")"
    return None if answer.stdout.strip() else f"it has no tag {{COURSE_TAG}}"


def install_missing():
    """Installs the packages that are missing or at another version; nothing otherwise.
    A failure stops the notebook with one line that says what to do."""
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    for packages, options in ((PACKAGES, []), (PACKAGES_NO_DEPS, ["--no-deps"])):
        missing = [requirement for *check, requirement, exact in packages if needs_install(*check, exact)]
        if missing:
            print("Installing", ", ".join(missing))
            done = subprocess.run(pip + options + missing, capture_output=True, text=True)
            if done.returncode == 0:
                continue
            problem = any(r.startswith("bbrl-course") for r in missing) and course_tag_problem()
            if problem:
                raise SetupError(f"could not install the course module from {{COURSE_REPOSITORY}} at tag {{COURSE_TAG}}: "
                                 f"{{problem}}. Ask your instructor to push tag {{COURSE_TAG}} to {{COURSE_REPOSITORY}}")
            lines = [re.sub(r"\\x1b\\[[0-9;]*m", "", line).strip() for line in done.stderr.splitlines()]
            error = ([line for line in lines if line.startswith(("ERROR:", "× "))] or [line for line in lines if line] or ["?"])[0]
            raise SetupError(f"pip could not install {{', '.join(missing)}}: {{error}} (check the network, run this cell again)")


install_missing()'''


def pins() -> dict[str, tuple[str, str]]:
    """{distribution: (requirement as written, version)} from requirements*.txt."""
    found = {}
    for name in ("requirements.txt", "requirements-nodeps.txt"):
        for line in (REPO / name).read_text().splitlines():
            match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?==([^\s#]+)\s*(#.*)?", line.strip())
            if match:
                found[match.group(1).lower()] = (f"{match.group(1)}{match.group(2) or ''}=={match.group(3)}", match.group(3))
    return found


def course_version() -> str:
    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def render(repository: str) -> str:
    """The set-up cell's source, for the course's repository address."""
    known = pins()
    missing = [name for name in [*(n for n, _ in EXACT), *PRESENT, *NO_DEPS] if name not in known]
    if missing:
        raise ValueError(f"the set-up cell needs a pin (name==version) in requirements.txt for {', '.join(missing)}")

    def row(name, exact):
        requirement, version = known[name]
        return f'    ("{name}", "{version}", "{requirement}", {exact}),'

    packages = [row(name, True) for name, _ in EXACT] + [row(name, False) for name in PRESENT]
    return TEMPLATE.format(
        repository=repository,
        version=course_version(),
        packages="\n".join(packages),
        packages_no_deps="\n".join(row(name, True) for name in NO_DEPS),
    )


def is_setup_cell(cell) -> bool:
    return cell.cell_type == "code" and bool(SETUP_ID.search(cell.metadata.get("nbgrader", {}).get("grade_id", "")))
