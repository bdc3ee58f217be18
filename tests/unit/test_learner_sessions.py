"""Sessions through a real learner service: a restarted actor's partial unrolls are dropped,
never mixed with its new incarnation's steps; duplicate live ids are refused; env steps
count transitions, not messages (a session's first message is a reset)."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from support.learner_client import (
    ScriptedActor,
    handshake_request,
    open_step_stream,
    step_request,
)
from support.learner_harness import make_config, running_learner

from learner.serving.session import end_stream
from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

ENV = "seed_rl.testing:RevealAction-v0"
K, T = 2, 4


def observations(incarnation: int, step: int) -> np.ndarray:
    """[K, 2] float32: column 1 tags the incarnation that sent it."""
    return np.array([[step, incarnation]] * K, np.float32)


def test_a_restarted_actor_starts_clean_unrolls(tmp_path):
    config = make_config(tmp_path, env=ENV, unroll_length=T, batch_size=K)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        old = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0"))
        for step in range(T - 1):  # a partial unroll, then the process "dies"
            old.step(step_request(observations(1, step)))
        old.close()
        new = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0"))
        for step in range(T + 1):
            new.step(step_request(observations(2, step)))
        unrolls = learner.queue.get(K, learner.trainer.policy_version, timeout=5)
        assert unrolls is not None
        assert (unrolls.observations[..., 1] == 2).all(), "old steps leaked into an unroll"
        np.testing.assert_array_equal(unrolls.observations[:, 0, 0], np.arange(T + 1))
        assert learner.queue.depth == 0
        assert learner.servicer.dropped_partial_unrolls == K
        new.close()


def test_a_second_live_connection_with_the_same_id_is_refused(tmp_path):
    config = make_config(tmp_path, env=ENV)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        first = ScriptedActor(address, handshake_request(ENV, K, actor_id="dup"))
        first.step(step_request(observations(1, 0)))
        with pytest.raises(grpc.RpcError) as refused:
            ScriptedActor(address, handshake_request(ENV, K, actor_id="dup"))
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "'dup' is already connected" in refused.value.details()
        # The first connection is untouched and keeps being served.
        assert len(first.actions(first.step(step_request(observations(1, 1))))) == K
        first.close()


def test_env_steps_count_transitions_not_messages_across_reconnects(tmp_path):
    """The first message of a session carries only x_0 (observations after a reset or a
    reconnect, no transition): N messages from K environments are (N - 1) x K env steps.
    Every new session begins with such a message: after a restart (new run id) and after a
    reconnect of the same process (same run id)."""
    config = make_config(tmp_path, env=ENV, unroll_length=T, batch_size=K)
    sessions = [("run-1", 3), ("run-2", 4), ("run-2", 2)]  # (run id, messages sent)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        counted = 0
        for incarnation, (run_id, messages) in enumerate(sessions):
            actor = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0",
                                                             run_id=run_id))
            actor.step(step_request(observations(incarnation, 0)))
            assert learner.metrics.env_steps == counted, f"session {incarnation}'s x_0 counted"
            for step in range(1, messages):
                actor.step(step_request(observations(incarnation, step)))
            counted += (messages - 1) * K
            assert learner.metrics.env_steps == counted
            actor.close()
        assert counted == (2 + 3 + 1) * K


def test_a_handshaken_session_is_expected_until_its_stream_opens_and_ends(tmp_path):
    """A session counts for the batcher from its handshake on: its actor opens the stream
    right after, so a batch waits for it (in a reconnect storm that wait leaves the serving
    loop time to accept the streams); it stops counting when its session ends."""
    config = make_config(tmp_path, env=ENV)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        with grpc.insecure_channel(address) as channel:
            stub = pb_grpc.LearnerStub(channel)
            late = stub.Handshake(handshake_request(ENV, K, actor_id="late"), timeout=10)
            assert learner.servicer.session_envs == K
            waited = learner.batcher.waited_out
            first = ScriptedActor(address, handshake_request(ENV, K, actor_id="first"))
            assert len(first.actions(first.step(step_request(observations(1, 0))))) == K
            # Not started early: the late session's environments were due too.
            assert learner.batcher.waited_out == waited + 1
            done = threading.Event()

            def steps():  # one step, then the stream stays open until done
                yield step_request(observations(2, 0))
                done.wait(10)

            stream = open_step_stream(channel, late.session_id, steps(), timeout=10)
            assert len(wire.decode_tensor(next(stream).actions)) == K
            assert learner.servicer.session_envs == 2 * K
            done.set()
            first.close()
        deadline = time.monotonic() + 10
        while learner.servicer.session_envs and time.monotonic() < deadline:
            time.sleep(0.05)
        assert learner.servicer.session_envs == 0


def test_a_stream_the_learner_ends_while_it_steps_is_told_cancelled(tmp_path):
    """The learner ends a stream (replaced, idle) whatever the handler is doing: reading,
    at inference or writing an answer. Cancelling its task inside gRPC's write ended the
    RPC with no status, and the actor waited forever (here: until its deadline)."""
    env, x0 = "CartPole-v1", np.zeros((1, 4), np.float32)
    with running_learner(make_config(tmp_path, env=env), train=False) as learner:
        outcomes = []
        for trial in range(10):
            actor = ScriptedActor(f"127.0.0.1:{learner.port}",
                                  handshake_request(env, 1, actor_id=f"busy-{trial}"))
            ended: list = []

            def step_until_ended(actor=actor, ended=ended) -> None:
                try:
                    actor.step(step_request(x0))
                    while True:  # as fast as answers come: the handler is rarely reading
                        actor.step(step_request(x0, rewards=[1.0]))
                except grpc.RpcError as error:
                    ended.append((error.code(), error.details()))

            stepping = threading.Thread(target=step_until_ended, daemon=True)
            stepping.start()
            deadline = time.monotonic() + 10
            while (learner.servicer.session_envs < 1 or learner.metrics.env_steps
                   < 20 * (trial + 1)) and time.monotonic() < deadline:
                time.sleep(0.01)
            session = next(s for s in learner.servicer.sessions()
                           if s.actor_id == f"busy-{trial}")
            learner.server.call_soon(lambda session=session: end_stream(session, "test"))
            stepping.join(20)
            outcomes.append(ended[0] if ended else "no status within 20 s")
            actor.channel.close()
        assert outcomes == [(grpc.StatusCode.CANCELLED,
                             "the learner ended this stream: test; reconnect")] * 10
