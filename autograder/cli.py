"""The course kit's command line: ``python -m autograder COMMAND``.

Each command has its own ``--help``. The course folder (``--root``) is the folder that
holds ``submitted/<student>/<assignment>/``; by default the repository's ``autograder/``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
from dataclasses import asdict
from pathlib import Path

from autograder.course import AUTOGRADER, REPO, RETRAININGS, CourseError, assignments, count, course_root, shown

COMMANDS = {
    "release": "write the student notebooks (notebooks/) and the README's Colab links from solutions/",
    "publish": "check that the course's repository holds the tag v<version> the notebooks install (before telling students)",
    "handout": "write the solutions without their hidden tests (outputs/handout/), for after the deadline",
    "grade": "grade the class's submissions: tables on screen, CSVs in grades/, feedback in feedback/",
    "report": "write the class report (grades/report.html) again from the last grading, without grading",
    "formgrader": "start JupyterLab with nbgrader's formgrader on 127.0.0.1, to grade answers by hand",
    "collect": "bring a Moodle or Canvas download of all submissions into submitted/<student>/<assignment>/",
    "export": "write the grades and feedback of an assignment for upload to Moodle or Canvas",
    "audit": "grade mutants of the solutions (plausible bugs) with the tests: which ones the tests miss",
    "portal": "the submission portal: print each student's sign-in link (tokens), revoke one, or serve it",
}

GRADE_EPILOG = """\
Submissions are read from ROOT/submitted/<student>/<assignment>/<assignment>.ipynb. Each
is checked first (missing, misnamed, not a notebook), then graded: the student's code in
a sandbox, the tests in a separate judge. A problem with one submission is reported on
its row with its reason and never stops the others. A submission unchanged since it was
graded keeps its grades (--force grades it again).

Writes ROOT/grades/<assignment>.csv, ROOT/grades/summary.csv, the class report
ROOT/grades/report.html, the feedback in ROOT/feedback/<student>/<assignment>/ and a log
per submission in ROOT/logs/.

examples:
  python -m autograder grade                                  every student, every assignment
  python -m autograder grade --student alice --assignment 02-td3
  python -m autograder grade --root "~/courses/rl 2026"
  python -m autograder grade --scheduler tcp://10.0.0.5:8786  on a Dask cluster
"""


def _root_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", default=str(AUTOGRADER),
                        help="the course folder, which holds submitted/ (default: the repository's autograder/)")


def parser() -> argparse.ArgumentParser:
    from autograder.isolation import sandbox

    main = argparse.ArgumentParser(prog="python -m autograder", description=__doc__,
                                   formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = main.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary, description=summary[0].upper() + summary[1:] + ".")
    grade = commands.choices["grade"]
    grade.epilog, grade.formatter_class = GRADE_EPILOG, argparse.RawDescriptionHelpFormatter
    grade.add_argument("--student", help="grade only this student (a folder of submitted/)")
    grade.add_argument("--assignment", help="grade only this assignment (01-ddpg, 02-td3, 03-experiment)")
    _root_argument(grade)
    grade.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                       help="submissions graded at once on this machine (default %(default)s)")
    grade.add_argument("--scheduler", default=os.environ.get("SCHEDULER") or None,
                       help="a Dask cluster's scheduler, tcp://HOST:PORT (default: a local cluster of --jobs workers)")
    grade.add_argument("--force", action="store_true",
                       help="grade every submission again, even those unchanged since they were graded")
    grade.add_argument("--json", type=Path, help="also write the results to this JSON file")
    grade.add_argument("--trusted", action="store_true",
                       help="grade WITHOUT a sandbox: only for code you trust (every row says so)")
    grade.add_argument("--memory", type=float, default=sandbox.Limits.memory / sandbox.GB,
                       help="the sandbox's memory limit, in GB (default %(default)g)")
    grade.add_argument("--cpu-seconds", type=int, default=sandbox.Limits.cpu_seconds,
                       help="CPU seconds of a submission's student's process (default %(default)s)")
    grade.add_argument("--budget", type=float, default=None,
                       help="seconds a submission may take in all: its student's process and the judge "
                            "together (default: the sum of its assignment's cell time limits, plus 120 s)")
    grade.add_argument("--retrainings", type=int, default=None, metavar="N",
                       help="when a learning test fails, train again with one of the student's functions replaced "
                            "by the course's, at most N times, to name the one that stops it (default "
                            f"{RETRAININGS}; 0: never)")
    _root_argument(commands.choices["report"])
    formgrader = commands.choices["formgrader"]
    _root_argument(formgrader)
    formgrader.add_argument("--port", type=int, default=8888, help="the port on 127.0.0.1 (default %(default)s)")
    _audit_arguments(commands.choices["audit"])
    _lms_arguments(commands.choices["collect"], commands.choices["export"])
    _portal_arguments(commands.choices["portal"])
    return main


def main(argv=None) -> int:
    args = parser().parse_args(argv)
    try:
        return {"release": release, "publish": publish, "handout": handout, "grade": grade, "report": report,
                "formgrader": formgrader, "audit": audit, "collect": collect,
                "export": export, "portal": portal}[args.command](args)
    except CourseError as error:
        from autograder.isolation import inert

        print(f"error: {inert.text(error, keep=chr(10))}", file=sys.stderr)
        return 1


def release(args) -> int:
    from autograder.course.release import release as write_release, update_solution_setup_cells

    for path in update_solution_setup_cells():
        print(f"wrote the set-up cell of {path.relative_to(REPO)}")
    for path in write_release():
        print(f"wrote {path.relative_to(REPO)}")
    print("wrote the Colab links of README.md")
    from autograder.course.publish import check_tag

    status, line = check_tag(timeout=10)
    # the tag comes after the release is committed: here a missing one is a reminder
    print({"present": "", "missing": "note: ", "unreachable": "warning: "}[status] + line
          + (" (after committing this release), then run `make publish`" if status == "missing" else ""))
    return 0


def publish(args) -> int:
    from autograder.course.publish import check_tag

    status, line = check_tag()
    if status == "missing":
        raise CourseError(line)
    print(("warning: " if status == "unreachable" else "") + line)
    return 0


def handout(args) -> int:
    from autograder.course.release import handout as write_handout

    for path in write_handout():
        print(f"wrote {path.relative_to(REPO)}")
    return 0


def formgrader(args) -> int:
    from autograder.course.formgrader import formgrader as start

    return start(Path(args.root), args.port)


def report(args) -> int:
    from autograder.reporting import report as class_report

    root = course_root(args.root)
    path = class_report.write(root, assignments())
    if path is None:
        raise CourseError(f"nothing graded in {shown(root)}: no grades/<assignment>.csv (run make grade first)")
    print(f"wrote {shown(path)}")
    return 0


def grade(args) -> int:
    from autograder.grading.driver import grade as grade_class
    from autograder.isolation import sandbox
    from autograder.reporting.results import GRADED
    from autograder.reporting.tables import table

    limits = None if args.trusted else sandbox.Limits(memory=int(args.memory * sandbox.GB), cpu_seconds=args.cpu_seconds)
    root = course_root(args.root)
    results = grade_class(root, args.student, args.assignment, args.jobs, progress=True, limits=limits,
                          scheduler=args.scheduler, force=args.force, budget=args.budget,
                          retrainings=args.retrainings)
    print()
    for assignment in sorted({r.assignment for r in results}):
        print(table(results, assignment))
        print()
    graded = [r for r in results if r.status == GRADED]
    waiting = sum(len(r.to_grade) for r in graded)
    print(f"grades:   {shown(root / 'grades')}/ (a CSV per assignment, and summary.csv)")
    print(f"feedback: {shown(root / 'feedback')}/<student>/<assignment>/")
    print(f"logs:     {shown(root / 'logs')}/")
    if (root / "grades" / "report.html").exists():
        print(f"report:   {shown(root / 'grades' / 'report.html')} (open it in a browser; make report writes it again)")
    if waiting:
        print(f"{count(waiting, 'answer')} of {count(len({r.student for r in graded}), 'student')} "
              f"wait{'s' if waiting == 1 else ''} for a grade by hand: "
              f"make formgrader{'' if root == AUTOGRADER else ' ROOT=' + shlex.quote(shown(root))}")
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=1))
    return 0


def _audit_arguments(audit: argparse.ArgumentParser) -> None:
    audit.add_argument("--assignment", help="audit only this assignment (default: all)")
    audit.add_argument("--function", action="append", help="audit only this function (repeat for more)")
    _root_argument(audit)
    audit.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                       help="mutants graded at once (default %(default)s)")
    audit.add_argument("--learning", action="store_true", help="also run the tests tagged slow (the learning test)")
    audit.add_argument("--sandbox", action="store_true",
                       help="run the mutants in the sandbox (default: without; they are the instructor's own code)")
    audit.add_argument("--write-baseline", action="store_true",
                       help="record every mutant's outcome in autograder/audit/baseline.json (for CI)")


def audit(args) -> int:
    from autograder import audit as mutation_audit

    names = assignments()
    if args.assignment and args.assignment not in names:
        raise CourseError(f"no assignment {args.assignment!r}: the assignments are {', '.join(names)}")
    chosen = [args.assignment] if args.assignment else names
    root = course_root(args.root)  # a wrong folder is said now, not after the mutants are graded

    def progress(outcome):
        what = "broken" if outcome.broken else "failed: " + " ".join(outcome.failed) if outcome.failed else "passed"
        print(f"  {outcome.id} ({outcome.seconds:.1f} s): {what}", flush=True)

    skipped: list[str] = []
    rows, seconds = mutation_audit.run(chosen, args.jobs, trusted=not args.sandbox, learning=args.learning,
                                       functions=set(args.function) if args.function else None, progress=progress,
                                       skipped=skipped)
    print("\n".join(skipped))
    print(mutation_audit.text_table(rows))
    survivors = [r for r in rows if r.status == mutation_audit.SURVIVED]
    for r in survivors:
        print(f"survives: {r.mutant.id}  {r.mutant.description}")
    csv_path, md_path = mutation_audit.write(rows, root / "grades", seconds, args.jobs)
    print(f"{len(rows)} mutants in {seconds:.0f} s; wrote {shown(csv_path)} and {shown(md_path)}")
    if args.write_baseline:
        mutation_audit.write_baseline(rows)
        print(f"wrote {shown(mutation_audit.BASELINE)}")
    return 0


COLLECT_EPILOG = """\
Moodle: the assignment's "View all submissions", Grading action "Download all submissions"
(folders, the default since Moodle 3.1). Canvas: the assignment's "Download Submissions".
People get the roster's ids (--roster, a CSV: id,name,email,lms_id; Moodle is matched by
full name, Canvas by its user id then by name), or, without a roster, ids made from their
names, recorded in ROOT/collected/people.csv. Nothing is written when the download is
refused (an entry outside its folder, a link, too large once unpacked, a zip in a zip in
it, a RAR or 7z, two notebooks that could each be the assignment, someone not on the
roster). A hand-in that changed replaces the one collected before, which is kept in
ROOT/collected/kept/; grading then grades again only the hand-ins that changed.

examples:
  python -m autograder collect ~/Downloads/RL-01-ddpg.zip --lms moodle --assignment 01-ddpg --root ~/rl
  python -m autograder collect submissions.zip --lms canvas --assignment 02-td3 --roster roster.csv
"""

EXPORT_EPILOG = """\
Reads ROOT/grades/<assignment>.csv (python -m autograder grade writes it) and what collect
recorded. Writes ROOT/grades/<lms>-<assignment>.csv (Moodle: the grading worksheet, for
"Upload grading worksheet"; Canvas: a gradebook import, for Grades > Import) and
ROOT/grades/<lms>-<assignment>-feedback.zip (Moodle: "Upload multiple feedback files in a
zip"; Canvas: "Re-Upload Submissions"). Refuses while answers wait for a grade by hand
(make formgrader), unless --partial. Hand-ins made through the portal take their people's
LMS ids from the roster given to portal tokens (kept in ROOT/collected/people.csv), or from
--roster; Moodle's number is each assignment's own ("Participant N" in its worksheet).
"""


def _lms_arguments(collect_parser: argparse.ArgumentParser, export_parser: argparse.ArgumentParser) -> None:
    from autograder.lms.formats import LMSES

    collect_parser.epilog, collect_parser.formatter_class = COLLECT_EPILOG, argparse.RawDescriptionHelpFormatter
    export_parser.epilog, export_parser.formatter_class = EXPORT_EPILOG, argparse.RawDescriptionHelpFormatter
    collect_parser.add_argument("archive", metavar="ARCHIVE", help="the zip downloaded from the LMS")
    for command in (collect_parser, export_parser):
        command.add_argument("--lms", required=True, choices=LMSES, help="the LMS the download comes from, or goes to")
        command.add_argument("--assignment", required=True, help="the assignment (01-ddpg, 02-td3, 03-experiment)")
        _root_argument(command)
    collect_parser.add_argument("--roster", type=Path, help="a CSV of the class: id,name,email,lms_id")
    collect_parser.add_argument("--unlisted", action="store_true",
                                help="collect people missing from the roster too, with ids made from their names")
    collect_parser.add_argument("--max-size", type=float, default=500,
                                help="the most MB the download may hold once unpacked (default %(default)g)")
    export_parser.add_argument("--partial", action="store_true",
                               help="export even though some answers still wait for a grade by hand")
    export_parser.add_argument("--roster", type=Path,
                               help="the LMS ids of the people who handed in through the portal, a CSV: id,name,"
                                    "email,lms_id (default: ROOT/collected/people.csv, which portal tokens fills)")
    export_parser.add_argument("--column", help="Canvas: the assignment's column, as in a gradebook export: "
                                                "'<title> (<id>)' (default: the assignment's name)")


def collect(args) -> int:
    from autograder.lms import collect as lms_collect

    root = course_root(args.root)
    rows = lms_collect.collect(root, Path(args.archive), args.lms, args.assignment, roster=args.roster,
                               unlisted=args.unlisted, max_bytes=int(args.max_size * 2**20))
    print(lms_collect.table(rows))
    where = "" if root == AUTOGRADER else f" --root {shlex.quote(shown(root))}"
    print(f"submissions: {shown(root / 'submitted')}/<student>/{args.assignment}/")
    print(f"next: python -m autograder grade{where} --assignment {args.assignment}")
    return 0


def export(args) -> int:
    from autograder.lms import export as lms_export

    root = course_root(args.root)
    for line in lms_export.export(root, args.lms, args.assignment, partial=args.partial, column=args.column,
                                  roster=args.roster):
        print(line)
    return 0


PORTAL_EPILOG = """\
Each student signs in to the portal with a link of their own, made from a token that only
its SHA-256 is kept of (in ROOT/portal/portal.sqlite): a link is printed once, when it is
made. Send each student theirs. A student who holds a token gets no new one until it is
revoked.

examples:
  python -m autograder portal tokens --root ~/rl --roster roster.csv --url https://grader.example.org/rl
  python -m autograder portal revoke ada-lovelace --root ~/rl     then tokens again: a new link for her
  python -m autograder portal tokens --instructor --root ~/rl --url https://grader.example.org/rl
                                            the instructor's link (the /instructor page), printed once
"""


def _portal_arguments(portal_parser: argparse.ArgumentParser) -> None:
    portal_parser.epilog, portal_parser.formatter_class = PORTAL_EPILOG, argparse.RawDescriptionHelpFormatter
    verbs = portal_parser.add_subparsers(dest="verb", metavar="VERB", required=True)
    tokens = verbs.add_parser("tokens", help="make a token for each student of the roster who has none, "
                                             "and print their sign-in links (once)")
    tokens.add_argument("--roster", type=Path,
                        help="a CSV of the class: id,name,email,lms_id (default: ROOT/collected/people.csv)")
    tokens.add_argument("--url", default="http://127.0.0.1:8000",
                        help="the portal's address as students reach it (default %(default)s)")
    tokens.add_argument("--instructor", action="store_true",
                        help="make the instructor's token instead (the /instructor page), and print its link once")
    revoke = verbs.add_parser("revoke", help="revoke a student's token: their link stops working")
    revoke.add_argument("student", metavar="STUDENT", nargs="?", help="the student's id (the roster's)")
    revoke.add_argument("--instructor", action="store_true", help="revoke the instructor's token instead")
    serve = verbs.add_parser("serve", help="start the portal: students hand in, it grades and shows the feedback")
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on (default %(default)s; "
                                                           "behind a reverse proxy that does TLS)")
    serve.add_argument("--port", type=int, default=8000, help="default %(default)s")
    serve.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1),
                       help="submissions graded at once on this machine (default %(default)s)")
    serve.add_argument("--scheduler", default=os.environ.get("SCHEDULER") or None,
                       help="a Dask cluster's scheduler, tcp://HOST:PORT (default: a local cluster of --jobs workers)")
    serve.add_argument("--per-hour", type=int, default=3,
                       help="gradings per student per assignment within an hour (default %(default)s)")
    for verb in (tokens, revoke, serve):
        _root_argument(verb)


def portal(args) -> int:
    import time

    from autograder.course import COLLECTED
    from autograder.isolation import inert
    from autograder.lms.collect import PEOPLE, merge_people, read_people
    from autograder.portal.store import Store

    root = course_root(args.root)
    if args.verb == "serve":
        from autograder.isolation import sandbox
        from autograder.portal.serve import serve
        from autograder.portal.store import Limit

        if args.per_hour < 1:
            raise CourseError(f"--per-hour {args.per_hour}: give at least 1")
        try:
            sandbox.check_available()
        except sandbox.SandboxUnavailable as error:
            raise CourseError(str(error)) from None
        serve(root, args.host, args.port, args.scheduler, args.jobs, sandbox.Limits(), Limit(args.per_hour, 3600))
        return 0
    if args.verb == "revoke" and args.instructor:
        print("revoked the instructor's token: its link no longer signs in" if Store.of(root).revoke_instructor()
              else "no instructor's token was held: nothing to revoke")
        return 0
    if args.verb == "revoke" and not args.student:
        raise CourseError("portal revoke: give the STUDENT whose token to revoke, or --instructor")
    if args.verb == "tokens" and args.instructor:
        token = Store.of(root).issue_instructor_token(now=time.time())
        if token is None:
            print("the instructor already holds a token (its link was printed when it was made): python -m "
                  "autograder portal revoke --instructor, then tokens --instructor again, makes a new one")
        else:
            print(f"instructor  {args.url.rstrip('/')}/instructor/signin/{token}  (shown only now: keep it secret)")
        return 0
    if args.verb == "revoke":
        db = Store.of(root)
        had = db.revoke(args.student)
        print(f"revoked {args.student}'s token: their link no longer signs in" if had
              else f"{args.student} held no token: nothing to revoke")
        return 0
    roster = args.roster or root / COLLECTED / PEOPLE
    if not Path(roster).exists():
        raise CourseError(f"no roster: give --roster a CSV of the class (id,name,email,lms_id), or collect a "
                          f"download first (it writes {shown(root / COLLECTED / PEOPLE)})")
    people = read_people(Path(roster))
    recorded = root / COLLECTED / PEOPLE
    if Path(roster).resolve() != recorded.resolve():
        merge_people(recorded, people)  # export finds the portal's students' LMS ids there
        print(f"recorded the roster's {len(people)} people (LMS ids for export) in {shown(recorded)}")
    db = Store.of(root)
    db.add_students([(p.id, p.name) for p in people])
    base = args.url.rstrip("/")
    held = 0
    for person in people:
        token = db.issue_token(person.id, now=time.time())
        if token is None:
            held += 1
        else:
            print(inert.text(f"{person.id}  {base}/signin/{token}  {person.name} <{person.email}>"))
    if held:
        print(f"{held} students already hold a token (its link was printed when it was made): "
              "python -m autograder portal revoke STUDENT, then tokens again, gives one a new link")
    if held < len(people):
        print(f"{len(people) - held} links above, each shown only now: send each student theirs")
    return 0
