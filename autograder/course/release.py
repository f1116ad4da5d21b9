"""The release: the student notebooks (notebooks/) and the README's Colab links from the
solutions, the solutions' set-up cells, nbgrader's source/ and release/ in a course
folder, and the hand-out of the solutions without hidden tests (outputs/handout/)."""

from __future__ import annotations

import copy
import shutil
from pathlib import Path

import nbformat

from autograder.course import (
    AUTOGRADER,
    BADGE_CELL_ID,
    HANDOUT,
    NOTEBOOKS,
    README,
    SOLUTIONS,
    CourseError,
    assignments,
    colab_url,
    repository_url,
)
from autograder.course import setup_cell
from autograder.course.config import api, check, write_course_config

README_BEGIN = "<!-- colab-links: written by `make release` -->"
README_END = "<!-- end colab-links -->"


def with_setup_cell(notebook, name: str):
    """The notebook with its set-up cell (grade_id ``*-setup``) written from autograder/course/setup_cell.py."""
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
        check(nbgrader.generate_assignment(name, force=True, create=True), f"nbgrader generate_assignment {name}")
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


def ensure_released(root: Path, assignments: list[str]) -> None:
    """The assignments in the gradebook (generated from solutions/ if they are not yet), and
    the course folder's nbgrader_config.py, so that nbgrader's own commands run there
    (formgrader, nbgrader generate_feedback) use the course's configuration."""
    from nbgrader.api import Gradebook, MissingEntry

    write_course_config(root)
    nbgrader = api(root)
    with Gradebook(nbgrader.coursedir.db_url, nbgrader.coursedir.course_id) as gradebook:
        known = set()
        for name in assignments:
            try:
                gradebook.find_assignment(name)
                known.add(name)
            except MissingEntry:
                pass
    if set(assignments) - known or not (root / "release").is_dir():
        prepare_source(root)
        for name in assignments:
            check(nbgrader.generate_assignment(name, force=True, create=True), f"nbgrader generate_assignment {name}")
