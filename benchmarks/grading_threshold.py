"""Sets the return threshold of the TD3 learning test from measured distributions.

    python benchmarks/grading_threshold.py [--seeds 20] [--workers 2] [--only reference,frozen-actor,random]
                                           [--write-reference]

Trains, with the configuration of the TD3 notebook's learning test
(``bbrl_course.checks.learning_check_config``) and seeds 1..N:

- ``reference``: the solution's TD3;
- ``frozen-actor``: the same TD3 whose actor is never updated (critics learn);
- ``random``: a policy of uniformly random actions (evaluated the same way).

and prints, for each evaluation point (every 1,000 steps), the distribution of
the best evaluation return so far (what the learning test checks), so that the
threshold can be put between the reference's worst seed and the others' best.
Figures go to bench-results/grading_threshold.json. ``--write-reference`` also writes
bbrl_course/learning_reference.json (the reference's band and the random policy's level
that the learning test's figure shows in the feedback, and the class report), from the
``reference`` and ``random`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
KINDS = ("reference", "frozen-actor", "random")


def _run(job) -> dict:
    kind, seed, steps = job
    import torch

    torch.set_num_threads(1)
    os.environ["BBRL_COURSE_OUTPUTS"] = tempfile.mkdtemp(prefix="threshold-")
    sys.path.insert(0, str(REPO))
    from bbrl_course import checks
    from bbrl_course.agents import UniformRandomActor
    from bbrl_course.nbload import load_notebook

    notebook = load_notebook(REPO / "solutions" / "02-td3.ipynb")
    # the learning test's own configuration, with this run's seed (and budget)
    cfg = checks.learning_check_config(notebook.params, stop=False)  # the best return of the whole run
    cfg.algorithm.seed = seed
    cfg.algorithm.max_steps = steps or checks.LEARNING_STEPS
    td3 = notebook.TD3(cfg)
    start = time.perf_counter()
    if kind == "frozen-actor":
        notebook.update_actor = lambda td3, batch: torch.zeros(())
    if kind == "random":
        low, high = td3.action_bounds()
        td3.eval_policy = UniformRandomActor(low, high)
        td3.nb_steps = 0
        for step in range(0, td3.cfg.algorithm.max_steps + 1, td3.cfg.algorithm.eval_interval):
            td3.nb_steps = step
            td3.evaluate(force=True)
    else:
        notebook.run_td3(td3)
    rows = (td3.base_dir / "evaluations.csv").read_text().splitlines()[1:]
    curve = [(int(r.split(",")[0]), float(r.split(",")[3])) for r in rows]
    return {"kind": kind, "seed": seed, "curve": curve, "seconds": time.perf_counter() - start}


def best_so_far(curve, steps):
    return max(mean for s, mean in curve if s <= steps)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: checks.LEARNING_STEPS)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default=",".join(KINDS))
    parser.add_argument("--write-reference", action="store_true",
                        help="write bbrl_course/learning_reference.json (needs the reference and random runs)")
    args = parser.parse_args(argv)
    kinds = args.only.split(",")
    jobs = [(kind, seed, args.steps) for kind in kinds for seed in range(1, args.seeds + 1)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        results = []
        for result in pool.map(_run, jobs):
            results.append(result)
            print(f"  {result['kind']:12} seed {result['seed']:2}: best {max(m for _, m in result['curve']):7.1f}"
                  f" in {result['seconds']:.0f} s", flush=True)
    print(f"\nAll runs: {time.perf_counter() - start:.0f} s\n")
    points = sorted({s for r in results for s, _ in r["curve"]})
    summary = {}
    print(f"{'kind':12} {'steps':>6} {'worst':>8} {'mean':>8} {'best':>8}  (best evaluation return so far, over seeds)")
    for kind in kinds:
        runs = [r for r in results if r["kind"] == kind]
        for steps in points:
            values = [best_so_far(r["curve"], steps) for r in runs if any(s <= steps for s, _ in r["curve"])]
            summary.setdefault(kind, {})[steps] = values
            print(f"{kind:12} {steps:6} {min(values):8.1f} {statistics.mean(values):8.1f} {max(values):8.1f}")
        print(f"{kind:12} seconds per run: {statistics.mean(r['seconds'] for r in runs):.0f}")
    out = REPO / "bench-results" / "grading_threshold.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"results": results, "summary": summary}, indent=1))
    print(f"\nwrote {out.relative_to(REPO)}")
    if args.write_reference:
        path = write_reference(results, args)
        print(f"wrote {path.relative_to(REPO)}")
    return 0


def write_reference(results: list[dict], args) -> Path:
    """bbrl_course/learning_reference.json: the reference's evaluation returns at each
    evaluation (lowest, median, highest over seeds), its best evaluation of a run, and the
    mean return of random actions."""
    reference = [r for r in results if r["kind"] == "reference"]
    random = [r for r in results if r["kind"] == "random"]
    if not reference or not random:
        raise SystemExit("--write-reference needs the runs of both reference and random (--only reference,random)")
    steps = sorted({s for r in reference for s, _ in r["curve"]})
    at = {s: [m for r in reference for t, m in r["curve"] if t == s] for s in steps}
    bests = [max(m for _, m in r["curve"]) for r in reference]
    figures = {
        "command": "python benchmarks/grading_threshold.py " + " ".join(sys.argv[1:]),
        "seeds": len(reference),
        "steps": steps,
        "low": [round(min(at[s]), 1) for s in steps],
        "median": [round(statistics.median(at[s]), 1) for s in steps],
        "high": [round(max(at[s]), 1) for s in steps],
        "best": {"low": round(min(bests), 1), "median": round(statistics.median(bests), 1),
                 "high": round(max(bests), 1)},
        "random": round(statistics.mean(m for r in random for _, m in r["curve"]), 1),
    }
    path = REPO / "bbrl_course" / "learning_reference.json"
    path.write_text(json.dumps(figures, indent=1) + "\n")
    return path


if __name__ == "__main__":
    sys.exit(main())
