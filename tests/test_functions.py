"""The small functions students write, against values computed by hand.

They are loaded from the solution notebooks themselves (bbrl_course.nbload).
"""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

from bbrl_course.checks import UpdateCounter, filled_linear, tiny_config

# --- critic loss ------------------------------------------------------------------


def test_critic_loss_by_hand(either_nb):
    # Two transitions; only index 1 of reward, must_bootstrap and target matters,
    # only index 0 of q_values.
    reward = torch.tensor([[9.0, 9.0], [1.0, -2.0]])
    must_bootstrap = torch.tensor([[False, False], [True, False]])
    q_values = torch.tensor([[3.0, 0.0], [7.0, 7.0]])
    target_q_values = torch.tensor([[5.0, 5.0], [4.0, 10.0]])
    # targets: 1 + 0.5 * 4 = 3 (bootstrapped), -2 (terminal): errors 0 and 2
    loss = either_nb.compute_critic_loss(0.5, reward, must_bootstrap, q_values, target_q_values)
    assert loss.shape == ()
    assert loss.item() == pytest.approx((0.0**2 + 2.0**2) / 2)


def test_critic_loss_is_a_scalar_for_a_large_batch(either_nb):
    B = 64
    loss = either_nb.compute_critic_loss(
        0.99, torch.randn(2, B), torch.ones(2, B, dtype=torch.bool), torch.randn(2, B), torch.randn(2, B)
    )
    assert loss.shape == ()


def test_critic_loss_gradient_reaches_q_values(either_nb):
    q_values = torch.zeros(2, 3, requires_grad=True)
    loss = either_nb.compute_critic_loss(
        0.9, torch.ones(2, 3), torch.ones(2, 3, dtype=torch.bool), q_values, torch.zeros(2, 3)
    )
    loss.backward()
    # d/dq mean((q - 1)^2) = 2 (q - 1) / 3 at q = 0, for index 0 only
    assert torch.allclose(q_values.grad[0], torch.full((3,), -2 / 3))
    assert torch.all(q_values.grad[1] == 0)


# --- actor loss -------------------------------------------------------------------


def test_actor_loss_by_hand(either_nb):
    loss = either_nb.compute_actor_loss(torch.tensor([1.0, 2.0, 6.0]))
    assert loss.shape == ()
    assert loss.item() == pytest.approx(-3.0)


# --- soft update ------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_soft_update_by_hand(either_nb, tau):
    net, target = filled_linear(2.0), filled_linear(10.0)
    target_tensors = [p for p in target.parameters()]
    pointers = [p.data_ptr() for p in target.parameters()]
    either_nb.soft_update_params(net, target, tau)
    for p in target.parameters():
        assert torch.allclose(p, torch.full_like(p, tau * 2.0 + (1 - tau) * 10.0))
        assert p.grad_fn is None and p.requires_grad  # still a leaf parameter
    for p in net.parameters():
        assert torch.all(p == 2.0)  # the trained network is untouched
    # in place: the same parameter tensors, the same storage
    assert [p for p in target.parameters()] == target_tensors
    assert [p.data_ptr() for p in target.parameters()] == pointers


# --- TD3: target policy smoothing -------------------------------------------------


def test_smoothing_clips_noise_and_keeps_bounds(td3_nb):
    torch.manual_seed(0)
    low, high = torch.tensor([-2.0]), torch.tensor([2.0])
    action = torch.zeros(10_000, 1)
    smoothed = td3_nb.smooth_target_action(action, 100.0, 0.5, low, high)
    assert smoothed.shape == action.shape
    # huge noise, clipped at ±0.5: almost every sample sits on a clip
    assert smoothed.abs().max().item() == pytest.approx(0.5)
    assert (smoothed.abs() == 0.5).float().mean() > 0.95
    near_bound = td3_nb.smooth_target_action(torch.full((1000, 1), 1.9), 1.0, 0.5, low, high)
    assert near_bound.max().item() <= 2.0 and near_bound.min().item() >= 1.4 - 1e-6
    assert (near_bound == 2.0).any(), "actions above the bound are clipped to it"


def test_smoothing_noise_has_the_given_std(td3_nb):
    torch.manual_seed(0)
    low, high = torch.tensor([-2.0, -2.0]), torch.tensor([2.0, 2.0])
    smoothed = td3_nb.smooth_target_action(torch.zeros(20_000, 2), 0.2, 10.0, low, high)
    assert smoothed.std().item() == pytest.approx(0.2, rel=0.05)
    assert smoothed.mean().item() == pytest.approx(0.0, abs=0.01)


# --- TD3: the loss of both critics ------------------------------------------------


def test_td3_critic_loss_uses_the_minimum_of_the_targets(td3_nb):
    reward = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    must_bootstrap = torch.ones(2, 2, dtype=torch.bool)
    q1 = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    q2 = torch.tensor([[0.0, 4.0], [0.0, 0.0]])
    tq1 = torch.tensor([[0.0, 0.0], [2.0, 6.0]])
    tq2 = torch.tensor([[0.0, 0.0], [4.0, 2.0]])
    # targets with γ = 0.5: 1 + 0.5 * min(2, 4) = 2, 1 + 0.5 * min(6, 2) = 2
    # critic 1 errors: 0, -2 -> mse 2; critic 2 errors: -2, 2 -> mse 4
    loss = td3_nb.compute_td3_critic_loss(0.5, reward, must_bootstrap, q1, q2, tq1, tq2)
    assert loss.shape == ()
    assert loss.item() == pytest.approx(6.0)


# --- TD3: the networks and the delayed updates ------------------------------------


def test_td3_creates_twin_critics_and_targets(td3_nb, outputs):
    td3 = td3_nb.TD3(tiny_config(td3_nb.params))
    for name in ("critic_1", "critic_2", "target_critic_1", "target_critic_2", "target_actor"):
        assert hasattr(td3, name), name
    assert td3.critic_1 is not td3.critic_2
    first = lambda m: next(m.parameters())  # noqa: E731
    assert not torch.equal(first(td3.critic_1), first(td3.critic_2)), "critics must be independent"
    assert torch.equal(first(td3.critic_1), first(td3.target_critic_1))
    assert torch.equal(first(td3.actor), first(td3.target_actor))
    assert first(td3.target_critic_1) is not first(td3.critic_1)
    assert td3.critic_1.prefix == "critic-1/" and td3.target_critic_2.prefix == "target-critic-2/"


def test_td3_update_targets_moves_all_three(td3_nb, outputs):
    td3 = td3_nb.TD3(tiny_config(td3_nb.params, tau_target=0.5))
    pairs = [(td3.critic_1, td3.target_critic_1), (td3.critic_2, td3.target_critic_2), (td3.actor, td3.target_actor)]
    with torch.no_grad():
        for net, target in pairs:
            for p in net.parameters():
                p.fill_(1.0)
            for p in target.parameters():
                p.fill_(3.0)
    td3_nb.update_targets(td3)
    for net, target in pairs:
        assert all(torch.allclose(p, torch.full_like(p, 2.0)) for p in target.parameters())


def test_td3_actor_and_targets_are_updated_every_policy_delay(td3_nb, outputs):
    td3 = td3_nb.TD3(tiny_config(td3_nb.params, policy_delay=3))
    targets = ("target_actor", "target_critic_1", "target_critic_2")
    counter = UpdateCounter(td3, {name: getattr(td3, name) for name in targets})
    td3_nb.run_td3(td3)
    counts = counter.finish()
    assert counts["critic"] == td3.nb_updates > 0
    assert counts["actor"] == td3.nb_updates // 3
    assert all(counts[name] == td3.nb_updates // 3 for name in targets), counts


def test_update_counter_sees_targets_moved_by_any_code(td3_nb, outputs):
    # the counter the graded test cells use: a target moved between two critic steps counts once
    td3 = td3_nb.TD3(tiny_config(td3_nb.params))
    counter = UpdateCounter(td3, {"target_actor": td3.target_actor})
    for move in (True, False, True):
        if move:
            with torch.no_grad():
                next(td3.target_actor.parameters()).add_(1.0)
        td3.critic_optimizer.step()
    assert counter.finish() == {"critic": 3, "actor": 0, "target_actor": 2}


def test_ddpg_trains_on_a_tiny_budget(ddpg_nb, outputs):
    ddpg = ddpg_nb.DDPG(tiny_config(ddpg_nb.params))
    before = copy.deepcopy(ddpg.actor)
    ddpg_nb.run_ddpg(ddpg)
    assert ddpg.nb_updates > 0
    assert not torch.equal(next(before.parameters()), next(ddpg.actor.parameters()))
    assert len(ddpg.eval_history) >= 2  # before training and at the end


# --- the visible checks name the common mistakes --------------------------------


def _test_cell(notebook: str, grade_id: str) -> str:
    import nbformat

    from conftest import SOLUTIONS

    nb = nbformat.read(str(SOLUTIONS / notebook), as_version=4)
    return next(c.source for c in nb.cells if c.metadata.get("nbgrader", {}).get("grade_id") == grade_id)


def _run_check(cell: str, td3_nb, **functions) -> str | None:
    """Runs a test cell with the notebook's names, some replaced; its assertion message, or None."""
    namespace = dict(vars(td3_nb))
    namespace.update(functions)
    try:
        exec(compile(cell, "<test cell>", "exec"), namespace)
    except AssertionError as error:
        return str(error)
    return None


def _td3_loss_with(target_of, critic_loss=None, combine=lambda a, b: a + b):
    """compute_td3_critic_loss written with a given (wrong) target and combination."""
    import torch.nn.functional as F

    def critic_loss_default(gamma, reward, must_bootstrap, q_values, target_q_values):
        target = reward[1] + gamma * must_bootstrap[1].float() * target_q_values[1]
        return F.mse_loss(q_values[0], target)

    loss = critic_loss or critic_loss_default

    def compute_td3_critic_loss(gamma, reward, must_bootstrap, q1, q2, t1, t2):
        target = target_of(t1, t2)
        return combine(loss(gamma, reward, must_bootstrap, q1, target), loss(gamma, reward, must_bootstrap, q2, target))

    return compute_td3_critic_loss


def test_the_td3_loss_check_names_each_common_mistake(td3_nb):
    import torch.nn.functional as F

    cell = _test_cell("02-td3.ipynb", "test_td3_critic_loss_value")
    assert _run_check(cell, td3_nb) is None  # the solution passes
    mistakes = {
        "the maximum of the two target critics": _td3_loss_with(torch.maximum),
        "the mean of the two target critics": _td3_loss_with(lambda a, b: (a + b) / 2),
        "the first target critic alone": _td3_loss_with(lambda a, b: a),
        "the mean of the two losses": _td3_loss_with(torch.minimum, combine=lambda a, b: (a + b) / 2),
        "terminal transitions are bootstrapped": _td3_loss_with(
            torch.minimum, critic_loss=lambda g, r, m, q, t: F.mse_loss(q[0], r[1] + g * t[1])),
        "reward[0]": _td3_loss_with(
            torch.minimum, critic_loss=lambda g, r, m, q, t: F.mse_loss(q[0], r[0] + g * m[1].float() * t[1])),
        "a minimum taken over time": _td3_loss_with(lambda a, b: torch.stack((a, b)).min(dim=1).values),
        "torch.min(x, dim=0) used as a tensor": _td3_loss_with(lambda a, b: torch.min(torch.stack((a, b)), dim=0)),
        "a sum of squared errors": _td3_loss_with(
            torch.minimum, critic_loss=lambda g, r, m, q, t: ((q[0] - (r[1] + g * m[1].float() * t[1])) ** 2).sum()),
    }
    for name, wrong in mistakes.items():
        message = _run_check(cell, td3_nb, compute_td3_critic_loss=wrong)
        assert message is not None and name in message, (name, message)


# --- the stand-in TD3 behaves like the real one ---------------------------------

#: correct and wrong rewrites of update_targets and run_td3, with their verdict
UPDATE_TARGETS = {
    "the solution": (None, True),
    "through .model, where the course's agents hold their parameters": (
        "def update_targets(td3):\n"
        "    tau = td3.cfg.algorithm.tau_target\n"
        "    for name in ('critic_1', 'critic_2', 'actor'):\n"
        "        soft_update_params(getattr(td3, name).model, getattr(td3, 'target_' + name).model, tau)\n", True),
    "the target actor forgotten": (
        "def update_targets(td3):\n"
        "    tau = td3.cfg.algorithm.tau_target\n"
        "    soft_update_params(td3.critic_1, td3.target_critic_1, tau)\n"
        "    soft_update_params(td3.critic_2, td3.target_critic_2, tau)\n", False),
}
RUN_TD3 = {
    "the solution": (None, True),
    "the delay counted by hand": (
        "def run_td3(td3):\n"
        "    cfg = td3.cfg.algorithm\n"
        "    critic_updates = 0\n"
        "    for rb in iter_replay_buffers(td3):\n"
        "        batch = rb.get_shuffled(cfg.batch_size)\n"
        "        update_critics(td3, batch)\n"
        "        critic_updates += 1\n"
        "        if critic_updates % cfg.policy_delay == 0:\n"
        "            update_actor(td3, batch)\n"
        "            update_targets(td3)\n", True),
    "the delay on nb_steps, which several updates share": (
        "def run_td3(td3):\n"
        "    cfg = td3.cfg.algorithm\n"
        "    for rb in iter_replay_buffers(td3):\n"
        "        batch = rb.get_shuffled(cfg.batch_size)\n"
        "        update_critics(td3, batch)\n"
        "        if td3.nb_steps % cfg.policy_delay == 0:\n"
        "            update_actor(td3, batch)\n"
        "            update_targets(td3)\n", False),
}


def _with(td3_nb, source, name):
    if source is None:
        return getattr(td3_nb, name)
    namespace = vars(td3_nb)
    exec(compile(source, f"<{name}>", "exec"), namespace)
    function = namespace[name]
    namespace[name] = getattr(td3_nb, "_original_" + name, function)
    return function


def _real_td3(td3_nb, **algorithm):
    cfg = tiny_config(td3_nb.params, **algorithm)
    return td3_nb.TD3(cfg), cfg


@pytest.mark.parametrize("case", UPDATE_TARGETS)
def test_update_targets_gets_the_same_verdict_on_the_stand_in_and_on_the_real_td3(td3_nb, case):
    from bbrl_course.checks import stand_in_td3

    source, correct = UPDATE_TARGETS[case]
    original = td3_nb.update_targets
    try:
        update_targets = _with(td3_nb, source, "update_targets")
        verdicts = []
        for td3 in (stand_in_td3(tiny_config(td3_nb.params, tau_target=0.25)), _real_td3(td3_nb, tau_target=0.25)[0]):
            with torch.no_grad():
                for name in ("actor", "critic_1", "critic_2"):
                    for p in getattr(td3, name).parameters():
                        p.fill_(1.0)
                    for p in getattr(td3, "target_" + name).parameters():
                        p.fill_(3.0)
            update_targets(td3)
            verdicts.append(all(torch.allclose(p, torch.full_like(p, 2.5)) for name in ("actor", "critic_1", "critic_2")
                                for p in getattr(td3, "target_" + name).parameters()))
    finally:
        td3_nb.update_targets = original
    assert verdicts == [correct, correct], (case, verdicts)


@pytest.mark.parametrize("case", RUN_TD3)
def test_run_td3_gets_the_same_verdict_on_the_stand_in_and_on_the_real_td3(td3_nb, case):
    from bbrl_course.checks import count_updates

    source, correct = RUN_TD3[case]
    namespace = vars(td3_nb)
    original = namespace["run_td3"]
    try:
        run_td3 = _with(td3_nb, source, "run_td3")
        counts = count_updates(run_td3, tiny_config(td3_nb.params, policy_delay=2), n_updates=12)
        stand_in = counts["critic"] == 12 and counts["actor"] == 6
        # the real TD3, its real loop (bbrl_course.algo.iter_replay_buffers), the real updates counted
        td3, cfg = _real_td3(td3_nb, policy_delay=2)
        seen = {"critic": 0, "actor": 0}
        saved = {name: namespace[name] for name in ("update_critics", "update_actor")}

        def counted(name):
            def update(*args):
                seen[name] += 1
                return saved["update_" + ("critics" if name == "critic" else "actor")](*args)
            return update

        namespace.update(update_critics=counted("critic"), update_actor=counted("actor"))
        try:
            run_td3(td3)
        finally:
            namespace.update(saved)
        real = seen["critic"] > 12 and seen["actor"] == seen["critic"] // 2
    finally:
        namespace["run_td3"] = original
    assert (stand_in, real) == (correct, correct), (case, counts, seen)
