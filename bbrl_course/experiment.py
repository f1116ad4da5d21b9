"""The DDPG-against-TD3 experiment: does DDPG overestimate its Q-values more than TD3?

The experiment notebook (03-experiment) trains the student's own DDPG and TD3, loaded
from their notebooks, over several seeds, and measures the bias of each critic during
training, as Fujimoto et al. (2018) do:

- at each evaluation, the current deterministic policy π runs ``n_episodes`` measurement
  episodes from fixed start states;
- on every state s_t they visit, the critic's estimate is Q(s_t, π(s_t)) (TD3's first
  critic, the one its actor follows), and the true value is the discounted Monte-Carlo
  return of the rest of the episode, r_t + γ r_{t+1} + ...

Pitfall: the critics learn values with bootstrapping at time limits (a time limit is
not a terminal state), so the return of a state near the limit must not stop there.
The measurement episodes run ``tail_steps(γ)`` steps past the environment's limit,
enough for γ^tail < 1 %, and only the states before the limit are measured.

This module runs the seeds in parallel, one process per seed (spawned: they import
nothing from the notebook's kernel), and returns the raw measurements; the notebook
turns them into estimates and true values with the student's ``discounted_returns``.
"""

from __future__ import annotations

import contextlib
import io
import math
import multiprocessing
import os
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

from .algo import critic_of
from .envs import make_env

__all__ = [
    "Algorithm",
    "Measurement",
    "Run",
    "available_workers",
    "check_algorithm",
    "compare_final",
    "comparisons",
    "critic_of",
    "find_notebook",
    "load_results",
    "mean_and_ci",
    "measure",
    "plot_experiment",
    "report",
    "results_folder",
    "results_made_by",
    "run_experiment",
    "runs_made_by",
    "save_results",
    "save_run",
    "summaries",
    "tail_steps",
    "train_and_measure",
]

#: Google Drive, as Colab mounts it (``drive.mount("/content/drive")``)
DRIVE = Path("/content/drive/MyDrive")
#: Where ``find_notebook`` looks for the DDPG and TD3 notebooks, after the working directory
COLAB_DRIVE = DRIVE / "Colab Notebooks"
#: The course's folder in Drive, where the experiment writes its files when Drive is mounted
DRIVE_FOLDER = "bbrl-course-ddpg-td3"
#: A folder to look in first (``make figure`` points it to solutions/)
NOTEBOOKS_ENV = "BBRL_COURSE_NOTEBOOKS"


def results_folder(drive: str | Path = DRIVE) -> Path:
    """Where the experiment writes its runs and results: the course's folder in Google Drive
    when Drive is mounted (Colab: they survive the end of the runtime), the working
    directory otherwise."""
    drive = Path(drive)
    if drive.is_dir():
        folder = drive / DRIVE_FOLDER
        folder.mkdir(parents=True, exist_ok=True)
        return folder
    return Path(".")


def _copies(name: str) -> "re.Pattern":
    """The names a notebook gets from Colab and browsers: ``Copy of 01-ddpg.ipynb`` (Colab's
    "Save a copy in Drive"), ``01-ddpg (1).ipynb`` (a second download), or both."""
    import re

    path = Path(name)
    return re.compile(rf"(Copy of )?{re.escape(path.stem)}( ?\(\d+\))?{re.escape(path.suffix)}")


def find_notebook(name: str, folders: Sequence[str | Path] | None = None) -> Path:
    """The path of the course notebook ``name`` (``01-ddpg.ipynb``, or a copy of it:
    ``Copy of 01-ddpg.ipynb``, ``01-ddpg (1).ipynb``), searched for in the folder named by
    ``BBRL_COURSE_NOTEBOOKS`` if set, the working directory, its parent, nbgrader's
    assignment folder ``../01-ddpg/``, the course's folder in Drive and Colab's
    ``Colab Notebooks``: the first folder that holds one. Two candidates in that folder are
    an error that names them; none anywhere, an error that says where it looked."""
    stem = Path(name).stem
    if folders is None:
        folders = [Path("."), Path(".."), Path("..") / stem, DRIVE / DRIVE_FOLDER, COLAB_DRIVE]
        if os.environ.get(NOTEBOOKS_ENV):
            folders.insert(0, Path(os.environ[NOTEBOOKS_ENV]))
    pattern = _copies(name)
    for folder in map(Path, folders):
        try:
            found = sorted(p for p in folder.iterdir() if pattern.fullmatch(p.name) and p.is_file())
        except OSError:  # no such folder (or not readable)
            continue
        if len(found) == 1:
            return found[0].resolve()
        if len(found) > 1:
            names = " and ".join(f"'{p.name}'" for p in found)
            raise FileExistsError(
                f"{len(found)} notebooks in {folder.resolve()} could be your {name}: {names}; keep only your "
                f"completed one there (delete, move or rename the others) and run this cell again"
            )
    looked = ", ".join(str(Path(folder)) for folder in folders)
    raise FileNotFoundError(
        f"{name} not found (looked in {looked}, for {name} or a copy such as 'Copy of {name}'). This experiment "
        f"trains your own DDPG and TD3: put your completed {name} next to this notebook (in Colab: Files panel, "
        f"Upload; or mount your Drive above, where Colab keeps it in 'Colab Notebooks'), then run this cell again."
    )


@dataclass(frozen=True)
class Algorithm:
    """An algorithm of a course notebook: its class and its training function."""

    label: str  # "DDPG"
    notebook: str  # path of the notebook that defines it
    cls: str  # name of the class ("DDPG")
    train: str  # name of the training function ("run_ddpg")
    #: parameters of ``cfg.algorithm`` this algorithm sets whatever the experiment's, as
    #: pairs (a tuple: an Algorithm stays hashable). An ablation is an algorithm of a
    #: notebook with some of its parameters fixed: DDPG plus TD3's minimum alone is the
    #: student's TD3 with ``(("target_policy_noise", 0.0), ("policy_delay", 1))``.
    overrides: tuple = ()

    def params_for(self, params: Mapping) -> dict:
        """The experiment's parameters ``params`` with this algorithm's ``overrides`` (a copy;
        the same parameters if it has none)."""
        params = dict(params)
        if self.overrides:
            params["algorithm"] = {**params["algorithm"], **dict(self.overrides)}
        return params

    @property
    def folder(self) -> str:
        """The label as a folder name: lower case, runs of other characters than letters and
        digits made one dash ("DDPG + min": "ddpg-min")."""
        import re

        return re.sub(r"[^a-z0-9]+", "-", self.label.lower()).strip("-")


_LOADED: dict[str, object] = {}


def _load(algorithm: Algorithm):
    from .nbload import load_notebook

    path = str(Path(algorithm.notebook).resolve())
    if path not in _LOADED:
        if not Path(path).is_file():
            raise FileNotFoundError(f"{algorithm.label}: notebook {path} not found")
        # what its cells print or show (plots, sources) is not this experiment's output
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            _LOADED[path] = load_notebook(path)
    module = _LOADED[path]
    missing = [name for name in (algorithm.cls, algorithm.train) if not hasattr(module, name)]
    if missing:
        raise AttributeError(f"{Path(path).name} defines no {' or '.join(missing)} (needed for {algorithm.label})")
    return getattr(module, algorithm.cls), getattr(module, algorithm.train)


def tail_steps(discount_factor: float, tolerance: float = 0.01) -> int:
    """Steps past the time limit after which γ^steps < tolerance."""
    if discount_factor <= 0:
        return 0
    return math.ceil(math.log(tolerance) / math.log(discount_factor))


@dataclass
class Measurement:
    """The measurement episodes of one evaluation, padded to ``T`` steps.

    ``q_values[i, t]`` is Q(s_t, π(s_t)) in episode i, ``rewards[i, t]`` the reward of
    the step from s_t (0 after the episode's end), ``valid[i, t]`` marks the measured
    states: those of the episode before the environment's time limit.
    """

    q_values: np.ndarray  # (N, T)
    rewards: np.ndarray  # (N, T)
    valid: np.ndarray  # (N, T) bool


def measure(algo, discount_factor: float, n_episodes: int = 5, seed: int = 0) -> Measurement:
    """Runs the algorithm's deterministic policy for ``n_episodes`` (from the start states
    of seeds ``seed``, ``seed + 1``...) and records the critic's Q(s, π(s)) and the
    rewards, past the time limit by ``tail_steps(discount_factor)`` steps."""
    import gymnasium as gym
    import torch

    env_name = algo.cfg.gym_env.env_name
    limit = gym.spec(env_name).max_episode_steps
    horizon = limit + tail_steps(discount_factor)
    # the course's environments (actions in [-1, 1]), run past their time limit
    envs = [make_env(env_name, max_episode_steps=horizon) for _ in range(n_episodes)]
    obs = np.stack([env.reset(seed=seed + i)[0] for i, env in enumerate(envs)]).astype(np.float32)
    observations = np.zeros((n_episodes, horizon, obs.shape[1]), dtype=np.float32)
    rewards = np.zeros((n_episodes, horizon), dtype=np.float64)
    lengths = np.full(n_episodes, horizon)
    alive = np.ones(n_episodes, dtype=bool)
    actor, critic = algo.actor, critic_of(algo)
    with torch.no_grad():
        for t in range(horizon):
            observations[alive, t] = obs[alive]
            actions = actor.predict_action(torch.as_tensor(obs)).numpy()
            for i in np.flatnonzero(alive):
                next_obs, reward, terminated, truncated, _ = envs[i].step(actions[i])
                rewards[i, t] = reward
                obs[i] = next_obs
                if terminated or truncated:
                    alive[i] = False
                    lengths[i] = t + 1
            if not alive.any():
                break
        flat = torch.as_tensor(observations.reshape(-1, obs.shape[1]))
        q_values = critic.predict_value(flat, actor.predict_action(flat)).reshape(n_episodes, horizon).numpy()
    for env in envs:
        env.close()
    steps = np.arange(horizon)[None, :]
    valid = steps < np.minimum(lengths, limit)[:, None]
    return Measurement(np.where(valid, q_values, 0.0), rewards, valid)


@dataclass
class Run:
    """One training run of one algorithm and seed, with a measurement at each evaluation."""

    label: str
    seed: int
    env_name: str
    steps: np.ndarray  # (E,) environment steps of each evaluation
    returns: np.ndarray  # (E, nb_evals) evaluation returns
    q_values: np.ndarray  # (E, N, T)
    rewards: np.ndarray  # (E, N, T)
    valid: np.ndarray  # (E, N, T)
    seconds: float = 0.0
    best_reward: float = field(default=-math.inf)
    #: what made the run (``made_by``): its parameters, budget, fast mode, the module's
    #: version and a hash of the notebook's code; a saved run is reused only if it matches
    made_by: dict = field(default_factory=dict)


def _run_config(algorithm: Algorithm, params: Mapping, seed: int):
    import copy

    from omegaconf import OmegaConf

    params = copy.deepcopy(algorithm.params_for(params))
    params["algorithm"] = {**params["algorithm"], "seed": seed}
    params["base_dir"] = f"experiment/{params['gym_env']['env_name']}/{algorithm.folder}-S{seed}"
    params["plot_agents"] = False
    params["verbose"] = False
    return OmegaConf.create(params)


def _code_hash(notebook) -> str:
    """A hash of the code the experiment runs from a notebook (its definition cells)."""
    import hashlib

    from .nbload import definition_cells

    return hashlib.sha256("\n\0".join(definition_cells(notebook)).encode()).hexdigest()[:16]


def made_by(algorithm: Algorithm, params: Mapping, seed: int, n_episodes: int) -> dict:
    """What makes a run: its algorithm, seed, environment, budget (``max_steps``), whether in
    fast mode, the measurement episodes, the course module's version, all its parameters and
    a hash of the code of its notebook. Two runs made by the same are the same run."""
    import json

    from . import __version__
    from .config import fast_mode

    params = algorithm.params_for(params)  # what it really runs with
    return {
        "label": algorithm.label,
        "seed": int(seed),
        "env_name": params["gym_env"]["env_name"],
        "max_steps": int(params["algorithm"]["max_steps"]),
        "fast": fast_mode(),
        "n_episodes": int(n_episodes),
        "bbrl_course": __version__,
        "params": json.dumps(dict(params), sort_keys=True, default=str),
        "code": _code_hash(algorithm.notebook),
    }


def train_and_measure(algorithm: Algorithm, params: Mapping, seed: int, n_episodes: int = 5,
                      made: dict | None = None) -> Run:
    """Trains ``algorithm`` with ``params`` and seed ``seed``, measuring the critic at
    every evaluation (the work of one process of ``run_experiment``)."""
    start = time.perf_counter()
    cls, train = _load(algorithm)
    cfg = _run_config(algorithm, params, seed)
    algo = cls(cfg)
    discount = float(cfg.algorithm.discount_factor)
    measurements: list[Measurement] = []
    # the same start states at every evaluation, different from the training and evaluation ones
    algo.evaluation_hooks.append(lambda a: measurements.append(measure(a, discount, n_episodes, seed=10_000 + seed)))
    train(algo)
    return Run(
        label=algorithm.label,
        seed=seed,
        env_name=cfg.gym_env.env_name,
        steps=np.array([s for s, _ in algo.eval_history]),
        returns=np.stack([r.numpy() for _, r in algo.eval_history]),
        q_values=np.stack([m.q_values for m in measurements]),
        rewards=np.stack([m.rewards for m in measurements]),
        valid=np.stack([m.valid for m in measurements]),
        seconds=time.perf_counter() - start,
        best_reward=float(algo.best_reward),
        made_by=dict(made or {}),
    )


def check_algorithm(algorithm: Algorithm, params: Mapping) -> None:
    """Trains ``algorithm`` for a few hundred steps on tiny networks, before the real runs,
    so that an unfinished notebook fails at once, with its name and the stub's."""
    from .checks import raising_function, tiny_config

    try:
        cls, train = _load(algorithm)
        cfg = tiny_config(algorithm.params_for(params), eval_interval=160)
        algo = cls(cfg)
        algo.evaluation_hooks.append(lambda a: measure(a, float(cfg.algorithm.discount_factor), 1))
        train(algo)
    except NotImplementedError as error:
        raise RuntimeError(
            f"{algorithm.label} ({Path(algorithm.notebook).name}): {raising_function(error)} is not "
            "written yet. Finish that notebook (its tests pass) before running the experiment."
        ) from None
    except Exception as error:
        raise RuntimeError(
            f"{algorithm.label} ({Path(algorithm.notebook).name}) failed on a short check run: "
            f"{type(error).__name__}: {error}. Fix that notebook (its tests pass) before running the experiment."
        ) from error


def available_workers() -> int:
    """The cores this process may use (one training run per core)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS, Windows
        return max(1, os.cpu_count() or 1)


def run_experiment(
    algorithms: Sequence[Algorithm],
    params: Mapping,
    seeds: Sequence[int],
    n_episodes: int = 5,
    workers: int | None = None,
    runs_file: str | Path | None = None,
) -> dict[str, list[Run]]:
    """Trains every algorithm with every seed, ``workers`` runs at a time (all the cores
    by default; 0 runs them in this process), and returns ``{label: [Run per seed]}``.

    With ``runs_file``, every run is saved there as soon as it ends, and the runs already
    there that were made by the same (``made_by``: parameters, budget, code) are not run
    again: after a disconnect, the same call runs only what is missing.

    Each algorithm is first checked on a short run, so that an unfinished notebook
    fails at once with its name.
    """
    workers = available_workers() if workers is None else max(0, int(workers))
    params = dict(params)
    env_name = params["gym_env"]["env_name"]
    jobs = [(a, seed, made_by(a, params, seed, n_episodes)) for a in algorithms for seed in seeds]
    results: dict[str, list[Run]] = {a.label: [] for a in algorithms}
    start, total = time.perf_counter(), len(jobs)
    print(f"{env_name}: {len(jobs)} runs ({len(algorithms)} algorithms x {len(seeds)} seeds), {max(workers, 1)} at a time")
    if runs_file is not None:
        saved = _saved_runs(runs_file, env_name)
        found = [saved.get((a.label, seed)) for a, seed, _ in jobs]
        reused = [run for run, (_, _, made) in zip(found, jobs) if run is not None and run.made_by == made]
        for run in reused:
            results[run.label].append(run)
        others = sum(run is not None for run in found) - len(reused)
        missing = len(jobs) - len(reused)
        if reused or others:
            print(
                f"{len(reused)} of {len(jobs)} runs found in {runs_file}: "
                + (f"running the {missing} missing" if missing else "nothing to run")
                + (f" ({others} there were made with other parameters or another version of your notebooks:"
                   " they run again)" if others else "")
            )
        done_keys = {(run.label, run.seed) for run in reused}
        jobs = [job for job in jobs if (job[0].label, job[1]) not in done_keys]

    def done(run: Run):
        results[run.label].append(run)
        if runs_file is not None:
            save_run(runs_file, run)  # at once: a disconnect loses only the runs in progress
        finished = sum(len(r) for r in results.values())
        print(
            f"  {run.label:>10} seed {run.seed}: final return {run.returns[-1].mean():8.1f}, best {run.best_reward:8.1f}"
            f" ({run.seconds:.0f} s) [{finished}/{total}, {time.perf_counter() - start:.0f} s]",
            flush=True,
        )

    needed = list(dict.fromkeys(algorithm for algorithm, _, _ in jobs))  # those with runs to make
    if jobs and workers == 0:  # in this process (tests)
        for algorithm in needed:
            check_algorithm(algorithm, params)
        for algorithm, seed, made in jobs:
            done(train_and_measure(algorithm, params, seed, n_episodes, made))
    elif jobs:
        # Spawned processes: they start clean (no state, threads or displays of the notebook's kernel)
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
            for check in [pool.submit(check_algorithm, a, params) for a in needed]:
                check.result()  # an unfinished notebook stops everything here, with its name
            futures = {
                pool.submit(train_and_measure, a, params, seed, n_episodes, made): (a, seed)
                for a, seed, made in jobs
            }
            for future in as_completed(futures):
                algorithm, seed = futures[future]
                try:
                    done(future.result())
                except Exception as error:
                    for other in futures:
                        other.cancel()
                    raise RuntimeError(
                        f"{algorithm.label} seed {seed} ({Path(algorithm.notebook).name}) failed: "
                        f"{type(error).__name__}: {error}"
                    ) from error
    for runs in results.values():
        runs.sort(key=lambda run: run.seed)
    return results


# Summaries, statistics and plots ---------------------------------------------------


def mean_and_ci(values, confidence: float = 0.95):
    """Mean over seeds (axis 0) and the half-width of its Student-t confidence interval."""
    from scipy import stats

    values = np.asarray(values, dtype=float)
    mean = values.mean(axis=0)
    n = values.shape[0]
    if n < 2:
        return mean, np.zeros_like(mean)
    sem = values.std(axis=0, ddof=1) / math.sqrt(n)
    return mean, stats.t.ppf(0.5 + confidence / 2, n - 1) * sem


def compare_final(summary: Mapping[str, Mapping[str, np.ndarray]], key: str, alpha: float = 0.05,
                  pair: tuple[str, str] | None = None) -> str:
    """Welch's t-test (BBRL's ``WelchTTest``) between two algorithms of ``summary`` (the
    labels ``pair``; the first two by default) on ``key`` at the last evaluation (one value
    per seed); a sentence."""
    from bbrl.stats import WelchTTest
    from scipy.stats import ttest_ind

    (label_a, a), (label_b, b) = [(label, summary[label]) for label in pair] if pair else list(summary.items())[:2]
    x, y = np.asarray(a[key])[:, -1], np.asarray(b[key])[:, -1]
    significant = bool(WelchTTest().run_test(x, y, alpha=alpha))
    p_value = float(ttest_ind(x, y, equal_var=False).pvalue)
    verdict = "significant" if significant else "not significant"
    return (
        f"{key} at the last evaluation: {label_a} {x.mean():.1f} ± {x.std(ddof=1):.1f}, "
        f"{label_b} {y.mean():.1f} ± {y.std(ddof=1):.1f} (mean ± std over {len(x)} and {len(y)} seeds); "
        f"Welch's t-test p = {p_value:.3f}: {verdict} at α = {alpha}"
    )


def comparisons(labels: Sequence[str]) -> list[tuple[str, str]]:
    """The pairs of algorithms the Welch t-tests compare, in the experiment's order: each with
    the next, then the first with the last. With DDPG, DDPG + min (the student's TD3 without
    smoothing nor delay) and TD3: DDPG against DDPG + min isolates the minimum of two
    critics, DDPG + min against TD3 shows what smoothing and delay add, DDPG against TD3 all
    three. Two algorithms: that one pair."""
    labels = list(labels)
    pairs = list(zip(labels, labels[1:]))
    if len(labels) > 2:
        pairs.append((labels[0], labels[-1]))
    return pairs


def _against(labels: Sequence[str]) -> str:
    """"DDPG against TD3", or "DDPG, DDPG + min and TD3"."""
    labels = list(labels)
    return " against ".join(labels) if len(labels) <= 2 else ", ".join(labels[:-1]) + f" and {labels[-1]}"


def plot_experiment(summary: Mapping[str, Mapping[str, np.ndarray]], env_name: str, path=None):
    """Three panels over training: the critic's estimate and the true value, their
    difference (the bias), and the evaluation return; means over seeds with 95 %
    confidence bands. ``summary[label]`` holds ``steps`` (E,), and ``estimates``,
    ``true_values`` and ``returns``, each (seeds, E). Saves to ``path`` if given."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.3))
    seeds = sorted({np.asarray(s["estimates"]).shape[0] for s in summary.values()})
    for index, (label, s) in enumerate(summary.items()):
        color = f"C{index}"
        steps = np.asarray(s["steps"])
        estimates, true_values = np.asarray(s["estimates"]), np.asarray(s["true_values"])
        panels = (
            (axes[0], estimates, "-", f"{label}: critic's estimate"),
            (axes[0], true_values, "--", f"{label}: true value"),
            (axes[1], estimates - true_values, "-", label),
            (axes[2], np.asarray(s["returns"]), "-", label),
        )
        for ax, values, style, name in panels:
            mean, half_width = mean_and_ci(values)
            ax.plot(steps, mean, style, color=color, label=name)
            ax.fill_between(steps, mean - half_width, mean + half_width, color=color, alpha=0.2)
    axes[1].axhline(0.0, color="black", linewidth=0.8)
    # An untrained critic outputs about 0 while the true values are far from it (Pendulum's
    # rewards are all negative): a bias of hundreds at first, of a few units after learning.
    # A symmetric log scale shows both; it is linear within ±10.
    axes[1].set_yscale("symlog", linthresh=10)
    titles = (
        "Q(s, π(s)) and the discounted return",
        "bias: estimate − true value (linear within ±10, log beyond)",
        "evaluation return",
    )
    for ax, title in zip(axes, titles):
        ax.set_title(title)
        ax.set_xlabel("environment steps")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    n_seeds = " or ".join(str(n) for n in seeds)
    fig.suptitle(f"{env_name}: {_against(summary)}, {n_seeds} seeds each (means, 95 % confidence bands)")
    fig.tight_layout()
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90)
    return fig


#: The arrays of an experiment's summary, per algorithm
SUMMARY_KEYS = ("seeds", "steps", "returns", "estimates", "true_values")


#: The key of what made the results of an environment, in a results file (a JSON text)
MADE_BY_KEY = "_made_by/{env_name}"


def save_results(path, env_name: str, summary: Mapping[str, Mapping[str, np.ndarray]],
                 made: Mapping | None = None) -> Path:
    """Adds (or replaces) the summary of ``env_name`` in the ``.npz`` file at ``path``;
    keys are ``<env_name>/<label>/<array>``, and ``_made_by/<env_name>`` holds ``made``
    (what made the runs, ``runs_made_by``) as JSON."""
    import json

    path = Path(path)
    arrays = _read_arrays(path)
    meta = MADE_BY_KEY.format(env_name=env_name)
    arrays = {k: v for k, v in arrays.items() if not k.startswith(f"{env_name}/") and k != meta}
    for label, s in summary.items():
        for key in SUMMARY_KEYS:
            arrays[f"{env_name}/{label}/{key}"] = np.asarray(s[key])
    if made is not None:
        arrays[meta] = np.array(json.dumps(dict(made), sort_keys=True))
    _write_arrays(path, arrays)
    return path


def results_made_by(results: Mapping[str, np.ndarray], env_name: str) -> dict | None:
    """What made the results of ``env_name`` in a results file's arrays (``load_results``):
    ``{"max_steps", "seeds", "fast", "n_episodes", "bbrl_course", ...}``; None if the file
    does not say."""
    import json

    meta = results.get(MADE_BY_KEY.format(env_name=env_name))
    if meta is None:
        return None
    try:
        made = json.loads(str(meta))
    except ValueError:
        return None
    return made if isinstance(made, dict) else None


def runs_made_by(runs: Mapping[str, Sequence[Run]]) -> dict:
    """What made a set of runs, for the results file: their budget (``max_steps``), seeds,
    fast mode, measurement episodes and the course module's version; an error that says
    what to run if the runs were not all made alike (a run interrupted, then parameters
    changed)."""
    made = [run.made_by for seed_runs in runs.values() for run in seed_runs]
    if not made or not all(made):
        return {}  # runs saved by an older version of the course, which did not record it
    common = {}
    for key in ("env_name", "max_steps", "fast", "n_episodes", "bbrl_course"):
        values = sorted({str(m.get(key)) for m in made})
        if len(values) > 1:
            raise ValueError(
                f"the runs were not all made alike ({key}: {' and '.join(values)}): run the experiment on "
                f"{made[0].get('env_name')} again (run_and_save): it completes them with the current parameters"
            )
        common[key] = made[0].get(key)
    common["seeds"] = {label: [run.seed for run in seed_runs] for label, seed_runs in runs.items()}
    return common


def _read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file; {} if there is none (or it cannot be read: then it is
    kept aside as ``<name>.unreadable``, and said so)."""
    if not path.exists():
        return {}
    try:
        return load_results(path)
    except Exception as error:  # a file cut short, or not an npz
        aside = path.with_name(path.name + ".unreadable")
        path.replace(aside)
        print(f"{path} could not be read ({type(error).__name__}: {error}); kept aside as {aside.name}, starting anew")
        return {}


def _write_arrays(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Writes the ``.npz`` file through a temporary file renamed over it: whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)


#: The arrays of a Run, saved by ``save_runs``
RUN_ARRAYS = ("steps", "returns", "q_values", "rewards", "valid")


def _run_arrays(run: Run) -> dict[str, np.ndarray]:
    import json

    prefix = f"{run.env_name}/{run.label}/{run.seed}/"
    arrays = {prefix + key: np.asarray(getattr(run, key)) for key in RUN_ARRAYS}
    arrays[prefix + "scalars"] = np.array([run.seconds, run.best_reward])
    if run.made_by:
        arrays[prefix + "made_by"] = np.array(json.dumps(run.made_by, sort_keys=True))
    return arrays


def save_runs(path, env_name: str, runs: Mapping[str, Sequence[Run]]) -> Path:
    """Adds (or replaces) every measurement of the runs on ``env_name`` in the ``.npz`` file
    at ``path`` (keys ``<env_name>/<label>/<seed>/<array>``): the experiment's raw data,
    saved before any analysis, so that no failure afterwards can lose the runs."""
    path = Path(path)
    arrays = _read_arrays(path)
    arrays = {k: v for k, v in arrays.items() if not k.startswith(f"{env_name}/")}
    for seed_runs in runs.values():
        for run in seed_runs:
            arrays.update(_run_arrays(run))
    _write_arrays(path, arrays)
    return path


def save_run(path, run: Run) -> Path:
    """Adds (or replaces) one run in the runs file at ``path``: ``run_experiment`` saves each
    run as soon as it ends."""
    path = Path(path)
    prefix = f"{run.env_name}/{run.label}/{run.seed}/"
    arrays = {k: v for k, v in _read_arrays(path).items() if not k.startswith(prefix)}
    arrays.update(_run_arrays(run))
    _write_arrays(path, arrays)
    return path


def _saved_runs(path, env_name: str) -> dict[tuple[str, int], Run]:
    """The runs on ``env_name`` in the runs file at ``path``, by (label, seed); {} if none."""
    path = Path(path)
    if not path.is_file():
        return {}
    try:
        runs = load_runs(path, env_name)
    except KeyError:
        return {}
    except Exception as error:  # unreadable: save_run keeps it aside and starts anew
        print(f"{path} could not be read ({type(error).__name__}: {error}): its runs run again")
        return {}
    return {(run.label, run.seed): run for seed_runs in runs.values() for run in seed_runs}


def load_runs(path, env_name: str, seeds: Sequence[int] | None = None) -> dict[str, list[Run]]:
    """The runs on ``env_name`` saved by ``save_runs`` or ``save_run``: ``{label: [Run per
    seed]}``, by seed (only ``seeds`` if given)."""
    import json

    arrays = load_results(path)
    found: dict[str, dict[int, dict]] = {}
    for key, values in arrays.items():
        parts = key.split("/")
        if len(parts) != 4:
            continue
        env, label, seed, name = parts
        if env == env_name and (seeds is None or int(seed) in seeds):
            found.setdefault(label, {}).setdefault(int(seed), {})[name] = values
    if not found:
        raise KeyError(f"{path} holds no runs on {env_name}: run the experiment on it first")
    return {
        label: [
            Run(label=label, seed=seed, env_name=env_name, **{k: data[k] for k in RUN_ARRAYS},
                seconds=float(data["scalars"][0]), best_reward=float(data["scalars"][1]),
                made_by=json.loads(str(data["made_by"])) if "made_by" in data else {})
            for seed, data in sorted(by_seed.items())
        ]
        for label, by_seed in found.items()
    }


def load_results(path) -> dict[str, np.ndarray]:
    """The arrays of a results file written by ``save_results``."""
    with np.load(Path(path), allow_pickle=False) as data:
        return {key: data[key] for key in data.files}


def summaries(results: Mapping[str, np.ndarray]) -> dict[str, dict[str, dict[str, np.ndarray]]]:
    """``{env_name: {label: {array: values}}}`` from the flat arrays of ``load_results``."""
    nested: dict = {}
    for key, values in results.items():
        if key.startswith("_"):  # what made them (results_made_by)
            continue
        env_name, label, name = key.split("/")
        nested.setdefault(env_name, {}).setdefault(label, {})[name] = values
    return nested


def load_summary(path, env_name: str) -> dict[str, dict[str, np.ndarray]]:
    """The summary of ``env_name`` in the results file at ``path``; an error that says what
    to run when it is not there yet."""
    path = Path(path)
    found = summaries(load_results(path)) if path.is_file() else {}
    if env_name not in found:
        raise FileNotFoundError(
            f"no results of {env_name} in {path}: run the experiment on it first (run_and_save), "
            "or summarize_and_save if its runs are saved"
        )
    return found[env_name]


def report(summary: Mapping[str, Mapping[str, np.ndarray]]) -> str:
    """The bias of each algorithm and the Welch t-tests between them (each pair of
    ``comparisons``), in sentences."""
    lines = []
    for label, s in summary.items():
        bias = np.asarray(s["estimates"]) - np.asarray(s["true_values"])
        lines.append(
            f"{label}: bias (estimate - true value) averaged over training {bias.mean():+.1f}, "
            f"over its second half {bias[:, bias.shape[1] // 2:].mean():+.1f}, at the last evaluation {bias[:, -1].mean():+.1f}"
        )
    biases = {label: {"bias": np.asarray(s["estimates"]) - np.asarray(s["true_values"])} for label, s in summary.items()}
    pairs = comparisons(summary)
    lines.extend(compare_final(biases, "bias", pair=pair) for pair in pairs)
    for key in ("estimates", "true_values", "returns"):
        lines.extend(compare_final(summary, key, pair=pair) for pair in pairs)
    return "\n".join(lines)


def until(summary: Mapping[str, Mapping[str, np.ndarray]], steps: int) -> dict[str, dict[str, np.ndarray]]:
    """The summary cut after its last evaluation at or before ``steps``: what a run of that
    budget would have shown (its last evaluation is then the one the Welch tests compare), to
    check that a shorter budget keeps a result."""
    cut = {}
    for label, s in summary.items():
        keep = np.asarray(s["steps"]) <= steps
        cut[label] = {key: (np.asarray(v)[keep] if key == "steps" else np.asarray(v)[:, keep]) if key != "seeds"
                      else np.asarray(v) for key, v in s.items()}
    return cut


def main(argv=None) -> int:
    """``python -m bbrl_course.experiment RESULTS.npz [--figures DIR] [--until STEPS]``: the
    report of every environment, and its figure ``DIR/bias-<env>.png`` (the notebook's
    figure); with ``--until``, of the evaluations up to STEPS environment steps only."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("results", type=Path)
    parser.add_argument("--figures", type=Path, help="write the figure of each environment in this folder")
    parser.add_argument("--until", type=int, metavar="STEPS",
                        help="only the evaluations up to STEPS steps (what a shorter budget would have shown)")
    args = parser.parse_args(argv)
    if not args.results.is_file():
        print(f"{args.results}: no such file (the experiment notebook writes it)")
        return 1
    for env_name, summary in summaries(load_results(args.results)).items():
        if args.until is not None:
            summary = until(summary, args.until)
        seeds = sorted({len(s["seeds"]) for s in summary.values()})
        steps = max(int(s["steps"][-1]) for s in summary.values())
        print(f"{env_name} ({' or '.join(map(str, seeds))} seeds, {steps} steps):")
        for line in report(summary).splitlines():
            print(f"  {line}")
        if args.figures is not None:
            import matplotlib

            matplotlib.use("Agg")
            import matplotlib.pyplot as plt

            path = args.figures / f"bias-{env_name}.png"
            plt.close(plot_experiment(summary, env_name, path))
            print(f"  figure: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
