"""The one typed configuration of seed-rl: every knob of every role, as a dataclass field.

Each field carries its default, a help text with its units, and which roles read it
(``learner``, ``actors``, ``train``, ``eval``, ``serve``); the CLI offers a role exactly those
flags.
This module is the bottom of :mod:`seed_rl.config`: it imports nothing else of the package,
so the checks (:mod:`seed_rl.config.checks`) and the resolution from flags, variables, files
and presets (:mod:`seed_rl.config.resolution`) build on it. Torch-free: actors import it.
"""

from __future__ import annotations

import dataclasses
import json
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ENV_PREFIX = "SEED_RL_"
SECRET_FIELDS = frozenset({"auth_token"})

# Which roles read a field: the CLI offers a role exactly the flags of its fields.
LEARNER = ("learner", "train")
ACTORS = ("actors", "train")
ALL = ("learner", "actors", "train", "eval")
CONNECTED = ("learner", "actors", "train")  # both ends of the gRPC connection
# The learner's serving side, which `seed-rl serve` runs with training off: the model and
# the environment come from the checkpoint, these knobs from serve's own sources.
SERVED = (*LEARNER, "serve")
SECURED = (*CONNECTED, "serve")  # both ends, and seed-rl serve's end

# What a field is for: ``seed-rl ROLE --help`` shows one group per topic, in this order.
RL = "RL hyper-parameters"
MODEL = "model"
ENVIRONMENT = "environment"
SERVING = "serving"
RUN = "run and checkpoints"
LOGGING = "logging"
SECURITY = "security"
TOPICS: tuple[str, ...] = (RL, MODEL, ENVIRONMENT, SERVING, RUN, LOGGING, SECURITY)


def knob(default: Any, help: str, roles: tuple[str, ...], topic: str, **kw: Any) -> Any:
    """A Config field with its help text, the roles that read it and its ``--help`` topic
    (one of :data:`TOPICS`); ``kw`` adds metadata (``elem``: the type of a list's items)."""
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; the topics are {', '.join(TOPICS)}")
    metadata = {"help": help, "roles": roles, "topic": topic, **kw}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda d=default: type(d)(d), metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass
class Config:
    """Every knob of a seed-rl run, grouped by topic as ``--help`` shows them. Units are in
    the help texts."""

    # -- RL hyper-parameters (IMPALA, Espeholt et al. 2018) ------------------------------
    unroll_length: int = knob(20, "T: steps per unroll (each unroll stores T+1 slots)", LEARNER,
                              RL)
    batch_size: int = knob(32, "B: unrolls per training step", LEARNER, RL)
    discount: float = knob(0.99, "gamma", LEARNER, RL)
    optimizer: str = knob("rmsprop", "rmsprop or adam", LEARNER, RL)
    learning_rate: float = knob(6e-4, "learning rate", LEARNER, RL)
    lr_decay: bool = knob(False, "decay the learning rate linearly to 0 at total_steps",
                          LEARNER, RL)
    rmsprop_alpha: float = knob(0.99, "RMSprop smoothing constant", LEARNER, RL)
    rmsprop_momentum: float = knob(0.0, "RMSprop momentum", LEARNER, RL)
    rmsprop_eps: float = knob(0.01, "RMSprop epsilon (IMPALA's value; large on purpose: it "
                              "damps steps where the squared-gradient average is tiny)",
                              LEARNER, RL)
    adam_eps: float = knob(1e-8, "Adam epsilon", LEARNER, RL)
    max_grad_norm: float = knob(40.0, "clip the global gradient norm to this (0: off); "
                                "metrics.jsonl's grad_clipped is the fraction of steps it "
                                "cut", LEARNER, RL)
    baseline_cost: float = knob(0.5, "weight of the value loss", LEARNER, RL)
    entropy_cost: float = knob(0.01, "weight of the entropy loss", LEARNER, RL)
    reward_scale: float = knob(1.0, "multiply rewards by this for training, before clipping "
                               "(returns shown are never scaled)", LEARNER, RL)
    reward_clip: float = knob(0.0, "clip rewards to [-c, c] for training (0: off)", LEARNER,
                              RL)
    clip_rho_threshold: float = knob(1.0, "V-trace rho-bar", LEARNER, RL)
    clip_pg_rho_threshold: float = knob(1.0, "V-trace rho-bar of the policy gradient", LEARNER,
                                        RL)
    vtrace_lambda: float = knob(1.0, "V-trace's lambda: the traces are c_t = lambda * "
                                "min(c-bar, rho_t); 1 is IMPALA's, below 1 shortens them "
                                "(less variance, more bias: GAE's lambda)", LEARNER, RL)
    max_policy_lag: int = knob(50, "drop unrolls older than this many policy versions",
                               LEARNER, RL)
    epochs: int = knob(1, "E: passes over each batch of B unrolls (sample reuse; the policy "
                       "version goes up by 1 per batch)", LEARNER, RL)
    minibatches: int = knob(1, "M: optimizer steps per pass, each on B/M whole unrolls, "
                            "shuffled per pass", LEARNER, RL)
    ppo_clip: float = knob(0.0, "eps of a PPO-style clipped surrogate on the V-trace "
                           "advantages (APPO); 0: IMPALA's policy gradient", LEARNER, RL)
    normalize_advantages: bool = knob(False, "normalise the policy-gradient advantages of "
                                      "each optimizer step to mean 0, std 1 (with "
                                      "--replicas: over the group's)", LEARNER, RL)
    popart: bool = knob(False, "PopArt: the value head learns normalised values, running "
                        "statistics of the V-trace targets scale them back to returns, and "
                        "the value loss and advantages are divided by their scale", LEARNER,
                        RL)
    popart_beta: float = knob(3e-4, "PopArt: step size of the statistics, per optimizer step",
                              LEARNER, RL)
    normalize_observations: bool = knob(False, "feed the network each Box observation "
                                        "element as (x - mean) / std, clipped to +-5, with "
                                        "running statistics of every element trained on so "
                                        "far (kept in the model and its checkpoints; with "
                                        "--replicas: the group's)", LEARNER, RL)
    loss_reduction: str = knob("sum", "sum (IMPALA's: the costs, --max-grad-norm and "
                               "--rmsprop-eps assume it) or mean over the steps of each "
                               "optimizer step", LEARNER, RL)

    # -- model ---------------------------------------------------------------------------
    hidden_sizes: list = knob([64, 64], "MLP widths for the non-image parts of "
                              "observations (comma-separated)", LEARNER, MODEL, elem=int)
    lstm: bool = knob(False, "add an LSTM core (state kept per environment)", LEARNER, MODEL)
    lstm_size: int = knob(128, "LSTM hidden units", LEARNER, MODEL)
    conv_net: str = knob("nature", "conv torso for images: nature (Nature DQN), impala "
                         "(IMPALA ResNet) or minatar (one 3x3 conv + 128 units, for small "
                         "images such as MinAtar's 10x10)", LEARNER, MODEL)

    # -- environment: which one, and how many copies step where --------------------------
    env: str = knob("CartPole-v1", "gymnasium environment id (actors without --env ask the "
                    "learner)", ALL, ENVIRONMENT)
    preset: str = knob("", "shipped preset to start from: cartpole, acrobot, lunarlander, "
                       "pong (seed_rl/presets/NAME.toml); empty: the preset of --env if one "
                       "is shipped; none: no preset. --config, SEED_RL_* and flags override "
                       "it. config.json records the preset applied", ("learner", "train"),
                       ENVIRONMENT)
    env_kwargs: dict = knob({}, "keyword arguments for gymnasium.make, as JSON", ALL,
                            ENVIRONMENT)
    env_import: list = knob([], "Python code to import before any environment is made, "
                            "comma-separated: a module (its import registers env ids) or "
                            "module:function (called once), e.g. minatar.gym:register_envs; "
                            "the learner, every actor and eval run it (actors without it "
                            "learn it from the learner)", ALL, ENVIRONMENT)
    env_wrapper: list = knob([], "wrappers applied to every environment after it is made, "
                             "comma-separated MODULE:CALLABLE, in order (the first "
                             "innermost): the callable takes the made env and returns the "
                             "wrapped env, e.g. minigrid.wrappers:ImgObsWrapper; the "
                             "learner, every actor and eval apply them (actors that ask the "
                             "learner for its env and have none take the learner's)", ALL,
                             ENVIRONMENT)
    num_actors: int = knob(2, "actor processes to run (a --deterministic learner: the fixed "
                           "number of actor sessions it waits for and serves)", CONNECTED,
                           ENVIRONMENT)
    envs_per_actor: int = knob(32, "environments stepped by each actor process (K; a "
                               "--deterministic learner: each of its actors' K)", CONNECTED,
                               ENVIRONMENT)
    env_groups: str = knob("auto", "G: split each actor's K environments into G groups, each "
                           "its own learner session and stream, so the actor steps one group "
                           "while the learner answers another (2: double buffering); auto: 2 "
                           "when --learner is not loopback, 1 on loopback", ACTORS, ENVIRONMENT)

    # -- serving: the learner's gRPC service and the actors' connection to it ------------
    address: str = knob("127.0.0.1:50051", "address the learner listens on, HOST:PORT "
                        "(port 0 picks a free one)", SERVED, SERVING)
    learner: str = knob("127.0.0.1:50051", "learner address HOST:PORT the actors connect to",
                        ("actors",), SERVING)
    advertise_address: str = knob(
        "", "HOST:PORT this replica gives actors in redirects to it ('' derives it from "
        "--address: its host and bound port, or the host the actor dialled when listening on "
        "every interface). Set it when actors reach replicas through other names, e.g. pods "
        "behind a Kubernetes headless service: learner-{rank}.learner.NAMESPACE.svc:50051 "
        "({rank} becomes the replica's rank; the port is + the local rank, as for --address)",
        LEARNER, SERVING)
    max_batch: int = knob(1024, "inference batch: most environments in one forward pass",
                          SERVED, SERVING)
    max_wait_ms: float = knob(2.0, "inference batch: longest wait for more requests, ms",
                              SERVED, SERVING)
    queue_size: int = knob(1, "unroll queue capacity, in batches of B unrolls "
                           "(backpressure beyond it). Every queued batch adds one policy "
                           "version of lag to the data once the trainer is the bottleneck; "
                           "1 (SEED's own queue holds one unroll) keeps the data fresh, more "
                           "smooths out bursty actors at that price", LEARNER, SERVING)
    max_message_bytes: int = knob(64 * 1024 * 1024, "largest gRPC message accepted, bytes",
                                  SERVED, SERVING)
    max_envs_per_actor: int = knob(4096, "largest K one actor may ask for", SERVED, SERVING)
    max_total_envs: int = knob(16384, "most environments across all actors at once (each "
                               "keeps T+1 steps in learner memory); beyond it handshakes "
                               "get RESOURCE_EXHAUSTED and actors retry", SERVED, SERVING)
    max_streams: int = knob(4096, "most actor streams (sessions) at once, each a coroutine "
                            "and a socket in the learner; beyond it handshakes get "
                            "RESOURCE_EXHAUSTED and actors retry", SERVED, SERVING)
    listeners: int = knob(256, "gRPC servers sharing the learner's port (SO_REUSEPORT), each "
                          "accepting new RPCs by itself: gRPC's asyncio server takes one new "
                          "RPC per turn of a busy loop, so more listeners take a reconnect "
                          "storm faster", SERVED, SERVING)
    stream_idle_timeout: float = knob(30.0, "an actor silent this long (seconds) is "
                                      "disconnected and its slots freed", SERVED, SERVING)
    reconnect_max_backoff: float = knob(2.0, "cap of the reconnect backoff, seconds (a "
                                        "restarted learner is rejoined within about this)",
                                        ACTORS, SERVING)
    actor_id_prefix: str = knob("", "prefix of actor ids (default: the host name); ids must "
                                "be unique across machines", ACTORS, SERVING)

    # -- run and checkpoints: where it runs, when it stops, what survives a restart ------
    logdir: str = knob("runs/default", "run directory: checkpoints, metrics, TensorBoard, "
                       "config (seed-rl serve: its metrics and config; default runs/serve)",
                       SERVED, RUN)
    resume: bool = knob(True, "resume from the logdir's latest checkpoint", LEARNER, RUN)
    checkpoint_every: float = knob(300.0, "seconds between checkpoints (and one at exit)",
                                   LEARNER, RUN)
    follow_every: float = knob(5.0, "seed-rl serve --follow RUN: seconds between looks for "
                                "a newer checkpoint of RUN", ("serve",), RUN)
    total_steps: int = knob(0, "stop after this many env steps (0: no limit)", SERVED, RUN)
    max_time: float = knob(0.0, "stop after this many seconds of this run (0: no limit)",
                           SERVED, RUN)
    target_return: float = knob(float("nan"), "stop when the mean return of the last 100 "
                                "episodes reaches this (nan: never)", LEARNER, RUN)
    target_source: str = knob("", "where --target-return comes from (a paper or library, "
                              "its setting and budget), shown beside it", LEARNER, RUN)
    max_reward_per_step: float = knob(float("nan"), "the most one env step can pay, when "
                                      "known (nan: unknown; set by the presets of envs whose "
                                      "reward is bounded): times the env's step limit, the "
                                      "most an episode can return; the learner warns at "
                                      "start-up when --target-return is above it", LEARNER, RUN)
    seed: int = knob(0, "base random seed; actor i seeds its envs from (seed, actor id)",
                     (*ALL, "serve"), RUN)
    deterministic: bool = knob(False, "reproducible mode: the same seed gives the same "
                               "updates and weights (a fixed set of --num-actors actors of "
                               "--envs-per-actor envs stepped in lockstep, actions sampled "
                               "from noise keyed by (seed, env, step), one rollout of policy "
                               "lag; with --replicas N each replica serves a fixed share; "
                               "docs/reliability.md, 'Deterministic mode')", CONNECTED,
                               RUN)
    device: str = knob("auto", "torch device of the learner: auto, cpu, cuda, cuda:N", SERVED,
                       RUN)
    torch_threads: int = knob(0, "intra-op threads of the learner's torch, for training and "
                              "inference on the CPU (0: torch's default, one per core; 1 "
                              "leaves the other cores to the actors of seed-rl train)",
                              SERVED, RUN)
    replicas: int = knob(1, "data-parallel learner replicas on this machine (seed-rl learner "
                         "starts them; each serves actors on --address's port + its rank "
                         "and takes --batch-size / replicas unrolls per update)", LEARNER, RUN)
    replica_wait: float = knob(0.5, "seconds a replica waits for a full local batch before "
                               "the others update without it", LEARNER, RUN)
    max_restarts: int = knob(5, "crash-loop limit: restarts of one actor within "
                             "restart_window seconds before giving up", ACTORS, RUN)
    restart_window: float = knob(60.0, "window of the crash-loop limit, seconds", ACTORS, RUN)

    # -- logging: what a run reports while it trains -------------------------------------
    log_every: float = knob(2.0, "seconds between metrics.jsonl lines", SERVED, LOGGING)
    status_every: float = knob(10.0, "seconds between status lines (0: never)", SECURED,
                               LOGGING)
    eval_every: float = knob(0.0, "seconds between greedy evaluations during training "
                             "(0: off)", LEARNER, LOGGING)
    eval_episodes: int = knob(5, "episodes per periodic evaluation (--eval-every; seed-rl "
                              "eval plays --episodes)", LEARNER, LOGGING)
    wandb: bool = knob(False, "also log the metrics and the config to Weights & Biases "
                       "(pip install 'seed-rl[wandb]'); the same scalars as TensorBoard",
                       LEARNER, LOGGING)
    wandb_project: str = knob("seed-rl", "Weights & Biases project", LEARNER, LOGGING)
    wandb_entity: str = knob("", "Weights & Biases entity (team or user; empty: yours)",
                             LEARNER, LOGGING)
    wandb_run_name: str = knob("", "Weights & Biases run name (empty: the logdir's name); "
                               "a resumed logdir continues its W&B run", LEARNER, LOGGING)
    wandb_mode: str = knob("", "online, offline (no network; sync later with `wandb sync`) "
                           "or disabled; empty: wandb's default (WANDB_MODE)", LEARNER,
                           LOGGING)

    # -- security: who may talk to the learner -------------------------------------------
    auth_token: str = knob("", "shared secret every RPC must carry (never logged)", SECURED,
                           SECURITY)
    tls_cert: str = knob("", "PEM certificate: the learner's server certificate, or an "
                         "actor's client certificate for mutual TLS", SECURED, SECURITY)
    tls_key: str = knob("", "PEM private key for --tls-cert", SECURED, SECURITY)
    tls_ca: str = knob("", "actors: PEM CA that signed the learner's certificate",
                       ("actors", "train"), SECURITY)
    tls_client_ca: str = knob("", "learner: PEM CA that actor certificates must chain to "
                              "(mutual TLS)", SERVED, SECURITY)

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
_UNFILED = [name for name, f in FIELDS.items() if f.metadata.get("topic") not in TOPICS]
if _UNFILED:  # a field made without knob(): --help would have nowhere to show it
    raise TypeError(f"Config fields without a topic of TOPICS: {', '.join(_UNFILED)}")


def field_type(name: str) -> type:
    """The Python type of field ``name`` (bool, int, float, str, list, dict)."""
    return _HINTS[name]


def roles_of(name: str) -> tuple[str, ...]:
    """The roles that read field ``name`` (``learner``, ``actors``, ``train``, ``eval``)."""
    return FIELDS[name].metadata["roles"]


def topic_of(name: str) -> str:
    """The ``--help`` topic of field ``name``, one of :data:`TOPICS`."""
    return FIELDS[name].metadata["topic"]


def fields_for(role: str) -> list[dataclasses.Field]:
    """The fields ``role`` reads, in declaration order (topic by topic)."""
    return [f for f in dataclasses.fields(Config) if role in f.metadata["roles"]]


def flag_name(name: str) -> str:
    """The command-line flag of field ``name``: ``max_batch`` -> ``--max-batch``."""
    return "--" + name.replace("_", "-")


def env_var_name(name: str) -> str:
    """The environment variable of field ``name``: ``max_batch`` -> ``SEED_RL_MAX_BATCH``."""
    return ENV_PREFIX + name.upper()


class ConfigError(ValueError):
    """A config value could not be understood; the text names the source and the field."""
