"""Shared fixtures: the repository's paths and the solution notebooks loaded as modules."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOLUTIONS = REPO / "solutions"
sys.path.insert(0, str(REPO))

import autograder  # noqa: E402,F401  (first: nbformat's import without its IRI grammars, autograder/__init__.py)
from bbrl_course.nbload import load_notebook  # noqa: E402

DDPG_NOTEBOOK = SOLUTIONS / "01-ddpg.ipynb"
TD3_NOTEBOOK = SOLUTIONS / "02-td3.ipynb"


@pytest.fixture(scope="session")
def ddpg_nb():
    return load_notebook(DDPG_NOTEBOOK)


@pytest.fixture(scope="session")
def td3_nb():
    return load_notebook(TD3_NOTEBOOK)


@pytest.fixture(params=["ddpg", "td3"])
def either_nb(request, ddpg_nb, td3_nb):
    """The functions both notebooks define (TD3 brings DDPG's), tested in each."""
    return ddpg_nb if request.param == "ddpg" else td3_nb


@pytest.fixture
def outputs(tmp_path, monkeypatch):
    """Runs write their logs, plots and videos in a temporary folder."""
    monkeypatch.setenv("BBRL_COURSE_OUTPUTS", str(tmp_path / "outputs"))
    monkeypatch.delenv("BBRL_COURSE_FAST", raising=False)
    monkeypatch.delenv("NBGRADER_EXECUTION", raising=False)
    return tmp_path / "outputs"



def cli(*args, cwd=REPO, env=None, **options):
    """``python -m autograder ARGS`` as an instructor types it: from the repository's root
    (``options``: more of subprocess.run's)."""
    return subprocess.run([sys.executable, "-m", "autograder", *args], cwd=cwd, capture_output=True, text=True, env=env,
                          **options)


#: The test files by their time alone (one process, 2026-12-07, after the trusted student's
#: process was forked and test_load.py pinned to one core), the slowest first; the others
#: follow in their usual order. ``make test`` runs the files on two processes (``pytest -n 2
#: --dist loadfile --no-loadscope-reorder``), each taking the next file when it is done: the
#: slowest first, so that neither is left alone with a long file at the end.
SLOWEST_FIRST = ("test_grading.py", "test_sandbox.py", "test_distribute.py", "test_notebooks.py", "test_load.py",
                 "test_portal_load.py", "test_hand_grading.py", "test_lms.py", "test_release.py", "test_portal_e2e.py",
                 "test_audit.py", "test_experiment.py", "test_zygote.py", "test_run_once.py", "test_recording.py",
                 "test_portal_export.py", "test_judge_limits.py", "test_fork_channel.py", "test_portal.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order
