"""The inference batcher on a real event loop: partial batches after the wait, many
concurrent streams sharing forward passes, each answer to the right caller, who is due
(sessions still stepping are not waited for), one batch in flight on the inference thread,
and stop() answering everyone, inline and on the inference thread alike."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from learner.serving.batcher import InferenceBatcher
from learner.serving.requests import BatcherStopped, InferenceRequest
from learner.training.models import ModelOutput
from learner.training.policies import Categorical
from learner.training.weights import PublishedWeights

A = 5


class EchoModel(nn.Module):
    """Logits peak at action obs[0] % A, so a greedy answer reveals which row it came from;
    value = obs[0]."""

    distribution = Categorical(A)

    def forward(self, observations, episode_start, core_state=()):
        key = observations[..., 0]
        logits = 50.0 * nn.functional.one_hot(key.long() % A, A).float()
        return ModelOutput(logits, key.float(), core_state)


def make_batcher(max_batch: int, max_wait_s: float, sizes: list[int], threaded: bool,
                 model: nn.Module | None = None, connected_envs=None) -> InferenceBatcher:
    batcher = InferenceBatcher(PublishedWeights(model or EchoModel(), version=7),
                               torch.device("cpu"), max_batch=max_batch, max_wait_s=max_wait_s,
                               on_batch=lambda envs, waited, busy: sizes.append(envs),
                               connected_envs=connected_envs, threaded=threaded)
    batcher.start()
    return batcher


def request(values, finals=(), session: str | None = None) -> InferenceRequest:
    obs = np.asarray(values, np.float32)[:, None]
    return InferenceRequest(
        observations=obs, episode_start=np.zeros(len(obs), bool), core_state=(),
        final_env_indices=np.arange(len(finals)),
        final_observations=np.asarray(finals, np.float32).reshape(-1, 1), greedy=True,
        session=session)


async def ask(batcher: InferenceBatcher, values, finals=(), timeout: float = 10.0):
    req = batcher.submit(request(values, finals))
    await asyncio.wait_for(req.waiter, timeout)
    return req


both = pytest.mark.parametrize("threaded", [False, True], ids=["inline", "thread"])


@both
def test_a_lone_partial_batch_runs_after_the_wait(threaded):
    sizes: list[int] = []
    batcher = make_batcher(1000, 0.01, sizes, threaded)
    try:
        req = asyncio.run(ask(batcher, [3, 4], timeout=5))
        assert req.error is None
        assert req.actions.tolist() == [3, 4] and req.policy_version == 7
        assert sizes == [2]
    finally:
        batcher.stop()


@both
def test_many_concurrent_streams_get_their_own_answers_in_shared_batches(threaded):
    sizes: list[int] = []
    batcher = make_batcher(64, 0.05, sizes, threaded)
    results: dict[tuple[int, int], tuple] = {}

    async def stream(i: int) -> None:
        values = [i * 10 + j for j in range(3)]
        for round_ in range(20):
            req = await ask(batcher, values, finals=[i + round_])
            results[(i, round_)] = (req.actions.tolist(), req.final_values.tolist(),
                                    [v % A for v in values], [float(i + round_)])

    async def main() -> None:
        await asyncio.gather(*(stream(i) for i in range(16)))

    asyncio.run(main())
    batcher.stop()
    assert len(results) == 16 * 20
    for actions, final_values, expected_actions, expected_finals in results.values():
        assert actions == expected_actions
        assert final_values == expected_finals
    assert sum(sizes) == 16 * 20 * 3
    assert max(sizes) > 3, "concurrent requests should share forward passes"
    assert max(sizes) <= 64


@both
def test_every_waiting_request_is_in_the_next_batch_up_to_max_batch(threaded):
    """Fairness: a batch takes the oldest requests first, and what does not fit starts the
    next batch (here the last one after the wait: 10 envs connected, 2 left waiting)."""
    sizes: list[int] = []
    batcher = make_batcher(4, 0.2, sizes, threaded, connected_envs=lambda: 10)

    async def main() -> list[InferenceRequest]:
        requests = [batcher.submit(request([i, i])) for i in range(5)]  # 10 envs
        await asyncio.wait_for(asyncio.gather(*(r.waiter for r in requests)), 30)
        return requests

    requests = asyncio.run(main())
    batcher.stop()
    assert [r.actions.tolist() for r in requests] == [[i % A, i % A] for i in range(5)]
    assert sizes == [4, 4, 2]


@both
def test_stop_answers_waiting_callers_with_an_error(threaded):
    batcher = make_batcher(8, 600.0, [], threaded)

    async def main() -> tuple[InferenceRequest, InferenceRequest]:
        waiting = batcher.submit(request([1]))
        await asyncio.sleep(0.05)
        await asyncio.to_thread(batcher.stop)  # from another thread, as the learner does
        await asyncio.wait_for(waiting.waiter, 5)
        late = batcher.submit(request([2]))
        await asyncio.wait_for(late.waiter, 5)
        return waiting, late

    waiting, late = asyncio.run(main())
    assert isinstance(waiting.error, BatcherStopped)
    assert isinstance(late.error, BatcherStopped)


@both
def test_a_model_error_reaches_the_caller_and_is_recorded(threaded):
    class Broken(nn.Module):
        def forward(self, *args):
            raise RuntimeError("boom")

    batcher = make_batcher(8, 0.001, [], threaded, model=Broken())
    req = asyncio.run(ask(batcher, [1], timeout=5))
    assert isinstance(req.error, RuntimeError) and "boom" in str(req.error)
    batcher.stop()
    assert isinstance(batcher.failure, RuntimeError)


@both
def test_no_waiting_once_every_connected_environment_has_asked(threaded):
    """With all connected environments in the batch there is nobody left to wait for: the
    batch runs at once instead of after max_wait (here far longer than the test's bound)."""
    sizes: list[int] = []
    batcher = make_batcher(1000, 600.0, sizes, threaded, connected_envs=lambda: 5)

    async def main():
        first, second = batcher.submit(request([1, 2])), batcher.submit(request([3, 4, 0]))
        await asyncio.wait_for(asyncio.gather(first.waiter, second.waiter), 30)
        return first, second

    try:
        first, second = asyncio.run(main())
        assert first.actions.tolist() == [1, 2] and second.actions.tolist() == [3, 4, 0]
        assert sizes == [5]
    finally:
        batcher.stop()


@both
def test_a_session_still_stepping_is_not_waited_for(threaded):
    """Two env groups (actors/groups.py): while the learner answers one session, the other
    steps, out of phase. A request must not wait for a session whose batch started more
    than max_wait after its own session's last one (not expected back within max_wait):
    each batch starts at once, not after max_wait."""
    sizes: list[int] = []
    connected = [2]  # a alone at first; b's stream opens half a cycle later
    batcher = make_batcher(1000, 0.2, sizes, threaded, connected_envs=lambda: connected[0])

    async def main() -> None:
        for step, name in enumerate("abab"):  # a steps 1 s, b likewise, 0.5 s later
            if step:
                await asyncio.sleep(0.5)
            connected[0] = 4 if step else 2
            req = batcher.submit(request([step, 3], session=name))
            await asyncio.wait_for(req.waiter, 2.0)
            assert req.error is None and req.actions.tolist() == [step % A, 3]

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    assert batcher.waited_out == 0, "a batch waited for max_wait (0.2 s)"
    assert sizes == [2] * 4


@both
def test_sessions_answered_together_are_waited_for_together(threaded):
    """One env group: sessions answered in one batch step together and come back together,
    so the first one back waits for the others (one batch of all, not one each)."""
    sizes: list[int] = []
    batcher = make_batcher(1000, 10.0, sizes, threaded, connected_envs=lambda: 4)

    async def main() -> None:
        for _ in range(3):
            a = batcher.submit(request([1, 2], session="a"))
            await asyncio.sleep(0.2)
            assert not a.waiter.done(), "a must wait for b, answered in the same batch"
            b = batcher.submit(request([3, 4], session="b"))
            await asyncio.wait_for(asyncio.gather(a.waiter, b.waiter), 1.0)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    assert sizes == [4, 4, 4]


@both
def test_sessions_answered_close_together_merge_into_one_batch(threaded):
    """Two sessions answered in two batches a moment apart (well within max_wait) are
    expected back a moment apart: the first one back waits for the other, so they share
    the next batch instead of staying apart for good."""
    sizes: list[int] = []
    connected = [2]
    batcher = make_batcher(1000, 10.0, sizes, threaded, connected_envs=lambda: connected[0])

    async def main() -> None:
        a = batcher.submit(request([1, 2], session="a"))  # the only connected env: at once
        await asyncio.wait_for(a.waiter, 1.0)
        connected[0] = 4
        b = batcher.submit(request([3, 4], session="b"))  # not served yet: a not due
        await asyncio.wait_for(b.waiter, 1.0)
        a = batcher.submit(request([1, 2], session="a"))
        await asyncio.sleep(0.2)
        assert not a.waiter.done(), "a must wait for b, answered just after it"
        b = batcher.submit(request([3, 4], session="b"))
        await asyncio.wait_for(asyncio.gather(a.waiter, b.waiter), 1.0)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    assert sizes == [2, 2, 4]


@both
def test_a_late_session_holds_back_one_batch_not_every_one(threaded):
    """A session that does not come back with the others of its batch (slow, frozen) costs
    that batch max_wait once; later batches, of sessions answered since, do not wait for it."""
    sizes: list[int] = []
    batcher = make_batcher(1000, 0.5, sizes, threaded, connected_envs=lambda: 6)

    async def one_round(names: str) -> int:
        requests = [batcher.submit(request([i, i], session=name))
                    for i, name in enumerate(names)]
        await asyncio.wait_for(asyncio.gather(*(r.waiter for r in requests)), 5.0)
        await asyncio.sleep(0.3)  # they step
        return batcher.waited_out  # batches so far that waited out max_wait

    async def main() -> list[int]:
        return [await one_round("abc"), await one_round("ab"), await one_round("ab"),
                await one_round("ab")]

    try:
        waited_out = asyncio.run(main())
    finally:
        batcher.stop()
    assert sizes == [6, 4, 4, 4]
    # every connected env asked: no wait; then c, answered with a and b, is waited for
    # once; then c is late, not due: no more waiting for it
    assert waited_out == [0, 1, 1, 1]


@both
def test_a_closed_session_is_forgotten(threaded):
    """forget(): a closed session no longer counts as away (it would count as not due and
    let the others start before all of theirs are back)."""
    sizes: list[int] = []
    connected = [4]  # a and b; c's stream opens once they are stepping
    batcher = make_batcher(1000, 0.4, sizes, threaded, connected_envs=lambda: connected[0])

    async def main() -> None:
        ab = [batcher.submit(request([1, 2], session=name)) for name in "ab"]
        await asyncio.wait_for(asyncio.gather(*(r.waiter for r in ab)), 1.0)
        await asyncio.sleep(1.0)
        connected[0] = 6
        c = batcher.submit(request([3, 4], session="c"))  # alone: a and b are stepping
        await asyncio.wait_for(c.waiter, 1.0)
        batcher.forget("c")  # its stream closed: 4 envs connected, a's and b's
        connected[0] = 4
        a = batcher.submit(request([1, 2], session="a"))
        await asyncio.sleep(0.15)
        assert not a.waiter.done(), "a must wait for b, answered in the same batch"
        b = batcher.submit(request([1, 2], session="b"))
        await asyncio.wait_for(asyncio.gather(a.waiter, b.waiter), 1.0)

    try:
        asyncio.run(main())
    finally:
        batcher.stop()
    assert sizes == [4, 2, 4]


def test_requests_arriving_during_a_forward_pass_start_together_after_it():
    """On the inference thread one batch runs at a time: requests whose max_wait passes
    while it runs gather, and all start in one batch when it ends, not one batch each
    queued behind it."""

    # outside the model: the batcher serves a deep copy of it (PublishedWeights)
    entered, release = threading.Event(), threading.Event()

    class SlowModel(EchoModel):
        def forward(self, *args):
            entered.set()
            assert release.wait(10), "the test never released the forward pass"
            return super().forward(*args)

    sizes: list[int] = []
    batcher = make_batcher(1000, 0.01, sizes, True, model=SlowModel())

    async def main() -> list[InferenceRequest]:
        first = batcher.submit(request([0]))
        assert await asyncio.to_thread(entered.wait, 5)  # it runs, and blocks
        later = []
        for i in range(1, 5):
            later.append(batcher.submit(request([i])))
            await asyncio.sleep(0.05)  # five times its max_wait
        assert not first.waiter.done() and sizes == []
        release.set()
        await asyncio.wait_for(asyncio.gather(first.waiter, *(r.waiter for r in later)), 5)
        return [first, *later]

    try:
        requests = asyncio.run(main())
    finally:
        release.set()
        batcher.stop()
    assert [r.actions.tolist() for r in requests] == [[i] for i in range(5)]
    assert sizes == [1, 4]


@both
def test_a_timer_that_fires_after_stop_answers_with_the_stop_error(threaded):
    """stop() between the submits and their max_wait timer: the timer must not start a
    batch (on the thread: into the closed executor, raising in a loop callback and losing
    the requests; inline: answering them with actions after stop). Every request gets
    BatcherStopped and nothing reaches the loop's exception handler."""
    batcher = make_batcher(1000, 0.05, [], threaded)
    errors: list[dict] = []

    async def main() -> list[InferenceRequest]:
        asyncio.get_running_loop().set_exception_handler(lambda _, context: errors.append(context))
        requests = [batcher.submit(request([i])) for i in range(3)]
        time.sleep(0.1)  # hold the loop past max_wait: the timer is due, not run yet
        await asyncio.sleep(0)  # next turn: the due timer is queued right behind this step
        batcher.stop()  # so it runs before anything stop() hands the loop
        await asyncio.wait_for(asyncio.gather(*(r.waiter for r in requests)), 2)
        await asyncio.sleep(0.1)
        return requests

    requests = asyncio.run(main())
    assert [type(r.error) for r in requests] == [BatcherStopped] * 3
    assert all(r.actions is None for r in requests)
    assert errors == []
