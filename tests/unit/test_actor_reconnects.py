"""The actor runtime when its learner goes away, restarts, refuses or errs: reconnects with
backoff, transient and permanent handshake errors, sessions the learner no longer has,
authentication, oversized messages and a clean stop. Against a real gRPC stand-in learner;
every wait is bounded and nothing asserts a timing.
"""

from __future__ import annotations

import logging
import re
import time

import grpc
import numpy as np
import pytest
from support.actor_threads import REVEAL, make_config, run_to_end
from support.procs import WAIT

from actors.client import EXIT_PERMANENT

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

