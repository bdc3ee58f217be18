"""Checkpoints to serve, for the ``seed-rl serve`` tests.

With a ``gain``, :func:`write_checkpoint` writes a real checkpoint (learner/training/checkpoint.py
``save``) of a CartPole model without hidden layers whose policy is a known controller:
logits ``(-g z / 2, g z / 2)`` with ``z = theta + theta_dot`` (pole angle and angular
velocity), so a sampled action pushes the cart under a falling pole with probability
``sigmoid(g z)``. With ``g = 2`` its episodes return about 100 (spread about 65), far from an
untrained model's about 22: a return any server of this checkpoint must reproduce.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import gymnasium as gym
import torch

from learner.training import checkpoint
from learner.training.models import build_model
from seed_rl.config import Config

#: the controller's weights on CartPole's observation (x, x_dot, theta, theta_dot)
CONTROLLER = (0.0, 0.0, 1.0, 1.0)


def write_checkpoint(logdir: Path, *, policy_version: int, train_steps: int | None = None,
                     env: str = "CartPole-v1", gain: float | None = 2.0,
                     **overrides) -> Path:
    """A checkpoint in ``logdir/checkpoints`` with these counters; for CartPole with
    ``gain``, the controller policy (module docstring), else the model as initialised."""
    config = dataclasses.replace(Config(), env=env, hidden_sizes=[], **overrides)
    probe = gym.make(env)
    model = build_model(probe.observation_space, probe.action_space, config)
    probe.close()
    if gain is not None:
        state = model.state_dict()
        direction = torch.tensor(CONTROLLER) * gain / 2
        state["policy.weight"].copy_(torch.stack([-direction, direction]))
        state["policy.bias"].zero_()
    steps = policy_version if train_steps is None else train_steps
    return checkpoint.save(logdir, {
        "model": model.state_dict(), "optimizer": {},
        "counters": {"env_steps": 1000 * steps, "train_steps": steps,
                     "policy_version": policy_version, "episodes": 0, "recent_returns": []},
        "config": json.dumps(config.to_json_dict()),
    }, keep=10)

