"""`seed-rl export` as a user runs it: a checkpoint exported by the real command, its sidecar
read back, the ONNX graph played by examples/onnx_policy.py in a process where torch cannot
be imported, and the one-line errors of a bad checkpoint and a bad format. Real processes,
files and environments."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys

import gymnasium as gym
import numpy as np
import onnxruntime as ort
from support.procs import REPO

from learner.training import checkpoint
from learner.training.models import build_model
from seed_rl.config import Config

WAIT = 180.0  # seconds: an export and a few episodes on a busy 2-core machine

#: runs a script (argv[1:]) with every import of torch failing, and checks none happened
WITHOUT_TORCH = """
import runpy, sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            raise ImportError("torch is not installed here")
sys.meta_path.insert(0, NoTorch())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
assert "torch" not in sys.modules
"""


def run(*argv: str, cwd=REPO) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SEED_RL_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, *argv], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=WAIT)


def write_checkpoint(logdir, env: str = "CartPole-v1", **overrides) -> None:
    """A checkpoint of a fresh model with a real config, as the learner writes one."""
    config = dataclasses.replace(Config(), env=env, hidden_sizes=[16], **overrides)
    made = gym.make(env)
    model = build_model(made.observation_space, made.action_space, config)
    made.close()
    checkpoint.save(logdir, {"model": model.state_dict(), "optimizer": {},
                             "counters": {"train_steps": 5, "env_steps": 640,
                                          "policy_version": 5},
                             "config": json.dumps(config.to_json_dict())})


def test_an_exported_cartpole_policy_plays_in_a_loop_without_torch(tmp_path) -> None:
    write_checkpoint(tmp_path / "run", lstm=True, lstm_size=8)
    graph = tmp_path / "cartpole.onnx"
    done = run("-m", "seed_rl", "export", "--checkpoint", str(tmp_path / "run"),
               "--format", "onnx", "--out", str(graph), "--sampled")
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"-> {graph}" in done.stdout
    assert "Traceback" not in done.stderr and "WARNING" not in done.stderr, done.stderr
    meta = json.loads(graph.with_name("cartpole.onnx.json").read_text())
    assert meta["format"] == "onnx" and meta["env"] == "CartPole-v1" and meta["sampled"]
    assert meta["action"] == {"kind": "discrete", "dtype": "int64", "shape": [], "nvec": [2],
                              "start": 0, "clipped_to_bounds": False}

    session = ort.InferenceSession(str(graph), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in session.get_inputs()] == [
        (spec["name"], spec["shape"]) for spec in meta["inputs"]]
    assert [o.name for o in session.get_outputs()] == [o["name"] for o in meta["outputs"]]
    for batch in (1, 64):
        feeds = {"observation": np.zeros((batch, 4), np.float32),
                 "episode_start": np.ones(batch, bool),
                 "core_state_h": np.zeros((batch, 8), np.float32),
                 "core_state_c": np.zeros((batch, 8), np.float32),
                 "noise": np.tile(np.array([[0.0, 30.0]], np.float32), (batch, 1))}
        action, value, *_ = session.run(None, feeds)
        assert action.tolist() == [1] * batch  # the noise decides: 30 Gumbel units for 1
        assert value.shape == (batch,) and value.dtype == np.float32

    played = run("-c", WITHOUT_TORCH, str(REPO / "examples" / "onnx_policy.py"), str(graph),
                 "--episodes", "3", cwd=tmp_path)
    assert played.returncode == 0, played.stdout + played.stderr
    returns = [float(r) for r in re.findall(r"episode \d: return (\S+) in \d+ steps",
                                            played.stdout)]
    assert len(returns) == 3 and all(r >= 1 for r in returns), played.stdout
    assert "sampled actions" in played.stdout


def test_a_dict_observation_policy_plays_through_the_example_without_torch(tmp_path) -> None:
    """Observation parts fed by name (a Discrete, a uint8 image, a Box), the state carried."""
    env = "seed_rl.testing:DictObservation-v0"
    write_checkpoint(tmp_path / "run", env=env, lstm=True, lstm_size=8, conv_net="minatar")
    graph = tmp_path / "cue.onnx"
    done = run("-m", "seed_rl", "export", "--checkpoint", str(tmp_path / "run"),
               "--format", "onnx", "--out", str(graph))
    assert done.returncode == 0, done.stdout + done.stderr
    meta = json.loads(graph.with_name("cue.onnx.json").read_text())
    assert [leaf["input"] for leaf in meta["observation_layout"]["leaves"]] == [
        "observation.cue", "observation.image", "observation.position"]
    assert meta["observation_layout"]["packed"] and not meta["sampled"]
    played = run("-c", WITHOUT_TORCH, str(REPO / "examples" / "onnx_policy.py"), str(graph),
                 "--episodes", "2", cwd=tmp_path)
    assert played.returncode == 0, played.stdout + played.stderr
    assert len(re.findall(r"episode \d: return \S+ in \d+ steps", played.stdout)) == 2
    assert "greedy actions" in played.stdout


def test_a_bad_checkpoint_or_format_is_one_line_that_says_what_to_do(tmp_path) -> None:
    garbage = tmp_path / "ckpt-0000000001.pt"
    garbage.write_bytes(b"not a checkpoint")
    for argv, says in [
        (["--checkpoint", str(garbage), "--format", "onnx"], "is unreadable"),
        (["--checkpoint", str(tmp_path / "nowhere"), "--format", "onnx"], "does not exist"),
        (["--checkpoint", str(garbage), "--format", "tflite"],
         "--format 'tflite' is not one of onnx, torch-export"),
    ]:
        done = run("-m", "seed_rl", "export", *argv, "--out", str(tmp_path / "p.onnx"))
        assert done.returncode == 1, done.stdout + done.stderr
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("seed-rl export: error: "), done.stderr
        assert says in lines[0], lines[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == [garbage.name]
