"""Executes notebooks headlessly through a Jupyter kernel, as a student's "Run all" would.

    python -m autograder.course.run_notebooks [--fast] [--outputs DIR] [--timeout S] NOTEBOOK...

Each notebook runs in its own working directory under DIR (``outputs/executed``
by default), so that its logs, plots and video land there; the executed copy is
saved beside them. It prints one line per notebook and exits non-zero if any
notebook failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

REPO = Path(__file__).resolve().parents[2]


INLINE_BACKEND = "module://matplotlib_inline.backend_inline"


@contextlib.contextmanager
def environ(**values):
    """Sets environment variables (None: unset) for the duration of a block, then restores them."""
    saved = {key: os.environ.get(key) for key in values}
    try:
        for key, value in values.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


@dataclass
class Execution:
    notebook: Path
    workdir: Path
    seconds: float
    error: str | None
    executed: nbformat.NotebookNode
    stderr: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None


def execute_notebook(
    path, workdir, fast: bool = True, timeout: int = 600, allow_errors: bool = False, kernel_name: str = "python3"
) -> Execution:
    """Runs every cell of the notebook at ``path`` with ``workdir`` as working directory.

    With ``allow_errors``, a failing cell does not stop the run (as a student's
    "Run all" that goes on): the errors are in the executed notebook's outputs.
    ``kernel_name`` names the Jupyter kernel (another Python environment).
    """
    path, workdir = Path(path), Path(workdir).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    notebook = nbformat.read(str(path), as_version=4)
    client = NotebookClient(
        notebook,
        timeout=timeout,
        kernel_name=kernel_name,
        allow_errors=allow_errors,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    error = None
    environment = {
        "BBRL_COURSE_FAST": "1" if fast else "0",
        "BBRL_COURSE_OUTPUTS": str(workdir / "outputs"),
        "MPLBACKEND": os.environ.get("MPLBACKEND", INLINE_BACKEND),
    }
    with environ(**environment):
        try:
            client.execute()
        except CellExecutionError as exc:
            error = str(exc)
    seconds = time.perf_counter() - start
    nbformat.write(notebook, str(workdir / path.name))
    stderr = [
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream" and output.get("name") == "stderr"
    ]
    return Execution(path, workdir, seconds, error, notebook, stderr)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="+", type=Path)
    parser.add_argument("--fast", action="store_true", help="fast mode (small training budgets)")
    parser.add_argument("--outputs", type=Path, default=REPO / "outputs" / "executed")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell (-1: no limit)")
    args = parser.parse_args(argv)
    failed = 0
    for path in args.notebooks:
        if not path.exists():
            print(f"{path}: no such notebook")
            failed += 1
            continue
        result = execute_notebook(path, args.outputs / path.stem, fast=args.fast, timeout=args.timeout)
        status = "ok" if result.ok else "FAILED"
        print(f"{path}: {status} in {result.seconds:.0f} s (outputs in {result.workdir})", flush=True)
        outputs = result.workdir / "outputs"
        for csv_file in sorted(outputs.rglob("evaluations.csv")):
            if "checks" in csv_file.relative_to(outputs).parts:
                continue  # the tiny runs of the notebook's test cells
            last = csv_file.read_text().strip().splitlines()[-1].split(",")
            print(f"    {csv_file.parent.name}: {last[0]} steps, final mean return {last[3]}")
        if not result.ok:
            failed += 1
            print(result.error[-3000:])
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
