"""A target return that the episodes cannot reach is said at start-up (issue 25: ``seed-rl
train --env-kwargs '{"max_episode_steps": 200}'`` kept the CartPole preset's target of 475,
which a 200-step episode paying 1 a step can never reach, and nothing said so). The rule
(learner/running/reachable.py): the most an episode returns is the env's step limit times
``max_reward_per_step``, which the presets of bounded-reward envs declare."""

from __future__ import annotations

import logging
import math

import gymnasium as gym
import pytest

from learner.running.reachable import most_return, unreachable_target
from seed_rl import cli, presets
from seed_rl import config as cfg

UNREACHABLE = "cannot be reached"


def resolve(role: str, *argv: str) -> cfg.Resolved:
    return cfg.resolve(cli.build_parser().parse_args([role, *argv]), role, environ={})


@pytest.mark.parametrize(("argv", "warned"), [
    ([], False),  # the preset's 475 within CartPole-v1's 500 steps
    (["--env-kwargs", '{"max_episode_steps": 200}'], True),
    (["--env-kwargs", '{"max_episode_steps": 200}', "--target-return", "190"], False),
    (["--env-kwargs", '{"max_episode_steps": 200}', "--target-return", "nan"], False),
    (["--env-kwargs", '{"max_episode_steps": 200}', "--max-reward-per-step", "nan"], False),
    (["--env", "Acrobot-v1", "--env-kwargs", '{"max_episode_steps": 50}'], False),
])
def test_the_learner_checks_the_target_at_start_up(tmp_path, caplog, argv, warned) -> None:
    pytest.importorskip("torch")
    import dataclasses

    from learner.running.learner import Learner

    config = resolve("learner", "--logdir", str(tmp_path / "run"), *argv).config
    config = dataclasses.replace(config, address="127.0.0.1:0")
    with caplog.at_level(logging.WARNING, logger="learner"):
        learner = Learner(config)
    learner.metrics.close()
    said = [r.getMessage() for r in caplog.records if UNREACHABLE in r.getMessage()]
    assert len(said) == int(warned), said
    expected_limit = 200 if "--env-kwargs" in argv and "Acrobot-v1" not in argv else None
    if expected_limit:
        assert learner.spec.max_episode_steps == expected_limit  # the env as made


def test_the_rule() -> None:
    cartpole = resolve("train").config
    assert cartpole.max_reward_per_step == 1.0 and cartpole.target_return == 475.0
    assert most_return(cartpole, 500) == 500.0
    assert unreachable_target(cartpole, 500) == ""
    assert unreachable_target(cartpole, 475) == ""  # exactly reachable
    assert UNREACHABLE in unreachable_target(cartpole, 474)
    assert unreachable_target(cartpole, None) == ""  # no step limit: nothing to say
    unknown = cfg.Config(target_return=475.0)  # no preset: the bound is unknown
    assert math.isnan(unknown.max_reward_per_step)
    assert unreachable_target(unknown, 200) == ""
    endless = cfg.Config(target_return=475.0, max_reward_per_step=1.0)
    assert "stop only at a signal (no --total-steps or --max-time)" in unreachable_target(
        endless, 200)
    negative = cfg.Config(target_return=-10.0, max_reward_per_step=-1.0)
    assert "--target-return -52.5" in unreachable_target(negative, 50)  # below -50


def test_every_declared_bound_lets_its_preset_reach_its_target() -> None:
    """With the env's own step limit each preset that declares a bound can reach its target
    (a wrong bound would warn on every plain run)."""
    checked = 0
    for name, path in presets.shipped().items():
        values = cfg.load_toml(path)
        if "max_reward_per_step" not in values:
            continue
        config = resolve("train", "--preset", name).config
        if config.env not in gym.registry:  # its package (e.g. popgym) is not installed
            continue
        limit = gym.spec(config.env).max_episode_steps
        assert unreachable_target(config, limit) == "", name
        checked += 1
    assert checked >= 3  # cartpole, acrobot, pendulum at least
    popgym = resolve("train", "--preset", "popgym-position-only-cartpole").config
    assert unreachable_target(popgym, 200) == ""  # its 200 steps x 1/200 = 1 >= 0.9
    assert "returns at most 0.5" in unreachable_target(popgym, 100)

