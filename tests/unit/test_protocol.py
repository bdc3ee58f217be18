"""What proto/seed_rl/v1/seed_rl.proto and docs/protocol.md promise a client written in any
language, checked against a real learner in this process (real gRPC, no mocks): the
learner's spaces in every handshake answer, mismatches that print both sides' values, the
query handshake, env kwargs, Box bounds, final observations, the first-message rule (and
that the Python actor keeps it across a reconnect), one request in flight, and the end of
training."""

from __future__ import annotations

import queue
import threading
import time

import grpc
import gymnasium as gym
import numpy as np
import pytest
from support.learner_client import (
    ScriptedActor,
    handshake_request,
    open_step_stream,
    step_request,
)
from support.learner_harness import make_config, running_learner
from support.procs import WAIT

from actors.client import ActorClient
from learner.serving.space_match import space_mismatch
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

ENV = "CartPole-v1"
K = 2


def handshake(address: str, request: pb.HandshakeRequest) -> pb.HandshakeResponse:
    with grpc.insecure_channel(address) as channel:
        return pb_grpc.LearnerStub(channel).Handshake(request, timeout=10)


def refusal(address: str, request: pb.HandshakeRequest) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as refused:
        handshake(address, request)
    return refused.value


def query(**fields) -> pb.HandshakeRequest:
    """A handshake with an empty env_id: which environment, which spaces?"""
    return pb.HandshakeRequest(**{"protocol_version": wire.PROTOCOL_VERSION,
                                  "actor_id": "query", "run_id": "q-1", **fields})


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


def test_every_handshake_answer_carries_the_learners_spaces(tmp_path) -> None:
    """A client of its own can copy the spaces from a query and be accepted with them."""
    env = gym.make(ENV)
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        asked = handshake(address, query())
        assert (asked.env_id, asked.env_kwargs_json) == (ENV, "{}")
        spaces = (asked.observation_space, asked.action_space)
        assert spaces == (wire.encode_space(env.observation_space),
                          wire.encode_space(env.action_space))
        for mine, theirs in zip((env.observation_space, env.action_space), spaces, strict=True):
            assert space_mismatch(mine, wire.decode_space(theirs)) is None
        # A client that knows nothing but the query's answer opens a session with it.
        request = query(env_id=asked.env_id, env_kwargs_json=asked.env_kwargs_json, num_envs=K,
                        observation_space=asked.observation_space,
                        action_space=asked.action_space)
        opened = handshake(address, request)
        assert opened.session_id and len(opened.slot_ids) == K
        assert (opened.observation_space, opened.action_space) == spaces
    env.close()


def test_a_space_mismatch_prints_both_sides_values(tmp_path) -> None:
    """Float32 maxima instead of CartPole's infinite velocity bounds: refused, naming the
    first element that differs and printing both sides' bounds, value by value."""
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        request = handshake_request(ENV, K)
        box = wire.decode_space(request.observation_space)
        biggest = np.finfo(np.float32).max
        finite = gym.spaces.Box(np.maximum(box.low, -biggest), np.minimum(box.high, biggest),
                                dtype=np.float32)
        request.observation_space.CopyFrom(wire.encode_space(finite))
        refused = refusal(f"127.0.0.1:{learner.port}", request)
        assert refused.code() == grpc.StatusCode.FAILED_PRECONDITION
        details = refused.details()
        for fragment in ("observation space: bounds differ",
                         "low[1] is -inf on the learner, -3.4028235e+38 on the actor "
                         "(2 of 4 values differ)",
                         "high[1] is inf on the learner, 3.4028235e+38 on the actor",
                         "learner has Box(shape=(4,), dtype=float32, low=[-4.8, -inf, "
                         "-0.41887903, -inf], high=[4.8, inf, 0.41887903, inf])",
                         "actor has Box(shape=(4,), dtype=float32, low=[-4.8, -3.4028235e+38",
                         "a handshake with an empty env_id asks for them"):
            assert fragment in details, (fragment, details)


def test_a_query_opens_no_session_and_checks_only_version_and_ids(tmp_path) -> None:
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        # Everything but the version and the ids is ignored: no K, a malformed space.
        asked = handshake(address, query(num_envs=0, observation_space=pb.Space(
            box=pb.BoxSpace(dtype="no such dtype"))))
        assert asked.env_id == ENV and not asked.session_id and not asked.slot_ids
        assert asked.max_message_bytes == learner.config.max_message_bytes
        assert learner.servicer.sessions() == []
        with grpc.insecure_channel(address) as channel:  # nothing to stream on
            stream = open_step_stream(channel, asked.session_id,
                                      [step_request(np.zeros((K, 4), np.float32))], timeout=10)
            with pytest.raises(grpc.RpcError) as refused:
                next(stream)
            assert refused.value.code() == grpc.StatusCode.NOT_FOUND
        for bad, code in ((query(protocol_version=2), grpc.StatusCode.FAILED_PRECONDITION),
                          (query(actor_id=""), grpc.StatusCode.INVALID_ARGUMENT)):
            assert refusal(address, bad).code() == code


def test_env_kwargs_json_is_compared_as_json_and_empty_means_none(tmp_path) -> None:
    with running_learner(make_config(tmp_path / "plain", env=ENV), train=False) as learner:
        opened = handshake(f"127.0.0.1:{learner.port}",
                           handshake_request(ENV, K, env_kwargs_json=""))
        assert opened.session_id
    kwargs = {"max_episode_steps": 50}
    config = make_config(tmp_path / "kwargs", env=ENV, env_kwargs=kwargs)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        spaced = handshake_request(ENV, K, env_kwargs=kwargs,
                                   env_kwargs_json='{ "max_episode_steps" :  50 }')
        assert handshake(address, spaced).session_id
        empty = refusal(address, handshake_request(ENV, K, env_kwargs=kwargs,
                                                   env_kwargs_json=""))
        assert empty.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "environment: learner runs CartPole-v1 {'max_episode_steps': 50}" in empty.details()


def test_box_bounds_must_have_the_full_shape(tmp_path) -> None:
    """A scalar bound is refused even where every bound is equal; bounds of another dtype
    are cast to the Box's before they are compared, and refused beyond its range."""
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        scalar = handshake_request(ENV, K)
        scalar.observation_space.box.low.CopyFrom(wire.encode_tensor(np.float32(-4.8)))
        refused = refusal(address, scalar)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "Box bounds have shapes () and (4,), expected (4,)" in refused.details()
        wide = handshake_request(ENV, K)
        box = wide.observation_space.box
        for bound in (box.low, box.high):
            bound.CopyFrom(wire.encode_tensor(wire.decode_tensor(bound).astype(np.float64)))
        assert handshake(address, wide).session_id
        box.high.CopyFrom(wire.encode_tensor(np.full(4, 1e39)))  # beyond float32
        refused = refusal(address, wide)
        assert refused.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "gymnasium refuses this box space" in refused.details()


def test_final_observations_absent_or_empty_are_both_accepted(tmp_path) -> None:
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        actor = ScriptedActor(f"127.0.0.1:{learner.port}", handshake_request(ENV, K))
        observations = np.zeros((K, 4), np.float32)
        absent = step_request(observations)
        assert not absent.HasField("final_observations")
        empty = step_request(observations, rewards=[1, 1],
                             final_observations=np.zeros((0, 4), np.float32))
        assert empty.HasField("final_observations")
        for request in (absent, empty):
            assert actor.actions(actor.step(request)).shape == (K,)
        actor.close()


@pytest.mark.parametrize(("first", "envs"), [
    ({"rewards": [0.0, 1.0]}, [1]),
    ({"terminated": [True, False]}, [0]),
    ({"truncated": [True, True], "final_envs": [0, 1],
      "final_observations": np.zeros((2, 4), np.float32)}, [0, 1]),
], ids=["reward", "terminated", "truncated"])
def test_each_sessions_first_message_carries_no_transition(tmp_path, first, envs) -> None:
    """Reward 0 and no episode end in a session's first message, after a reconnect too;
    from its second message on, rewards and episode ends are the point."""
    observations = np.zeros((K, 4), np.float32)
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        for run_id in ("run-1", "run-1", "run-2"):  # a new session, a reconnect, a restart
            actor = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0",
                                                             run_id=run_id))
            with pytest.raises(grpc.RpcError) as refused:
                actor.step(step_request(observations, **first))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details() == (
                "each session's first message must carry reward 0 and terminated = truncated "
                "= false for every environment (its observations start the session: no "
                f"transition led to them); environments {envs} break it")
            actor.close()
            actor = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0",
                                                             run_id=run_id))
            actor.step(step_request(observations))
            assert len(actor.actions(actor.step(step_request(observations, **first)))) == K
            actor.close()


def test_the_python_actor_starts_every_session_without_a_transition(tmp_path) -> None:
    """CartPole pays reward 1 on every step, so an actor that sent its last step's reward in
    a new session's first message would be refused (and exit 2). The learner ends the
    actor's stream mid-training (UNAVAILABLE, as a broken replica group does) and refuses
    handshakes for a while; the actor reconnects, is served, and exits 0 at the end."""
    config = make_config(tmp_path, env=ENV, unroll_length=4, batch_size=K, queue_size=1000)
    with running_learner(config, train=False) as learner:
        actor = ActorClient(Config(learner=f"127.0.0.1:{learner.port}", env=ENV,
                                   envs_per_actor=K, actor_id_prefix="reconnect",
                                   reconnect_max_backoff=0.2), 0)
        exit_codes: list[int] = []
        thread = threading.Thread(target=lambda: exit_codes.append(actor.run()), daemon=True)
        thread.start()
        try:
            def stepping(session_ids: set[str]) -> list:
                return [s for s in learner.servicer.sessions()
                        if s.session_id not in session_ids and s.steps >= 3]

            wait_for(lambda: stepping(set()), "the actor's first session to step")
            (old,) = stepping(set())
            learner.servicer.unavailable.set()
            wait_for(lambda: old.closed, "the learner to end the stream")
            learner.servicer.unavailable.clear()
            wait_for(lambda: stepping({old.session_id}) or not thread.is_alive(),
                     "a new session to step")
            assert thread.is_alive() and not exit_codes, "the actor was refused after all"
            learner.request_stop("test finished")
            learner.shutdown()
            thread.join(WAIT)
        finally:
            actor.stop.set()
            thread.join(WAIT)
        assert exit_codes == [0] and actor.outcome == "training_over"


def test_requests_are_answered_one_at_a_time_in_order(tmp_path) -> None:
    """A client must wait for each answer; one that sends two requests at once is not
    refused: the learner reads the second after answering the first, as the next step."""
    config = make_config(tmp_path, env=ENV, unroll_length=1, batch_size=K)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        opened = handshake(address, handshake_request(ENV, K))
        requests: queue.Queue = queue.Queue()
        with grpc.insecure_channel(address) as channel:
            stream = open_step_stream(channel, opened.session_id, iter(requests.get, None))
            requests.put(step_request(np.zeros((K, 4), np.float32)))
            requests.put(step_request(np.ones((K, 4), np.float32), rewards=[1, 1]))
            answers = [next(stream), next(stream)]
            assert [wire.decode_tensor(a.actions).shape for a in answers] == [(K,), (K,)]
            (session,) = learner.servicer.sessions()
            assert session.steps == 2
            assert learner.metrics.env_steps == K  # the second was taken as a transition
            unrolls = learner.queue.get(K, learner.trainer.policy_version, timeout=WAIT)
            assert unrolls is not None  # two slots: x_0, then x_1 (in the order sent)
            np.testing.assert_array_equal(unrolls.observations[:, :, 0], [[0, 0], [1, 1]])
            requests.put(None)
            assert list(stream) == []


def test_at_the_end_of_training_the_learner_answers_training_over_and_ends_the_stream(
        tmp_path) -> None:
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        opened = handshake(address, handshake_request(ENV, K))
        requests: queue.Queue = queue.Queue()
        with grpc.insecure_channel(address) as channel:
            stream = open_step_stream(channel, opened.session_id, iter(requests.get, None))
            requests.put(step_request(np.zeros((K, 4), np.float32)))
            assert not next(stream).training_over
            learner.servicer.stopping.set()
            requests.put(step_request(np.zeros((K, 4), np.float32), rewards=[1, 1]))
            last = next(stream)
            assert last.training_over and not last.HasField("actions")
            assert list(stream) == []  # the learner returned: the stream ended with OK
            assert stream.code() == grpc.StatusCode.OK
            requests.put(None)
