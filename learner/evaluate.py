"""Playing a trained policy: ``seed-rl eval`` and the learner's periodic greedy evaluation.

``seed-rl eval --checkpoint PATH_OR_LOGDIR [--episodes N] [--greedy] [--video FILE] [--seed S]``
loads a checkpoint with the config it was trained with, plays N episodes locally (no gRPC,
no actors), prints the mean, std, min and max return and, with ``--video``, writes the
episodes as an MP4 (imageio-ffmpeg) or a GIF (pillow).

``--eval-every SECONDS`` (learner, train): :class:`PeriodicEvaluator` is a learner thread
that, every that many seconds, copies the current weights and plays ``--eval-episodes``
greedy episodes on environments of its own (seeded apart from the actors'), and logs them
as ``eval/*`` in ``metrics.jsonl`` and TensorBoard.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import logging
import math
import os
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learner import checkpoint
from learner.models import ActorCritic, build_model
from seed_rl import config as cfg
from seed_rl import env_import
from seed_rl.config import Config

log = logging.getLogger(__name__)

#: A video holds at most this many frames (the statistics still cover every episode):
#: 3000 CartPole frames are one minute at its 50 fps, and a few MB as a GIF.
MAX_VIDEO_FRAMES = 3000
#: GIF frames are shrunk to at most this width (pixels).
GIF_MAX_WIDTH = 320
#: The periodic evaluator's env seeds start here, far from the actors' seeds.
EVAL_SEED_OFFSET = 1_000_003


@dataclass
class EpisodeStats:
    """The outcome of :func:`play_episodes`: one entry per episode."""

    returns: list[float] = field(default_factory=list)
    lengths: list[int] = field(default_factory=list)
    frames: list[np.ndarray] = field(default_factory=list)  # [H, W, 3] uint8, if recorded

    def summary(self) -> dict[str, float]:
        """Mean, std (population), min and max return and the mean length."""
        returns = np.asarray(self.returns, dtype=np.float64)
        return {
            "episodes": float(len(returns)),
            "episode_return_mean": float(returns.mean()),
            "episode_return_std": float(returns.std()),
            "episode_return_min": float(returns.min()),
            "episode_return_max": float(returns.max()),
            "episode_length_mean": float(np.mean(self.lengths)),
        }


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


def make_env(config: Config, render: bool = False) -> gym.Env:
    """The environment of ``config``, made the way the actors make it (``--env-import``
    first), rendering RGB frames when ``render``. SystemExit says what is missing."""
    extra = {"render_mode": "rgb_array"} if render else {}
    try:
        return env_import.make_env(config.env, config.env_kwargs, config.env_import, "eval",
                                   **extra)
    except (env_import.EnvImportError, env_import.EnvironmentUnavailable) as error:
        raise SystemExit(f"seed-rl eval: {error}") from None


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
            f"seed-rl eval: --checkpoint {target} does not exist; give a "
            "checkpoint file or the logdir of a run (e.g. runs/CartPole-v1)"
        )
    try:
        found = checkpoint.load_latest(target, map_location=device)
    except checkpoint.CheckpointError as error:
        raise SystemExit(f"seed-rl eval: {error}") from None
    if found is None:
        raise SystemExit(
            f"seed-rl eval: no readable checkpoint in {target} (looked in "
            f"{checkpoint.checkpoint_dir(target)}); train first with "
            f"`seed-rl train --logdir {target}`"
        )
    state, path = found
    config = config_from_json(state["config"])
    env = make_env(config)
    try:
        model = build_model(env.observation_space, env.action_space, config)
    finally:
        env.close()
    model.load_state_dict(state["model"])
    model.to(device).eval()
    return model, config, path, dict(state["counters"])


@torch.inference_mode()
def play_episodes(
    model: ActorCritic,
    env: gym.Env,
    episodes: int,
    *,
    greedy: bool,
    seed: int,
    record: bool = False,
    max_frames: int = MAX_VIDEO_FRAMES,
    stop: threading.Event | None = None,
) -> EpisodeStats:
    """Play ``episodes`` full episodes of ``env`` with ``model``, one at a time.

    Actions are sampled from the policy, or its most likely action with ``greedy`` (the
    argmax, or a Gaussian's mean); Box actions are clipped to the bounds before
    ``env.step``, as the actors do (seed_rl/spaces.py). A recurrent core starts each
    episode from its zero state. The first reset is seeded with ``seed`` (the
    environment's RNG carries on from there). With ``record``, the env's RGB frames are
    kept, at most ``max_frames``. ``stop`` ends early (the stats then hold fewer episodes).
    """
    device = next(model.parameters()).device
    layout, actions = model.observation_layout, model.action_layout
    row = np.zeros((1, *layout.row_shape), layout.row_dtype)  # one observation, as it travels
    stats = EpisodeStats()
    observation, _ = env.reset(seed=seed)
    for _ in range(episodes):
        state = model.initial_state(1, device)
        start = torch.ones(1, 1, dtype=torch.bool, device=device)
        episode_return, length, done = 0.0, 0, False
        if record and len(stats.frames) < max_frames:
            stats.frames.append(np.asarray(env.render()))
        while not done:
            if stop is not None and stop.is_set():
                return stats
            layout.write(row, 0, observation)
            output = model(torch.as_tensor(row, device=device)[None], start, state)
            state = output.core_state
            start = torch.zeros_like(start)
            sampled = model.distribution.sample(output.policy_params[0], greedy=greedy)
            action = actions.to_env(actions.to_wire(sampled.cpu().numpy())[0])
            observation, reward, terminated, truncated, _ = env.step(action)
            episode_return += float(reward)
            length += 1
            done = bool(terminated or truncated)
            if record and len(stats.frames) < max_frames:
                stats.frames.append(np.asarray(env.render()))
        stats.returns.append(episode_return)
        stats.lengths.append(length)
        observation, _ = env.reset()
    return stats


def write_video(frames: list[np.ndarray], path: str | os.PathLike, fps: float) -> Path:
    """Write RGB ``frames`` to ``path``: ``.gif`` (pillow) or ``.mp4`` (imageio-ffmpeg)."""
    import imageio.v2 as imageio

    path = Path(path)
    suffix = path.suffix.lower()
    if not frames:
        raise SystemExit("seed-rl eval: the environment rendered no frames; nothing to write")
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
                "seed-rl eval: writing MP4 needs imageio-ffmpeg: pip install "
                "imageio-ffmpeg (or write a .gif)"
            ) from None
        with imageio.get_writer(
            path, fps=fps, codec="libx264", quality=7, macro_block_size=8, ffmpeg_log_level="error"
        ) as writer:
            for frame in frames:
                writer.append_data(frame)
    else:
        raise SystemExit(f"seed-rl eval: --video {path}: give a .mp4 or a .gif file")
    return path


def main(resolved: cfg.Resolved, args: argparse.Namespace | None = None) -> int:
    """``seed-rl eval``: play a checkpoint, print the return statistics, write a video.

    The model plays with the config it was trained with; ``--env`` / ``--env-kwargs``, when
    given, change only the environment."""
    config = resolved.config
    if args is None or not getattr(args, "checkpoint", None):
        raise SystemExit("seed-rl eval: give --checkpoint PATH (a checkpoint file or a logdir)")
    episodes = int(getattr(args, "episodes", 10))
    if episodes <= 0:
        raise SystemExit(f"seed-rl eval: --episodes must be positive, got {episodes}")
    video = getattr(args, "video", None)
    if video and Path(video).suffix.lower() not in (".gif", ".mp4"):
        raise SystemExit(f"seed-rl eval: --video {video}: give a .mp4 or a .gif file")
    greedy = bool(getattr(args, "greedy", False))
    os.environ.setdefault("SDL_VIDEODRIVER", "dummy")  # pygame renders off-screen
    os.environ.setdefault("SDL_AUDIODRIVER", "dummy")

    model, trained, path, counters = load_policy(args.checkpoint)
    play_config = trained
    overrides = {
        name: getattr(config, name) for name in ("env", "env_kwargs") if name in resolved.given
    }
    if overrides:
        play_config = dataclasses.replace(trained, **overrides)
    torch.manual_seed(config.seed)
    env = make_env(play_config, render=bool(video))
    try:
        started = time.monotonic()
        stats = play_episodes(
            model, env, episodes, greedy=greedy, seed=config.seed, record=bool(video)
        )
        fps = float(env.metadata.get("render_fps") or 30)
    finally:
        env.close()
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


class PeriodicEvaluator:
    """Greedy evaluation in a learner thread every ``config.eval_every`` seconds.

    It keeps its own copy of the model (weights copied from the learner's inference model
    under its lock, so a half-updated model is never read) and its own environment. A
    failure stops the learner (``learner.failure``), it is never swallowed.
    """

    def __init__(self, learner: Any):
        self.learner = learner
        self.config: Config = learner.config
        self.model = copy.deepcopy(learner.trainer.inference_model).eval()
        self.stop_event = threading.Event()
        self.evaluations = 0
        self._thread = threading.Thread(target=self._run, name="evaluator", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(timeout=30)

    def evaluate_once(self) -> dict[str, float] | None:
        """Play one round of greedy episodes with the current weights; log and return the
        summary (None when stopped midway)."""
        learner = self.learner
        with learner.trainer.weights_lock:
            for target, source in zip(
                self.model.parameters(), learner.trainer.inference_model.parameters(), strict=True
            ):
                target.copy_(source)
            version = learner.trainer.policy_version
        env = make_env(self.config)
        try:
            stats = play_episodes(
                self.model,
                env,
                self.config.eval_episodes,
                greedy=True,
                seed=self.config.seed + EVAL_SEED_OFFSET + self.evaluations,
                stop=self.stop_event,
            )
        finally:
            env.close()
        if len(stats.returns) < self.config.eval_episodes:
            return None
        self.evaluations += 1
        summary = stats.summary()
        summary["policy_version"] = float(version)
        learner.metrics.add_eval(summary)
        log.info(
            "greedy evaluation at policy version %d: mean return %.1f (std %.1f) over %d episodes",
            version,
            summary["episode_return_mean"],
            summary["episode_return_std"],
            len(stats.returns),
        )
        return summary

    def _run(self) -> None:
        try:
            while not self.stop_event.wait(self.config.eval_every):
                self.evaluate_once()
        except BaseException as error:
            self.learner.failure = error
            log.exception("the greedy evaluator failed; the learner stops")
            self.learner.request_stop(f"evaluator failed: {error}")


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("run `seed-rl eval --help`")
