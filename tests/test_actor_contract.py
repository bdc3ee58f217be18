"""The real actor (client + env loop) against the real learner servicer, in one process.

tests/test_actors.py checks the actor against a stand-in learner; this checks the two real
halves agree on the wire contract: the env comes from the learner's handshake, steps flow,
and the unrolls the learner queues hold exactly what the actor's environments produced
under the learner's actions. RevealAction's reward 10 * t + a names both the observation t
and the action a it came from, so every transition proves its own alignment.
"""

from __future__ import annotations

import threading

import numpy as np
import torch
from learner_harness import make_config, running_learner
from procs import WAIT

from actors.client import ActorClient
from actors.counters import Counters
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
