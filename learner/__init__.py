"""The learner: owns the model, runs all inference for its actors and trains on their
unrolls. Four roles, one sub-package each, each importing only the ones listed before it:

  watching/   what a person sees: metrics.jsonl and TensorBoard, the live console, learning
              curves, the periodic greedy evaluator
  training/   the model and the update: unroll store and queue, networks, action
              distributions, the trainer, replica groups, checkpoints
  serving/    the gRPC side: server, sessions and streams, message checks, auth, the
              inference batcher
  running/    the processes: the learner (its object and its command), the replica
              launcher, ``seed-rl train`` (local run and its actor child), ``seed-rl eval``

docs/architecture.md is the map; tests/unit/test_imports.py holds the layering.
"""
