"""Environments: how every process makes them, and the ones seed-rl ships (torch-free).

- :mod:`seed_rl.envs.making`: ``make_env``, the one way the learner, every actor, ``seed-rl
  train``, ``seed-rl eval`` and the periodic evaluator make an environment: ``--env-import``
  (the user's registration code) first, then ``gymnasium.make`` with ``--env-kwargs``, then
  each ``--env-wrapper``; its errors say what to install or set.
- :mod:`seed_rl.envs.atari`: ``Atari-v0``, ALE games with the DQN / IMPALA preprocessing.
- :mod:`seed_rl.envs.symbols`: telling a uint8 grid of symbol codes from an image of pixels
  (the learner warns at start-up and names the fix).

Importing this package registers ``Atari-v0`` (its module is imported only when one is
made), so the id ``seed_rl.envs:Atari-v0`` (gymnasium's ``module:EnvId`` form, which
imports the module first) works in every process without ``--env-import``; the ``pong``
preset names it.
"""

from __future__ import annotations

import gymnasium as gym

if "Atari-v0" not in gym.registry:
    gym.register("Atari-v0", entry_point="seed_rl.envs.atari:make_atari")
