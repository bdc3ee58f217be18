"""Sessions through a real learner service: a restarted actor's partial unrolls are dropped,
never mixed with its new incarnation's steps; duplicate live ids are refused."""

from __future__ import annotations

import grpc
import numpy as np
import pytest
from learner_client import ScriptedActor, handshake_request, step_request
from learner_harness import make_config, running_learner

ENV = "seed_rl.testing:RevealAction-v0"
K, T = 2, 4


def observations(incarnation: int, step: int) -> np.ndarray:
    """[K, 2] float32: column 1 tags the incarnation that sent it."""
    return np.array([[step, incarnation]] * K, np.float32)


def test_a_restarted_actor_starts_clean_unrolls(tmp_path):
    config = make_config(tmp_path, env=ENV, unroll_length=T, batch_size=K)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        old = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0"))
        for step in range(T - 1):  # a partial unroll, then the process "dies"
            old.step(step_request(observations(1, step)))
        old.close()
        new = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0"))
        for step in range(T + 1):
            new.step(step_request(observations(2, step)))
        unrolls = learner.queue.get(K, learner.trainer.policy_version, timeout=5)
        assert unrolls is not None
        assert (unrolls.observations[..., 1] == 2).all(), "old steps leaked into an unroll"
        np.testing.assert_array_equal(unrolls.observations[:, 0, 0], np.arange(T + 1))
        assert learner.queue.depth == 0
        assert learner.servicer.dropped_partial_unrolls == K
        new.close()


def test_a_second_live_connection_with_the_same_id_is_refused(tmp_path):
    config = make_config(tmp_path, env=ENV)
    with running_learner(config, train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        first = ScriptedActor(address, handshake_request(ENV, K, actor_id="dup"))
        first.step(step_request(observations(1, 0)))
        with pytest.raises(grpc.RpcError) as refused:
            ScriptedActor(address, handshake_request(ENV, K, actor_id="dup"))
        assert refused.value.code() == grpc.StatusCode.ALREADY_EXISTS
        assert "'dup' is already connected" in refused.value.details()
        # The first connection is untouched and keeps being served.
        assert len(first.actions(first.step(step_request(observations(1, 1))))) == K
        first.close()
