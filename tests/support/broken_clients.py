"""A foreign actor client for the conformance checker's tests, conformant or broken on
purpose: ``python -m support.broken_clients MODE`` (from tests/).

Built on the generated stubs (seed_rl.proto) and the codec (seed_rl.wire) alone, never on
actors/, so it is a client as another language would write it from docs/protocol.md: it
reads the learner's address from ``SEED_RL_LEARNER`` and the token from
``SEED_RL_AUTH_TOKEN``, steps K = 2 CartPole-v1 environments, reconnects after a lost
session with a short backoff, and exits 0 when told ``training_over``, 2 when refused with
a code that says stop. MODE ``ok`` does all of that right; each other mode breaks one rule:

- ``shift``: steps each environment with the *previous* answer's actions (off by one);
- ``dtype``: sends float64 observations;
- ``first-reward``: each session's first message carries reward 1;
- ``terminated-at-limit``: reports an episode cut by the time limit as terminated;
- ``no-final``: truncated, but lists no final observation;
- ``no-reconnect``: exits 1 when its session is lost;
- ``ignore-over``: told training_over, keeps running;
- ``never-connects``: sleeps;
- ``dies``: exits 3 at once;
- ``no-token``: sends no token.
"""

from __future__ import annotations

import os
import queue
import sys
import time
import uuid

import grpc
import gymnasium as gym
import numpy as np

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

MODES = ("ok", "shift", "dtype", "first-reward", "terminated-at-limit", "no-final",
         "no-reconnect", "ignore-over", "never-connects", "dies", "no-token")
NUM_ENVS = 2
STOP_CODES = {grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.FAILED_PRECONDITION,
              grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.UNIMPLEMENTED}


class Client:
    def __init__(self, mode: str):
        self.mode = mode
        self.address = os.environ["SEED_RL_LEARNER"]
        token = os.environ.get("SEED_RL_AUTH_TOKEN", "")
        self.metadata = [] if mode == "no-token" else [("authorization", f"Bearer {token}")]
        self.envs = [gym.make("CartPole-v1") for _ in range(NUM_ENVS)]
        self.observations = np.stack([env.reset(seed=i)[0] for i, env in enumerate(self.envs)])
        self.returns = np.zeros(NUM_ENVS)
        self.lengths = np.zeros(NUM_ENVS, np.int64)
        self.previous_actions = np.zeros(NUM_ENVS, np.int64)
        self.run_id = uuid.uuid4().hex

    def run(self) -> int:
        channel = grpc.insecure_channel(self.address)
        stub = pb_grpc.LearnerStub(channel)
        while True:
            try:
                if self.session(stub) == "training_over":
                    if self.mode == "ignore-over":
                        time.sleep(3600)
                    return 0
            except grpc.RpcError as error:
                print(f"client: {error.code().name}: {error.details()}", flush=True)
                if error.code() in STOP_CODES:
                    return 2
                if self.mode == "no-reconnect":
                    return 1
            time.sleep(0.2)

    def session(self, stub: pb_grpc.LearnerStub) -> str:
        env = self.envs[0]
        answer = stub.Handshake(pb.HandshakeRequest(
            protocol_version=wire.PROTOCOL_VERSION, actor_id="broken-client",
            run_id=self.run_id, num_envs=NUM_ENVS, env_id="CartPole-v1",
            observation_space=wire.encode_space(env.observation_space),
            action_space=wire.encode_space(env.action_space)),
            metadata=self.metadata, timeout=10)
        requests: queue.Queue = queue.Queue()
        requests.put(self.request(np.zeros(NUM_ENVS, np.float32),
                                  np.zeros(NUM_ENVS, bool), np.zeros(NUM_ENVS, bool), [], [],
                                  first=True))
        responses = stub.Step(iter(requests.get, None), metadata=[
            *self.metadata, (wire.SESSION_METADATA_KEY, answer.session_id)])
        try:
            for response in responses:
                if response.training_over:
                    return "training_over"
                requests.put(self.step(wire.decode_tensor(response.actions)))
        finally:
            requests.put(None)
        return "ended"

    def step(self, actions: np.ndarray) -> pb.StepRequest:
        """Step every environment; the request of the transitions."""
        if self.mode == "shift":
            actions, self.previous_actions = self.previous_actions, actions.copy()
        rewards = np.zeros(NUM_ENVS, np.float32)
        terminated = np.zeros(NUM_ENVS, bool)
        truncated = np.zeros(NUM_ENVS, bool)
        finals, episodes = [], []
        for k, env in enumerate(self.envs):
            observation, reward, term, trunc, _ = env.step(int(actions[k]))
            self.returns[k] += reward
            self.lengths[k] += 1
            rewards[k] = reward
            if term or trunc:
                episodes.append(pb.EpisodeStats(env_index=k, episode_return=self.returns[k],
                                                episode_length=int(self.lengths[k])))
                self.returns[k], self.lengths[k] = 0.0, 0
                if trunc and not term:
                    if self.mode == "terminated-at-limit":
                        term, trunc = True, False
                    elif self.mode != "no-final":
                        finals.append((k, observation))
                observation, _ = env.reset()
            terminated[k], truncated[k] = term, trunc
            self.observations[k] = observation
        return self.request(rewards, terminated, truncated, [k for k, _ in finals],
                            [o for _, o in finals], episodes=episodes)

    def request(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
                final_envs: list[int], finals: list[np.ndarray], first: bool = False,
                episodes: list | None = None) -> pb.StepRequest:
        if first and self.mode == "first-reward":
            rewards = np.ones(NUM_ENVS, np.float32)
        observations = self.observations.astype(
            np.float64 if self.mode == "dtype" else np.float32)
        final_observations = (np.stack(finals) if finals
                              else np.zeros((0, 4), np.float32)).astype(np.float32)
        return pb.StepRequest(
            observations=wire.encode_tensor(observations),
            rewards=wire.encode_tensor(rewards),
            terminated=wire.encode_tensor(terminated),
            truncated=wire.encode_tensor(truncated),
            final_observation_envs=final_envs,
            final_observations=wire.encode_tensor(final_observations),
            episodes=episodes or [])


def main(mode: str) -> int:
    if mode not in MODES:
        print(f"unknown mode {mode!r}; the modes are {', '.join(MODES)}", file=sys.stderr)
        return 64
    if mode == "dies":
        return 3
    if mode == "never-connects":
        time.sleep(3600)
    return Client(mode).run()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
