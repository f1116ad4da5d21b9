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


# --- the retrainings' waves (``attribute``), with the retraining itself stood in for -----------

TWO_NAMED = dict(test_ddpg_functions="compute_actor_loss returned shape (5,)",
                 test_update_critics="update_critics computed Q_1 without gradient")


def _answer(swap, restored, best=-300.0):
    return {"swap": list(swap), "ran": True, "restored": restored, "best": best if restored else -1200.0,
            "what": "" if restored else "it still does not learn (best -1200)"}


def _attribute(monkeypatch, restoring: set, retrainings=4, engine=None):
    """``attribute`` on a failed TD3 whose retraining restores learning for the swaps in
    ``restoring``; here (no engine) each retraining is the stand-in's, one at a time."""
    asked = []

    def retrain(source_nb, submission, cells, names, limits, timeout, slow, learning, swap, deadline):
        asked.append(swap)
        return _answer(swap, swap in restoring)

    monkeypatch.setattr(judge, "retrain", retrain)
    output = judge.attribute(SOURCE, REPO, [], NAMES, None, 30, {}, "test_td3_learns", _verdicts(**TWO_NAMED),
                             retrainings, judge.time.monotonic() + 600, engine)
    return output["metadata"]["attribution"], output["data"]["text/plain"], asked


def test_without_an_engine_the_swaps_run_one_at_a_time_and_stop_at_the_first_that_learns(monkeypatch):
    info, text, asked = _attribute(monkeypatch, {("update_critics",)})
    assert asked == [("compute_actor_loss",), ("update_critics",)]
    assert info["waves"] == [["compute_actor_loss"], ["update_critics"]]
    assert info["restored_by"] == "update_critics" and info["best"] == -300.0
    assert "with the course's update_critics in place of yours, your TD3 learns (best -300" in text
    # the pair: neither alone
    info, text, asked = _attribute(monkeypatch, {("compute_actor_loss", "update_critics")})
    assert len(asked) == 3 and info["restored_by"] == "compute_actor_loss and update_critics"
    assert "both are wrong" in text
    # none within the budget of retrainings: said, and what was not tried is named
    info, text, asked = _attribute(monkeypatch, set(), retrainings=2)
    assert info["restored_by"] is None and len(asked) == 2
    assert "None of the 2 swaps tried makes your TD3 learn" in text
    assert "Not tried (the grader trains again at most 2 times" in text and "compute_actor_loss and update_critics" in text


def _engine(folder, width: int, restoring: set, ran=lambda swap: True):
    """The worker's side of ``EngineRetrainings``, answering each plan with its first ``width``
    swaps (``ran``: whether a swap could run), as ``submission.Retrainings`` does on a cluster."""
    import json
    import threading

    plans = []

    def serve():
        asked = 0
        while asked < 10:
            plan = folder / f"plan-{asked}.json"
            if not plan.exists():
                judge.time.sleep(0.01)
                continue
            swaps = [tuple(s) for s in json.loads(plan.read_text())["swaps"]]
            plans.append(swaps)
            answers = [_answer(s, s in restoring) if ran(s) else {"swap": list(s), "ran": False}
                       for s in swaps[:width]]
            (folder / f"answer-{asked}.json").write_text(json.dumps(answers))
            asked += 1

    threading.Thread(target=serve, daemon=True).start()
    return plans


def test_on_an_engine_with_room_for_two_the_swaps_run_two_at_a_time(monkeypatch, tmp_path):
    plans = _engine(tmp_path, 2, {("update_critics",)})
    info, text, asked = _attribute(monkeypatch, set(), engine=tmp_path)
    assert asked == []  # nothing retrained in the judge's process
    assert plans[0][:2] == [("compute_actor_loss",), ("update_critics",)] and len(plans) == 1
    assert info["waves"] == [["compute_actor_loss", "update_critics"]]
    assert info["restored_by"] == "update_critics"
    assert "- with the course's compute_actor_loss: it still does not learn (best -1200);" in text


def test_a_later_swap_that_learns_is_named_only_once_every_earlier_one_has_run(monkeypatch, tmp_path):
    # the first swap could not run in the first wave; the second restored learning: the first
    # is asked again, and it restores learning too, so it is the one named (the order's first)
    first_time = {"compute_actor_loss": True}

    def ran(swap):
        if swap == ("compute_actor_loss",) and first_time.pop("compute_actor_loss", False):
            return False
        return True

    plans = _engine(tmp_path, 2, {("compute_actor_loss",), ("update_critics",)}, ran)
    info, text, _ = _attribute(monkeypatch, set(), engine=tmp_path)
    assert len(plans) == 2 and plans[1][0] == ("compute_actor_loss",)
    assert info["waves"] == [["update_critics"], ["compute_actor_loss", "compute_actor_loss and update_critics"]]
    assert info["restored_by"] == "compute_actor_loss"
    assert "- with the course's update_critics: it learns too (best -300);" in text


def test_when_no_retraining_could_run_the_feedback_says_so_and_names_nothing(monkeypatch, tmp_path):
    plans = _engine(tmp_path, 2, set(), ran=lambda swap: False)
    info, text, _ = _attribute(monkeypatch, set(), engine=tmp_path)
    assert len(plans) == 1 and info["restored_by"] is None and info["tried"] == []
    assert "The grader could not train it again to find out" in text
    assert "None of the" not in text and "with the course's" not in text
