"""``seed-rl export``: a checkpoint's policy as a graph that runs without seed-rl.

``seed-rl export --checkpoint RUN_OR_FILE --format onnx|torch-export --out FILE [--sampled]``
loads a checkpoint (a file, or a run's newest, with the config it was trained with, as
``seed-rl eval`` does), wraps the model as one step of the policy with explicit state
(learner/deploying/policy_graph.py: inputs, outputs, the noise of a sampled graph) and
writes it as an ONNX model (``onnx``: needs the ``export`` extra, ``pip install
'seed-rl[export]'``) or a torch.export program (``torch-export``, ``.pt2``: load it with
``torch.export.load(FILE).module()``), plus ``FILE.json``, the sidecar a client reads:
the spaces, every input and output (name, dtype, shape with ``"batch"`` for the dynamic
dim), greedy or sampled and the noise's definition, the recurrent core size and where the
policy came from. docs/export.md describes both.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

from learner.deploying.policy_graph import PolicyGraph, export_onnx, export_torch, noise_definition
from learner.running.evaluate import load_policy
from seed_rl import __version__
from seed_rl import config as cfg

log = logging.getLogger(__name__)

#: --format -> what it writes
FORMATS = {"onnx": "an ONNX model", "torch-export": "a torch.export program (.pt2)"}
EXTRA = "pip install 'seed-rl[export]'"
SIDECAR_VERSION = 1


def sidecar_path(out: str | os.PathLike) -> Path:
    """Where the sidecar of the graph ``out`` goes: ``out`` + ``.json``."""
    out = Path(out)
    return out.with_name(out.name + ".json")


def _number(value: float) -> float | str:
    """A bound as JSON holds it: a number, or ``"inf"`` / ``"-inf"`` (float() reads both)."""
    value = float(value)
    return value if np.isfinite(value) else ("inf" if value > 0 else "-inf")


def space_json(space: gym.Space) -> dict[str, Any]:
    """``space`` as plain JSON: its kind and every number that defines it (Dict keys in
    the space's order)."""
    if isinstance(space, gym.spaces.Box):
        return {"kind": "box", "shape": list(space.shape), "dtype": np.dtype(space.dtype).name,
                "low": np.vectorize(_number, otypes=[object])(space.low).tolist(),
                "high": np.vectorize(_number, otypes=[object])(space.high).tolist()}
    if isinstance(space, gym.spaces.Discrete):
        return {"kind": "discrete", "n": int(space.n), "start": int(space.start)}
    if isinstance(space, gym.spaces.MultiDiscrete):
        return {"kind": "multi_discrete", "nvec": space.nvec.tolist(),
                "start": np.asarray(space.start).tolist(), "dtype": np.dtype(space.dtype).name}
    if isinstance(space, gym.spaces.MultiBinary):
        return {"kind": "multi_binary", "n": np.atleast_1d(space.n).tolist()}
    if isinstance(space, gym.spaces.Dict):
        return {"kind": "dict", "spaces": {str(k): space_json(s) for k, s in space.spaces.items()}}
    if isinstance(space, gym.spaces.Tuple):
        return {"kind": "tuple", "spaces": [space_json(s) for s in space.spaces]}
    raise ValueError(f"no JSON form for {space}")  # the model was built: cannot happen


def sidecar(graph: PolicyGraph, fmt: str, out: Path, source: Path, counters: dict,
            config: cfg.Config, opset: int | None) -> dict[str, Any]:
    """The JSON a client reads to feed the graph ``out`` (docs/export.md, "The sidecar")."""
    layout = graph.layout
    leaves = [{"path": leaf.path, "input": f"observation.{leaf.path}" if layout.packed
               else "observation", "space": space_json(leaf.space),
               "dtype": leaf.dtype.name, "shape": list(leaf.shape), "offset": leaf.offset,
               "nbytes": leaf.nbytes} for leaf in layout.leaves]
    actions = graph.actions
    return {
        "sidecar_version": SIDECAR_VERSION,
        "format": fmt,
        "file": out.name,
        "seed_rl_version": __version__,
        "torch_version": torch.__version__,
        "onnx_opset": opset,
        "env": config.env,
        "env_kwargs": config.env_kwargs,
        "env_import": list(config.env_import),
        "env_wrapper": list(config.env_wrapper),
        "observation_space": space_json(layout.space),
        "observation_layout": {"packed": layout.packed, "row_shape": list(layout.row_shape),
                               "row_dtype": layout.row_dtype.name, "leaves": leaves},
        "action_space": space_json(actions.space),
        "action": {"kind": actions.kind, "dtype": graph.action_dtype.name,
                   "shape": list(actions.shape), "nvec": list(actions.nvec),
                   "start": np.asarray(actions.start).tolist(),
                   "clipped_to_bounds": actions.kind == "box"},
        "sampled": graph.sampled,
        "noise": noise_definition(graph.model) if graph.sampled else None,
        "recurrent": graph.recurrent,
        "core_size": graph.core_size,
        "inputs": [spec.as_json() for spec in graph.inputs],
        "outputs": [spec.as_json() for spec in graph.outputs],
        "checkpoint": str(source),
        "train_steps": int(counters.get("train_steps", 0)),
        "env_steps": int(counters.get("env_steps", 0)),
        "policy_version": int(counters.get("policy_version", 0)),
    }


def check_out(out: Path) -> None:
    """SystemExit unless a file can be written at ``out`` (its folder exists, writable)."""
    if out.is_dir():
        raise SystemExit(f"--out {out} is a directory; give a file name (e.g. {out}/policy.onnx)")
    folder = out.parent
    if not folder.is_dir():
        raise SystemExit(f"--out {out}: the folder {folder} does not exist; create it first")
    try:
        with tempfile.NamedTemporaryFile(dir=folder, prefix=f".{out.name}.check-"):
            pass
    except OSError as error:
        raise SystemExit(f"--out {out}: cannot write in {folder} ({error.strerror}); choose a "
                         "writable place") from None


def check_onnx_installed() -> None:
    """SystemExit naming the extra when the ONNX exporter's packages are missing."""
    missing = []
    for name in ("onnx", "onnxscript"):
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise SystemExit(f"--format onnx needs {' and '.join(missing)}, which are not "
                         f"installed: {EXTRA} (or use --format torch-export)")


def write_graph(graph: PolicyGraph, fmt: str, out: Path) -> int | None:
    """Write ``graph`` to ``out`` atomically (a temporary file renamed); the ONNX opset."""
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        if fmt == "onnx":
            opset: int | None = export_onnx(graph, tmp)
        else:
            export_torch(graph, tmp)
            opset = None
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return opset


def main(resolved: cfg.Resolved, args: argparse.Namespace | None = None) -> int:
    """``seed-rl export``: write the checkpoint's policy as a graph and its sidecar."""
    del resolved  # the model's config comes from the checkpoint
    if args is None or not getattr(args, "checkpoint", None) or not getattr(args, "out", None):
        raise SystemExit("give --checkpoint PATH (a checkpoint file or a logdir) and --out FILE")
    fmt = str(args.format)
    if fmt not in FORMATS:
        raise SystemExit(f"--format {fmt!r} is not one of {', '.join(FORMATS)}: onnx for "
                         "onnxruntime and any ONNX runtime, torch-export for torch")
    out = Path(args.out)
    check_out(out)
    if fmt == "onnx":
        check_onnx_installed()
    model, config, path, counters = load_policy(args.checkpoint)
    graph = PolicyGraph(model, sampled=bool(args.sampled))
    opset = write_graph(graph, fmt, out)
    meta = sidecar(graph, fmt, out, path, counters, config, opset)
    side = sidecar_path(out)
    side.write_text(json.dumps(meta, indent=2) + "\n")
    names = ", ".join(spec.name for spec in graph.inputs)
    print(f"seed-rl export: {path} ({config.env}, {meta['train_steps']:,} train steps) -> "
          f"{out} ({FORMATS[fmt]}, {'sampled' if graph.sampled else 'greedy'}; inputs: "
          f"{names}) and {side}")
    return 0
