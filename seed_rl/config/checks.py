"""The range and consistency checks of a :class:`~seed_rl.config.fields.Config`.

Every value that cannot work is refused with a :class:`~seed_rl.config.fields.ConfigError`
that names the knob (as its flag) and what would work, at start-up rather than an hour into
a run. Called by :func:`~seed_rl.config.resolution.resolve` for every role, and by the
launchers that build a Config themselves (as ``seed_rl.config.validate``). Imports only
:mod:`seed_rl.config.fields`. Torch-free.
"""

from __future__ import annotations

from seed_rl.config.fields import Config, ConfigError, flag_name


def validate(config: Config) -> None:
    """Reject values that cannot work, saying which knob and what would."""
    positive = ["num_actors", "envs_per_actor", "unroll_length", "batch_size", "max_batch",
                "queue_size", "max_envs_per_actor", "lstm_size", "max_message_bytes",
                "max_total_envs", "max_streams", "listeners", "learning_rate", "reward_scale", "rmsprop_eps",
                "adam_eps",
                "clip_rho_threshold", "clip_pg_rho_threshold", "stream_idle_timeout",
                "log_every", "checkpoint_every", "eval_episodes", "replicas",
                "replica_wait", "follow_every", "epochs", "minibatches"]
    for name in positive:
        if not getattr(config, name) > 0:
            raise ConfigError(f"{flag_name(name)} must be positive, got {getattr(config, name)}")
    non_negative = {
        "reward_clip": "0 turns reward clipping off",
        "max_grad_norm": "0 turns gradient clipping off",
        "max_policy_lag": "0 keeps only unrolls of the current policy",
        "baseline_cost": "", "entropy_cost": "", "total_steps": "0: no limit",
        "max_time": "0: no limit", "eval_every": "0: off", "status_every": "0: never",
        "max_wait_ms": "", "rmsprop_momentum": "", "reconnect_max_backoff": "",
        "max_restarts": "", "restart_window": "", "torch_threads": "0: torch's default",
    }
    for name, note in non_negative.items():
        if not getattr(config, name) >= 0:
            raise ConfigError(f"{flag_name(name)} must be >= 0{f' ({note})' if note else ''}, "
                              f"got {getattr(config, name)}")
    if not 0.0 <= config.vtrace_lambda <= 1.0:
        raise ConfigError(f"--vtrace-lambda must be in [0, 1], got {config.vtrace_lambda}")
    if not 0.0 <= config.discount <= 1.0:
        raise ConfigError(f"--discount must be in [0, 1], got {config.discount}")
    if not 0.0 <= config.rmsprop_alpha < 1.0:
        raise ConfigError(f"--rmsprop-alpha must be in [0, 1), got {config.rmsprop_alpha}")
    if config.optimizer not in {"rmsprop", "adam"}:
        raise ConfigError(f"--optimizer must be rmsprop or adam, got {config.optimizer!r}")
    if config.wandb_mode not in {"", "online", "offline", "disabled"}:
        raise ConfigError(f"--wandb-mode must be online, offline or disabled, got "
                          f"{config.wandb_mode!r}")
    if config.conv_net not in {"nature", "impala", "minatar"}:
        raise ConfigError(f"--conv-net must be nature, impala or minatar, got "
                          f"{config.conv_net!r}")
    if config.lr_decay and config.total_steps <= 0:
        raise ConfigError("--lr-decay decays the learning rate to 0 at --total-steps: give "
                          "--total-steps N too, or drop --lr-decay")
    if any(h <= 0 for h in config.hidden_sizes):
        raise ConfigError(f"--hidden-sizes must be positive widths, got {config.hidden_sizes}")
    if bool(config.tls_cert) != bool(config.tls_key):
        raise ConfigError("--tls-cert and --tls-key go together: give both or neither")
    if not 0.0 <= config.ppo_clip < 1.0:
        raise ConfigError(f"--ppo-clip must be in [0, 1) (0 turns it off), got "
                          f"{config.ppo_clip}")
    if not 0.0 < config.popart_beta <= 1.0:
        raise ConfigError(f"--popart-beta must be in (0, 1], got {config.popart_beta}")
    if config.loss_reduction not in {"sum", "mean"}:
        raise ConfigError(f"--loss-reduction must be sum or mean, got "
                          f"{config.loss_reduction!r}")
    if config.batch_size % config.minibatches:
        raise ConfigError(f"--batch-size {config.batch_size} must be a multiple of "
                          f"--minibatches {config.minibatches}: each minibatch takes whole "
                          "unrolls; set --batch-size to a multiple or change --minibatches")
    if config.batch_size % config.replicas:
        raise ConfigError(f"--batch-size {config.batch_size} must be a multiple of --replicas "
                          f"{config.replicas}: each replica takes an equal share")
    groups = str(config.env_groups).strip().lower()
    if groups != "auto" and not (groups.isdecimal() and int(groups) >= 1):
        raise ConfigError(f"--env-groups must be auto or a positive integer, got "
                          f"{config.env_groups!r}")
    if groups != "auto" and int(groups) > config.envs_per_actor:
        raise ConfigError(f"--env-groups {groups} exceeds --envs-per-actor "
                          f"{config.envs_per_actor}: every group needs an environment")
    if config.deterministic:
        check_deterministic(config, groups)
    if config.envs_per_actor > config.max_envs_per_actor:
        raise ConfigError(f"--envs-per-actor {config.envs_per_actor} exceeds "
                          f"--max-envs-per-actor {config.max_envs_per_actor}")


def check_deterministic(config: Config, groups: str) -> None:
    """What ``--deterministic`` cannot reproduce is refused here (docs/reliability.md,
    "Deterministic mode"): env groups (one session per actor process), and a
    ``--max-policy-lag`` that would drop unrolls of its fixed lag (the lockstep then waits
    for versions that never come)."""
    if groups not in {"auto", "1"}:
        raise ConfigError(f"--deterministic steps each actor's environments as one session: "
                          f"drop --env-groups {config.env_groups} (or give 1)")
    if config.num_actors % config.replicas:
        raise ConfigError(f"--deterministic gives each of the --replicas {config.replicas} an "
                          f"equal share of the --num-actors {config.num_actors} actors: give "
                          "a multiple of the replicas")
    envs = config.num_actors * config.envs_per_actor
    lag = deterministic_lag_bound(envs, config.batch_size, config.unroll_length)
    if config.max_policy_lag < lag:
        raise ConfigError(f"--deterministic lags up to {lag} policy versions with "
                          f"{config.num_actors} x {config.envs_per_actor} envs and --batch-size "
                          f"{config.batch_size}; --max-policy-lag {config.max_policy_lag} "
                          f"would drop unrolls: give --max-policy-lag {lag} or more")


def deterministic_lag_bound(envs: int, batch_size: int, unroll_length: int) -> int:
    """The most policy versions an unroll lags in deterministic mode
    (learner/serving/lockstep.py): its first step acted with the version trained on the
    unrolls completed D = T B / E ticks before, and its last part is trained at most
    (1 + ceil(D / T)) E / B updates later, plus one for a part-filled batch."""
    lag = max(1, -(-unroll_length * batch_size // envs))
    return -(-(1 + -(-lag // unroll_length)) * envs // batch_size) + 1
