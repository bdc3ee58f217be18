"""Actions per second of an exported policy: onnxruntime against the torch model, side by side.

Builds the CartPole policy (the ``cartpole`` preset's MLP, 64-64 tanh, 2 actions) and the
MinAtar Breakout policy (the ``minatar-breakout`` preset: MinAtar's conv torso on 10x10x4
bool frames, 3 actions; built from the space directly, so the minatar package is not
needed), exports each greedy step with ``seed-rl export``'s code (learner/deploying/
policy_graph.py) as ONNX and as a torch.export program, and times one step at batch 1 and
64 with:

* ``torch``: the :class:`PolicyGraph` module itself in eager torch (the model's forward,
  then the greedy action and its post-processing, what the graphs compute), under
  ``torch.inference_mode``;
* ``torch.export``: the saved program loaded back (``torch.export.load(...).module()``);
* ``onnxruntime``: the ONNX file in an ``InferenceSession`` (CPU provider, all graph
  optimizations).

Like for like: the same untrained weights (speed does not depend on them), inputs prepared
once outside the timed region (numpy arrays for onnxruntime, tensors sharing their memory
for torch), ``--threads`` intra-op threads for both torch (``torch.set_num_threads``) and
onnxruntime (``intra_op_num_threads``, one inter-op thread); the three are timed in turns
(blocks of ``--calls`` calls, ``--repeats`` rounds) and the median block gives actions/s =
batch x calls / seconds. The outputs are checked to agree first.

Usage:
    python benchmarks/export.py [--threads 1] [--repeats 20] [--calls 200]
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from learner.deploying.policy_graph import PolicyGraph, export_onnx, export_torch  # noqa: E402
from learner.training.models import build_model  # noqa: E402
from seed_rl import config as cfg  # noqa: E402

try:
    import onnxruntime as ort
except ImportError:
    sys.exit("benchmarks/export.py needs onnxruntime: pip install 'seed-rl[export]'")


def preset_config(name: str) -> cfg.Config:
    """The model settings of a shipped preset (what `seed-rl train --preset NAME` trains)."""
    return cfg.resolve(None, "train", environ={"SEED_RL_PRESET": name}).config


def policies() -> dict[str, PolicyGraph]:
    torch.manual_seed(0)
    cartpole = gym.make("CartPole-v1")
    minatar = preset_config("minatar-breakout")
    return {
        "CartPole MLP": PolicyGraph(build_model(cartpole.observation_space, cartpole.action_space,
                                                preset_config("cartpole"))),
        # MinAtar/Breakout-v1's spaces: 10x10 frames of 4 bool channels, 3 actions
        "MinAtar Breakout conv": PolicyGraph(build_model(
            gym.spaces.Box(0, 1, (10, 10, 4), bool), gym.spaces.Discrete(3),
            dataclasses.replace(minatar, conv_net="minatar"))),
    }


def inputs_for(graph: PolicyGraph, batch: int, rng: np.random.Generator) -> list[np.ndarray]:
    (spec,) = graph.inputs  # greedy feed-forward graphs: the observation only
    shape = [batch if d == "batch" else int(d) for d in spec.shape]
    if spec.dtype == "bool":
        return [rng.random(shape) < 0.2]
    return [rng.standard_normal(shape).astype(spec.dtype)]


def in_inference_mode(module: Callable, tensors: list[torch.Tensor]) -> Callable[[], object]:
    """A call of ``module(*tensors)`` under ``torch.inference_mode``."""
    def run() -> object:
        with torch.inference_mode():
            return module(*tensors)
    return run


def time_blocks(runners: dict[str, Callable[[], object]], calls: int,
                repeats: int) -> dict[str, float]:
    """Median seconds per call of each runner, timed in turns."""
    blocks: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(repeats):
        for name, run in runners.items():
            started = time.perf_counter()
            for _ in range(calls):
                run()
            blocks[name].append((time.perf_counter() - started) / calls)
    return {name: statistics.median(times) for name, times in blocks.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads, both sides")
    parser.add_argument("--repeats", type=int, default=20, help="timed rounds")
    parser.add_argument("--calls", type=int, default=200, help="calls per timed block")
    parser.add_argument("--batches", default="1,64", help="batch sizes, comma-separated")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = args.threads, 1
    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        for name, graph in policies().items():
            onnx_path, pt2_path = Path(folder) / "policy.onnx", Path(folder) / "policy.pt2"
            export_onnx(graph, onnx_path)
            export_torch(graph, pt2_path)
            session = ort.InferenceSession(str(onnx_path), options,
                                           providers=["CPUExecutionProvider"])
            program = torch.export.load(str(pt2_path)).module()
            for batch in batches:
                arrays = inputs_for(graph, batch, rng)
                feeds = {spec.name: x for spec, x in zip(graph.inputs, arrays, strict=True)}
                tensors = [torch.from_numpy(x) for x in arrays]
                with torch.inference_mode():
                    want = graph(*tensors)[0].numpy()
                    assert (program(*tensors)[0].numpy() == want).all()
                assert (session.run(["action"], feeds)[0] == want).all()

                seconds = time_blocks({
                    "torch": in_inference_mode(graph, tensors),
                    "torch.export": in_inference_mode(program, tensors),
                    "onnxruntime": lambda session=session, feeds=feeds: session.run(
                        ["action"], feeds),
                }, args.calls, args.repeats)
                rows.append((name, batch, {k: batch / v for k, v in seconds.items()}))
    print(f"actions/s, one greedy step; {args.threads} intra-op thread(s) each; median of "
          f"{args.repeats} blocks of {args.calls} calls; torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}, {platform.processor() or platform.machine()}")
    print(f"{'policy':<24}{'batch':>6}{'torch':>14}{'torch.export':>14}{'onnxruntime':>14}"
          f"{'ort/torch':>11}")
    for name, batch, rate in rows:
        print(f"{name:<24}{batch:>6}{rate['torch']:>14,.0f}{rate['torch.export']:>14,.0f}"
              f"{rate['onnxruntime']:>14,.0f}{rate['onnxruntime'] / rate['torch']:>10.2f}x")


if __name__ == "__main__":
    main()
