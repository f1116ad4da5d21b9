"""Learning benchmark: the course's TD3 and DDPG against stable-baselines3's TD3.

    python benchmarks/learning.py [--seeds 8] [--steps 15000] [--workers 2] [--only td3,ddpg,sb3-td3]
    python benchmarks/learning.py --seeds 8 --only td3,td3+env-actions,td3+alternate,sb3-td3

All three learn Pendulum-v1 with the same budget and the same settings (learning
from step 1,000, one gradient step per environment step, batch 256, networks
128-128, γ = 0.98, τ = 0.005, Adam 1e-3, Gaussian exploration 0.1, TD3's policy
delay 2 and target noise 0.2 clipped at 0.5), and are evaluated the same way:
every 500 steps, the mean return of 10 episodes of the deterministic policy.
The course's algorithms are loaded from the solution notebooks themselves.

Each run uses one thread; runs go in parallel over ``--workers`` processes. It
prints, per algorithm, the environment steps and the wall time until the mean
evaluation return first reaches -400 and -200, the final return, the updates
per second, then the ratios of the course's TD3 to stable-baselines3's. The
figures are also written to bench-results/learning.json.
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
THRESHOLDS = (-400, -200)
#: "after convergence": the evaluations from this many steps on; a dip: an evaluation below DIP
CONVERGED, DIP = 8_000, -300
EVAL_INTERVAL = 500
NB_EVALS = 10


#: variants of the course's TD3 (``--only td3+alternate``), one difference from stable-baselines3 each
VARIANTS = {
    # one environment step, then one update, as stable-baselines3 (train_freq=1): rollouts of 2
    # time steps, one new transition each, instead of 32 transitions then 32 updates
    "alternate": {"n_steps": 2},
    # the environment's own action range ([-2, 2] for the pendulum), as the course was before
    # issue 15: the critics see actions in [-2, 2], where stable-baselines3's see [-1, 1]
    "env-actions": {},
}


def _env_actions():
    """The course's environments keep their own action range (``bbrl_course.envs.RESCALE``)."""
    import bbrl_course.envs as envs

    envs.RESCALE = False


def _course_run(algo: str, seed: int, steps: int) -> dict:
    import torch

    torch.set_num_threads(1)
    os.environ["BBRL_COURSE_OUTPUTS"] = tempfile.mkdtemp(prefix="bench-")
    os.environ.pop("BBRL_COURSE_FAST", None)
    sys.path.insert(0, str(REPO))
    from bbrl_course import make_config
    from bbrl_course.nbload import load_notebook

    base, _, variant = algo.partition("+")
    notebook = load_notebook(REPO / "solutions" / ("02-td3.ipynb" if base == "td3" else "01-ddpg.ipynb"))
    params = notebook.params
    params["plot_agents"] = False
    params["verbose"] = False
    params["algorithm"].update(seed=seed, max_steps=steps, eval_interval=EVAL_INTERVAL, nb_evals=NB_EVALS)
    for name in filter(None, variant.split("+")):
        params["algorithm"].update(VARIANTS[name])
        if name == "env-actions":
            _env_actions()
    cfg = make_config(params)
    agent = notebook.TD3(cfg) if base == "td3" else notebook.DDPG(cfg)
    start = time.perf_counter()
    (notebook.run_td3 if base == "td3" else notebook.run_ddpg)(agent)
    seconds = time.perf_counter() - start
    rows = (agent.base_dir / "evaluations.csv").read_text().splitlines()[1:]
    curve = [(int(r.split(",")[0]), float(r.split(",")[3]), float(r.split(",")[2])) for r in rows]
    return {"algo": algo, "seed": seed, "curve": curve, "updates": agent.nb_updates, "seconds": seconds}


def _sb3_run(seed: int, steps: int) -> dict:
    import gymnasium as gym
    import numpy as np
    import torch
    from stable_baselines3 import TD3
    from stable_baselines3.common.callbacks import BaseCallback
    from stable_baselines3.common.noise import NormalActionNoise

    torch.set_num_threads(1)
    eval_env = gym.make("Pendulum-v1")

    def evaluate(model, round_):
        returns = []
        for episode in range(NB_EVALS):
            obs, _ = eval_env.reset(seed=10_000 * (seed + 1) + 100 * round_ + episode)
            done, total = False, 0.0
            while not done:
                action, _ = model.predict(obs, deterministic=True)
                obs, reward, terminated, truncated, _ = eval_env.step(action)
                total += reward
                done = terminated or truncated
            returns.append(total)
        return float(np.mean(returns))

    class Evaluate(BaseCallback):
        def __init__(self):
            super().__init__()
            self.curve, self.start, self.last = [], time.perf_counter(), None

        def _on_step(self):
            steps_done = self.num_timesteps
            if self.last is None or steps_done - self.last >= EVAL_INTERVAL or steps_done == steps:
                self.last = steps_done
                self.curve.append((steps_done, evaluate(self.model, len(self.curve)), time.perf_counter() - self.start))
            return True

    env = gym.make("Pendulum-v1")
    model = TD3(
        "MlpPolicy",
        env,
        learning_rate=1e-3,
        buffer_size=1_000_000,
        learning_starts=1_000,
        batch_size=256,
        tau=0.005,
        gamma=0.98,
        train_freq=1,
        gradient_steps=1,
        action_noise=NormalActionNoise(np.zeros(1), 0.1 * np.ones(1)),
        policy_delay=2,
        target_policy_noise=0.2,
        target_noise_clip=0.5,
        policy_kwargs={"net_arch": [128, 128]},
        seed=seed,
        device="cpu",
    )
    callback = Evaluate()
    start = time.perf_counter()
    model.learn(total_timesteps=steps, callback=callback)
    seconds = time.perf_counter() - start
    updates = max(0, steps - 1_000)
    return {"algo": "sb3-td3", "seed": seed, "curve": callback.curve, "updates": updates, "seconds": seconds}


def run(job):
    algo, seed, steps = job
    return _sb3_run(seed, steps) if algo == "sb3-td3" else _course_run(algo, seed, steps)


def first_reaching(curve, threshold):
    """(steps, seconds) of the first evaluation whose mean return is >= threshold, or None."""
    for steps, mean, seconds in curve:
        if mean >= threshold:
            return steps, seconds
    return None


def summarize(results, algo, steps_budget):
    runs = [r for r in results if r["algo"] == algo]
    row = {"algo": algo, "seeds": len(runs)}
    for threshold in THRESHOLDS:
        hits = [first_reaching(r["curve"], threshold) for r in runs]
        reached = [h for h in hits if h is not None]
        row[f"reached {threshold}"] = f"{len(reached)}/{len(runs)}"
        row[f"steps to {threshold}"] = [h[0] if h else None for h in hits]
        row[f"seconds to {threshold}"] = [round(h[1], 1) if h else None for h in hits]
    row["final return"] = [round(r["curve"][-1][1], 1) for r in runs]
    # once learned: every evaluation from CONVERGED steps on, over all seeds
    late = [mean for r in runs for steps, mean, _ in r["curve"] if steps >= CONVERGED]
    row["mean after convergence"] = round(statistics.mean(late), 1) if late else None
    row["evaluations after convergence"] = len(late)
    row[f"below {DIP} after convergence"] = sum(1 for v in late if v < DIP)
    row["worst after convergence"] = round(min(late), 1) if late else None
    row["updates/s"] = round(statistics.mean(r["updates"] / r["seconds"] for r in runs), 1)
    row["seconds"] = round(statistics.mean(r["seconds"] for r in runs), 1)
    return row


def _fmt(values, worst=max):
    """The mean over the runs that got there, and the worst of them."""
    present = [v for v in values if v is not None]
    if not present:
        return "never"
    label = "max" if worst is max else "min"
    return f"{statistics.mean(present):8.0f} ({label} {worst(present):.0f})"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=8)
    parser.add_argument("--steps", type=int, default=15_000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default="td3,ddpg,sb3-td3")
    args = parser.parse_args(argv)
    algos = args.only.split(",")
    jobs = [(algo, seed, args.steps) for seed in range(1, args.seeds + 1) for algo in algos]
    print(f"Pendulum-v1, {args.steps} steps, seeds 1-{args.seeds}, {len(jobs)} runs on {args.workers} workers ...", flush=True)
    start = time.perf_counter()
    # a fresh process per run: a variant patches the course's code in the process that runs it
    with ProcessPoolExecutor(args.workers, max_tasks_per_child=1) as pool:
        results = []
        for result in pool.map(run, jobs):
            results.append(result)
            print(f"  {result['algo']:8} seed {result['seed']}: final {result['curve'][-1][1]:7.1f} in {result['seconds']:.0f} s", flush=True)
    rows = {algo: summarize(results, algo, args.steps) for algo in algos}

    print(f"\nAll runs: {time.perf_counter() - start:.0f} s\n")
    header = f"{'algorithm':18} {'reached -400':>12} {'steps to -400':>22} {'steps to -200':>22} {'seconds to -200':>22} {'final return':>22} {'updates/s':>10}"
    print(header)
    print("-" * len(header))
    for algo, row in rows.items():
        print(
            f"{algo:18} {row['reached -400']:>12} {_fmt(row['steps to -400']):>22} {_fmt(row['steps to -200']):>22}"
            f" {_fmt(row['seconds to -200']):>22} {_fmt(row['final return'], worst=min):>22} {row['updates/s']:>10}"
        )
    for algo, row in rows.items():
        print(f"  {algo}: reached -200 in {row['reached -200']} runs; steps to -200 per seed {row['steps to -200']}; final {row['final return']}")
    print(f"\nAfter convergence (evaluations at {CONVERGED:,} steps and later, all seeds):")
    print(f"{'algorithm':22} {'mean':>8} {'evaluations':>12} {'below ' + str(DIP):>11} {'worst':>8}")
    for algo, row in rows.items():
        if row["mean after convergence"] is None:
            print(f"{algo:22} (no evaluation at {CONVERGED:,} steps or later: give --steps more)")
            continue
        print(f"{algo:22} {row['mean after convergence']:8.1f} {row['evaluations after convergence']:12d} "
              f"{row[f'below {DIP} after convergence']:11d} {row['worst after convergence']:8.1f}")

    if "td3" in rows and "sb3-td3" in rows:
        ours, peer = rows["td3"], rows["sb3-td3"]

        def ratio(key):
            a = [v for v in ours[key] if v is not None]
            b = [v for v in peer[key] if v is not None]
            return f"{statistics.mean(a) / statistics.mean(b):.2f}" if a and b else "n/a"

        print("\nCourse TD3 / stable-baselines3 TD3 (same budget, same command):")
        print(f"  steps to -200:   {ratio('steps to -200')}")
        print(f"  seconds to -200: {ratio('seconds to -200')}")
        print(f"  updates per second: {ours['updates/s'] / peer['updates/s']:.2f}")
        print(f"  run time:        {ours['seconds'] / peer['seconds']:.2f}")

    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "learning.json").write_text(json.dumps({"rows": rows, "runs": results}, indent=1))
    print(f"\nFigures written to {out / 'learning.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
