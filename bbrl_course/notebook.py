"""Helpers for the notebooks themselves: tensorboard, showing source code."""

from __future__ import annotations

import inspect
import shlex
import sys
from pathlib import Path

__all__ = ["in_colab", "setup_tensorboard", "show_source"]


def in_colab() -> bool:
    return "google.colab" in sys.modules


def setup_tensorboard(path) -> None:
    """Starts tensorboard inside the notebook in Colab; elsewhere says how to start it.

    It never asks a question, so that a notebook also runs unattended.
    """
    path = Path(path).absolute()
    if in_colab():
        from IPython import get_ipython

        shell = get_ipython()
        shell.run_line_magic("load_ext", "tensorboard")
        shell.run_line_magic("tensorboard", f"--logdir {path}")
    else:
        # the kernel's own Python: a bare `tensorboard` is often not on the terminal's PATH
        # (a virtual environment, a conda kernel); the magics work in Jupyter as in Colab
        print("To follow training, run in a new cell of this notebook:\n"
              f"    %load_ext tensorboard\n    %tensorboard --logdir {path}\n"
              f"or in a terminal:\n    {shlex.quote(sys.executable)} -m tensorboard.main --logdir {shlex.quote(str(path))}")


def show_source(obj) -> None:
    """Displays the source code of a class or function of the course's module."""
    try:
        from IPython import get_ipython
        from IPython.display import Markdown, display
    except ImportError:
        return
    if get_ipython() is None:  # not in a notebook (a test importing its code): nothing to show
        return
    display(Markdown(f"```python\n{inspect.getsource(obj)}```"))
