"""Trajectory store: unroll overlap, nothing lost or duplicated, the bounded queue."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from learner.store import QueueClosed, UnrollBuilder, UnrollQueue, Unrolls

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
            behaviour_logits=np.zeros((K, A), np.float32),
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
