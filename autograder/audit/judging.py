"""Grading the mutants: each one is a submission (the student notebook filled with the
solutions, one function changed), graded by the judge (``autograder.isolation.judge.run``)
as a student's is, against the assignment's tests.

The judge runs a source notebook of the audit's own: the solution notebook whose test
cells are each split in two, the visible part (what the release holds, ``test_x``) and the
hidden part (``test_x.hidden``), in that order in the same namespace. One run thus tells
what all the tests catch and what the visible ones alone catch. Test cells tagged ``slow``
(the TD3 learning test) are left out unless ``learning``.
"""

from __future__ import annotations

import copy
import json
import os
import re
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import nbformat

from autograder.audit.mutants import MARKERS, Mutant
from autograder.course import NOTEBOOKS, REPO, SOLUTIONS, CourseError
from autograder.course.preprocessors import HIDDEN, TIME_LIMIT, is_test

HIDDEN_PART = re.compile(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", re.S)
#: the suffix of the grade_id of a test cell's hidden part in the audit's source
HIDDEN_SUFFIX = ".hidden"
#: a test cell's time limit in the audit: the solution's take well under a second
TIMEOUT = 20.0
#: the id of the solution itself, graded first: every test must pass on it
SOLUTION = "solution"


@dataclass
class Outcome:
    """What the tests did to one mutant."""

    id: str
    failed: list[str] = field(default_factory=list)  # the tests (grade_id, .hidden for a hidden part) that failed
    errors: dict[str, str] = field(default_factory=dict)  # their first error line
    seconds: float = 0.0
    broken: str | None = None  # the judge could not run (not a verdict on the mutant)

    @property
    def caught(self) -> bool:
        return bool(self.failed)

    @property
    def caught_visible(self) -> bool:
        return any(not name.endswith(HIDDEN_SUFFIX) for name in self.failed)


def audit_source(assignment: str, learning: bool = False, solutions: Path = SOLUTIONS):
    """The notebook the judge runs: the solution's, each test cell split into its visible
    part and its hidden part, the slow ones left out unless ``learning``."""
    notebook = nbformat.read(str(Path(solutions) / f"{assignment}.ipynb"), as_version=4)
    cells = []
    for cell in notebook.cells:
        if not is_test(cell):
            cells.append(cell)
            continue
        if "slow" in cell.metadata.get("tags", []) and not learning:
            continue
        visible = copy.deepcopy(cell)
        visible.source = HIDDEN.sub("", cell.source)
        cells.append(visible)
        hidden = "\n".join(HIDDEN_PART.findall(cell.source))
        if hidden.strip():
            part = copy.deepcopy(cell)
            part.source = hidden
            part.metadata["nbgrader"]["grade_id"] = cell.metadata["nbgrader"]["grade_id"] + HIDDEN_SUFFIX
            part.id = (cell.get("id") or "cell")[:50] + "-hidden"
            cells.append(part)
    notebook.cells = cells
    return notebook


def filled_notebook(assignment: str, solutions: Path = SOLUTIONS, notebooks: Path = NOTEBOOKS):
    """The student notebook (the release) with every solution cell filled in from the solutions."""
    student = nbformat.read(str(Path(notebooks) / f"{assignment}.ipynb"), as_version=4)
    solution = nbformat.read(str(Path(solutions) / f"{assignment}.ipynb"), as_version=4)
    answers = {c.metadata["nbgrader"]["grade_id"]: MARKERS.sub("", c.source) for c in solution.cells
               if c.metadata.get("nbgrader", {}).get("solution")}
    for cell in student.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return student


def mutant_notebook(filled, mutant: Mutant | None):
    """The filled notebook with the mutant's cell in place of the solution's."""
    notebook = copy.deepcopy(filled)
    if mutant is not None:
        cells = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == mutant.cell]
        if not cells:
            raise CourseError(f"notebooks/{mutant.assignment}.ipynb has no cell {mutant.cell}: run make release")
        cells[0].source = mutant.source
    return notebook


def _start_worker():
    """A worker process: the environment the judge has when a submission is graded, and the
    imports of a grading's fork server (``autograder.grading.zygote.preload``). The worker only
    imports and forks: each mutant is judged in a child forked from it, whose student's
    process, without a sandbox, is forked in turn (``judge.fork_channel``), the imports done."""
    os.environ.update(NBGRADER_EXECUTION="autograde", MPLBACKEND="Agg")
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    os.chdir(REPO)
    from autograder.grading import zygote

    zygote.preload()


def _judged(source: Path, submission: Path, limits, timeout: float, verdicts: Path):
    """In a child forked from a worker: the judge's verdicts, written to ``verdicts``."""
    from autograder.isolation import judge

    outcome = judge.run(source, submission, limits, timeout, fork=limits is None)
    verdicts.write_text(json.dumps(outcome))


def grade_mutant(source: str, assignment: str, mutant_id: str, notebook_json: str, trusted: bool,
                 timeout: float) -> Outcome:
    """One mutant through the judge (in a child forked from a worker process)."""
    from autograder.grading import zygote
    from autograder.isolation import sandbox

    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course-audit-") as folder:
        submission = Path(folder) / assignment
        submission.mkdir()
        (submission / f"{assignment}.ipynb").write_text(notebook_json)
        verdicts_file, log = Path(folder) / "verdicts.json", Path(folder) / "judge.log"
        limits = None if trusted else sandbox.Limits()
        pid = zygote.fork_start(_judged, (Path(source), submission, limits, timeout, verdicts_file), log)
        code = zygote.wait(pid)
        if code != 0 or not verdicts_file.exists():  # the judge itself failed: say so, never count it as caught
            lines = [line for line in log.read_text(errors="replace").splitlines()
                     if line.strip() and not line.startswith("[student's")] if log.exists() else []
            return Outcome(mutant_id, broken=(lines or [f"the judge's exit code {code}"])[-1][:300],
                           seconds=time.perf_counter() - start)
        verdicts = json.loads(verdicts_file.read_text())
    outcome = Outcome(mutant_id, seconds=time.perf_counter() - start)
    for name, verdict in verdicts.items():
        if name.startswith("_") or not verdict.get("error"):
            continue
        ename, message = verdict["error"]
        outcome.failed.append(name)
        first = (str(message).strip().splitlines() or [""])[0]
        outcome.errors[name] = f"{ename}: {first}"[:200] if ename != TIME_LIMIT else f"{ename} ({timeout:g} s)"
    return outcome


def grade_all(assignment: str, selected: list[Mutant], jobs: int = 2, trusted: bool = True, learning: bool = False,
              timeout: float = TIMEOUT, solutions: Path = SOLUTIONS, notebooks: Path = NOTEBOOKS,
              progress=None) -> tuple[Outcome, list[Outcome]]:
    """The solution's outcome (every test must pass) and each mutant's, graded ``jobs`` at a time."""
    filled = filled_notebook(assignment, solutions, notebooks)
    audited = audit_source(assignment, learning, solutions)
    known = {c.metadata.get("nbgrader", {}).get("grade_id") for c in audited.cells}
    # a test cell left out (slow) goes from the submission too: the judge would run it in the
    # student's process as a cell the student added
    filled.cells = [c for c in filled.cells if not (c.metadata.get("nbgrader", {}).get("grade") and
                                                    c.metadata["nbgrader"].get("grade_id") not in known
                                                    and not c.metadata["nbgrader"].get("solution"))]
    with tempfile.TemporaryDirectory(prefix="course-audit-source-") as folder:
        source = Path(folder) / f"{assignment}.ipynb"
        nbformat.write(audited, str(source))
        tasks = [(SOLUTION, None)] + [(m.id, m) for m in selected]
        with ProcessPoolExecutor(max_workers=max(1, jobs), mp_context=get_context("spawn"),
                                 initializer=_start_worker) as pool:
            futures = [pool.submit(grade_mutant, str(source), assignment, key,
                                   nbformat.writes(mutant_notebook(filled, mutant)), trusted, timeout)
                       for key, mutant in tasks]
            outcomes = []
            for future in futures:
                outcomes.append(future.result())
                if progress is not None:
                    progress(outcomes[-1])
    return outcomes[0], outcomes[1:]
