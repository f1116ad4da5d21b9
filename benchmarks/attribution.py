"""What naming the function that stops a TD3 from learning costs: the sample class's TD3s
that fail the learning test, graded without retrainings and then with them, in one command.

    python benchmarks/attribution.py [--retrainings 4] [--jobs 2] [--only bug-two-functions,...]

Each run is ``python -m autograder grade --root DIR --assignment 02-td3 --jobs J
--retrainings N`` on a fresh course folder holding only those submissions (in the sandbox),
timed from the command's start to its end (Dask's start-up included). Prints both wall
times, their ratio, the worker-seconds the logs give ("graded in ... s"), and for each
submission the function its feedback names and its waves of retrainings (several swaps in
a wave: they ran at once on the engine). Writes bench-results/attribution.json.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))

import sample_class  # noqa: E402

FAILING = [s for s in sample_class.SAMPLES if s.assignment == sample_class.TD3 and s.culprit]


def grade(samples, retrainings: int, jobs: int) -> dict:
    root = REPO / "outputs" / f"bench-attribution-{retrainings}"
    shutil.rmtree(root, ignore_errors=True)
    for sample in samples:
        sample_class.write_sample(sample, root / "submitted")
    start = time.perf_counter()
    run = subprocess.run([sys.executable, "-m", "autograder", "grade", "--root", str(root.relative_to(REPO)),
                          "--assignment", sample_class.TD3, "--jobs", str(jobs), "--retrainings", str(retrainings)],
                         cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if run.returncode != 0:
        sys.exit(f"grading failed ({run.returncode}): {run.stderr[-2000:]}")
    worker = 0.0
    named = {}
    for sample in samples:
        log = (root / "logs" / f"{sample.student}-{sample_class.TD3}.log").read_text(errors="replace")
        worker += float(re.findall(r"graded in ([\d.]+) s", log)[-1])
        notebook = json.loads((root / "autograded" / sample.student / sample_class.TD3 /
                               f"{sample_class.TD3}.ipynb").read_text())
        info = next((o["metadata"]["attribution"] for c in notebook["cells"] for o in c.get("outputs", [])
                     if "attribution" in o.get("metadata", {})), None)
        named[sample.student] = info
    return {"wall": wall, "worker": worker, "named": named}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--retrainings", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated students of the sample class")
    args = parser.parse_args(argv)
    samples = [s for s in FAILING if not args.only or s.student in args.only.split(",")]
    print(f"{len(samples)} TD3 submissions that fail the learning test, --jobs {args.jobs}", flush=True)
    without = grade(samples, 0, args.jobs)
    print(f"--retrainings 0: {without['wall']:.1f} s ({without['worker']:.0f} worker-s by the logs)", flush=True)
    with_ = grade(samples, args.retrainings, args.jobs)
    print(f"--retrainings {args.retrainings}: {with_['wall']:.1f} s ({with_['worker']:.0f} worker-s by the logs)")
    for student, info in with_["named"].items():
        waves = " | ".join(", ".join(w) for w in (info or {}).get("waves", []))
        print(f"  {student}: {(info or {}).get('restored_by') or 'none named'}  (waves: {waves})")
    print(f"ratio: {with_['wall'] / without['wall']:.2f} (wall), +{(with_['wall'] - without['wall']) / len(samples):.0f} s "
          "per failing submission")
    out = REPO / "bench-results" / "attribution.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"retrainings": args.retrainings, "jobs": args.jobs, "without": without,
                               "with": with_}, indent=1))


if __name__ == "__main__":
    main()
