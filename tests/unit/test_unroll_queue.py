"""The bounded unroll queue: exact batches across parts in FIFO order, one deadline per get,
stale unrolls dropped and counted, backpressure, closing, and the async puts of the gRPC
service (arrival order, cancellation)."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import pytest
from support.unrolls import K, T, feed, make_builder

from learner.training.store import QueueClosed, UnrollQueue, Unrolls


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
