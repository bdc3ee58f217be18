"""Flags that are not run configuration (they say what to do, not how to train)."""

from __future__ import annotations

import argparse


def add_eval_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--checkpoint", required=True,
                        help="a checkpoint file, or a logdir (its latest checkpoint)")
    parser.add_argument("--episodes", type=int, default=10, help="episodes to play")
    parser.add_argument("--greedy", action="store_true",
                        help="take the most likely action instead of sampling")
    parser.add_argument("--video", default=None,
                        help="write the episodes to FILE.mp4 or FILE.gif")


def add_actors_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--actor-index", type=int, default=None,
                        help=argparse.SUPPRESS)  # a single child process (set by supervisor)


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--preset", default=None, metavar="NAME",
                        help="a shipped preset to start from (seed_rl/presets/NAME.toml: "
                        "cartpole, acrobot, lunarlander, pong); default: the preset of --env, "
                        "CartPole-v1 without --env. --config, SEED_RL_* variables and flags "
                        "override it")
