"""Plots: learning curves, and the policy and critic of an agent.

For Pendulum-v1 the policy and the critic are drawn over the pendulum's angle
and angular velocity (the observation is (cos θ, sin θ, θ̇)); for another
environment, over the first two observation components, the others at 0.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Mapping, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

__all__ = ["plot_learning_curve", "plot_agent", "state_grid", "learning_curve"]


def learning_curve(algo) -> tuple[np.ndarray, np.ndarray]:
    """(steps, mean return) of every evaluation of a run."""
    steps = np.array([s for s, _ in algo.eval_history], dtype=float)
    means = np.array([r.mean().item() for _, r in algo.eval_history], dtype=float)
    return steps, means


def plot_learning_curve(runs: Mapping[str, Sequence], path=None, title: str | None = None):
    """Mean evaluation return against environment steps.

    ``runs`` maps a label to a list of runs (algorithms, after training); with
    several runs per label, the mean over runs is drawn with a band of ± one
    standard deviation. Saves to ``path`` when given; returns the figure.
    """
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, algos in runs.items():
        curves = [learning_curve(a) for a in algos if a.eval_history]
        if not curves:
            continue
        n = min(len(c[0]) for c in curves)
        steps = curves[0][0][:n]
        values = np.stack([c[1][:n] for c in curves])
        mean = values.mean(axis=0)
        ax.plot(steps, mean, label=f"{label} ({len(curves)} run{'s' * (len(curves) > 1)})")
        if len(curves) > 1:
            std = values.std(axis=0)
            ax.fill_between(steps, mean - std, mean + std, alpha=0.25)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("mean evaluation return")
    if title:
        ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=100)
        plt.close(fig)
    return fig


def state_grid(env_name: str, observation_space, definition: int = 50):
    """A (definition², obs_dim) grid of observations, with its axes and their labels."""
    if env_name.startswith("Pendulum"):
        theta = torch.linspace(-math.pi, math.pi, definition)
        theta_dot = torch.linspace(-8.0, 8.0, definition)
        tt, vv = torch.meshgrid(theta, theta_dot, indexing="ij")
        obs = torch.stack((torch.cos(tt), torch.sin(tt), vv), dim=-1).reshape(-1, 3)
        return obs, (theta, theta_dot), ("angle θ (0 = upright)", "angular velocity θ̇")
    low = np.clip(observation_space.low[:2], -5, 5)
    high = np.clip(observation_space.high[:2], -5, 5)
    x = torch.linspace(float(low[0]), float(high[0]), definition)
    y = torch.linspace(float(low[1]), float(high[1]), definition)
    xx, yy = torch.meshgrid(x, y, indexing="ij")
    obs = torch.zeros(definition * definition, observation_space.shape[0])
    obs[:, 0], obs[:, 1] = xx.reshape(-1), yy.reshape(-1)
    return obs, (x, y), ("observation[0]", "observation[1]")


def plot_agent(algo, path, definition: int = 50):
    """Draws the best policy's action and its Q-value over the state grid.

    Uses ``algo.actor`` and ``critic_of(algo)`` (DDPG's critic, TD3's first critic).
    """
    from .agents import critic_of

    actor = algo.actor
    critic = critic_of(algo)
    space = algo.eval_env.get_observation_space()
    obs, (x, y), (xlabel, ylabel) = state_grid(algo.cfg.gym_env.env_name, space, definition)
    with torch.no_grad():
        actions = actor.predict_action(obs)
        panels = [("policy: first action component", actions[:, 0])]
        if critic is not None:
            panels.append(("critic: Q(s, π(s))", critic.predict_value(obs, actions)))

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        image = ax.imshow(
            values.reshape(definition, definition).T.numpy(),
            origin="lower",
            aspect="auto",
            extent=(x[0].item(), x[-1].item(), y[0].item(), y[-1].item()),
            cmap="viridis",
        )
        fig.colorbar(image, ax=ax)
        ax.set_title(title)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
    fig.suptitle(f"{algo.name} at step {algo.nb_steps}, return {algo.best_reward:.1f}")
    fig.tight_layout()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path
