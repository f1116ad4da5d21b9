"""The BBRL agents of the course: networks and exploration noise.

Every agent reads and writes the BBRL workspace at time ``t``:

- ``ContinuousDeterministicActor`` reads ``env/env_obs`` and writes ``action``;
- ``ContinuousQAgent`` reads ``env/env_obs`` and ``action`` and writes
  ``<prefix>q_value``, a tensor of shape ``(B,)``;
- the noise agents read ``action`` and write it back with noise added.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn as nn
from bbrl.agents import Agent

__all__ = [
    "UniformRandomActor",
    "build_mlp",
    "ContinuousQAgent",
    "ContinuousDeterministicActor",
    "AddGaussianNoise",
    "AddOUNoise",
]


def build_mlp(
    sizes: Sequence[int], activation: nn.Module, output_activation: nn.Module | None = None
) -> nn.Sequential:
    """A multi-layer perceptron from R^sizes[0] to R^sizes[-1].

    ``activation`` follows every layer but the last, which is followed by
    ``output_activation`` (the identity when None).
    """
    output_activation = nn.Identity() if output_activation is None else output_activation
    layers: list[nn.Module] = []
    for j in range(len(sizes) - 1):
        act = activation if j < len(sizes) - 2 else output_activation
        layers += [nn.Linear(sizes[j], sizes[j + 1]), act]
    return nn.Sequential(*layers)


class ContinuousQAgent(Agent):
    """The critic Q(s, a): a network from (state, action) to one number.

    ``forward(t)`` writes ``<prefix>q_value`` at time t with shape (B,): the last
    dimension of the network's (B, 1) output is squeezed away, so that Q-values,
    rewards and done flags all have the same shape and never broadcast to (B, B).
    """

    def __init__(self, state_dim: int, hidden_layers: Sequence[int], action_dim: int):
        super().__init__()
        self.is_q_function = True
        self.model = build_mlp(
            [state_dim + action_dim, *hidden_layers, 1], activation=nn.ReLU()
        )

    def forward(self, t: int, **kwargs):
        obs = self.get(("env/env_obs", t))  # (B, obs_dim)
        action = self.get(("action", t))  # (B, action_dim)
        q_value = self.model(torch.cat((obs, action), dim=1)).squeeze(-1)  # (B,)
        self.set((f"{self.prefix}q_value", t), q_value)

    def predict_value(self, obs: torch.Tensor, action: torch.Tensor) -> torch.Tensor:
        """Q-values of a batch of (obs, action) pairs: (B, obs_dim), (B, act_dim) -> (B,)."""
        return self.model(torch.cat((obs, action), dim=-1)).squeeze(-1)


class ContinuousDeterministicActor(Agent):
    """The policy pi(s): a network from a state to an action in [-1, 1]^action_dim.

    The tanh output is scaled to the action bounds ``[low, high]`` of the
    environment: [-1, 1] in the course's environments (``bbrl_course.envs``), where it
    is the tanh itself.
    """

    def __init__(
        self,
        state_dim: int,
        hidden_layers: Sequence[int],
        action_dim: int,
        low: float | Sequence[float] = -1.0,
        high: float | Sequence[float] = 1.0,
    ):
        super().__init__()
        self.model = build_mlp(
            [state_dim, *hidden_layers, action_dim],
            activation=nn.ReLU(),
            output_activation=nn.Tanh(),
        )
        low_t = torch.as_tensor(low, dtype=torch.float32).expand(action_dim)
        high_t = torch.as_tensor(high, dtype=torch.float32).expand(action_dim)
        # Buffers, not parameters: they follow .to(device) and deepcopy, and no
        # optimizer ever changes them.
        self.register_buffer("action_low", low_t.clone())
        self.register_buffer("action_high", high_t.clone())

    def predict_action(self, obs: torch.Tensor, stochastic: bool = False) -> torch.Tensor:
        """Actions for a batch of observations: (B, obs_dim) -> (B, action_dim)."""
        assert not stochastic, "a deterministic actor has no stochastic action"
        scale = (self.action_high - self.action_low) / 2
        return self.action_low + scale * (self.model(obs) + 1)

    def forward(self, t: int, **kwargs):
        self.set(("action", t), self.predict_action(self.get(("env/env_obs", t))))


class _ClippedNoise(Agent):
    """Noise agents keep the action inside the environment's bounds."""

    def __init__(self, low=None, high=None):
        super().__init__()
        self.low = None if low is None else torch.as_tensor(low, dtype=torch.float32)
        self.high = None if high is None else torch.as_tensor(high, dtype=torch.float32)

    def _clip(self, action: torch.Tensor) -> torch.Tensor:
        if self.low is None:
            return action
        return torch.max(torch.min(action, self.high), self.low)


class AddGaussianNoise(_ClippedNoise):
    """Adds N(0, sigma^2) to each action component (then keeps it in bounds)."""

    def __init__(self, sigma: float, low=None, high=None):
        super().__init__(low, high)
        self.sigma = sigma

    def forward(self, t: int, **kwargs):
        action = self.get(("action", t))
        noisy = action + self.sigma * torch.randn_like(action)
        self.set(("action", t), self._clip(noisy))


class AddOUNoise(_ClippedNoise):
    """Ornstein-Uhlenbeck noise, as in the DDPG paper (Lillicrap et al., 2016).

    The noise x follows dx = -theta * x * dt + sigma * sqrt(dt) * N(0, 1): it is
    correlated from one step to the next, so the agent pushes in the same
    direction for a while, which helps on tasks with inertia such as Pendulum.
    The noise is added to the actor's action; it restarts at 0 in every
    environment whose episode starts at time t.
    """

    def __init__(self, sigma: float, theta: float = 0.15, dt: float = 1e-2, low=None, high=None):
        super().__init__(low, high)
        self.sigma = sigma
        self.theta = theta
        self.dt = dt
        self.x: torch.Tensor | None = None

    def reset(self):
        self.x = None

    def forward(self, t: int, **kwargs):
        action = self.get(("action", t))
        if self.x is None or self.x.shape != action.shape:
            self.x = torch.zeros_like(action)
        # (B,) -> (B, 1): one flag per environment, broadcast over action components
        new_episode = (self.get(("env/timestep", t)) == 0).unsqueeze(-1)
        self.x = torch.where(new_episode, torch.zeros_like(self.x), self.x)
        self.x = (
            self.x
            - self.theta * self.x * self.dt
            + self.sigma * math.sqrt(self.dt) * torch.randn_like(action)
        )
        self.set(("action", t), self._clip(action + self.x))


class UniformRandomActor(Agent):
    """Actions drawn uniformly within the bounds, whatever the observation.

    Filling the replay buffer with it before learning starts covers the action
    space better than a fresh actor with a little noise (stable-baselines3 and
    CleanRL do the same).
    """

    def __init__(self, low, high):
        super().__init__()
        self.low = torch.as_tensor(low, dtype=torch.float32)
        self.high = torch.as_tensor(high, dtype=torch.float32)

    def forward(self, t: int, **kwargs):
        n = self.get(("env/env_obs", t)).shape[0]
        uniform = torch.rand(n, self.low.shape[0])
        self.set(("action", t), self.low + (self.high - self.low) * uniform)


def critic_of(algo):
    """The critic that is plotted and whose bias is measured: DDPG's critic, TD3's first
    critic (the one its actor follows); None if it has neither."""
    critic = getattr(algo, "critic_1", None)
    return critic if critic is not None else getattr(algo, "critic", None)
