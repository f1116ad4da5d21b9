"""The mutation audit: which plausible bugs of the students' functions the tests catch.

``python -m autograder audit [--assignment NAME]``: every function students write (the
``def`` bodies between ``### BEGIN SOLUTION`` and ``### END SOLUTION`` of
``solutions/*.ipynb``) gets its mutants (``autograder.audit.mutants``: small changes by
rules on the syntax tree), and each mutant is graded by the judge as a submission is,
with the assignment's tests, visible and hidden (``autograder.audit.judging``). Per function
it reports the mutants, those caught by all the tests, those caught by the visible tests
alone (what a student can see before handing in), the equivalent ones, and the survivors.

A survivor is either equivalent (the same behaviour as the solution for every input the
course gives it: listed with why in ``equivalent.toml``, keyed by mutant id) or a check
that is missing. ``baseline.json`` records the outcome of every mutant of the last full
audit (``--write-baseline``); ``tests/test_audit.py`` fails when a mutant recorded as
caught survives, or when a survivor appears that is neither equivalent nor recorded.

The audit sits above ``autograder.grading`` (it grades, as the driver does) and below the
command line.
"""

from __future__ import annotations

import csv
import json
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from autograder.audit.mutants import Mutant, mutants
from autograder.audit.judging import Outcome, grade_all
from autograder.course import NOTEBOOKS, SOLUTIONS, CourseError

HERE = Path(__file__).resolve().parent
EQUIVALENT = HERE / "equivalent.toml"
BASELINE = HERE / "baseline.json"

#: outcomes, as the CSV and the baseline write them
CAUGHT_VISIBLE, CAUGHT_HIDDEN, EQUIVALENT_MUTANT, SURVIVED, BROKEN = (
    "caught-visible", "caught-hidden", "equivalent", "survived", "broken")


def equivalents(path: Path = EQUIVALENT) -> dict[str, dict]:
    """{mutant id: {mutant, why}} of the mutants recorded as equivalent."""
    if not path.exists():
        return {}
    try:
        table = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise CourseError(f"{path.name}: not TOML ({error}): fix it") from None
    missing = [key for key, value in table.items() if not str(value.get("why", "")).strip()]
    if missing:
        raise CourseError(f"{path.name}: {', '.join(missing)} say no why: say why each is equivalent")
    return table


def baseline(path: Path = BASELINE) -> dict[str, str]:
    return json.loads(path.read_text())["outcomes"] if path.exists() else {}


@dataclass
class Row:
    mutant: Mutant
    outcome: Outcome
    status: str  # CAUGHT_VISIBLE, CAUGHT_HIDDEN, EQUIVALENT_MUTANT, SURVIVED, BROKEN


def classify(mutant: Mutant, outcome: Outcome, equivalent: dict) -> str:
    if outcome.broken:
        return BROKEN
    if outcome.caught_visible:
        return CAUGHT_VISIBLE
    if outcome.caught:
        return CAUGHT_HIDDEN
    return EQUIVALENT_MUTANT if mutant.id in equivalent else SURVIVED


def run(assignments: list[str], jobs: int = 2, trusted: bool = True, learning: bool = False,
        functions: set[str] | None = None, ids: set[str] | None = None, progress=None,
        skipped: list[str] | None = None, solutions: Path = SOLUTIONS,
        notebooks: Path = NOTEBOOKS) -> tuple[list[Row], float]:
    """Every mutant of the assignments (of ``functions`` only, or these ``ids`` only),
    graded; the rows and the seconds it took. The tests that fail on the solution itself
    are left out, with a line in ``skipped``."""
    start = time.perf_counter()
    skipped = [] if skipped is None else skipped
    equivalent = equivalents()
    rows = []
    for assignment in assignments:
        selected = [m for m in mutants(assignment, solutions) if (functions is None or m.function in functions)
                    and (ids is None or m.id in ids)]
        if not selected:
            continue
        by_id = {m.id: m for m in selected}
        solution, outcomes = grade_all(assignment, selected, jobs, trusted, learning, solutions=solutions,
                                       notebooks=notebooks, progress=progress)
        if solution.broken:
            raise CourseError(f"{assignment}: the judge could not grade the solution itself ({solution.broken})")
        for test in solution.failed:  # a test that needs more than the functions (the experiment's results file)
            skipped.append(f"{assignment}: {test} fails on the solution itself, so it cannot tell a mutant apart "
                           f"({solution.errors[test][:160]}); left out")
        for outcome in outcomes:
            for test in solution.failed:
                if test in outcome.failed:
                    outcome.failed.remove(test)
                    outcome.errors.pop(test, None)
        rows += [Row(by_id[o.id], o, classify(by_id[o.id], o, equivalent)) for o in outcomes]
    return rows, time.perf_counter() - start


def subset(found: list[Mutant], per_function: int) -> list[Mutant]:
    """A fixed sample: of each function, the ``per_function`` mutants of lowest digest (the
    last part of the id). Stable (a mutant stays in it while its function's code stays), and
    the same rules are not favoured over others."""
    chosen = {}
    for mutant in found:
        chosen.setdefault((mutant.assignment, mutant.function), []).append(mutant)
    return [m for group in chosen.values() for m in sorted(group, key=lambda m: m.id.rsplit(":", 1)[1])[:per_function]]


def per_function(rows: list[Row]) -> list[dict]:
    table = {}
    for row in rows:
        key = (row.mutant.assignment, row.mutant.function)
        line = table.setdefault(key, {"assignment": key[0], "function": key[1], "mutants": 0, "caught": 0,
                                      "visible": 0, "equivalent": 0, "survived": 0, "broken": 0})
        line["mutants"] += 1
        line["caught"] += row.status in (CAUGHT_VISIBLE, CAUGHT_HIDDEN)
        line["visible"] += row.status == CAUGHT_VISIBLE
        line["equivalent"] += row.status == EQUIVALENT_MUTANT
        line["survived"] += row.status == SURVIVED
        line["broken"] += row.status == BROKEN
    return list(table.values())


def per_assignment(rows: list[Row]) -> list[dict]:
    totals = {}
    for line in per_function(rows):
        total = totals.setdefault(line["assignment"], {"assignment": line["assignment"], "functions": 0})
        total["functions"] += 1
        for key in ("mutants", "caught", "visible", "equivalent", "survived", "broken"):
            total[key] = total.get(key, 0) + line[key]
    return list(totals.values())


HEADERS = ["mutants", "caught", "caught by visible", "equivalent", "surviving"]


def text_table(rows: list[Row]) -> str:
    lines = [f"{'assignment':<14} {'function':<26} " + " ".join(f"{h:>17}" for h in HEADERS)]
    for line in per_function(rows):
        lines.append(f"{line['assignment']:<14} {line['function']:<26} " + " ".join(
            f"{line[k]:>17}" for k in ("mutants", "caught", "visible", "equivalent", "survived")))
    return "\n".join(lines)


def markdown(rows: list[Row], seconds: float | None = None, jobs: int | None = None) -> str:
    """The README's tables: per notebook, per function, and the surviving mutants."""
    out = ["| notebook | functions | mutants | caught | caught by the visible tests | equivalent | surviving |",
           "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for t in per_assignment(rows):
        out.append(f"| `{t['assignment']}` | {t['functions']} | {t['mutants']} | {t['caught']} | {t['visible']} | "
                   f"{t['equivalent']} | {t['survived']} |")
    out += ["", "| notebook | function | mutants | caught | caught by the visible tests | equivalent | surviving |",
            "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
    for t in per_function(rows):
        out.append(f"| `{t['assignment']}` | `{t['function']}` | {t['mutants']} | {t['caught']} | {t['visible']} | "
                   f"{t['equivalent']} | {t['survived']} |")
    survivors = [r for r in rows if r.status == SURVIVED]
    if survivors:
        out += ["", "Surviving mutants (each a missing check):", ""]
        out += [f"- `{r.mutant.id}`: {r.mutant.description}" for r in survivors]
    if seconds is not None:
        out += ["", f"{len(rows)} mutants graded in {seconds:.0f} s ({jobs} at once)."]
    return "\n".join(out) + "\n"


def write(rows: list[Row], folder: Path, seconds: float, jobs: int) -> tuple[Path, Path]:
    """audit.csv (a row per mutant) and audit.md (the tables) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "audit.csv"
    with path.open("w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["id", "assignment", "function", "rule", "status", "failed tests", "first error",
                         "seconds", "description"])
        for r in rows:
            first = next(iter(r.outcome.errors.values()), r.outcome.broken or "")
            writer.writerow([r.mutant.id, r.mutant.assignment, r.mutant.function, r.mutant.rule, r.status,
                             " ".join(r.outcome.failed), first, f"{r.outcome.seconds:.1f}", r.mutant.description])
    md = folder / "audit.md"
    md.write_text(markdown(rows, seconds, jobs))
    return path, md


def write_baseline(rows: list[Row], path: Path = BASELINE) -> None:
    """Records every mutant's outcome (merged with those of assignments not audited now)."""
    outcomes = baseline(path)
    audited = {r.mutant.assignment for r in rows}
    outcomes = {k: v for k, v in outcomes.items() if k.split(":", 1)[0] not in audited}
    outcomes.update({r.mutant.id: r.status for r in rows})
    path.write_text(json.dumps({"outcomes": dict(sorted(outcomes.items()))}, indent=1) + "\n")


def regressions(rows: list[Row], recorded: dict[str, str]) -> list[str]:
    """What the committed baseline forbids: a mutant recorded as caught that survives (or
    caught by the hidden tests only where the visible ones caught it), a survivor that is
    neither equivalent nor recorded as surviving, a mutant the judge could not grade."""
    problems = []
    for r in rows:
        before = recorded.get(r.mutant.id)
        if r.status == BROKEN:
            problems.append(f"{r.mutant.id} could not be graded ({r.outcome.broken}): {r.mutant.description}")
        elif r.status in (SURVIVED, EQUIVALENT_MUTANT) and before in (CAUGHT_VISIBLE, CAUGHT_HIDDEN):
            problems.append(f"{r.mutant.id} was caught ({before}) and now survives: {r.mutant.description}")
        elif r.status == CAUGHT_HIDDEN and before == CAUGHT_VISIBLE:
            problems.append(f"{r.mutant.id} was caught by the visible tests and now only by the hidden ones: "
                            f"{r.mutant.description}")
        elif r.status == SURVIVED and before != SURVIVED:
            problems.append(f"{r.mutant.id} survives, is not recorded as equivalent in equivalent.toml "
                            f"(a check is missing): {r.mutant.description}")
    return problems
