"""The course's nbgrader operations, through nbgrader's Python API (one process, no
5-second start-up per command), with errors that say what to do.

    python -m autograder release     # solutions/ -> notebooks/ (student versions), README links
    python -m autograder publish     # checks that the repository holds the tag v<version> students install
    python -m autograder handout     # solutions without hidden tests -> outputs/handout/
    python -m autograder grade       # grade submitted/ (see autograder/grade.py)
    python -m autograder formgrader  # JupyterLab with formgrader, to grade answers by hand
"""

from __future__ import annotations

import copy
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import nbformat

from autograder import setup_cell

REPO = Path(__file__).resolve().parent.parent
AUTOGRADER = REPO / "autograder"
SOLUTIONS = REPO / "solutions"
NOTEBOOKS = REPO / "notebooks"
README = REPO / "README.md"
HANDOUT = REPO / "outputs" / "handout"

BADGE_CELL_ID = "open-in-colab"
README_BEGIN = "<!-- colab-links: written by `make release` -->"
README_END = "<!-- end colab-links -->"


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


def colab_url(notebook_name: str, branch: str = "main") -> str:
    path = repository_url().removeprefix("https://github.com/")
    return f"https://colab.research.google.com/github/{path}/blob/{branch}/notebooks/{notebook_name}"


def load_config():
    """nbgrader's configuration, from autograder/nbgrader_config.py; an error in it stops here."""
    from traitlets.config.loader import PyFileConfigLoader

    path = AUTOGRADER / "nbgrader_config.py"
    try:
        return PyFileConfigLoader(path.name, path=str(AUTOGRADER)).load_config()
    except Exception as error:
        raise CourseError(f"{path} raised {type(error).__name__}: {error}. Fix it: nbgrader would ignore it.") from error


def api(root: Path | None = None, sandbox=None, verdicts: Path | None = None, record: bool = False,
        judge_pid: int = 0):
    """An NbGraderAPI that reads the course's configuration (it does not by itself).

    ``root`` replaces the course folder (autograder/) and its gradebook. ``sandbox``, a
    ``sandbox.Limits``, runs the students' kernels in the sandbox with those limits
    (autograder/sandbox.py); None runs them as the grader's own processes. ``verdicts``,
    the judge's (autograder/judge.py), gives the test cells their outputs: the kernel
    then runs the student's cells only; ``judge_pid``, the judge still running as a child of
    this process, is waited for before they are read. ``record`` records what a worker graded (the
    notebook it executed, in .incoming/<student>/<assignment>/): nothing is executed.
    """
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    # nbgrader runs the `alembic` command of its environment: make sure it is on PATH
    # even when this environment's python was called by its full path
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = load_config()
    if root is not None:
        # absolute: nbgrader changes directory, and the gradebook's URL must still hold
        root = Path(root).expanduser().resolve()
        config.CourseDirectory.root = str(root)
        config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    if sandbox is not None:
        from autograder.sandbox import check_available

        config.CourseExecute.kernel_manager_class = "autograder.sandbox.SandboxKernelManager"
        config.SandboxKernelManager.bwrap = check_available()  # checked once per process
        for name, value in vars(sandbox).items():
            setattr(config.SandboxKernelManager, name, value)
    if record:
        from nbgrader.preprocessors import (
            AssignLatePenalties,
            CheckCellMetadata,
            DeduplicateIds,
            OverwriteCells,
            OverwriteKernelspec,
            SaveAutoGrades,
        )

        config.CourseDirectory.submitted_directory = ".incoming"
        # nbgrader's sanitizing, without ClearOutput: the outputs are the worker's
        config.Autograde.sanitize_preprocessors = [DeduplicateIds, OverwriteKernelspec, OverwriteCells, CheckCellMetadata]
        config.Autograde.autograde_preprocessors = [SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
    if verdicts is not None:
        config.CourseExecute.verdicts = config.JudgeVerdicts.verdicts = str(Path(verdicts).resolve())
        config.JudgeVerdicts.judge_pid = judge_pid
    return NbGraderAPI(coursedir=CourseDirectory(config=config), config=config)


COURSE_CONFIG = """\
# Written by the course kit (python -m autograder): nbgrader's own commands run from this
# folder (formgrader, nbgrader generate_feedback, ...) use the course's configuration,
# with this folder as the course and its gradebook. Without it, nbgrader's defaults
# would show the hidden tests in the feedback.
c = get_config()  # noqa: F821
load_subconfig({config!r})  # noqa: F821
c.CourseDirectory.root = {root!r}
c.CourseDirectory.db_url = {db_url!r}
c.Exchange.root = {exchange!r}
"""


def write_course_config(root: Path) -> Path:
    """root/nbgrader_config.py, which loads the course's configuration (autograder/'s own
    folder has it already)."""
    root = Path(root).expanduser().resolve()
    path = root / "nbgrader_config.py"
    if root == AUTOGRADER.resolve():
        return path
    text = COURSE_CONFIG.format(config=str(AUTOGRADER / "nbgrader_config.py"), root=str(root),
                                db_url=f"sqlite:///{root / 'gradebook.db'}", exchange=str(root / "exchange"))
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path


def formgrader(root: Path = AUTOGRADER, port: int = 8888) -> int:
    """Starts JupyterLab with nbgrader's formgrader on the course folder, on 127.0.0.1."""
    import subprocess

    from autograder import grade

    root = grade.course_root(root)
    grade.ensure_released(root, assignments())
    api(root)  # puts this environment's bin/ on PATH (nbgrader runs alembic)
    print(f"formgrader of {root}: open http://127.0.0.1:{port}/formgrader (the token is in the address "
          "JupyterLab prints below; in JupyterLab, the menu Nbgrader > Formgrader). Ctrl-C stops it.", flush=True)
    command = [sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1",
               f"--ServerApp.port={port}", "--ServerApp.port_retries=0", f"--ServerApp.root_dir={root}"]
    if os.geteuid() == 0:  # a container or CI; JupyterLab refuses root otherwise
        command.append("--allow-root")
    try:
        return subprocess.call(command, cwd=root)
    except KeyboardInterrupt:
        return 0


def _check(result: dict, what: str):
    if not result.get("success"):
        raise CourseError(f"{what} failed:\n{result.get('log', '')}\n{result.get('error', '')}")


def with_setup_cell(notebook, name: str):
    """The notebook with its set-up cell (grade_id ``*-setup``) written from autograder/setup_cell.py."""
    cells = [cell for cell in notebook.cells if setup_cell.is_setup_cell(cell)]
    if len(cells) != 1:
        raise CourseError(f"solutions/{name}.ipynb: expected one set-up cell (grade_id ending in -setup), found {len(cells)}")
    try:
        cells[0].source = setup_cell.render(repository_url())
    except ValueError as error:
        raise CourseError(str(error)) from None
    return notebook


def update_solution_setup_cells(solutions: Path = SOLUTIONS) -> list[Path]:
    """Rewrites the set-up cell of the solution notebooks that differ from the one source."""
    changed = []
    for name in assignments():
        path = Path(solutions) / f"{name}.ipynb"
        notebook = nbformat.read(str(path), as_version=4)
        before = [cell.source for cell in notebook.cells]
        if [cell.source for cell in with_setup_cell(notebook, name).cells] != before:
            nbformat.write(notebook, str(path))
            changed.append(path)
    return changed


def prepare_source(root: Path = AUTOGRADER) -> None:
    """Copies solutions/ into nbgrader's source/ folder, with the set-up cell of this release."""
    source = Path(root) / "source"
    shutil.rmtree(source, ignore_errors=True)
    for name in assignments():
        notebook = with_setup_cell(nbformat.read(str(SOLUTIONS / f"{name}.ipynb"), as_version=4), name)
        (source / name).mkdir(parents=True)
        nbformat.write(notebook, str(source / name / f"{name}.ipynb"))


def _badge_cell(name: str):
    cell = nbformat.v4.new_markdown_cell(
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(name)})"
    )
    cell.id = BADGE_CELL_ID
    return cell


def _clean(notebook):
    """Notebook metadata reduced to the kernel; no outputs, no execution counts."""
    notebook.metadata = {k: v for k, v in notebook.metadata.items() if k in ("kernelspec", "language_info")}
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = []
            cell.execution_count = None
    return notebook


def release(notebooks: Path = NOTEBOOKS, readme: Path = README, root: Path = AUTOGRADER) -> list[Path]:
    """Generates the student notebooks into notebooks/ and the Colab links of the README.

    Also records the assignments and their tests in the gradebook (root/gradebook.db).
    """
    notebooks, root = Path(notebooks), Path(root)
    prepare_source(root)
    nbgrader = api(root)
    written = []
    notebooks.mkdir(parents=True, exist_ok=True)
    for name in assignments():
        _check(nbgrader.generate_assignment(name, force=True, create=True), f"nbgrader generate_assignment {name}")
        notebook = nbformat.read(str(root / "release" / name / f"{name}.ipynb"), as_version=4)
        notebook.cells.insert(0, _badge_cell(f"{name}.ipynb"))
        target = notebooks / f"{name}.ipynb"
        nbformat.write(_clean(notebook), str(target))
        written.append(target)
    for stale in set(notebooks.glob("*.ipynb")) - set(written):
        stale.unlink()
    update_readme(readme)
    return written


def update_readme(readme: Path = README) -> None:
    """Rewrites the README's table of Colab links between its markers."""
    README = Path(readme)
    text = README.read_text()
    if README_BEGIN not in text or README_END not in text:
        raise CourseError(f"README.md lacks the markers {README_BEGIN!r} and {README_END!r}")
    rows = [
        f"| `{name}` | [![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({colab_url(name + '.ipynb')}) |"
        for name in assignments()
    ]
    block = "\n".join([README_BEGIN, "| notebook | open it |", "| --- | --- |", *rows, README_END])
    start, end = text.index(README_BEGIN), text.index(README_END) + len(README_END)
    README.write_text(text[:start] + block + text[end:])


def handout() -> list[Path]:
    """The solutions for after the deadline: hidden tests, outputs and marking notes removed."""
    from nbgrader.preprocessors import ClearHiddenTests, ClearMarkScheme

    HANDOUT.mkdir(parents=True, exist_ok=True)
    written = []
    for name in assignments():
        notebook = nbformat.read(str(SOLUTIONS / f"{name}.ipynb"), as_version=4)
        resources: dict = {}
        for preprocessor in (ClearHiddenTests(), ClearMarkScheme()):
            notebook, resources = preprocessor.preprocess(copy.deepcopy(notebook), resources)
        target = HANDOUT / f"{name}-solution.ipynb"
        nbformat.write(_clean(notebook), str(target))
        written.append(target)
    return written


def _report(folder: str) -> int:
    """``python -m autograder report``: grades/report.html again, from the course folder."""
    from autograder import report
    from autograder.grade import _shown, course_root

    root = course_root(folder)
    path = report.write(root, assignments())
    if path is None:
        raise CourseError(f"nothing graded in {_shown(root)}: no grades/<assignment>.csv (run make grade first)")
    print(f"wrote {_shown(path)}")
    return 0


def main(argv=None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=["release", "publish", "handout", "formgrader", "report"])
    parser.add_argument("--root", default=str(AUTOGRADER), help="formgrader, report: the course folder (autograder/)")
    parser.add_argument("--port", type=int, default=8888, help="formgrader: the port on 127.0.0.1")
    args = parser.parse_args(argv)
    try:
        if args.command == "formgrader":
            return formgrader(Path(args.root), args.port)
        if args.command == "report":
            return _report(args.root)
        if args.command == "release":
            for path in update_solution_setup_cells():
                print(f"wrote the set-up cell of {path.relative_to(REPO)}")
            for path in release():
                print(f"wrote {path.relative_to(REPO)}")
            print("wrote the Colab links of README.md")
            status, line = check_tag(timeout=10)
            # the tag comes after the release is committed: here a missing one is a reminder
            print({"present": "", "missing": "note: ", "unreachable": "warning: "}[status] + line
                  + (" (after committing this release), then run `make publish`" if status == "missing" else ""))
        elif args.command == "publish":
            status, line = check_tag()
            if status == "missing":
                raise CourseError(line)
            print(("warning: " if status == "unreachable" else "") + line)
        elif args.command == "handout":
            for path in handout():
                print(f"wrote {path.relative_to(REPO)}")
    except CourseError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0
