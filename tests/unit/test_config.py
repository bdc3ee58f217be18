"""The one config: presets apply alike to every role that trains, precedence, validation.

Each validation case names the flag the message must name; each preset case goes through
the real CLI parser and, for the learner, the real ``Learner`` writing ``config.json``.
"""

from __future__ import annotations

import ast
import json
import math
from pathlib import Path

import pytest

from seed_rl import cli, presets
from seed_rl import config as cfg
from seed_rl.config import Config


def resolve(role: str, *argv: str, environ: dict[str, str] | None = None) -> cfg.Resolved:
    return cfg.resolve(cli.build_parser().parse_args([role, *argv]), role, environ=environ or {})


TRAINING_FIELDS = [f.name for f in cfg.fields_for("learner") if "train" in f.metadata["roles"]]


def test_the_learner_and_train_apply_the_same_preset() -> None:
    learner = resolve("learner", "--env", "CartPole-v1")
    train = resolve("train", "--env", "CartPole-v1")
    assert learner.preset == train.preset == presets.named("cartpole")
    assert learner.config.preset == "cartpole"
    for name, value in cfg.load_toml(learner.preset).items():
        assert getattr(learner.config, name) == value, name
    for name in TRAINING_FIELDS:  # everything that shapes training agrees
        assert getattr(learner.config, name) == getattr(train.config, name), name


def test_the_default_env_gets_its_preset_even_with_no_flags() -> None:
    resolved = resolve("learner")
    assert resolved.preset is not None and resolved.config.optimizer == "adam"


def test_preset_by_name_by_env_var_and_none() -> None:
    assert resolve("learner", "--preset", "acrobot").config.env == "Acrobot-v1"
    by_env = resolve("learner", environ={"SEED_RL_PRESET": "acrobot"})
    assert by_env.config.env == "Acrobot-v1" and by_env.config.preset == "acrobot"
    bare = resolve("learner", "--preset", "none")
    assert bare.preset is None and bare.config.preset == ""
    assert bare.config.optimizer == Config().optimizer == "rmsprop"
    assert math.isnan(bare.config.target_return)
    with pytest.raises(cfg.ConfigError, match="no such preset.*cartpole"):
        resolve("learner", "--preset", "no-such-game")


def test_environment_variables_pick_the_preset_like_the_learner_image() -> None:
    resolved = resolve("learner", environ={"SEED_RL_ENV": "Acrobot-v1",
                                           "SEED_RL_BATCH_SIZE": "7"})
    assert resolved.config.preset == "acrobot"
    assert resolved.config.target_return == -100.0 and resolved.config.batch_size == 7


def test_an_env_without_a_preset_gets_the_defaults() -> None:
    resolved = resolve("learner", "--env", "MountainCar-v0")
    assert resolved.preset is None and resolved.config.preset == ""
    assert resolved.config.learning_rate == Config().learning_rate


def test_given_lists_exactly_what_was_set(tmp_path) -> None:
    toml = tmp_path / "mine.toml"
    toml.write_text("entropy_cost = 0.5\n")
    resolved = resolve("train", "--config", str(toml), "--seed", "3",
                       environ={"SEED_RL_DISCOUNT": "0.9"})
    preset_keys = set(cfg.load_toml(resolved.preset))
    assert resolved.given == preset_keys | {"entropy_cost", "seed", "discount"}
    assert "logdir" not in resolved.given


def test_actors_and_eval_take_no_preset() -> None:
    assert resolve("actors").config.preset == ""
    assert "preset" not in {f.name for f in cfg.fields_for("actors")}


def test_each_optimizer_has_its_own_epsilon() -> None:
    torch = pytest.importorskip("torch")
    import gymnasium as gym

    from learner.training.models import build_model
    from learner.training.update import build_optimizer

    env = gym.make("CartPole-v1")
    model = build_model(env.observation_space, env.action_space, Config())
    adam = build_optimizer(model, Config(optimizer="adam"))
    rmsprop = build_optimizer(model, Config(optimizer="rmsprop"))
    assert isinstance(adam, torch.optim.Adam) and adam.defaults["eps"] == 1e-8
    assert isinstance(rmsprop, torch.optim.RMSprop) and rmsprop.defaults["eps"] == 0.01
    tuned = build_optimizer(model, Config(optimizer="adam", adam_eps=1e-5))
    assert tuned.defaults["eps"] == 1e-5


@pytest.mark.parametrize(("argv", "flag"), [
    (["--lr-decay"], "--total-steps"),
    (["--clip-rho-threshold", "0"], "--clip-rho-threshold"),
    (["--clip-pg-rho-threshold", "-1"], "--clip-pg-rho-threshold"),
    (["--reward-clip", "-1"], "--reward-clip"),
    (["--max-policy-lag", "-1"], "--max-policy-lag"),
    (["--max-grad-norm", "-5"], "--max-grad-norm"),
    (["--learning-rate", "0"], "--learning-rate"),
    (["--discount", "1.5"], "--discount"),
    (["--vtrace-lambda", "1.2"], "--vtrace-lambda"),
    (["--hidden-sizes", "64,0"], "--hidden-sizes"),
    (["--adam-eps", "0"], "--adam-eps"),
    (["--torch-threads", "-1"], "--torch-threads"),
])
def test_values_that_would_fail_later_are_refused_at_start_up(argv, flag) -> None:
    with pytest.raises(cfg.ConfigError) as error:
        resolve("learner", "--preset", "none", *argv)
    assert flag in str(error.value)


def test_the_cli_exits_2_naming_the_flag(capsys) -> None:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["learner", "--preset", "none", "--lr-decay"])
    assert exit_info.value.code == 2
    assert "--lr-decay" in capsys.readouterr().err


def test_the_learner_records_its_preset_in_config_json(tmp_path) -> None:
    pytest.importorskip("torch")
    from learner.running.learner import Learner

    for argv, expected in ((["--env", "CartPole-v1"], "cartpole"),
                           (["--preset", "none"], "")):
        logdir = tmp_path / (expected or "bare")
        config = resolve("learner", *argv, "--logdir", str(logdir)).config
        learner = Learner(config)
        try:
            saved = json.loads((logdir / "config.json").read_text())
        finally:
            learner.metrics.close()
        assert saved["preset"] == expected
        assert saved["optimizer"] == ("adam" if expected else "rmsprop")


def test_the_learner_runs_torch_on_the_threads_it_is_given(tmp_path) -> None:
    """--torch-threads sets torch's intra-op threads for training and inference (they share
    the process); 0 leaves torch's default."""
    pytest.importorskip("torch")
    import torch

    from learner.running.learner import Learner

    default = torch.get_num_threads()
    try:
        for threads, expected in ((1, 1), (0, 1), (2, 2)):
            config = resolve("learner", "--env", "CartPole-v1", "--logdir",
                             str(tmp_path / str(threads)), "--torch-threads",
                             str(threads)).config
            Learner(config).metrics.close()
            assert torch.get_num_threads() == expected
            saved = json.loads((tmp_path / str(threads) / "config.json").read_text())
            assert saved["torch_threads"] == threads
    finally:
        torch.set_num_threads(default)


@pytest.mark.parametrize(("argv", "environ"), [
    (["--env-groups", "0"], {}),
    (["--env-groups", "two"], {}),
    (["--env-groups", "-1"], {}),
    (["--env-groups", "3", "--envs-per-actor", "2"], {}),  # a group without environments
    ([], {"SEED_RL_ENV_GROUPS": "1.5"}),
])
def test_bad_env_groups_are_refused_naming_the_flag(argv, environ) -> None:
    with pytest.raises(cfg.ConfigError) as error:
        resolve("actors", *argv, environ=environ)
    assert "--env-groups" in str(error.value)


def test_env_groups_come_from_flags_variables_and_auto(capsys) -> None:
    from actors.groups import env_groups

    assert resolve("actors").config.env_groups == "auto"
    assert resolve("actors", environ={"SEED_RL_ENV_GROUPS": "4"}).config.env_groups == "4"
    assert env_groups(resolve("actors", "--env-groups", "3").config) == 3
    # auto: double buffering for a learner on another machine, one group on loopback,
    # never more groups than environments
    remote = ("--learner", "learner.example.org:50051")
    assert env_groups(resolve("actors", *remote).config) == 2
    assert env_groups(resolve("actors", *remote, "--envs-per-actor", "1").config) == 1
    assert env_groups(resolve("actors", "--learner", "127.0.0.1:50051").config) == 1
    assert env_groups(resolve("actors", "--learner", "localhost:50051").config) == 1
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["actors", "--env-groups", "9", "--envs-per-actor", "4"])
    assert exit_info.value.code == 2
    assert "--env-groups 9 exceeds --envs-per-actor 4" in capsys.readouterr().err


def test_the_config_modules_import_in_one_direction() -> None:
    """fields <- checks <- resolution: no module imports one after it (torch: see
    tests/integration/test_cli_help.py)."""
    package = Path(cfg.__file__).parent
    below = {"fields": set(), "checks": {"fields"}, "resolution": {"fields", "checks"}}
    for module, allowed in below.items():
        tree = ast.parse((package / f"{module}.py").read_text())
        imported = {node.module.rsplit(".", 1)[-1] for node in ast.walk(tree)
                    if isinstance(node, ast.ImportFrom) and node.module
                    and node.module.startswith("seed_rl.config.")}
        assert imported <= allowed, f"seed_rl.config.{module} imports {imported - allowed}"


def test_the_five_minatar_presets_are_one_agent_configuration() -> None:
    """Issue #20: every MinAtar game gets the same agent; only the game and its target
    differ."""
    per_game = {"env", "target_return", "target_source", "max_reward_per_step"}
    agents = []
    for name in ("asterix", "breakout", "freeway", "seaquest", "spaceinvaders"):
        values = cfg.load_toml(presets.named(f"minatar-{name}"))
        agents.append({k: v for k, v in values.items() if k not in per_game})
    assert all(agent == agents[0] for agent in agents[1:])
    assert agents[0]["epochs"] == 2 and agents[0]["minibatches"] == 4
    assert agents[0]["normalize_observations"] and agents[0]["popart"]


def test_no_shipped_preset_scales_rewards() -> None:
    """Issue #20: every preset learns from the rewards as its environment gives them."""
    shipped = sorted(Path(presets.named("cartpole")).parent.glob("*.toml"))
    assert len(shipped) >= 12
    for path in shipped:
        assert "reward_scale" not in cfg.load_toml(path), path.name
