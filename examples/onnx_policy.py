"""Play an exported policy in a plain gymnasium loop: onnxruntime and numpy, no torch.

    seed-rl export --checkpoint runs/CartPole-v1 --format onnx --out cartpole.onnx
    python examples/onnx_policy.py cartpole.onnx --episodes 5

It reads the sidecar (``cartpole.onnx.json``) for the environment, the graph's inputs and
the observation's parts, feeds each observation as the graph wants it (one input per part
of a Dict or Tuple observation), carries the LSTM state of a recurrent policy and draws
the noise of a sampled one, and passes the graph's ``action`` straight to ``env.step``:
the space's start is added and a Box action clipped inside the graph. docs/export.md
describes the graph and the sidecar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import onnxruntime as ort


def make_env(meta: dict) -> gym.Env:
    """The environment the policy was trained on: seed-rl's own make_env when seed-rl is
    installed (it runs --env-import and --env-wrapper as training did; torch-free), else
    gymnasium.make, which needs neither."""
    try:
        from seed_rl.envs.making import make_env as seed_rl_make_env
    except ImportError:
        if meta["env_import"] or meta["env_wrapper"]:
            raise SystemExit("this policy's environment needs --env-import / --env-wrapper: "
                             "install seed-rl (no torch needed) or make it yourself") from None
        return gym.make(meta["env"], **meta["env_kwargs"])
    return seed_rl_make_env(meta["env"], meta["env_kwargs"], meta["env_import"],
                            meta["env_wrapper"], "example")


def part(observation: object, path: str) -> object:
    """The part of a Dict / Tuple observation at ``path`` ("image", "0", "a.b")."""
    for key in path.split(".") if path else []:
        observation = observation[int(key)] if isinstance(observation, tuple) else observation[key]
    return observation


class Policy:
    """An exported graph and its sidecar, stepped for one environment (batch 1)."""

    def __init__(self, path: Path, seed: int):
        self.meta = json.loads(path.with_name(path.name + ".json").read_text())
        self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        self.outputs = [spec["name"] for spec in self.meta["outputs"]]
        self.specs = {spec["name"]: spec for spec in self.meta["inputs"]}
        self.rng = np.random.default_rng(seed)
        size = self.meta["core_size"]
        self.state = {"core_state_h": np.zeros((1, size), np.float32),
                      "core_state_c": np.zeros((1, size), np.float32)}

    def act(self, observation: object, episode_start: bool) -> object:
        feeds = {}
        for leaf in self.meta["observation_layout"]["leaves"]:
            value = np.asarray(part(observation, leaf["path"]), dtype=leaf["dtype"])
            feeds[leaf["input"]] = value.reshape(1, *leaf["shape"])
        if self.meta["recurrent"]:
            feeds.update(self.state, episode_start=np.array([episode_start]))
        if self.meta["sampled"]:
            size = self.specs["noise"]["shape"][1]
            if self.meta["action"]["kind"] == "box":  # standard normal per component
                noise = self.rng.standard_normal((1, size))
            else:  # standard Gumbel per logit
                noise = -np.log(-np.log(self.rng.uniform(np.finfo(np.float32).tiny, 1.0,
                                                         (1, size))))
            feeds["noise"] = noise.astype(np.float32)
        result = dict(zip(self.outputs, self.session.run(self.outputs, feeds), strict=True))
        if self.meta["recurrent"]:
            self.state = {"core_state_h": result["next_core_state_h"],
                          "core_state_c": result["next_core_state_c"]}
        action = result["action"][0]
        return action.item() if self.meta["action"]["kind"] == "discrete" else action


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("graph", type=Path, help="an ONNX file written by seed-rl export")
    parser.add_argument("--episodes", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    policy = Policy(args.graph, args.seed)
    env = make_env(policy.meta)
    returns = []
    for episode in range(args.episodes):
        observation, _ = env.reset(seed=args.seed + episode)
        start, done, total, steps = True, False, 0.0, 0
        while not done:
            action = policy.act(observation, start)
            observation, reward, terminated, truncated, _ = env.step(action)
            start, done = False, terminated or truncated
            total, steps = total + float(reward), steps + 1
        returns.append(total)
        print(f"episode {episode + 1}: return {total:g} in {steps} steps")
    env.close()
    print(f"mean return {np.mean(returns):g} over {len(returns)} episodes "
          f"({'sampled' if policy.meta['sampled'] else 'greedy'} actions, onnxruntime "
          f"{ort.__version__})")


if __name__ == "__main__":
    main()
