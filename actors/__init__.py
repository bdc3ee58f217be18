"""The actor runtime: environment loop, gRPC client with reconnects, process supervisor.
Torch-free; depends on ``seed_rl`` and never on ``learner``."""
