"""The checks of DDPG's update steps (bbrl_course.checks.update_facts and its stand-in):
the values the visible tests compare with are distinct, so that a message names the right
mistake, and the facts say what an update step did."""

from __future__ import annotations

import itertools

import pytest
import torch

from bbrl_course.checks import close, ddpg_reference, same_gradients, stale_gradients, tiny_config, update_facts
from conftest import REPO  # noqa: F401  (the repository on sys.path)

PARAMS = {
    "base_dir": "update-checks",
    "algorithm": {"seed": 1, "max_steps": 100, "n_envs": 1, "n_steps": 33, "learning_starts": 64, "buffer_size": 1000,
                  "batch_size": 16, "discount_factor": 0.98, "tau_target": 0.005, "exploration": "gaussian",
                  "action_noise": 0.1, "eval_interval": 1000, "nb_evals": 1, "log_interval": 100,
                  "architecture": {"actor_hidden_size": [8], "critic_hidden_size": [8]}},
    "gym_env": {"env_name": "Pendulum-v1"},
    "actor_optimizer": {"classname": "torch.optim.Adam", "lr": 1e-3},
    "critic_optimizer": {"classname": "torch.optim.Adam", "lr": 1e-3},
}
#: the stand-ins of the notebook's tests: (seed, batch size)
USED = [(0, 4), (5, 7), (11, 6), (2, 1), (3, 16), (11, 1)]


@pytest.mark.parametrize("seed, batch_size", USED)
def test_the_values_of_the_mistakes_differ(seed, batch_size):
    ref = ddpg_reference(tiny_config(PARAMS), seed, batch_size)
    values = {k: v for k, v in ref.items() if k.startswith("Q")}
    for (a, x), (b, y) in itertools.combinations(values.items(), 2):
        assert not close(x, y), f"{a} and {b} are equal on the stand-in (seed {seed}, B {batch_size})"


def compute_critic_loss(discount_factor, reward, must_bootstrap, q_values, target_q_values):
    raise AssertionError("replaced by the probe during update_facts")


def update_critic(ddpg, batch, actor="t_target_actor"):
    terminated, reward = batch["env/terminated", "env/reward"]
    ddpg.t_critic(batch, t=0, n_steps=1)
    with torch.no_grad():
        getattr(ddpg, actor)(batch, t=1, n_steps=1)
        ddpg.t_target_critic(batch, t=1, n_steps=1)
    q_values, target_q_values = batch["critic/q_value", "target-critic/q_value"]
    loss = compute_critic_loss(ddpg.cfg.algorithm.discount_factor, reward, ~terminated, q_values, target_q_values)
    ddpg.critic_optimizer.zero_grad()
    loss.backward()
    ddpg.critic_optimizer.step()
    return loss


def test_facts_of_a_correct_update_critic():
    cfg = tiny_config(PARAMS)
    facts = update_facts(update_critic, cfg, "critic")
    ref = ddpg_reference(cfg)
    args = facts["arguments"]
    assert facts["calls"] == 1 and facts["steps"] == {"critic": 1, "actor": 0}
    assert close(args["q_values"]["value"][0], ref["Q(s, a)"]) and args["q_values"]["grad"]
    assert close(args["target_q_values"]["value"][1], ref["Q'(s', π'(s'))"]) and not args["target_q_values"]["grad"]
    assert same_gradients(facts["step_gradients"], facts["loss_gradients"])
    assert not same_gradients(facts["step_gradients"], stale_gradients(facts))
    assert facts["moved"] == {"actor": False, "target_actor": False, "critic": True, "target_critic": False}
    assert facts["returned_loss"]
    # the probe is gone afterwards
    assert globals()["compute_critic_loss"] is compute_critic_loss


def test_facts_name_the_online_actor_and_stale_gradients():
    cfg = tiny_config(PARAMS)
    ref = ddpg_reference(cfg)

    def online(ddpg, batch):
        return update_critic(ddpg, batch, actor="t_actor")

    online.__globals__["compute_critic_loss"] = compute_critic_loss  # the same module's namespace
    facts = update_facts(online, cfg, "critic")
    assert close(facts["arguments"]["target_q_values"]["value"][1], ref["Q'(s', π(s'))"])

    def not_zeroed(ddpg, batch):
        ddpg.critic_optimizer.zero_grad = lambda *args, **kwargs: None
        return update_critic(ddpg, batch)

    facts = update_facts(not_zeroed, cfg, "critic")
    assert same_gradients(facts["step_gradients"], stale_gradients(facts))
