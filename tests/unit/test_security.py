"""Access control with real processes on loopback: the auth token, TLS, mutual TLS, and
where the learner listens.

Certificates are made at test time (the ``pki`` fixture in conftest.py, the cryptography
package). Refused clients are raw gRPC clients with a bounded deadline; accepted ones are
real ``python -m actors`` processes that must train. The token is checked once per RPC, by
learner/serving/auth.py's interceptor on the learner's server, never by the handlers: the
in-process test below shows a call without it never reaches them.
"""

from __future__ import annotations

import grpc
import numpy as np
from support.learner_client import handshake_request, step_request
from support.learner_harness import make_config, running_learner
from support.secure_clients import ENV, REFUSAL_TIMEOUT, TOKEN, bearer, status_of

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

# -- the auth token --------------------------------------------------------------------------


def test_a_call_without_the_token_never_reaches_a_handler(tmp_path) -> None:
    """In-process learner with a token. A Step stream on a session opened with the token,
    but itself sent without it, is refused before the handler: the session stays unopened,
    so the same session id with the token then streams (one stream per handshake). Refused
    handshakes open no session."""
    config = make_config(tmp_path, env=ENV, auth_token=TOKEN)
    with running_learner(config, train=False) as learner:
        channel = grpc.insecure_channel(f"127.0.0.1:{learner.port}")
        stub = pb_grpc.LearnerStub(channel)
        session_id = stub.Handshake(handshake_request(ENV, 2), metadata=bearer(TOKEN),
                                    timeout=REFUSAL_TIMEOUT).session_id
        step = step_request(np.zeros((2, 4), np.float32))

        def stream(metadata: list[tuple[str, str]]) -> list[pb.StepResponse]:
            return list(stub.Step(iter([step]), timeout=REFUSAL_TIMEOUT,
                                  metadata=[(wire.SESSION_METADATA_KEY, session_id), *metadata]))

        for metadata in ([], bearer("wrong")):
            code, details = status_of(lambda md=metadata: stream(md))
            assert code == grpc.StatusCode.UNAUTHENTICATED and "auth token" in details
            code, _ = status_of(lambda md=metadata: stub.Handshake(
                handshake_request(ENV, 2), metadata=md, timeout=REFUSAL_TIMEOUT))
            assert code == grpc.StatusCode.UNAUTHENTICATED
        assert [s.session_id for s in learner.servicer.sessions()] == [session_id]
        assert learner.servicer.connected_actors == 0  # no refused stream got attached
        (served,) = stream(bearer(TOKEN))
        assert wire.decode_tensor(served.actions).shape == (2,)
        channel.close()
