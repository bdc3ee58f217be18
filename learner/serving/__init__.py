"""The actors' side of the learner: the grpc.aio server (server), sessions and streams
(service), message checks (validation, space_match), the token interceptor (auth) and the
inference batcher (batcher). Depends on learner.training and learner.watching."""
