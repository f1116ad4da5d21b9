"""nbgrader's configuration and API for the course (nbgrader's ``NbGraderAPI`` reads no
configuration unless it is given one), and the course folder's own ``nbgrader_config.py``."""

from __future__ import annotations

import functools
import os
import sys
from pathlib import Path

from autograder.course import AUTOGRADER, CourseError


def load_config():
    """nbgrader's configuration, from autograder/nbgrader_config.py; an error in it stops here."""
    from traitlets.config.loader import PyFileConfigLoader

    path = AUTOGRADER / "nbgrader_config.py"
    try:
        return PyFileConfigLoader(path.name, path=str(AUTOGRADER)).load_config()
    except Exception as error:
        raise CourseError(f"{path} raised {type(error).__name__}: {error}. Fix it: nbgrader would ignore it.") from error


@functools.lru_cache(maxsize=1)
def alembic_head() -> str:
    """The version of nbgrader's gradebook schema (its alembic migrations' head), which
    nbgrader stamps in every gradebook it creates. nbgrader 0.9.6 asks a new process for it
    (``alembic heads``: 2.3 CPU-seconds, a Python that imports SQLAlchemy and alembic, for
    each new course folder); alembic's own API gives the same answer here in 0.08 s."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory
    from nbgrader.dbutil import ALEMBIC_DIR

    config = Config()
    config.set_main_option("script_location", ALEMBIC_DIR)
    return ScriptDirectory.from_config(config).get_current_head()


def api(root: Path | None = None, kernel: dict | None = None, verdicts: Path | None = None,
        judge_pid: int = 0, deadline: float = 0.0, budget: float = 0.0):
    """An NbGraderAPI that reads the course's configuration (it does not by itself).

    ``root`` replaces the course folder (autograder/) and its gradebook. ``kernel``, the
    settings of the students' kernels (``autograder.isolation.sandbox.kernel_settings``: a
    sandboxed kernel manager and its limits), by configurable class; None runs them as the
    grader's own processes. ``verdicts``, the judge's (``autograder.isolation.judge``): no
    kernel runs, the cells get the outputs of the judge's student's process and the test
    cells the judge's; ``judge_pid``, the judge still running as a child of this process, is
    waited for before they are read.
    """
    import nbgrader.api
    from nbgrader.apps import NbGraderAPI
    from nbgrader.coursedir import CourseDirectory

    # a gradebook created by this process is stamped with the schema's version from
    # alembic's API here, not from a new process (see alembic_head)
    nbgrader.api.get_alembic_version = alembic_head
    # nbgrader's own commands (formgrader) run the `alembic` command of its environment:
    # make sure it is on PATH even when this environment's python was called by its full path
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    config = load_config()
    if root is not None:
        # absolute: nbgrader changes directory, and the gradebook's URL must still hold
        root = Path(root).expanduser().resolve()
        config.CourseDirectory.root = str(root)
        config.CourseDirectory.db_url = f"sqlite:///{root / 'gradebook.db'}"
    for section, values in (kernel or {}).items():
        for name, value in values.items():
            setattr(config[section], name, value)
    if verdicts is not None:
        config.CourseExecute.verdicts = config.JudgeVerdicts.verdicts = str(Path(verdicts).resolve())
        config.CourseExecute.judge_pid = config.JudgeVerdicts.judge_pid = judge_pid
    if deadline:  # the submission's time budget (s) runs out at deadline (a time.time())
        config.CourseExecute.deadline = config.JudgeVerdicts.deadline = deadline
        config.CourseExecute.budget = budget
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


def check(result: dict, what: str):
    """A CourseError with nbgrader's log when an API call failed."""
    if not result.get("success"):
        raise CourseError(f"{what} failed:\n{result.get('log', '')}\n{result.get('error', '')}")
