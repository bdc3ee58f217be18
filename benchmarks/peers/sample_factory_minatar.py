"""Sample Factory 2.1.1 (APPO) on a MinAtar game, for ``benchmarks/peer_sample_factory.py``.

Runs inside the peer's own virtual environment (Sample Factory pins gymnasium < 1.0), so it
imports nothing of seed-rl. The environment and the network are registered through Sample
Factory's documented custom-env and custom-encoder hooks (its
``sf_examples/train_custom_env_custom_model.py`` shows the same two calls):

* env: ``gymnasium.make("MinAtar/<Game>-v1")`` (minimal action set, as seed-rl's preset), the
  10x10xC bool frame turned into a C x 10 x 10 float32 image (Sample Factory's conv encoders
  read channels first);
* encoder: the MinAtar paper's torso, the one seed-rl's ``--conv-net minatar`` builds: one
  3x3 conv with 16 channels, stride 1, ReLU, then 128 fully connected units, ReLU.

Every other flag is passed to Sample Factory as given. When training ends, the run's
TensorBoard scalars are written to ``--curve`` as JSON lines ``{"wall_time": unix seconds,
"env_steps": n, "episode_return_mean": mean of the last --stats_avg (100) episodes}``, plus
one line per ``perf/_fps`` record as ``{"wall_time", "env_steps", "fps"}``.

Usage (inside the peer's venv):
    python sample_factory_minatar.py --minatar_id MinAtar/Breakout-v1 --curve OUT.jsonl \\
        --algo APPO --env minatar --experiment NAME --train_dir DIR [Sample Factory flags]
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
from sample_factory.algo.utils.context import global_model_factory
from sample_factory.algo.utils.misc import ExperimentStatus
from sample_factory.cfg.arguments import parse_full_cfg, parse_sf_args
from sample_factory.envs.env_utils import register_env
from sample_factory.model.encoder import Encoder
from sample_factory.train import run_rl
from torch import nn

ENV_NAME = "minatar"


class ChannelsFirstFloat(gym.ObservationWrapper):
    """H x W x C bool frames -> C x H x W float32 in [0, 1]."""

    def __init__(self, env: gym.Env):
        super().__init__(env)
        height, width, channels = env.observation_space.shape
        self.observation_space = gym.spaces.Box(0.0, 1.0, (channels, height, width), np.float32)

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return np.ascontiguousarray(np.transpose(observation, (2, 0, 1)), dtype=np.float32)


class MinAtarEncoder(Encoder):
    """One 3x3 conv (16 channels) and 128 units: (B, C, 10, 10) -> (B, 128)."""

    def __init__(self, cfg, obs_space):
        super().__init__(cfg)
        channels, height, width = obs_space["obs"].shape
        self.torso = nn.Sequential(
            nn.Conv2d(channels, 16, 3, stride=1), nn.ReLU(), nn.Flatten(),
            nn.Linear(16 * (height - 2) * (width - 2), 128), nn.ReLU())

    def forward(self, obs_dict):
        return self.torso(obs_dict["obs"])

    def get_out_size(self) -> int:
        return 128


def make_minatar(full_env_name, cfg=None, env_config=None, render_mode=None) -> gym.Env:
    """Sample Factory's env factory (module level: its workers are spawned processes)."""
    import minatar.gym

    minatar.gym.register_envs()
    return ChannelsFirstFloat(gym.make(cfg.minatar_id))


def main(argv: list[str]) -> int:
    register_env(ENV_NAME, make_minatar)
    global_model_factory().register_encoder_factory(MinAtarEncoder)
    parser, _ = parse_sf_args(argv)
    parser.add_argument("--minatar_id", required=True, help="e.g. MinAtar/Breakout-v1")
    parser.add_argument("--curve", required=True, help="where the JSON-lines curve goes")
    parser.add_argument("--stop_at", type=float, required=True,
                        help="interrupt training at this time (unix seconds)")
    cfg = parse_full_cfg(parser, argv)
    # Sample Factory 2.1.1's own --train_for_seconds never fires (Runner.total_train_seconds
    # stays 0), so the run interrupts itself as Ctrl-C would: the runner stops its workers,
    # flushes its summaries and returns INTERRUPTED. A background job of a non-interactive
    # shell starts with SIGINT ignored, and Python then leaves it ignored: restore it.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(max(0.0, cfg.stop_at - time.time()),
                            lambda: os.kill(os.getpid(), signal.SIGINT))
    timer.daemon = True
    timer.start()
    status = run_rl(cfg)
    timer.cancel()
    write_curve(Path(cfg.train_dir) / cfg.experiment / ".summary" / "0", Path(cfg.curve))
    return 0 if status in (ExperimentStatus.SUCCESS, ExperimentStatus.INTERRUPTED) else int(status)


def write_curve(summaries: Path, out: Path) -> None:
    """The run's mean episode return and fps records, in the order they were written."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(summaries), size_guidance={"scalars": 0})
    events.Reload()
    tags = events.Tags()["scalars"]
    lines = []
    if "reward/reward" in tags:
        lines += [{"wall_time": e.wall_time, "env_steps": e.step,
                   "episode_return_mean": e.value} for e in events.Scalars("reward/reward")]
    if "perf/_fps" in tags:
        lines += [{"wall_time": e.wall_time, "env_steps": e.step, "fps": e.value}
                  for e in events.Scalars("perf/_fps")]
    lines.sort(key=lambda line: line["wall_time"])
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
