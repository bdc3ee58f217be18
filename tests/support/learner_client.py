"""A scripted wire client for learner tests: speaks the contract step by step, so a test
controls exactly what the learner receives (real gRPC, no mocks)."""

from __future__ import annotations

import json
import queue
import uuid

import grpc
import gymnasium as gym
import numpy as np

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

_END = object()


def handshake_request(env_id: str, num_envs: int, actor_id: str | None = None,
                      env_kwargs: dict | None = None, run_id: str | None = None,
                      **overrides) -> pb.HandshakeRequest:
    env = gym.make(env_id, **(env_kwargs or {}))
    request = pb.HandshakeRequest(
        protocol_version=wire.PROTOCOL_VERSION,
        actor_id=actor_id or f"test-{uuid.uuid4().hex[:6]}",
        run_id=run_id or uuid.uuid4().hex,
        num_envs=num_envs,
        env_id=env_id,
        env_kwargs_json=json.dumps(env_kwargs or {}),
        observation_space=wire.encode_space(env.observation_space),
        action_space=wire.encode_space(env.action_space),
    )
    env.close()
    for key, value in overrides.items():
        setattr(request, key, value)
    return request


def step_request(observations, rewards=None, terminated=None, truncated=None,
                 final_envs=(), final_observations=None, episodes=()) -> pb.StepRequest:
    observations = np.asarray(observations)
    k = len(observations)
    request = pb.StepRequest(
        observations=wire.encode_tensor(observations),
        rewards=wire.encode_tensor(np.zeros(k, np.float32) if rewards is None
                                   else np.asarray(rewards, np.float32)),
        terminated=wire.encode_tensor(np.zeros(k, bool) if terminated is None
                                      else np.asarray(terminated, bool)),
        truncated=wire.encode_tensor(np.zeros(k, bool) if truncated is None
                                     else np.asarray(truncated, bool)),
        final_observation_envs=list(final_envs),
        episodes=[pb.EpisodeStats(env_index=i, episode_return=r, episode_length=n)
                  for i, r, n in episodes],
    )
    if final_observations is not None:
        request.final_observations.CopyFrom(wire.encode_tensor(np.asarray(final_observations)))
    return request


def open_step_stream(channel: grpc.Channel, session_id: str, requests,
                     timeout: float = 30.0):
    """The Step stream of the session ``session_id`` (its id as metadata), sending
    ``requests`` (any iterable: it may block to keep the stream open) on ``channel``."""
    return pb_grpc.LearnerStub(channel).Step(
        iter(requests), timeout=timeout, metadata=[(wire.SESSION_METADATA_KEY, session_id)])


class ScriptedActor:
    """Handshake, then send step requests one at a time and read each response."""

    def __init__(self, address: str, handshake: pb.HandshakeRequest, token: str = "",
                 timeout: float = 10.0):
        self.channel = grpc.insecure_channel(address)
        self.stub = pb_grpc.LearnerStub(self.channel)
        self.timeout = timeout
        self.auth = [(wire.AUTH_METADATA_KEY, f"Bearer {token}")] if token else []
        self.handshake = self.stub.Handshake(handshake, timeout=timeout, metadata=self.auth)
        self._requests: queue.Queue = queue.Queue()
        metadata = [(wire.SESSION_METADATA_KEY, self.handshake.session_id), *self.auth]
        self._responses = self.stub.Step(iter(self._requests.get, _END), metadata=metadata,
                                         timeout=timeout * 6)

    def step(self, request: pb.StepRequest) -> pb.StepResponse:
        self._requests.put(request)
        return next(self._responses)

    def actions(self, response: pb.StepResponse) -> np.ndarray:
        return wire.decode_tensor(response.actions)

    def close(self) -> None:
        self._requests.put(_END)
        try:
            for _ in self._responses:
                pass
        except grpc.RpcError:
            pass
        self.channel.close()
