"""Trajectory store: unroll overlap, nothing lost or duplicated, episode ends (terminated vs
truncated) in their slots and in the V-trace inputs, the bounded queue."""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
import torch

from learner.training.models import ModelOutput
from learner.training.store import QueueClosed, UnrollBuilder, UnrollQueue, Unrolls
from learner.training.update import Batch, vtrace_inputs
from seed_rl.config import Config
from seed_rl.functional import vtrace

T, K, A = 4, 3, 2


def feed(builder: UnrollBuilder, steps: int, version: int = 0, start: int = 0) -> list[Unrolls]:
    """Write ``steps`` rows whose observation is the global step index (per env: + 1000*k)."""
    out = []
    for step in range(start, start + steps):
        obs = (step + 1000 * np.arange(K)).astype(np.float32)[:, None]
        unrolls = builder.add_step(
            observations=obs,
            rewards=np.full(K, step, np.float32),
            terminated=np.zeros(K, bool),
            truncated=np.zeros(K, bool),
            truncation_values=np.zeros(K, np.float32),
            actions=np.full(K, step % A),
            behaviour_params=np.zeros((K, A), np.float32),
            policy_version=version,
            core_state_before=(np.full((K, 5), step, np.float32),),
        )
        if unrolls is not None:
            out.append(unrolls)
    return out


def make_builder() -> UnrollBuilder:
    return UnrollBuilder(T, K, (1,), np.dtype(np.float32), A, core_state_shapes=((K, 5),))


def test_unrolls_have_t_plus_one_slots_and_overlap_by_one():
    unrolls = feed(make_builder(), 3 * T + 1)
    assert len(unrolls) == 3
    for i, u in enumerate(unrolls):
        assert u.observations.shape == (T + 1, K, 1)
        steps = u.observations[:, 0, 0]
        np.testing.assert_array_equal(steps, np.arange(i * T, i * T + T + 1))
        # Each env keeps its own column.
        np.testing.assert_array_equal(u.observations[:, 2, 0], steps + 2000)
        # The core state is the one before the unroll's first slot.
        np.testing.assert_array_equal(u.core_state[0], np.full((K, 5), i * T))
    for first, second in zip(unrolls, unrolls[1:], strict=False):
        np.testing.assert_array_equal(first.observations[-1], second.observations[0])


def test_every_transition_is_trained_on_exactly_once():
    """Transitions (slot t -> slot t+1) across all unrolls cover each step once."""
    unrolls = feed(make_builder(), 5 * T + 1)
    transitions = [int(x) for u in unrolls for x in u.observations[:-1, 0, 0]]
    assert transitions == list(range(5 * T))


def test_incomplete_unroll_is_not_emitted():
    assert feed(make_builder(), T) == []


def test_queue_gives_exact_batches_across_parts_in_fifo_order():
    queue = UnrollQueue(capacity=100, max_policy_lag=10)
    for part in feed(make_builder(), 4 * T + 1):  # 4 parts of K=3 unrolls
        queue.put(part)
    assert queue.depth == 12
    first = queue.get(5, current_version=0, timeout=1)
    second = queue.get(5, current_version=0, timeout=1)
    assert first.size == 5 and second.size == 5 and queue.depth == 2
    starts = list(first.observations[0, :, 0]) + list(second.observations[0, :, 0])
    assert starts == [0, 1000, 2000, 4, 1004, 2004, 8, 1008, 2008, 12]
    assert queue.get(5, current_version=0, timeout=0.05) is None
    assert queue.depth == 2  # an unfinished get puts back what it took


def test_queue_get_timeout_is_one_deadline_while_parts_trickle_in():
    """``get``'s timeout bounds the whole call (the trainer's tick relies on it: the
    --replica-wait bound), not the wait for each part: parts that keep arriving, never
    enough for a batch, do not extend it. What it took goes back, in order."""
    timeout, parts = 0.5, feed(make_builder(), 8 * T + 1)  # 8 parts of K unrolls
    queue = UnrollQueue(capacity=100, max_policy_lag=10)
    stop = threading.Event()

    def trickle() -> None:  # one part every 0.6 x timeout: each arrives inside the timeout
        for part in parts:
            if stop.wait(0.6 * timeout):
                return
            queue.put(part)

    producer = threading.Thread(target=trickle)
    producer.start()
    try:
        started = time.monotonic()
        batch = queue.get(len(parts) * K + 1, current_version=0, timeout=timeout)
        elapsed = time.monotonic() - started
    finally:
        stop.set()
        producer.join()
    assert batch is None
    # A per-part timeout would return only after the last part (8 x 0.6 = 4.8 timeouts)
    # plus one more timeout; one deadline returns after one, with a wide margin for load.
    assert timeout * 0.9 <= elapsed < 3 * timeout, f"get took {elapsed:.2f} s"
    put = queue.depth // K
    assert 1 <= put < len(parts)  # some arrived, the rest were never made
    rest = queue.get(queue.depth, current_version=0, timeout=0)
    np.testing.assert_array_equal(  # nothing lost, reordered or duplicated
        rest.observations, Unrolls.concatenate(parts[:put]).observations)


def test_queue_drops_stale_unrolls_and_counts_them():
    queue = UnrollQueue(capacity=100, max_policy_lag=2)
    queue.put(feed(make_builder(), T + 1, version=0)[0])  # 3 unrolls at version 0
    queue.put(feed(make_builder(), T + 1, version=5)[0])  # 3 unrolls at version 5
    batch = queue.get(3, current_version=6, timeout=1)
    assert queue.dropped_stale == 3
    assert batch is not None and (batch.policy_versions == 5).all()


def test_queue_backpressure_blocks_put_until_get():
    queue = UnrollQueue(capacity=K, max_policy_lag=10)
    parts = feed(make_builder(), 2 * T + 1)
    queue.put(parts[0])
    assert queue.put(parts[1], timeout=0.05) is False  # full: the producer waits
    done = threading.Event()

    def producer():
        queue.put(parts[1])
        done.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not done.wait(0.1)
    assert queue.get(K, current_version=0, timeout=1) is not None
    assert done.wait(2)
    thread.join()


def test_closed_queue_releases_waiters():
    queue = UnrollQueue(capacity=K, max_policy_lag=10)
    parts = feed(make_builder(), 2 * T + 1)
    queue.put(parts[0])
    errors = []

    def producer():
        try:
            queue.put(parts[1])
        except QueueClosed:
            errors.append("closed")

    thread = threading.Thread(target=producer)
    thread.start()
    queue.close()
    thread.join(2)
    assert errors == ["closed"]
    assert queue.get(1, current_version=0, timeout=0.1) is None
    with pytest.raises(QueueClosed):
        queue.put(parts[0])


class NoThreads(ThreadPoolExecutor):
    """A loop's default executor that fails whatever is handed to it (asyncio.to_thread)."""

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        raise AssertionError(f"{fn!r} was sent to the loop's thread pool")


def test_async_puts_into_a_full_queue_get_in_and_complete_in_arrival_order():
    """Four coroutines put, one after the other, into a full queue; a consumer thread
    takes one part at a time. The puts get in, and complete, in the order they came; a put
    tried right after room was freed does not overtake them; no thread waits for them."""
    queue = UnrollQueue(capacity=K, max_policy_lag=10)
    parts = feed(make_builder(), 6 * T + 1)  # 6 parts of K unrolls; capacity: one part
    queue.put(parts[0])
    completed: list[int] = []
    taken: list[float] = []

    async def put(i: int) -> None:
        assert await queue.put_async(parts[i])
        completed.append(i)

    def take() -> None:
        batch = queue.get(K, current_version=0, timeout=5)
        taken.append(float(batch.observations[0, 0, 0]))

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(NoThreads())
        threads = threading.active_count()
        puts = []
        for i in (1, 2, 3, 4):
            puts.append(asyncio.create_task(put(i)))
            await asyncio.sleep(0)  # the task runs up to its wait: it is in line
            assert queue.waiting_puts == i
        assert threading.active_count() == threads  # nobody waits in a thread
        take()  # on this thread: room for one part, which goes to the first in line...
        assert queue.put(parts[5], timeout=0) is False  # ...not to a put that comes now
        assert queue.waiting_puts == 3 and completed == []
        await asyncio.wait_for(puts[0], 5)
        assert completed == [1] and not any(p.done() for p in puts[1:])
        consumer = threading.Thread(target=lambda: [take() for _ in range(4)])
        consumer.start()  # takes on its own thread: wakes the puts on this loop
        await asyncio.wait_for(asyncio.gather(*puts), 5)
        consumer.join(5)

    asyncio.run(scenario())
    assert completed == [1, 2, 3, 4]
    assert taken == [part.observations[0, 0, 0] for part in parts[:5]]
    assert queue.depth == 0 and queue.waiting_puts == 0


def test_closing_the_queue_tells_waiting_async_puts_it_is_closed():
    queue = UnrollQueue(capacity=K, max_policy_lag=10)
    parts = feed(make_builder(), 3 * T + 1)
    queue.put(parts[0])

    async def scenario() -> list[BaseException | bool]:
        puts = [asyncio.create_task(queue.put_async(part)) for part in parts[1:]]
        await asyncio.sleep(0)
        assert queue.waiting_puts == 2
        threading.Thread(target=queue.close).start()  # the learner's shutdown, another thread
        return await asyncio.wait_for(asyncio.gather(*puts, return_exceptions=True), 5)

    outcomes = asyncio.run(scenario())
    assert [type(outcome) for outcome in outcomes] == [QueueClosed, QueueClosed]
    assert queue.depth == K and queue.waiting_puts == 0  # nothing got in
    with pytest.raises(QueueClosed):
        asyncio.run(queue.put_async(parts[1]))


def test_a_cancelled_or_abandoned_async_put_leaves_the_line():
    """A stream cancelled while it waits (the watchdog, a disconnect), or one whose learner
    stops (``give_up``), takes its unrolls back: room goes to the next in line."""
    queue = UnrollQueue(capacity=K, max_policy_lag=10)
    parts = feed(make_builder(), 4 * T + 1)
    queue.put(parts[0])
    stopping = threading.Event()

    async def scenario() -> tuple[bool, bool]:
        cancelled = asyncio.create_task(queue.put_async(parts[1]))
        abandoned = asyncio.create_task(queue.put_async(parts[2], give_up=stopping.is_set,
                                                        poll=0.01))
        kept = asyncio.create_task(queue.put_async(parts[3]))
        await asyncio.sleep(0)
        assert queue.waiting_puts == 3
        cancelled.cancel()
        stopping.set()
        assert await asyncio.wait_for(abandoned, 5) is False
        with pytest.raises(asyncio.CancelledError):
            await cancelled
        assert queue.waiting_puts == 1
        first = queue.get(K, current_version=0, timeout=1)
        return await asyncio.wait_for(kept, 5), first is not None

    assert asyncio.run(scenario()) == (True, True)
    rest = queue.get(K, current_version=0, timeout=1)
    np.testing.assert_array_equal(rest.observations, parts[3].observations)
    assert queue.depth == 0


# --- terminated vs truncated, through the store and into the V-trace inputs ----------------
#
# Steps s = 0 .. 2T of five environments (two unrolls). A flag at step s describes the
# transition that led to x_s, so it lands in slot s % T (and, at s = T, in both unrolls'
# overlapping slot: slot T of the first, slot 0 of the second).
ENDS_K = 5
GAMMA = 0.9
TERMINATED = {(2, 0), (8, 2), (4, 3)}  # (step, env): mid-unroll, last slot, boundary
TRUNCATED = {(4, 1): 5.0, (1, 2): 3.0, (6, 3): 7.0}  # (step, env): V(final observation)
# env 4 never ends: the control whose returns do bootstrap from V(x_T).


def episode_end_tables():
    steps = 2 * T + 1
    rewards = 100.0 * np.arange(ENDS_K)[None, :] + np.arange(steps)[:, None]
    terminated = np.zeros((steps, ENDS_K), bool)
    truncated = np.zeros((steps, ENDS_K), bool)
    values = np.zeros((steps, ENDS_K), np.float32)
    for step, env in TERMINATED:
        terminated[step, env] = True
    for (step, env), value in TRUNCATED.items():
        truncated[step, env] = True
        values[step, env] = value
    return rewards.astype(np.float32), terminated, truncated, values


def feed_episode_ends() -> list[Unrolls]:
    rewards, terminated, truncated, values = episode_end_tables()
    builder = UnrollBuilder(T, ENDS_K, (1,), np.dtype(np.float32), A)
    out = []
    for step in range(2 * T + 1):
        unrolls = builder.add_step(
            observations=np.full((ENDS_K, 1), step, np.float32),
            rewards=rewards[step], terminated=terminated[step], truncated=truncated[step],
            truncation_values=values[step], actions=np.full(ENDS_K, step % A),
            behaviour_params=np.zeros((ENDS_K, A), np.float32), policy_version=0)
        if unrolls is not None:
            out.append(unrolls)
    return out


def test_episode_end_flags_and_truncation_values_land_in_their_slots():
    rewards, terminated, truncated, values = episode_end_tables()
    first, second = feed_episode_ends()
    for i, unroll in enumerate((first, second)):
        rows = slice(i * T, i * T + T + 1)
        np.testing.assert_array_equal(unroll.rewards, rewards[rows])
        np.testing.assert_array_equal(unroll.terminated, terminated[rows])
        np.testing.assert_array_equal(unroll.truncated, truncated[rows])
        np.testing.assert_array_equal(unroll.truncation_values, values[rows])
    # Spelled out: mid-unroll ends sit in their own slot only ...
    assert first.terminated[2, 0] and not first.terminated[[0, 1, 3, 4], 0].any()
    assert first.truncated[1, 2] and first.truncation_values[1, 2] == 3.0
    assert second.truncated[2, 3] and second.truncation_values[2, 3] == 7.0
    assert second.terminated[T, 2]
    # ... and an end at step T is in the shared slot of both unrolls (slot 0 of the second
    # marks x_T as an episode start, which the recurrent replay needs).
    assert first.truncated[T, 1] and second.truncated[0, 1]
    assert first.truncation_values[T, 1] == second.truncation_values[0, 1] == 5.0
    assert first.terminated[T, 3] and second.terminated[0, 3]
    assert not (first.terminated | first.truncated)[:, 4].any()
    assert not (second.terminated | second.truncated)[:, 4].any()


def vtrace_inputs_of(unrolls: Unrolls, values: torch.Tensor, discount: float = GAMMA):
    batch = Batch.from_unrolls(unrolls, torch.device("cpu"))
    logits = torch.zeros(T + 1, unrolls.size, A)
    output = ModelOutput(logits, values, ())
    config = dataclasses.replace(Config(), discount=discount, reward_clip=0.0)
    return vtrace_inputs(batch, output, config)


def test_vtrace_inputs_stop_at_terminations_and_bootstrap_truncations_from_the_final_value():
    rewards, terminated, truncated, final_values = episode_end_tables()
    unrolls = feed_episode_ends()
    bootstraps = 0
    for i, unroll in enumerate(unrolls):
        values = torch.arange((T + 1) * ENDS_K, dtype=torch.float32).view(T + 1, ENDS_K) + 1
        inputs = vtrace_inputs_of(unroll, values)
        nxt = slice(i * T + 1, i * T + T + 1)  # the outcome of (x_t, a_t) is step t + 1
        ended = terminated[nxt] | truncated[nxt]
        expected_discounts = np.where(ended, 0.0, GAMMA)
        expected_rewards = rewards[nxt] + GAMMA * np.where(truncated[nxt], final_values[nxt], 0)
        np.testing.assert_allclose(inputs.discounts.numpy(), expected_discounts)
        np.testing.assert_allclose(inputs.rewards.numpy(), expected_rewards, rtol=1e-6)
        torch.testing.assert_close(inputs.bootstrap_value, values[-1])
        torch.testing.assert_close(inputs.values, values[:-1])
        bootstraps += int((inputs.rewards.numpy() != rewards[nxt]).sum())
    # Spelled out for the first unroll: env 0 terminated at step 2, env 2 truncated at step 1
    # (V = 3), env 1 truncated at the boundary step T (V = 5).
    first = vtrace_inputs_of(unrolls[0], torch.ones(T + 1, ENDS_K))
    assert first.discounts[1, 0] == 0 and first.rewards[1, 0] == rewards[2, 0]
    assert first.discounts[0, 2] == 0
    assert first.rewards[0, 2] == pytest.approx(rewards[1, 2] + GAMMA * 3.0)
    assert first.discounts[T - 1, 1] == 0
    assert first.rewards[T - 1, 1] == pytest.approx(rewards[T, 1] + GAMMA * 5.0)
    # The boundary truncation is bootstrapped exactly once across the two unrolls (the second
    # unroll's slot 0 is only an episode start, never an outcome).
    assert bootstraps == len(TRUNCATED)


def test_no_bootstrap_across_an_episode_end():
    """V-trace targets up to an episode end do not depend on any value after it (the next
    episode's observations, V(x_T) included), whether the episode terminated or was
    truncated; the environment that never ends does depend on V(x_T)."""
    first = feed_episode_ends()[0]
    torch.manual_seed(0)
    values = torch.randn(T + 1, ENDS_K)

    def targets(values):
        inputs = vtrace_inputs_of(first, values)
        return vtrace.from_importance_weights(
            torch.zeros(T, ENDS_K), inputs.discounts, inputs.rewards, inputs.values,
            inputs.bootstrap_value).vs

    base = targets(values)
    # (env, last slot t whose outcome ends the episode): env 2 truncated at step 1 (t = 0),
    # env 0 terminated at step 2 (t = 1), env 1 truncated and env 3 terminated at step T.
    for env, last in ((2, 0), (0, 1), (1, T - 1), (3, T - 1)):
        changed = values.clone()
        changed[last + 1 :, env] += 100.0  # every value after the end, V(x_T) included
        torch.testing.assert_close(targets(changed)[: last + 1, env], base[: last + 1, env])
    changed = values.clone()
    changed[T, 4] += 100.0
    assert (targets(changed)[:, 4] - base[:, 4]).abs().min() > 1.0  # the control bootstraps


def test_a_step_both_terminated_and_truncated_does_not_bootstrap():
    """Gymnasium may report both flags; termination wins: no bootstrap even when a
    truncation value is present in the slot."""
    builder = UnrollBuilder(T, 1, (1,), np.dtype(np.float32), A)
    unrolls = None
    for step in range(T + 1):
        end = step == 2
        unrolls = builder.add_step(
            observations=np.full((1, 1), step, np.float32), rewards=np.ones(1, np.float32),
            terminated=np.array([end]), truncated=np.array([end]),
            truncation_values=np.array([4.0 if end else 0.0], np.float32),
            actions=np.zeros(1, np.int64), behaviour_params=np.zeros((1, A), np.float32),
            policy_version=0)
    inputs = vtrace_inputs_of(unrolls, torch.ones(T + 1, 1))
    assert inputs.discounts[1, 0] == 0
    assert inputs.rewards[1, 0] == 1.0, "a terminated step must not bootstrap"
