"""What every off-policy algorithm of the course shares.

- ``RLBase``: seeding, output folder, logger, evaluation that keeps the best
  policy so far, video of the best policy.
- ``EpochBasedAlgo``: the training environment (auto-reset) and the replay buffer.
- ``iter_replay_buffers``: the data-collection loop; it yields the replay buffer
  once per gradient update, so that an algorithm is written as::

      for rb in iter_replay_buffers(algo):
          batch = rb.get_shuffled(algo.cfg.algorithm.batch_size)
          ...  # one gradient update
"""

from __future__ import annotations

import copy
import csv
import random
import time
from functools import cached_property, partial
from itertools import chain
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch
from bbrl import get_arguments, get_class, instantiate_class
from bbrl.agents import Agent, Agents, TemporalAgent
from bbrl.agents.gymnasium import ParallelGymAgent
from bbrl.utils.replay_buffer import ReplayBuffer
from bbrl.workspace import Workspace
from omegaconf import OmegaConf

from .agents import UniformRandomActor, critic_of
from .config import outputs_root
from .envs import make_env

__all__ = [
    "Logger",
    "RLBase",
    "EpochBasedAlgo",
    "critic_of",
    "iter_replay_buffers",
    "setup_optimizer",
    "EVALUATIONS_CSV",
]

#: The file, in a run's folder, where every evaluation is appended
EVALUATIONS_CSV = "evaluations.csv"


class Logger:
    """Scalars to tensorboard (and BBRL's pickled logs), through ``cfg.logger``."""

    def __init__(self, cfg):
        self.logger = instantiate_class(cfg.logger)

    def add_log(self, name: str, value, steps: int):
        value = value.item() if isinstance(value, torch.Tensor) else float(value)
        self.logger.add_scalar(name, value, steps)

    def log_reward_losses(self, rewards: torch.Tensor, steps: int):
        self.add_log("reward/mean", rewards.mean(), steps)
        self.add_log("reward/max", rewards.max(), steps)
        self.add_log("reward/min", rewards.min(), steps)
        self.add_log("reward/median", rewards.median(), steps)

    def close(self):
        self.logger.close()


def setup_optimizer(cfg_optimizer, *agents: Agent) -> torch.optim.Optimizer:
    """An optimizer (``cfg_optimizer.classname``) over the parameters of ``agents``."""
    parameters = chain(*(agent.parameters() for agent in agents))
    return get_class(cfg_optimizer)(parameters, **get_arguments(cfg_optimizer))


def seed_everything(seed: int):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


class RLBase:
    """Base class of the course's algorithms.

    Subclasses set ``self.train_policy`` (the agent that acts while training,
    with exploration noise) and ``self.eval_policy`` (the deterministic policy
    that is evaluated, and kept when it is the best so far).

    Configuration used here: ``base_dir``, ``algorithm.seed``,
    ``algorithm.nb_evals``, ``algorithm.eval_interval``, ``gym_env.env_name``,
    ``logger``, and optionally ``algorithm.torch_threads`` (1 by default),
    ``plot_agents`` (plot the policy and critic of
    each new best policy) and ``verbose`` (print a line per evaluation, the
    default).
    """

    #: Short name used in messages ("ddpg", "td3")
    name = "algo"

    def __init__(self, cfg):
        self.cfg = cfg
        seed_everything(cfg.algorithm.seed)
        # The course's networks are small: one thread is as fast as two, and does not
        # slow down tenfold when other programs share the cores (OpenMP threads spin).
        threads = OmegaConf.select(cfg, "algorithm.torch_threads", default=1)
        if threads:
            torch.set_num_threads(int(threads))

        run_name = Path(cfg.base_dir)
        self.base_dir = Path(outputs_root()) / run_name
        self.base_dir.mkdir(parents=True, exist_ok=True)
        if OmegaConf.select(cfg, "logger.log_dir") is None:
            log_dir = Path(outputs_root()) / "tblogs" / run_name
            log_dir.mkdir(parents=True, exist_ok=True)
            OmegaConf.update(cfg, "logger.log_dir", str(log_dir), force_add=True)
        self.logger = Logger(cfg)

        self.train_policy: Agent | None = None
        self.eval_policy: Agent | None = None

        # Evaluation: nb_evals episodes in parallel, without auto-reset
        self.eval_env = ParallelGymAgent(
            partial(make_env, cfg.gym_env.env_name), cfg.algorithm.nb_evals
        ).seed(cfg.algorithm.seed + 1000)

        self.nb_steps = 0  # environment steps so far
        self.nb_updates = 0  # gradient updates so far (of the critic)
        self.last_eval_step: int | None = None
        self.best_policy: Agent | None = None
        self.best_reward = -float("inf")
        #: one entry per evaluation: (env steps, tensor of nb_evals returns)
        self.eval_history: list[tuple[int, torch.Tensor]] = []
        #: functions called with the algorithm after each evaluation (the experiment
        #: notebook measures the critic's bias there, on the policy just evaluated)
        self.evaluation_hooks: list = []
        self.start_time = time.perf_counter()
        self._eval_file = self.base_dir / EVALUATIONS_CSV
        with self._eval_file.open("w", newline="") as f:
            csv.writer(f).writerow(["steps", "updates", "seconds", "mean", "std", "returns"])

    @property
    def eval_rewards(self) -> list[torch.Tensor]:
        """The returns of every evaluation (as in BBRL's notebooks)."""
        return [rewards for _, rewards in self.eval_history]

    @cached_property
    def train_agent(self) -> TemporalAgent:
        """The training environment followed by the training policy."""
        assert self.train_policy is not None, "set self.train_policy in __init__ first"
        return TemporalAgent(Agents(self.train_env, self.train_policy))

    @cached_property
    def eval_agent(self) -> TemporalAgent:
        """The evaluation environment followed by the evaluation policy."""
        assert self.eval_policy is not None, "set self.eval_policy in __init__ first"
        return TemporalAgent(Agents(self.eval_env, self.eval_policy))

    def evaluate(self, force: bool = False) -> bool:
        """Evaluates ``eval_policy`` if ``eval_interval`` steps have passed since the last time.

        Keeps a copy of the best policy so far in ``self.best_policy`` and
        returns True when the policy just evaluated is the best so far.
        """
        interval = self.cfg.algorithm.eval_interval
        due = self.last_eval_step is None or self.nb_steps - self.last_eval_step >= interval
        if not (due or force) or self.last_eval_step == self.nb_steps:
            return False
        self.last_eval_step = self.nb_steps

        workspace = Workspace()
        with torch.no_grad():
            self.eval_agent(workspace, t=0, stop_variable="env/done")
        rewards = workspace["env/cumulated_reward"][-1]  # (nb_evals,)
        self._record_evaluation(rewards)
        for hook in self.evaluation_hooks:
            hook(self)

        mean = rewards.mean().item()
        if mean > self.best_reward:
            self.best_reward = mean
            self.best_policy = copy.deepcopy(self.eval_policy)
            self.on_new_best()
            return True
        return False

    def _record_evaluation(self, rewards: torch.Tensor):
        self.eval_history.append((self.nb_steps, rewards.clone()))
        self.logger.log_reward_losses(rewards, self.nb_steps)
        seconds = time.perf_counter() - self.start_time
        mean, std = rewards.mean().item(), rewards.std().item() if rewards.numel() > 1 else 0.0
        with self._eval_file.open("a", newline="") as f:
            returns = " ".join(f"{r:.2f}" for r in rewards.tolist())
            csv.writer(f).writerow(
                [self.nb_steps, self.nb_updates, f"{seconds:.2f}", f"{mean:.2f}", f"{std:.2f}", returns]
            )
        if not OmegaConf.select(self.cfg, "verbose", default=True):
            return
        best = max(self.best_reward, mean)
        print(
            f"[{self.name}] step {self.nb_steps:>6} | return {mean:8.1f} ± {std:5.1f}"
            f" | best {best:8.1f} | {seconds:5.0f} s",
            flush=True,
        )

    def on_new_best(self):
        """Called when a new best policy is found (plots it if ``plot_agents``)."""
        if OmegaConf.select(self.cfg, "plot_agents", default=False):
            from .plots import plot_agent

            plot_agent(self, self.base_dir / "plots" / f"best-{self.nb_steps:06d}.png")

    def finish(self):
        """Last evaluation, logs flushed, learning curve saved."""
        self.evaluate(force=True)
        self.logger.close()
        from .plots import plot_learning_curve

        plot_learning_curve({self.name: [self]}, self.base_dir / "learning_curve.png")

    def visualize_best(self, *, display: bool = True):
        """Records a video of the best policy; returns an IPython video, or None."""
        from .video import record_video, show_video

        policy = self.best_policy if self.best_policy is not None else self.eval_policy
        path = record_video(self.cfg.gym_env.env_name, policy, self.base_dir / "best_agent.mp4")
        return show_video(path) if (display and path is not None) else path


class EpochBasedAlgo(RLBase):
    """An algorithm that learns from a replay buffer of transitions.

    Configuration used here: ``algorithm.n_envs`` parallel training
    environments (auto-reset) and ``algorithm.buffer_size`` transitions at most
    in the replay buffer.
    """

    def __init__(self, cfg):
        super().__init__(cfg)
        self.train_env = ParallelGymAgent(
            partial(make_env, cfg.gym_env.env_name, autoreset=True), cfg.algorithm.n_envs
        ).seed(cfg.algorithm.seed)
        self.replay_buffer = ReplayBuffer(max_size=int(cfg.algorithm.buffer_size))

    @cached_property
    def warmup_agent(self) -> TemporalAgent:
        """The training environment with uniformly random actions (before learning starts)."""
        return TemporalAgent(Agents(self.train_env, UniformRandomActor(*self.action_bounds())))

    def action_bounds(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The (low, high) bounds of the environment's actions, as tensors."""
        space = self.train_env.get_action_space()
        return torch.as_tensor(space.low, dtype=torch.float32), torch.as_tensor(
            space.high, dtype=torch.float32
        )


def evaluate_policy(cfg, state: dict, evaluation: int) -> float:
    """The mean return of a deterministic actor (the ``state_dict`` of a
    ``ContinuousDeterministicActor``) at the evaluation number ``evaluation`` (0: the first)
    of an algorithm configured with ``cfg``: the same environments, seeds and start states
    as ``RLBase.evaluate``. The grader measures the student's best policy with it."""
    from .agents import ContinuousDeterministicActor

    env = ParallelGymAgent(partial(make_env, cfg.gym_env.env_name), cfg.algorithm.nb_evals).seed(
        cfg.algorithm.seed + 1000
    )
    obs_size, act_size = env.get_obs_and_actions_sizes()
    space = env.get_action_space()
    actor = ContinuousDeterministicActor(
        obs_size, cfg.algorithm.architecture.actor_hidden_size, act_size, space.low, space.high
    )
    actor.load_state_dict(state)
    agent = TemporalAgent(Agents(env, actor))
    for _ in range(evaluation + 1):  # the start states of the evaluations before come first
        workspace = Workspace()
        with torch.no_grad():
            agent(workspace, t=0, stop_variable="env/done")
        rewards = workspace["env/cumulated_reward"][-1]
    return rewards.mean().item()



def iter_replay_buffers(algo: EpochBasedAlgo) -> Iterator[ReplayBuffer]:
    """Collects transitions and yields the replay buffer once per gradient update.

    Configuration (``algo.cfg.algorithm``):

    - ``max_steps``: environment steps in all (over all training environments);
    - ``n_steps``: steps each training environment makes between two rounds of
      updates;
    - ``learning_starts``: no update before the buffer holds that many
      transitions; until then actions are uniformly random (``random_warmup``,
      true by default) or the training policy's;
    - ``updates_per_step`` (default 1): gradient updates per environment step;
    - ``stop_above`` (default none): training ends at the first evaluation whose mean
      return is above it, before ``max_steps`` (the TD3 learning test sets it to its
      threshold: a TD3 that passes needs no more steps to pass).

    ``algo.nb_steps`` counts environment steps, ``algo.nb_updates`` the updates
    (it is already incremented when the body of the loop runs). The policy is
    evaluated every ``eval_interval`` steps, and once more at the end.
    """
    cfg = algo.cfg.algorithm
    updates_per_step = float(OmegaConf.select(algo.cfg, "algorithm.updates_per_step", default=1.0))
    stop_above = OmegaConf.select(algo.cfg, "algorithm.stop_above", default=None)
    random_warmup = bool(OmegaConf.select(algo.cfg, "algorithm.random_warmup", default=True))
    workspace = Workspace()
    first = True
    owed_updates = 0.0
    algo.evaluate()  # the untrained policy: where the learning curve starts

    while algo.nb_steps < cfg.max_steps and not (stop_above is not None and algo.best_reward > stop_above):
        # BBRL pitfall: the transition between the last step of one rollout and the
        # first step of the next must not be lost. After the first rollout, the last
        # time step is copied to t=0 and the agent runs from t=1.
        warming_up = random_warmup and algo.replay_buffer.size() < cfg.learning_starts
        agent = algo.warmup_agent if warming_up else algo.train_agent
        if first:
            agent(workspace, t=0, n_steps=cfg.n_steps, stochastic=True)
            first = False
        else:
            workspace.zero_grad()
            workspace.copy_n_last_steps(1)
            agent(workspace, t=1, n_steps=cfg.n_steps - 1, stochastic=True)

        # (2, n) transitions: the pairs (s_t, s_t+1) that do not cross an episode's end
        transitions = workspace.get_transitions()
        algo.replay_buffer.put(transitions)
        new_steps = (cfg.n_steps - 1) * cfg.n_envs
        algo.nb_steps += new_steps

        if algo.replay_buffer.size() >= cfg.learning_starts:
            owed_updates += new_steps * updates_per_step
            while owed_updates >= 1:
                owed_updates -= 1
                algo.nb_updates += 1
                yield algo.replay_buffer

        algo.evaluate()

    algo.finish()
