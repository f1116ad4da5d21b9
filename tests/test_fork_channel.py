"""Without a sandbox (``--trusted``, the mutation audit), a judge that has only imported
forks its first student's process (``judge.fork_channel``) instead of starting Python anew:
the child starts with torch and the course module imported. It must be what ``python
channel.py`` is to the student's code and to the judge: its own session, no descriptor but
its pipes, a copy of the submission as working directory, the channel as ``__main__``.
One subprocess, which is such a judge (pytest's own process has threads: it never forks)."""

from __future__ import annotations

import json
import subprocess
import sys

from conftest import REPO

#: what the student's code sees of its process, asked by the judge
FACTS = '''
import os, sys
def facts():
    return {"descriptors": sorted(int(f) for f in os.listdir("/proc/self/fd"))[:3],
            "descriptor_count": len(os.listdir("/proc/self/fd")),
            "session_leader": os.getsid(0) == os.getpid(),
            "channel_is_main": hasattr(sys.modules["__main__"], "Server"),
            "in_a_copy": os.path.exists("notebook.ipynb") and os.getcwd() != FOLDER,
            "judge_module_here": "autograder.isolation.judge" in sys.modules}
'''

#: a judge as the fork server's child is one (imported, never computed, one thread), which
#: starts a student's process with fork=True then fork=False, and once with a thread alive
JUDGE = '''
import json, sys, threading, time
from pathlib import Path
import torch, bbrl_course.checks  # noqa: F401  imported, never computed
from autograder.isolation import judge
folder = Path(sys.argv[1])
(folder / "notebook.ipynb").write_text("{}")
cells = [["facts", sys.argv[2].replace("FOLDER", repr(str(folder)))]]

def started(fork):
    student = judge.StudentProcess(folder, cells, ["facts"], None, cell_timeout=30, fork=fork)
    grader = judge.Judge(student, ["facts"], 30, {})
    grader.ensure_started()
    grader.deadline = time.monotonic() + 60
    facts = grader.namespace["facts"]()
    facts["cpu"] = student.cpu_seconds()
    student.stop()
    return facts

found = {"forked": started(True), "started anew": started(False)}
stop = threading.Event()
thread = threading.Thread(target=stop.wait)
thread.start()
found["forked, a thread alive"] = started(True)
stop.set()
print(json.dumps(found))
'''


def test_a_forked_students_process_is_one_started_anew_with_its_imports_done(tmp_path):
    run = subprocess.run([sys.executable, "-c", JUDGE, str(tmp_path), FACTS], cwd=REPO, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    found = json.loads(run.stdout.strip().splitlines()[-1])
    forked, anew, threaded = found["forked"], found["started anew"], found["forked, a thread alive"]
    assert forked["judge_module_here"] and not anew["judge_module_here"], found
    # a process with threads never forks: a thread's locks would stay taken in the child
    assert not threaded["judge_module_here"], found
    for name in ("descriptors", "descriptor_count", "session_leader", "channel_is_main", "in_a_copy"):
        assert forked[name] == anew[name], (name, found)
    assert forked["descriptors"] == [0, 1, 2] and forked["session_leader"] and forked["channel_is_main"], forked
    assert forked["in_a_copy"], forked
    # what it is for: Python's start and the imports (torch, the course module) are not paid again
    assert forked["cpu"] < anew["cpu"] / 3, found
