"""Whether ``--target-return`` can be reached at all, checked once at start-up.

A target above the most an episode can return never stops the run: it trains until
``--total-steps`` or ``--max-time`` (or for ever) while the status shows an ETA that
means nothing. Shortening the episodes does exactly that: ``seed-rl train --env-kwargs
'{"max_episode_steps": 200}'`` keeps the CartPole preset's target of 475, and a CartPole
episode of 200 steps returns at most 200.

The rule: the most an episode returns is the env's step limit (``max_episode_steps``: the
env's TimeLimit as made, so ``--env-kwargs`` counts) times ``--max-reward-per-step``.
Gymnasium 1.x has no per-step reward bound to read (``Env.reward_range`` is gone, and a
spec's ``reward_threshold`` is a target, not a bound), so the bound is declared: the
shipped presets of envs whose reward is bounded set ``max_reward_per_step``
(seed_rl/presets/*.toml say why), and a user can give it for their own env. Without a
bound or a step limit nothing is checked. The returns compared are the raw ones
(``--reward-scale`` scales only what the learner trains on).
"""

from __future__ import annotations

import math

from seed_rl.config import Config


def most_return(config: Config, max_episode_steps: int | None) -> float:
    """The most one episode can return (nan: unknown)."""
    if not max_episode_steps or not math.isfinite(config.max_reward_per_step):
        return math.nan
    return max_episode_steps * config.max_reward_per_step


def unreachable_target(config: Config, max_episode_steps: int | None) -> str:
    """A warning naming the target, the reachable maximum and the fix when
    ``config.target_return`` cannot be reached; "" when it can, or when unknown."""
    most = most_return(config, max_episode_steps)
    target = config.target_return
    if math.isnan(target) or math.isnan(most) or target <= most:
        return ""
    budget = " and ".join(
        [f"--total-steps {config.total_steps:,}"] * bool(config.total_steps)
        + [f"--max-time {config.max_time:g} s"] * bool(config.max_time)
    )
    return (
        f"--target-return {target:g} cannot be reached: {config.env} episodes end after at "
        f"most {max_episode_steps:,} steps (max_episode_steps) and a step pays at most "
        f"{config.max_reward_per_step:g} (--max-reward-per-step), so an episode returns at "
        f"most {most:g}; the run will stop only at "
        f"{budget or 'a signal (no --total-steps or --max-time)'}. Give a target at or "
        f"below that, e.g. --target-return {most - 0.05 * abs(most):g}, or --target-return "
        "nan to train to the budget"
    )
