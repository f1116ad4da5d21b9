"""The experiment module (bbrl_course.experiment): the bias measurement, the runs over
seeds, the results file and the statistics. The notebook that uses it runs in
test_notebooks.py (solution, fast mode) and test_release.py (student release)."""

from __future__ import annotations

import math
import os
from types import SimpleNamespace

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
    with pytest.raises(RuntimeError, match=r"DDPG \(01-ddpg.ipynb\): compute_\w+ is not written yet"):
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
        assert {len(s["seeds"]) for s in summary.values()} == {5} and sorted(summary) == ["DDPG", "TD3"]
    assert sorted(results) == ["LunarLanderContinuous-v3", "Pendulum-v1"]
    assert (REPO / "docs" / "experiment-results.txt").read_text().startswith("Pendulum-v1 (5 seeds, 15008 steps):")
