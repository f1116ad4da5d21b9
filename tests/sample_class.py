"""The sample class: submissions with known grades, to test the autograder.

Each sample is the student notebook (notebooks/) filled in with the solution,
then changed by a few edits: a bug, a correct rewrite, or a bad input. Its
expected result says which tests it must lose (every other autograded test
scores full marks), or its status when it cannot be graded. Building them from
the notebooks keeps them current when the solutions change; an edit whose text
is no longer found fails loudly.

    python tests/sample_class.py DIR         # writes DIR/submitted/<student>/<assignment>/
    python tests/sample_class.py check DIR   # compares DIR/grades/*.csv with the expected grades
    (both take --assignment NAME: only the samples of one assignment)
"""

from __future__ import annotations

import functools
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parent.parent
DDPG, TD3, EXPERIMENT = "01-ddpg", "02-td3", "03-experiment"


@dataclass
class Edit:
    cell: str  # grade_id of the cell (or "new:<after grade_id>" to insert a cell after it)
    old: str = ""
    new: str = ""
    delete: bool = False
    strip_metadata: bool = False


@dataclass
class Sample:
    student: str
    assignment: str
    why: str
    edits: list[Edit] = field(default_factory=list)
    loses: tuple[str, ...] = ()  # the autograded tests that must score 0
    status: str = "graded"
    notes: tuple[str, ...] = ()  # texts that must appear in the notes
    blank: bool = False  # the release as handed out, not filled in
    file: str | None = None  # another file name, or "" for no file
    raw: str | None = None  # the file's content as is (not a notebook)
    trains: bool = False  # runs the TD3 learning test (about 75 s)
    #: the function whose course version makes a TD3 that fails the learning test learn (the
    #: feedback names it: autograder.isolation.judge.attribute)
    culprit: str = ""
    results: str | None = "complete"  # the experiment's results file handed in (see write_results)


DDPG_TESTS = ("test_critic_loss_is_a_scalar", "test_critic_loss_value", "test_critic_loss_hidden",
              "test_actor_loss", "test_soft_update_value", "test_soft_update_hidden",
              "test_update_critic_inputs", "test_update_critic_step", "test_update_critic_hidden",
              "test_update_actor_inputs", "test_update_actor_step", "test_update_actor_hidden")
CRITIC_INPUTS = ("test_update_critic_inputs", "test_update_critic_hidden")
CRITIC_STEP = ("test_update_critic_step", "test_update_critic_hidden")
ACTOR_INPUTS = ("test_update_actor_inputs", "test_update_actor_hidden")
ACTOR_STEP = ("test_update_actor_step", "test_update_actor_hidden")
TD3_TESTS = ("test_ddpg_functions", "test_td3_networks", "test_smoothing_bounds", "test_smoothing_hidden",
             "test_td3_critic_loss_value", "test_td3_critic_loss_hidden", "test_update_critics",
             "test_update_critics_hidden", "test_update_actor", "test_update_actor_hidden", "test_update_targets",
             "test_delayed_updates", "test_delayed_updates_hidden", "test_td3_learns")
CRITIC_LOSS = ("test_critic_loss_value", "test_critic_loss_hidden")
RETURNS_TESTS = ("test_discounted_returns_value", "test_discounted_returns_hidden")
#: the solution's body of discounted_returns, which the rewrites replace
RETURNS_BODY = (
    "    returns = torch.zeros_like(rewards)\n"
    "    running = torch.zeros_like(rewards[..., 0])\n"
    "    # Backwards: the return at t needs the return at t+1\n"
    "    for t in reversed(range(rewards.shape[-1])):\n"
    "        running = rewards[..., t] + discount_factor * running\n"
    "        returns[..., t] = running\n"
    "    return returns"
)

SAMPLES = [
    # --- DDPG: the reference, the blank release, correct rewrites
    Sample("ddpg-solution", DDPG, "the solution"),
    Sample("ddpg-blank", DDPG, "the release, not filled in", blank=True, loses=DDPG_TESTS),
    Sample("ddpg-helper-cell", DDPG, "correct, its loss object defined in a cell the student added", edits=[
        Edit("new:ddpg-noise-plot", new="import torch.nn as nn\n\nmse = nn.MSELoss()\nLOW = torch.tensor([-1.0])"),
        Edit("ddpg-critic-loss", "    return F.mse_loss(q_values[0], target)", "    return mse(q_values[0], target)")]),
    Sample("ddpg-rewritten", DDPG, "correct, written differently", edits=[
        Edit("ddpg-critic-loss",
             "    target = reward[1] + discount_factor * must_bootstrap[1].float() * target_q_values[1]\n"
             "    # Both sides have shape (B,): a (B, 1) side would broadcast to a (B, B) loss\n"
             "    return F.mse_loss(q_values[0], target)",
             "    next_value = torch.where(must_bootstrap[1], target_q_values[1], torch.zeros_like(target_q_values[1]))\n"
             "    td_error = q_values[0] - (reward[1] + discount_factor * next_value)\n"
             "    return torch.mean(td_error ** 2)"),
        Edit("ddpg-actor-loss", "return -q_values.mean()", "return -torch.mean(q_values, dim=0)"),
        Edit("ddpg-soft-update",
             "    with torch.no_grad():\n"
             "        for param, target_param in zip(net.parameters(), target_net.parameters()):\n"
             "            target_param.mul_(1 - tau).add_(param, alpha=tau)",
             "    for param, target_param in zip(net.parameters(), target_net.parameters()):\n"
             "        target_param.data.copy_(tau * param.data + (1.0 - tau) * target_param.data)"),
    ]),
    Sample("ddpg-noisy", DDPG, "correct, but writes warnings, prints and a tqdm bar to stderr", edits=[
        Edit("ddpg-critic-loss", "    target = reward[1]",
             "    import sys, warnings\n"
             "    from tqdm import tqdm\n"
             "    warnings.warn('computing the critic loss')\n"
             "    print('debug: shapes', reward.shape, file=sys.stderr)\n"
             "    for _ in tqdm(range(3)):\n"
             "        pass\n"
             "    target = reward[1]"),
    ]),
    # --- DDPG: bugs
    Sample("bug-bootstraps-terminal", DDPG, "bootstraps from terminal states", loses=CRITIC_LOSS, edits=[
        Edit("ddpg-critic-loss", "discount_factor * must_bootstrap[1].float() * target_q_values[1]",
             "discount_factor * target_q_values[1]")]),
    Sample("bug-broadcast", DDPG, "(B, 1) Q-values against (B,) targets: a (B, B) loss", loses=CRITIC_LOSS,
           edits=[Edit("ddpg-critic-loss", "F.mse_loss(q_values[0], target)", "F.mse_loss(q_values[0].unsqueeze(-1), target)")]),
    Sample("bug-no-discount", DDPG, "forgets the discount", loses=CRITIC_LOSS, edits=[
        Edit("ddpg-critic-loss", "reward[1] + discount_factor * must_bootstrap", "reward[1] + must_bootstrap")]),
    Sample("bug-reward-index", DDPG, "uses reward[0], the reward of the previous transition",
           loses=CRITIC_LOSS, edits=[Edit("ddpg-critic-loss", "target = reward[1] +", "target = reward[0] +")]),
    Sample("bug-actor-sign", DDPG, "maximizes the loss (sign)", loses=("test_actor_loss",), edits=[
        Edit("ddpg-actor-loss", "return -q_values.mean()", "return q_values.mean()")]),
    Sample("bug-tau-swapped", DDPG, "tau weighs the target", loses=("test_soft_update_value", "test_soft_update_hidden"),
           edits=[Edit("ddpg-soft-update", "target_param.mul_(1 - tau).add_(param, alpha=tau)",
                       "target_param.mul_(tau).add_(param, alpha=1 - tau)")]),
    Sample("bug-not-in-place", DDPG, "replaces the target's tensors instead of updating them",
           loses=("test_soft_update_value", "test_soft_update_hidden"), edits=[
               Edit("ddpg-soft-update", "target_param.mul_(1 - tau).add_(param, alpha=tau)",
                    "target_param.data = tau * param.data + (1 - tau) * target_param.data")]),
    Sample("bug-autograd-graph", DDPG, "computes the update with autograd recording",
           loses=("test_soft_update_value", "test_soft_update_hidden"), edits=[
               Edit("ddpg-soft-update",
                    "    with torch.no_grad():\n"
                    "        for param, target_param in zip(net.parameters(), target_net.parameters()):\n"
                    "            target_param.mul_(1 - tau).add_(param, alpha=tau)",
                    "    for param, target_param in zip(net.parameters(), target_net.parameters()):\n"
                    "        target_param.data.copy_(tau * param + (1 - tau) * target_param)")]),
    # --- DDPG's update steps: a correct rewrite, and one bug each
    Sample("ddpg-updates-rewritten", DDPG, "correct update steps, written differently: detach, logical_not, "
           "zero_grad(set_to_none=False), the actor and critic run through one TemporalAgent, the loss's .item()", edits=[
        Edit("ddpg-update-critic",
             "    terminated, reward = batch[\"env/terminated\", \"env/reward\"]\n"
             "    must_bootstrap = ~terminated\n",
             "    reward = batch[\"env/reward\"]\n"
             "    must_bootstrap = torch.logical_not(batch[\"env/terminated\"])\n"),
        Edit("ddpg-update-critic",
             "    with torch.no_grad():\n"
             "        # π'(s_{t+1}) replaces the stored action at t=1, then the target critic evaluates\n"
             "        # Q'(s_{t+1}, π'(s_{t+1})): target-critic/q_value at t=1; no gradient into the targets\n"
             "        ddpg.t_target_actor(batch, t=1, n_steps=1)\n"
             "        ddpg.t_target_critic(batch, t=1, n_steps=1)\n"
             "    q_values, target_q_values = batch[\"critic/q_value\", \"target-critic/q_value\"]\n",
             "    TemporalAgent(Agents(ddpg.target_actor, ddpg.target_critic))(batch, t=1, n_steps=1)\n"
             "    q_values = batch[\"critic/q_value\"]\n"
             "    target_q_values = batch[\"target-critic/q_value\"].detach()\n"),
        Edit("ddpg-update-critic", "    ddpg.critic_optimizer.zero_grad()\n", "    ddpg.critic_optimizer.zero_grad(set_to_none=False)\n"),
        Edit("ddpg-update-critic", "    return critic_loss\n", "    return critic_loss.item()\n"),
        Edit("ddpg-update-actor",
             "    ddpg.t_actor(batch, t=0, n_steps=1)\n"
             "    ddpg.t_critic(batch, t=0, n_steps=1)\n"
             "    actor_loss = compute_actor_loss(batch[\"critic/q_value\"][0])\n",
             "    TemporalAgent(Agents(ddpg.actor, ddpg.critic))(batch, t=0, n_steps=1)\n"
             "    q_values = batch.get_full(\"critic/q_value\")\n"
             "    actor_loss = compute_actor_loss(q_values[0])\n"),
    ]),
    Sample("bug-target-with-gradient", DDPG, "computes the critic's target with gradient", loses=CRITIC_INPUTS, edits=[
        Edit("ddpg-update-critic", "    with torch.no_grad():\n        # π'", "    if True:\n        # π'")]),
    Sample("bug-online-actor-in-target", DDPG, "the online actor in the critic's target", loses=CRITIC_INPUTS, edits=[
        Edit("ddpg-update-critic", "ddpg.t_target_actor(batch, t=1", "ddpg.t_actor(batch, t=1")]),
    Sample("bug-critic-not-zeroed", DDPG, "the critic's gradients not zeroed", loses=CRITIC_STEP, edits=[
        Edit("ddpg-update-critic", "    ddpg.critic_optimizer.zero_grad()\n", "")]),
    Sample("bug-critic-wrong-optimizer", DDPG, "the critic's update steps the actor's optimizer", loses=CRITIC_STEP,
           edits=[Edit("ddpg-update-critic", "    ddpg.critic_optimizer.step()", "    ddpg.actor_optimizer.step()")]),
    Sample("bug-actor-moves-critic", DDPG, "the actor's update also steps the critic's optimizer", loses=ACTOR_STEP,
           edits=[Edit("ddpg-update-actor", "    ddpg.actor_optimizer.step()",
                       "    ddpg.actor_optimizer.step()\n    ddpg.critic_optimizer.step()")]),
    Sample("bug-actor-stored-actions", DDPG, "the actor's loss on the stored actions (the actor not run)",
           loses=ACTOR_INPUTS, edits=[Edit("ddpg-update-actor", "    ddpg.t_actor(batch, t=0, n_steps=1)\n", "")]),
    # --- DDPG: what the docstrings leave open is accepted (dtype), what they promise is checked
    Sample("ddpg-float64-loss", DDPG, "correct, computes the critic loss in float64", edits=[
        Edit("ddpg-critic-loss", "    return F.mse_loss(q_values[0], target)",
             "    return F.mse_loss(q_values[0].double(), target.double())")]),
    Sample("bug-critic-loss-in-place", DDPG, "builds the target in place, in the rewards it was given",
           loses=CRITIC_LOSS, edits=[
               Edit("ddpg-critic-loss",
                    "    target = reward[1] + discount_factor * must_bootstrap[1].float() * target_q_values[1]\n",
                    "    target = reward[1]\n"
                    "    target += discount_factor * must_bootstrap[1].float() * target_q_values[1]\n")]),
    # --- DDPG: bad inputs
    Sample("bad-infinite-loop", DDPG, "an infinite loop in compute_actor_loss", loses=("test_actor_loss",),
           notes=("test_actor_loss: this cell ran over its time limit",), edits=[
               Edit("ddpg-actor-loss", "    return -q_values.mean()", "    while True:\n        pass")]),
    Sample("bad-ignores-interrupt", DDPG, "an infinite loop that ignores SIGINT", loses=("test_actor_loss",),
           notes=("test_actor_loss: this cell ran over its time limit",), edits=[
               Edit("ddpg-actor-loss", "    return -q_values.mean()",
                    "    import signal\n    signal.signal(signal.SIGINT, signal.SIG_IGN)\n    while True:\n        pass")]),
    Sample("bad-kills-kernel", DDPG, "os._exit in soft_update_params",
           loses=("test_soft_update_value", "test_soft_update_hidden"),
           notes=("test_soft_update_value: the student's code ended its process",), edits=[
               Edit("ddpg-soft-update", "    with torch.no_grad():\n", "    import os\n    os._exit(1)\n    with torch.no_grad():\n")]),
    Sample("bad-import-error", DDPG, "an import that fails in the critic-loss cell",
           loses=("test_critic_loss_is_a_scalar", *CRITIC_LOSS),
           notes=("ddpg-critic-loss raised ModuleNotFoundError",), edits=[
               Edit("ddpg-critic-loss", "def compute_critic_loss(", "import torch_extras_that_do_not_exist\n\n\ndef compute_critic_loss(")]),
    Sample("bad-deleted-tests", DDPG, "deletes a test cell and strips another's metadata",
           notes=("test cell test_actor_loss was deleted", "test cell test_soft_update_value was deleted"),
           edits=[Edit("test_actor_loss", delete=True), Edit("test_soft_update_value", strip_metadata=True,
                                                             old="", new="")]),
    Sample("bad-edited-test", DDPG, "forgets the discount and edits the test to pass", loses=CRITIC_LOSS,
           notes=("test cell test_critic_loss_value was edited",), edits=[
               Edit("ddpg-critic-loss", "reward[1] + discount_factor * must_bootstrap", "reward[1] + must_bootstrap"),
               Edit("test_critic_loss_value", "assert close(loss, 17 / 3)", "assert True or close(loss, 17 / 3)"),
               Edit("test_critic_loss_value", "assert mistake is None", "assert True or mistake is None")]),
    Sample("bad-missing", DDPG, "an empty submission folder", status="missing", file=""),
    Sample("bad-not-json", DDPG, "a truncated file", status="unreadable", raw='{"cells": [{"cell_type": "code", "sour'),
    Sample("bad-misnamed", DDPG, "the notebook saved under another name", status="misnamed", file="01-ddpg (1).ipynb",
           notes=("rename the student's notebook",)),
    # --- TD3
    Sample("td3-solution", TD3, "the solution", trains=True),
    Sample("td3-blank", TD3, "the release, not filled in", blank=True, loses=TD3_TESTS),
    Sample("td3-rewritten", TD3, "correct, written differently: stacked critics, a loop, clamp, targets through .model",
           trains=True, edits=[
        Edit("td3-update-targets",
             "    soft_update_params(td3.critic_1, td3.target_critic_1, tau)\n"
             "    soft_update_params(td3.critic_2, td3.target_critic_2, tau)\n"
             "    soft_update_params(td3.actor, td3.target_actor, tau)\n",
             "    for name in (\"critic_1\", \"critic_2\", \"actor\"):\n"
             "        soft_update_params(getattr(td3, name).model, getattr(td3, \"target_\" + name).model, tau)\n"),
        Edit("td3-critic-loss",
             "    target_q_values = torch.minimum(target_q_values_1, target_q_values_2)\n",
             "    target_q_values = torch.stack((target_q_values_1, target_q_values_2)).min(dim=0).values\n"),
        Edit("td3-class",
             '        self.critic_1 = ContinuousQAgent(obs_size, hidden, act_size).with_prefix("critic-1/")\n'
             '        self.critic_2 = ContinuousQAgent(obs_size, hidden, act_size).with_prefix("critic-2/")\n'
             '        self.target_critic_1 = copy.deepcopy(self.critic_1).with_prefix("target-critic-1/")\n'
             '        self.target_critic_2 = copy.deepcopy(self.critic_2).with_prefix("target-critic-2/")\n',
             '        for i in (1, 2):\n'
             '            critic = ContinuousQAgent(obs_size, hidden, act_size).with_prefix(f"critic-{i}/")\n'
             '            setattr(self, f"critic_{i}", critic)\n'
             '            setattr(self, f"target_critic_{i}", copy.deepcopy(critic).with_prefix(f"target-critic-{i}/"))\n'),
        Edit("td3-smoothing",
             "    noise = (torch.randn_like(action) * noise_std).clamp(-noise_clip, noise_clip)\n"
             "    return torch.max(torch.min(action + noise, high), low)",
             "    noise = torch.clamp(noise_std * torch.randn(action.shape), min=-noise_clip, max=noise_clip)\n"
             "    return torch.clamp(action + noise, min=low, max=high)"),
    ]),
    Sample("bug-twin-maximum", TD3, "the maximum of the target critics", trains=True,
           loses=("test_td3_critic_loss_value", "test_td3_critic_loss_hidden"), edits=[
               Edit("td3-critic-loss", "torch.minimum(target_q_values_1, target_q_values_2)",
                    "torch.maximum(target_q_values_1, target_q_values_2)")]),
    Sample("bug-noise-unclipped", TD3, "target noise not clipped", trains=True,
           loses=("test_smoothing_bounds", "test_smoothing_hidden"), edits=[
               Edit("td3-smoothing", "(torch.randn_like(action) * noise_std).clamp(-noise_clip, noise_clip)",
                    "torch.randn_like(action) * noise_std")]),
    Sample("bug-no-delay", TD3, "the actor and the targets updated at every step", trains=True,
           loses=("test_delayed_updates", "test_delayed_updates_hidden"), edits=[
               Edit("td3-run", "        if td3.nb_updates % cfg.policy_delay == 0:\n", "        if True:\n")]),
    # a non-scalar actor loss: backward() fails, so TD3 does not train either
    Sample("bug-copied-actor-loss", TD3, "the DDPG actor loss copied without the mean",
           loses=("test_ddpg_functions", "test_td3_learns"), culprit="compute_actor_loss", edits=[
               Edit("td3-from-ddpg", "    return -q_values.mean()", "    return -q_values")]),
    # the optimizer refuses the same parameters twice: TD3 cannot be built, nor trained
    Sample("bug-one-critic", TD3, "the second critic is the first one",
           loses=("test_td3_networks", "test_td3_learns"), culprit="TD3", edits=[
               Edit("td3-class",
                    'self.critic_2 = ContinuousQAgent(obs_size, hidden, act_size).with_prefix("critic-2/")',
                    'self.critic_2 = self.critic_1')]),
    # trains for the whole learning test, but the actor descends the critic: the curve stays low
    Sample("bug-actor-ascends", TD3, "the actor loss without its minus sign: the actor minimizes Q",
           loses=("test_ddpg_functions", "test_td3_learns"), trains=True, culprit="compute_actor_loss", edits=[
               Edit("td3-from-ddpg", "    return -q_values.mean()", "    return q_values.mean()")]),
    Sample("bug-target-actor-frozen", TD3, "update_targets forgets the target actor",
           loses=("test_update_targets",), trains=True, edits=[
               Edit("td3-update-targets", "    soft_update_params(td3.actor, td3.target_actor, tau)\n", "")]),
    Sample("td3-updates-rewritten", TD3, "correct update steps written differently: the target in a helper, "
           "the minimum inlined with torch.stack(...).min(dim=0).values, Q-values read as (B,)", trains=True, edits=[
        Edit("td3-updates",
             "    q_values_1, q_values_2, target_q_values_1, target_q_values_2 = batch[\n"
             "        \"critic-1/q_value\", \"critic-2/q_value\", \"target-critic-1/q_value\", \"target-critic-2/q_value\"\n"
             "    ]\n"
             "    critic_loss = compute_td3_critic_loss(\n"
             "        cfg.discount_factor, reward, must_bootstrap, q_values_1, q_values_2, target_q_values_1, target_q_values_2\n"
             "    )\n",
             "    next_q = torch.stack([batch[f\"target-critic-{i}/q_value\"][1] for i in (1, 2)]).min(dim=0).values\n"
             "    y = reward[1] + cfg.discount_factor * must_bootstrap[1].float() * next_q\n"
             "    critic_loss = sum(((batch[f\"critic-{i}/q_value\"][0] - y) ** 2).mean() for i in (1, 2))\n"),
        Edit("td3-updates",
             "    actor_loss = compute_actor_loss(batch[\"critic-1/q_value\"][0])\n",
             "    q_values = batch[\"critic-1/q_value\"][0]  # (B,)\n"
             "    actor_loss = -q_values.mean()\n")]),
    # the same numbers as the solution (its target only carries a useless graph): TD3 learns
    Sample("bug-td3-target-with-gradient", TD3, "update_critics computes the target with autograd on", trains=True,
           loses=("test_update_critics", "test_update_critics_hidden"), edits=[
               Edit("td3-updates", "    with torch.no_grad():\n        # The target actor",
                    "    if True:\n        # The target actor")]),
    # the critics' Q-values without gradient: backward() fails, so TD3 does not train either
    Sample("bug-critics-no-grad", TD3, "update_critics computes Q_1(s_t, a_t) and Q_2 under torch.no_grad()",
           loses=("test_update_critics", "test_update_critics_hidden", "test_td3_learns"), culprit="update_critics", edits=[
               Edit("td3-updates",
                    "    td3.t_critic_1(batch, t=0, n_steps=1)\n    td3.t_critic_2(batch, t=0, n_steps=1)\n"
                    "    with torch.no_grad():\n",
                    "    with torch.no_grad():\n        td3.t_critic_1(batch, t=0, n_steps=1)\n"
                    "        td3.t_critic_2(batch, t=0, n_steps=1)\n")]),
    # the Q-values update_critics left in the batch (the stored actions, a graph already used):
    # backward() fails in training; the stand-in's fresh batch has none
    Sample("bug-actor-stale-q", TD3, "update_actor reads critic-1/q_value without running the critic on its actions",
           loses=("test_update_actor", "test_update_actor_hidden", "test_td3_learns"), culprit="update_actor", edits=[
               Edit("td3-updates", "    td3.t_critic_1(batch, t=0, n_steps=1)\n    actor_loss",
                    "    actor_loss")]),
    # two wrong functions: neither course version alone makes it learn, the pair does
    Sample("bug-two-functions", TD3, "the DDPG actor loss without its mean and update_critics's Q-values without gradient",
           loses=("test_ddpg_functions", "test_update_critics", "test_update_critics_hidden", "test_td3_learns"),
           culprit="compute_actor_loss and update_critics", edits=[
               Edit("td3-from-ddpg", "    return -q_values.mean()", "    return -q_values"),
               Edit("td3-updates",
                    "    td3.t_critic_1(batch, t=0, n_steps=1)\n    td3.t_critic_2(batch, t=0, n_steps=1)\n"
                    "    with torch.no_grad():\n",
                    "    with torch.no_grad():\n        td3.t_critic_1(batch, t=0, n_steps=1)\n"
                    "        td3.t_critic_2(batch, t=0, n_steps=1)\n")]),
    # a wrong update_critics, and a run_td3 that looks for the course's version of it when the
    # grader swaps it in (to name the culprit): it prints its code's names and raises them. Neither
    # may reach the feedback: from that process only a built-in exception's name comes back
    Sample("probe-attribution-leak", TD3, "update_critics without gradient; run_td3 prints and raises what it finds "
           "of the course's update_critics", loses=("test_update_critics", "test_update_critics_hidden", "test_td3_learns"),
           edits=[
               Edit("td3-updates",
                    "    td3.t_critic_1(batch, t=0, n_steps=1)\n    td3.t_critic_2(batch, t=0, n_steps=1)\n"
                    "    with torch.no_grad():\n",
                    "    with torch.no_grad():\n        td3.t_critic_1(batch, t=0, n_steps=1)\n"
                    "        td3.t_critic_2(batch, t=0, n_steps=1)\n"),
               Edit("td3-run",
                    '    """Trains TD3: the critics at every step, the actor and the targets every policy_delay steps."""\n',
                    '    """Trains TD3: the critics at every step, the actor and the targets every policy_delay steps."""\n'
                    "    _code = update_critics.__code__\n"
                    "    print('probe attribution: found', _code.co_filename, ' '.join(_code.co_names))\n"
                    "    if 'reference' in _code.co_filename:\n"
                    "        raise ValueError('probe attribution: leaked ' + _code.co_filename + ' ' + ' '.join(_code.co_names))\n")]),
    # --- The experiment: discounted_returns, and the results file handed in with the notebook
    Sample("exp-solution", EXPERIMENT, "the solution, with its results"),
    Sample("exp-blank", EXPERIMENT, "the release, not filled in, no results", blank=True, results=None,
           loses=(*RETURNS_TESTS, "test_experiment_results")),
    Sample("exp-rewritten", EXPERIMENT, "correct, written differently: a list of returns, stacked", edits=[
        Edit("experiment-discounted-returns",
             RETURNS_BODY,
             "    future = 0.0\n"
             "    returns = []\n"
             "    for reward in rewards.unbind(-1)[::-1]:\n"
             "        future = reward + discount_factor * future\n"
             "        returns.append(future)\n"
             "    return torch.stack(returns[::-1], dim=-1)")]),
    # the dtype is not in the docstring: float32 returns for float64 rewards, or float64 for float32
    Sample("exp-returns-float32", EXPERIMENT, "correct, but its returns are float32 whatever the rewards' dtype",
           edits=[Edit("experiment-discounted-returns", "    returns = torch.zeros_like(rewards)\n",
                       "    returns = torch.zeros(rewards.shape)\n")]),
    Sample("exp-returns-float64", EXPERIMENT, "correct, vectorized: a float64 matrix of discounts", edits=[
        Edit("experiment-discounted-returns",
             RETURNS_BODY,
             "    T = rewards.shape[-1]\n"
             "    k = torch.arange(T)\n"
             "    powers = (k[None, :] - k[:, None]).clamp(min=0).double()\n"
             "    discounts = torch.where(k[None, :] >= k[:, None], discount_factor ** powers, 0.0)\n"
             "    return rewards.double() @ discounts.T")]),
    Sample("bug-returns-forward", EXPERIMENT, "accumulates the returns forwards in time", loses=RETURNS_TESTS, edits=[
        Edit("experiment-discounted-returns", "    for t in reversed(range(rewards.shape[-1])):",
             "    for t in range(rewards.shape[-1]):")]),
    Sample("bug-returns-discounts-first", EXPERIMENT, "discounts the first reward too: G_t = γ (r_t + G_t+1)",
           loses=RETURNS_TESTS, edits=[
               Edit("experiment-discounted-returns", "running = rewards[..., t] + discount_factor * running",
                    "running = discount_factor * (rewards[..., t] + running)")]),
    # right on one episode, wrong with leading dimensions: the visible test's (2, 3) case names it
    Sample("bug-returns-time-first", EXPERIMENT, "runs over the first dimension, not time (the last)",
           loses=RETURNS_TESTS, edits=[
               Edit("experiment-discounted-returns",
                    "    running = torch.zeros_like(rewards[..., 0])\n"
                    "    # Backwards: the return at t needs the return at t+1\n"
                    "    for t in reversed(range(rewards.shape[-1])):\n"
                    "        running = rewards[..., t] + discount_factor * running\n"
                    "        returns[..., t] = running",
                    "    running = torch.zeros_like(rewards[0])\n"
                    "    for t in reversed(range(rewards.shape[0])):\n"
                    "        running = rewards[t] + discount_factor * running\n"
                    "        returns[t] = running")]),
    Sample("exp-no-results", EXPERIMENT, "the notebook without its results file", results=None,
           loses=("test_experiment_results",)),
    Sample("exp-ddpg-only", EXPERIMENT, "results of DDPG only", results="ddpg-only", loses=("test_experiment_results",)),
    Sample("exp-no-ablation", EXPERIMENT, "results of DDPG and TD3 without the ablation DDPG + min (an older notebook's)",
           results="no-ablation", loses=("test_experiment_results",)),
    Sample("exp-three-seeds", EXPERIMENT, "results of three seeds of five", results="three-seeds",
           loses=("test_experiment_results",)),
    Sample("exp-fast-results", EXPERIMENT, "results made in fast mode (800 steps): meaningless", results="fast",
           loses=("test_experiment_results",)),
    Sample("exp-short-results", EXPERIMENT, "results made on a third of the notebook's budget, not in fast mode",
           results="short", loses=("test_experiment_results",)),
]

SOLUTION_MARKERS = re.compile(r"^\s*### (BEGIN|END) SOLUTION\s*\n", re.M)


def filled_notebook(assignment: str):
    """The student notebook with every solution cell filled in from the solution notebook."""
    student = nbformat.read(str(REPO / "notebooks" / f"{assignment}.ipynb"), as_version=4)
    solution = nbformat.read(str(REPO / "solutions" / f"{assignment}.ipynb"), as_version=4)
    answers = {
        c.metadata["nbgrader"]["grade_id"]: SOLUTION_MARKERS.sub("", c.source)
        for c in solution.cells
        if c.metadata.get("nbgrader", {}).get("solution")
    }
    for cell in student.cells:
        grade_id = cell.metadata.get("nbgrader", {}).get("grade_id")
        if grade_id in answers:
            cell.source = answers[grade_id]
    return student


def _apply(notebook, edit: Edit, student: str):
    cells = notebook.cells
    after = edit.cell.removeprefix("new:")
    index = next((i for i, c in enumerate(cells) if c.metadata.get("nbgrader", {}).get("grade_id") == after), None)
    if index is None:
        raise ValueError(f"sample {student}: no cell {after!r}")
    if edit.cell.startswith("new:"):  # a cell the student added: no metadata
        # a fixed id (nbformat's would be random): the same sample is the same file each time it is
        # written, so that grading it again (make demo after make test) finds it unchanged
        cells.insert(index + 1, nbformat.v4.new_code_cell(edit.new, id=f"{student}-{after}"[:64]))
        return
    cell = cells[index]
    if edit.delete:
        del cells[index]
        return
    if edit.strip_metadata:
        cell.metadata = {}
    if edit.old or edit.new:
        if edit.old not in cell.source:
            raise ValueError(f"sample {student}: {edit.old!r} not found in cell {edit.cell}")
        cell.source = cell.source.replace(edit.old, edit.new, 1)


def graded_with_outcome(root: Path, student: str, assignment: str):
    """Grades one submission of ``root`` as ``python -m autograder grade`` does (a local Dask
    worker, the sandbox) and returns its result and the worker's outcome, which the recording
    benchmark and tests give the driver again without grading."""
    import contextlib

    from autograder.grading import driver
    from autograder.grading.distribute import engine as dask_engine

    captured = {}

    @contextlib.contextmanager
    def capturing(scheduler, jobs, log):
        with dask_engine(scheduler, jobs, log) as run:
            def keep(common, work, limits):
                for batch in run(common, work, limits):
                    captured.update({s: outcome for s, _, outcome in batch})
                    yield batch
            yield keep

    [result] = driver.grade(root, student=student, assignment=assignment, jobs=1, log=lambda *a: None,
                            force=True, engine=capturing)
    return result, captured[student]


def write_sample(sample: Sample, submitted: Path) -> Path:
    """Writes one sample's submission under submitted/<student>/<assignment>/."""
    folder = Path(submitted) / sample.student / sample.assignment
    folder.mkdir(parents=True, exist_ok=True)
    name = sample.file if sample.file is not None else f"{sample.assignment}.ipynb"
    if name == "":
        return folder
    path = folder / name
    if sample.raw is not None:
        path.write_text(sample.raw)
        return path
    if sample.blank:
        notebook = nbformat.read(str(REPO / "notebooks" / f"{sample.assignment}.ipynb"), as_version=4)
    else:
        notebook = filled_notebook(sample.assignment)
    for edit in sample.edits:
        _apply(notebook, edit, sample.student)
    nbformat.write(notebook, str(path))
    if sample.assignment == EXPERIMENT and sample.results is not None:
        write_results(folder / RESULTS_FILE, sample.results)
    return path


RESULTS_FILE = "03-experiment-results.npz"
EXPERIMENT_ENVS = ("Pendulum-v1", "LunarLanderContinuous-v3")
#: The experiment's algorithms (its LABELS): DDPG, the ablation DDPG + min, TD3
EXPERIMENT_LABELS = ("DDPG", "DDPG + min", "TD3")


def experiment_steps(env_name: str, fast: bool = False) -> int:
    """The budget (max_steps) of env_name in the experiment notebook, in fast mode or not."""
    return _experiment_params()[(env_name, fast)]


@functools.lru_cache(maxsize=None)
def _experiment_params() -> dict:
    import contextlib
    import io

    from bbrl_course.nbload import load_notebook

    with contextlib.redirect_stdout(io.StringIO()):
        module = load_notebook(REPO / "solutions" / f"{EXPERIMENT}.ipynb")
    return {(env, fast): module.config_for(env, fast=fast)["algorithm"]["max_steps"]
            for env in EXPERIMENT_ENVS for fast in (False, True)}


def write_results(path: Path, kind: str = "complete", n_evals: int = 4) -> Path:
    """A results file of the shape the experiment writes (save_results), with made-up values
    and what made them (the notebook's budget): the test of the results file checks what was
    run (algorithms, seeds, shapes, budget), not values.
    ``kind``: "complete" (DDPG, DDPG + min and TD3), "ddpg-only", "no-ablation" (DDPG and TD3,
    as the notebook wrote before its ablation), "three-seeds", "fast" (made in fast mode), or
    "short" (a third of the budget, not in fast mode)."""
    import numpy as np

    from bbrl_course import __version__
    from bbrl_course.experiment import save_results

    rng = np.random.default_rng(0)
    seeds = [1, 2, 3] if kind == "three-seeds" else [1, 2, 3, 4, 5]
    labels = {"ddpg-only": ("DDPG",), "no-ablation": ("DDPG", "TD3")}.get(kind, EXPERIMENT_LABELS)
    fast = kind == "fast"
    for env_name in EXPERIMENT_ENVS:
        shape = (len(seeds), n_evals)
        summary = {
            label: {
                "seeds": np.array(seeds),
                "steps": np.arange(n_evals) * 400,
                "returns": rng.uniform(-1500, -150, shape),
                "estimates": rng.uniform(-300, 0, shape),
                "true_values": rng.uniform(-300, 0, shape),
            }
            for label in labels
        }
        steps = experiment_steps(env_name, fast) // (3 if kind == "short" else 1)
        made = {"env_name": env_name, "max_steps": steps, "fast": fast,
                "n_episodes": 2 if fast else 5, "bbrl_course": __version__, "seeds": {label: seeds for label in labels}}
        save_results(path, env_name, summary, made=made)
    return path


def write_class(submitted: Path, samples=SAMPLES) -> list[Sample]:
    for sample in samples:
        write_sample(sample, submitted)
    return list(samples)


def expected_scores(sample: Sample, max_scores: dict[str, float]) -> dict[str, float | None]:
    """The points each test must get: 0 for the lost ones, full marks otherwise (None: by hand)."""
    return {
        # an answer left as handed out scores 0 at once; the others wait for the instructor
        test: (0.0 if sample.blank else None) if test.startswith("answer_")
        else (0.0 if test in sample.loses else points)
        for test, points in max_scores.items()
    }


def max_scores(assignment: str) -> dict[str, float]:
    """{test or answer: points} of the assignment, from its solution notebook."""
    notebook = nbformat.read(str(REPO / "solutions" / f"{assignment}.ipynb"), as_version=4)
    return {
        c.metadata["nbgrader"]["grade_id"]: float(c.metadata["nbgrader"]["points"])
        for c in notebook.cells
        if c.metadata.get("nbgrader", {}).get("grade")
    }


def hidden_lines(assignment: str) -> set[str]:
    """The lines of the assignment's hidden tests that students never see (text that also
    appears outside the hidden regions, such as a visible test's message, is public)."""
    notebook = nbformat.read(str(REPO / "solutions" / f"{assignment}.ipynb"), as_version=4)
    visible = "\n".join(
        re.sub(r"### BEGIN HIDDEN TESTS.*?### END HIDDEN TESTS", "", c.source, flags=re.S) for c in notebook.cells
    )
    lines = set()
    for cell in notebook.cells:
        for region in re.findall(r"### BEGIN HIDDEN TESTS(.*?)### END HIDDEN TESTS", cell.source, re.S):
            lines |= {line.strip() for line in region.splitlines() if len(line.strip()) >= 12}
    return {line for line in lines if line not in visible}


def check_grades(root: Path, samples=SAMPLES) -> list[str]:
    """The differences between the grades in root/grades/<assignment>.csv and those each
    sample must get (status, the points of every test, the expected notes); [] if none."""
    import csv

    rows = {}
    for assignment in {s.assignment for s in samples}:
        path = Path(root) / "grades" / f"{assignment}.csv"
        if not path.exists():
            return [f"{path} does not exist: grade the class first (or check only the assignment graded: "
                    f"check DIR --assignment NAME)"]
        with path.open(newline="") as f:
            rows[assignment] = {row["student"]: row for row in csv.DictReader(f)}
    problems = []
    for sample in samples:
        row = rows[sample.assignment].get(sample.student)
        if row is None:
            problems.append(f"{sample.student}: no row in grades/{sample.assignment}.csv")
            continue
        if row["status"] != sample.status:
            problems.append(f"{sample.student}: status {row['status']}, expected {sample.status} ({row['notes']})")
            continue
        for text in sample.notes:
            if text not in row["notes"]:
                problems.append(f"{sample.student}: the notes lack {text!r} ({row['notes']})")
        if sample.status != "graded":
            continue
        for test, points in expected_scores(sample, max_scores(sample.assignment)).items():
            want = "to grade" if points is None else f"{points:g}"
            if row.get(test) != want:
                problems.append(f"{sample.student}: {test} scored {row.get(test)!r}, expected {want} ({sample.why})")
    return problems


def _samples_of(argv: list[str]) -> list[Sample]:
    """The samples of ``--assignment NAME`` if given (a course folder built with only them), all otherwise."""
    if "--assignment" not in argv:
        return list(SAMPLES)
    name = argv[argv.index("--assignment") + 1]
    return [s for s in SAMPLES if s.assignment == name]


def moodle_download(root: Path, assignment: str = DDPG) -> tuple[Path, Path]:
    """What Moodle's "Download all submissions" gives for the class's hand-ins of
    ``assignment`` already in root/submitted/ (those graded as notebooks): a folder per
    participant, ``<Full name>_<participant number>_assignsubmission_file_/``; and a roster
    that maps those names to the sample class's ids. Written in ``root``; returns both paths."""
    import csv
    import zipfile

    archive, roster = Path(root) / f"moodle-{assignment}.zip", Path(root) / "roster.csv"
    with zipfile.ZipFile(archive, "w") as z, roster.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["id", "name", "email", "lms_id"])
        for number, sample in enumerate((s for s in SAMPLES if s.assignment == assignment and s.status == "graded"),
                                        start=101):
            name = sample.student.replace("-", " ").title()
            path = Path(root) / "submitted" / sample.student / assignment / f"{assignment}.ipynb"
            z.writestr(f"{name}_{number}_assignsubmission_file_/{assignment}.ipynb", path.read_bytes())
            writer.writerow([sample.student, name, f"{sample.student}@example.edu", number])
    return archive, roster


if __name__ == "__main__":
    if sys.argv[1:2] == ["moodle"]:
        for path in moodle_download(Path(sys.argv[2])):
            print(f"wrote {path}")
        sys.exit(0)
    if sys.argv[1:2] == ["check"]:
        samples = _samples_of(sys.argv)
        problems = check_grades(Path(sys.argv[2]), samples)
        for problem in problems:
            print(f"  {problem}")
        wrong = {p.split(":")[0] for p in problems}
        print(f"{len(samples) - len(wrong)}/{len(samples)} sample submissions graded as expected")
        report = Path(sys.argv[2]) / "grades" / "report.html"
        if report.exists():
            print(f"the class report: {report} (open it in a browser)")
        sys.exit(1 if problems else 0)
    # the class's hand-ins, written again from scratch (a submission removed from the class goes);
    # the rest of the course folder stays, so that grading it again grades only what changed
    submitted = Path(sys.argv[1]) / "submitted"
    shutil.rmtree(submitted, ignore_errors=True)
    write_class(submitted, _samples_of(sys.argv))
