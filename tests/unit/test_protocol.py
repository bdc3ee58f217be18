"""The rule of each session's first message (proto/seed_rl/v1/seed_rl.proto, StepRequest):
it carries no transition, so the learner refuses one with a reward or an episode end, and
the Python actor keeps the rule across a reconnect. A real learner in this process (real
gRPC, no mocks)."""

from __future__ import annotations

import threading
import time

import grpc
import numpy as np
import pytest
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner
from support.procs import WAIT

from actors.client import ActorClient
from seed_rl.config import Config

ENV = "CartPole-v1"
K = 2


def wait_for(condition, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        assert time.monotonic() < deadline, f"gave up waiting for {what}"
        time.sleep(0.02)


@pytest.mark.parametrize(("first", "envs"), [
    ({"rewards": [0.0, 1.0]}, [1]),
    ({"terminated": [True, False]}, [0]),
    ({"truncated": [True, True], "final_envs": [0, 1],
      "final_observations": np.zeros((2, 4), np.float32)}, [0, 1]),
], ids=["reward", "terminated", "truncated"])
def test_each_sessions_first_message_carries_no_transition(tmp_path, first, envs) -> None:
    """Reward 0 and no episode end in a session's first message, after a reconnect too;
    from its second message on, rewards and episode ends are the point."""
    observations = np.zeros((K, 4), np.float32)
    with running_learner(make_config(tmp_path, env=ENV), train=False) as learner:
        address = f"127.0.0.1:{learner.port}"
        for run_id in ("run-1", "run-1", "run-2"):  # a new session, a reconnect, a restart
            actor = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0",
                                                             run_id=run_id))
            with pytest.raises(grpc.RpcError) as refused:
                actor.step(step_request(observations, **first))
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert refused.value.details() == (
                "each session's first message must carry reward 0 and terminated = truncated "
                "= false for every environment (its observations start the session: no "
                f"transition led to them); environments {envs} break it")
            actor.close()
            actor = ScriptedActor(address, handshake_request(ENV, K, actor_id="a-0",
                                                             run_id=run_id))
            actor.step(step_request(observations))
            assert len(actor.actions(actor.step(step_request(observations, **first)))) == K
            actor.close()


def test_the_python_actor_starts_every_session_without_a_transition(tmp_path) -> None:
    """CartPole pays reward 1 on every step, so an actor that sent its last step's reward in
    a new session's first message would be refused (and exit 2). The learner ends the
    actor's stream mid-training (UNAVAILABLE, as a broken replica group does) and refuses
    handshakes for a while; the actor reconnects, is served, and exits 0 at the end."""
    config = make_config(tmp_path, env=ENV, unroll_length=4, batch_size=K, queue_size=1000)
    with running_learner(config, train=False) as learner:
        actor = ActorClient(Config(learner=f"127.0.0.1:{learner.port}", env=ENV,
                                   envs_per_actor=K, actor_id_prefix="reconnect",
                                   reconnect_max_backoff=0.2), 0)
        exit_codes: list[int] = []
        thread = threading.Thread(target=lambda: exit_codes.append(actor.run()), daemon=True)
        thread.start()
        try:
            def stepping(session_ids: set[str]) -> list:
                return [s for s in learner.servicer.sessions()
                        if s.session_id not in session_ids and s.steps >= 3]

            wait_for(lambda: stepping(set()), "the actor's first session to step")
            (old,) = stepping(set())
            learner.servicer.unavailable.set()
            wait_for(lambda: old.closed, "the learner to end the stream")
            learner.servicer.unavailable.clear()
            wait_for(lambda: stepping({old.session_id}) or not thread.is_alive(),
                     "a new session to step")
            assert thread.is_alive() and not exit_codes, "the actor was refused after all"
            learner.request_stop("test finished")
            learner.shutdown()
            thread.join(WAIT)
        finally:
            actor.stop.set()
            thread.join(WAIT)
        assert exit_codes == [0] and actor.outcome == "training_over"
