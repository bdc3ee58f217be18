"""What a person watches: metrics (``metrics.jsonl``, TensorBoard, Weights & Biases), the
live console status, learning curves, and the periodic greedy evaluator. Depends on no
other learner role (a model to evaluate is passed in)."""
