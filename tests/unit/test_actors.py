"""The actor runtime against a real gRPC stand-in learner (tests/support/stand_in_learner.py).

In-process actors run in a thread with a stop event; the supervisor and the torch-free
check run as real subprocesses. Every wait is bounded; nothing asserts a timing.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from collections.abc import Callable, Iterator

import grpc
import numpy as np
import pytest
from support.procs import WAIT
from support.stand_in_learner import StandInLearner, check_reveal_trajectory

from actors.client import EXIT_PERMANENT, actor_id_for
from actors.env_loop import env_seeds
from actors.groups import run_actor
from seed_rl import wire
from seed_rl.config import Config

REVEAL = "seed_rl.testing:RevealAction-v0"


def make_config(address: str, **overrides) -> Config:
    values = dict(
        learner=address,
        env=REVEAL,
        env_kwargs={"episode_length": 3, "truncate": False},
        envs_per_actor=3,
        actor_id_prefix="test",
        reconnect_max_backoff=0.2,
        status_every=0.5,
        seed=0,
    )
    values.update(overrides)
    return Config(**values)


class ActorThread:
    """run_actor in a thread of the test process, stoppable through its stop event."""

    def __init__(self, config: Config, index: int = 0):
        self.stop = threading.Event()
        self.rc: int | None = None
        self.thread = threading.Thread(
            target=self._run, args=(config, index), name=f"test-actor-{index}", daemon=True
        )
        self.thread.start()

    def _run(self, config: Config, index: int) -> None:
        self.rc = run_actor(config, index, stop=self.stop)

    def join(self, timeout: float = WAIT) -> int:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the actor did not return within {timeout} s"
        assert self.rc is not None
        return self.rc


@pytest.fixture
def actors() -> Iterator[Callable[..., ActorThread]]:
    running: list[ActorThread] = []

    def start(config: Config, index: int = 0) -> ActorThread:
        actor = ActorThread(config, index)
        running.append(actor)
        return actor

    yield start
    for actor in running:
        actor.stop.set()
    for actor in running:
        actor.thread.join(WAIT)


def run_to_end(learner: StandInLearner, config: Config, index: int = 0) -> int:
    """Run an actor until the stand-in says training is over."""
    actor = ActorThread(config, index)
    try:
        return actor.join()
    finally:
        actor.stop.set()


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


# -- reconnects and errors ----------------------------------------------------------------


def next_reveal_observation(observation: np.ndarray, length: int) -> list[float]:
    t, episode = observation
    return [0.0, episode + 1] if t + 1 == length else [t + 1, episode]


def test_actor_reconnects_when_the_learner_restarts(learners, actors, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    learner = learners(env_id=REVEAL)
    actor = actors(make_config(learner.address))
    learner.wait_until(lambda s: len(s.steps) >= 5, WAIT, "steps of the first session")
    learner.stop()
    old = learner.sessions()[0]
    last_old = learner.steps_of(old.session_id)[-1].observations

    def retried_unreachable() -> bool:
        return any(
            "cannot reach the learner" in r.getMessage()
            and learner.address in r.getMessage()
            and "UNAVAILABLE" in r.getMessage()
            for r in caplog.records
        )

    deadline = time.monotonic() + WAIT
    while not retried_unreachable():
        assert time.monotonic() < deadline, "no reconnect attempt was logged"
        assert actor.thread.is_alive()
        time.sleep(0.05)
    learner.start()  # same port
    learner.wait_until(lambda s: len(s.sessions()) == 2, WAIT, "a second handshake")
    new = learner.sessions()[1]
    learner.wait_until(lambda s: len(s.steps_of(new.session_id)) >= 5, WAIT, "new steps")
    assert new.request.run_id == old.request.run_id  # same incarnation
    assert new.request.actor_id == old.request.actor_id
    assert new.session_id != old.session_id
    new_steps = learner.steps_of(new.session_id)
    # the envs were not reset: the new session starts where the old one stopped (the
    # observation whose action never came, or the one after it) with reward 0, no flags
    first = new_steps[0]
    for k in range(3):
        assert first.observations[k].tolist() in (
            last_old[k].tolist(),
            next_reveal_observation(last_old[k], 3),
        )
    assert first.observations[:, 1].max() > 0 or first.observations[:, 0].max() > 0
    np.testing.assert_array_equal(first.rewards, 0.0)
    assert not first.terminated.any() and not first.truncated.any()
    for previous, current in zip(new_steps, new_steps[1:], strict=False):
        for k in range(3):
            t = previous.observations[k][0]
            assert current.rewards[k] == 10 * t + previous.actions[k]
    assert any("lost the learner" in r.getMessage() for r in caplog.records)
    actor.stop.set()
    assert actor.join() == 0


def test_unreachable_learner_is_retried_until_stopped(free_port, actors, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    address = f"127.0.0.1:{free_port}"
    actor = actors(make_config(address, reconnect_max_backoff=0.1))

    def attempts() -> list[str]:
        return [r.getMessage() for r in caplog.records if "cannot reach" in r.getMessage()]

    deadline = time.monotonic() + WAIT
    while len(attempts()) < 3:
        assert time.monotonic() < deadline, f"only {len(attempts())} attempts logged"
        time.sleep(0.05)
    for line in attempts()[:3]:
        assert address in line and "UNAVAILABLE" in line and "reconnecting in" in line
    actor.stop.set()
    assert actor.join() == 0


def test_reconnect_attempts_are_warned_at_powers_of_two(free_port, actors, caplog) -> None:
    """A learner that is slow to start does not bury the log: attempts 1, 2, 4, 8 are
    warnings, the ones between them DEBUG lines (docs/protocol.md, reconnects)."""
    caplog.set_level(logging.DEBUG, logger="actors")
    actor = actors(make_config(f"127.0.0.1:{free_port}", reconnect_max_backoff=0.05))

    def levels() -> dict[int, int]:
        found = {}
        for record in caplog.records:
            if match := re.search(r"cannot reach the learner.*\(attempt (\d+)\)",
                                  record.getMessage()):
                found[int(match.group(1))] = record.levelno
        return found

    deadline = time.monotonic() + WAIT
    while len(levels()) < 9:
        assert time.monotonic() < deadline, f"only {len(levels())} attempts logged"
        time.sleep(0.05)
    actor.stop.set()
    assert actor.join() == 0
    found = levels()
    assert [n for n in range(1, 10) if found[n] == logging.WARNING] == [1, 2, 4, 8]
    assert all(found[n] == logging.DEBUG for n in (3, 5, 6, 7, 9))


@pytest.mark.parametrize(
    "code",
    [grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.RESOURCE_EXHAUSTED],
    ids=lambda c: c.name,
)
def test_transient_handshake_errors_are_retried(learners, actors, code) -> None:
    learner = learners(handshake_error=(code, "an older incarnation is still connected"))
    actor = actors(make_config(learner.address))
    learner.wait_until(lambda s: len(s.handshakes) >= 3, WAIT, "handshake retries")
    learner.handshake_error = None
    learner.wait_until(lambda s: len(s.steps) >= 3, WAIT, "steps after the retries")
    assert actor.thread.is_alive()
    actor.stop.set()
    assert actor.join() == 0


def test_a_session_the_learner_no_longer_has_is_opened_again(learners) -> None:
    """A learner that restarted between an actor's handshake and its stream (or freed the
    session meanwhile) answers the stream NOT_FOUND: the actor handshakes again and trains,
    it does not stop as on a permanent refusal."""
    learner = learners(forget_sessions=2, training_over_after=3)
    assert run_to_end(learner, make_config(learner.address)) == 0
    assert len(learner.handshakes) == 3  # two sessions lost, the third one streamed
    assert len({h.session_id for h in learner.handshakes}) == 3
    assert len(learner.steps) == 3


@pytest.mark.parametrize(
    "code",
    [
        grpc.StatusCode.FAILED_PRECONDITION,
        grpc.StatusCode.INVALID_ARGUMENT,
        grpc.StatusCode.PERMISSION_DENIED,
    ],
    ids=lambda c: c.name,
)
def test_permanent_handshake_errors_end_the_actor(learners, caplog, code) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    message = "observation spaces differ: learner has Box(shape=(4,)), actor has Box(shape=(2,))"
    learner = learners(handshake_error=(code, message))
    assert run_to_end(learner, make_config(learner.address)) == EXIT_PERMANENT
    assert len(learner.handshakes) == 1  # not retried
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any(code.name in e and message in e and learner.address in e for e in errors), errors


def test_auth_token_travels_on_every_rpc_and_is_never_logged(learners, caplog) -> None:
    caplog.set_level(logging.DEBUG, logger="actors")
    learner = learners(auth_token="s3cret-token", training_over_after=3)
    config = make_config(learner.address, auth_token="s3cret-token")
    assert run_to_end(learner, config) == 0
    assert learner.handshakes[0].metadata["authorization"] == "Bearer s3cret-token"
    assert all(s.metadata["authorization"] == "Bearer s3cret-token" for s in learner.steps)
    assert len(learner.steps) == 3
    wrong = make_config(learner.address, auth_token="wr0ng-t0ken")
    assert run_to_end(learner, wrong) == EXIT_PERMANENT
    assert run_to_end(learner, make_config(learner.address)) == EXIT_PERMANENT
    assert "UNAUTHENTICATED" in caplog.text
    assert "s3cret-token" not in caplog.text and "wr0ng-t0ken" not in caplog.text


def test_too_large_messages_are_refused_before_sending(learners, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    learner = learners(max_message_bytes=1000)
    config = make_config(learner.address, env="CartPole-v1", env_kwargs={}, envs_per_actor=16)
    assert run_to_end(learner, config) == EXIT_PERMANENT
    assert "--envs-per-actor" in caplog.text and learner.steps == []


def test_unknown_environment_is_a_permanent_error(learners, caplog) -> None:
    learner = learners()
    config = make_config(learner.address, env="NoSuchEnv-v0", env_kwargs={})
    assert run_to_end(learner, config) == EXIT_PERMANENT
    assert "NoSuchEnv-v0" in caplog.text and "--env-import" in caplog.text
    # not registered here: it asked the learner for its --env-import (none), no session
    assert [h.session_id for h in learner.handshakes] == [""]


def test_unsupported_spaces_are_a_permanent_error(learners, caplog) -> None:
    learner = learners()
    config = make_config(learner.address, env="support.custom_env_plugin:TextObservation-v0",
                         env_kwargs={})
    assert run_to_end(learner, config) == EXIT_PERMANENT
    assert "Text" in caplog.text and "not supported" in caplog.text
    assert learner.handshakes == []


def test_stop_event_ends_the_stream_cleanly(learners, actors) -> None:
    learner = learners()
    actor = actors(make_config(learner.address, env="CartPole-v1", env_kwargs={}))
    learner.wait_until(lambda s: len(s.steps) >= 10, WAIT, "steps")
    actor.stop.set()
    assert actor.join() == 0
    session = learner.sessions()[0].session_id
    learner.wait_until(lambda s: session in s.ended_sessions, WAIT, "the stream's end")


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
