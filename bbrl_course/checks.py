"""Helpers for the notebooks' test cells: messages in the student's terms.

A test cell calls the student's function inside ``checking(name)``: a stub that
is not written yet, or an exception, becomes an ``AssertionError`` that names
the function and says what to do, instead of a bare traceback.

How tests compare results (the course's one rule; no test compares by hand):

- ``close(result, expected)`` for every computed value. It accepts what a correct
  function may reasonably return: any floating dtype (float32 for float64 inputs,
  or the reverse), any device, a view or a copy, a contiguous tensor or not, and
  a 0-dim tensor or a Python number where the expected value is a scalar. It compares in float64 on the CPU, with ``rtol=1e-4`` and
  ``atol=1e-5`` (float32 round-off, far below any mistake the tests look for),
  and is never true for a different shape or a NaN. It never raises: a test
  checks the shape first, with its own message, then the values.
- ``unchanged(tensors, snapshots)`` where a test checks that something was NOT
  modified (the trained network, an argument): exact equality, since "not
  modified" admits no tolerance.
- What a function's docstring promises (a shape, a scalar tensor, an update in
  place, arguments left unmodified) is checked with a message that names it; what
  it does not promise (dtype, device, contiguity, in place or not for a result)
  is accepted either way.
"""

from __future__ import annotations

import contextlib
import types

import torch
import torch.nn as nn

__all__ = [
    "LEARNING_SEED",
    "LEARNING_STEPS",
    "LEARNING_THRESHOLD",
    "UpdateCounter",
    "best_return",
    "checking",
    "close",
    "count_updates",
    "filled_linear",
    "learning_check_config",
    "raising_function",
    "records_autograd",
    "shape_of",
    "stand_in_td3",
    "tiny_config",
    "unchanged",
]

#: The TD3 learning test: training steps and seed of the grading configuration, and the
#: return the best evaluation must beat. Measured with ``benchmarks/grading_threshold.py``
#: (best evaluation return after 6,000 steps): the reference TD3 over seeds 1-18 from
#: -734 (seed 11) to -144, mean -339; a random policy scores about -1,230 per episode.
#: See the README, "The learning test".
LEARNING_STEPS = 6_000
LEARNING_SEED = 1
LEARNING_THRESHOLD = -900.0


@contextlib.contextmanager
def checking(name: str):
    """Runs a call to the student's function ``name``, with a clear message on failure."""
    try:
        yield
    except NotImplementedError as error:
        # name the function whose stub raised (it may be one that ``name`` calls)
        stub = raising_function(error)
        if stub in ("<module>", "checking"):
            stub = name
        raise AssertionError(
            f"{stub} is not written yet: replace `raise NotImplementedError()` in its body with your code."
        ) from None
    except AssertionError:
        raise
    except Exception as error:
        raise AssertionError(f"{name} raised {type(error).__name__}: {error}") from error


def raising_function(error: BaseException) -> str:
    """The qualified name of the function where ``error`` was raised (a stub's name)."""
    frame = error.__traceback__
    while frame.tb_next is not None:
        frame = frame.tb_next
    return frame.tb_frame.f_code.co_qualname


#: Tolerances of ``close``: float32 round-off passes, any mistake the tests look for does not
RTOL, ATOL = 1e-4, 1e-5


def _as_float64(value) -> torch.Tensor | None:
    """A float64 CPU tensor of ``value`` (tensor, array or number), or None if it is not numeric."""
    try:
        if isinstance(value, torch.Tensor):
            return value.detach().to(device="cpu", dtype=torch.float64)
        return torch.as_tensor(value, dtype=torch.float64)
    except (TypeError, ValueError, RuntimeError):
        return None


def close(result, expected, rtol: float = RTOL, atol: float = ATOL) -> bool:
    """Whether ``result`` equals ``expected`` within float32 round-off, whatever its dtype,
    device or memory layout; False (never an error) for a different shape, a NaN or a
    value that is not a number. A scalar ``expected`` also accepts a Python number."""
    got, want = _as_float64(result), _as_float64(expected)
    if got is None or want is None or got.shape != want.shape:
        return False
    return bool(torch.isclose(got, want, rtol=rtol, atol=atol).all())


def unchanged(tensors, snapshots) -> bool:
    """Whether every tensor equals its snapshot exactly (``snapshot`` taken with
    ``.detach().clone()`` before the call): for what a function must not modify."""
    tensors, snapshots = list(tensors), list(snapshots)
    return len(tensors) == len(snapshots) and all(
        t.shape == s.shape and torch.equal(t.detach().cpu(), s.detach().cpu()) for t, s in zip(tensors, snapshots)
    )


def shape_of(value) -> str:
    """The shape of a tensor as a student reads it: (64, 64), or () for a scalar."""
    if isinstance(value, torch.Tensor):
        return str(tuple(value.shape))
    return f"a {type(value).__name__}, not a tensor"


def filled_linear(value: float, in_features: int = 2, out_features: int = 1) -> nn.Linear:
    """A small linear layer whose parameters all equal ``value`` (to test updates by hand)."""
    layer = nn.Linear(in_features, out_features)
    with torch.no_grad():
        for parameter in layer.parameters():
            parameter.fill_(value)
    return layer


def tiny_config(params, **algorithm):
    """The notebook's parameters shrunk to a few hundred steps and tiny networks.

    Test cells use it to build an algorithm quickly; ``algorithm`` overrides
    entries of ``params["algorithm"]``.
    """
    import copy

    from .config import make_config

    params = copy.deepcopy(dict(params))
    params["plot_agents"] = False
    params["verbose"] = False
    params["base_dir"] = f"checks/{params.get('base_dir', 'run')}"
    params["algorithm"] = dict(params["algorithm"])
    params["algorithm"].update(
        max_steps=320,
        learning_starts=64,
        batch_size=16,
        eval_interval=100_000,
        nb_evals=1,
        architecture={"actor_hidden_size": [8], "critic_hidden_size": [8]},
    )
    params["algorithm"].update(algorithm)
    return make_config(params)


def _snapshot(module: nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(module: nn.Module, snapshot: list[torch.Tensor]) -> bool:
    return any(not torch.equal(p, s) for p, s in zip(module.parameters(), snapshot))


class UpdateCounter:
    """Counts, during training, the steps of the optimizers and the moves of the targets.

    Installed on an algorithm before training: it wraps the optimizers' ``step``
    and, at each critic step, checks which target networks moved since the
    previous one, whatever code moved them.
    """

    def __init__(self, algo, targets: dict[str, nn.Module]):
        self.counts = {"critic": 0, "actor": 0, **{name: 0 for name in targets}}
        self.targets = targets
        self.snapshots = {name: _snapshot(net) for name, net in targets.items()}
        self._wrap(algo.critic_optimizer, "critic", before=self._check_targets)
        self._wrap(algo.actor_optimizer, "actor")

    def _wrap(self, optimizer, key, before=None):
        step = optimizer.step

        def counted_step(*args, **kwargs):
            if before is not None:
                before()
            self.counts[key] += 1
            return step(*args, **kwargs)

        optimizer.step = counted_step

    def _check_targets(self):
        for name, net in self.targets.items():
            if _changed(net, self.snapshots[name]):
                self.counts[name] += 1
                self.snapshots[name] = _snapshot(net)

    def finish(self) -> dict[str, int]:
        """The counts, once training is over."""
        self._check_targets()
        return dict(self.counts)


class _GraphWatcher(torch.overrides.TorchFunctionMode):
    """Notes whether any torch operation produced a tensor that autograd records."""

    def __init__(self):
        super().__init__()
        self.built = False

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        for value in result if isinstance(result, (tuple, list)) else (result,):
            if isinstance(value, torch.Tensor) and value.grad_fn is not None:
                self.built = True
        return result


@contextlib.contextmanager
def records_autograd():
    """``with records_autograd() as graph: ...``; afterwards ``graph.built`` is True if
    the code inside computed anything that autograd recorded (outside ``torch.no_grad()``)."""
    watcher = _GraphWatcher()
    with watcher:
        yield watcher


class _SilentLogger:
    def add_log(self, *args, **kwargs):
        pass


class StandInTD3:
    """A stand-in for a TD3 object, built like the course's TD3: its actor is a
    ``ContinuousDeterministicActor`` and its critics ``ContinuousQAgent`` (each network
    in ``.model``, the critics with the prefixes of the notebook's TD3), with small layers
    whose parameters all equal ``network_value`` (the targets ``target_value``); either
    may be a dict by network name ("actor", "critic_1", "critic_2"), so that a target
    moved towards the wrong network shows.

    Test cells run a student's function on it (``update_targets``, ``run_td3``), so
    that the test does not depend on the student's ``create_critics``.
    """

    def __init__(self, cfg, network_value: float | dict = 1.0, target_value: float | dict = 3.0):
        from .agents import ContinuousDeterministicActor, ContinuousQAgent

        self.cfg = cfg
        self.nb_steps = 0
        self.nb_updates = 0
        self.logger = _SilentLogger()
        for target, values in (("", network_value), ("target_", target_value)):
            actor = ContinuousDeterministicActor(2, [2], 1)
            critics = [ContinuousQAgent(2, [2], 1).with_prefix(f"{target.replace('_', '-')}critic-{i}/") for i in (1, 2)]
            for name, network in (("actor", actor), ("critic_1", critics[0]), ("critic_2", critics[1])):
                value = values[name] if isinstance(values, dict) else values
                with torch.no_grad():
                    for parameter in network.parameters():
                        parameter.fill_(float(value))
                setattr(self, f"{target}{name}", network)

    def __repr__(self):
        return "<stand-in TD3>"


def stand_in_td3(cfg, network_value: float | dict = 1.0, target_value: float | dict = 3.0) -> StandInTD3:
    """A stand-in TD3 whose networks' parameters all equal ``network_value`` and whose
    targets' parameters all equal ``target_value`` (either a number, or a dict by network
    name: "actor", "critic_1", "critic_2")."""
    return StandInTD3(cfg, network_value, target_value)


_TARGETS = ("target_actor", "target_critic_1", "target_critic_2")
_MISSING = object()


@contextlib.contextmanager
def _names_replaced(namespace: dict, replacements: dict):
    """The names of a function's module (a notebook's namespace) replaced while it runs,
    then put back as they were (a name that was not there is removed again)."""
    saved = {name: namespace.get(name, _MISSING) for name in replacements}
    namespace.update(replacements)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is _MISSING:
                namespace.pop(name, None)
            else:
                namespace[name] = value


def count_updates(run, cfg, n_updates: int = 12) -> dict[str, int]:
    """Runs the training loop ``run`` (``run_td3``) on a stand-in TD3 for ``n_updates``
    gradient steps, and counts the updates.

    While it runs, the names ``iter_replay_buffers``, ``update_critics``,
    ``update_actor`` and ``update_targets`` of the notebook that defines ``run``
    are replaced by counters (the stand-in ``update_targets`` moves the three
    targets); they are put back afterwards. Returns the number of critic and
    actor updates, the number of gradient steps in which each target moved, and
    ``"targets without actor"``: steps where targets moved but the actor was not
    updated, and ``"actor without gradient"``: actor updates called with autograd off
    (under ``torch.no_grad()``).
    """
    remote = getattr(type(run), "run_helper", None)
    if remote is not None:  # graded: ``run`` stands for the student's function, in another process
        return remote(run, "count_updates", cfg, n_updates)
    algo = StandInTD3(cfg)
    targets = {name: getattr(algo, name) for name in _TARGETS}
    counts = {"critic": 0, "actor": 0, **{name: 0 for name in _TARGETS}, "targets without actor": 0,
              "actor without gradient": 0}
    snapshots = {name: _snapshot(net) for name, net in targets.items()}
    step = {"actor": False}

    def end_of_step():
        moved = False
        for name, net in targets.items():
            if _changed(net, snapshots[name]):
                counts[name] += 1
                snapshots[name] = _snapshot(net)
                moved = True
        if moved and not step["actor"]:
            counts["targets without actor"] += 1
        step["actor"] = False

    def iter_replay_buffers(td3):
        # the counters advance as in bbrl_course.algo.iter_replay_buffers: each rollout adds
        # (n_steps - 1) * n_envs steps, then the updates they are owed run, all with the
        # same nb_steps; nb_updates is already incremented when the body of the loop runs
        buffer = types.SimpleNamespace(get_shuffled=lambda batch_size: {"batch_size": batch_size})
        settings = cfg.algorithm
        per_rollout = (int(settings.n_steps) - 1) * int(settings.n_envs)
        per_step = float(getattr(settings, "updates_per_step", 1.0) or 1.0)
        learning_starts = int(settings.learning_starts)
        owed = 0.0
        while td3.nb_updates < n_updates:
            td3.nb_steps += per_rollout
            if td3.nb_steps < learning_starts:
                continue
            owed += per_rollout * per_step
            while owed >= 1 and td3.nb_updates < n_updates:
                owed -= 1
                td3.nb_updates += 1
                yield buffer
                end_of_step()

    def update_critics(td3, batch):
        counts["critic"] += 1
        return torch.zeros(())

    def update_actor(td3, batch):
        counts["actor"] += 1
        if not torch.is_grad_enabled():  # under torch.no_grad(): the actor could not learn
            counts["actor without gradient"] += 1
        step["actor"] = True
        return torch.zeros(())

    def update_targets(td3):
        with torch.no_grad():
            for name in _TARGETS:
                for parameter in getattr(td3, name).parameters():
                    parameter.add_(1.0)

    replacements = {
        "iter_replay_buffers": iter_replay_buffers,
        "update_critics": update_critics,
        "update_actor": update_actor,
        "update_targets": update_targets,
    }
    with _names_replaced(run.__globals__, replacements):
        run(algo)
    return counts


def best_return(algo, cfg) -> float:
    """The best evaluation return of ``algo``, trained with ``cfg``: the mean return of the
    best of its evaluations (``algo.best_reward``). When the notebook is graded, the
    grader evaluates the best policy again itself, on the same start states."""
    evaluate = getattr(type(algo), "evaluate_best", None)
    if evaluate is not None:
        return evaluate(algo, cfg)
    return algo.best_reward


def learning_check_config(params, stop: bool = True):
    """The grading configuration of the TD3 learning test: the notebook's parameters,
    at most ``LEARNING_STEPS`` steps, seed ``LEARNING_SEED``, an evaluation (10 episodes)
    every 1,000 steps, no plots; fast mode does not change it. With ``stop``, training ends
    at the first evaluation above ``LEARNING_THRESHOLD`` (``algorithm.stop_above``): the
    test's verdict is the same (its best evaluation is above the threshold), and a TD3 that
    learns costs the grader less (the solution stops at 5,120 steps of 6,016)."""
    import copy

    from omegaconf import OmegaConf

    params = copy.deepcopy(dict(params))
    params["plot_agents"] = False
    params["verbose"] = False
    params["base_dir"] = "checks/learning-test"
    params["algorithm"] = dict(params["algorithm"])
    params["algorithm"].update(seed=LEARNING_SEED, max_steps=LEARNING_STEPS, eval_interval=1_000, nb_evals=10)
    if stop:
        params["algorithm"]["stop_above"] = LEARNING_THRESHOLD
    return OmegaConf.create(params)


# --- DDPG's update steps (update_critic, update_actor), on a stand-in -------------------------
#
# A test of an update step runs the student's function on a stand-in DDPG and a small batch,
# with the loss function it calls (compute_critic_loss, compute_actor_loss) replaced by a
# probe that records its arguments: so that a mistake in the loss costs only the loss's tests,
# and a mistake in the update step is named by what it gave the loss (which network, which
# time index, with or without gradient) and by what it did with the gradient (which optimizer
# stepped, whether the stale gradients were cleared first).

__all__ += ["STALE_GRADIENT", "ddpg_reference", "named_mistake", "same_gradients", "stale_gradients", "stand_in_batch", "stand_in_ddpg", "update_facts"]

#: the stand-in's sizes: observations, actions, hidden units
STAND_IN_SIZES = (3, 1, [8])


class StandInDDPG:
    """A stand-in for a DDPG object, built like the notebook's DDPG: ``actor`` and
    ``target_actor`` (``ContinuousDeterministicActor``), ``critic`` and ``target_critic``
    (``ContinuousQAgent``, prefixes "critic/" and "target-critic/"), their ``TemporalAgent``
    (``t_actor``, ``t_target_actor``, ``t_critic``, ``t_target_critic``), ``actor_optimizer``
    and ``critic_optimizer`` (the configuration's), and ``cfg``. Its networks are small and
    seeded, and each target differs from its network, so that a mix-up shows."""

    def __init__(self, cfg, seed: int = 0):
        from bbrl.agents import TemporalAgent

        from .agents import ContinuousDeterministicActor, ContinuousQAgent
        from .algo import setup_optimizer

        obs_size, act_size, hidden = STAND_IN_SIZES
        self.cfg = cfg
        self.nb_steps = 0
        self.nb_updates = 0
        self.logger = _SilentLogger()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self.actor = ContinuousDeterministicActor(obs_size, hidden, act_size)
            self.target_actor = ContinuousDeterministicActor(obs_size, hidden, act_size)
            self.critic = ContinuousQAgent(obs_size, hidden, act_size).with_prefix("critic/")
            self.target_critic = ContinuousQAgent(obs_size, hidden, act_size).with_prefix("target-critic/")
        self.t_actor = TemporalAgent(self.actor)
        self.t_target_actor = TemporalAgent(self.target_actor)
        self.t_critic = TemporalAgent(self.critic)
        self.t_target_critic = TemporalAgent(self.target_critic)
        self.actor_optimizer = setup_optimizer(cfg.actor_optimizer, self.actor)
        self.critic_optimizer = setup_optimizer(cfg.critic_optimizer, self.critic)

    def __repr__(self):
        return "<stand-in DDPG>"


def stand_in_ddpg(cfg, seed: int = 0) -> StandInDDPG:
    """A stand-in DDPG (see ``StandInDDPG``); the same ``seed`` gives the same networks."""
    return StandInDDPG(cfg, seed)


def stand_in_batch(batch_size: int = 4, seed: int = 0, terminated=None, truncated=None):
    """A batch as ``rb.get_shuffled(batch_size)`` returns it: a BBRL workspace of 2 time
    steps (index 0: s_t, a_t; index 1: s_{t+1}, the reward of t -> t+1, its flags), with
    random observations, actions and rewards. ``terminated`` and ``truncated`` (lists of
    ``batch_size`` booleans, for s_{t+1}) default to: the second transition ends in a
    terminal state, the third is cut by a time limit (done, not terminated)."""
    from bbrl.workspace import Workspace

    obs_size, act_size, _ = STAND_IN_SIZES
    generator = torch.Generator().manual_seed(seed)
    if terminated is None:
        terminated = [i == 1 for i in range(batch_size)]
    if truncated is None:
        truncated = [i == 2 for i in range(batch_size)]
    terminated = torch.stack((torch.zeros(batch_size, dtype=torch.bool), torch.tensor(terminated, dtype=torch.bool)))
    truncated = torch.stack((torch.zeros(batch_size, dtype=torch.bool), torch.tensor(truncated, dtype=torch.bool)))
    reward = torch.randn(2, batch_size, generator=generator)
    workspace = Workspace()
    for name, value in (
        ("env/env_obs", torch.randn(2, batch_size, obs_size, generator=generator)),
        ("action", torch.rand(2, batch_size, act_size, generator=generator) * 2 - 1),
        ("env/reward", reward),
        ("env/terminated", terminated),
        ("env/truncated", truncated),
        ("env/done", terminated | truncated),
        ("env/cumulated_reward", reward.cumsum(0)),
        ("env/timestep", torch.stack((torch.full((batch_size,), 7), torch.full((batch_size,), 8)))),
    ):
        workspace.set_full(name, value)
    return workspace


def ddpg_reference(cfg, seed: int = 0, batch_size: int = 4, terminated=None, truncated=None) -> dict:
    """What a correct update step gives the loss on the stand-in (``stand_in_ddpg(cfg, seed)``,
    ``stand_in_batch(batch_size, seed, terminated, truncated)``), and what common mistakes
    give instead; all computed with the networks themselves, not with a student's code.

    Keys: "reward", "terminated", "done" (shape (2, B)), "discount_factor"; the values at
    index 1 that a critic's target may use, each (B,): "Q'(s', π'(s'))" (the right one),
    "Q'(s', π(s'))", "Q'(s', a')" (the stored action), "Q(s', π'(s'))", "Q(s', π(s'))";
    at index 0: "Q(s, a)" (the right q_values[0] of the critic's loss), "Q(s, π(s))" (the
    right one of the actor's loss), "Q(s, π'(s))", "Q'(s, a)", "Q'(s, π(s))", "Q(s', a')"."""
    algo = StandInDDPG(cfg, seed)
    batch = stand_in_batch(batch_size, seed, terminated, truncated)
    obs, action = batch["env/env_obs"], batch["action"]
    with torch.no_grad():
        pi = [algo.actor.predict_action(obs[t]) for t in (0, 1)]
        target_pi = [algo.target_actor.predict_action(obs[t]) for t in (0, 1)]
        q = algo.critic.predict_value
        target_q = algo.target_critic.predict_value
        return {
            "reward": batch["env/reward"].clone(),
            "terminated": batch["env/terminated"].clone(),
            "done": batch["env/done"].clone(),
            "discount_factor": float(cfg.algorithm.discount_factor),
            "Q'(s', π'(s'))": target_q(obs[1], target_pi[1]),
            "Q'(s', π(s'))": target_q(obs[1], pi[1]),
            "Q'(s', a')": target_q(obs[1], action[1]),
            "Q(s', π'(s'))": q(obs[1], target_pi[1]),
            "Q(s', π(s'))": q(obs[1], pi[1]),
            "Q(s', a')": q(obs[1], action[1]),
            "Q(s, a)": q(obs[0], action[0]),
            "Q(s, π(s))": q(obs[0], pi[0]),
            "Q(s, π'(s))": q(obs[0], target_pi[0]),
            "Q'(s, a)": target_q(obs[0], action[0]),
            "Q'(s, π(s))": target_q(obs[0], pi[0]),
        }


def named_mistake(result, mistakes: dict):
    """The first description in ``mistakes`` ({description: the value that mistake gives})
    whose value ``result`` matches (``close``), or None: a visible test says which common
    mistake a wrong result comes from."""
    return next((why for why, value in mistakes.items() if close(result, value)), None)


#: the gradient the stand-in's parameters hold before an update step (an earlier step's,
#: not cleared): a step that does not call zero_grad() first adds it to its own
STALE_GRADIENT = 100.0
_NETWORKS = ("actor", "target_actor", "critic", "target_critic")
_LOSS_ARGUMENTS = {
    "critic": ("compute_critic_loss", ("discount_factor", "reward", "must_bootstrap", "q_values", "target_q_values")),
    "actor": ("compute_actor_loss", ("q_values",)),
}


def _recorded(value):
    if isinstance(value, torch.Tensor):
        return {"value": value.detach().clone(), "grad": bool(value.requires_grad), "shape": list(value.shape)}
    if isinstance(value, (bool, int, float)):
        return {"value": float(value), "grad": False, "shape": None}
    return {"value": None, "grad": False, "shape": None, "type": type(value).__name__}


def update_facts(update, cfg, kind: str = "critic", seed: int = 0, batch_size: int = 4, terminated=None,
                 truncated=None) -> dict:
    """Runs an update step (``update_critic`` for ``kind`` "critic", ``update_actor`` for
    "actor") on a stand-in DDPG (``stand_in_ddpg(cfg, seed)``) and a batch
    (``stand_in_batch(batch_size, seed, terminated, truncated)``), and returns what it did,
    as data:

    - "calls": how many times it called its loss function (``compute_critic_loss`` or
      ``compute_actor_loss``, replaced during the call by a probe, so that the test does not
      depend on the student's loss); "arguments": the probe's arguments at the first call,
      by name, each {"value", "grad" (whether autograd tracks it), "shape"};
    - "steps" and "zero_grad": the calls of each optimizer's ``step`` and ``zero_grad``
      ("critic", "actor");
    - "step_gradients": the gradients of the trained network's parameters when its
      optimizer stepped first (None for a parameter without one), "loss_gradients": the
      gradient of the probe's loss with respect to the same parameters (what the step
      should use), "shapes": their shapes; every parameter held ``STALE_GRADIENT`` before
      the call (``stale_gradients(facts)``: what a step that did not zero them used);
    - "moved": which networks' parameters changed ("actor", "target_actor", "critic",
      "target_critic");
    - "returned": the value returned ({"value", "grad", "shape"}) and "returned_loss":
      whether it is the probe's loss (a tensor, or its .item()).
    """
    remote = getattr(type(update), "run_helper", None)
    if remote is not None:  # graded: ``update`` stands for the student's function, in another process
        return remote(update, "update_facts", cfg, kind, seed, batch_size, terminated, truncated)
    loss_name, argument_names = _LOSS_ARGUMENTS[kind]
    algo = StandInDDPG(cfg, seed)
    batch = stand_in_batch(batch_size, seed, terminated, truncated)
    trained = algo.critic if kind == "critic" else algo.actor
    trained_parameters = list(trained.parameters())
    networks = {name: getattr(algo, name) for name in _NETWORKS}
    snapshots = {name: _snapshot(net) for name, net in networks.items()}
    for net in networks.values():
        for parameter in net.parameters():
            parameter.grad = torch.full_like(parameter, STALE_GRADIENT)
    facts = {"calls": 0, "arguments": None, "steps": {"critic": 0, "actor": 0},
             "zero_grad": {"critic": 0, "actor": 0}, "step_gradients": None, "loss_gradients": None}
    losses = []
    anchor = torch.zeros((), requires_grad=True)

    def probe(*args, **kwargs):
        values = dict(zip(argument_names, args))
        values.update(kwargs)
        facts["calls"] += 1
        if facts["arguments"] is None:
            facts["arguments"] = {name: _recorded(values.get(name)) for name in argument_names}
        q_values = values.get("q_values")
        if not isinstance(q_values, torch.Tensor):
            raise TypeError(f"{loss_name} got q_values that are not a tensor ({type(q_values).__name__})")
        # a loss whose gradient is known: weights on the Q-values it should train with
        part = (q_values[0] if kind == "critic" and q_values.dim() > 1 else q_values).reshape(-1)
        # (plus 0 times a leaf that needs a gradient: a backward pass works even when the
        # Q-values carry no gradient, so that the tests, not an error, say so)
        loss = (part * torch.linspace(0.5, 1.5, part.numel())).sum() + 0.0 * anchor
        if facts["loss_gradients"] is None:
            gradients = [None] * len(trained_parameters)
            if loss.requires_grad:
                gradients = torch.autograd.grad(loss, trained_parameters, retain_graph=True, allow_unused=True)
            facts["loss_gradients"] = [None if g is None else g.detach().clone() for g in gradients]
        losses.append(loss)
        return loss

    def wrap(optimizer, key):
        step, zero_grad = optimizer.step, optimizer.zero_grad

        def counted_step(*args, **kwargs):
            facts["steps"][key] += 1
            if key == kind and facts["step_gradients"] is None:
                facts["step_gradients"] = [None if p.grad is None else p.grad.detach().clone()
                                           for p in trained_parameters]
            return step(*args, **kwargs)

        def counted_zero_grad(*args, **kwargs):
            facts["zero_grad"][key] += 1
            return zero_grad(*args, **kwargs)

        optimizer.step, optimizer.zero_grad = counted_step, counted_zero_grad

    wrap(algo.critic_optimizer, "critic")
    wrap(algo.actor_optimizer, "actor")
    with _names_replaced(update.__globals__, {loss_name: probe}):
        returned = update(algo, batch)
    facts["shapes"] = [list(p.shape) for p in trained_parameters]
    facts["moved"] = {name: _changed(net, snapshots[name]) for name, net in networks.items()}
    facts["returned"] = _recorded(returned)
    facts["returned_loss"] = bool(losses) and (
        returned is losses[0] or (isinstance(returned, (int, float)) and close(returned, losses[0].detach())))
    return facts


def stale_gradients(facts: dict) -> list:
    """The gradients an update step that does not zero them first steps with: the loss's
    (``facts["loss_gradients"]``, None for none) plus ``STALE_GRADIENT``."""
    wanted = facts["loss_gradients"] or [None] * len(facts["shapes"])
    return [(torch.zeros(shape) if g is None else g) + STALE_GRADIENT for g, shape in zip(wanted, facts["shapes"])]


def same_gradients(gradients, expected) -> bool:
    """Whether two lists of gradients (tensors, or None for no gradient, which counts as
    zeros) are equal within round-off."""
    if gradients is None or expected is None or len(gradients) != len(expected):
        return False
    for got, want in zip(gradients, expected):
        if got is None and want is None:
            continue
        got = torch.zeros_like(want) if got is None else got
        want = torch.zeros_like(got) if want is None else want
        if not close(got, want):
            return False
    return True


# --- TD3's update steps on a stand-in (update_critics, update_actor) ----------------------------

#: the stand-in's learning rate (plain SGD: a step is exactly θ ← θ - lr ∇, so that the
#: tests compute the expected parameters, and those of each common mistake, by hand)
STAND_IN_LR = 0.1


class StandInUpdateTD3:
    """A stand-in TD3 for the tests of ``update_critics`` and ``update_actor``: small real
    BBRL agents (a ``ContinuousDeterministicActor`` and ``ContinuousQAgent`` critics with the
    notebook's prefixes, 3-dimensional states, 2-dimensional actions in [-2, 2]), their
    ``TemporalAgent`` (``t_actor``, ``t_target_actor``, ``t_critic_1``, ...), and plain SGD
    optimizers (``actor_optimizer``; ``critic_optimizer`` for both critics).

    Every network, target included, has weights of its own (drawn with a fixed seed), so
    that a target network used in place of another shows. The actor and both critics start
    with gradients left from an earlier step (``stale_grad``), as in training: an update
    that does not zero them first shows too. They are kept when the stand-in is sent to
    another process (the graded student's)."""

    OBS, ACT, HIDDEN = 3, 2, [5]
    NETWORKS = ("actor", "critic_1", "critic_2", "target_actor", "target_critic_1", "target_critic_2")
    TRAINED = ("actor", "critic_1", "critic_2")

    def __init__(self, cfg, seed: int = 5, low=-2.0, high=2.0):
        from bbrl.agents import TemporalAgent

        from .agents import ContinuousDeterministicActor, ContinuousQAgent

        self.cfg = cfg
        self.nb_steps = self.nb_updates = 0
        self.logger = _SilentLogger()
        self.low = torch.as_tensor(low, dtype=torch.float32).expand(self.ACT).clone()
        self.high = torch.as_tensor(high, dtype=torch.float32).expand(self.ACT).clone()
        with torch.random.fork_rng():
            torch.manual_seed(1000 + seed)
            for name in self.NETWORKS:
                if name.endswith("actor"):
                    network = ContinuousDeterministicActor(self.OBS, self.HIDDEN, self.ACT, self.low, self.high)
                else:
                    prefix = name.replace("_", "-") + "/"
                    network = ContinuousQAgent(self.OBS, self.HIDDEN, self.ACT).with_prefix(prefix)
                with torch.no_grad():  # larger weights than the default init: the mistakes differ more
                    for parameter in network.parameters():
                        parameter.mul_(2.0)
                setattr(self, name, network)
                setattr(self, "t_" + name, TemporalAgent(network))
            for name in self.TRAINED:
                for parameter in getattr(self, name).parameters():
                    parameter.grad = torch.randn_like(parameter)
        self.actor_optimizer = torch.optim.SGD(self.actor.parameters(), lr=STAND_IN_LR)
        self.critic_optimizer = torch.optim.SGD(
            [*self.critic_1.parameters(), *self.critic_2.parameters()], lr=STAND_IN_LR)

    def action_bounds(self):
        """(low, high), as ``EpochBasedAlgo.action_bounds``: [-2, 2] for both action components unless
        the stand-in was made with other bounds."""
        return self.low.clone(), self.high.clone()

    def stale_grad(self, name: str) -> list[torch.Tensor]:
        """The gradients network ``name`` holds now (zeros for None)."""
        return [torch.zeros_like(p) if p.grad is None else p.grad.detach().clone()
                for p in getattr(self, name).parameters()]

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_grads"] = {name: [p.grad for p in getattr(self, name).parameters()] for name in self.NETWORKS}
        return state

    def __setstate__(self, state):
        grads = state.pop("_grads", {})
        self.__dict__.update(state)
        for name, values in grads.items():
            for parameter, grad in zip(getattr(self, name).parameters(), values):
                parameter.grad = grad

    def __repr__(self):
        return "<stand-in TD3>"


def stand_in_update_td3(cfg, seed: int = 5, low=-2.0, high=2.0) -> StandInUpdateTD3:
    """A stand-in TD3 for the tests of ``update_critics`` and ``update_actor`` (``cfg``: the
    notebook's configuration, ``tiny_config(params)``; ``low``, ``high``: its action bounds,
    a number or one per action component)."""
    return StandInUpdateTD3(cfg, seed, low, high)


def stand_in_td3_batch(batch_size: int = 6, seed: int = 5, terminal: tuple = (2,)):
    """A batch as ``rb.get_shuffled`` returns it: a BBRL ``Workspace`` whose variables have
    2 time steps (t and t+1) of ``batch_size`` transitions: ``env/env_obs`` (2, B, 3),
    ``action`` (2, B, 2) within [-2, 2], ``env/reward`` (2, B), ``env/terminated`` (2, B)
    (True at t+1 for the transitions in ``terminal``)."""
    from bbrl.workspace import Workspace

    generator = torch.Generator().manual_seed(2000 + seed)
    batch = Workspace()
    batch.set_full("env/env_obs", torch.randn(2, batch_size, StandInUpdateTD3.OBS, generator=generator))
    batch.set_full("action", 4 * torch.rand(2, batch_size, StandInUpdateTD3.ACT, generator=generator) - 2)
    batch.set_full("env/reward", torch.randn(2, batch_size, generator=generator))
    terminated = torch.zeros(2, batch_size, dtype=torch.bool)
    terminated[1, list(terminal)] = True
    batch.set_full("env/terminated", terminated)
    return batch


def batch_values(batch) -> dict[str, torch.Tensor]:
    """The stored variables of a batch (copies), to compute expected updates from."""
    return {name: batch[name].detach().clone() for name in ("env/env_obs", "action", "env/reward", "env/terminated")}


def smoothing_offset(cfg, low, high) -> float:
    """The noise of the tests' deterministic smoothing: +min(σ, c), with σ and c in action units."""
    half = float((high - low).max()) / 2
    return min(cfg.algorithm.target_policy_noise * half, cfg.algorithm.target_noise_clip * half)


def _stand_in_smoothing(record):
    def smooth_target_action(action, noise_std, noise_clip, low, high):
        record.setdefault("smoothing", []).append(
            {"action": action.detach().clone(), "noise_std": _as_float64(noise_std), "noise_clip": _as_float64(noise_clip),
             "low": _as_float64(low), "high": _as_float64(high), "grad": bool(action.requires_grad)})
        noise = torch.as_tensor(noise_std, dtype=action.dtype).clamp(max=float(torch.as_tensor(noise_clip).min()))
        return torch.max(torch.min(action + noise, torch.as_tensor(high)), torch.as_tensor(low))

    return smooth_target_action


def _reference_critic_loss(discount_factor, reward, must_bootstrap, q_values, target_q_values):
    target = reward[1] + discount_factor * must_bootstrap[1].float() * target_q_values[1]
    return ((q_values[0] - target) ** 2).mean()


def _stand_in_losses(record):
    def compute_critic_loss(discount_factor, reward, must_bootstrap, q_values, target_q_values):
        record.setdefault("critic_loss", []).append({"target_grad": bool(target_q_values.requires_grad)})
        return _reference_critic_loss(discount_factor, reward, must_bootstrap, q_values, target_q_values)

    def compute_td3_critic_loss(discount_factor, reward, must_bootstrap, q_values_1, q_values_2, target_q_values_1,
                                target_q_values_2):
        record.setdefault("td3_critic_loss", []).append(
            {"target_grad": bool(target_q_values_1.requires_grad or target_q_values_2.requires_grad),
             "same_critic": bool(torch.equal(q_values_1.detach(), q_values_2.detach())),
             "same_target": bool(torch.equal(target_q_values_1.detach(), target_q_values_2.detach()))})
        target = torch.minimum(target_q_values_1, target_q_values_2)
        return (_reference_critic_loss(discount_factor, reward, must_bootstrap, q_values_1, target)
                + _reference_critic_loss(discount_factor, reward, must_bootstrap, q_values_2, target))

    def compute_actor_loss(q_values):
        record.setdefault("actor_loss", []).append({"grad": bool(q_values.requires_grad)})
        return -q_values.mean()

    return {"compute_critic_loss": compute_critic_loss, "compute_td3_critic_loss": compute_td3_critic_loss,
            "compute_actor_loss": compute_actor_loss}


def run_update(update, algo, batch):
    """Runs the student's ``update(algo, batch)`` (``update_critics``, ``update_actor``) once,
    and returns ``(its result, what it did)``.

    While it runs, the notebook's ``smooth_target_action`` is a deterministic stand-in (the
    noise is +min(σ, c): ``smoothing_offset``) and its ``compute_critic_loss``,
    ``compute_td3_critic_loss`` and ``compute_actor_loss`` are correct stand-ins, so that
    the test of an update step depends on no other function of the student's; each records
    how it was called. What it did: ``"smoothing"``, ``"td3_critic_loss"``, ...: the calls
    of the stand-ins, and ``"with gradient"``: the networks whose parameters hold a
    gradient that is not the one they started with (a target network there means a target
    computed with autograd on)."""
    helper = getattr(type(update), "call_through", None)
    if helper is not None:  # graded: ``update`` stands for the student's function, in another process
        return helper(update, run_update, algo, batch)
    record: dict = {}
    before = {name: [None if p.grad is None else p.grad.detach().clone() for p in getattr(algo, name).parameters()]
              for name in getattr(algo, "NETWORKS", ())}
    replacements = {"smooth_target_action": _stand_in_smoothing(record), **_stand_in_losses(record)}
    try:
        with _names_replaced(update.__globals__, replacements):
            result = update(algo, batch)
    except AssertionError as error:  # BBRL's workspace asserts: a variable read before an agent wrote it
        if not str(error).startswith("[Workspace"):
            raise
        raise RuntimeError(f"{str(error)[:300]} — a variable is read that no agent wrote in this batch: run the "
                           "temporal agent that writes it first (td3.t_critic_1(batch, t=0, n_steps=1) writes "
                           "critic-1/q_value)") from None
    record["with gradient"] = [
        name for name, grads in before.items()
        if any(p.grad is not None and (g is None or not torch.equal(p.grad, g))
               for p, g in zip(getattr(algo, name).parameters(), grads))]
    return result, record


def _sgd(network: nn.Module, loss: torch.Tensor, stale: list[torch.Tensor] | None) -> list[torch.Tensor]:
    grads = torch.autograd.grad(loss, list(network.parameters()), retain_graph=True, allow_unused=True)
    return [(p - STAND_IN_LR * ((torch.zeros_like(p) if g is None else g) + (0 if stale is None else s))).detach()
            for p, g, s in zip(network.parameters(), grads, stale or [None] * len(grads))]


def expected_critics(algo, batch, *, next_actor: str = "target_actor", smooth: bool = True, combine: str = "min",
                     critics: tuple = ("critic_1", "critic_2"), targets: tuple = ("target_critic_1", "target_critic_2"),
                     zero_grad: bool = True, reward_index: int = 1, bootstrap: bool = True) -> dict:
    """The parameters of both critics after one update of the critics, computed here, as
    ``update_critics`` does it or with one common mistake: ``next_actor`` ("target_actor",
    "actor", or "stored" for the action stored at t+1), ``smooth``, ``combine`` ("min",
    "max", "mean", "argmin": torch.min's indices used as values, "first", "second"),
    ``critics`` (which network gives Q_1 and Q_2), ``targets`` (which give Q'_1 and Q'_2),
    ``zero_grad``. Returns {"critic_1": [...], "critic_2": [...], "loss": ...}."""
    values = batch_values(batch) if not isinstance(batch, dict) else batch
    obs, action, reward = values["env/env_obs"].float(), values["action"].float(), values["env/reward"].float()
    must_bootstrap = ~values["env/terminated"] if bootstrap else torch.ones_like(values["env/terminated"])
    cfg = algo.cfg.algorithm
    low, high = algo.low, algo.high
    with torch.no_grad():
        if next_actor == "stored":
            next_action = action[1]
        else:
            next_action = getattr(algo, next_actor).predict_action(obs[1])
        if smooth:
            next_action = torch.max(torch.min(next_action + smoothing_offset(algo.cfg, low, high), high), low)
        q_next = [getattr(algo, name).predict_value(obs[1], next_action) for name in targets]
        combined = {"min": lambda a, b: torch.minimum(a, b), "max": lambda a, b: torch.maximum(a, b),
                    "mean": lambda a, b: (a + b) / 2, "first": lambda a, b: a, "second": lambda a, b: b,
                    "argmin": lambda a, b: torch.min(torch.stack((a, b)), dim=0)[1].float()}[combine](*q_next)
        y = reward[reward_index] + cfg.discount_factor * must_bootstrap[1].float() * combined
    result = {}
    losses = []
    for name, critic_name in zip(("critic_1", "critic_2"), critics):
        q = getattr(algo, critic_name).predict_value(obs[0], action[0])
        losses.append(((q - y) ** 2).mean())
    loss = losses[0] + losses[1]
    for name in ("critic_1", "critic_2"):
        stale = None if zero_grad else algo.stale_grad(name)
        result[name] = _sgd(getattr(algo, name), loss, stale)
    result["loss"] = loss.detach()
    return result


def expected_actor(algo, batch, *, critic: str = "critic_1", zero_grad: bool = True, sign: float = -1.0,
                   t: int = 0) -> dict:
    """The actor's parameters after one update of the actor, computed here (or with one
    common mistake: ``critic``, ``zero_grad``, the loss's ``sign``, the time step ``t``).
    Returns {"actor": [...], "loss": ...}."""
    values = batch_values(batch) if not isinstance(batch, dict) else batch
    obs = values["env/env_obs"].float()
    action = algo.actor.predict_action(obs[t])
    loss = sign * getattr(algo, critic).predict_value(obs[t], action).mean()
    return {"actor": _sgd(algo.actor, loss, None if zero_grad else algo.stale_grad("actor")), "loss": loss.detach()}


def parameters_of(algo, name: str) -> list[torch.Tensor]:
    """The parameters of network ``name`` of ``algo`` now (copies)."""
    return [p.detach().clone() for p in getattr(algo, name).parameters()]


def all_close(tensors, expected) -> bool:
    """Whether two lists of tensors are ``close`` one by one."""
    tensors, expected = list(tensors), list(expected)
    return len(tensors) == len(expected) and all(close(a, b) for a, b in zip(tensors, expected))


def target_update_mistake(moved: float, network: float, target: float, tau: float) -> str | None:
    """What a target's new value ``moved`` says about a soft update θ' ← τ θ + (1 - τ) θ' from
    ``target`` towards ``network`` with rate ``tau``: a common mistake's name, or None (the
    right value, or one no common mistake gives). For the tests of ``update_targets``."""
    mistakes = {
        target: "did not move: soft-update every target (a target forgotten?)",
        (1 - tau) * network + tau * target: f"moved by 1 - tau: τ is swapped (the network weighs τ = {tau:g})",
        network: "was copied from its network: a soft update moves it by tau only",
        target + tau * network: "got tau times its network added: the target also keeps (1 - tau) of itself",
    }
    right = tau * network + (1 - tau) * target
    return next((why for value, why in mistakes.items() if not close(value, right) and close(moved, value)), None)
