"""Playing a policy: the episodes loop both evaluations share, and the learner's periodic
greedy evaluation.

:func:`play_episodes` plays a model (an ``ActorCritic`` of learner/training/models.py,
passed in, so this module depends on no training code) on a local gymnasium environment,
the way the actors would: observations written into the wire's row layout, Box actions
clipped. ``seed-rl eval`` (learner/running/evaluate.py) plays a checkpoint with it.

``--eval-every SECONDS`` (learner, train): :class:`PeriodicEvaluator` is a learner thread
that, every that many seconds, copies the current weights and plays ``--eval-episodes``
greedy episodes on environments of its own (made by ``seed_rl.envs.making.make_env``, like
the actors', seeded apart from theirs), and logs them as ``eval/*`` in ``metrics.jsonl`` and
TensorBoard.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from seed_rl.config import Config
from seed_rl.envs.making import make_env

log = logging.getLogger(__name__)

#: A video holds at most this many frames (the statistics still cover every episode):
#: 3000 CartPole frames are one minute at its 50 fps, and a few MB as a GIF.
MAX_VIDEO_FRAMES = 3000
#: The periodic evaluator's env seeds start here, far from the actors' seeds.
EVAL_SEED_OFFSET = 1_000_003


class RenderFailed(Exception):
    """``env.render()`` raised while recording (its error is the ``__cause__``)."""


def render_frame(env: gym.Env) -> np.ndarray:
    """One RGB frame of ``env``; RenderFailed when rendering raises (no display, no OpenGL)."""
    try:
        return np.asarray(env.render())
    except Exception as error:
        raise RenderFailed(f"{type(error).__name__}: {error}") from error


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


@torch.inference_mode()
def play_episodes(
    model: torch.nn.Module,
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
    kept, at most ``max_frames`` (RenderFailed when rendering raises). ``stop`` ends early
    (the stats then hold fewer episodes).
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
            stats.frames.append(render_frame(env))
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
                stats.frames.append(render_frame(env))
        stats.returns.append(episode_return)
        stats.lengths.append(length)
        observation, _ = env.reset()
    return stats


class PeriodicEvaluator:
    """Greedy evaluation in a learner thread every ``config.eval_every`` seconds.

    It keeps its own copy of the model and its own environment. Each round copies the
    published weights in through their reader (``learner.trainer.weights``, a
    learner/training/weights.py ``PublishedWeights``: lock, version and CUDA events), so a
    half-copied model is never read and the version is the one of the weights played. A
    failure stops the learner (``learner.failure``), it is never swallowed.
    """

    def __init__(self, learner: Any):
        self.learner = learner
        self.config: Config = learner.config
        self.model = learner.trainer.weights.clone().eval()
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
        version = learner.trainer.weights.copy_to(self.model)
        config = self.config
        env = make_env(config.env, config.env_kwargs, config.env_import, config.env_wrapper,
                       "periodic evaluator")
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
