"""The learner service: central batched inference, trajectory store, V-trace trainer,
checkpoints and metrics. Imports torch; depends on ``seed_rl`` and never on ``actors``."""
