"""Which function stops a TD3 from learning (autograder/isolation/judge.py, ``attribute``): the
course's definitions it swaps in, and the order it tries them in. Fast. The retrainings
themselves run in the sample class (tests/test_grading.py: each TD3 bug that fails the
learning test is attributed to the function that holds it)."""

from __future__ import annotations

import ast

import nbformat

from autograder.isolation import judge
from conftest import REPO

SOURCE = nbformat.read(str(REPO / "solutions" / "02-td3.ipynb"), as_version=4)
NAMES = judge.student_names(SOURCE)


def test_each_student_function_has_the_courses_definition_and_only_it():
    reference = judge.references(SOURCE, NAMES)
    assert set(reference) == set(NAMES) >= {"update_critics", "update_actor", "update_targets", "smooth_target_action",
                                            "compute_td3_critic_loss", "compute_actor_loss", "TD3", "run_td3"}
    for name, text in reference.items():
        [node] = ast.parse(text).body  # one definition, nothing else of the cell
        assert node.name == name
        assert "raise NotImplementedError" not in text


def _verdicts(**failed):
    verdicts = {label: {"error": None} for label, _, test in judge.judge_cells(SOURCE) if test}
    for label, message in failed.items():
        verdicts[label] = {"error": ("AssertionError", message)}
    verdicts["test_td3_learns"] = {"error": ("AssertionError", "after 6000 steps ... update_actor ... run_td3")}
    return verdicts


def _singles(verdicts, candidates):
    """The order of the swaps when each is one function (a single named function: no pair)."""
    order = judge.swaps(SOURCE, verdicts, "test_td3_learns", candidates)
    assert all(len(swap) == 1 for swap in order)
    return [name for (name,) in order]


def test_the_functions_a_failed_test_names_come_first_then_those_it_calls():
    candidates = [n for n in NAMES if n in judge.references(SOURCE, NAMES)]
    order = _singles(_verdicts(test_update_critics="update_critics computed the target with gradient"), candidates)
    assert order[0] == "update_critics"
    # test_ddpg_functions calls the three DDPG functions; its message names the actor loss
    order = _singles(_verdicts(test_ddpg_functions="compute_actor_loss returned shape (5,)"), candidates)
    assert order[0] == "compute_actor_loss"
    assert set(order[1:3]) == {"compute_critic_loss", "soft_update_params"}
    # the learning test's own message names nothing: without failed unit tests, the notebook's order
    assert _singles(_verdicts(), candidates) == candidates


def test_two_functions_named_by_failed_tests_are_tried_alone_then_together():
    candidates = [n for n in NAMES if n in judge.references(SOURCE, NAMES)]
    order = judge.swaps(SOURCE, _verdicts(test_ddpg_functions="compute_actor_loss returned shape (5,)",
                                          test_update_critics="update_critics computed Q_1 without gradient"),
                        "test_td3_learns", candidates)
    assert order[:3] == [("compute_actor_loss",), ("update_critics",), ("compute_actor_loss", "update_critics")]
    assert len(order) == len(candidates) + 1  # every function alone, and the one pair
    # one named function: no pair
    order = judge.swaps(SOURCE, _verdicts(test_update_actor="update_actor returned shape (3,)"), "test_td3_learns",
                        candidates)
    assert all(len(swap) == 1 for swap in order) and order[0] == ("update_actor",)
