"""The student notebooks as in Colab: a fresh environment with Colab's preinstalled
packages and none of the course's, each notebook filled with the solutions and run
from its set-up cell (fast mode), then its set-up cell run again, which must install
nothing.

Not part of `make test`: `make test-colab` runs it (and `.ci/run`). The environment
of Colab's preinstalls is built once into .venv-colab-base/ (about a minute, then
reused); each run makes a fresh environment on top of it, so that what the set-up
cells install never stays for the next run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import nbformat
import pytest

import sample_class
from autograder.course import setup_cell
from autograder.course.run_notebooks import environ, execute_notebook
from conftest import REPO
from course_repository import bare_repository

pytestmark = pytest.mark.colab

#: What Colab preinstalls that the notebooks rely on, pinned. torch==2.13.0 stands in
#: for Colab's CUDA build; moviepy 1.0.3 is Colab's, without moviepy 2's API.
COLAB_PREINSTALLED = [
    "torch==2.13.0",
    "moviepy==1.0.3",
    "numpy==2.4.6",
    "matplotlib==3.11.2",
    "pandas==3.1.1",
    "scipy==1.17.1",
    "tqdm==4.70.1",
    "ipykernel==7.4.0",
    "tensorboard==2.21.0",
    "nbformat==5.11.1",
]
#: What Colab does not have: the set-up cells must install it
NOT_PREINSTALLED = ["gymnasium", "omegaconf", "bbrl", "box2d", "bootstrapped", "bbrl_course"]
TAG = f"v{setup_cell.course_version()}"
BASE = REPO / ".venv-colab-base"
NAMES = ["01-ddpg", "02-td3", "03-experiment"]


def _python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _run(*command, **kwargs):
    subprocess.run([str(c) for c in command], check=True, **kwargs)


def _base_environment() -> Path:
    """Colab's preinstalls, built once (reused while COLAB_PREINSTALLED is unchanged)."""
    stamp = BASE / "preinstalled.json"
    if stamp.exists() and json.loads(stamp.read_text()) == COLAB_PREINSTALLED:
        return BASE
    _run(sys.executable, "-m", "venv", "--clear", BASE)
    _run(_python(BASE), "-m", "pip", "install", "--quiet", *COLAB_PREINSTALLED)
    stamp.write_text(json.dumps(COLAB_PREINSTALLED))
    return BASE


def _site_packages(venv: Path) -> Path:
    out = subprocess.run([str(_python(venv)), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         check=True, capture_output=True, text=True)
    return Path(out.stdout.strip())


@contextmanager
def _colab_environment(tmp: Path, tag: str | None):
    """A fresh environment on top of Colab's preinstalls, with a Jupyter kernel "colab" that
    runs in it, and the course's repository as a local bare repository (tests/course_repository.py)
    holding the checkout, tagged `tag` or not, which the set-up cells install the course
    module from (BBRL_COURSE_REPOSITORY): the git path a student's set-up cell takes."""
    base = _base_environment()
    venv = tmp / "venv"
    _run(sys.executable, "-m", "venv", venv)
    # the base's packages are visible after the fresh environment's own (a .pth file):
    # what the set-up cells install goes into the fresh one, and replaces the base's
    (_site_packages(venv) / "colab-preinstalled.pth").write_text(str(_site_packages(base)) + "\n")
    for module in NOT_PREINSTALLED:
        found = subprocess.run([str(_python(venv)), "-c", f"import importlib.util as u; print(u.find_spec('{module}') is not None)"],
                               check=True, capture_output=True, text=True, cwd=tmp).stdout.strip()
        assert found == "False", f"{module} is in the Colab environment before the set-up cell ran"
    kernels = tmp / "jupyter" / "kernels" / "colab"
    kernels.mkdir(parents=True)
    (kernels / "kernel.json").write_text(json.dumps({
        "argv": [str(_python(venv)), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab (simulated)",
        "language": "python",
    }))
    repository = bare_repository(tmp, tag)
    with environ(JUPYTER_PATH=str(tmp / "jupyter"), PYTHONPATH=None, BBRL_COURSE_NOTEBOOKS=None,
                 NBGRADER_EXECUTION=None, VIRTUAL_ENV=None, BBRL_COURSE_REPOSITORY=repository):
        yield tmp


@pytest.fixture(scope="module")
def colab(tmp_path_factory):
    """Colab, with the course's repository holding the tag v<version>."""
    with _colab_environment(tmp_path_factory.mktemp("colab"), TAG) as tmp:
        yield tmp


def _setup_output(executed) -> str:
    cell = next(c for c in executed.cells if setup_cell.is_setup_cell(c))
    return "".join(o.get("text", "") for o in cell.outputs if o.get("output_type") == "stream")


def _filled(name: str, folder: Path) -> Path:
    path = folder / f"{name}.ipynb"
    nbformat.write(sample_class.filled_notebook(name), str(path))
    return path


@pytest.fixture(scope="module")
def first_runs(colab):
    """Each notebook filled with the solutions, run top to bottom, in the order a student
    would: 01-ddpg, 02-td3, then the experiment with the two others next to it."""
    folder = colab / "student"
    folder.mkdir()
    paths = {name: _filled(name, folder) for name in NAMES}
    runs = {}
    for name in NAMES:
        runs[name] = execute_notebook(paths[name], folder, fast=True, timeout=900, kernel_name="colab")
    return runs


@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_as_in_colab(first_runs, name):
    run = first_runs[name]
    assert run.ok, f"{name} failed in the Colab environment:\n{run.error[-3000:]}"


def test_first_set_up_cell_installs_what_colab_lacks(first_runs):
    installed = _setup_output(first_runs["01-ddpg"].executed)
    for requirement in ("gymnasium", "omegaconf", "moviepy==2", "bootstrapped", "box2d", "bbrl=="):
        assert requirement in installed, f"the first set-up cell did not install {requirement}: {installed!r}"
    assert "torch" not in installed and "numpy" not in installed, "Colab's own torch and numpy are kept"


def test_first_set_up_cell_installs_the_course_module_from_the_tag(first_runs, colab):
    repository = os.environ["BBRL_COURSE_REPOSITORY"]
    installed = _setup_output(first_runs["01-ddpg"].executed)
    assert f"bbrl-course @ git+{repository}@{TAG}" in installed, installed
    python = _python(colab / "venv")
    origin = subprocess.run([str(python), "-c", "import importlib.metadata as m; print(m.distribution('bbrl-course').read_text('direct_url.json'))"],
                            check=True, capture_output=True, text=True, cwd=colab).stdout  # not the checkout's egg-info
    origin = json.loads(origin)
    assert origin["url"] == repository and origin["vcs_info"]["vcs"] == "git", origin
    assert origin["vcs_info"]["requested_revision"] == TAG, origin


@pytest.mark.parametrize("name", NAMES)
def test_set_up_cell_installs_nothing_the_second_time(first_runs, colab, name):
    notebook = nbformat.read(str(first_runs[name].workdir / f"{name}.ipynb"), as_version=4)
    notebook.cells = [c for c in notebook.cells if setup_cell.is_setup_cell(c)]
    again = colab / "again" / f"{name}.ipynb"
    again.parent.mkdir(exist_ok=True)
    nbformat.write(notebook, str(again))
    run = execute_notebook(again, again.parent, fast=True, timeout=300, kernel_name="colab")
    assert run.ok, run.error
    assert _setup_output(run.executed) == "", f"{name}: the set-up cell installed something again"


def test_experiment_analysis_runs_again_from_the_saved_runs_alone(first_runs, colab):
    """After a failure of the analysis, a new kernel redoes it from the files, without the runs."""
    folder = first_runs["03-experiment"].workdir
    (folder / "03-experiment-results.npz").unlink()
    notebook = nbformat.read(str(folder / "03-experiment.ipynb"), as_version=4)
    kept = []
    for cell in notebook.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id", "")
        if cell.cell_type != "code" or "run" in cell.metadata.get("tags", []) or grade_id.startswith("test_"):
            continue  # no training runs, no student notebooks, no tests: the definitions only
        kept.append(cell)
    for env_name in ("Pendulum-v1", "LunarLanderContinuous-v3"):
        kept.append(nbformat.v4.new_code_cell(f'summarize_and_save("{env_name}")\nshow_results("{env_name}")'))
    notebook.cells = kept
    path = colab / "analysis" / "03-experiment.ipynb"
    path.parent.mkdir()
    nbformat.write(notebook, str(path))
    for name in ("03-experiment-runs.npz",):
        (path.parent / name).write_bytes((folder / name).read_bytes())
    run = execute_notebook(path, path.parent, fast=True, timeout=300, kernel_name="colab")
    assert run.ok, run.error[-3000:]
    assert (path.parent / "03-experiment-results.npz").is_file()
    text = "".join(o.get("text", "") for c in run.executed.cells for o in c.get("outputs", []))
    assert text.count("Welch") >= 2, text[-2000:]


def test_set_up_cell_stops_with_one_line_without_the_tag(tmp_path):
    """The instructor has not pushed the tag: the set-up cell says so in one line, no
    traceback, and the notebook stops there (the next cell does not run)."""
    with _colab_environment(tmp_path, None):
        repository = os.environ["BBRL_COURSE_REPOSITORY"]
        notebook = nbformat.read(str(REPO / "notebooks" / "01-ddpg.ipynb"), as_version=4)
        notebook.cells = [c for c in notebook.cells if setup_cell.is_setup_cell(c)]
        notebook.cells.append(nbformat.v4.new_code_cell("import bbrl_course"))
        path = tmp_path / "student" / "01-ddpg.ipynb"
        path.parent.mkdir()
        nbformat.write(notebook, str(path))
        run = execute_notebook(path, path.parent, fast=True, timeout=600, kernel_name="colab")
    assert not run.ok
    setup, after = run.executed.cells
    errors = [o for o in setup.outputs if o.output_type == "error"]
    assert len(errors) == 1 and errors[0].ename == "SetupError", setup.outputs
    assert errors[0].traceback == [
        f"SetupError: could not install the course module from {repository} at tag {TAG}: it has no tag {TAG}. "
        f"Ask your instructor to push tag {TAG} to {repository}"
    ], errors[0].traceback
    printed = _setup_output(run.executed)
    assert "Traceback" not in printed and "pathspec" not in printed and "CalledProcessError" not in printed, printed
    assert after.execution_count is None and after.outputs == [], "the notebook went on after the failed set-up"
