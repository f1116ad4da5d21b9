"""nbgrader configuration of the course (loaded by autograder/course.py, which fails
loudly if this file raises; nbgrader alone would only log a line and go on)."""

from pathlib import Path

c = get_config()  # noqa: F821 (provided by traitlets when the file is loaded)

HERE = Path(__file__).resolve().parent

c.CourseDirectory.root = str(HERE)
c.CourseDirectory.course_id = "ddpg-td3"
c.CourseDirectory.db_url = f"sqlite:///{HERE / 'gradebook.db'}"
# source/ is written by `make release` from ../solutions (never edited by hand)
c.CourseDirectory.source_directory = "source"
c.CourseDirectory.release_directory = "release"

# The stub that replaces each solution region in the student notebooks
c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"
c.ClearSolutions.enforce_metadata = True

# Students' notebooks keep no outputs in the release
c.ClearOutput.enabled = True

# Per-cell time limit while validating and grading. A fast-mode training run takes
# about 30 s on 2 cores (nbgrader's default limit is 30 s).
c.Execute.timeout = 300
