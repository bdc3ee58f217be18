"""The actor runtime against a real gRPC stand-in learner (tests/support/stand_in_learner.py):
the handshake, the step content and its slot convention, seeding, TLS, the status line.

Reconnects and errors are in test_actor_reconnects.py. Every wait is bounded; nothing
asserts a timing.
"""

from __future__ import annotations

import json
import re

import grpc
import numpy as np
import pytest
from support.actor_threads import REVEAL, make_config, run_to_end
from support.stand_in_learner import StandInLearner, check_reveal_trajectory

from actors.client import actor_id_for
from actors.env_loop import env_seeds
from actors.groups import run_actor
from seed_rl import wire
from seed_rl.config import Config

# -- handshake and step content -----------------------------------------------------------


def test_handshake_describes_the_actor_and_its_envs(learners) -> None:
    learner = learners(training_over_after=3)
    config = make_config(learner.address, env_kwargs={"episode_length": 4, "num_actions": 5})
    assert run_to_end(learner, config, index=7) == 0
    (hello,) = learner.handshakes
    request = hello.request
    assert request.protocol_version == wire.PROTOCOL_VERSION
    assert request.actor_id == "test-7" == actor_id_for(config, 7)
    assert re.fullmatch(r"[0-9a-f]{32}", request.run_id)
    assert request.num_envs == 3
    assert request.env_id == REVEAL
    assert json.loads(request.env_kwargs_json) == {"episode_length": 4, "num_actions": 5}
    observation_space = wire.decode_space(request.observation_space)
    assert observation_space.shape == (2,) and observation_space.dtype == np.float32
    action_space = wire.decode_space(request.action_space)
    assert (action_space.n, action_space.start) == (5, 0)
    # every Step carries the session id (and only this session's)
    steps = learner.steps_of(hello.session_id)
    assert len(steps) == 3 == len(learner.steps)
    assert all(s.metadata[wire.SESSION_METADATA_KEY] == hello.session_id for s in steps)
    assert wire.AUTH_METADATA_KEY not in hello.metadata
    assert learner.ended_sessions == [hello.session_id]  # the stream was closed, not cut


def test_each_incarnation_has_a_fresh_run_id(learners) -> None:
    learner = learners(training_over_after=1)
    config = make_config(learner.address)
    assert run_to_end(learner, config) == 0
    assert run_to_end(learner, config) == 0
    first, second = learner.handshakes
    assert first.request.actor_id == second.request.actor_id == "test-0"
    assert first.request.run_id != second.request.run_id
    assert first.session_id != second.session_id


def test_step_tensors_have_the_agreed_shapes_and_dtypes(learners) -> None:
    learner = learners(training_over_after=4)
    assert run_to_end(learner, make_config(learner.address, env="CartPole-v1", env_kwargs={})) == 0
    first = learner.steps[0]
    for step in learner.steps:
        assert step.observations.shape == (3, 4) and step.observations.dtype == np.float32
        assert step.rewards.shape == (3,) and step.rewards.dtype == np.float32
        assert step.terminated.shape == (3,) and step.terminated.dtype == bool
        assert step.truncated.shape == (3,) and step.truncated.dtype == bool
        assert step.final_observations.dtype == np.float32
        assert step.final_observations.shape == (len(step.final_envs), 4)
    # the first step: reward 0, no episode ends, nothing final
    np.testing.assert_array_equal(first.rewards, 0.0)
    assert not first.terminated.any() and not first.truncated.any()
    assert first.final_envs == [] and first.episodes == []
    np.testing.assert_array_equal(learner.steps[1].rewards, 1.0)  # CartPole: +1 per step


@pytest.mark.parametrize("truncate", [False, True], ids=["terminated", "truncated"])
def test_slot_convention_and_episode_ends_on_reveal_action(learners, truncate: bool) -> None:
    learner = learners(training_over_after=14)
    config = make_config(learner.address, env_kwargs={"episode_length": 3, "truncate": truncate})
    assert run_to_end(learner, config) == 0
    steps = learner.steps
    assert len(steps) == 14 and steps[-1].actions is None
    episodes = check_reveal_trajectory(steps, num_envs=3, length=3, truncate=truncate)
    # 13 answered steps of 3 envs with 3-step episodes: 4 episodes each
    assert sorted(k for k, _, _ in episodes) == [0] * 4 + [1] * 4 + [2] * 4
    if truncate:
        assert any(s.final_envs for s in steps)
    else:
        assert all(s.final_envs == [] and s.final_observations.shape == (0, 2) for s in steps)


def test_actor_without_env_asks_the_learner(learners) -> None:
    learner = learners(
        training_over_after=8, env_id=REVEAL, env_kwargs={"episode_length": 2, "truncate": True}
    )
    config = make_config(learner.address, env="", env_kwargs={"ignored": True})
    assert run_to_end(learner, config) == 0
    ask, hello = learner.handshakes
    assert ask.request.env_id == "" and ask.session_id == ""
    assert not ask.request.HasField("observation_space")
    assert not ask.request.HasField("action_space")
    assert ask.request.run_id == hello.request.run_id
    assert hello.request.env_id == REVEAL
    assert json.loads(hello.request.env_kwargs_json) == {"episode_length": 2, "truncate": True}
    assert hello.request.HasField("observation_space")
    check_reveal_trajectory(learner.steps, num_envs=3, length=2, truncate=True)


# -- seeding ------------------------------------------------------------------------------


def first_observations(learner: StandInLearner, config: Config, index: int = 0) -> np.ndarray:
    before = len(learner.steps)
    assert run_to_end(learner, config, index) == 0
    return learner.steps[before].observations


def test_seeding_is_deterministic_per_seed_and_actor(learners) -> None:
    learner = learners(training_over_after=1)
    config = make_config(learner.address, env="CartPole-v1", env_kwargs={}, seed=42)
    a = first_observations(learner, config)
    b = first_observations(learner, config)
    np.testing.assert_array_equal(a, b)
    assert len({row.tobytes() for row in a}) == 3  # the K envs differ
    other_seed = first_observations(
        learner, make_config(learner.address, env="CartPole-v1", env_kwargs={}, seed=43)
    )
    assert not np.array_equal(a, other_seed)
    other_actor = first_observations(learner, config, index=1)
    assert not np.array_equal(a, other_actor)
    assert env_seeds(42, "test-0", 3) == env_seeds(42, "test-0", 3)
    assert env_seeds(42, "test-0", 3) != env_seeds(42, "test-1", 3)


# -- TLS ----------------------------------------------------------------------------------


def test_mutual_tls(learners, pki) -> None:
    credentials = grpc.ssl_server_credentials(
        [(pki["server.key"].read_bytes(), pki["server.pem"].read_bytes())],
        root_certificates=pki["ca.pem"].read_bytes(),
        require_client_auth=True,
    )
    learner = learners(server_credentials=credentials, training_over_after=3)
    config = make_config(
        learner.address,
        tls_ca=str(pki["ca.pem"]),
        tls_cert=str(pki["client.pem"]),
        tls_key=str(pki["client.key"]),
    )
    assert run_to_end(learner, config) == 0
    assert len(learner.steps) == 3


# -- real processes -----------------------------------------------------------------------


def test_round_trip_percentiles_are_published_for_the_status_line(learners) -> None:
    from actors.client import ROUND_TRIP_WINDOW
    from actors.counters import Counters

    learner = learners(env_id=REVEAL, training_over_after=ROUND_TRIP_WINDOW + 10)
    config = make_config(f"127.0.0.1:{learner.port}")
    counters = Counters()
    assert run_actor(config, 0, counters=counters) == 0
    p50, p99 = counters.round_trip_ms
    assert 0 < p50 <= p99
