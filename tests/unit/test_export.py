"""``seed-rl export``'s graphs against the torch model they came from: for every space kind
the learner carries, an LSTM model and a Dict observation, the ONNX graph (through
onnxruntime) and the torch.export program (saved, loaded back) give the torch model's
outputs on the same inputs: the same actions (greedy, or sampled with the same noise, in
env form: start added, Box clipped, as ``ActionLayout.to_env`` makes them), values and
policy parameters to float tolerance, at batch 1 and 64 of one export; recurrent state
carried step by step equals the model run on the whole sequence. And the command's errors.
Real exports, real files, real onnxruntime sessions."""

from __future__ import annotations

import dataclasses
import json
import sys

import gymnasium as gym
import numpy as np
import onnxruntime as ort
import pytest
import torch

from learner.deploying import export
from learner.deploying.policy_graph import PolicyGraph, export_onnx, export_torch
from learner.training import checkpoint
from learner.training.models import build_model, unpack_rows
from seed_rl import cli
from seed_rl.config import Config
from seed_rl.spaces import observation_layout

Box, Discrete, MultiDiscrete, MultiBinary = (gym.spaces.Box, gym.spaces.Discrete,
                                             gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)

OBSERVATIONS = {
    "box-vector": Box(-1, 1, (5,), np.float32),
    "box-image-uint8": Box(0, 255, (36, 36, 3), np.uint8),
    "bool-image-minatar": Box(0, 1, (10, 10, 4), bool),
    "discrete": Discrete(4, start=-2),
    "multi-discrete": MultiDiscrete([[2, 3], [4, 1]], start=[[0, 1], [-1, 5]]),
    "multi-binary": MultiBinary([2, 3]),
    "dict": gym.spaces.Dict({"image": Box(0, 255, (12, 12, 2), np.uint8),
                             "position": Box(-5, 5, (3,), np.float64),
                             "room": Discrete(7, start=1)}),
    "tuple": gym.spaces.Tuple((Discrete(3), Box(-1, 1, (2, 2), np.float32), MultiBinary(4))),
}
ACTIONS = {
    "discrete": Discrete(3, start=1),
    "multi-discrete": MultiDiscrete([3, 2, 4], start=[1, 0, -2]),
    # bounds the Gaussian's samples (std 1) and its spread means cross: clipping matters
    "box": Box(np.array([-0.5, 0.0], np.float32), np.array([0.5, 2.0], np.float32)),
}
BATCHES = (1, 64)


def small_model(observation: gym.Space, action: gym.Space, lstm: bool = False,
                seed: int = 0, **overrides) -> torch.nn.Module:
    """A small model whose policy head is spread out (far from its near-uniform start), so
    actions differ between inputs, greedy argmaxes have clear winners and Box means fall
    outside the bounds."""
    conv_net = "minatar" if isinstance(observation, (Box, gym.spaces.Dict)) else "nature"
    config = dataclasses.replace(Config(), hidden_sizes=[16], conv_net=conv_net, lstm=lstm,
                                 lstm_size=8, **overrides)
    torch.manual_seed(seed)
    model = build_model(observation, action, config)
    with torch.no_grad():
        torch.nn.init.normal_(model.policy.weight, std=0.5)
        torch.nn.init.normal_(model.policy.bias, std=0.1)
    return model.eval()


def rows_of(space: gym.Space, count: int, seed: int) -> np.ndarray:
    """``count`` sampled observations as the wire carries them: [count, *row_shape]."""
    layout = observation_layout(space)
    space.seed(seed)
    rows = np.zeros((count, *layout.row_shape), layout.row_dtype)
    for i in range(count):
        layout.write(rows, i, space.sample())
    return rows


def noise_for(graph: PolicyGraph, count: int, rng: np.random.Generator) -> np.ndarray:
    """The sampled graph's documented noise: standard normal (Box), standard Gumbel."""
    shape = (count, graph.noise_size)
    if graph.actions.kind == "box":
        return rng.standard_normal(shape).astype(np.float32)
    return (-np.log(-np.log(rng.uniform(1e-12, 1.0, shape)))).astype(np.float32)


def expected_actions(graph: PolicyGraph, params: np.ndarray,
                     noise: np.ndarray | None) -> np.ndarray:
    """What the actor would pass to env.step for these policy parameters ``[B, P]`` and
    this noise: the learner's sampling rule, then ``ActionLayout.to_env``."""
    actions = graph.actions
    if actions.kind == "box":
        mean, log_std = np.split(params, 2, axis=-1)
        raw = mean if noise is None else mean + np.exp(log_std) * noise
        raw = raw.reshape(len(params), *actions.shape).astype(np.float32)
    else:
        scores = params if noise is None else params + noise
        heads = np.split(scores, np.cumsum(actions.nvec)[:-1], axis=-1)
        index = np.stack([head.argmax(-1) for head in heads], axis=-1)
        raw = actions.to_wire(index.reshape(len(params), *actions.shape))
    return np.stack([np.asarray(actions.to_env(a)) for a in raw])


class Exported:
    """One graph exported in both formats, run through onnxruntime and the loaded program."""

    def __init__(self, graph: PolicyGraph, folder):
        self.graph = graph
        export_onnx(graph, folder / "policy.onnx")
        export_torch(graph, folder / "policy.pt2")
        self.session = ort.InferenceSession(str(folder / "policy.onnx"),
                                            providers=["CPUExecutionProvider"])
        self.program = torch.export.load(str(folder / "policy.pt2")).module()
        self.names = [spec.name for spec in graph.outputs]

    def run(self, inputs: list[np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Both formats' outputs by name, for the inputs in the graph's order."""
        feeds = {spec.name: x for spec, x in zip(self.graph.inputs, inputs, strict=True)}
        onnx_out = self.session.run(self.names, feeds)
        with torch.no_grad():
            torch_out = self.program(*(torch.from_numpy(x) for x in inputs))
        return {"onnxruntime": dict(zip(self.names, onnx_out, strict=True)),
                "torch.export": {n: t.numpy() for n, t in zip(self.names, torch_out,
                                                              strict=True)}}


def assert_actions(got: np.ndarray, want: np.ndarray, graph: PolicyGraph, fmt: str) -> None:
    """Categorical actions exactly; Box actions exactly where clipped to a bound, else to
    float tolerance (exp and the product round alike only up to an ulp across runtimes)."""
    assert got.dtype == want.dtype == graph.action_dtype, fmt
    assert got.shape == want.shape, fmt
    if graph.actions.kind != "box":
        np.testing.assert_array_equal(got, want, err_msg=fmt)
        return
    space = graph.actions.space
    bound = (want == space.low) | (want == space.high)
    np.testing.assert_array_equal(got[bound], want[bound], err_msg=fmt)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=fmt)


def observation_inputs(graph: PolicyGraph, rows: np.ndarray) -> list[np.ndarray]:
    """The graph's observation inputs for wire rows: the leaves of a packed row."""
    return graph.layout.unpack(rows) if graph.layout.packed else [rows]


def check_step(exported: Exported, rows: np.ndarray, rng: np.random.Generator) -> None:
    """One feed-forward step at batch len(rows): both formats equal the torch model."""
    graph, count = exported.graph, len(rows)
    noise = noise_for(graph, count, rng) if graph.sampled else None
    with torch.no_grad():
        out = graph.model(torch.from_numpy(rows)[None], torch.zeros(1, count, dtype=torch.bool))
    params, values = out.policy_params[0].numpy(), out.values[0].numpy()
    want = expected_actions(graph, params, noise)
    inputs = observation_inputs(graph, rows) + ([noise] if noise is not None else [])
    for fmt, got in exported.run(inputs).items():
        assert got["action"].shape == (count, *graph.actions.shape), fmt
        assert_actions(got["action"], want, graph, fmt)
        np.testing.assert_allclose(got["value"], values, rtol=1e-5, atol=1e-5, err_msg=fmt)
        np.testing.assert_allclose(got["policy_params"], params, rtol=1e-5, atol=1e-5,
                                   err_msg=fmt)
    varied = len(np.unique(rows.reshape(count, -1), axis=0)) >= 8  # not Discrete(4)'s 4
    if graph.actions.kind == "box" and count > 1 and (graph.sampled or varied):
        # not vacuous: clipping happened, and not everywhere
        space = graph.actions.space
        assert ((want == space.low) | (want == space.high)).any()
        assert ((want > space.low) & (want < space.high)).any()
    if count > 1:  # not vacuous: the outputs depend on the observation (and the noise)
        assert len(np.unique(params, axis=0)) > 1
        if graph.sampled:
            assert len(np.unique(want, axis=0)) > 1


def check_every_batch(graph: PolicyGraph, folder, seed: int = 1) -> None:
    exported = Exported(graph, folder)
    rng = np.random.default_rng(seed)
    space = graph.layout.space
    for count in BATCHES:
        check_step(exported, rows_of(space, count, seed + count), rng)


# -- every space kind ------------------------------------------------------------------------

# every observation kind once, each action kind in turn, greedy and sampled alternating;
# every action kind greedy and sampled (slow). The observation's inputs and the action's
# post-processing are separate parts of the graph, so pairs of kinds add nothing: the
# cross product (48 exports, 6.5 minutes here) is left out of the suite.
QUICK = [(obs, list(ACTIONS)[i % 3], bool(i % 2)) for i, obs in enumerate(OBSERVATIONS)]


@pytest.mark.parametrize(("observation", "action", "sampled"), QUICK,
                         ids=[f"{o}-{a}-{'sampled' if s else 'greedy'}" for o, a, s in QUICK])
def test_the_graphs_act_as_the_torch_model_for_every_observation_kind(
        tmp_path, observation: str, action: str, sampled: bool) -> None:
    model = small_model(OBSERVATIONS[observation], ACTIONS[action])
    check_every_batch(PolicyGraph(model, sampled=sampled), tmp_path)


def test_the_graphs_normalise_observations_with_the_models_statistics(tmp_path) -> None:
    """``--normalize-observations``: the graph reads raw observations and normalises them
    with the statistics the checkpoint holds (here moved far from their start)."""
    space = OBSERVATIONS["dict"]
    model = small_model(space, ACTIONS["discrete"], normalize_observations=True)
    rows = torch.from_numpy(rows_of(space, 512, seed=9))
    norm = model.observation_norm
    norm.update(norm.moments(unpack_rows(rows, model.observation_layout)))
    assert sorted(norm.parts) == ["0", "1"]  # the image and the position, not the room
    assert float(norm.parts["1"].var.min()) > 4  # uniform on [-5, 5]: variance 25/3
    check_every_batch(PolicyGraph(model, sampled=False), tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
@pytest.mark.parametrize("action", ACTIONS, ids=list(ACTIONS))
def test_the_graphs_act_as_the_torch_model_for_every_action_kind(
        tmp_path, action: str, sampled: bool) -> None:
    model = small_model(OBSERVATIONS["box-vector"], ACTIONS[action])
    check_every_batch(PolicyGraph(model, sampled=sampled), tmp_path)


def test_a_float64_box_action_comes_out_in_its_dtype_clipped(tmp_path) -> None:
    action = Box(-0.25, 0.25, (3,), np.float64)
    graph = PolicyGraph(small_model(OBSERVATIONS["box-vector"], action), sampled=True)
    assert graph.outputs[0].dtype == "float64"
    check_every_batch(graph, tmp_path)


# -- recurrent models -----------------------------------------------------------------------


@pytest.mark.parametrize("sampled", [False, True], ids=["greedy", "sampled"])
def test_an_lstm_graph_carries_its_state_as_the_model_runs_a_sequence(tmp_path,
                                                                       sampled: bool) -> None:
    """A Dict observation and an LSTM: the graph stepped T times, its next state fed back,
    with episodes starting mid-sequence, equals one call of the model on [T, B] (the
    learner's unroll path, which resets the state where episode_start is true)."""
    space, steps = OBSERVATIONS["dict"], 6
    model = small_model(space, ACTIONS["multi-discrete"], lstm=True)
    graph = PolicyGraph(model, sampled=sampled)
    assert [s.name for s in graph.inputs] == [
        "observation.image", "observation.position", "observation.room", "episode_start",
        "core_state_h", "core_state_c", *(["noise"] if sampled else [])]
    assert [s.name for s in graph.outputs] == [
        "action", "value", "policy_params", "next_core_state_h", "next_core_state_c"]
    exported = Exported(graph, tmp_path)
    rng = np.random.default_rng(2)
    for count in BATCHES:
        rows = rows_of(space, steps * count, count).reshape(steps, count, -1)
        starts = np.zeros((steps, count), bool)
        starts[0] = True
        starts[3, ::2] = True  # half of them start a new episode mid-way
        noise = [noise_for(graph, count, rng) if sampled else None for _ in range(steps)]
        state = model.initial_state(count)
        with torch.no_grad():
            whole = model(torch.from_numpy(rows), torch.from_numpy(starts), state)
        for fmt in ("onnxruntime", "torch.export"):
            h = c = np.full((count, graph.core_size), 7.0, np.float32)  # reset at step 0
            for t in range(steps):
                inputs = [*observation_inputs(graph, rows[t]), starts[t], h, c]
                got = exported.run(inputs + ([noise[t]] if sampled else []))[fmt]
                params = whole.policy_params[t].numpy()
                np.testing.assert_allclose(got["policy_params"], params, rtol=1e-4, atol=1e-5)
                np.testing.assert_allclose(got["value"], whole.values[t].numpy(), rtol=1e-4,
                                           atol=1e-5)
                assert_actions(got["action"], expected_actions(graph, params, noise[t]),
                               graph, fmt)
                h, c = got["next_core_state_h"], got["next_core_state_c"]
            np.testing.assert_allclose(h, whole.core_state[0].numpy(), rtol=1e-4, atol=1e-5)
            np.testing.assert_allclose(c, whole.core_state[1].numpy(), rtol=1e-4, atol=1e-5)


# -- the command ----------------------------------------------------------------------------


def write_checkpoint(logdir, env: str = "CartPole-v1", **overrides) -> Config:
    """A checkpoint of a fresh model with a real config, as the learner writes one."""
    config = dataclasses.replace(Config(), env=env, hidden_sizes=[16], **overrides)
    made = gym.make(env)
    model = build_model(made.observation_space, made.action_space, config)
    made.close()
    checkpoint.save(logdir, {"model": model.state_dict(), "optimizer": {},
                             "counters": {"train_steps": 12, "env_steps": 3000,
                                          "policy_version": 12},
                             "config": json.dumps(config.to_json_dict())})
    return config


def run_export(*argv: str) -> int:
    return cli.main(["export", *argv])


def test_export_writes_the_graph_and_a_sidecar_that_describes_it(tmp_path, capsys) -> None:
    write_checkpoint(tmp_path / "run", env="Pendulum-v1", lstm=True, lstm_size=8)
    out = tmp_path / "pendulum.pt2"
    assert run_export("--checkpoint", str(tmp_path / "run"), "--format", "torch-export",
                      "--out", str(out), "--sampled") == 0
    assert str(out) in capsys.readouterr().out
    meta = json.loads(export.sidecar_path(out).read_text())
    assert meta["format"] == "torch-export" and meta["file"] == "pendulum.pt2"
    assert meta["env"] == "Pendulum-v1" and meta["sampled"] and meta["recurrent"]
    assert meta["core_size"] == 8 and "standard normal" in meta["noise"]
    assert meta["train_steps"] == 12 and meta["policy_version"] == 12
    assert meta["checkpoint"].endswith("ckpt-0000000012.pt")
    assert meta["action_space"] == {"kind": "box", "shape": [1], "dtype": "float32",
                                    "low": [-2.0], "high": [2.0]}
    assert meta["observation_space"]["low"] == [-1.0, -1.0, -8.0]
    assert [i["name"] for i in meta["inputs"]] == [
        "observation", "episode_start", "core_state_h", "core_state_c", "noise"]
    assert meta["inputs"][0] == {"name": "observation", "dtype": "float32",
                                 "shape": ["batch", 3], "doc": meta["inputs"][0]["doc"]}
    assert meta["outputs"][0]["shape"] == ["batch", 1]
    program = torch.export.load(str(out)).module()
    action, *_ = program(torch.zeros(4, 3), torch.ones(4, dtype=torch.bool),
                         torch.zeros(4, 8), torch.zeros(4, 8), torch.full((4, 1), 50.0))
    assert (action == 2.0).all()  # 50 standard deviations up: clipped to the bound


def test_a_bad_checkpoint_or_format_or_out_says_what_to_do(tmp_path, capsys) -> None:
    out = str(tmp_path / "policy.onnx")
    with pytest.raises(SystemExit, match="does not exist"):
        run_export("--checkpoint", str(tmp_path / "nowhere"), "--format", "onnx", "--out", out)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no readable checkpoint.*train first"):
        run_export("--checkpoint", str(tmp_path / "empty"), "--format", "onnx", "--out", out)
    garbage = tmp_path / "ckpt-0000000001.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="unreadable"):
        run_export("--checkpoint", str(garbage), "--format", "onnx", "--out", out)
    write_checkpoint(tmp_path / "run")
    run = str(tmp_path / "run")
    with pytest.raises(SystemExit, match="--format 'tflite' is not one of onnx, torch-export"):
        run_export("--checkpoint", run, "--format", "tflite", "--out", out)
    with pytest.raises(SystemExit, match="folder .*missing does not exist"):
        run_export("--checkpoint", run, "--format", "onnx",
                   "--out", str(tmp_path / "missing" / "policy.onnx"))
    with pytest.raises(SystemExit, match="is a directory"):
        run_export("--checkpoint", run, "--format", "onnx", "--out", str(tmp_path))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt-0000000001.pt", "empty", "run"]


def test_without_the_onnx_packages_the_error_names_the_extra(tmp_path, monkeypatch) -> None:
    write_checkpoint(tmp_path / "run")
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # an import of it fails
    with pytest.raises(SystemExit, match=r"needs onnxscript.*pip install 'seed-rl\[export\]'"):
        run_export("--checkpoint", str(tmp_path / "run"), "--format", "onnx",
                   "--out", str(tmp_path / "policy.onnx"))
    assert not (tmp_path / "policy.onnx").exists()
