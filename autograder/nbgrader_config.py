"""nbgrader configuration of the course (loaded by autograder/course/config.py, which fails
loudly if this file raises; nbgrader alone would only log a line and go on)."""

import sys
from pathlib import Path

import nbformat

c = get_config()  # noqa: F821 (provided by traitlets when the file is loaded)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # the course's preprocessors, in autograder/course/preprocessors.py

from autograder.isolation import inert  # noqa: E402
from autograder.course.preprocessors import CourseExecute, HideHiddenTests, JudgeVerdicts, StderrToStdout  # noqa: E402
from nbconvert.preprocessors import ClearMetadataPreprocessor, CSSHTMLHeaderPreprocessor  # noqa: E402
from nbgrader.preprocessors import (  # noqa: E402
    AssignLatePenalties,
    CheckCellMetadata,
    GetGrades,
    IgnorePattern,
    LimitOutput,
    SaveAutoGrades,
)

c.CourseDirectory.root = str(HERE)
c.CourseDirectory.course_id = "ddpg-td3"
c.CourseDirectory.db_url = f"sqlite:///{HERE / 'gradebook.db'}"
# source/ is written by `make release` from ../solutions (never edited by hand)
c.CourseDirectory.source_directory = "source"
# nbgrader's exchange (JupyterHub's release and collect), unused here: inside the course
# folder, so that formgrader does not complain about a system folder it cannot write
c.Exchange.root = str(HERE / "exchange")
c.CourseDirectory.release_directory = "release"

# The stub that replaces each solution region in the student notebooks
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.enforce_metadata = True

# Students' notebooks keep no outputs in the release
c.ClearOutput.enabled = True

# A test cell deleted by a student (or stripped of its metadata) is put back and run;
# without this, nbgrader would count it as passed
c.OverwriteCells.add_missing_cells = True

# Which cells the grader skips or gives more time, from the tags of the solution
# notebooks (the instructor's files: a student cannot change them):
# - `run`: training runs, plots and videos for the student, not run when grading
#   (run, with the slow time limit, when validating);
# - `slow`: cells that train on purpose (the TD3 learning test).
_tags = {}
for _path in sorted((REPO / "solutions").glob("*.ipynb")):
    for _cell in nbformat.read(str(_path), as_version=4).cells:
        _id = _cell.metadata.get("nbgrader", {}).get("grade_id")
        for _tag in _cell.metadata.get("tags", []):
            if _id:
                _tags.setdefault(_tag, []).append(_id)
c.CourseExecute.skip_cells = _tags.get("run", [])
c.CourseExecute.slow_cells = _tags.get("slow", []) + _tags.get("run", [])

# Time limits per cell: 30 s (nbgrader's default; a test cell takes 3 s at most), and
# 180 s for the slow cells (the learning test trains for about 75 s on 2 cores). A cell
# over its limit is interrupted and scores 0.
c.Execute.timeout = 30
c.CourseExecute.slow_timeout = 180

# Grading: the course's Execute (the student's cells; the test cells run in the judge,
# autograder/isolation/judge.py, when the grader gives its verdicts), the judge's outputs in the
# test cells, then stderr moved to stdout (nbgrader gives 0 to a graded cell that wrote
# anything to stderr, a warning or a progress bar included)
c.Autograde.autograde_preprocessors = [
    CourseExecute,
    JudgeVerdicts,
    StderrToStdout,
    IgnorePattern,
    ClearMetadataPreprocessor,
    LimitOutput,
    SaveAutoGrades,
    AssignLatePenalties,
    CheckCellMetadata,
]

# Feedback shows neither the hidden tests nor tracebacks that would quote them
c.GenerateFeedback.preprocessors = [GetGrades, HideHiddenTests, inert.SanitizeOutputs, CSSHTMLHeaderPreprocessor]

# Every page made from a student's notebook (the feedback, formgrader's views of a
# submission: both render with nbconvert's HTMLExporter and this configuration) runs none
# of its markup (autograder/isolation/inert.py): no Javascript output, HTML outputs and markdown
# cleaned (no script, no event handler, no javascript: link, images from data: only)
c.HTMLExporter.sanitize_html = True
c.HTMLExporter.preprocessors = [inert.SanitizeOutputs]
c.HTMLExporter.filters = {"clean_html": inert.clean_html, "strip_files_prefix": inert.strip_files_prefix}
