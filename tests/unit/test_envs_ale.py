"""An unknown ``ALE/...`` id says what to do: ``--env-import ale_py`` (ale-py 0.9+ registers
its ids on import), the install command when ale-py is missing here, and the shipped
``--preset pong``.

What a new user met: ``seed-rl train --env ALE/Pong-v5`` answered with the general
``--env-import`` hint, which names neither ale_py nor the Pong preset. These tests run the
same either way: with ale-py in the venv the message leaves the install command out (and
``--env-import ale_py`` makes the id known), without it the message carries it.
"""

from __future__ import annotations

import importlib.util

import pytest

from actors.env_loop import PermanentError, make_envs
from learner.serving.validation import make_spec
from seed_rl import cli
from seed_rl.config import Config
from seed_rl.envs.making import EnvImportError, EnvironmentUnavailable, make_env
from seed_rl.presets import named

ALE_INSTALLED = importlib.util.find_spec("ale_py") is not None
INSTALL = "pip install 'seed-rl[atari]'"


def says_what_to_do(message: str) -> None:
    assert "'ALE/Pong-v5'" in message
    assert "--env-import ale_py" in message
    assert "--preset pong" in message
    assert (INSTALL in message) == (not ALE_INSTALLED), message


def test_the_pong_preset_the_hint_names_is_shipped() -> None:
    assert named("pong").read_text().count('env = "seed_rl.envs:Atari-v0"') == 1


def test_seed_rl_train_names_ale_py_the_install_and_the_preset(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing may be written, but not into the repository
    with pytest.raises(SystemExit) as info:
        cli.main(["train", "--env", "ALE/Pong-v5"])
    message = str(info.value.code)
    assert message.startswith("seed-rl train: ") and "gymnasium does not know" in message
    says_what_to_do(message)
    assert list(tmp_path.iterdir()) == []


def test_the_learner_and_an_actor_say_the_same() -> None:
    with pytest.raises(SystemExit) as info:
        make_spec(Config(env="ALE/Pong-v5"))
    says_what_to_do(str(info.value.code))
    with pytest.raises(PermanentError) as actor:
        make_envs("ALE/Pong-v5", {}, 1, "actor host-0")
    says_what_to_do(str(actor.value))


def test_with_env_import_ale_py() -> None:
    if ALE_INSTALLED:  # the id is known now (ale-py ships the ROMs)
        env = make_env("ALE/Pong-v5", {}, ["ale_py"], [], "learner")
        assert env.spec.id == "ALE/Pong-v5"
        env.close()
        with pytest.raises(EnvironmentUnavailable, match="has no ALE/NoSuchGame-v5") as info:
            make_env("ALE/NoSuchGame-v5", {}, ["ale_py"], [], "learner")
        assert "--preset pong" in str(info.value)
    else:  # the import fails, naming the extra that brings it
        with pytest.raises(EnvImportError, match="cannot import 'ale_py'") as info:
            make_env("ALE/Pong-v5", {}, ["ale_py"], [], "learner")
        assert INSTALL in str(info.value)


def test_other_unknown_ids_keep_the_general_hint() -> None:
    with pytest.raises(EnvironmentUnavailable) as info:
        make_env("NoSuchPlugin/Game-v1", {}, [], [], "learner")
    message = str(info.value)
    assert "--env-import MODULE" in message
    assert "ale_py" not in message and "--preset pong" not in message
