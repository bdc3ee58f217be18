"""The actor runtime (docs/architecture.md, "Roles"): ``env_loop`` steps K environments and
records their step messages (``messages``), ``simulator`` takes them from a simulator that
owns its loop instead, ``client`` carries them to the learner over gRPC (handshake,
stream, reconnects), ``groups`` runs one actor process's environments as G such sessions
(double buffering), ``supervisor`` runs and restarts N actor processes. Torch-free;
depends on ``seed_rl`` and never on ``learner``."""
