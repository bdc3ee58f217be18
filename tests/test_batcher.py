"""The inference batcher: partial batches after the wait, many concurrent callers, each
answer to the right caller."""

from __future__ import annotations

import threading

import numpy as np
import torch
from torch import nn

from learner.batcher import BatcherStopped, InferenceBatcher, InferenceRequest
from learner.models import ModelOutput
from learner.policies import Categorical

A = 5


class EchoModel(nn.Module):
    """Logits peak at action obs[0] % A, so a greedy answer reveals which row it came from;
    value = obs[0]."""

    distribution = Categorical(A)

    def forward(self, observations, episode_start, core_state=()):
        key = observations[..., 0]
        logits = 50.0 * nn.functional.one_hot(key.long() % A, A).float()
        return ModelOutput(logits, key.float(), core_state)


def make_batcher(max_batch: int, max_wait_s: float, sizes: list[int]) -> InferenceBatcher:
    return InferenceBatcher(EchoModel(), torch.device("cpu"), threading.Lock(), lambda: 7,
                            max_batch=max_batch, max_wait_s=max_wait_s,
                            on_batch=lambda envs, waited, busy: sizes.append(envs))


def request(values, finals=()) -> InferenceRequest:
    obs = np.asarray(values, np.float32)[:, None]
    return InferenceRequest(
        observations=obs, episode_start=np.zeros(len(obs), bool), core_state=(),
        final_env_indices=np.arange(len(finals)),
        final_observations=np.asarray(finals, np.float32).reshape(-1, 1), greedy=True)


def test_a_lone_partial_batch_runs_after_the_wait():
    sizes: list[int] = []
    batcher = make_batcher(max_batch=1000, max_wait_s=0.01, sizes=sizes)
    batcher.start()
    try:
        req = batcher.submit(request([3, 4]))
        assert req.wait(5), "a partial batch must run once the wait has passed"
        assert req.actions.tolist() == [3, 4] and req.policy_version == 7
        assert sizes == [2]
    finally:
        batcher.stop()


def test_many_concurrent_callers_get_their_own_answers_in_shared_batches():
    sizes: list[int] = []
    batcher = make_batcher(max_batch=64, max_wait_s=0.05, sizes=sizes)
    batcher.start()
    results: dict[int, tuple] = {}

    def caller(i: int) -> None:
        values = [i * 10 + j for j in range(3)]
        for round_ in range(20):
            req = batcher.submit(request(values, finals=[i + round_]))
            assert req.wait(10)
            results[(i, round_)] = (req.actions.tolist(), req.final_values.tolist(),
                                    [v % A for v in values], [float(i + round_)])

    threads = [threading.Thread(target=caller, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    batcher.stop()
    assert len(results) == 16 * 20
    for actions, final_values, expected_actions, expected_finals in results.values():
        assert actions == expected_actions
        assert final_values == expected_finals
    assert sum(sizes) == 16 * 20 * 3
    assert max(sizes) > 3, "concurrent requests should share forward passes"


def test_stop_answers_waiting_callers_with_an_error():
    batcher = make_batcher(max_batch=8, max_wait_s=0.01, sizes=[])
    batcher.start()
    batcher.stop()
    req = batcher.submit(request([1]))
    assert req.wait(1) and isinstance(req.error, BatcherStopped)


def test_a_model_error_reaches_the_caller_and_is_recorded():
    class Broken(nn.Module):
        def forward(self, *args):
            raise RuntimeError("boom")

    batcher = InferenceBatcher(Broken(), torch.device("cpu"), threading.Lock(), lambda: 0,
                               max_batch=8, max_wait_s=0.001)
    batcher.start()
    req = batcher.submit(request([1]))
    assert req.wait(5)
    assert isinstance(req.error, RuntimeError) and "boom" in str(req.error)
    batcher.stop()
    assert isinstance(batcher.failure, RuntimeError)


def test_no_waiting_once_every_connected_environment_has_asked():
    """With all connected environments in the batch there is nobody left to wait for: the
    batch runs at once instead of after max_wait (here far longer than the test's bound)."""
    sizes: list[int] = []
    batcher = InferenceBatcher(EchoModel(), torch.device("cpu"), threading.Lock(), lambda: 0,
                               max_batch=1000, max_wait_s=600.0,
                               on_batch=lambda envs, waited, busy: sizes.append(envs),
                               connected_envs=lambda: 5)
    batcher.start()
    try:
        first, second = batcher.submit(request([1, 2])), batcher.submit(request([3, 4, 0]))
        assert first.wait(30) and second.wait(30)
        assert first.actions.tolist() == [1, 2] and second.actions.tolist() == [3, 4, 0]
        assert sizes == [5]
    finally:
        batcher.stop()
