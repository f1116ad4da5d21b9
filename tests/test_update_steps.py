"""TD3's update steps, written by students (update_critics, update_actor): their notebook tests
run on a stand-in TD3 (bbrl_course.checks.stand_in_update_td3) and name each common mistake.

Each mistake below is the solution with one edit; the visible test must fail with the message
that names it, the hidden test must fail too, and the other update step's tests must pass (a
bug costs only its own tests). Then the same through the judge (the student's code in another
process, the stand-in sent by pickle): the stale gradients and the SGD step come back."""

from __future__ import annotations

import time

import nbformat
import pytest

from autograder.isolation import judge
from conftest import TD3_NOTEBOOK

NOTEBOOK = nbformat.read(str(TD3_NOTEBOOK), as_version=4)
CELLS = {c.metadata.get("nbgrader", {}).get("grade_id"): c.source for c in NOTEBOOK.cells if c.cell_type == "code"}
#: the cells the student's functions need, in the notebook's order
GIVEN = ["td3-imports", "td3-from-ddpg", "td3-params", "td3-smoothing", "td3-critic-loss"]
CRITICS = ("test_update_critics", "test_update_critics_hidden")
ACTOR = ("test_update_actor", "test_update_actor_hidden")
TARGET_BLOCK = "    with torch.no_grad():\n        # The target actor"
LOSS_CALL = ("    critic_loss = compute_td3_critic_loss(\n        cfg.discount_factor, reward, must_bootstrap, q_values_1, "
             "q_values_2, target_q_values_1, target_q_values_2\n    )\n")


def _inlined(target: str) -> tuple[str, str]:
    """The loss computed in update_critics itself, with ``target`` as the next values."""
    return (LOSS_CALL, f"    next_q = {target}\n"
            "    y = reward[1] + cfg.discount_factor * must_bootstrap[1].float() * next_q\n"
            "    critic_loss = ((q_values_1[0] - y) ** 2).mean() + ((q_values_2[0] - y) ** 2).mean()\n")


#: (mistake, edits of the solution's td3-updates cell, the tests it loses, words of the visible message)
MISTAKES = [
    ("target with gradient", [(TARGET_BLOCK, "    if True:\n        # The target actor")], CRITICS,
     "computed the target with gradient"),
    ("online actor in the target", [("td3.t_target_actor(batch, t=1", "td3.t_actor(batch, t=1")], CRITICS,
     "smoothed the online actor's action"),
    ("no smoothing", [('        batch.set("action", 1, next_action)\n', "")], CRITICS, "a target without smoothing"),
    ("maximum of the target critics", [_inlined("torch.maximum(target_q_values_1[1], target_q_values_2[1])")],
     CRITICS, "the maximum of the two target critics"),
    ("torch.min used as a tensor",
     [_inlined("torch.min(torch.stack((target_q_values_1, target_q_values_2)), dim=0)[1][1].float()")],
     CRITICS, "torch.min(x, dim) used as a tensor"),
    ("one critic twice", [('"critic-2/q_value", "target-critic-1', '"critic-1/q_value", "target-critic-1')], CRITICS,
     "the first critic twice"),
    ("gradients not zeroed", [("    td3.critic_optimizer.zero_grad()\n", "")], CRITICS, "gradients not zeroed"),
    ("the actor's loss moves the critics",
     [("    td3.actor_optimizer.step()\n    return actor_loss",
       "    td3.actor_optimizer.step()\n    td3.critic_optimizer.step()\n    return actor_loss")], ACTOR,
     "update_actor moved td3.critic_1"),
    ("actor gradients not zeroed", [("    td3.actor_optimizer.zero_grad()\n", "")], ACTOR, "not zeroed"),
    ("the target actor trained", [("    td3.t_actor(batch, t=0", "    td3.t_target_actor(batch, t=0")], ACTOR,
     "did not move the actor"),
]


def _source(edits) -> str:
    source = CELLS["td3-updates"]
    for old, new in edits:
        assert old in source, f"the solution no longer holds {old!r}: update this test"
        source = source.replace(old, new)
    return source


def _run_locally(source: str) -> dict[str, str | None]:
    namespace = {"__name__": "__main__"}
    for cell in GIVEN:
        exec(CELLS[cell], namespace)
    exec(source, namespace)
    errors = {}
    for test in CRITICS + ACTOR:
        try:
            exec(CELLS[test], namespace)
            errors[test] = None
        except AssertionError as error:
            errors[test] = str(error)
    return errors


def test_the_solution_passes_every_test():
    assert _run_locally(CELLS["td3-updates"]) == dict.fromkeys(CRITICS + ACTOR)


@pytest.mark.parametrize("mistake, edits, loses, message", MISTAKES, ids=[m[0] for m in MISTAKES])
def test_each_mistake_loses_its_own_tests_with_a_message_that_names_it(mistake, edits, loses, message):
    errors = _run_locally(_source(edits))
    assert {test for test, error in errors.items() if error} == set(loses), errors
    assert message in errors[loses[0]], errors[loses[0]]


def test_the_actor_through_the_second_critic_is_accepted():
    source = _source([("    td3.t_critic_1(batch, t=0, n_steps=1)\n    actor_loss = compute_actor_loss(batch[\"critic-1/",
                       "    td3.t_critic_2(batch, t=0, n_steps=1)\n    actor_loss = compute_actor_loss(batch[\"critic-2/")])
    assert _run_locally(source) == dict.fromkeys(CRITICS + ACTOR)


def _through_the_judge(tmp_path, source: str) -> dict:
    tmp_path.mkdir()
    cells = [[cell, CELLS[cell]] for cell in GIVEN] + [["td3-updates", source]]
    names = ["compute_critic_loss", "compute_actor_loss", "soft_update_params", "smooth_target_action",
             "compute_td3_critic_loss", "update_critics", "update_actor"]
    student = judge.StudentProcess(tmp_path, cells, names, None, cell_timeout=30)
    grader = judge.Judge(student, names, 60, {})
    try:
        for cell in ("td3-imports", "td3-params"):
            assert grader.run_cell(CELLS[cell], cell, False)["error"] is None
        return {test: grader.run_cell(CELLS[test], test, True)["error"] for test in CRITICS + ACTOR}
    finally:
        student.stop()


def test_through_the_judge_the_steps_and_the_stale_gradients_come_back(tmp_path):
    start = time.monotonic()
    assert _through_the_judge(tmp_path / "right", CELLS["td3-updates"]) == dict.fromkeys(CRITICS + ACTOR)
    # the stand-in's stale gradients reach the student's process: not zeroing them shows
    errors = _through_the_judge(tmp_path / "wrong", _source([("    td3.critic_optimizer.zero_grad()\n", "")]))
    assert {t for t, e in errors.items() if e} == set(CRITICS), errors
    assert "gradients not zeroed" in errors["test_update_critics"][1]
    print(f"{time.monotonic() - start:.1f} s")
