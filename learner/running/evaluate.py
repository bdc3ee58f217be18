"""``seed-rl eval``: play a trained checkpoint locally, print its returns, write a video.

``seed-rl eval --checkpoint PATH_OR_LOGDIR [--episodes N] [--greedy] [--video FILE] [--seed S]``
loads a checkpoint with the config it was trained with, plays N episodes locally (no gRPC,
no actors; the episode loop of learner/watching/evaluator.py), prints the mean, std, min
and max return and, with ``--video``, writes the episodes as an MP4 (imageio-ffmpeg) or a
GIF (pillow). An environment that cannot render here (MuJoCo without an OpenGL context)
ends it with one paragraph naming the exception and the fix, not a traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learner.training import checkpoint
from learner.training.models import ActorCritic, build_model
from learner.watching.evaluator import (
    MAX_VIDEO_FRAMES,
    RenderFailed,
    play_episodes,
    render_frame,
)
from seed_rl import config as cfg
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.envs.making import EnvImportError, EnvironmentUnavailable, make_env

log = logging.getLogger(__name__)

#: GIF frames are shrunk to at most this width (pixels).
GIF_MAX_WIDTH = 320


def config_from_json(text: str) -> Config:
    """The :class:`Config` a checkpoint was trained with (its ``"config"`` JSON text).

    Keys this version does not know are ignored (with a note in the debug log), so newer
    checkpoints still load; ``null`` (a nan that JSON cannot hold) keeps the default.
    """
    values: dict[str, Any] = {}
    for key, raw in json.loads(text).items():
        if key not in cfg.FIELDS:
            log.debug("checkpoint config: ignoring unknown key %r", key)
            continue
        if raw is None or raw == "<redacted>":
            continue
        values[key] = cfg.parse_value(key, raw, "checkpoint config")
    return Config(**values)


def load_policy(
    target: str | os.PathLike, device: str | torch.device = "cpu"
) -> tuple[ActorCritic, Config, Path, dict]:
    """Load ``target`` (a checkpoint file, or a logdir: its newest readable checkpoint).

    Returns the model (eval mode, on ``device``), its training config, the checkpoint file
    and its counters. Raises SystemExit with a message saying what is missing.
    """
    target = Path(target)
    if not target.exists():
        raise SystemExit(
            f"--checkpoint {target} does not exist; give a "
            "checkpoint file or the logdir of a run (e.g. runs/CartPole-v1)"
        )
    try:
        found = checkpoint.load_latest(target, map_location=device)
    except checkpoint.CheckpointError as error:
        raise SystemExit(str(error)) from None
    if found is None:
        raise SystemExit(
            f"no readable checkpoint in {target} (looked in "
            f"{checkpoint.checkpoint_dir(target)}); train first with "
            f"`seed-rl train --logdir {target}`"
        )
    state, path = found
    config = config_from_json(state["config"])
    env = env_or_exit(config)
    try:
        model = build_model(env.observation_space, env.action_space, config)
    finally:
        env.close()
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, config, path, dict(state["counters"])


def env_or_exit(config: Config, render: bool = False) -> gym.Env:
    """The environment of ``config`` made by :func:`make_env` as the actors make it, with
    RGB frames when ``render``; what stops it is a SystemExit naming the fix, no traceback."""
    extra = {"render_mode": "rgb_array"} if render else {}
    try:
        return make_env(config.env, config.env_kwargs, config.env_import, config.env_wrapper,
                        "eval", **extra)
    except (EnvImportError, EnvironmentUnavailable) as error:
        raise SystemExit(str(error)) from None


def recording_env(config: Config, seed: int) -> gym.Env:
    """The environment of ``config`` rendering RGB frames, checked to render: made, reset
    with ``seed`` and rendered once. A failure that rendering causes (no display, no OpenGL
    context: the environment plays without ``render_mode``) is a SystemExit naming the
    exception and the usual fixes, without a traceback; any other failure raises as it would
    without ``--video``."""
    try:
        env = env_or_exit(config, render=True)
    except SystemExit:
        raise
    except Exception as error:
        if _fails_without_rendering(config, seed):
            raise
        raise render_failure(config, "making it with render_mode='rgb_array'", error) from None
    try:
        env.reset(seed=seed)
    except Exception as error:
        _close_quietly(env)
        if _fails_without_rendering(config, seed):
            raise
        raise render_failure(config, "env.reset() with render_mode='rgb_array'", error) from None
    try:
        render_frame(env)
    except RenderFailed as failed:
        _close_quietly(env)
        raise render_failure(config, "env.render()", failed.__cause__) from None
    return env


def render_failure(config: Config, step: str, error: BaseException | None) -> SystemExit:
    """The one-paragraph exit of ``seed-rl eval --video`` when ``step`` raised ``error``
    while rendering: the exception (``mujoco.FatalError: ...``) and what usually fixes it."""
    kind = type(error)
    module = kind.__module__.split(".")[0]
    name = kind.__name__ if module == "builtins" else f"{module}.{kind.__name__}"
    lines = str(error).strip().splitlines()
    text = wire.shorten(lines[0], 300) if lines else "(no message)"
    return SystemExit(
        f"--video: {config.env} cannot render its frames: {step} raised {name}: "
        f"{text}. Rendering needs a graphics backend this process can use: for MuJoCo set "
        "MUJOCO_GL=egl (with a GPU) or MUJOCO_GL=osmesa (software rendering); other OpenGL "
        "renderers read PYOPENGL_PLATFORM=egl or osmesa; or drop --video to play without "
        "frames.")


def _fails_without_rendering(config: Config, seed: int) -> bool:
    """Whether the environment also fails to be made or reset without ``render_mode``."""
    try:
        env = make_env(config.env, config.env_kwargs, config.env_import, config.env_wrapper,
                       "eval")
    except Exception:
        return True
    try:
        env.reset(seed=seed)
        return False
    except Exception:
        return True
    finally:
        _close_quietly(env)


def _close_quietly(env: gym.Env) -> None:
    """``env.close()``; a failure is logged, never raised (it must not hide the real exit)."""
    try:
        env.close()
    except Exception:
        log.debug("env.close() failed", exc_info=True)


def write_video(frames: list[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Write RGB ``frames`` to ``path``: ``.gif`` (pillow) or ``.mp4`` (imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    if not frames:
        raise SystemExit("the environment rendered no frames; nothing to write")
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".gif":
        # GIF is slow to encode and large: at most 25 fps (players honour ~50 at best) and
        # at most GIF_MAX_WIDTH pixels wide (every n-th pixel: simple renders stay crisp).
        step = max(1, round(fps / 25))
        shrink = max(1, math.ceil(frames[0].shape[1] / GIF_MAX_WIDTH))
        imageio.mimsave(
            path,
            [f[::shrink, ::shrink] for f in frames[::step]],
            format="GIF",
            duration=1000.0 * step / fps,
            loop=0,
        )
    elif suffix == ".mp4":
        try:
            import imageio_ffmpeg  # noqa: F401
        except ImportError:
            raise SystemExit(
                "writing MP4 needs imageio-ffmpeg: pip install "
                "imageio-ffmpeg (or write a .gif)"
            ) from None
        with imageio.get_writer(
            path, fps=fps, codec="libx264", quality=7, macro_block_size=8, ffmpeg_log_level="error"
        ) as writer:
            for frame in frames:
                writer.append_data(frame)
    else:
        raise SystemExit(f"--video {path}: give a .mp4 or a .gif file")
    return path


def main(resolved: cfg.Resolved, args: argparse.Namespace | None = None) -> int:
    """``seed-rl eval``: play a checkpoint, print the return statistics, write a video.

    The model plays with the config it was trained with; ``--env`` / ``--env-kwargs`` /
    ``--env-wrapper``, when given, change only the environment."""
    config = resolved.config
    if args is None or not getattr(args, "checkpoint", None):
        raise SystemExit("give --checkpoint PATH (a checkpoint file or a logdir)")
    episodes = int(getattr(args, "episodes", 10))
    if episodes <= 0:
        raise SystemExit(f"--episodes must be positive, got {episodes}")
    video = getattr(args, "video", None)
    if video and Path(video).suffix.lower() not in (".gif", ".mp4"):
        raise SystemExit(f"--video {video}: give a .mp4 or a .gif file")
    greedy = bool(getattr(args, "greedy", False))
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    model, trained, path, counters = load_policy(args.checkpoint)
    play_config = trained
    overrides = {
        name: getattr(config, name) for name in ("env", "env_kwargs", "env_wrapper")
        if name in resolved.given
    }
    if overrides:
        play_config = dataclasses.replace(trained, **overrides)
    torch.manual_seed(config.seed)
    env = recording_env(play_config, config.seed) if video else env_or_exit(play_config)
    try:
        started = time.monotonic()
        stats = play_episodes(
            model, env, episodes, greedy=greedy, seed=config.seed, record=bool(video)
        )
        fps = float(env.metadata.get("render_fps") or 30)
    except RenderFailed as failed:  # a later frame
        raise render_failure(play_config, "env.render()", failed.__cause__) from None
    finally:
        _close_quietly(env)
    summary = stats.summary()
    print(
        f"seed-rl eval: {path} ({play_config.env}, {counters.get('env_steps', 0):,} env "
        f"steps of training)"
    )
    print(
        f"  {episodes} episode(s), {'greedy' if greedy else 'sampled'} actions, seed "
        f"{config.seed}, {time.monotonic() - started:.1f} s"
    )
    print(
        f"  return  mean {summary['episode_return_mean']:.2f}  std "
        f"{summary['episode_return_std']:.2f}  min {summary['episode_return_min']:.2f}  "
        f"max {summary['episode_return_max']:.2f}"
    )
    print(f"  length  mean {summary['episode_length_mean']:.1f}")
    if video:
        written = write_video(stats.frames, video, fps)
        capped = len(stats.frames) >= MAX_VIDEO_FRAMES
        print(
            f"  video   {written} ({len(stats.frames)} frames"
            f"{', capped: the first episodes only' if capped else ''})"
        )
    sys.stdout.flush()
    return 0
