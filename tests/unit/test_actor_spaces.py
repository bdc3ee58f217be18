"""The actor with every space seed-rl carries, and ``--env-import``, against the stand-in
learner (tests/support/stand_in_learner.py) and, for the supervisor, as real processes.

The environments are seed_rl/testing.py's DictObservation, MultiDiscreteAction and
ContinuousAction: each raises on an action outside its space, so an actor that forgets
``start`` or does not clip crashes instead of passing.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest
from support import custom_env_plugin
from support.stand_in_learner import Step, run_actor_to_end

from actors.client import EXIT_PERMANENT
from actors.env_loop import EnvLoop, PermanentError, env_seeds
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.spaces import observation_layout
from seed_rl.testing import RevealActionEnv

K = 3


def make_config(address: str, env: str, **overrides) -> Config:
    values = dict(learner=address, env=env, env_kwargs={}, envs_per_actor=K,
                  actor_id_prefix="test", reconnect_max_backoff=0.2, seed=0)
    values.update(overrides)
    return Config(**values)


@pytest.fixture
def learner(learners):
    """tests/conftest.py's ``learners`` under this module's name."""
    return learners


def answered_pairs(steps: list[Step]) -> Iterator[tuple[Step, Step]]:
    """(request n, request n+1) where request n was answered with actions."""
    for previous, current in zip(steps, steps[1:], strict=False):
        assert previous.actions is not None
        yield previous, current


# -- spaces -------------------------------------------------------------------------------


def test_dict_observations_travel_as_packed_rows(learner) -> None:
    stand_in = learner(training_over_after=10)
    kwargs = {"episode_length": 3, "truncate": True, "pixels": 4}
    assert run_actor_to_end(make_config(stand_in.address, "DictObservation-v0",
                                  env_kwargs=kwargs)) == 0
    (hello,) = stand_in.handshakes
    space = wire.decode_space(hello.request.observation_space)
    assert list(space.spaces) == ["cue", "image", "position"]
    layout = observation_layout(space)
    assert layout.row_shape == (8 + 16 + 8,)
    steps = stand_in.steps
    for step in steps:
        assert step.observations.shape == (K, 32) and step.observations.dtype == np.uint8
        assert step.final_observations.shape == (len(step.final_envs), 32)
        assert step.final_observations.dtype == np.uint8
    finals_seen = 0
    for previous, current in answered_pairs(steps):
        cue, image, position = layout.unpack(previous.observations)
        assert image.dtype == np.uint8 and image.shape == (K, 4, 4, 1)
        assert cue.dtype == np.int64 and ((cue >= 0) & (cue < 3)).all()
        for k in range(K):
            t, episode = position[k]
            assert (image[k] == t).all()
            assert current.rewards[k] == float(previous.actions[k] == cue[k]), (current.index, k)
            assert bool(current.truncated[k]) == (t + 1 == 3)
        if current.final_envs:
            _, final_image, final_position = layout.unpack(current.final_observations)
            np.testing.assert_array_equal(final_position[:, 0], 3.0)
            np.testing.assert_array_equal(final_position[:, 1], position[current.final_envs, 1])
            assert (final_image == 3).all()
            finals_seen += len(current.final_envs)
    assert finals_seen == 3 * K  # 9 answered steps of each env: three 3-step episodes


def test_multi_discrete_actions_reach_the_env_with_start(learner) -> None:
    stand_in = learner(training_over_after=8)
    kwargs = {"nvec": [3, 4], "start": [1, -2], "episode_length": 4}
    assert run_actor_to_end(make_config(stand_in.address, "MultiDiscreteAction-v0",
                                  env_kwargs=kwargs)) == 0  # the env raises on a bad action
    space = wire.decode_space(stand_in.handshakes[0].request.action_space)
    assert space == gym.spaces.MultiDiscrete([3, 4], start=[1, -2])
    for previous, current in answered_pairs(stand_in.steps):
        assert previous.actions.shape == (K, 2) and previous.actions.dtype == np.int64
        assert {int(a) for a in previous.actions[:, 1]} <= {-2, -1, 0, 1}
        # the cue is the observation: the reward is the fraction of heads that match it
        expected = (previous.actions == previous.observations).mean(axis=1)
        np.testing.assert_array_equal(current.rewards, expected.astype(np.float32))


def test_box_actions_are_clipped_before_env_step(learner) -> None:
    stand_in = learner(training_over_after=8)
    assert run_actor_to_end(make_config(stand_in.address, "ContinuousAction-v0",
                                  env_kwargs={"dim": 3})) == 0  # the env raises unclipped
    space = wire.decode_space(stand_in.handshakes[0].request.action_space)
    assert space == gym.spaces.Box(-1.0, 1.0, shape=(3,), dtype=np.float32)
    sent = np.concatenate([s.actions for s in stand_in.steps[:-1]])
    assert sent.dtype == np.float32 and (np.abs(sent) > 1).any()  # the test sent some out
    for previous, current in answered_pairs(stand_in.steps):
        clipped = np.clip(previous.actions, -1.0, 1.0)
        expected = -((clipped - previous.observations) ** 2).mean(axis=1)
        np.testing.assert_allclose(current.rewards, expected, rtol=1e-5)


class AnySpaceEnv(gym.Env):
    """Observations sampled from any ``observation_space`` (seeded); keeps the last one."""

    def __init__(self, observation_space: gym.Space):
        self.observation_space = observation_space
        self.action_space = gym.spaces.Discrete(2)
        self.last = None

    def _observe(self):
        self.last = self.observation_space.sample()
        return self.last

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        if seed is not None:
            self.observation_space.seed(seed)
        return self._observe(), {}

    def step(self, action):
        return self._observe(), 0.0, False, False, {}


if "test/AnySpace-v0" not in gym.registry:
    gym.register("test/AnySpace-v0", entry_point=AnySpaceEnv)

S = gym.spaces
OBSERVATION_SPACES = {
    "box-bool": S.Box(0, 1, shape=(2, 3), dtype=bool),
    "box-uint8": S.Box(0, 255, shape=(4, 4, 2), dtype=np.uint8),
    "discrete-start": S.Discrete(5, start=-2),
    "multi-discrete-2d": S.MultiDiscrete([[2, 3], [4, 5]], start=[[0, 1], [-1, 2]]),
    "multi-binary-2d": S.MultiBinary([2, 3]),
    "dict": S.Dict({"z": S.Box(0, 255, shape=(3,), dtype=np.uint8), "a": S.Discrete(3)}),
    "dict-insertion-order": S.Dict({"z": S.MultiBinary(2), "a": S.Box(-1.0, 1.0, shape=(2,))},
                                   sort_keys=False),
    "dict-in-tuple": S.Tuple((S.Dict({"flag": S.Box(0, 1, shape=(2,), dtype=bool),
                                      "n": S.Discrete(4, start=1)}),
                              S.Box(-1.0, 1.0, shape=(2,), dtype=np.float64))),
}


def leaf_values(value, space: gym.Space) -> list:
    if isinstance(space, S.Dict):
        return [v for key, sub in space.spaces.items() for v in leaf_values(value[key], sub)]
    if isinstance(space, S.Tuple):
        return [v for sub, part in zip(space.spaces, value, strict=True)
                for v in leaf_values(part, sub)]
    return [value]


@pytest.mark.parametrize("name", list(OBSERVATION_SPACES))
def test_every_observation_space_travels_in_its_rows(name: str) -> None:
    space = OBSERVATION_SPACES[name]
    envs = EnvLoop("test/AnySpace-v0", {"observation_space": space}, env_seeds(0, "unit", K))
    try:
        for _ in range(2):
            request = pb.StepRequest.FromString(envs.build_request().SerializeToString())
            rows = wire.decode_tensor(request.observations)
            layout = observation_layout(wire.decode_space(envs.observation_space_msg))
            assert rows.shape == (K, *layout.row_shape) and rows.dtype == layout.row_dtype
            if not layout.packed:  # a single space travels as itself: compact, exact
                expected_dtype = {S.Discrete: np.int64, S.MultiDiscrete: np.int64,
                                  S.MultiBinary: np.int8}.get(type(space), space.dtype)
                assert rows.dtype == expected_dtype
            parts = layout.unpack(rows)
            for k, env in enumerate(envs.envs):
                for part, leaf, value in zip(parts, layout.leaves,
                                             leaf_values(env.unwrapped.last, space), strict=True):
                    assert part.dtype == leaf.dtype
                    np.testing.assert_array_equal(part[k], value)
            envs.step(np.zeros(K, np.int64))
    finally:
        envs.close()


@pytest.fixture
def box_envs() -> Iterator[EnvLoop]:
    envs = EnvLoop("ContinuousAction-v0", {"dim": 2}, env_seeds(0, "unit", K))
    yield envs
    envs.close()


@pytest.mark.parametrize(
    ("actions", "match"),
    [
        (np.zeros((K, 2), np.int64), r"dtype int64; expected \[3, 2\] float32"),
        (np.zeros((K,), np.float32), r"shape \[3\]"),
        (np.zeros((K, 3), np.float32), r"shape \[3, 3\]"),
        (np.full((K, 2), np.nan, np.float32), "not finite"),
    ],
    ids=["dtype", "rank", "shape", "nan"],
)
def test_malformed_actions_are_a_permanent_error(box_envs, actions, match) -> None:
    response = pb.StepResponse(actions=wire.encode_tensor(actions))
    with pytest.raises(PermanentError, match=match):
        box_envs.decode_actions(response)


def test_discrete_actions_must_be_int64() -> None:
    envs = EnvLoop("seed_rl.testing:RevealAction-v0", {}, env_seeds(0, "unit", K))
    try:
        good = envs.decode_actions(pb.StepResponse(actions=wire.encode_tensor(
            np.array([0, 1, 2], np.int64))))
        assert good.tolist() == [0, 1, 2]
        with pytest.raises(PermanentError, match="expected \\[3\\] int64"):
            envs.decode_actions(pb.StepResponse(actions=wire.encode_tensor(
                np.array([0, 1, 2], np.int32))))
    finally:
        envs.close()


class MultiBinaryActionEnv(RevealActionEnv):
    def __init__(self):
        super().__init__()
        self.action_space = gym.spaces.MultiBinary(3)


def test_unsupported_action_space_is_a_permanent_error() -> None:
    env_id = "test/MultiBinaryAction-v0"
    if env_id not in gym.registry:
        gym.register(env_id, entry_point=MultiBinaryActionEnv)
    with pytest.raises(PermanentError, match="MultiBinary") as info:
        EnvLoop(env_id, {}, env_seeds(0, "unit", 1))
    assert "not supported" in str(info.value) and env_id in str(info.value)


# -- --env-import -------------------------------------------------------------------------

PLUGIN = "support.custom_env_plugin:register_envs"


@pytest.fixture
def unregistered() -> Iterator[None]:
    """CustomPlugin-v0 is not registered until someone calls register_envs()."""
    gym.registry.pop("CustomPlugin-v0", None)
    custom_env_plugin.CALLS.clear()
    yield
    gym.registry.pop("CustomPlugin-v0", None)


def test_actor_without_env_runs_the_learners_env_import(learner, unregistered, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    stand_in = learner(training_over_after=4, env_id="CustomPlugin-v0", env_import=[PLUGIN])
    assert run_actor_to_end(make_config(stand_in.address, "")) == 0
    assert custom_env_plugin.CALLS, "the learner's --env-import did not run"
    ask, hello = stand_in.handshakes
    assert ask.session_id == "" and hello.request.env_id == "CustomPlugin-v0"
    assert len(stand_in.steps) == 4
    assert f"running the learner's --env-import {PLUGIN}" in caplog.text


def test_actor_with_an_unregistered_env_runs_the_learners_env_import(learner,
                                                                     unregistered) -> None:
    stand_in = learner(training_over_after=4, env_id="CustomPlugin-v0", env_import=[PLUGIN])
    assert run_actor_to_end(make_config(stand_in.address, "CustomPlugin-v0")) == 0
    assert custom_env_plugin.CALLS
    assert [bool(h.session_id) for h in stand_in.handshakes] == [False, True]


def test_actor_with_its_own_env_import_ignores_the_learners(learner, unregistered) -> None:
    stand_in = learner(training_over_after=4, env_import=["no_such_module_for_seed_rl"])
    config = make_config(stand_in.address, "CustomPlugin-v0", env_import=[PLUGIN])
    assert run_actor_to_end(config) == 0
    assert len(custom_env_plugin.CALLS) == 1
    (hello,) = stand_in.handshakes  # its env was made before it connected
    assert hello.request.env_id == "CustomPlugin-v0"
    assert json.loads(hello.request.env_kwargs_json) == {}


@pytest.mark.parametrize("own", [False, True], ids=["learners", "own"])
def test_failing_env_import_is_a_permanent_error(learner, caplog, own: bool) -> None:
    entry = "no_such_module_for_seed_rl"
    stand_in = learner(env_id="seed_rl.testing:RevealAction-v0",
                       env_import=[] if own else [entry])
    config = make_config(stand_in.address, "", env_import=[entry] if own else [])
    assert run_actor_to_end(config) == EXIT_PERMANENT
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(f"--env-import {entry}" in e and "actor test-0" in e and "cannot import" in e
               for e in errors), errors
    assert not stand_in.sessions()
    assert len(stand_in.handshakes) == (0 if own else 1)
