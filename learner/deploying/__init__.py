"""Deployment of a trained policy: ``seed-rl export`` (a checkpoint's policy as an ONNX or
torch.export graph with a JSON sidecar) and ``seed-rl serve`` (the learner's serving path
with training off, answering any fleet of actors from a frozen or followed checkpoint).
The top role: it may import every other."""
