"""The published weights: the one inference copy of the model, its lock, its version.

The trainer updates its own model and then *publishes* it: the weights are copied into the
inference copy that the batcher's forward passes, the periodic evaluator and the replicas'
weights digest read. :class:`PublishedWeights` is the only owner of that copy and of the
policy version that goes with it, so every reader sees the weights of one and the same
update and the version that produced them.

A lock alone is enough where operations run when they are called (CPU). On CUDA a forward
pass is only *queued* while the lock is held: the batcher runs it on its own CUDA stream
(learner/serving/batcher.py) and the trainer copies on the default stream, and nothing
orders two streams but events. So, under the lock:

- :meth:`PublishedWeights.publish` first makes the copying stream wait for every reader
  stream's last "read done" event (a forward pass still queued keeps reading the old
  weights until it has run), then copies, then records the "published" event;
- :meth:`PublishedWeights.read` makes the reader's current stream wait for the "published"
  event (no kernel of the reader starts before the copy has ended), and on leaving records
  that stream's "read done" event (one per reader stream) before the lock is released.

The CPU path is the same code without the events.
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from learner.training.models import ActorCritic


class PublishedWeights:
    """The inference copy of a model (a deep copy, in eval mode, without gradients), the
    lock that guards it, the policy version of its weights and, on CUDA, the events that
    order the publishing stream and the reading streams (module docstring)."""

    def __init__(self, model: ActorCritic | nn.Module, version: int = 0):
        self._model = copy.deepcopy(model).eval()
        for parameter in self._model.parameters():
            parameter.requires_grad_(False)
        tensors = itertools.chain(self._model.parameters(), self._model.buffers())
        first = next(tensors, None)
        self.device = first.device if first is not None else torch.device("cpu")
        self._cuda = self.device.type == "cuda"
        self._lock = threading.Lock()
        self._version = version
        self._published: torch.cuda.Event | None = None  # recorded by the last copy
        self._reads_done: dict[torch.cuda.Stream, torch.cuda.Event] = {}  # per reader stream
        self._subscribers: list[Callable[[nn.Module, int], None]] = []
        if self._cuda:  # the deep copy above is a copy too: readers on other streams wait
            self._published = torch.cuda.Event()
            self._published.record(torch.cuda.current_stream(self.device))

    @property
    def version(self) -> int:
        """The policy version of the published weights (an int: read without the lock)."""
        return self._version

    @property
    def distribution(self):
        """The model's action distribution: structure, not weights, so no lock is needed."""
        return self._model.distribution

    def publish(self, model: nn.Module, version: int) -> None:
        """Copy ``model``'s parameters and buffers into the inference copy and make
        ``version`` theirs; on CUDA the copy waits for the forward passes queued on the old
        weights, and readers wait for the copy."""
        with self._lock:
            stream = torch.cuda.current_stream(self.device) if self._cuda else None
            if stream is not None:
                for read_done in self._reads_done.values():
                    stream.wait_event(read_done)
            with torch.no_grad():
                self._model.load_state_dict(model.state_dict())
            if stream is not None:
                self._published.record(stream)
            self._version = version
            for subscriber in self._subscribers:
                subscriber(self._model, version)

    def subscribe(self, subscriber: Callable[[nn.Module, int], None]) -> None:
        """Call ``subscriber(model, version)`` with every publication, under the lock, right
        after the copy (on the trainer's thread): a reader that must see one particular
        version (deterministic mode) keeps its own copy before the next one replaces it."""
        with self._lock:
            self._subscribers.append(subscriber)

    @contextmanager
    def read(self) -> Iterator[tuple[nn.Module, int]]:
        """``with weights.read() as (model, version):`` the inference copy and its version,
        under the lock. Work queued on the caller's current CUDA stream inside the block
        runs after the last publication's copy and before the next one's."""
        with self._lock:
            stream = torch.cuda.current_stream(self.device) if self._cuda else None
            if stream is not None:
                stream.wait_event(self._published)
            try:
                yield self._model, self._version
            finally:
                if stream is not None:
                    read_done = self._reads_done.get(stream)
                    if read_done is None:
                        read_done = self._reads_done[stream] = torch.cuda.Event()
                    read_done.record(stream)

    def copy_to(self, target: nn.Module) -> int:
        """Copy the published parameters and buffers into ``target`` (same architecture,
        e.g. the evaluator's own model); returns their policy version."""
        with self.read() as (model, version), torch.no_grad():
            target.load_state_dict(model.state_dict())
        return version

    def clone(self) -> nn.Module:
        """A deep copy of the inference copy (e.g. a reader's own model), read like any."""
        with self.read() as (model, _):
            return copy.deepcopy(model)

    def digest(self) -> str:
        """A short hash of the published weights (replicas compare theirs in the log)."""
        digest = hashlib.sha256()
        with self.read() as (model, _):
            for name, tensor in model.state_dict().items():
                digest.update(name.encode())
                digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]
