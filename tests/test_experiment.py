"""The experiment module (bbrl_course.experiment): the bias measurement, the runs over
seeds, the results file and the statistics. The notebook that uses it runs in
test_notebooks.py (solution, fast mode) and test_release.py (student release)."""

from __future__ import annotations

import math
import os
from pathlib import Path
from types import SimpleNamespace

import nbformat
import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bbrl_course import ContinuousDeterministicActor, ContinuousQAgent
from bbrl_course.experiment import (
    Algorithm,
    compare_final,
    find_notebook,
    load_results,
    measure,
    report,
    run_experiment,
    save_results,
    summaries,
    tail_steps,
)
from bbrl_course.envs import make_env
from bbrl_course.nbload import load_notebook
from conftest import REPO, SOLUTIONS


def test_the_tail_makes_the_cut_return_negligible():
    for gamma in (0.9, 0.98, 0.99):
        tail = tail_steps(gamma)
        assert gamma**tail < 0.01 <= gamma ** (tail - 1)
    assert tail_steps(0.98) == 228 and tail_steps(0.0) == 0


def test_find_notebook_says_where_it_looked_and_what_to_do(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("BBRL_COURSE_NOTEBOOKS", raising=False)
    with pytest.raises(FileNotFoundError, match=r"01-ddpg.ipynb not found .*put your completed 01-ddpg.ipynb next to"):
        find_notebook("01-ddpg.ipynb")
    # nbgrader's layout: one folder per assignment, side by side
    (tmp_path / "01-ddpg").mkdir()
    (tmp_path / "01-ddpg" / "01-ddpg.ipynb").write_text("{}")
    (tmp_path / "03-experiment").mkdir()
    monkeypatch.chdir(tmp_path / "03-experiment")
    assert find_notebook("01-ddpg.ipynb") == (tmp_path / "01-ddpg" / "01-ddpg.ipynb").resolve()
    monkeypatch.setenv("BBRL_COURSE_NOTEBOOKS", str(SOLUTIONS))
    assert find_notebook("01-ddpg.ipynb") == (SOLUTIONS / "01-ddpg.ipynb").resolve()


def _stand_in(env_name, seed=0):
    """What measure() reads of an algorithm: its configuration, actor and critic."""
    torch.manual_seed(seed)
    env = make_env(env_name)  # the course's: actions in [-1, 1]
    obs_size, act_size = env.observation_space.shape[0], env.action_space.shape[0]
    actor = ContinuousDeterministicActor(obs_size, [16], act_size, env.action_space.low, env.action_space.high)
    critic = ContinuousQAgent(obs_size, [16], act_size)
    cfg = OmegaConf.create({"gym_env": {"env_name": env_name}})
    return SimpleNamespace(cfg=cfg, actor=actor, critic=critic)


def _rollout(env_name, actor, seed, steps):
    env = make_env(env_name, max_episode_steps=steps)  # the course's environment, past its time limit
    obs, _ = env.reset(seed=seed)
    observations, rewards = [], []
    for _ in range(steps):
        observations.append(obs)
        with torch.no_grad():
            action = actor.predict_action(torch.as_tensor(obs, dtype=torch.float32)[None])[0].numpy()
        obs, reward, terminated, truncated, _ = env.step(action)
        rewards.append(reward)
        if terminated or truncated:
            break
    return np.array(observations, dtype=np.float32), np.array(rewards)


def test_measure_runs_past_the_time_limit_and_measures_the_states_before_it():
    algo = _stand_in("Pendulum-v1")
    m = measure(algo, 0.98, n_episodes=2, seed=7)
    horizon = 200 + tail_steps(0.98)
    assert m.q_values.shape == m.rewards.shape == m.valid.shape == (2, horizon)
    assert m.valid[:, :200].all() and not m.valid[:, 200:].any(), "the states before the time limit"
    for episode in range(2):
        observations, rewards = _rollout("Pendulum-v1", algo.actor, 7 + episode, horizon)
        assert np.allclose(m.rewards[episode], rewards), "the rewards of the step from each state, past the limit"
        with torch.no_grad():
            obs = torch.as_tensor(observations[:200])
            expected = algo.critic.predict_value(obs, algo.actor.predict_action(obs)).numpy()
        assert np.allclose(m.q_values[episode, :200], expected, atol=1e-5), "Q(s, π(s)) of the first critic"


def test_measure_uses_the_first_critic_of_td3_and_stops_at_terminal_states():
    algo = _stand_in("LunarLanderContinuous-v3", seed=1)
    algo.critic_1, algo.critic = algo.critic, None
    m = measure(algo, 0.99, n_episodes=2, seed=0)
    for episode in range(2):
        _, rewards = _rollout("LunarLanderContinuous-v3", algo.actor, episode, 1000 + tail_steps(0.99))
        length = len(rewards)
        assert length < 1000, "an untrained lander crashes or comes to rest: the episode terminates"
        assert m.valid[episode].sum() == length and m.valid[episode, :length].all()
        # (a batch of observations through the actor differs from one at a time by float rounding)
        assert np.allclose(m.rewards[episode, :length], rewards, atol=1e-3) and not m.rewards[episode, length:].any()


def _summary(seeds=(1, 2, 3), n_evals=4, bias=(0.0, 0.0), seed=0):
    rng = np.random.default_rng(seed)
    summary = {}
    for label, b in zip(("DDPG", "TD3"), bias):
        true_values = rng.normal(-100, 5, (len(seeds), n_evals))
        summary[label] = {
            "seeds": np.array(seeds),
            "steps": np.arange(n_evals) * 1000,
            "returns": rng.normal(-500, 50, (len(seeds), n_evals)),
            "estimates": true_values + b + rng.normal(0, 1, (len(seeds), n_evals)),
            "true_values": true_values,
        }
    return summary


def test_results_file_keeps_every_environment_and_replaces_a_rerun(tmp_path):
    path = tmp_path / "results.npz"
    save_results(path, "Pendulum-v1", _summary(seed=1))
    save_results(path, "LunarLanderContinuous-v3", _summary(seeds=(1, 2, 3, 4, 5)))
    rerun = _summary(seed=2)
    save_results(path, "Pendulum-v1", rerun)
    nested = summaries(load_results(path))
    assert sorted(nested) == ["LunarLanderContinuous-v3", "Pendulum-v1"]
    assert np.array_equal(nested["Pendulum-v1"]["TD3"]["estimates"], rerun["TD3"]["estimates"])
    assert nested["LunarLanderContinuous-v3"]["DDPG"]["returns"].shape == (5, 4)
    assert not list(tmp_path.glob("*.tmp*")), "written through a temporary file, then renamed"


def test_welch_test_tells_a_real_difference_from_noise():
    different = _summary(seeds=range(1, 6), bias=(40.0, 0.0))
    biases = {k: {"bias": v["estimates"] - v["true_values"]} for k, v in different.items()}
    sentence = compare_final(biases, "bias")
    assert sentence.startswith("bias at the last evaluation: DDPG 4") and "significant at α = 0.05" in sentence
    assert "not significant" not in sentence
    same = _summary(seeds=range(1, 6), bias=(0.0, 0.0))
    assert "not significant" in compare_final(same, "estimates")
    text = report(different)
    assert "DDPG: bias (estimate - true value) averaged over training +4" in text
    assert text.count("Welch's t-test") == 4


def test_an_unfinished_notebook_stops_the_experiment_with_its_name_and_function():
    params = load_notebook(SOLUTIONS / "02-td3.ipynb").params
    blank = Algorithm("DDPG", str(REPO / "notebooks" / "01-ddpg.ipynb"), "DDPG", "run_ddpg")
    # the first function the training calls that the student writes: the critic's update step
    with pytest.raises(RuntimeError, match=r"DDPG \(01-ddpg.ipynb\): update_critic is not written yet\. Finish"):
        run_experiment([blank], params, [1], workers=0)


def test_runs_every_algorithm_and_seed_with_a_measurement_per_evaluation(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("BBRL_COURSE_OUTPUTS", str(tmp_path))
    params = load_notebook(SOLUTIONS / "02-td3.ipynb").params
    params["algorithm"].update(
        max_steps=400, learning_starts=128, eval_interval=128, nb_evals=2,
        architecture={"actor_hidden_size": [8], "critic_hidden_size": [8]},
    )
    algorithms = [
        Algorithm("DDPG", str(SOLUTIONS / "01-ddpg.ipynb"), "DDPG", "run_ddpg"),
        Algorithm("TD3", str(SOLUTIONS / "02-td3.ipynb"), "TD3", "run_td3"),
    ]
    runs = run_experiment(algorithms, params, [2, 1], n_episodes=2, workers=0)
    assert [r.seed for r in runs["DDPG"]] == [1, 2] and [r.seed for r in runs["TD3"]] == [1, 2]
    for run in runs["DDPG"] + runs["TD3"]:
        n_evals = len(run.steps)
        assert run.steps[0] == 0 and n_evals >= 3
        assert run.returns.shape == (n_evals, 2)
        assert run.q_values.shape == run.rewards.shape == run.valid.shape == (n_evals, 2, 200 + tail_steps(0.98))
    # the same seed gives the same run, whatever the other runs
    again = run_experiment(algorithms[1:], params, [1], n_episodes=2, workers=0)
    assert np.array_equal(again["TD3"][0].q_values, runs["TD3"][0].q_values)
    out = capsys.readouterr().out
    assert "Pendulum-v1: 4 runs (2 algorithms x 2 seeds)" in out and "TD3 seed 2: final return" in out
    assert "Figure(" not in out, "what the loaded notebooks print is not shown"


def test_make_figure_draws_each_environment_from_the_results_file(tmp_path, capsys):
    from bbrl_course.experiment import main

    path = tmp_path / "results.npz"
    save_results(path, "Pendulum-v1", _summary(seeds=range(1, 6), bias=(8.0, -1.0)))
    save_results(path, "LunarLanderContinuous-v3", _summary(seeds=range(1, 6), bias=(30.0, 2.0)))
    assert main([str(path), "--figures", str(tmp_path / "docs")]) == 0
    out = capsys.readouterr().out
    assert "Pendulum-v1 (5 seeds, 3000 steps):" in out and "LunarLanderContinuous-v3 (5 seeds" in out
    for env_name in ("Pendulum-v1", "LunarLanderContinuous-v3"):
        assert (tmp_path / "docs" / f"bias-{env_name}.png").stat().st_size > 20_000
    assert main([str(tmp_path / "missing.npz")]) == 1
    assert "missing.npz: no such file (the experiment notebook writes it)" in capsys.readouterr().out


def test_committed_figures_and_results_are_those_the_readme_shows():
    readme = (REPO / "README.md").read_text()
    results = summaries(load_results(REPO / "docs" / "experiment-results.npz"))
    for env_name, summary in results.items():
        assert f"docs/bias-{env_name}.png" in readme
        assert (REPO / "docs" / f"bias-{env_name}.png").stat().st_size > 20_000
        assert {len(s["seeds"]) for s in summary.values()} == {5}
        assert list(summary) == ["DDPG", "DDPG + min", "TD3"]
    assert sorted(results) == ["LunarLanderContinuous-v3", "Pendulum-v1"]
    text = (REPO / "docs" / "experiment-results.txt").read_text()
    assert text.startswith("Pendulum-v1 (5 seeds, 12000 steps):")
    assert "LunarLanderContinuous-v3 (5 seeds, 14016 steps):" in text


# --- Colab: copies of the notebooks, Drive, runs saved as they end, what made the results


def test_find_notebook_finds_colab_and_browser_copies_and_names_an_ambiguous_choice(tmp_path, monkeypatch):
    monkeypatch.delenv("BBRL_COURSE_NOTEBOOKS", raising=False)
    first, second = tmp_path / "here", tmp_path / "drive"
    first.mkdir(), second.mkdir()
    (first / "01-ddpg-old.ipynb").write_text("{}")  # not a copy of it
    (first / "Copy of 02-td3.ipynb").write_text("{}")
    with pytest.raises(FileNotFoundError) as error:
        find_notebook("01-ddpg.ipynb", [first, second])
    assert "'Copy of 01-ddpg.ipynb'" in str(error.value) and "\n" not in str(error.value)
    assert "set its path in the cell" not in str(error.value), "that cell is locked"
    for name in ("Copy of 01-ddpg.ipynb", "01-ddpg (1).ipynb", "Copy of 01-ddpg (2).ipynb", "01-ddpg.ipynb"):
        (second / name).write_text("{}")
        assert find_notebook("01-ddpg.ipynb", [first, second]) == (second / name).resolve()
        (second / name).unlink()
    assert find_notebook("02-td3.ipynb", [first, second]) == (first / "Copy of 02-td3.ipynb").resolve()
    # two candidates in the same folder: one line that names both and says what to do
    (first / "02-td3 (1).ipynb").write_text("{}")
    with pytest.raises(FileExistsError) as error:
        find_notebook("02-td3.ipynb", [first, second])
    message = str(error.value)
    assert "\n" not in message and "'02-td3 (1).ipynb' and 'Copy of 02-td3.ipynb'" in message
    assert "keep only your completed one there (delete, move or rename the others)" in message


def test_results_go_to_the_course_folder_in_drive_when_it_is_mounted(tmp_path, monkeypatch):
    from bbrl_course.experiment import DRIVE_FOLDER, results_folder

    monkeypatch.chdir(tmp_path)
    assert results_folder(tmp_path / "MyDrive") == Path(".")  # not mounted
    (tmp_path / "MyDrive").mkdir()
    assert results_folder(tmp_path / "MyDrive") == tmp_path / "MyDrive" / DRIVE_FOLDER
    assert (tmp_path / "MyDrive" / DRIVE_FOLDER).is_dir()


def test_the_results_file_says_what_made_each_environment(tmp_path):
    from bbrl_course.experiment import results_made_by

    path = tmp_path / "results.npz"
    made = {"max_steps": 15_000, "fast": False, "seeds": {"DDPG": [1, 2, 3]}, "bbrl_course": "0.3.0"}
    save_results(path, "Pendulum-v1", _summary(seed=1), made=made)
    save_results(path, "LunarLanderContinuous-v3", _summary(seed=2))
    results = load_results(path)
    assert results_made_by(results, "Pendulum-v1") == made
    assert results_made_by(results, "LunarLanderContinuous-v3") is None
    assert sorted(summaries(results)) == ["LunarLanderContinuous-v3", "Pendulum-v1"]
    save_results(path, "Pendulum-v1", _summary(seed=3))  # replaced, with what made it
    assert results_made_by(load_results(path), "Pendulum-v1") is None


def _tiny_params(max_steps=400):
    params = load_notebook(SOLUTIONS / "02-td3.ipynb").params
    params["algorithm"].update(
        max_steps=max_steps, learning_starts=128, eval_interval=128, nb_evals=2,
        architecture={"actor_hidden_size": [8], "critic_hidden_size": [8]},
    )
    return params


ALGORITHMS = [
    Algorithm("DDPG", str(SOLUTIONS / "01-ddpg.ipynb"), "DDPG", "run_ddpg"),
    Algorithm("TD3", str(SOLUTIONS / "02-td3.ipynb"), "TD3", "run_td3"),
]


class Disconnected(BaseException):
    """The runtime ending in the middle of the experiment (not an Exception: nothing catches it)."""


def test_after_a_disconnect_the_experiment_runs_only_the_missing_runs_and_ends_as_if_uninterrupted(
        tmp_path, monkeypatch, capsys):
    import bbrl_course.experiment as experiment
    from bbrl_course.experiment import load_runs

    monkeypatch.setenv("BBRL_COURSE_OUTPUTS", str(tmp_path))
    params = _tiny_params()
    # uninterrupted, in spawned processes as in the notebook
    whole = tmp_path / "whole.npz"
    run_experiment(ALGORITHMS, params, [1, 2], n_episodes=2, workers=2, runs_file=whole)
    capsys.readouterr()
    # interrupted after 3 runs of 4, in this process
    trained = []
    real = experiment.train_and_measure

    def disconnecting(algorithm, params, seed, *args):
        if len(trained) == 3:
            raise Disconnected()
        trained.append((algorithm.label, seed))
        return real(algorithm, params, seed, *args)

    monkeypatch.setattr(experiment, "train_and_measure", disconnecting)
    path = tmp_path / "runs.npz"
    with pytest.raises(Disconnected):
        run_experiment(ALGORITHMS, params, [1, 2], n_episodes=2, workers=0, runs_file=path)
    assert sorted(len(r) for r in load_runs(path, "Pendulum-v1").values()) == [1, 2], "each run saved as it ended"
    # run again: only the missing run
    trained.clear()
    capsys.readouterr()
    again = run_experiment(ALGORITHMS, params, [1, 2], n_episodes=2, workers=0, runs_file=path)
    out = capsys.readouterr().out
    assert f"3 of 4 runs found in {path}: running the 1 missing" in out, out
    assert trained == [("TD3", 2)]
    assert [r.seed for r in again["DDPG"]] == [1, 2] == [r.seed for r in again["TD3"]]
    # the same runs as without the disconnect: same seeds, same numbers (spawned or not)
    expected, got = load_results(whole), load_results(path)
    assert sorted(expected) == sorted(got)
    for key in expected:
        if not key.endswith(("/scalars", "/made_by")):  # (seconds differ)
            assert np.array_equal(expected[key], got[key]), key
    # nothing missing: nothing runs, not even the checks
    monkeypatch.setattr(experiment, "check_algorithm", lambda *args: pytest.fail("checked with nothing to run"))
    run_experiment(ALGORITHMS, params, [1, 2], n_episodes=2, workers=0, runs_file=path)
    assert "4 of 4 runs found in" in capsys.readouterr().out and trained == [("TD3", 2)]


def test_saved_runs_of_another_budget_or_code_run_again(tmp_path, monkeypatch, capsys):
    import bbrl_course.experiment as experiment

    monkeypatch.setenv("BBRL_COURSE_OUTPUTS", str(tmp_path))
    monkeypatch.setattr(experiment, "check_algorithm", lambda *args: None)
    trained = []

    def fake(algorithm, params, seed, n_episodes=5, made=None):
        trained.append((algorithm.label, seed))
        e, n, t = 2, n_episodes, 3
        return experiment.Run(algorithm.label, seed, params["gym_env"]["env_name"], np.arange(e), np.zeros((e, 2)),
                              np.zeros((e, n, t)), np.zeros((e, n, t)), np.ones((e, n, t), bool), made_by=dict(made))

    monkeypatch.setattr(experiment, "train_and_measure", fake)
    path = tmp_path / "runs.npz"
    run_experiment(ALGORITHMS, _tiny_params(400), [1, 2], n_episodes=2, workers=0, runs_file=path)
    assert len(trained) == 4
    trained.clear()
    capsys.readouterr()
    # a longer budget (the fast runs, then the real ones): every run again
    run_experiment(ALGORITHMS, _tiny_params(800), [1, 2], n_episodes=2, workers=0, runs_file=path)
    assert len(trained) == 4
    assert ("0 of 4 runs found in" in capsys.readouterr().out)
    # another version of a notebook: its runs again, only its
    trained.clear()
    changed = tmp_path / "01-ddpg.ipynb"
    notebook = nbformat.read(str(SOLUTIONS / "01-ddpg.ipynb"), as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell("FIXED = True"))
    nbformat.write(notebook, str(changed))
    algorithms = [Algorithm("DDPG", str(changed), "DDPG", "run_ddpg"), ALGORITHMS[1]]
    run_experiment(algorithms, _tiny_params(800), [1, 2], n_episodes=2, workers=0, runs_file=path)
    out = capsys.readouterr().out
    assert sorted(trained) == [("DDPG", 1), ("DDPG", 2)]
    assert "2 of 4 runs found in" in out and "running the 2 missing (2 there were made with other parameters" in out
    made = experiment.runs_made_by(experiment.load_runs(path, "Pendulum-v1"))
    assert made["max_steps"] == 800 and made["fast"] is False and made["seeds"] == {"DDPG": [1, 2], "TD3": [1, 2]}
    assert made["bbrl_course"] and made["n_episodes"] == 2


def _released_cell(grade_id):
    notebook = nbformat.read(str(REPO / "notebooks" / "03-experiment.ipynb"), as_version=4)
    return next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def test_the_drive_cell_mounts_drive_in_colab_only(monkeypatch, capsys):
    import sys
    import types

    from bbrl_course import in_colab

    source = _released_cell("experiment-drive").source
    exec(source, {"Path": Path, "in_colab": in_colab})  # outside Colab: nothing
    assert capsys.readouterr().out == ""
    mounted = []
    google, colab = types.ModuleType("google"), types.ModuleType("google.colab")
    colab.drive = SimpleNamespace(mount=mounted.append)
    google.colab = colab
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", colab)
    exec(source, {"Path": Path, "in_colab": in_colab})
    assert mounted == ["/content/drive"]

    def refused(path):
        raise ValueError("mount failed")

    colab.drive = SimpleNamespace(mount=refused)  # permission refused: a line, and the notebook goes on
    exec(source, {"Path": Path, "in_colab": in_colab})
    assert "Drive not mounted (mount failed): the files stay in this runtime" in capsys.readouterr().out


def test_the_budget_check_of_the_results_file_is_visible_to_students():
    # the released test (what students see) refuses fast mode and short budgets itself: a contract
    # the hidden part could not add
    source = _released_cell("test_experiment_results").source
    assert "HIDDEN" not in source
    for text in ('made.get("fast")', 'made["max_steps"] >= budget', "config_for(env_name, fast=False)",
                 'os.environ.get("NBGRADER_EXECUTION") != "autograde"'):
        assert text in source, text
