"""Every solution notebook passes nbgrader's validation, which runs it top to bottom in
fast mode through a real Jupyter kernel (nbgrader sets NBGRADER_EXECUTION), and that one
run produces what it promises: evaluation returns, plots, a video (or a clear skip).
Notebooks are stored clean: no outputs, no execution counts.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest
from nbgrader.preprocessors import CheckCellMetadata, ClearOutput
from nbgrader.validator import Validator
from traitlets import List

from autograder.course.config import load_config
from autograder.course.preprocessors import CourseExecute
from autograder.course.run_notebooks import INLINE_BACKEND, environ
from conftest import REPO, SOLUTIONS

SOLUTION_NOTEBOOKS = sorted(SOLUTIONS.glob("*.ipynb"))
ALL_NOTEBOOKS = sorted(p for d in ("solutions", "notebooks") for p in (REPO / d).glob("*.ipynb"))


def test_there_are_solution_notebooks():
    assert [p.name for p in SOLUTION_NOTEBOOKS] == ["01-ddpg.ipynb", "02-td3.ipynb", "03-experiment.ipynb"]


@pytest.mark.parametrize("path", ALL_NOTEBOOKS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_notebook_is_stored_clean(path):
    notebook = json.loads(path.read_text())
    for index, cell in enumerate(notebook["cells"]):
        if cell["cell_type"] == "code":
            assert cell["outputs"] == [], f"{path.name} cell {index} has outputs: clear them"
            assert cell["execution_count"] is None, f"{path.name} cell {index} has an execution count"
    assert set(notebook["metadata"]) <= {"kernelspec", "language_info"}, f"{path.name}: extra notebook metadata"
    nbformat.validate(nbformat.reads(path.read_text(), as_version=4))


class _KeepingValidator(Validator):
    """nbgrader's Validator, keeping the notebook it executed, and executing it as the
    grader does: with the course's Execute and its per-cell time limits (the slow limit
    for the training cells and the learning test). Validator.preprocessors is not
    configurable, hence the subclass."""

    preprocessors = List([CheckCellMetadata, ClearOutput, CourseExecute])

    def _preprocess(self, nb):
        self.executed = super()._preprocess(nb)
        return self.executed


@dataclass
class Validated:
    workdir: Path
    results: dict
    executed: nbformat.NotebookNode
    name: str

    @property
    def is_experiment(self) -> bool:
        return self.name == "03-experiment"

    def texts(self) -> list[str]:
        return [o.get("text", "") for c in self.executed.cells if c.cell_type == "code" for o in c.outputs]


def _validate(path: str, workdir: str) -> tuple[dict, str]:
    """nbgrader's validation of a solution in ``workdir`` (in a process of the pool below):
    its results, and the executed notebook."""
    # BBRL_COURSE_NOTEBOOKS: the experiment notebook trains the solutions' DDPG and TD3
    with environ(
        BBRL_COURSE_FAST=None, BBRL_COURSE_OUTPUTS=None, MPLBACKEND=INLINE_BACKEND, BBRL_COURSE_NOTEBOOKS=str(SOLUTIONS)
    ):
        validator = _KeepingValidator(config=load_config())
        results = validator.validate(str(Path(workdir) / Path(path).name))  # runs in workdir: outputs/ lands there
    return results, nbformat.writes(validator.executed)


@pytest.fixture(scope="module")
def validations(tmp_path_factory):
    """The three validations, started at once (each notebook's kernel is one process, the
    experiment's runs two): about 70 s instead of 100 s one after the other on 2 cores."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(len(SOLUTION_NOTEBOOKS), mp_context=multiprocessing.get_context("spawn"))
    started = {}
    for path in SOLUTION_NOTEBOOKS:
        workdir = tmp_path_factory.mktemp(path.stem)
        shutil.copy(path, workdir / path.name)
        started[path] = (workdir, pool.submit(_validate, str(path), str(workdir)))
    yield started
    pool.shutdown(cancel_futures=True)


@pytest.fixture(scope="module", params=SOLUTION_NOTEBOOKS, ids=lambda p: p.name)
def executed(request, validations):
    """The solution validated by nbgrader (Python API: `nbgrader validate` exits 0 even on failure)."""
    workdir, future = validations[request.param]
    results, notebook = future.result()
    return Validated(workdir, results, nbformat.reads(notebook, as_version=4), request.param.stem)


def test_passes_nbgrader_validation(executed):
    assert executed.results == {}, f"nbgrader validation failed: {executed.results}"


def test_runs_top_to_bottom(executed):
    errors = [
        f"cell {i}: {o.ename}: {o.evalue}"
        for i, c in enumerate(executed.executed.cells)
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "error"
    ]
    assert errors == []
    stderr = [
        o.get("text", "")
        for c in executed.executed.cells
        if c.cell_type == "code"
        for o in c.outputs
        if o.output_type == "stream" and o.name == "stderr"
    ]
    assert stderr == [], f"cells wrote to stderr: {stderr}"


def _training_runs(executed):
    """The notebook's training runs (not the tiny ones of its test cells, under checks/)."""
    outputs = executed.workdir / "outputs"
    return sorted(p for p in outputs.rglob("evaluations.csv") if "checks" not in p.relative_to(outputs).parts)


def _training_notebook(executed):
    if executed.is_experiment:
        pytest.skip("the experiment notebook's runs are checked by test_experiment_*")


def test_logs_evaluation_returns(executed):
    _training_notebook(executed)
    runs = _training_runs(executed)
    assert runs, "no evaluations.csv written"
    for csv_path in runs:
        with csv_path.open() as f:
            rows = list(csv.DictReader(f))
        assert len(rows) >= 3, f"{csv_path}: {len(rows)} evaluations"
        assert int(rows[0]["steps"]) == 0 and int(rows[-1]["steps"]) >= 3000
        returns = [float(r["mean"]) for r in rows]
        # Pendulum-v1 returns lie in [-16.3 * 200, 0]
        assert all(-3300 < r <= 0 for r in returns), returns
        tblogs = executed.workdir / "outputs" / "tblogs"
        assert list(tblogs.rglob("events.out.tfevents.*")), "no tensorboard log"


def test_writes_plots(executed):
    _training_notebook(executed)
    for run in _training_runs(executed):
        assert (run.parent / "learning_curve.png").stat().st_size > 1000
        assert list((run.parent / "plots").glob("best-*.png")), f"no policy/critic plot in {run.parent}"
    images = [
        o for c in executed.executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert len(images) >= 2, "the notebook shows its learning curve and its best policy"


def test_video_written_or_skipped_with_a_message(executed):
    _training_notebook(executed)
    videos = list((executed.workdir / "outputs").rglob("best_agent.mp4"))
    texts = [
        o.get("text", "") for c in executed.executed.cells if c.cell_type == "code" for o in c.outputs
    ]
    if videos:
        assert all(v.stat().st_size > 10_000 for v in videos)
        assert any("Video of the policy written to" in t for t in texts)
    else:
        assert any(t.startswith("Video skipped:") for t in texts), "no video and no message saying why"


def _experiment(executed):
    if not executed.is_experiment:
        pytest.skip("not the experiment notebook")


def test_experiment_results_hold_every_algorithm_seed_and_environment(executed):
    from bbrl_course.experiment import load_results, summaries

    _experiment(executed)
    results = summaries(load_results(executed.workdir / "03-experiment-results.npz"))
    assert sorted(results) == ["LunarLanderContinuous-v3", "Pendulum-v1"]
    for env_name, summary in results.items():
        assert list(summary) == ["DDPG", "DDPG + min", "TD3"]  # with the ablation, in the figures' order
        for label, arrays in summary.items():
            assert arrays["seeds"].tolist() == [1, 2, 3, 4, 5], (env_name, label)
            n_evals = len(arrays["steps"])
            assert n_evals >= 3 and arrays["steps"][0] == 0
            for key in ("returns", "estimates", "true_values"):
                assert arrays[key].shape == (5, n_evals), (env_name, label, key)
        if env_name == "Pendulum-v1":  # rewards in [-16.3, 0]: values in [-16.3 / (1 - γ), 0]
            for arrays in summary.values():
                assert (arrays["true_values"] <= 0).all() and (arrays["true_values"] > -16.3 / 0.02).all()


def test_experiment_runs_seeds_in_parallel_and_shows_figures_and_tests(executed):
    from bbrl_course.experiment import available_workers

    _experiment(executed)
    text = "\n".join(executed.texts())
    assert f"15 runs (3 algorithms x 5 seeds), {available_workers()} at a time" in text
    # bias, estimates, true values, returns: DDPG against DDPG + min (the minimum), DDPG + min against TD3
    # (smoothing and delay), DDPG against TD3 (all three)
    assert text.count("Welch's t-test p =") == 24, "12 Welch t-tests per environment"
    for a, b in (("DDPG", "DDPG + min"), ("DDPG + min", "TD3"), ("DDPG", "TD3")):
        assert re.search(rf"bias at the last evaluation: {re.escape(a)} -?[\d.]+ ± [\d.]+, {re.escape(b)} ", text), (a, b)
    assert "fast mode: tiny budgets, meaningless results" in text
    for env_name in ("Pendulum-v1", "LunarLanderContinuous-v3"):
        figure = executed.workdir / "outputs" / "experiment" / f"bias-{env_name}.png"
        assert figure.stat().st_size > 20_000, figure
    images = [
        o for c in executed.executed.cells if c.cell_type == "code" for o in c.outputs if "image/png" in o.get("data", {})
    ]
    assert len(images) == 2, "one figure per environment, and nothing else shown (the loaded notebooks stay quiet)"
