"""The model and its update: per-session unrolls and the unroll queue (store), networks
(models), action distributions (policies), the trainer (one IMPALA update, weight
publication, snapshots), data-parallel replica groups (distributed) and checkpoints.
Depends on learner.watching (metrics) and seed_rl (functional: V-trace and losses)."""
