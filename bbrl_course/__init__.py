"""Shared code of the DDPG/TD3 course: what every notebook uses but no student writes.

Agents (actor, critic, exploration noise), the base class with evaluation and
best-policy tracking, the replay-buffer loop, logging, plots and video.
"""

from .agents import (
    AddGaussianNoise,
    AddOUNoise,
    ContinuousDeterministicActor,
    ContinuousQAgent,
    build_mlp,
)
from .algo import EpochBasedAlgo, Logger, RLBase, iter_replay_buffers, setup_optimizer
from .config import fast_mode, make_config
from .notebook import in_colab, setup_tensorboard, show_source
from .plots import plot_agent, plot_learning_curve

try:  # the version in pyproject.toml, as installed
    from importlib.metadata import PackageNotFoundError, version

    __version__ = version("bbrl-course")
except PackageNotFoundError:  # imported from a checkout that is not installed
    __version__ = "unknown"

__all__ = [
    "AddGaussianNoise",
    "AddOUNoise",
    "ContinuousDeterministicActor",
    "ContinuousQAgent",
    "build_mlp",
    "EpochBasedAlgo",
    "Logger",
    "RLBase",
    "iter_replay_buffers",
    "setup_optimizer",
    "fast_mode",
    "make_config",
    "in_colab",
    "setup_tensorboard",
    "show_source",
    "plot_agent",
    "plot_learning_curve",
]
