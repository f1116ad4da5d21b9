"""What a student sees of the TD3 learning test besides its score: the curve of their
TD3's evaluation returns, against the threshold and the reference's band, and one
sentence on what the curve suggests when the test fails.

The reference (``learning_reference.json``) is measured by
``python benchmarks/grading_threshold.py --only reference,random --seeds 18 --write-reference``:
the solution's TD3 and a policy of uniformly random actions, in the learning test's
configuration, over 18 seeds.
"""

from __future__ import annotations

import base64
import io
import json
import math
from functools import lru_cache
from pathlib import Path

__all__ = ["clean_curve", "diagnosis", "figure_png", "reference"]

REFERENCE_FILE = Path(__file__).with_name("learning_reference.json")
#: at most this many evaluations are drawn (a student's process could send more)
MAX_POINTS = 500


@lru_cache(maxsize=1)
def reference() -> dict:
    """{"steps", "low", "median", "high" (the reference's evaluation returns at each
    evaluation, over seeds), "best" {"low", "median", "high"} (the best evaluation of a
    run), "random" (the mean return of random actions), "seeds", "command"}."""
    return json.loads(REFERENCE_FILE.read_text())


def clean_curve(curve) -> list[tuple[int, float]]:
    """[(steps, mean return)] from what a student's process sent: pairs of numbers only
    (NaN kept: it means something), at most ``MAX_POINTS``; anything else is dropped."""
    points = []
    if not isinstance(curve, (list, tuple)):
        return points
    for item in curve[:MAX_POINTS]:
        if isinstance(item, (list, tuple)) and len(item) == 2:
            steps, value = item
            if type(steps) in (int, float) and type(value) in (int, float) and math.isfinite(steps):
                points.append((int(steps), float(value)))
    return points


def diagnosis(curve: list[tuple[int, float]], threshold: float) -> str:
    """One sentence on what a curve that stays below ``threshold`` suggests."""
    values = [v for _, v in curve]
    if not values:
        return "Your TD3 was never evaluated: check that run_td3 calls td3.evaluate() as the given loop does."
    if any(math.isnan(v) for v in values):
        return ("Some evaluations returned NaN: a loss or a network produced NaN. Check that the critics' "
                "target is computed without gradient and that no division or log can blow up.")
    random_level = reference()["random"]
    peak, last = max(values), values[-1]
    if peak < random_level + 150:
        return (f"The curve stays at the level of a random policy (about {random_level:,.0f}): the actor or the "
                "targets are not trained, or the actor descends the critic instead of climbing it. Check that "
                "update_actor and update_targets are called in run_td3, that the actor's optimizer steps, and "
                "the sign of the actor loss.")
    if peak - last > 300 and values.index(peak) < len(values) - 1:
        return (f"Your TD3 climbed to {peak:,.0f}, then fell back to {last:,.0f}: the critics may be "
                "diverging. Check the target (the minimum of the two target critics, with the smoothed target "
                "action) and that the targets move slowly (tau).")
    if last == peak and len(values) > 2 and values[-1] > values[-2]:
        return ("Your TD3 is still improving at the end, but more slowly than the reference: check the policy "
                "delay, and that each critic update uses both critics' losses.")
    return ("Your TD3 moves above a random policy but stays below the threshold: check update_critics (the "
            "smoothed target action, the minimum of the target critics: test_update_critics) and the policy delay.")


def figure_png(curve: list[tuple[int, float]], threshold: float, best: float | None = None) -> bytes:
    """The learning test's figure, as a PNG: the student's curve, the reference's band
    (lowest to highest over its seeds) and median, the threshold, and the return measured
    by the grader."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    ref = reference()
    fig = Figure(figsize=(8.4, 3.6), dpi=90)
    ax = fig.subplots()
    ax.fill_between(ref["steps"], ref["low"], ref["high"], color="tab:green", alpha=0.18,
                    label=f"reference TD3, {ref['seeds']} seeds (lowest to highest)")
    ax.plot(ref["steps"], ref["median"], color="tab:green", lw=1, ls="--", label="reference, median")
    ax.axhline(threshold, color="tab:red", lw=1.2, label=f"threshold ({threshold:,.0f})")
    ax.axhline(ref["random"], color="0.5", lw=1, ls=":", label=f"random actions ({ref['random']:,.0f})")
    finite = [(s, v) for s, v in curve if math.isfinite(v)]
    if finite:
        ax.plot([s for s, _ in finite], [v for _, v in finite], marker="o", color="tab:blue", lw=2,
                label="your TD3 (mean of each evaluation)")
    if best is not None and math.isfinite(best):
        ax.axhline(best, color="tab:blue", lw=0.8, ls="--", label=f"your best policy, measured by the grader ({best:,.0f})")
    low = min([ref["random"], *ref["low"], *(v for _, v in finite)]) - 100
    ax.set_ylim(max(low, -2000), 0)
    ax.set_xlabel("environment steps")
    ax.set_ylabel("evaluation return")
    ax.set_title("The learning test: your TD3's evaluations")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def display_output(curve, threshold: float, best: float | None) -> dict:
    """The figure as a notebook output (display_data), with the figures in its metadata for
    the class report (``autograder.reporting.report``)."""
    alt = "learning test: " + ", ".join(f"{s}: {v:.0f}" for s, v in curve[:20])
    return {
        "output_type": "display_data",
        "data": {"image/png": base64.b64encode(figure_png(curve, threshold, best)).decode(), "text/plain": alt},
        "metadata": {"learning_test": {  # JSON has no NaN: None stands for one
            "curve": [(s, v if math.isfinite(v) else None) for s, v in curve],
            "best": best if best is not None and math.isfinite(best) else None,
            "threshold": threshold,
        }},
    }
