"""The course's environments: gymnasium's, their continuous actions rescaled to [-1, 1].

Every environment the course creates (training, evaluation, the grader's evaluation, the
video, the experiment's measurements) comes from ``make_env``, so the agents always see
actions in [-1, 1]: the actor's ``tanh`` is the action, and the critics see actions on
the same scale whatever the task. The environment maps them back to its own range
(for Pendulum-v1, an action of 1 is a torque of 2).

Why: with the pendulum's raw range, [-2, 2], the critics saw actions twice as large as
stable-baselines3's (whose policies act in [-1, 1]) and the course's TD3 was less stable
once learned (issue 15, ``benchmarks/learning.py``). stable-baselines3 recommends the
same normalization for every continuous action space.
"""

from __future__ import annotations

import numpy as np
from bbrl.agents.gymnasium import make_env as _bbrl_make_env
from gymnasium.spaces import Box
from gymnasium.wrappers import RescaleAction

__all__ = ["make_env", "unit_actions"]

#: False: the environments keep their own action range (``benchmarks/learning.py``'s
#: ``td3+env-actions``, the course before issue 15, for comparison)
RESCALE = True


def unit_actions(env):
    """``env`` with its continuous actions rescaled to [-1, 1]; unchanged when they already
    lie in [-1, 1] (LunarLanderContinuous-v3), are not continuous, or ``RESCALE`` is off."""
    space = env.action_space
    if not RESCALE or not isinstance(space, Box):
        return env
    if np.all(space.low == -1.0) and np.all(space.high == 1.0):
        return env
    # bounds of the space's dtype: float64 bounds would make gymnasium warn on stderr
    unit = np.ones(space.shape, dtype=space.dtype)
    return RescaleAction(env, min_action=-unit, max_action=unit)


def make_env(env_name: str, autoreset: bool = False, wrappers=(), **kwargs):
    """BBRL's ``make_env`` (gymnasium's ``make`` with ``kwargs``, then ``wrappers``, then
    auto-reset if asked), the actions rescaled to [-1, 1] first."""
    return _bbrl_make_env(env_name, autoreset=autoreset, wrappers=[unit_actions, *wrappers], **kwargs)
