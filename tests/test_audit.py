"""The mutation audit (autograder/audit/): its mutants, and CI's run of it.

CI runs a fixed subset of the audit (``CI_PER_FUNCTION`` mutants of every student
function, ``autograder.audit.subset``) through the judge and compares each outcome with
the committed baseline (``autograder/audit/baseline.json``, written by ``python -m
autograder audit --write-baseline`` from a full audit): a mutant recorded as caught that
survives, or a new survivor that is not recorded as equivalent, fails. ``make audit``
runs the full audit.
"""

from __future__ import annotations

import ast
import re
import shutil
import time

import nbformat
import pytest

from autograder import audit
import autograder.audit.mutants  # noqa: E402  (the module: autograder.audit.mutants is also a function)
import sys

mutation = sys.modules["autograder.audit.mutants"]
from autograder.course import NOTEBOOKS, SOLUTIONS, assignments

#: mutants of each student function graded in CI (the full audit: make audit)
CI_PER_FUNCTION = 5

TOY = '''\
def toy(reward, must_bootstrap, q, target, tau, net, steps, delay):
    """A docstring."""
    ### BEGIN SOLUTION
    y = reward[1] + 0.9 * must_bootstrap[1].float() * target[1]
    m = torch.minimum(q[0], y).mean(dim=0)
    n = (y * 2).clamp(-1, 1).detach()
    with torch.no_grad():
        net.mul_(1 - tau).add_(q, alpha=tau)
    if steps % delay == 0:
        m = -m
    return m + n
    ### END SOLUTION
'''


def _changes(source):
    return {m.description.split(": ", 1)[1] for m in mutation.function_mutants("toy", "toy-cell", source)}


def test_the_rules_make_the_mutants_the_issue_names():
    found = _changes(TOY)
    for change in [
        "reward[1] -> reward[0]",  # index 0 <-> 1
        "torch.minimum -> torch.maximum",  # minimum <-> maximum
        "dim=0 -> dim=1",  # a dim= changed
        "0.9 * must_bootstrap[1].float() * target[1] -> 0.9 * must_bootstrap[1].float()",  # a factor dropped
        "0.9 * must_bootstrap[1].float() -> 0.9",  # the mask dropped
        "0.9 * must_bootstrap[1].float() -> must_bootstrap[1].float()",  # the discount dropped
        "reward[1] + 0.9 * must_bootstrap[1].float() * target[1] -> reward[1]",  # a term dropped
        "-m -> m",  # a sign flipped
        "m + n -> m - n",
        "torch.minimum(q[0], y).mean -> torch.minimum(q[0], y).sum",  # mean <-> sum
        "(y * 2).clamp(-1, 1) -> y * 2",  # a clamp removed
        "(y * 2).clamp(-1, 1).detach() -> (y * 2).clamp(-1, 1)",  # .detach() removed
        "q[0] -> q[0].detach()",  # .detach() added
        "'with torch.no_grad():' removed",
        "tau <-> 1 - tau (everywhere)",
        "steps % delay == 0 -> steps % delay == 1",  # a comparison's constant shifted
        "deleted: y = reward[1] + 0.9 * must_bootstrap[1].float() * target[1]",
    ]:
        assert change in found, f"no mutant {change!r}; the mutants are:\n" + "\n".join(sorted(found))
    # the no_grad() rule adds it where the body has none
    assert "the body run under torch.no_grad()" in _changes(TOY.replace("with torch.no_grad():\n        net", "net"))


def test_mutants_are_valid_distinct_and_change_only_the_solution():
    found = mutation.function_mutants("toy", "toy-cell", TOY)
    trees = [ast.dump(ast.parse(m.source)) for m in found]
    assert len(set(trees)) == len(trees) and ast.dump(ast.parse(mutation.MARKERS.sub("", TOY))) not in trees
    assert len({m.id for m in found}) == len(found)
    for m in found:
        assert "### BEGIN SOLUTION" not in m.source and '"""A docstring."""' in m.source
        assert m.source.startswith("def toy(reward, must_bootstrap, q, target, tau, net, steps, delay):")
        assert "\n" not in m.description and m.description.startswith(f"toy, line {m.line} of toy-cell: ")
    # code outside the markers is never changed
    outside = TOY.replace('    """A docstring."""\n', '    """A docstring."""\n    x = a[0] + b\n')
    assert not any("x = a" not in m.source or "a[1]" in m.source for m in mutation.function_mutants("toy", "c", outside))


def test_ids_do_not_depend_on_line_numbers():
    moved = TOY.replace('"""A docstring."""', '"""A docstring\n\n    on more lines.\n    """')
    before = {m.id: m.description.split(": ", 1)[1] for m in mutation.function_mutants("toy", "toy-cell", TOY)}
    after = {m.id: m.description.split(": ", 1)[1] for m in mutation.function_mutants("toy", "toy-cell", moved)}
    assert before == after


def test_every_student_function_has_mutants_and_the_baseline_knows_them():
    recorded = audit.baseline()
    for assignment in assignments():
        cells = mutation.solution_cells(assignment)
        functions = {m.function for m in mutation.mutants(assignment)}
        for _, source in cells:
            for node in ast.walk(ast.parse(source)):
                if isinstance(node, ast.FunctionDef) and "### BEGIN SOLUTION" in ast.get_source_segment(source, node):
                    assert any(f == node.name or f.endswith("." + node.name) for f in functions), node.name
        unknown = [m.id for m in mutation.mutants(assignment) if m.id not in recorded]
        assert not unknown, (f"{len(unknown)} mutants of {assignment} are not in autograder/audit/baseline.json "
                             f"(the solution changed?): run make audit, look at the survivors, then python -m "
                             f"autograder audit --write-baseline ({unknown[:3]})")


def test_equivalent_mutants_are_survivors_of_the_baseline():
    recorded, equivalent = audit.baseline(), audit.equivalents()
    for key in equivalent:
        assert recorded.get(key) == audit.EQUIVALENT_MUTANT, f"{key} is in equivalent.toml but its outcome is {recorded.get(key)}"


def _ci_mutants():
    return [m for a in assignments() for m in audit.subset(mutation.mutants(a), CI_PER_FUNCTION)]


@pytest.fixture(scope="module")
def ci_rows():
    """The CI subset graded once, for the two tests that need it."""
    chosen = _ci_mutants()
    start = time.perf_counter()
    rows, _ = audit.run(assignments(), jobs=2, ids={m.id for m in chosen})
    print(f"{len(rows)} mutants in {time.perf_counter() - start:.0f} s")
    return chosen, rows


@pytest.mark.timeout(600)
def test_the_tests_still_catch_what_they_caught(ci_rows):
    """The CI subset of the audit, graded by the judge, against the baseline."""
    chosen, rows = ci_rows
    assert len(rows) == len(chosen)
    problems = audit.regressions(rows, audit.baseline())
    assert not problems, "\n".join(problems)


def _weakened(tmp_path, assignment, cell, pattern, new=""):
    """A copy of solutions/ and notebooks/ where a test cell's check is changed."""
    solutions, notebooks = tmp_path / "solutions", tmp_path / "notebooks"
    shutil.copytree(SOLUTIONS, solutions)
    shutil.copytree(NOTEBOOKS, notebooks)
    path = solutions / f"{assignment}.ipynb"
    notebook = nbformat.read(str(path), as_version=4)
    [target] = [c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == cell]
    weakened = re.sub(pattern, new, target.source, flags=re.S)
    assert weakened != target.source, f"{cell} no longer matches {pattern!r}: update this test"
    target.source = weakened
    nbformat.write(notebook, str(path))
    return solutions, notebooks


@pytest.mark.timeout(300)
def test_a_weakened_hidden_check_fails_the_audit(tmp_path, ci_rows):
    """Honest: with the checks of compute_actor_loss's gradient removed (its visible one and its
    hidden test, in a copy of the solutions), the mutants only they caught (the loss detached,
    computed under no_grad) survive, and the comparison with the baseline says so."""
    solutions, notebooks = _weakened(tmp_path, "01-ddpg", "test_actor_loss",
                                     r"# The actor learns through this loss.*### END HIDDEN TESTS", "")
    chosen = {m.id: m for m in mutation.mutants("01-ddpg") if m.function == "compute_actor_loss"}
    recorded = audit.baseline()
    gradient_only = {k for k, m in chosen.items() if m.rule in ("detach", "no_grad")}
    assert gradient_only and all(recorded[k] == audit.CAUGHT_VISIBLE for k in gradient_only), \
        "the baseline records no mutant of compute_actor_loss's gradient caught by the visible test"
    rows, _ = audit.run(["01-ddpg"], jobs=2, ids=set(chosen), solutions=solutions, notebooks=notebooks)
    problems = audit.regressions(rows, recorded)
    assert {p.split()[0] for p in problems} == gradient_only, problems
    assert all("was caught (caught-visible) and now survives" in p for p in problems), problems
    # and with the tests as they are, the same mutants give no problem (CI's subset holds them all:
    # its rows, graded once for both tests)
    subset, subset_rows = ci_rows
    assert set(chosen) <= {m.id for m in subset}, "the CI subset no longer holds every mutant of compute_actor_loss"
    rows = [row for row in subset_rows if row.mutant.id in chosen]
    assert len(rows) == len(chosen) and not audit.regressions(rows, recorded)


def test_a_course_folder_that_does_not_exist_is_said_before_any_mutant_is_graded():
    import time

    from conftest import cli

    start = time.monotonic()
    run = cli("audit", "--root", "outputs/no such course", "--assignment", "03-experiment")
    assert run.returncode == 1 and run.stdout == "", run.stdout[-500:]
    assert run.stderr.startswith("error: no course folder outputs/no such course"), run.stderr
    assert time.monotonic() - start < 30, "said at once, not after the audit"
