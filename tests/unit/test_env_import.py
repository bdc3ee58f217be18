"""--env-import: user code that registers environments runs before any environment is made,
in the learner and in ``seed-rl train``; failures say which process, which module and why.

The plugin is a real module written to a temporary folder and imported from there.
"""

from __future__ import annotations

import sys
import textwrap

import gymnasium as gym
import pytest

from seed_rl import config as cfg
from seed_rl.envs.making import (
    EnvImportError,
    EnvironmentUnavailable,
    make_env,
    run_env_imports,
)

PLUGIN = '''
import gymnasium as gym

CALLS = []


def register_envs():
    CALLS.append(1)
    if "{env_id}" not in gym.registry:
        gym.register("{env_id}", entry_point="gymnasium.envs.classic_control:CartPoleEnv",
                     max_episode_steps=50)


def broken():
    raise RuntimeError("the plugin is broken")
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch, request):
    """A module ``plugin_<test>`` whose register_envs() registers ``Plugin<test>-v0``."""
    name = f"plugin_{request.node.name}".replace("[", "_").replace("]", "_")
    env_id = f"Plugin{abs(hash(name)) % 10**6}-v0"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(PLUGIN.format(env_id=env_id)))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield name, env_id
    sys.modules.pop(name, None)
    gym.registry.pop(env_id, None)


def test_module_function_is_imported_and_called_then_the_env_is_made(plugin) -> None:
    module, env_id = plugin
    assert env_id not in gym.registry
    env = make_env(env_id, {}, [f"{module}:register_envs"], [], "learner")
    assert env.spec.id == env_id and env.spec.max_episode_steps == 50
    env.close()
    assert sys.modules[module].CALLS == [1]


def test_an_unregistered_namespace_suggests_env_import() -> None:
    with pytest.raises(EnvironmentUnavailable, match="does not know .*--env-import MODULE"):
        make_env("NoSuchPlugin/Game-v1", {}, [], [], "learner")


def test_failures_name_the_process_the_entry_and_what_to_do(plugin) -> None:
    module, _ = plugin
    with pytest.raises(EnvImportError) as missing:
        run_env_imports(["not_installed_pkg.gym:register"], "actor host-3")
    text = str(missing.value)
    assert "actor host-3" in text and "not_installed_pkg.gym" in text
    assert "pip install not_installed_pkg" in text
    with pytest.raises(EnvImportError, match="has no function 'nope'"):
        run_env_imports([f"{module}:nope"], "learner")
    with pytest.raises(EnvImportError, match="raised RuntimeError: the plugin is broken"):
        run_env_imports([f"{module}:broken"], "eval")


def test_the_knob_comes_from_flags_env_vars_and_files_and_is_saved(tmp_path) -> None:
    from seed_rl import cli

    args = cli.build_parser().parse_args(["learner", "--env-import", "a.b:c,d"])
    assert cfg.resolve(args, "learner", environ={}).config.env_import == ["a.b:c", "d"]
    environ = {"SEED_RL_ENV_IMPORT": "minatar.gym:register_envs"}
    resolved = cfg.resolve(None, "actors", environ=environ).config
    assert resolved.env_import == ["minatar.gym:register_envs"]
    toml = tmp_path / "c.toml"
    toml.write_text('env_import = ["popgym"]\n')
    assert cfg.resolve(None, "eval", environ={"SEED_RL_CONFIG": str(toml)}).config.env_import \
        == ["popgym"]
    config = cfg.Config(env_import=["x:y"])
    config.save(tmp_path / "config.json")
    assert '"env_import": [\n    "x:y"\n  ]' in (tmp_path / "config.json").read_text()


def test_the_learner_runs_env_import_before_making_its_env(plugin, tmp_path) -> None:
    from support.learner_harness import make_config

    from learner.running.learner import Learner

    module, env_id = plugin
    config = make_config(tmp_path, env=env_id, env_import=[f"{module}:register_envs"],
                         preset="")
    learner = Learner(config)
    learner.metrics.close()
    assert learner.spec.env_id == env_id
    # the role's prefix is the CLI's to add (tests/unit/test_cli_errors.py, tests/integration/test_cli_error_lines.py)
    with pytest.raises(SystemExit, match="^--env-import no_such_plugin: .*cannot import"):
        Learner(make_config(tmp_path, env=env_id, env_import=["no_such_plugin"]))


def test_seed_rl_train_checks_env_import_before_starting_anything(plugin) -> None:
    from learner.running import local_run

    module, env_id = plugin
    local_run.check_environment(cfg.Config(env=env_id, env_import=[f"{module}:register_envs"]))
    with pytest.raises(SystemExit, match="^--env-import no_such_plugin: .*cannot import"):
        local_run.check_environment(cfg.Config(env=env_id, env_import=["no_such_plugin"]))
