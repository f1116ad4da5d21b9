"""Configuration: OmegaConf parameters and the course-wide fast mode.

Fast mode shrinks the training budget so that a notebook runs top to bottom in a
few minutes (for CI, the autograder, or a quick check of one's code). It is on
when ``BBRL_COURSE_FAST`` is set to anything but ``0``/``false``, or when
nbgrader executes the notebook (nbgrader sets ``NBGRADER_EXECUTION``).
"""

from __future__ import annotations

import os
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

FAST_ENV = "BBRL_COURSE_FAST"
OUTPUT_ENV = "BBRL_COURSE_OUTPUTS"


def fast_mode() -> bool:
    """True when notebooks should train on a small budget (see module docstring)."""
    if os.environ.get("NBGRADER_EXECUTION"):
        return True
    return os.environ.get(FAST_ENV, "").strip().lower() not in ("", "0", "false", "no")


def outputs_root() -> str:
    """Where runs write their logs, plots and videos (``outputs`` by default)."""
    return os.environ.get(OUTPUT_ENV, "outputs")


def make_config(params: Mapping[str, Any], fast: Mapping[str, Any] | None = None) -> DictConfig:
    """The OmegaConf configuration of a run.

    ``fast`` holds the values (a nested dict, like ``params``) that replace those
    of ``params`` in fast mode, typically a smaller ``algorithm.max_steps``.
    """
    cfg = OmegaConf.create(dict(params))
    if fast and fast_mode():
        cfg = OmegaConf.merge(cfg, OmegaConf.create(dict(fast)))
        steps = OmegaConf.select(cfg, "algorithm.max_steps")
        print(f"Fast mode ({FAST_ENV} or NBGRADER_EXECUTION is set): training for {steps} steps.")
    return cfg
