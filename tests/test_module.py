"""The shared module bbrl_course: agents, noise, configuration, the training loop."""

from __future__ import annotations

import csv

import pytest
import torch
from bbrl.workspace import Workspace

from bbrl_course import (
    AddGaussianNoise,
    AddOUNoise,
    ContinuousDeterministicActor,
    ContinuousQAgent,
    fast_mode,
    iter_replay_buffers,
    make_config,
)
from bbrl_course.algo import EVALUATIONS_CSV
from bbrl_course.checks import tiny_config


def _workspace(obs, action=None, timestep=None):
    ws = Workspace()
    ws.set("env/env_obs", 0, obs)
    if action is not None:
        ws.set("action", 0, action)
    ws.set("env/timestep", 0, timestep if timestep is not None else torch.zeros(obs.shape[0], dtype=torch.long))
    return ws


def test_critic_writes_one_q_value_per_transition():
    critic = ContinuousQAgent(3, [16], 1).with_prefix("critic/")
    ws = _workspace(torch.randn(5, 3), torch.randn(5, 1))
    critic(ws, t=0)
    assert ws.get("critic/q_value", 0).shape == (5,)
    assert critic.predict_value(torch.randn(5, 3), torch.randn(5, 1)).shape == (5,)


def test_actor_stays_within_bounds():
    actor = ContinuousDeterministicActor(3, [16], 2, low=[-2.0, 0.0], high=[2.0, 1.0])
    with torch.no_grad():
        for p in actor.parameters():
            p.mul_(100)  # saturate the tanh
    actions = actor.predict_action(torch.randn(1000, 3) * 10)
    assert actions.shape == (1000, 2)
    assert actions[:, 0].min() >= -2 and actions[:, 0].max() <= 2
    assert actions[:, 1].min() >= 0 and actions[:, 1].max() <= 1
    assert actions[:, 0].min() < -1.9 and actions[:, 0].max() > 1.9  # the whole range is reachable


def test_gaussian_noise_is_clipped_to_bounds():
    torch.manual_seed(0)
    noise = AddGaussianNoise(5.0, low=torch.tensor([-2.0]), high=torch.tensor([2.0]))
    ws = _workspace(torch.zeros(1000, 3), torch.zeros(1000, 1))
    noise(ws, t=0)
    action = ws.get("action", 0)
    assert action.abs().max() == 2.0 and action.std() > 1.0


def _ou_trajectory(noise, steps, timestep_of=lambda t: t):
    ws = Workspace()
    for t in range(steps):
        ws.set("action", t, torch.zeros(2000, 1))
        ws.set("env/timestep", t, torch.full((2000,), timestep_of(t), dtype=torch.long))
        noise(ws, t=t)
    return ws["action"][:, :, 0]  # (steps, 2000)


def test_ou_noise_is_correlated_in_time():
    torch.manual_seed(0)
    x = _ou_trajectory(AddOUNoise(1.0), 60)
    # consecutive values are strongly correlated, unlike Gaussian noise
    corr = torch.corrcoef(torch.stack((x[-2], x[-1])))[0, 1]
    assert corr > 0.9
    # variance grows from 0 at the start of the episode: sigma^2 * t * dt for small t
    assert x[-1].var().item() == pytest.approx(60 * 0.01, rel=0.15)


def test_ou_noise_restarts_with_each_episode():
    torch.manual_seed(0)
    x = _ou_trajectory(AddOUNoise(1.0), 60, timestep_of=lambda t: t % 30)
    # at t = 30 a new episode starts: the noise starts again from 0
    assert x[30].var().item() == pytest.approx(0.01, rel=0.15)
    assert x[29].var().item() > 10 * x[30].var().item()


def test_fast_mode_shrinks_the_budget(monkeypatch):
    params = {"algorithm": {"max_steps": 10_000}}
    fast = {"algorithm": {"max_steps": 100}}
    for var in ("BBRL_COURSE_FAST", "NBGRADER_EXECUTION"):
        monkeypatch.delenv(var, raising=False)
    assert not fast_mode() and make_config(params, fast).algorithm.max_steps == 10_000
    monkeypatch.setenv("BBRL_COURSE_FAST", "0")
    assert not fast_mode()
    monkeypatch.setenv("BBRL_COURSE_FAST", "1")
    assert make_config(params, fast).algorithm.max_steps == 100
    monkeypatch.delenv("BBRL_COURSE_FAST")
    monkeypatch.setenv("NBGRADER_EXECUTION", "autograde")
    assert fast_mode()


def test_replay_loop_counts_steps_and_updates(ddpg_nb, outputs):
    cfg = tiny_config(ddpg_nb.params, max_steps=640, n_steps=33, learning_starts=128, updates_per_step=0.5,
                      eval_interval=256, nb_evals=2)
    ddpg = ddpg_nb.DDPG(cfg)
    seen = []
    for rb in iter_replay_buffers(ddpg):
        assert rb.size() >= 128, "no update before learning_starts transitions"
        seen.append(ddpg.nb_updates)
    assert ddpg.nb_steps == 640  # 20 rollouts of 32 steps
    # With auto-reset, the step after an episode's end (200 steps) is a reset, not a
    # transition: the (final state -> first state) pairs at 200, 400, 600 are dropped
    assert ddpg.replay_buffer.size() == 640 - 3
    assert seen == list(range(1, len(seen) + 1))
    # updates from the rollout that reached 128 transitions on: (640 - 96) / 2
    assert len(seen) == (640 - 96) // 2
    # evaluations: before training, about every 256 steps, and at the end
    steps = [s for s, _ in ddpg.eval_history]
    assert steps[0] == 0 and steps[-1] == 640 and len(steps) == 4
    with (ddpg.base_dir / EVALUATIONS_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["steps"]) for r in rows] == steps
    assert all(len(r["returns"].split()) == 2 for r in rows)
    assert (ddpg.base_dir / "learning_curve.png").stat().st_size > 0


def test_training_stops_at_the_first_evaluation_above_stop_above(ddpg_nb, outputs):
    # the learning test's configuration stops there (its verdict needs no more steps); without
    # stop_above, the same run goes to max_steps
    def run(**stop):
        ddpg = ddpg_nb.DDPG(tiny_config(ddpg_nb.params, max_steps=640, n_steps=33, learning_starts=128,
                                        eval_interval=128, nb_evals=2, **stop))
        for _ in iter_replay_buffers(ddpg):
            pass
        return ddpg.nb_steps, [(s, r.mean().item()) for s, r in ddpg.eval_history]

    steps, evaluations = run()
    assert steps == 640 and evaluations[-1][0] == 640
    # the first evaluation in the loop that beats every one before it: a bar just below it
    # stops the run there, with no evaluation after
    first = next((i for i in range(1, len(evaluations) - 1)
                  if evaluations[i][1] > max(v for _, v in evaluations[:i])), None)
    assert first is not None, f"no evaluation in the loop beats the first: {evaluations}"
    bar = (evaluations[first][1] + max(v for _, v in evaluations[:first])) / 2
    assert run(stop_above=bar) == (evaluations[first][0], evaluations[:first + 1])
    # above the untrained policy already: no training at all; above every return: to the end
    assert run(stop_above=-1e9) == (0, evaluations[:1])
    assert run(stop_above=0.0) == (steps, evaluations)
    from bbrl_course.checks import LEARNING_THRESHOLD, learning_check_config

    assert learning_check_config(ddpg_nb.params).algorithm.stop_above == LEARNING_THRESHOLD
    assert "stop_above" not in learning_check_config(ddpg_nb.params, stop=False).algorithm


def test_evaluation_keeps_the_best_policy(ddpg_nb, outputs):
    ddpg = ddpg_nb.DDPG(tiny_config(ddpg_nb.params))
    assert ddpg.evaluate() is True  # the first evaluation is the best so far
    best = ddpg.best_reward
    kept = ddpg.best_policy
    assert kept is not ddpg.actor
    with torch.no_grad():
        for p in ddpg.actor.parameters():
            p.add_(1.0)
    assert not torch.equal(next(kept.parameters()), next(ddpg.actor.parameters())), "a copy, not the live actor"
    ddpg.nb_steps += 100
    assert ddpg.evaluate() is False  # not due before eval_interval steps
    assert ddpg.evaluate(force=True) in (True, False)
    assert ddpg.best_reward >= best


def test_video_is_skipped_with_a_reason_when_rendering_fails(monkeypatch, tmp_path, capsys):
    from bbrl_course import video

    def no_renderer(*args, **kwargs):
        raise ImportError("pygame is not installed")

    monkeypatch.setattr(video, "_frames", no_renderer)
    actor = ContinuousDeterministicActor(3, [4], 1, -2.0, 2.0)
    assert video.record_video("Pendulum-v1", actor, tmp_path / "v.mp4") is None
    out = capsys.readouterr().out
    assert out.startswith("Video skipped: Pendulum-v1 could not render frames") and "pygame" in out
    assert not (tmp_path / "v.mp4").exists()


def test_actions_are_uniformly_random_until_learning_starts(ddpg_nb, outputs):
    ddpg = ddpg_nb.DDPG(tiny_config(ddpg_nb.params, max_steps=640, learning_starts=320))
    for _ in iter_replay_buffers(ddpg):
        break  # the first update: the buffer holds the warm-up transitions
    actions = ddpg.replay_buffer.variables["action"][:320, 0, 0]
    # uniform on [-1, 1] (the course's environments): standard deviation 2 / sqrt(12) = 0.58,
    # both halves visited
    assert actions.min() >= -1 and actions.max() <= 1
    assert abs(actions.std().item() - 2 / 12**0.5) < 0.08
    assert (actions < -0.5).float().mean() > 0.15 and (actions > 0.5).float().mean() > 0.15


def test_warmup_can_use_the_training_policy(ddpg_nb, outputs):
    ddpg = ddpg_nb.DDPG(
        tiny_config(ddpg_nb.params, max_steps=640, learning_starts=320, random_warmup=False, action_noise=0.0)
    )
    for _ in iter_replay_buffers(ddpg):
        break
    actions = ddpg.replay_buffer.variables["action"][:320, 0]
    obs = ddpg.replay_buffer.variables["env/env_obs"][:320, 0]
    with torch.no_grad():
        assert torch.allclose(actions, ddpg.actor.predict_action(obs), atol=1e-5)


def test_the_course_environments_act_in_unit_range_and_the_pendulum_gets_twice_the_torque(ddpg_nb, outputs):
    import numpy as np

    from bbrl_course.envs import make_env

    pendulum = make_env("Pendulum-v1")
    assert (pendulum.action_space.low.tolist(), pendulum.action_space.high.tolist()) == ([-1.0], [1.0])
    pendulum.reset(seed=0)
    for action, torque in ((1.0, 2.0), (-0.5, -1.0), (0.0, 0.0)):
        pendulum.step(np.array([action], dtype=np.float32))
        assert pendulum.unwrapped.last_u == pytest.approx(torque)
    lander = make_env("LunarLanderContinuous-v3")  # already in [-1, 1]: not wrapped
    assert "RescaleAction" not in str(lander)
    # training, evaluation and the actor's bounds: all in [-1, 1]
    ddpg = ddpg_nb.DDPG(tiny_config(ddpg_nb.params))
    low, high = ddpg.action_bounds()
    assert (low.tolist(), high.tolist()) == ([-1.0], [1.0])
    assert ddpg.eval_env.get_action_space().high.tolist() == [1.0]
    assert ddpg.actor.action_high.tolist() == [1.0]


def test_the_grader_and_the_experiment_see_the_same_environment_as_training(ddpg_nb, outputs, monkeypatch):
    """An actor that always pushes +1 (a torque of 2) gets the same return from the grader's
    evaluation and the experiment's measurement as from training's evaluation; with the raw
    [-2, 2] range, +1 would be a torque of 1 and every figure would differ."""
    from bbrl_course import algo, envs, experiment

    cfg = tiny_config(ddpg_nb.params, nb_evals=3)
    ddpg = ddpg_nb.DDPG(cfg)
    with torch.no_grad():  # tanh(large) = 1: the action +1 whatever the state
        last = ddpg.actor.model[-2]
        last.weight.zero_()
        last.bias.fill_(20.0)
    ddpg.evaluate(force=True)
    trained = ddpg.eval_history[-1][1].mean().item()
    assert algo.evaluate_policy(cfg, ddpg.actor.state_dict(), 0) == pytest.approx(trained, abs=1e-3)

    measured = experiment.measure(ddpg, 0.98, n_episodes=1, seed=7).rewards[0, :200].sum()
    monkeypatch.setattr(envs, "RESCALE", False)  # the raw range: +1 is a torque of 1
    raw = experiment.measure(ddpg, 0.98, n_episodes=1, seed=7).rewards[0, :200].sum()
    assert measured != pytest.approx(raw, abs=1.0)
    pendulum = envs.make_env("Pendulum-v1")
    assert pendulum.action_space.high.tolist() == [2.0]
