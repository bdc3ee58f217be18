"""Replica processes for tests/unit/test_distributed.py: each a gloo rank on 127.0.0.1 that
trains a real Trainer, then saves what it ended with for the parent to compare."""

from __future__ import annotations

import dataclasses
import os
import threading
import time

import gymnasium
import numpy as np
import torch

from learner.training.distributed import ReplicaGroup
from learner.training.models import build_model
from learner.training.store import UnrollQueue, Unrolls
from learner.watching.metrics import Metrics
from seed_rl.config import Config

OBS, ACTIONS = 4, 2  # tests/support/unrolls.py's defaults


def make_config(**overrides) -> Config:
    values = dict(optimizer="adam", learning_rate=1e-2, max_grad_norm=0.5, unroll_length=5,
                  batch_size=4, hidden_sizes=[16], lstm_size=8, max_policy_lag=10**6,
                  replica_wait=0.2)
    values.update(overrides)
    return dataclasses.replace(Config(), **values)


def make_model(config: Config):
    torch.manual_seed(0)
    return build_model(gymnasium.spaces.Box(-1, 1, (OBS,), np.float32),
                       gymnasium.spaces.Discrete(ACTIONS), config)


def _environ(rank: int, world: int, port: int) -> dict[str, str]:
    return {"RANK": str(rank), "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank),
            "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}


def replica(rank: int, world: int, port: int, outdir: str, overrides: dict,
            batches: list[Unrolls], envs: int, target_updates: int) -> None:
    """Train on ``batches`` (this rank's share, queued up front) until ``target_updates``
    updates happened; save weights, optimizer state, counters and the tick count."""
    from learner.training.trainer import Trainer

    torch.set_num_threads(1)
    config = make_config(**overrides)
    group = ReplicaGroup.from_env(torch.device("cpu"), _environ(rank, world, port),
                                  timeout_s=60)
    try:
        model = make_model(config)
        if rank:  # prove the broadcast: other ranks start from different weights
            with torch.no_grad():
                for p in model.parameters():
                    p.add_(1.0)
        group.broadcast_module(model)
        metrics = Metrics(os.path.join(outdir, f"rank{rank}"), tensorboard=False)
        queue = UnrollQueue(capacity=10**6, max_policy_lag=config.max_policy_lag)
        for unrolls in batches:
            queue.put(unrolls)
        trainer = Trainer(model, config, torch.device("cpu"), queue, metrics, group,
                          local_envs=lambda: envs)
        stop = threading.Event()
        thread = threading.Thread(target=trainer.run, args=(stop,))
        started = time.monotonic()
        thread.start()
        while trainer.policy_version < target_updates and time.monotonic() - started < 60:
            time.sleep(0.01)
        stop.set()
        thread.join(60)
        torch.save({"model": trainer.model.state_dict(),
                    "optimizer": trainer.optimizer.state_dict(),
                    "policy_version": trainer.policy_version,
                    "train_steps": metrics.train_steps, "ticks": trainer.ticks,
                    "seconds": time.monotonic() - started},
                   os.path.join(outdir, f"rank{rank}.pt"))
        metrics.close()
    finally:
        group.close()
