"""Backpressure through a real learner service: streams held by a full unroll queue wait on
the serving loop (no thread each), and get in, and are answered, in the order they came."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner
from support.learner_process import wait_for

ENV = "seed_rl.testing:RevealAction-v0"
K, T = 2, 2  # T + 1 = 3 messages complete one actor's K unrolls


class RecordingExecutor(ThreadPoolExecutor):
    """The serving loop's default executor (asyncio.to_thread's pool), counting its jobs."""

    def __init__(self) -> None:
        super().__init__(max_workers=8, thread_name_prefix="recorded")
        self.jobs = 0

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
        self.jobs += 1
        return super().submit(fn, *args, **kwargs)


def observations(actor: int, step: int) -> np.ndarray:
    """[K, 2] float32: column 1 names the actor that sent it."""
    return np.array([[step, actor]] * K, np.float32)


def test_held_streams_wait_on_the_loop_and_get_in_in_arrival_order(tmp_path):
    """Actor 0 fills the queue (room for one actor's unrolls); actors 1, 2, 3 then complete
    their unrolls one after the other and are held. Each time the trainer's side takes a
    batch, exactly the next held stream in arrival order gets in and is answered, and no
    held stream ever occupies a thread of the loop's default pool."""
    config = make_config(tmp_path, env=ENV, unroll_length=T, batch_size=K, queue_size=1)
    with running_learner(config, train=False) as learner:
        loop, recorder, installed = learner.server.loop, RecordingExecutor(), Future()
        loop.call_soon_threadsafe(
            lambda: (loop.set_default_executor(recorder), installed.set_result(None)))
        installed.result(5)
        address = f"127.0.0.1:{learner.port}"
        actors = [ScriptedActor(address, handshake_request(ENV, K, actor_id=f"a-{i}"))
                  for i in range(4)]
        sessions = {s.actor_id: s for s in learner.servicer.sessions()}
        for step in range(T + 1):
            actors[0].step(step_request(observations(0, step)))
        assert learner.queue.depth == K  # full
        answered: list[int] = []
        held = []
        for i in (1, 2, 3):
            for step in range(T):
                actors[i].step(step_request(observations(i, step)))

            def last_step(i: int = i) -> None:
                actors[i].step(step_request(observations(i, T)))
                answered.append(i)

            held.append(threading.Thread(target=last_step))
            held[-1].start()
            session = sessions[f"a-{i}"]  # past its unroll's last row: held by the queue
            wait_for(lambda s=session: s.busy and s.steps == T + 1, f"actor {i} to be held")
        assert answered == [] and learner.queue.depth == K
        taken = []
        for expected in (1, 2, 3):
            batch = learner.queue.get(K, learner.trainer.policy_version, timeout=5)
            assert batch is not None
            taken.append(set(batch.observations[..., 1].ravel().tolist()))
            wait_for(lambda n=expected: len(answered) >= n, f"answer {expected}")
            assert answered == list(range(1, expected + 1)), "a later stream got in first"
        batch = learner.queue.get(K, learner.trainer.policy_version, timeout=5)
        taken.append(set(batch.observations[..., 1].ravel().tolist()))
        assert taken == [{0.0}, {1.0}, {2.0}, {3.0}]  # the queue's order is the arrival order
        for thread in held:
            thread.join(5)
        assert recorder.jobs == 0, f"{recorder.jobs} jobs in the loop's thread pool"
        for actor in actors:
            actor.close()
        recorder.shutdown(wait=False)


def test_by_default_the_queue_holds_one_batch(tmp_path):
    """--queue-size defaults to one batch of B unrolls (as SEED's learner queues one unroll):
    a second batch's stream is held until the trainer's side takes the first, so the trainer
    never works through a backlog of batches acted by ever older policies."""
    config = make_config(tmp_path, env=ENV, unroll_length=T, batch_size=K)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        first, second = (ScriptedActor(address, handshake_request(ENV, K, actor_id=f"a-{i}"))
                         for i in range(2))
        for step in range(T + 1):
            first.step(step_request(observations(0, step)))
        assert learner.queue.depth == K == config.batch_size  # one batch: full
        for step in range(T):
            second.step(step_request(observations(1, step)))
        answered = threading.Event()
        held = threading.Thread(
            target=lambda: (second.step(step_request(observations(1, T))), answered.set()))
        held.start()
        session = next(s for s in learner.servicer.sessions() if s.actor_id == "a-1")
        wait_for(lambda: session.busy and session.steps == T + 1, "the second actor held")
        assert not answered.is_set() and learner.queue.depth == K
        batch = learner.queue.get(K, learner.trainer.policy_version, timeout=5)
        assert set(batch.observations[..., 1].ravel().tolist()) == {0.0}
        held.join(5)
        assert answered.is_set() and learner.queue.depth == K  # the second batch got in
        for actor in (first, second):
            actor.close()
