"""The truncation bootstrap with a recurrent core.

When a time limit cuts an episode, the learner bootstraps from V(final observation). With an
LSTM that value must be computed from the recurrent state that continued the episode (the
environment's state BEFORE the reset), not from a zeroed state. The tests compute it by hand,
one step at a time, and compare it with what the real InferenceBatcher and the real learner
service produce; each also checks that the zero-state value differs, so a batcher that
zeroed the state would fail.
"""

from __future__ import annotations

import asyncio
import dataclasses

import grpc
import gymnasium as gym
import numpy as np
import torch
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner

from learner.serving.batcher import InferenceBatcher
from learner.serving.requests import InferenceRequest
from learner.training.models import ActorCritic, build_model
from learner.training.update import Batch, vtrace_inputs
from learner.training.weights import PublishedWeights
from seed_rl.config import Config

OBS, A, H = 4, 3, 8


def lstm_model(seed: int = 0) -> ActorCritic:
    torch.manual_seed(seed)
    config = dataclasses.replace(Config(), hidden_sizes=[16], lstm=True, lstm_size=H)
    space = gym.spaces.Box(-np.inf, np.inf, (OBS,), np.float32)
    return build_model(space, gym.spaces.Discrete(A), config).eval()


@torch.no_grad()
def value_after(model: ActorCritic, episode: np.ndarray,
                final: np.ndarray) -> tuple[float, float]:
    """(V(final) with the state carried over ``episode``, V(final) from a zero state),
    stepping the model one observation at a time as inference does."""
    state = model.initial_state(1)
    not_start = torch.zeros(1, 1, dtype=torch.bool)
    for t, obs in enumerate(episode):
        start = torch.tensor([[t == 0]])
        state = model(torch.from_numpy(obs)[None, None], start, state).core_state
    final = torch.from_numpy(final)[None, None]
    carried = model(final, not_start, state).values.item()
    zero = model(final, not_start, model.initial_state(1)).values.item()
    return carried, zero


class Script:
    """One actor's K environments over S steps: observations, episode-end flags, and the
    final observation of each truncated (env, step)."""

    def __init__(self, rng: np.random.Generator, steps: int, num_envs: int,
                 terminated: list[tuple[int, int]], truncated: list[tuple[int, int]]):
        self.observations = rng.normal(size=(steps, num_envs, OBS)).astype(np.float32)
        self.terminated = np.zeros((steps, num_envs), bool)
        self.truncated = np.zeros((steps, num_envs), bool)
        for step, env in terminated:
            self.terminated[step, env] = True
        for step, env in truncated:
            self.truncated[step, env] = True
        self.finals = {key: rng.normal(size=OBS).astype(np.float32) for key in truncated}

    def request(self, step: int, core_state) -> InferenceRequest:
        # The order the actor lists them in, not sorted: the answer must follow it.
        envs = [env for s, env in reversed(list(self.finals)) if s == step]
        finals = np.stack([self.finals[(step, env)] for env in envs]) if envs else np.zeros(
            (0, OBS), np.float32)
        return InferenceRequest(
            observations=self.observations[step],
            episode_start=self.terminated[step] | self.truncated[step],
            core_state=core_state, final_env_indices=np.asarray(envs, np.int64),
            final_observations=finals)

    def episode_before(self, step: int, env: int) -> np.ndarray:
        """The observations of the episode that the end at ``step`` cut, first to last."""
        ended = self.terminated[:, env] | self.truncated[:, env]
        begin = max([s for s in range(step) if ended[s]], default=0)
        return self.observations[begin:step, env]


def serve(batcher: InferenceBatcher, model: ActorCritic, scripts: list[Script]):
    """Step every script through the batcher as the service does (the state before x_t in,
    the next state kept), all actors' requests of a step submitted together. Returns, per
    script, {(step, env): final value}."""
    states = [tuple(s.clone() for s in model.initial_state(len(script.observations[0])))
              for script in scripts]
    answers: list[dict[tuple[int, int], float]] = [{} for _ in scripts]
    async def one_step(step: int) -> list[InferenceRequest]:
        requests = [batcher.submit(script.request(step, state))
                    for script, state in zip(scripts, states, strict=True)]
        await asyncio.wait_for(asyncio.gather(*(r.waiter for r in requests)), 30)
        return requests

    for step in range(len(scripts[0].observations)):
        for i, request in enumerate(asyncio.run(one_step(step))):
            assert request.error is None
            for env, value in zip(request.final_env_indices, request.final_values,
                                  strict=True):
                answers[i][(step, int(env))] = float(value)
            states[i] = request.next_core_state
    return answers


def check_final_values(model: ActorCritic, script: Script,
                       answers: dict[tuple[int, int], float]) -> None:
    assert sorted(answers) == sorted(script.finals), "one final value per truncated env"
    for (step, env), final in script.finals.items():
        episode = script.episode_before(step, env)
        assert len(episode) >= 2, "the state must have read some of the episode"
        carried, zero = value_after(model, episode, final)
        assert np.isclose(answers[(step, env)], carried, rtol=1e-5, atol=1e-6), (step, env)
        assert abs(carried - zero) > 1e-3, "the zero-state value must differ, else vacuous"
        assert not np.isclose(answers[(step, env)], zero, rtol=1e-5, atol=1e-6)


def make_batcher(model: ActorCritic, sizes: list[int], envs: int) -> InferenceBatcher:
    # Every connected environment asks each step, so each step is one batch of all of them.
    return InferenceBatcher(PublishedWeights(model), torch.device("cpu"), max_batch=1000,
                            max_wait_s=600.0, on_batch=lambda n, waited, busy: sizes.append(n),
                            connected_envs=lambda: envs)


def test_truncation_value_uses_the_state_before_the_reset():
    model = lstm_model()
    # env 0 truncated at step 3; env 1 at step 5; env 2 terminated at step 2 (its state is
    # reset there) and truncated at step 6, so its value reads only steps 2 .. 5.
    script = Script(np.random.default_rng(0), steps=8, num_envs=3, terminated=[(2, 2)],
                    truncated=[(3, 0), (5, 1), (6, 2)])
    sizes: list[int] = []
    batcher = make_batcher(model, sizes, envs=3)
    batcher.start()
    try:
        (answers,) = serve(batcher, model, [script])
    finally:
        batcher.stop()
    check_final_values(model, script, answers)
    # Each step's final observations ran in the same forward pass as its 3 observations.
    assert sizes == [3] * 8


def test_truncation_values_of_several_actors_in_one_batch_go_to_their_own_envs():
    """Two actors share each forward pass; several envs of one actor truncate together
    (listed out of order): each value still uses its own env's state."""
    model = lstm_model(1)
    rng = np.random.default_rng(1)
    first = Script(rng, steps=7, num_envs=3, terminated=[(1, 1)],
                   truncated=[(4, 0), (4, 2), (6, 1)])
    second = Script(rng, steps=7, num_envs=2, terminated=[],
                    truncated=[(3, 1), (5, 0), (5, 1)])
    sizes: list[int] = []
    batcher = make_batcher(model, sizes, envs=5)
    batcher.start()
    try:
        answers = serve(batcher, model, [first, second])
    finally:
        batcher.stop()
    assert sizes == [5] * 7, "both actors' requests should share every forward pass"
    check_final_values(model, first, answers[0])
    check_final_values(model, second, answers[1])


# --- through the real learner service -------------------------------------------------------

ENV = "seed_rl.testing:RevealAction-v0"
K, T = 2, 6
LENGTHS = (3, 4)  # env k's episodes last LENGTHS[k] steps, then a time limit cuts them


def reveal_steps(steps: int):
    """What K RevealAction envs with time limits LENGTHS send, step by step: (observations,
    truncated, final envs, final observations). Observation [t, episode]."""
    t, episode = [0] * K, [0] * K
    for _ in range(steps):
        obs, truncated, final_envs, finals = [], [], [], []
        for k in range(K):
            cut = t[k] == LENGTHS[k]
            if cut:
                final_envs.append(k)
                finals.append([t[k], episode[k]])
                t[k], episode[k] = 0, episode[k] + 1
            obs.append([t[k], episode[k]])
            truncated.append(cut)
            t[k] += 1
        yield (np.asarray(obs, np.float32), truncated, final_envs,
               np.asarray(finals, np.float32) if finals else None)


def test_the_service_stores_the_truncation_value_of_the_continued_state(tmp_path):
    config = make_config(tmp_path, env=ENV, env_kwargs={"truncate": True}, unroll_length=T,
                         batch_size=K, lstm=True, lstm_size=H, hidden_sizes=[16])
    with running_learner(config, train=False) as learner:
        actor = ScriptedActor(f"127.0.0.1:{learner.port}",
                              handshake_request(ENV, K, env_kwargs={"truncate": True}))
        for obs, truncated, final_envs, finals in reveal_steps(T + 1):
            actor.step(step_request(obs, np.zeros(K), truncated=truncated,
                                    final_envs=final_envs, final_observations=finals))
        actor.close()
        unrolls = learner.queue.get(K, learner.trainer.policy_version, timeout=5)
        assert unrolls is not None
        model = learner.trainer.weights.clone()  # not training: the weights it served
        cut = 0
        for slot, k in zip(*np.nonzero(unrolls.truncated), strict=True):
            length, episode = LENGTHS[k], unrolls.observations[slot, k, 1] - 1
            observations = np.array([[t, episode] for t in range(length + 1)], np.float32)
            carried, zero = value_after(model, observations[:-1], observations[-1])
            stored = float(unrolls.truncation_values[slot, k])
            assert np.isclose(stored, carried, rtol=1e-5, atol=1e-6), (slot, k)
            assert not np.isclose(stored, zero, rtol=1e-5, atol=1e-6), (slot, k)
            cut += 1
        assert cut >= 2 * K - 1, "the script cuts each env at least once"
        assert (unrolls.truncation_values[~unrolls.truncated] == 0).all()


def test_a_final_observation_for_a_terminated_env_never_bootstraps(tmp_path):
    """Gymnasium may report terminated and truncated together; termination wins. A client
    that sends a final observation for such an env is either refused, or its value is not
    added to the reward."""
    config = make_config(tmp_path, env=ENV, unroll_length=2, batch_size=1, discount=0.9)
    with running_learner(config, train=False) as learner:
        actor = ScriptedActor(f"127.0.0.1:{learner.port}", handshake_request(ENV, 1))
        final = np.array([[5.0, 0.0]], np.float32)
        try:
            actor.step(step_request(np.array([[0.0, 0.0]], np.float32)))
            actor.step(step_request(np.array([[0.0, 1.0]], np.float32), [1.0],
                                    terminated=[True], truncated=[True], final_envs=[0],
                                    final_observations=final))
            actor.step(step_request(np.array([[1.0, 1.0]], np.float32), [2.0]))
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
            return
        finally:
            actor.close()
        unrolls = learner.queue.get(1, learner.trainer.policy_version, timeout=5)
        assert unrolls is not None
        batch = Batch.from_unrolls(unrolls, torch.device("cpu"))
        with torch.no_grad():
            output = learner.trainer.model(batch.observations, batch.terminated | batch.truncated, ())
            final_value = learner.trainer.model(torch.from_numpy(final)[None],
                                        torch.zeros(1, 1, dtype=torch.bool), ()).values.item()
        assert abs(final_value) > 1e-6, "else the check below would be vacuous"
        inputs = vtrace_inputs(batch, output, config)
        assert inputs.discounts[0, 0] == 0
        assert inputs.rewards[0, 0] == 1.0, "a terminated step must not bootstrap"
