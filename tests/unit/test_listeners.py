"""--listeners: several gRPC servers share the learner's port (SO_REUSEPORT), each accepting
new RPCs by itself (a grpc.aio server takes one new RPC per round trip through its loop, so
one listener takes a reconnect storm slowly: benchmarks/serving.py --ramp 0). Every
listener serves the one servicer; a second learner still cannot take the port."""

from __future__ import annotations

import socket

import numpy as np
import pytest
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner

from learner.serving.server import port_in_use

ENV = "CartPole-v1"
X0 = np.zeros((1, 4), np.float32)  # one CartPole observation


def test_every_listener_serves_the_one_learner(tmp_path):
    config = make_config(tmp_path, env=ENV, listeners=4)
    with running_learner(config, train=False) as learner:
        assert len(learner.server._servers) == 4
        address = f"127.0.0.1:{learner.port}"
        # Each actor its own connection: the kernel spreads them over the listeners.
        actors = [ScriptedActor(address, handshake_request(ENV, 1, actor_id=f"a-{i}"))
                  for i in range(16)]
        for actor in actors:
            response = actor.step(step_request(X0))
            assert actor.actions(response).shape == (1,)
        assert learner.servicer.connected_actors == 16  # one servicer behind them all
        for actor in actors:
            actor.close()


@pytest.mark.parametrize("listeners", [1, 4])
def test_a_second_learner_cannot_take_the_port(tmp_path, listeners):
    with running_learner(make_config(tmp_path / "a", env=ENV, listeners=4),
                         train=False) as first:
        second = make_config(tmp_path / "b", env=ENV, listeners=listeners,
                             address=f"127.0.0.1:{first.port}")
        with (pytest.raises(SystemExit, match="cannot listen on 127.0.0.1"),
              running_learner(second, train=False)):
            pass
        # The first one still serves.
        actor = ScriptedActor(f"127.0.0.1:{first.port}", handshake_request(ENV, 1))
        assert actor.actions(actor.step(step_request(X0))).shape == (1,)
        actor.close()


def test_port_in_use_sees_a_listener():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert port_in_use(f"127.0.0.1:{port}")
    assert not port_in_use(f"127.0.0.1:{port}")
    assert not port_in_use("127.0.0.1:0")
