"""A video of a policy, written with moviepy 2 and shown in the notebook.

Recording needs the environment's renderer (pygame for Pendulum-v1) and an
encoder (moviepy's ffmpeg). Where either is missing, the video is skipped with
a message that says why; training results are not affected.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from bbrl.workspace import Workspace

__all__ = ["record_video", "show_video"]


def _frames(env_name: str, policy, seed: int):
    # Headless rendering: no window, no sound device (and no SDL complaint on stderr)
    for variable in ("SDL_VIDEODRIVER", "SDL_AUDIODRIVER"):
        os.environ.setdefault(variable, "dummy")
    os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
    from .envs import make_env

    env = make_env(env_name, render_mode="rgb_array")
    frames = []
    try:
        obs, _ = env.reset(seed=seed)
        frames.append(env.render())
        workspace, t, done = Workspace(), 0, False
        with torch.no_grad():
            while not done:
                workspace.set("env/env_obs", t, torch.as_tensor(obs, dtype=torch.float32).unsqueeze(0))
                policy(workspace, t=t)
                action = workspace.get("action", t).squeeze(0).numpy()
                obs, _, terminated, truncated, _ = env.step(action)
                frames.append(env.render())
                done = terminated or truncated
                t += 1
        fps = env.metadata.get("render_fps", 30)
    finally:
        env.close()
    return frames, fps


def record_video(env_name: str, policy, path, seed: int = 0) -> Path | None:
    """Records one episode of ``policy`` (a BBRL agent writing ``action``) to ``path``.

    Returns the path, or None (with a message saying why) when it cannot record.
    """
    path = Path(path)
    try:
        from moviepy import ImageSequenceClip  # moviepy 2 (moviepy.editor is gone)
    except ImportError as error:
        print(f"Video skipped: moviepy 2 is not installed ({error}). `pip install moviepy` to get it.")
        return None
    try:
        frames, fps = _frames(env_name, policy, seed)
    except Exception as error:  # the renderer (pygame) is missing or has no display
        print(f"Video skipped: {env_name} could not render frames ({type(error).__name__}: {error}).")
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        ImageSequenceClip(frames, fps=fps).write_videofile(str(path), logger=None, audio=False)
    except Exception as error:  # no ffmpeg encoder
        print(f"Video skipped: moviepy could not encode {path} ({type(error).__name__}: {error}).")
        return None
    print(f"Video of the policy written to {path}")
    return path


def show_video(path):
    """An IPython video element for the notebook (embedded, so it works in Colab)."""
    from IPython.display import Video

    return Video(str(path), embed=True, html_attributes="controls loop")
