"""The one typed configuration of seed-rl, laid out by role; import it from here.

Three modules, each importing only the ones above it:

* :mod:`seed_rl.config.fields`: the :class:`Config` dataclass, every knob's default, help
  text, roles and ``--help`` topic, and the names derived from a field (flag, variable).
* :mod:`seed_rl.config.checks`: :func:`validate`, the range and consistency checks.
* :mod:`seed_rl.config.resolution`: :func:`resolve`, the one place a Config is made:
  defaults < preset < ``--config FILE`` < ``SEED_RL_*`` variables < flags.

Callers write ``from seed_rl.config import Config, resolve``; the names below are the
package's public surface. Torch-free: actors import it.
"""

from __future__ import annotations

from seed_rl.config.checks import validate
from seed_rl.config.fields import (
    ENV_PREFIX,
    FIELDS,
    SECRET_FIELDS,
    TOPICS,
    Config,
    ConfigError,
    env_var_name,
    field_type,
    fields_for,
    flag_name,
    roles_of,
    topic_of,
)
from seed_rl.config.resolution import Resolved, load_toml, parse_value, resolve

__all__ = [
    "ENV_PREFIX",
    "FIELDS",
    "SECRET_FIELDS",
    "TOPICS",
    "Config",
    "ConfigError",
    "Resolved",
    "env_var_name",
    "field_type",
    "fields_for",
    "flag_name",
    "load_toml",
    "parse_value",
    "resolve",
    "roles_of",
    "topic_of",
    "validate",
]
