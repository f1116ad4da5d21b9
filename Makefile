# The course kit's commands. Everything runs in a virtual environment, .venv,
# that `make setup` creates (idempotent: it reinstalls only when a requirements
# file changed).
#
#   make demo     set up, release the course, run the solutions in fast mode
#   make release  regenerate notebooks/ (student versions) from solutions/
#   make test     set up, then run the test suite
#   make bench    set up (with the benchmark extras), then run the benchmarks

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
# Extra pip arguments for torch, e.g. an index of CPU wheels on a machine where
# PyPI's torch is the CUDA build.
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.installed-bench

.PHONY: setup test demo bench release handout clean

setup: $(STAMP)

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

test: setup
	$(PY) -m pytest

demo: setup
	$(PY) -m autograder release
	$(PY) autograder/run_notebooks.py --fast solutions/*.ipynb

# The student notebooks (notebooks/) and the README's Colab links, from solutions/
release: setup
	$(PY) -m autograder release

# The solutions without hidden tests, for after the deadline (outputs/handout/)
handout: setup
	$(PY) -m autograder handout

bench: $(BENCH_STAMP)
	$(PY) benchmarks/learning.py

clean:
	rm -rf outputs .pytest_cache
