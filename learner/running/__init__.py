"""The processes: the learner (learner: the object that wires one; main: the ``seed-rl
learner`` command), the replica launcher (launch) and one replica (replica), ``seed-rl
train`` (local_run, its actor child local_actors, its state and summary local_state, with
replicas local_replicas) and ``seed-rl eval`` (evaluate). It may import every role but
deploying."""
