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
- probe-memory: allocates 6 GB (the sandbox allows 4) in compute_actor_loss;
- probe-fork: forks 200 processes that sleep 20 s (the sandbox allows 64) in
  soft_update_params;
- probe-disk: writes one file of up to 512 MB (files are limited to 256 MB), then files
  of 32 MB up to 1 GB in all (the working directory holds 512 MB), and removes them; then
  leaves a small file in its working directory (a copy of its folder, in the sandbox).
"""

from __future__ import annotations

from pathlib import Path

from sample_class import DDPG, Edit, Sample, write_sample

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
    print("probe other student: refused", type(_error).__name__)'''
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
        Sample("ddpg-solution", DDPG, "the student whose files probe-write attacks"),
        Sample("probe-read", DDPG, "reads the solutions, the hidden tests, the gradebook", edits=[_top(read)]),
        Sample("probe-write", DDPG, "writes the gradebook and another student's notebook", edits=[_top(write)]),
        Sample("probe-network", DDPG, "connects to a server on 127.0.0.1", edits=[_top(network)]),
        Sample("probe-memory", DDPG, "allocates 6 GB in compute_actor_loss", loses=("test_actor_loss",), edits=[
            Edit("ddpg-actor-loss", "    return -q_values.mean()",
                 "    _hog = b'\\x01' * (6 * 2**30)\n    del _hog\n    return -q_values.mean()")]),
        Sample("probe-fork", DDPG, "forks 200 processes in soft_update_params", loses=SOFT_UPDATE,
               notes=("test_soft_update_value: the sandbox stopped the kernel", "more than 64 processes"), edits=[
            Edit("ddpg-soft-update", "    with torch.no_grad():\n",
                 "    import os, time\n"
                 "    for _ in range(200):\n"
                 "        if os.fork() == 0:\n"
                 "            time.sleep(20)\n"
                 "            os._exit(0)\n"
                 "    with torch.no_grad():\n")]),
        Sample("probe-disk", DDPG, "fills the disk", edits=[_top(disk)]),
    ]


def write_hostile_class(root: Path, repo: Path, port: int) -> list[Sample]:
    samples = probes(root, repo, port)
    for sample in samples:
        write_sample(sample, Path(root) / "submitted")
    return samples
