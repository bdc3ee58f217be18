"""The real actor (client + env loop) against the real learner servicer, in one process.

tests/unit/test_actors.py and test_actor_reconnects.py check the actor against a stand-in
learner; this checks the two real halves agree on the wire contract: the env comes from the
learner's handshake, steps flow, and the unrolls the learner queues hold exactly what the
actor's environments produced under the learner's actions. RevealAction's reward 10 * t + a
names both the observation t and the action a it came from, so every transition proves its
own alignment. With ``--env-groups`` G the actor process is G sessions of the learner
(actors/groups.py); the same checks hold for every unroll of every group.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import torch
from support.learner_harness import make_config, running_learner
from support.procs import WAIT

from actors.client import ActorClient
from actors.counters import Counters
from actors.groups import run_actor, split_envs
from learner.training.store import Unrolls
from seed_rl.config import Config

ENV = "seed_rl.testing:RevealAction-v0"
KWARGS = {"episode_length": 4, "truncate": True}  # every episode ends truncated
K, T = 3, 5


def test_actor_and_learner_agree_on_the_wire_contract(tmp_path) -> None:
    learner_config = make_config(tmp_path, env=ENV, env_kwargs=KWARGS, unroll_length=T,
                                 batch_size=K, queue_size=100)  # the queue never blocks
    with running_learner(learner_config, train=False) as learner:
        # No env in the actor's config: it must learn ENV and its kwargs from the learner.
        actor_config = Config(learner=f"127.0.0.1:{learner.port}", env="", envs_per_actor=K,
                              actor_id_prefix="contract", reconnect_max_backoff=0.2)
        counters = Counters()
        actor = ActorClient(actor_config, 0, counters=counters)
        exit_codes: list[int] = []
        thread = threading.Thread(target=lambda: exit_codes.append(actor.run()), daemon=True)
        thread.start()
        try:
            unrolls = learner.queue.get(2 * K, learner.trainer.policy_version, timeout=WAIT)
            assert unrolls is not None, "no two unrolls per env from the actor's steps"
            # Training over: the actor hears it on its next step and exits 0.
            learner.request_stop("test finished")
            learner.shutdown()
            thread.join(WAIT)
        finally:
            actor.stop.set()
            thread.join(WAIT)
        assert exit_codes == [0]
        assert (actor.env_id, actor.env_kwargs) == (ENV, KWARGS)
        # The learner counts the transitions it received: every request but the session's
        # first (reset observations only) and the last, answered "training over" unread,
        # which carried the actor's last step. So it is one step of the K envs behind.
        assert learner.metrics.env_steps == counters.steps - K >= 2 * T * K

        obs = unrolls.observations  # [T+1, 2K, 2]: (t within the episode, episode number)
        assert obs.shape == (T + 1, 2 * K, 2) and obs.dtype == np.float32
        first = slice(0, K)  # the queue is FIFO: each env's first unroll, from reset on
        np.testing.assert_array_equal(obs[0, first], 0.0)
        np.testing.assert_array_equal(unrolls.rewards[0, first], 0.0)
        check_aligned(learner, unrolls)


def check_aligned(learner, unrolls: Unrolls) -> None:
    """Every slot of every unroll holds what the actor's env did under the learner's
    action (the slot convention, docs/architecture.md), whatever the unrolls' order."""
    obs = unrolls.observations
    t, episode, actions = obs[:-1, :, 0], obs[:-1, :, 1], unrolls.actions[:-1]
    assert len(np.unique(actions)) > 1, "the learner should sample varied actions"
    # The actor applied exactly the learner's action a_t to the env at x_t ...
    np.testing.assert_array_equal(unrolls.rewards[1:], 10 * t + actions)
    # ... and sent the observation that followed, a fresh episode after the last step.
    ended = t + 1 == KWARGS["episode_length"]
    np.testing.assert_array_equal(obs[1:, :, 0], np.where(ended, 0, t + 1))
    np.testing.assert_array_equal(obs[1:, :, 1], np.where(ended, episode + 1, episode))
    np.testing.assert_array_equal(unrolls.truncated[1:], ended)
    assert ended.any() and not unrolls.terminated.any()
    # A truncated env delivered its final observation [episode_length, episode]: the
    # learner's bootstrap value is the model's value of exactly that observation.
    final = np.stack([np.full_like(t, KWARGS["episode_length"]), episode], axis=-1)[ended]
    with torch.no_grad():
        values = learner.trainer.model(torch.from_numpy(final)[None],
                               torch.zeros(1, len(final), dtype=torch.bool), ()).values[0]
    np.testing.assert_allclose(unrolls.truncation_values[1:][ended], values.numpy(),
                               rtol=1e-5, atol=1e-6)
    assert (unrolls.truncation_values[1:][~ended] == 0).all()


def drain(learner) -> Unrolls:
    """Every complete unroll in the learner's queue (none is trained: train=False)."""
    parts = []
    while (part := learner.queue.get(1, learner.trainer.policy_version, timeout=0.5)) is not None:
        parts.append(part)
    return Unrolls.concatenate(parts)


@pytest.mark.parametrize(("k", "groups"), [(3, 1), (4, 2), (3, 2)], ids=["3x1", "4x2", "3x2"])
def test_every_transition_of_every_group_reaches_the_learner_once_aligned(
        tmp_path, k: int, groups: int) -> None:
    learner_config = make_config(tmp_path, env=ENV, env_kwargs=KWARGS, unroll_length=T,
                                 batch_size=k, queue_size=1000)  # the queue never blocks
    with running_learner(learner_config, train=False) as learner:
        actor_config = Config(learner=f"127.0.0.1:{learner.port}", env="", envs_per_actor=k,
                              env_groups=str(groups), actor_id_prefix="contract",
                              reconnect_max_backoff=0.2)
        counters, stop, exit_codes = Counters(), threading.Event(), []
        thread = threading.Thread(
            target=lambda: exit_codes.append(run_actor(actor_config, 0, stop, counters)),
            daemon=True)
        thread.start()
        try:
            # G sessions of K_g environments each, on the real learner
            ids = [f"contract-0.g{g}" for g in range(groups)] if groups > 1 else ["contract-0"]
            expected = list(zip(ids, [len(r) for r in split_envs(k, groups)], strict=True))
            deadline = time.monotonic() + WAIT
            while (sorted((s.actor_id, s.num_envs) for s in learner.servicer.sessions())
                   != expected or learner.queue.depth < 3 * k):
                assert time.monotonic() < deadline and thread.is_alive(), (
                    f"sessions {[(s.actor_id, s.num_envs) for s in learner.servicer.sessions()]}"
                    f", {learner.queue.depth} unrolls")
                time.sleep(0.05)
        finally:
            stop.set()
            thread.join(WAIT)
        assert exit_codes == [0]
        # stopped after an answer it did not apply: the learner counted every step taken
        assert learner.metrics.env_steps == counters.steps
        unrolls = drain(learner)
        assert unrolls.size >= 3 * k
        check_aligned(learner, unrolls)
        # Each env's n-th unroll starts at its step n * T, at [t, episode] = divmod(n * T,
        # length) reversed: every env's unrolls 0, 1, ... are there once each, no gaps.
        steps = 4 * unrolls.observations[0, :, 1] + unrolls.observations[0, :, 0]
        assert KWARGS["episode_length"] == 4 and (steps % T == 0).all()
        per_n = np.bincount((steps // T).astype(int))
        assert per_n[0] == k, "each env's first unroll, from reset on"
        assert (np.diff(per_n) <= 0).all(), f"an env's unroll is missing or twice: {per_n}"
        np.testing.assert_array_equal(unrolls.rewards[0, steps == 0], 0.0)
