"""The experiment's ablation DDPG + min (issue 25): the student's TD3 without target policy
smoothing and without delay, so that DDPG against DDPG + min isolates the minimum of two
critics. It is in the runs, the results file, the figures and the Welch tests, and a results
file made before it (DDPG and TD3 only) is refused with one line that says what to run."""

from __future__ import annotations

import contextlib
import io
import json
import re
import sys

import nbformat
import numpy as np
import pytest

from bbrl_course.experiment import Algorithm, comparisons, load_results, report, run_experiment, summaries
from bbrl_course.nbload import load_notebook
from conftest import REPO, SOLUTIONS

sys.path.insert(0, str(REPO / "tests"))
import sample_class  # noqa: E402


@pytest.fixture(scope="module")
def experiment():
    """The solution experiment notebook's definitions (its run cells skipped, as nbload does)."""
    with contextlib.redirect_stdout(io.StringIO()):
        return load_notebook(SOLUTIONS / "03-experiment.ipynb")


def _cell(grade_id, folder="notebooks"):
    notebook = nbformat.read(str(REPO / folder / "03-experiment.ipynb"), as_version=4)
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _algorithms(experiment):
    """ALGORITHMS, as the released notebook's cell builds them (notebooks found in solutions/)."""
    namespace = dict(vars(experiment), find_notebook=lambda name: SOLUTIONS / name)
    with contextlib.redirect_stdout(io.StringIO()):
        exec(_cell("experiment-algorithms").source, namespace)
    return namespace["ALGORITHMS"]


def test_the_ablation_is_the_students_td3_without_smoothing_nor_delay(experiment):
    algorithms = {a.label: a for a in _algorithms(experiment)}
    assert list(algorithms) == experiment.LABELS == ["DDPG", "DDPG + min", "TD3"]
    ablation, td3 = algorithms["DDPG + min"], algorithms["TD3"]
    assert (ablation.notebook, ablation.cls, ablation.train) == (td3.notebook, "TD3", "run_td3")
    params = experiment.config_for("LunarLanderContinuous-v3", fast=False)
    changed = ablation.params_for(params)["algorithm"]
    assert changed["target_policy_noise"] == 0.0 and changed["policy_delay"] == 1
    # nothing else changes: the ablation shares every other parameter, TD3 and DDPG keep theirs
    assert {k: v for k, v in changed.items() if k not in ("target_policy_noise", "policy_delay")} == \
        {k: v for k, v in params["algorithm"].items() if k not in ("target_policy_noise", "policy_delay")}
    assert td3.params_for(params) == params == algorithms["DDPG"].params_for(params)
    assert params["algorithm"]["target_policy_noise"] == 0.2 and params["algorithm"]["policy_delay"] == 2
    assert ablation.folder == "ddpg-min" and td3.folder == "td3"


def test_the_ablation_trains_with_its_parameters_and_records_them(tmp_path, monkeypatch, capsys, experiment):
    monkeypatch.setenv("BBRL_COURSE_OUTPUTS", str(tmp_path))
    params = experiment.config_for("Pendulum-v1", fast=True)
    params["algorithm"].update(max_steps=400, learning_starts=128, eval_interval=200, nb_evals=1,
                               architecture={"actor_hidden_size": [8], "critic_hidden_size": [8]})
    runs = run_experiment(_algorithms(experiment), params, [1], n_episodes=1, workers=0)
    assert list(runs) == ["DDPG", "DDPG + min", "TD3"]
    made = {label: json.loads(seed_runs[0].made_by["params"])["algorithm"] for label, seed_runs in runs.items()}
    assert (made["DDPG + min"]["target_policy_noise"], made["DDPG + min"]["policy_delay"]) == (0.0, 1)
    assert (made["TD3"]["target_policy_noise"], made["TD3"]["policy_delay"]) == (0.2, 2)
    # the same code and seed as TD3 with other parameters: another run
    assert not np.array_equal(runs["DDPG + min"][0].q_values, runs["TD3"][0].q_values)
    assert (tmp_path / "experiment" / "Pendulum-v1" / "ddpg-min-S1").is_dir()
    assert "Pendulum-v1: 3 runs (3 algorithms x 1 seeds)" in capsys.readouterr().out


def test_the_welch_tests_compare_the_minimum_then_smoothing_and_delay_then_all_three():
    assert comparisons(["DDPG", "DDPG + min", "TD3"]) == [("DDPG", "DDPG + min"), ("DDPG + min", "TD3"),
                                                          ("DDPG", "TD3")]
    assert comparisons(["DDPG", "TD3"]) == [("DDPG", "TD3")]  # a results file of the course before it
    rng = np.random.default_rng(0)
    summary = {}
    for label, bias in (("DDPG", 40.0), ("DDPG + min", 0.0), ("TD3", -1.0)):
        true_values = rng.normal(-100, 5, (5, 4))
        summary[label] = {"seeds": np.arange(1, 6), "steps": np.arange(4) * 1000,
                          "returns": rng.normal(-500, 50, (5, 4)),
                          "estimates": true_values + bias + rng.normal(0, 1, (5, 4)), "true_values": true_values}
    text = report(summary)
    assert text.count("Welch's t-test") == 12
    lines = [line for line in text.splitlines() if line.startswith("bias at the last evaluation")]
    number = r"-?\d+\.\d ± \d+\.\d"
    assert len(lines) == 3
    for line, (a, b) in zip(lines, comparisons(summary)):
        assert re.match(rf"bias at the last evaluation: {re.escape(a)} {number}, {re.escape(b)} {number} \(", line), line
    assert "significant" in lines[0] and "not significant" not in lines[0]  # the minimum's 40


def _check_results(experiment, path):
    """Runs the released test_experiment_results cell on the results file at path."""
    namespace = dict(vars(experiment), RESULTS_FILE=path)
    exec(_cell("test_experiment_results").source, namespace)


def test_a_results_file_without_the_ablation_says_in_one_line_what_to_run(tmp_path, experiment):
    complete = sample_class.write_results(tmp_path / "complete.npz")
    assert sorted(summaries(load_results(complete))["Pendulum-v1"]) == ["DDPG", "DDPG + min", "TD3"]
    _check_results(experiment, complete)  # accepted
    old = sample_class.write_results(tmp_path / "old.npz", "no-ablation")
    with pytest.raises(AssertionError) as refused:
        _check_results(experiment, old)
    message = str(refused.value)
    assert "\n" not in message and "no results of the ablation DDPG + min on Pendulum-v1" in message
    assert 'run run_and_save("Pendulum-v1"), which runs only the missing runs' in message
    # the sample class's student with that file loses the test, and only it
    [sample] = [s for s in sample_class.SAMPLES if s.student == "exp-no-ablation"]
    assert sample.results == "no-ablation" and sample.loses == ("test_experiment_results",)


def test_the_questions_ask_what_each_comparison_can_show(experiment):
    question = _cell("experiment-question-ablation", "solutions").source
    answer = _cell("answer_ablation", "solutions")
    assert answer.metadata["nbgrader"]["grade"] and answer.metadata["nbgrader"]["solution"]
    for text in ("DDPG against DDPG + min", "DDPG + min against TD3", "DDPG against TD3", "smoothed"):
        assert text in question, text
    for text in ("isolates the minimum", "cannot", "smoothed target actions", "reads lower even when it is exact"):
        assert text in answer.source, text
    released = _cell("answer_ablation")
    assert "isolates the minimum" not in released.source, "the model answer stays in the solution"


def test_until_shows_what_a_shorter_budget_would_have_shown(tmp_path, capsys):
    from bbrl_course.experiment import main, save_results, until

    rng = np.random.default_rng(1)
    steps = np.arange(6) * 2000
    # DDPG overestimates only after 6,000 steps: a budget of 4,000 would not have shown it
    bias = {"DDPG": np.where(steps > 6000, 50.0, 0.0), "TD3": np.zeros(6)}
    summary = {label: {"seeds": np.arange(1, 6), "steps": steps, "returns": rng.normal(-100, 5, (5, 6)),
                       "true_values": np.full((5, 6), -100.0),
                       "estimates": -100.0 + b + rng.normal(0, 1, (5, 6))} for label, b in bias.items()}
    short = until(summary, 5000)
    assert short["DDPG"]["steps"].tolist() == [0, 2000, 4000] and short["TD3"]["estimates"].shape == (5, 3)
    assert short["DDPG"]["seeds"].tolist() == [1, 2, 3, 4, 5]
    path = save_results(tmp_path / "results.npz", "Pendulum-v1", summary)
    assert main([str(path), "--until", "5000"]) == 0
    out = capsys.readouterr().out
    assert "Pendulum-v1 (5 seeds, 4000 steps):" in out and "bias at the last evaluation: DDPG 0." in out
    assert main([str(path)]) == 0
    assert "Pendulum-v1 (5 seeds, 10000 steps):" in capsys.readouterr().out
