"""What saving each run of the experiment as it ends costs, and what a rerun after a
disconnect costs besides the runs that were in progress (issue 25).

    python benchmarks/experiment_resume.py

1. The runs file at the full experiment's size (20 runs: Pendulum-v1 16 evaluations x 5
   episodes x 428 steps, LunarLanderContinuous-v3 13 x 5 x 1459), saved run by run as
   ``run_experiment`` does: the size of the file and the slowest save; then reading the
   10 LunarLander runs back, as a rerun does.
2. The check run of each algorithm that a rerun with missing runs makes first (the
   solutions' DDPG and TD3, in this process).
"""

from __future__ import annotations

import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent


def saves() -> None:
    from bbrl_course.experiment import Run, _saved_runs, save_run, tail_steps

    sizes = {"Pendulum-v1": (16, 5, 200 + tail_steps(0.98)),
             "LunarLanderContinuous-v3": (13, 5, 1000 + tail_steps(0.99))}
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "runs.npz"
        slowest = 0.0
        for env, (e, n, t) in sizes.items():
            for label in ("DDPG", "TD3"):
                for seed in range(1, 6):
                    run = Run(label, seed, env, np.arange(e) * 1000, rng.normal(size=(e, 10)),
                              rng.normal(size=(e, n, t)).astype(np.float32), rng.normal(size=(e, n, t)),
                              rng.random((e, n, t)) < 0.5, made_by={"label": label, "seed": seed})
                    start = time.perf_counter()
                    save_run(path, run)
                    slowest = max(slowest, time.perf_counter() - start)
        print(f"runs file of 20 runs: {path.stat().st_size / 1e6:.1f} MB; slowest save of a run {slowest:.2f} s")
        start = time.perf_counter()
        found = _saved_runs(path, "LunarLanderContinuous-v3")
        print(f"reading its {len(found)} LunarLander runs back: {time.perf_counter() - start:.2f} s")


def checks() -> None:
    from bbrl_course.experiment import Algorithm, check_algorithm
    from bbrl_course.nbload import load_notebook

    solutions = REPO / "solutions"
    with contextlib.redirect_stdout(io.StringIO()):
        notebook = load_notebook(solutions / "03-experiment.ipynb")
    algorithms = [Algorithm("DDPG", str(solutions / "01-ddpg.ipynb"), "DDPG", "run_ddpg"),
                  Algorithm("TD3", str(solutions / "02-td3.ipynb"), "TD3", "run_td3")]
    for env_name in ("Pendulum-v1", "LunarLanderContinuous-v3"):
        for algorithm in algorithms:
            start = time.perf_counter()
            check_algorithm(algorithm, notebook.config_for(env_name, fast=False))
            print(f"{env_name} {algorithm.label}: check run {time.perf_counter() - start:.1f} s")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as outputs:
        os.environ["BBRL_COURSE_OUTPUTS"] = outputs
        saves()
        checks()
    sys.exit(0)
