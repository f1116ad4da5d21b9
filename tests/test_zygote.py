"""The fork server's imports (``autograder.grading.zygote.preload``) cover what a grading
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
zygote.preload()
import nbformat
notebook = nbformat.read("solutions/01-ddpg.ipynb", as_version=4)
params = {}
exec(next(c.source for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "ddpg-params"),
     params)
from bbrl_course import checks
before = set(sys.modules)
checks.ddpg_reference(checks.tiny_config(params["params"]))
print(json.dumps(sorted(set(sys.modules) - before)))
print(json.dumps("torch._dynamo" in sys.modules))
"""


def test_a_judge_imports_nothing_more_for_an_update_test():
    # torch.optim would import torch._dynamo (0.9 CPU-seconds) on the first step: spared
    run = subprocess.run([sys.executable, "-c", AFTER_PRELOAD], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    imported, dynamo = (json.loads(line) for line in run.stdout.strip().splitlines()[-2:])
    assert imported == [], f"imported during the test, not by the fork server: {imported[:20]} ({len(imported)})"
    # nor by the fork server: torch.optim runs without it (0.9 CPU-seconds in every server)
    assert not dynamo, "torch._dynamo imported by the fork server or the judge's reference"


#: the fork server's preparation, then a DDPG notebook's feedback page rendered as a grading
#: process renders it (the kernel's language_info, nbgrader's feedback template); the
#: modules that render imported, and the server's threads
AFTER_PREPARE = """
import json, os, sys, threading
os.environ["MPLBACKEND"] = "Agg"
from autograder.grading import zygote
zygote.prepare()
threads = threading.active_count()
import copy, nbformat
notebook = nbformat.read("solutions/01-ddpg.ipynb", as_version=4)
notebook.metadata["language_info"] = zygote._WARM_UP_NOTEBOOK["metadata"]["language_info"]
for cell in notebook.cells:  # as nbgrader's GetGrades leaves them
    meta = cell.metadata.get("nbgrader", {})
    if meta.get("grade") or meta.get("task"):
        meta.update(score=0.0, points=meta.get("points", 0), comment=None)
before = set(sys.modules)
zygote.feedback_exporter().from_notebook_node(notebook, copy.deepcopy(zygote.WARM_UP_RESOURCES))
print(json.dumps({"threads": threads, "imported": sorted(set(sys.modules) - before)}))
"""


def test_a_grading_process_renders_its_feedback_with_nothing_more_to_import():
    # the first feedback page of a process imports IPython's lexers and more (0.5 CPU-s):
    # the server renders one before it forks, and starts no thread doing so
    run = subprocess.run([sys.executable, "-c", AFTER_PREPARE], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["threads"] == 1
    assert found["imported"] == [], f"imported by the first page: {found['imported'][:20]} ({len(found['imported'])})"


#: ``python -m autograder``'s first imports, then nbformat (what every grading process, driver,
#: worker and fork server imports), then jsonschema's check of an IRI
NBFORMAT_IMPORT = """
import json, sys, time
start = time.process_time()
import autograder, nbformat
seconds = time.process_time() - start
stand_in = sys.modules["rfc3987_syntax"]
import jsonschema
checker = jsonschema.FormatChecker()
checks = [checker.conforms("https://example.org/a", "iri"), checker.conforms("::not an iri", "iri")]
print(json.dumps({"seconds": seconds, "deferred": getattr(stand_in, "__file__", None) is None, "checks": checks,
                  "real": getattr(sys.modules["rfc3987_syntax"], "__file__", None) is not None}))
"""


def test_importing_nbformat_compiles_no_iri_grammar_until_one_is_checked():
    # jsonschema imports rfc3987_syntax (39 lark grammars compiled: 1.1 CPU-s) with itself: the
    # grader defers it to its first use, and the IRI checks stay those of the real module
    run = subprocess.run([sys.executable, "-c", NBFORMAT_IMPORT], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    assert found["deferred"], "importing nbformat after autograder imported rfc3987_syntax itself"
    assert found["checks"] == [True, False] and found["real"], found
    assert found["seconds"] < 0.8, f"import autograder, nbformat took {found['seconds']:.2f} CPU-s"


#: a student's optimizers as the student's process runs them (its set-up replaces torch.optim's
#: wrappers: autograder/isolation/channel.py spare_dynamo), or as torch has them; then, with
#: "late", after the student's own code imported torch._dynamo
OPTIMIZERS = """
import json, sys
sys.path.insert(0, "autograder/isolation")
import torch
mode = sys.argv[1]
replaced = 0
if mode != "torch":
    import channel
    replaced = channel.spare_dynamo(torch)
if mode == "late":
    import torch._dynamo
torch.manual_seed(0)
sums = []
for kind in (torch.optim.Adam, torch.optim.SGD, torch.optim.AdamW, torch.optim.RMSprop):
    layer = torch.nn.Linear(3, 2)
    optimizer = kind(layer.parameters(), lr=0.1)
    for _ in range(3):
        optimizer.zero_grad()
        layer(torch.randn(4, 3)).pow(2).sum().backward()
        optimizer.step()
    optimizer.load_state_dict(optimizer.state_dict())
    sums.append([p.detach().sum().item() for p in layer.parameters()])
print(json.dumps({"sums": sums, "dynamo": "torch._dynamo" in sys.modules, "replaced": replaced,
                  "grad": torch.is_grad_enabled()}))
"""


def test_the_students_optimizers_step_as_torchs_without_importing_dynamo():
    # torch.optim imports torch._dynamo (1 CPU-second) at the first step, zero_grad or state_dict
    def run(mode):
        done = subprocess.run([sys.executable, "-c", OPTIMIZERS, mode], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    torchs, spared, late = run("torch"), run("spared"), run("late")
    assert torchs["dynamo"] and not spared["dynamo"], (torchs, spared)
    assert spared["replaced"] > 10, spared["replaced"]
    assert spared["sums"] == torchs["sums"] == late["sums"]  # the same steps, to the bit
    assert spared["grad"] and late["grad"] and late["dynamo"]


def _compiled_from_source(env) -> list[str]:
    """The course module's files that a new process importing it compiles from their source."""
    run = subprocess.run([sys.executable, "-v", "-c", "import bbrl_course.checks"], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    return [line for line in run.stderr.splitlines()
            if line.startswith("# code object from") and "bbrl_course" in line and not line.endswith(".pyc'")]


def test_the_fork_server_writes_the_course_modules_bytecode_that_no_process_writes():
    # with PYTHONDONTWRITEBYTECODE (containers, CI machines), no import writes bytecode, and the
    # sandbox could not: each student's process would compile bbrl_course again (0.12 CPU-s)
    import os

    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", MPLBACKEND="Agg")
    cache = REPO / "bbrl_course" / "__pycache__"
    for pyc in cache.glob("*.pyc"):
        pyc.unlink()
    assert _compiled_from_source(env), "the test must start without the course module's bytecode"
    run = subprocess.run([sys.executable, "-c", "from autograder.grading import zygote; zygote.prepare()"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _compiled_from_source(env) == []
    assert {p.stem for p in (REPO / "bbrl_course").glob("*.py")} == {p.name.split(".")[0] for p in cache.glob("*.pyc")}
