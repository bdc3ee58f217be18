"""``--env-wrapper MODULE:CALLABLE``: the wrapper a third-party environment needs (MiniGrid's
Text mission must go, ``ImgObsWrapper``) is applied alike by the learner, the actors and
``seed-rl eval``, and travels like ``--env-import`` (config.json, checkpoints, handshake).

What a new user met: MiniGrid's Dict(image, mission=Text) observation cannot travel, and
the README showed how to register an environment but not how to wrap one. The environment
and wrappers here are tests/support/envs_plugin.py's, imported by name as a user's would be.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from support.learner_client import handshake_request
from support.procs import REPO
from support.stand_in_learner import StandInLearner, run_actor_to_end

from learner.serving.validation import HandshakeRejected, check_actor_matches, make_spec
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.envs.making import EnvironmentUnavailable, make_env

ENV = "MissionGrid-v0"
IMPORT = ["support.envs_plugin"]
WRAPPER = ["support.envs_plugin:ImageOnly"]
IMAGE = gym.spaces.Box(0, 255, (7, 7, 3), np.uint8)
PLUGIN_PATH = {"PYTHONPATH": f"{REPO}:{REPO / 'tests'}"}


def test_the_learner_learns_the_wrapped_spaces() -> None:
    with pytest.raises(SystemExit, match="Text"):  # what the user met: mission cannot travel
        make_spec(Config(env=ENV, env_import=IMPORT))
    spec = make_spec(Config(env=ENV, env_import=IMPORT, env_wrapper=WRAPPER, conv_net="minatar"))
    assert spec.observation_space == IMAGE
    assert spec.env_wrapper == tuple(WRAPPER)


def test_wrappers_apply_in_order_the_first_innermost() -> None:
    env = make_env(ENV, {}, IMPORT, [*WRAPPER, "gymnasium.wrappers:FlattenObservation"], "test")
    try:
        assert env.observation_space.shape == (7 * 7 * 3,)
        observation, _ = env.reset(seed=0)
        assert observation.shape == (147,) and observation.dtype == np.uint8
    finally:
        env.close()


@pytest.mark.parametrize(("entry", "says"), [
    ("support.envs_plugin", "expected MODULE:CALLABLE"),
    ("no_such_module_for_seed_rl:Wrap", "cannot import 'no_such_module_for_seed_rl'"),
    ("support.envs_plugin:NoSuchWrapper", "has no callable 'NoSuchWrapper'"),
    ("support.envs_plugin:not_an_env", "returned NoneType, not a gymnasium.Env"),
    ("support.envs_plugin:broken", "raised RuntimeError: this wrapper is broken"),
])
def test_a_wrapper_that_cannot_work_says_why(entry: str, says: str) -> None:
    with pytest.raises(EnvironmentUnavailable, match=f"--env-wrapper {entry}") as info:
        make_env(ENV, {}, IMPORT, [entry], "learner")
    assert says in str(info.value)


def test_an_actor_without_the_learners_wrapper_is_told_which_it_is() -> None:
    wrapper = "gymnasium.wrappers:TimeAwareObservation"  # CartPole's 4 numbers and the time
    spec = make_spec(Config(env="CartPole-v1", env_wrapper=[wrapper]))
    assert spec.observation_space.shape == (5,)
    with pytest.raises(HandshakeRejected, match="observation space") as rejected:
        check_actor_matches(handshake_request("CartPole-v1", 2), spec, max_envs_per_actor=8,
                            max_message_bytes=1 << 20)
    assert f"Start the actors with the learner's --env and its --env-wrapper {wrapper}" \
        in str(rejected.value)


@pytest.mark.parametrize("own", [False, True], ids=["learners", "own"])
def test_an_actor_that_asks_takes_the_learners_wrapper_unless_it_has_its_own(own: bool) -> None:
    learners = ["no_such_module_for_seed_rl:Wrap"] if own else WRAPPER
    stand_in = StandInLearner(training_over_after=3, env_id=ENV, env_import=IMPORT,
                              env_wrapper=learners).start()
    try:
        config = Config(learner=stand_in.address, env="", envs_per_actor=2, seed=0,
                        reconnect_max_backoff=0.2, env_wrapper=WRAPPER if own else [])
        assert run_actor_to_end(config) == 0
        ask, hello = stand_in.handshakes
        assert ask.session_id == "" and hello.request.env_id == ENV
        assert wire.decode_space(hello.request.observation_space) == IMAGE
        assert stand_in.steps[0].observations.shape == (2, 7, 7, 3)
    finally:
        stand_in.stop()


