"""Defence in depth for the feedback: no output may show the hidden tests or the solutions.

The sandbox keeps a student's code from reading them; this is the second wall, in case
something does: before the feedback is written, every output of the autograded
notebook that contains a line of a hidden test or of a solution region is replaced by a
note, and the instructor is told which cells. A line counts if it has at least
``MIN_LENGTH`` characters and appears neither in the release (what students already
have) nor in the student's own notebook (their code is theirs to see).
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from autograder.course import BADGE_CELL_ID, course_notebook

MIN_LENGTH = 12
REGIONS = re.compile(r"### BEGIN (HIDDEN TESTS|SOLUTION)(.*?)### END \1", re.S)
REMOVED = "(output removed from this feedback: it showed text of the hidden tests or of the solutions)"


def _lines(text: str) -> set[str]:
    return {line.strip() for line in text.splitlines() if len(line.strip()) >= MIN_LENGTH}


def _secret(source: Path, release: Path) -> set[str]:
    """The lines of the hidden tests and solutions of ``source`` that ``release`` does not show."""
    secret: set[str] = set()
    for cell in course_notebook(source).cells:
        for _, region in REGIONS.findall(cell.source):
            secret |= _lines(region)
    return secret - {line.strip() for c in course_notebook(release).cells for line in c.source.splitlines()}


def protected_lines(source: Path, release: Path, submission: Path, submitted=None) -> set[str]:
    """The lines of the hidden tests and solutions of ``source`` (the instructor's notebook)
    that neither the release nor the student's own notebook shows (``submitted``: that
    notebook, already read)."""
    secret = _secret(source, release)
    try:
        mine = submitted if submitted is not None else nbformat.read(str(submission), as_version=4)
        own = {line.strip() for c in mine.cells for line in c.source.splitlines()}
    except Exception:  # an unreadable submission was not graded
        own = set()
    return secret - own


def _texts(output, in_test_cell: bool) -> list[str]:
    kind = output.get("output_type")
    if kind == "stream":
        return [output.get("text", "")]
    if kind == "error":
        # a test cell's traceback quotes its own (hidden) source: HideHiddenTests reduces it
        # to the message; anything else is the student's doing and is checked whole
        return [f"{output.get('ename', '')}: {output.get('evalue', '')}"] + ([] if in_test_cell else output.get("traceback", []))
    data = output.get("data", {})
    return [value if isinstance(value, str) else "".join(value) for key, value in data.items() if key.startswith("text/")]


def drop_leaked_outputs(notebook, protected: set[str]) -> list[str]:
    """Replaces the outputs that show a protected line by a note; returns the cells' labels."""
    if not protected:
        return []
    cleaned = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code":
            continue
        meta = cell.metadata.get("nbgrader", {})
        in_test_cell = bool(meta.get("grade")) and not meta.get("solution")
        for position, output in enumerate(cell.get("outputs", [])):
            text = "\n".join(_texts(output, in_test_cell))
            if any(line in text for line in protected):
                cell.outputs[position] = nbformat.v4.new_output("stream", name="stdout", text=REMOVED + "\n")
                label = meta.get("grade_id") or f"cell {index + 1}"
                if label not in cleaned:
                    cleaned.append(label)
    return cleaned


def clean_autograded(root: Path, student: str, assignment: str, notebook=None, submitted=None) -> list[str]:
    """Cleans the autograded notebook that the feedback is made from; notes for the instructor.
    ``notebook`` and ``submitted``: the autograded and the student's notebooks, already read."""
    autograded = root / "autograded" / student / assignment / f"{assignment}.ipynb"
    protected = protected_lines(
        root / "source" / assignment / f"{assignment}.ipynb",
        root / "release" / assignment / f"{assignment}.ipynb",
        root / "submitted" / student / assignment / f"{assignment}.ipynb",
        submitted,
    )
    if notebook is None:
        notebook = nbformat.read(str(autograded), as_version=4)
    cleaned = drop_leaked_outputs(notebook, protected)
    badge = [c for c in notebook.cells if c.get("id") == BADGE_CELL_ID]
    if badge:  # "Open in Colab" opens the blank release: a link that feedback has no use for
        notebook.cells = [c for c in notebook.cells if c.get("id") != BADGE_CELL_ID]
    if cleaned or badge:
        nbformat.write(notebook, str(autograded))
    return [f"feedback: the output of {label} was removed (it showed hidden tests or solutions: look at it)"
            for label in cleaned]
