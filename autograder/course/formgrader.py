"""JupyterLab with nbgrader's formgrader on a course folder, to grade answers by hand."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from autograder.course import AUTOGRADER, assignments, course_root
from autograder.course.config import api
from autograder.course.release import ensure_released


def formgrader(root: Path = AUTOGRADER, port: int = 8888) -> int:
    """Starts JupyterLab with nbgrader's formgrader on the course folder, on 127.0.0.1."""
    root = course_root(root)
    ensure_released(root, assignments())
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
