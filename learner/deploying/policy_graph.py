"""One step of a trained policy as a self-contained graph: observation in, env action out.

:class:`PolicyGraph` wraps an :class:`~learner.training.models.ActorCritic` so that one call
maps ONE time step of a batch of B environments, with every piece of state explicit, and
exports it (:func:`export_torch`: a torch.export program, ``.pt2``; :func:`export_onnx`:
an ONNX model). Inputs, in this order (``batch`` is the one dynamic dim, any B >= 1):

* the observation: ``observation [batch, *shape]`` in the space's wire dtype (a Box in its
  own dtype, Discrete int64 with ``start`` included, MultiDiscrete int64, MultiBinary
  int8); for a Dict or Tuple observation one input per leaf instead, ``observation.PATH``
  (``observation.image``, ``observation.0``, ``observation.sensors.position``) in the
  leaf's dtype and shape, in the space's own order (seed_rl/spaces.py, ``Leaf``). The
  wire packs those leaves as bytes into one uint8 row; a graph takes them apart because
  ONNX cannot reinterpret bytes as another dtype, and a client holds the leaves anyway;
* recurrent models only: ``episode_start [batch]`` bool (true: this observation starts an
  episode, the state is zeroed before it is read), ``core_state_h``, ``core_state_c``
  ``[batch, H]`` float32 (zeros for a new environment; feed back the last step's
  ``next_core_state_*``);
* sampled graphs only: ``noise [batch, K]`` float32, the randomness of the sample, so the
  graph itself is deterministic. Discrete and MultiDiscrete: K = the number of logits,
  one standard Gumbel sample per logit (``-log(-log(U))``, U uniform on (0, 1)), and the
  action of each head is ``argmax(logits + noise)`` (the Gumbel-max trick: a sample of
  ``softmax(logits)``, as the learner samples). Box of n values: K = n, standard normal
  samples, and the action is ``mean + exp(log_std) * noise``.

Outputs, in this order:

* ``action``: what ``env.step`` takes, post-processed inside the graph: Discrete int64
  ``[batch]`` and MultiDiscrete ``[batch, m]`` (the space's dtype) with the space's
  ``start`` added; Box ``[batch, *shape]`` in the space's dtype, clipped to its bounds
  (exactly ``seed_rl.spaces.ActionLayout.to_env``). Greedy graphs take the most likely
  action (argmax, the Gaussian's mean);
* ``value [batch]`` float32: the critic's estimate of the return from this observation;
* ``policy_params [batch, P]`` float32: the action distribution's parameters
  (learner/training/policies.py: the logits, or the Gaussian's mean then log-std);
* recurrent models only: ``next_core_state_h``, ``next_core_state_c`` ``[batch, H]``.

The torch model computes the same (tests/unit/test_export.py holds both formats to it).
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from learner.training.models import ActorCritic, torch_dtype
from learner.training.policies import DiagGaussian

BATCH = "batch"  # the name of the dynamic dim in the specs and the sidecar


@dataclass(frozen=True)
class TensorSpec:
    """One input or output of a graph: its name, numpy dtype name and shape (``"batch"``
    for the dynamic dim), and what it holds."""

    name: str
    dtype: str
    shape: tuple[int | str, ...]
    doc: str

    def as_json(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "shape": list(self.shape),
                "doc": self.doc}


def noise_definition(model: ActorCritic) -> str:
    """What a sampled graph's ``noise`` input holds, and how the action uses it."""
    if isinstance(model.distribution, DiagGaussian):
        return ("standard normal samples, one per action component (flattened); "
                "action = clip(mean + exp(log_std) * noise, low, high)")
    return ("standard Gumbel samples -log(-log(U)), U ~ Uniform(0, 1), one per logit (the "
            "layout of policy_params); action = argmax(logits + noise) of each head + start")


class PolicyGraph(nn.Module):
    """One step of ``model`` with explicit state (module docstring: inputs and outputs).

    ``sampled``: the action is a sample drawn with the ``noise`` input; else greedy.
    ``forward(*inputs)`` takes the tensors of :attr:`inputs` in order and returns those of
    :attr:`outputs`.
    """

    def __init__(self, model: ActorCritic, sampled: bool = False):
        super().__init__()
        self.model = model.eval()
        self.sampled = bool(sampled)
        self.recurrent = model.core is not None
        self.layout = model.observation_layout
        self.actions = model.action_layout
        self.distribution = model.distribution
        space = self.actions.space
        if self.actions.kind == "box":
            self.action_dtype = np.dtype(space.dtype)
            dtype = torch_dtype(self.action_dtype)
            self.register_buffer("low", torch.as_tensor(space.low).to(dtype), persistent=False)
            self.register_buffer("high", torch.as_tensor(space.high).to(dtype),
                                 persistent=False)
        else:
            self.action_dtype = np.dtype(np.int64 if self.actions.kind == "discrete"
                                         else space.dtype)
            self.register_buffer("start", torch.as_tensor(self.actions.start, dtype=torch.int64),
                                 persistent=False)
        self.inputs = self._input_specs()
        self.outputs = self._output_specs()

    # -- the specs -------------------------------------------------------------------------

    @property
    def core_size(self) -> int:
        return self.model.core.hidden_size if self.model.core is not None else 0

    @property
    def noise_size(self) -> int:
        """K, the noise values per environment of a sampled graph."""
        if isinstance(self.distribution, DiagGaussian):
            return self.distribution.size
        return self.distribution.num_params

    def _input_specs(self) -> list[TensorSpec]:
        if self.layout.packed:
            specs = [TensorSpec(f"observation.{leaf.path}", leaf.dtype.name,
                                (BATCH, *leaf.shape), f"observation part {leaf.path!r} "
                                f"({leaf.space})") for leaf in self.layout.leaves]
        else:
            specs = [TensorSpec("observation", self.layout.row_dtype.name,
                                (BATCH, *self.layout.row_shape),
                                f"the observation ({self.layout.space})")]
        if self.recurrent:
            size = self.core_size
            specs += [
                TensorSpec("episode_start", "bool", (BATCH,),
                           "true where this observation starts an episode: the core state "
                           "is zeroed before it is read"),
                TensorSpec("core_state_h", "float32", (BATCH, size),
                           "the LSTM's hidden state: zeros at first, then next_core_state_h"),
                TensorSpec("core_state_c", "float32", (BATCH, size),
                           "the LSTM's cell state: zeros at first, then next_core_state_c"),
            ]
        if self.sampled:
            specs.append(TensorSpec("noise", "float32", (BATCH, self.noise_size),
                                    noise_definition(self.model)))
        return specs

    def _output_specs(self) -> list[TensorSpec]:
        kind = self.actions.kind
        action_doc = {
            "discrete": "the action for env.step, the space's start added",
            "multi_discrete": "the action for env.step, each component's start added",
            "box": "the action for env.step, clipped to the space's bounds",
        }[kind]
        specs = [
            TensorSpec("action", self.action_dtype.name, (BATCH, *self.actions.shape),
                       action_doc + (" (sampled with noise)" if self.sampled
                                     else " (greedy: the most likely action)")),
            TensorSpec("value", "float32", (BATCH,), "the critic's value of the observation"),
            TensorSpec("policy_params", "float32", (BATCH, self.distribution.num_params),
                       "the action distribution's parameters: logits (Discrete, "
                       "MultiDiscrete heads side by side) or a Gaussian's mean then log-std"),
        ]
        if self.recurrent:
            size = self.core_size
            specs += [TensorSpec("next_core_state_h", "float32", (BATCH, size),
                                 "the hidden state to feed back at the next step"),
                      TensorSpec("next_core_state_c", "float32", (BATCH, size),
                                 "the cell state to feed back at the next step")]
        return specs

    # -- the step --------------------------------------------------------------------------

    def forward(self, *inputs: Tensor) -> tuple[Tensor, ...]:
        count = len(self.layout.leaves) if self.layout.packed else 1
        parts, rest = list(inputs[:count]), list(inputs[count:])
        features = self.model.encode(parts).unsqueeze(0)  # [1, B, F]: one time step
        if self.recurrent:
            episode_start, h, c = rest[:3]
            output = self.model.heads(features, episode_start.unsqueeze(0), (h, c))
        else:
            output = self.model.heads(
                features, features.new_zeros(features.shape[:2], dtype=torch.bool))
        params, value = output.policy_params[0], output.values[0]
        noise = rest[-1] if self.sampled else None
        action = self._action(params, noise)
        return (action, value, params, *output.core_state)

    def _action(self, params: Tensor, noise: Tensor | None) -> Tensor:
        """The env-form action from ``params [B, P]`` (and ``noise [B, K]``)."""
        if isinstance(self.distribution, DiagGaussian):
            mean, log_std = self.distribution.mean_and_log_std(params)
            raw = mean if noise is None else mean + log_std.exp() * noise
            raw = raw.reshape(params.shape[0], *self.actions.shape).to(self.low.dtype)
            return torch.minimum(torch.maximum(raw, self.low), self.high)
        scores = params if noise is None else params + noise
        if self.actions.kind == "discrete":
            return scores.argmax(-1) + self.start
        heads = torch.split(scores, list(self.actions.nvec), dim=-1)
        index = torch.stack([head.argmax(-1) for head in heads], dim=-1)
        return (index + self.start).to(torch_dtype(self.action_dtype))

    # -- example inputs and export -----------------------------------------------------------

    def example_inputs(self, batch: int = 2) -> tuple[Tensor, ...]:
        """Zeros of every input's dtype and shape for ``batch`` environments."""
        return tuple(
            torch.zeros([batch if d == BATCH else int(d) for d in spec.shape],
                        dtype=torch.bool if spec.dtype == "bool"
                        else torch_dtype(np.dtype(spec.dtype)))
            for spec in self.inputs)


#: The batch sizes a graph accepts: 1 upwards (export's default lower bound is 2).
MAX_BATCH = 1 << 20


#: loggers of the exporters' own chatter (each pass they run, each torchvision op they
#: skip): errors only while a graph is exported
QUIET_LOGGERS = ("onnx_ir", "onnxscript", "torch.onnx", "torch.export", "torch._export")


@contextlib.contextmanager
def quiet_exporters() -> Iterator[None]:
    """The exporters' info logs and torch internals' warnings about themselves silenced,
    then restored."""
    loggers = [logging.getLogger(name) for name in QUIET_LOGGERS]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            # nn.LSTM sets its weight list while traced: harmless, the weights are exported
            warnings.filterwarnings("ignore", "The tensor attributes .*_flat_weights",
                                    UserWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


def exported_program(graph: PolicyGraph) -> torch.export.ExportedProgram:
    """``graph`` traced by torch.export with a dynamic batch dim shared by every input."""
    batch = torch.export.Dim(BATCH, min=1, max=MAX_BATCH)
    dynamic = tuple({0: batch} for _ in graph.inputs)
    with torch.no_grad(), quiet_exporters():
        return torch.export.export(graph, graph.example_inputs(), dynamic_shapes=(dynamic,))


def export_torch(graph: PolicyGraph, path: str | Path) -> torch.export.ExportedProgram:
    """Write ``graph`` as a torch.export program (``torch.export.load(path).module()``)."""
    program = exported_program(graph)
    with quiet_exporters():
        torch.export.save(program, str(path))
    return program


def export_onnx(graph: PolicyGraph, path: str | Path) -> int:
    """Write ``graph`` as an ONNX model with named inputs and outputs, the dynamic dim
    named ``batch``; returns its opset. Needs the ``export`` extra (onnx, onnxscript:
    ImportError otherwise)."""
    import onnx

    program = exported_program(graph)
    with quiet_exporters():
        onnx_program = torch.onnx.export(
            program, graph.example_inputs(), dynamo=True,
            input_names=[s.name for s in graph.inputs],
            output_names=[s.name for s in graph.outputs], verbose=False)
    proto = onnx_program.model_proto
    symbol = proto.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # the tracer's name
    for value in [*proto.graph.input, *proto.graph.output, *proto.graph.value_info]:
        for dim in value.type.tensor_type.shape.dim:
            if symbol and dim.dim_param == symbol:
                dim.dim_param = BATCH
    onnx.save(proto, str(path))
    return next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))
