"""The published weights (learner/training/weights.py): a reader sees the weights of one
publication, wholly, and the version that goes with them, while the trainer publishes.

The model's every parameter and buffer equals the version it was published with, and its
forward pass answers the smallest and the largest of all of them: a forward pass that read
half-copied weights answers two different numbers, one that read the weights of another
version than it was stamped with answers the wrong one. A publisher thread publishes
versions 1, 2, ... back to back while the real InferenceBatcher (real requests, on an
asyncio loop) and a ``copy_to`` reader read. On CPU the lock orders them (the thread switch
interval is made tiny so a reader lands inside a copy if nothing stops it); on CUDA the
batcher runs on its own CUDA stream and the weights are large, so only the events keep a
forward pass from overlapping a copy (``benchmarks/gpu.sh`` runs these with ``-k cuda``).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import sys
import threading
import time

import numpy as np
import pytest
import torch
from torch import nn

from learner.serving.batcher import InferenceBatcher
from learner.serving.requests import InferenceRequest
from learner.training.models import ModelOutput
from learner.training.policies import Categorical
from learner.training.weights import PublishedWeights

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
#: the batcher on CPU inline on the loop and on its thread; on CUDA on its thread and stream
SERVING = [(device, threaded) for device in DEVICES
           for threaded in ((False, True) if device == "cpu" else (True,))]
#: per device: parameter sizes (CPU: many small ones, so a copy is many Python steps; CUDA:
#: 512 MiB, so a copy and a forward pass take long enough on the GPU to overlap)
SIZES = {"cpu": [256] * 64, "cuda": [16 * 2**20] * 8}
MIN_READS = 40  # each reader reads at least this often while publications go on
MIN_PUBLICATIONS = 200
MAX_SECONDS = 120.0


class VersionModel(nn.Module):
    """Policy parameters (min, max) and value min over every parameter and buffer."""

    distribution = Categorical(2)

    def __init__(self, sizes: list[int]):
        super().__init__()
        self.blocks = nn.ParameterList(nn.Parameter(torch.zeros(n)) for n in sizes)
        self.register_buffer("mark", torch.zeros(4))  # buffers are published too

    def tensors(self) -> list[torch.Tensor]:
        return [*self.blocks, self.mark]

    def low_high(self) -> torch.Tensor:
        tensors = self.tensors()
        return torch.stack([torch.stack([t.min() for t in tensors]).min(),
                            torch.stack([t.max() for t in tensors]).max()])

    def forward(self, observations, episode_start, core_state=()):
        rows = observations.shape[1]
        params = self.low_high().repeat(1, rows, 1)  # [1, rows, 2]
        return ModelOutput(params, params[..., 0], core_state)


def filled(model: VersionModel, value: float) -> VersionModel:
    with torch.no_grad():
        for tensor in model.tensors():
            tensor.fill_(value)
    return model


def a_request(rows: int = 2) -> InferenceRequest:
    return InferenceRequest(
        observations=np.zeros((rows, 1), np.float32), episode_start=np.zeros(rows, bool),
        core_state=(), final_env_indices=np.zeros(0, np.int64),
        final_observations=np.zeros((0, 1), np.float32))


def publish_until(weights: PublishedWeights, source: VersionModel, enough, done,
                  failures: list) -> None:
    """Publish versions 1, 2, ... back to back until ``enough()`` and MIN_PUBLICATIONS."""
    try:
        started = time.monotonic()
        for version in itertools.count(1):
            weights.publish(filled(source, version), version)
            if version >= MIN_PUBLICATIONS and enough():
                return
            if time.monotonic() - started > MAX_SECONDS:
                failures.append(f"the readers read too rarely in {MAX_SECONDS} s")
                return
            time.sleep(0)  # let a reader take the lock between two publications
    except BaseException as error:
        failures.append(error)
    finally:
        done.set()


def copy_until(weights: PublishedWeights, target: VersionModel, done, seen: list,
               failures: list) -> None:
    """Read with ``copy_to`` (on CUDA from a stream of its own) until ``done``."""
    try:
        stream = torch.cuda.Stream(weights.device) if weights.device.type == "cuda" else None
        with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
            while not done.is_set():
                version = weights.copy_to(target)
                seen.append((version, target.low_high().tolist()))
    except BaseException as error:
        failures.append(error)


async def ask_until(batcher: InferenceBatcher, done: threading.Event, seen: list) -> None:
    """Four streams of two environments ask again as soon as they are answered."""

    async def stream() -> None:
        while not done.is_set():
            request = batcher.submit(a_request())
            await asyncio.wait_for(request.waiter, 60)
            assert request.error is None, request.error
            seen.append((request.policy_version, request.policy_params.copy()))

    await asyncio.gather(*(stream() for _ in range(4)))


@pytest.mark.parametrize(("device", "threaded"), SERVING,
                         ids=[f"{d}-{'thread' if t else 'inline'}" for d, t in SERVING])
def test_readers_see_wholly_one_version_while_the_trainer_publishes(device, threaded):
    device = torch.device(device)
    sizes = SIZES[device.type]
    source = VersionModel(sizes).to(device)
    weights = PublishedWeights(source, version=0)
    batcher = InferenceBatcher(weights, device, max_batch=8, max_wait_s=0.001,
                               threaded=threaded)
    served: list = []
    copied: list = []
    failures: list = []
    done = threading.Event()
    publisher = threading.Thread(
        target=publish_until, args=(weights, source, lambda: min(len(served), len(copied))
                                    >= MIN_READS, done, failures))
    copier = threading.Thread(target=copy_until, args=(
        weights, VersionModel(sizes).to(device), done, copied, failures))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)  # CPU: threads interleave inside a copy unless kept out
    batcher.start()
    try:
        copier.start()
        publisher.start()
        asyncio.run(ask_until(batcher, done, served))
        publisher.join(MAX_SECONDS)
        copier.join(MAX_SECONDS)
    finally:
        done.set()
        sys.setswitchinterval(interval)
        batcher.stop()
    assert not failures, failures
    assert not publisher.is_alive() and not copier.is_alive()
    for version, params in served:  # [rows, (min, max)]
        assert (params == float(version)).all(), (version, params.tolist())
    for version, (low, high) in copied:
        assert low == high == float(version), (version, low, high)
    # not vacuous: both readers read often, across many publications
    assert len(served) >= MIN_READS and len(copied) >= MIN_READS
    assert len({v for v, _ in served}) >= 2 and len({v for v, _ in copied}) >= 2
    assert weights.version >= MIN_PUBLICATIONS
    assert weights.copy_to(VersionModel(sizes).to(device)) == weights.version


@pytest.mark.parametrize("device", DEVICES)
def test_the_version_starts_at_the_loaded_one_and_moves_only_with_a_publication(device):
    source = filled(VersionModel([3, 5]), 1.0).to(device)
    weights = PublishedWeights(source, version=56)
    assert weights.version == 56
    with weights.read() as (model, version):
        assert version == 56 and model is not source
        assert not model.training
        assert not any(p.requires_grad for p in model.parameters())
    filled(source, 2.0)  # the trainer's model changes: the published copy does not
    target = VersionModel([3, 5]).to(device)
    assert weights.copy_to(target) == 56
    assert target.low_high().tolist() == [1.0, 1.0]
    weights.publish(source, 57)
    assert weights.copy_to(target) == 57 == weights.version
    assert target.low_high().tolist() == [2.0, 2.0]


@pytest.mark.parametrize("device", DEVICES)
def test_the_digest_changes_with_a_publication_and_equals_for_equal_weights(device):
    one = PublishedWeights(filled(VersionModel([3, 5]), 1.0).to(device))
    other = PublishedWeights(filled(VersionModel([3, 5]), 1.0).to(device), version=9)
    before = one.digest()
    assert len(before) == 16 and before == other.digest()  # the version is not hashed
    one.publish(filled(VersionModel([3, 5]), 2.0).to(device), 1)
    assert one.digest() != before
    one.publish(filled(VersionModel([3, 5]), 1.0).to(device), 2)
    assert one.digest() == before
    changed = filled(VersionModel([3, 5]), 1.0).to(device)
    changed.mark.fill_(0.5)  # a buffer alone
    one.publish(changed, 3)
    assert one.digest() != before
