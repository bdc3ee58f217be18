"""The shipped presets: one TOML file per environment, flat keys named like the flags.

A preset is the first layer over the defaults for every role that trains (``seed-rl
train``, ``seed-rl learner``, the learner image): named with ``--preset NAME``, or found
by its ``env`` key when ``--env`` names an environment that has one. Torch-free.

A preset whose environment pays a bounded reward per step says so (``max_reward_per_step``):
with the episodes' step limit it bounds the return, and the learner warns at start-up when
the preset's ``target_return`` is out of reach, e.g. after ``--env-kwargs
'{"max_episode_steps": N}'`` shortened the episodes (learner/running/reachable.py).
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

#: ``--preset none`` (or ``SEED_RL_PRESET=none``): apply no preset, not even the env's.
NO_PRESET = "none"


def preset_dir() -> Path:
    """The folder of the shipped presets (package data of ``seed_rl``)."""
    return Path(str(resources.files("seed_rl").joinpath("presets")))


def shipped() -> dict[str, Path]:
    """Preset name (the file stem, e.g. ``cartpole``) -> TOML file."""
    folder = preset_dir()
    return {p.stem: p for p in sorted(folder.glob("*.toml"))} if folder.is_dir() else {}


def for_env(env_id: str) -> Path | None:
    """The shipped preset whose ``env`` is ``env_id`` (None when none is shipped)."""
    for path in shipped().values():
        if tomllib.loads(path.read_text()).get("env") == env_id:
            return path
    return None


def named(name: str) -> Path:
    """The shipped preset ``name`` (``cartpole``, ``pong``...); LookupError names the
    choices when there is none."""
    presets = shipped()
    key = name.lower().removesuffix(".toml")
    if key not in presets:
        raise LookupError(f"--preset {name}: no such preset; shipped presets: "
                          f"{', '.join(presets) or '(none found)'}, or {NO_PRESET} (or give "
                          "your own TOML file with --config FILE)")
    return presets[key]
