"""The one typed configuration of seed-rl: every knob of every role lives here.

:func:`resolve` is the one place a :class:`Config` is made from its sources, in rising order
of precedence: the defaults below, a shipped preset (``--preset NAME``, or the preset of
``--env``; roles that train only), a TOML file (``--config FILE``), environment variables
(``SEED_RL_<FIELD>``, e.g. ``SEED_RL_LEARNER=learner:50051``) and command-line flags
(``--field-name``). It also says which fields were given (:class:`Resolved`), so a role can
fill in its own defaults for the rest. The learner saves the resolved config as
``LOGDIR/config.json``.

Each field says which roles read it (``learner``, ``actors``, ``train``, ``eval``); the CLI
offers a role exactly those flags. Torch-free: actors import this module.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

ENV_PREFIX = "SEED_RL_"
SECRET_FIELDS = frozenset({"auth_token"})

LEARNER = ("learner", "train")
ACTORS = ("actors", "train")
ALL = ("learner", "actors", "train", "eval")
SERVING = ("learner", "actors", "train")


def knob(default: Any, help: str, roles: tuple[str, ...], **kw: Any) -> Any:
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d),
                     metadata={"help": help, "roles": roles, **kw})
    return field(default=default, metadata={"help": help, "roles": roles, **kw})


@dataclass
class Config:
    """Every knob of a seed-rl run. Units are in the help texts."""

    # -- environment ---------------------------------------------------------------------
    env: str = knob("CartPole-v1", "gymnasium environment id (actors without --env ask the "
                    "learner)", ALL)
    preset: str = knob("", "shipped preset to start from: cartpole, acrobot, lunarlander, "
                       "pong (seed_rl/presets/NAME.toml); empty: the preset of --env if one "
                       "is shipped; none: no preset. --config, SEED_RL_* and flags override "
                       "it. config.json records the preset applied", ("learner", "train"))
    env_kwargs: dict = knob({}, "keyword arguments for gymnasium.make, as JSON", ALL)
    env_import: list = knob([], "Python code to import before any environment is made, "
                            "comma-separated: a module (its import registers env ids) or "
                            "module:function (called once), e.g. minatar.gym:register_envs; "
                            "the learner, every actor and eval run it (actors without it "
                            "learn it from the learner)", ALL)
    seed: int = knob(0, "base random seed; actor i seeds its envs from (seed, actor id)", ALL)

    # -- actors --------------------------------------------------------------------------
    learner: str = knob("127.0.0.1:50051", "learner address HOST:PORT the actors connect to",
                        ("actors",))
    num_actors: int = knob(2, "actor processes to run", ACTORS)
    envs_per_actor: int = knob(32, "environments stepped by each actor process (K)", ACTORS)
    env_groups: str = knob("auto", "G: split each actor's K environments into G groups, each "
                           "its own learner session and stream, so the actor steps one group "
                           "while the learner answers another (2: double buffering); auto: 2 "
                           "when --learner is not loopback, 1 on loopback", ACTORS)
    actor_id_prefix: str = knob("", "prefix of actor ids (default: the host name); ids must "
                                "be unique across machines", ACTORS)
    reconnect_max_backoff: float = knob(2.0, "cap of the reconnect backoff, seconds (a "
                                        "restarted learner is rejoined within about this)",
                                        ACTORS)
    max_restarts: int = knob(5, "crash-loop limit: restarts of one actor within "
                             "restart_window seconds before giving up", ACTORS)
    restart_window: float = knob(60.0, "window of the crash-loop limit, seconds", ACTORS)
    status_every: float = knob(10.0, "seconds between status lines (0: never)", SERVING)

    # -- learner service -----------------------------------------------------------------
    address: str = knob("127.0.0.1:50051", "address the learner listens on, HOST:PORT "
                        "(port 0 picks a free one)", LEARNER)
    logdir: str = knob("runs/default", "run directory: checkpoints, metrics, TensorBoard, "
                       "config", ("learner", "train"))
    device: str = knob("auto", "torch device of the learner: auto, cpu, cuda, cuda:N", LEARNER)
    max_batch: int = knob(1024, "inference batch: most environments in one forward pass",
                          LEARNER)
    max_wait_ms: float = knob(2.0, "inference batch: longest wait for more requests, ms",
                              LEARNER)
    max_message_bytes: int = knob(64 * 1024 * 1024, "largest gRPC message accepted, bytes",
                                  LEARNER)
    max_envs_per_actor: int = knob(4096, "largest K one actor may ask for", LEARNER)
    max_total_envs: int = knob(16384, "most environments across all actors at once (each "
                               "keeps T+1 steps in learner memory); beyond it handshakes "
                               "get RESOURCE_EXHAUSTED and actors retry", LEARNER)
    max_streams: int = knob(4096, "most actor streams (sessions) at once, each a coroutine "
                            "and a socket in the learner; beyond it handshakes get "
                            "RESOURCE_EXHAUSTED and actors retry", LEARNER)
    stream_idle_timeout: float = knob(30.0, "an actor silent this long (seconds) is "
                                      "disconnected and its slots freed", LEARNER)

    # -- model ---------------------------------------------------------------------------
    hidden_sizes: list = knob([64, 64], "MLP widths for the non-image parts of "
                              "observations (comma-separated)", LEARNER, elem=int)
    lstm: bool = knob(False, "add an LSTM core (state kept per environment)", LEARNER)
    lstm_size: int = knob(128, "LSTM hidden units", LEARNER)
    conv_net: str = knob("nature", "conv torso for images: nature (Nature DQN), impala "
                         "(IMPALA ResNet) or minatar (one 3x3 conv + 128 units, for small "
                         "images such as MinAtar's 10x10)", LEARNER)

    # -- training (IMPALA, Espeholt et al. 2018) -----------------------------------------
    unroll_length: int = knob(20, "T: steps per unroll (each unroll stores T+1 slots)", LEARNER)
    batch_size: int = knob(32, "B: unrolls per training step", LEARNER)
    discount: float = knob(0.99, "gamma", LEARNER)
    optimizer: str = knob("rmsprop", "rmsprop or adam", LEARNER)
    learning_rate: float = knob(6e-4, "learning rate", LEARNER)
    lr_decay: bool = knob(False, "decay the learning rate linearly to 0 at total_steps",
                          LEARNER)
    rmsprop_alpha: float = knob(0.99, "RMSprop smoothing constant", LEARNER)
    rmsprop_momentum: float = knob(0.0, "RMSprop momentum", LEARNER)
    rmsprop_eps: float = knob(0.01, "RMSprop epsilon (IMPALA's value; large on purpose: it "
                              "damps steps where the squared-gradient average is tiny)",
                              LEARNER)
    adam_eps: float = knob(1e-8, "Adam epsilon", LEARNER)
    max_grad_norm: float = knob(40.0, "clip the global gradient norm to this (0: off)",
                                LEARNER)
    baseline_cost: float = knob(0.5, "weight of the value loss", LEARNER)
    entropy_cost: float = knob(0.01, "weight of the entropy loss", LEARNER)
    reward_scale: float = knob(1.0, "multiply rewards by this for training, before clipping "
                               "(returns shown are never scaled)", LEARNER)
    reward_clip: float = knob(0.0, "clip rewards to [-c, c] for training (0: off)", LEARNER)
    clip_rho_threshold: float = knob(1.0, "V-trace rho-bar", LEARNER)
    clip_pg_rho_threshold: float = knob(1.0, "V-trace rho-bar of the policy gradient", LEARNER)
    replicas: int = knob(1, "data-parallel learner replicas on this machine (seed-rl learner "
                         "starts them; each serves actors on --address's port + its rank "
                         "and takes --batch-size / replicas unrolls per update)", LEARNER)
    advertise_address: str = knob(
        "", "HOST:PORT this replica gives actors in redirects to it ('' derives it from "
        "--address: its host and bound port, or the host the actor dialled when listening on "
        "every interface). Set it when actors reach replicas through other names, e.g. pods "
        "behind a Kubernetes headless service: learner-{rank}.learner.NAMESPACE.svc:50051 "
        "({rank} becomes the replica's rank; the port is + the local rank, as for --address)",
        LEARNER)
    replica_wait: float = knob(0.5, "seconds a replica waits for a full local batch before "
                               "the others update without it", LEARNER)
    max_policy_lag: int = knob(50, "drop unrolls older than this many policy versions",
                               LEARNER)
    queue_size: int = knob(8, "unroll queue capacity, in batches of B unrolls "
                           "(backpressure beyond it)", LEARNER)

    # -- stop criteria -------------------------------------------------------------------
    total_steps: int = knob(0, "stop after this many env steps (0: no limit)", LEARNER)
    max_time: float = knob(0.0, "stop after this many seconds of this run (0: no limit)",
                           LEARNER)
    target_return: float = knob(float("nan"), "stop when the mean return of the last 100 "
                                "episodes reaches this (nan: never)", LEARNER)
    max_reward_per_step: float = knob(float("nan"), "the most one env step can pay, when "
                                      "known (nan: unknown; set by the presets of envs whose "
                                      "reward is bounded): times the env's step limit, the "
                                      "most an episode can return; the learner warns at "
                                      "start-up when --target-return is above it", LEARNER)

    # -- state and observability ---------------------------------------------------------
    checkpoint_every: float = knob(300.0, "seconds between checkpoints (and one at exit)",
                                   LEARNER)
    resume: bool = knob(True, "resume from the logdir's latest checkpoint", LEARNER)
    log_every: float = knob(2.0, "seconds between metrics.jsonl lines", LEARNER)
    eval_every: float = knob(0.0, "seconds between greedy evaluations during training "
                             "(0: off)", LEARNER)
    eval_episodes: int = knob(5, "episodes per evaluation", ("learner", "train", "eval"))
    wandb: bool = knob(False, "also log the metrics and the config to Weights & Biases "
                       "(pip install 'seed-rl[wandb]'); the same scalars as TensorBoard",
                       LEARNER)
    wandb_project: str = knob("seed-rl", "Weights & Biases project", LEARNER)
    wandb_entity: str = knob("", "Weights & Biases entity (team or user; empty: yours)",
                             LEARNER)
    wandb_run_name: str = knob("", "Weights & Biases run name (empty: the logdir's name); "
                               "a resumed logdir continues its W&B run", LEARNER)
    wandb_mode: str = knob("", "online, offline (no network; sync later with `wandb sync`) "
                           "or disabled; empty: wandb's default (WANDB_MODE)", LEARNER)

    # -- access control ------------------------------------------------------------------
    auth_token: str = knob("", "shared secret every RPC must carry (never logged)", SERVING)
    tls_cert: str = knob("", "PEM certificate: the learner's server certificate, or an "
                         "actor's client certificate for mutual TLS", SERVING)
    tls_key: str = knob("", "PEM private key for --tls-cert", SERVING)
    tls_ca: str = knob("", "actors: PEM CA that signed the learner's certificate",
                       ("actors", "train"))
    tls_client_ca: str = knob("", "learner: PEM CA that actor certificates must chain to "
                              "(mutual TLS)", LEARNER)

    def to_json_dict(self, *, redact: bool = True) -> dict[str, Any]:
        """The config as plain JSON values; secrets are replaced by a marker."""
        out = dataclasses.asdict(self)
        for name in SECRET_FIELDS:
            if redact and out.get(name):
                out[name] = "<redacted>"
        for name, value in out.items():
            if isinstance(value, float) and value != value:  # nan is not JSON
                out[name] = None
        return out

    def save(self, path: str | os.PathLike) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.to_json_dict(), indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


def field_type(name: str) -> type:
    """The Python type of field ``name`` (bool, int, float, str, list, dict)."""
    return _HINTS[name]


def roles_of(name: str) -> tuple[str, ...]:
    return FIELDS[name].metadata["roles"]


def fields_for(role: str) -> list[dataclasses.Field]:
    return [f for f in dataclasses.fields(Config) if role in f.metadata["roles"]]


def flag_name(name: str) -> str:
    return "--" + name.replace("_", "-")


def env_var_name(name: str) -> str:
    return ENV_PREFIX + name.upper()


class ConfigError(ValueError):
    """A config value could not be understood; the text names the source and the field."""


#: what a bad value's error asks for, by field type
_EXPECTED = {bool: "true or false", int: "an integer", float: "a number",
             dict: "a JSON object, e.g. '{\"key\": 1}'", list: "a comma-separated list"}


def parse_value(name: str, raw: Any, source: str) -> Any:
    """Convert ``raw`` (a string from a flag or env var, or a TOML value) to the field type."""
    kind = _HINTS[name]
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
    from seed_rl import presets

    name = str(explicit.get("preset", "")).strip()
    if name.lower() == presets.NO_PRESET:
        return None
    if name:
        try:
            return presets.named(name)
        except LookupError as error:
            raise ConfigError(str(error)) from None
    return presets.for_env(explicit.get("env", Config.env))


# The checks live in their own module; re-exported here, where callers look for them.
from seed_rl.config_checks import validate  # noqa: E402
