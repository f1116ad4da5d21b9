"""The fork server's imports (``autograder.grading.zygote.PRELOAD``) cover what a grading
imports lazily: a judge forked from it pays no import while it runs the tests. One
subprocess (the server's imports, about 5 s), no grading."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

#: a judge's work on a DDPG update test, after the fork server's imports: the reference of
#: the update step (the course's stand-in DDPG, with its optimizers); the modules it imported
AFTER_PRELOAD = """
import json, os, sys
os.environ["MPLBACKEND"] = "Agg"
from autograder.grading import zygote
for name in zygote.PRELOAD:
    __import__(name)
import nbformat
notebook = nbformat.read("solutions/01-ddpg.ipynb", as_version=4)
params = {}
exec(next(c.source for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "ddpg-params"),
     params)
from bbrl_course import checks
before = set(sys.modules)
checks.ddpg_reference(checks.tiny_config(params["params"]))
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_a_judge_imports_nothing_more_for_an_update_test():
    # torch imports torch._dynamo (2 CPU-seconds) on the first optimizer built: preloaded
    run = subprocess.run([sys.executable, "-c", AFTER_PRELOAD], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    imported = json.loads(run.stdout.strip().splitlines()[-1])
    assert imported == [], f"imported during the test, not by the fork server: {imported[:20]} ({len(imported)})"
