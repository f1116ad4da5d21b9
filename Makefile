# The course kit's commands. Everything runs in a virtual environment, .venv,
# that `make setup` creates (idempotent: it reinstalls only when a requirements
# file changed).
#
#   make demo     set up, release the course, grade the sample class, print the grades, then collect
#                 the class's 01-ddpg from a Moodle download and export Moodle's worksheet
#   make release  regenerate notebooks/ (student versions) from solutions/
#   make publish  check that the repository holds the tag v<version> the notebooks install from
#   make grade    grade autograder/submitted/ (STUDENT=id, ASSIGNMENT=name to narrow, ROOT=another course folder,
#                 SCHEDULER=tcp://host:8786 a Dask cluster, FORCE=1 to grade unchanged submissions again)
#   make report   grades/report.html again (the class at a glance), from the last grading (ROOT= likewise)
#   make formgrader  JupyterLab with nbgrader's formgrader, to grade answers by hand (ROOT= likewise)
#   make test     set up, then run the test suite
#   make test-colab  the student notebooks in a simulated Colab, from their set-up cells
#   make bench    set up (with the benchmark extras), then run the benchmarks
#   make audit    the mutation audit: which plausible bugs of the solutions the tests miss (ASSIGNMENT=name to narrow)
#   make figure   run the experiment notebook in full, regenerate docs/bias-*.png (about 30 min)

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pip arguments for torch, e.g. an index of CPU wheels on a machine where
# PyPI's torch is the CUDA build.
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: setup test test-colab demo bench release publish handout grade report formgrader figure clean audit

# The course module's bytecode, written again where a source changed: with
# PYTHONDONTWRITEBYTECODE set (containers, CI machines) Python never writes it, and every
# process that imports it (each student's process, each kernel) compiles it again (0.12 CPU-s)
setup: $(STAMP)
	@$(PY) -m compileall -q bbrl_course

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# 1. the CPU build of torch, first, so that nothing pulls a CUDA build
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) torch==2.13.0
	@# 2. bbrl without the dependencies it declares but never imports
	$(PY) -m pip install --quiet --no-deps -r requirements-nodeps.txt
	@# 3. bbrl's real dependencies, the grading and test tools, the course's module
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $@

$(BENCH_STAMP): $(STAMP) requirements-bench.txt
	$(PY) -m pip install --quiet -r requirements-bench.txt
	@touch $@

# Two test processes (pytest-xdist), each taking whole files, the slowest first (tests/conftest.py):
# the cores one file leaves idle while it waits (for a cluster, a server, a browser) go to the other.
# Time limits in grading count CPU time, so the two sharing the cores changes no grade.
TEST_JOBS ?= 2

test: setup
	$(PY) -m pytest -n $(TEST_JOBS) --dist loadfile --no-loadscope-reorder

# The student notebooks as in Colab (tests/test_colab.py): a fresh environment with
# Colab's preinstalls, each notebook run from its set-up cell
test-colab: setup
	$(PY) -m pytest -n 0 -m colab tests/test_colab.py

# The sample class of tests/sample_class.py (solutions, bugs, bad inputs), graded in a
# course folder of its own: outputs/demo-course/ (grades/, feedback/, logs/). The class's
# hand-ins are written again each time, and grading grades only what changed since the last
# run: a submission, its assignment, the grader or the course module (`make test` leaves the
# class it graded there, so a demo after it grades nothing again; FRESH=1 grades it all)
DEMO := outputs/demo-course

demo: setup
	$(PY) -m autograder release
	$(if $(FRESH),rm -rf $(DEMO))
	$(PY) tests/sample_class.py $(DEMO)
	$(PY) -m autograder grade --root $(DEMO)
	$(PY) tests/sample_class.py check $(DEMO)
	@# the loop through an LMS: the class's 01-ddpg hand-ins as Moodle's download gives them,
	@# collected (unchanged: nothing is graded again), then Moodle's worksheet and feedback zip
	$(PY) tests/sample_class.py moodle $(DEMO)
	$(PY) -m autograder collect $(DEMO)/moodle-01-ddpg.zip --lms moodle --assignment 01-ddpg --root $(DEMO) --roster $(DEMO)/roster.csv
	$(PY) -m autograder grade --root $(DEMO) --assignment 01-ddpg
	$(PY) -m autograder export --lms moodle --assignment 01-ddpg --root $(DEMO) --partial

# Grades the submissions in autograder/submitted/<student>/<assignment>/ (or ROOT=folder)
grade: setup
	$(PY) -m autograder grade $(if $(ROOT),--root "$(ROOT)") $(if $(STUDENT),--student "$(STUDENT)") $(if $(ASSIGNMENT),--assignment "$(ASSIGNMENT)") $(if $(SCHEDULER),--scheduler "$(SCHEDULER)") $(if $(FORCE),--force)

# The class report, grades/report.html (scores, pass rates, frequent failures, statuses,
# learning test), written again from the course folder (or ROOT=folder) without grading
report: setup
	$(PY) -m autograder report $(if $(ROOT),--root "$(ROOT)")

# JupyterLab with nbgrader's formgrader on the course folder (or ROOT=folder), on 127.0.0.1:
# grade the answers by hand; the next `make grade` puts their points in the CSVs
formgrader: setup
	$(PY) -m autograder formgrader $(if $(ROOT),--root "$(ROOT)")

# The student notebooks (notebooks/) and the README's Colab links, from solutions/
release: setup
	$(PY) -m autograder release

# Before telling students: checks that the repository holds the tag v<version> that the
# notebooks' set-up cells install the course module from (refuses when it does not;
# says it skipped the check when the repository cannot be reached)
publish: setup
	$(PY) -m autograder publish

# The solutions without hidden tests, for after the deadline (outputs/handout/)
handout: setup
	$(PY) -m autograder handout

# The mutation audit (autograder/audit/): every mutant of every student function graded by the
# judge; tables on screen, grades/audit.csv and grades/audit.md in the course folder (ROOT=)
audit: setup
	$(PY) -m autograder audit $(if $(ROOT),--root "$(ROOT)") $(if $(ASSIGNMENT),--assignment "$(ASSIGNMENT)")

bench: $(BENCH_STAMP)
	$(PY) benchmarks/grading.py
	$(PY) benchmarks/learning.py

# The experiment's results, report and figures (docs/), from a full run of the solution
# notebook 03-experiment with the solution DDPG and TD3, and the ablation (28.5 min on 2 cores); the
# figures are drawn from the results file by the notebook's own plot_experiment
FIGURE_RUN := outputs/figure
figure: setup
	rm -rf $(FIGURE_RUN)
	BBRL_COURSE_NOTEBOOKS=$(CURDIR)/solutions $(PY) -m autograder.course.run_notebooks --timeout -1 --outputs $(FIGURE_RUN) solutions/03-experiment.ipynb
	mkdir -p docs
	cp $(FIGURE_RUN)/03-experiment/03-experiment-results.npz docs/experiment-results.npz
	$(PY) -m bbrl_course.experiment docs/experiment-results.npz --figures docs | tee docs/experiment-results.txt

clean:
	rm -rf outputs .pytest_cache
