"""Resolution: the one place a :class:`~seed_rl.config.fields.Config` is made from its sources.

In rising order of precedence: the defaults of the fields, a shipped preset (``--preset
NAME``, or the preset of ``--env``; roles that train only), a TOML file (``--config FILE``),
environment variables (``SEED_RL_<FIELD>``, e.g. ``SEED_RL_LEARNER=learner:50051``) and
command-line flags (``--field-name``). :func:`resolve` also says which fields were given
(:class:`Resolved`), so a role can fill in its own defaults for the rest, and runs the checks
of :mod:`seed_rl.config.checks` on the result. Every source's raw values are read here too
(:func:`parse_value`, :func:`load_toml`), so a bad value names the source it came from.
Torch-free.
"""

from __future__ import annotations

import argparse
import json
import os
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from seed_rl import presets
from seed_rl.config.checks import validate
from seed_rl.config.fields import (
    ENV_PREFIX,
    FIELDS,
    Config,
    ConfigError,
    env_var_name,
    field_type,
    fields_for,
    flag_name,
)

#: what a bad value's error asks for, by field type
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number",
             dict: "a JSON object, e.g. '{\"key\": 1}'", list: "a comma-separated list"}


def parse_value(name: str, raw: Any, source: str) -> Any:
    """Convert ``raw`` (a string from a flag or env var, or a TOML value) to the field type."""
    kind = field_type(name)
    if isinstance(kind, types.UnionType):  # pragma: no cover - no unions today
        kind = next(a for a in typing.get_args(kind) if a is not type(None))
    try:
        if kind is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in {"1", "true", "yes", "on"}:
                return True
            if text in {"0", "false", "no", "off"}:
                return False
            raise ValueError(f"not a boolean: {raw!r} (use true/false)")
        if kind is int:
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError(f"not an integer: {raw!r}")
            return int(raw)
        if kind is float:
            return float(raw)
        if kind is str:
            return str(raw)
        if kind is dict:
            value = json.loads(raw) if isinstance(raw, str) else raw
            if not isinstance(value, dict):
                raise ValueError(f"expected a JSON object, got {raw!r}")
            return dict(value)
        if kind is list:
            elem = FIELDS[name].metadata.get("elem", str)
            items = raw if isinstance(raw, list) else [s for s in str(raw).split(",") if s]
            return [elem(x) for x in items]
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{source}: bad value for {name}: {error}; give "
                          f"{_EXPECTED.get(kind, kind.__name__)}") from None
    raise ConfigError(f"{name}: unsupported type {kind}")  # pragma: no cover


def load_toml(path: str | os.PathLike) -> dict[str, Any]:
    """Read a TOML config (flat keys, or tables whose keys are fields) and check the keys."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    flat: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict) and key not in FIELDS:  # a [section] table
            flat.update(value)
        else:
            flat[key] = value
    values = {}
    for key, value in flat.items():
        name = key.replace("-", "_")
        if name not in FIELDS:
            raise ConfigError(f"config file {path}: unknown key {key!r}; see `seed-rl "
                              "train --help` for the knobs")
        values[name] = parse_value(name, value, f"config file {path}")
    return values


@dataclass(frozen=True)
class Resolved:
    """A config, which fields a person (or a preset) set, and the preset applied."""

    config: Config
    given: frozenset[str]  # set by a preset, the --config file, a SEED_RL_* variable or a flag
    preset: Path | None  # the shipped preset applied (None: none)


def resolve(args: argparse.Namespace | None, role: str, *,
            environ: typing.Mapping[str, str] | None = None) -> Resolved:
    """The config of ``role``: defaults < preset < --config file < env vars < flags.

    The preset applies to the roles that train (those that read ``preset``): the one named
    by ``--preset`` (or ``SEED_RL_PRESET``, or the config file), else the shipped preset of
    the resolved ``env``, unless the name is ``none``. ConfigError names the bad source.
    """
    environ = os.environ if environ is None else environ
    names = {f.name for f in fields_for(role)}
    explicit: dict[str, Any] = {}
    config_file = getattr(args, "config", None) if args is not None else None
    config_file = config_file or environ.get(ENV_PREFIX + "CONFIG")
    if config_file:
        explicit.update(load_toml(config_file))
    for name in names:
        raw = environ.get(env_var_name(name))
        if raw is not None and raw != "":
            explicit[name] = parse_value(name, raw, f"environment variable {env_var_name(name)}")
    if args is not None:
        for name in names:
            raw = getattr(args, name, None)
            if raw is not None:
                explicit[name] = parse_value(name, raw, f"flag {flag_name(name)}")

    preset = _find_preset(explicit) if "preset" in names else None
    preset_values = load_toml(preset) if preset is not None else {}
    values = {**preset_values, **explicit}
    if "preset" in names:
        values["preset"] = preset.stem if preset is not None else ""
    config = Config(**values)
    validate(config)
    return Resolved(config, frozenset(preset_values) | frozenset(explicit), preset)


def _find_preset(explicit: dict[str, Any]) -> Path | None:
    """The preset file to apply, from --preset or else from the env (None: none)."""
    name = str(explicit.get("preset", "")).strip()
    if name.lower() == presets.NO_PRESET:
        return None
    if name:
        try:
            return presets.named(name)
        except LookupError as error:
            raise ConfigError(str(error)) from None
    return presets.for_env(explicit.get("env", Config.env))
