"""Loads the definitions of a course notebook as a Python module.

Tests, benchmarks and the grader use the code of the notebooks themselves (the
single source of truth), not a copy: every code cell is executed in a fresh
module, except

- cells tagged ``run`` (training runs, videos, tensorboard), and
- test cells (nbgrader's graded cells that are not solutions, and cells
  tagged ``test``).
"""

from __future__ import annotations

import types
from pathlib import Path

import nbformat

__all__ = ["definition_cells", "load_notebook"]

SKIPPED_TAGS = {"run", "test"}


def _is_test_cell(cell) -> bool:
    nbgrader = cell.metadata.get("nbgrader", {})
    return bool(nbgrader.get("grade")) and not nbgrader.get("solution")


def definition_cells(path) -> list[str]:
    """The sources of the code cells of a notebook that define things."""
    notebook = nbformat.read(str(path), as_version=4)
    sources = []
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if SKIPPED_TAGS & set(cell.metadata.get("tags", [])) or _is_test_cell(cell):
            continue
        sources.append(cell.source)
    return sources


def load_notebook(path, name: str | None = None, skip_install: bool = True) -> types.ModuleType:
    """Executes the definition cells of the notebook at ``path`` in a new module.

    With ``skip_install``, the set-up cell's ``install_missing()`` call is not
    made (the environment is already complete where this is used).
    """
    path = Path(path)
    module = types.ModuleType(name or path.stem.replace("-", "_"))
    module.__file__ = str(path)
    for index, source in enumerate(definition_cells(path)):
        lines = [
            line
            for line in source.splitlines()
            if not (line.lstrip().startswith(("%", "!")) or (skip_install and line.strip() == "install_missing()"))
        ]
        code = compile("\n".join(lines), f"{path.name}[cell {index}]", "exec")
        exec(code, module.__dict__)
    return module
