"""The trainer thread: B unrolls -> one update (learner/training/update.py) -> new weights.

:class:`Trainer` owns everything an update changes: the model and its optimizer, and the
published weights (learner/training/weights.py: the inference copy the batcher and the
evaluator read, and the policy version). Its thread loops: take B unrolls from the queue,
update (``--epochs`` x ``--minibatches`` optimizer steps, :func:`~learner.training.update
.train_batch`), publish the new weights with the next version. Checkpoints read a
:meth:`Trainer.snapshot`, taken between two updates.

Counting: the policy version and ``train_steps`` go up by one per batch whose update made
at least one optimizer step (one publication each, so a checkpoint's ``policy_version``
equals its ``train_steps`` and ``--max-policy-lag`` counts batches whatever E and M);
``optimizer_steps`` in the metrics is the mean number of steps per batch (E x M unless some
were skipped) and ``skipped_updates`` counts skipped optimizer steps. The policy lag of a
batch is measured against the version its update started from (the published weights): its
later steps train weights that were never published, between that version and the next.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from learner.training import observation_norm, popart
from learner.training.distributed import ReplicaGroup
from learner.training.models import ActorCritic
from learner.training.store import UnrollQueue, Unrolls
from learner.training.update import (
    Batch,
    TrainStats,
    build_optimizer,
    learning_rate_at,
    train_batch,
)
from learner.training.weights import PublishedWeights
from learner.watching.metrics import Metrics
from learner.watching.update_log import UpdateLog
from seed_rl.config import Config

log = logging.getLogger(__name__)


class Trainer:
    """Owns the model being trained, its optimizer and the published weights.

    :meth:`run` is the trainer thread: B unrolls -> :func:`train_batch` -> the new weights
    published to ``weights`` (a :class:`~learner.training.weights.PublishedWeights`) with
    policy version + 1. The batcher, the evaluator and the digest read them through
    ``weights`` only: its lock, and on CUDA its events, keep a reader from ever seeing
    half-copied weights or a version that did not produce them.
    """

    def __init__(self, model: ActorCritic, config: Config, device: torch.device,
                 queue: UnrollQueue, metrics: Metrics, group: ReplicaGroup | None = None,
                 local_envs: Callable[[], int] = lambda: 0,
                 update_log: UpdateLog | None = None):
        self.group = group if group is not None else ReplicaGroup()
        if config.batch_size % self.group.world_size:
            raise SystemExit(f"--batch-size {config.batch_size} must be a multiple of the "
                             f"{self.group.world_size} replicas (each takes an equal share)")
        self.local_batch = config.batch_size // self.group.world_size
        self.local_envs = local_envs  # environments streaming to this replica
        self.replica_envs = [0] * self.group.world_size  # every replica's, from the last tick
        self.ticks = 0
        self.config = config
        self.device = device
        self.queue = queue
        self.metrics = metrics
        self.model = model.to(device)
        self.optimizer = build_optimizer(self.model, config)
        self.group_env_steps = metrics.env_steps  # the group's, agreed at each tick
        metrics.shared = self.group.distributed
        self.weights = PublishedWeights(self.model, version=0)  # the inference copy
        self._update_lock = threading.Lock()  # an update, or a snapshot between two
        # Deterministic mode (--deterministic): each update's record, the learning rate's
        # clock in trained env steps, and --total-steps as an exact number of updates.
        self.update_log = update_log
        self.deterministic = config.deterministic
        self.steps_per_update = config.batch_size * config.unroll_length
        self.last_update = (max(1, config.total_steps // self.steps_per_update)
                            if config.deterministic and config.total_steps else 0)
        self.finished = False  # trained last_update updates

    def load(self, state: dict[str, Any]) -> None:
        """Restore a checkpoint's model, optimizer and policy version (before serving). A
        checkpoint trained with(out) ``--popart`` loads into a model without (with) it, its
        values unchanged (:func:`~learner.training.popart.adapt_state_dict`)."""
        with self._update_lock:
            model_state = popart.adapt_state_dict(state["model"], self.model.popart is not None)
            self.model.load_state_dict(observation_norm.adapt_state_dict(model_state,
                                                                         self.model))
            self.optimizer.load_state_dict(state["optimizer"])
            self.weights.publish(self.model, int(state["counters"]["policy_version"]))

    @property
    def policy_version(self) -> int:
        """The version of the published weights (updates published so far, resumed ones
        included); it changes only with a publication."""
        return self.weights.version

    def run(self, stop: threading.Event) -> None:
        """Update on every B fresh unrolls until ``stop`` is set or ``last_update`` updates
        are published (a replica: until any replica's ``stop`` is set, see :meth:`tick`)."""
        if self.group.distributed:
            until = stop if self.deterministic else None
            while not self.tick(stop.is_set(), until) and not self._trained_enough():
                pass
            return
        while not stop.is_set() and not self._trained_enough():
            unrolls = self.queue.get(self.config.batch_size, self.policy_version, timeout=0.5)
            if unrolls is not None:
                self.update(unrolls)

    def _trained_enough(self) -> bool:
        """Whether ``--total-steps`` is trained: ``last_update`` updates published (every
        replica reaches it at the same version); sets ``finished``."""
        if self.last_update and self.policy_version >= self.last_update:
            self.finished = True
        return self.finished

    def tick(self, stop: bool, until: threading.Event | None = None) -> bool:
        """One lock-step tick of a replica (learner/training/distributed.py): wait at most
        ``replica_wait`` s for a full local batch (no wait without environments: one cannot
        come; deterministic mode: as long as it takes, until ``until`` is set), exchange
        the tick records, update together if any replica had a batch.
        Returns True when any replica asked to stop (all see it in the same tick)."""
        wait = self.config.replica_wait if self.local_envs() > 0 else 0.05
        unrolls = None
        while unrolls is None and not stop:
            unrolls = self.queue.get(self.local_batch, self.policy_version, timeout=wait)
            if until is None or until.is_set():
                break
        stop = stop or (until is not None and until.is_set())
        steps, episodes, returns, lengths = self.metrics.take_unshared()
        records = self.group.all_gather({
            "batch": unrolls is not None, "stop": stop, "envs": self.local_envs(),
            "steps": steps, "episodes": episodes, "returns": returns, "lengths": lengths})
        self.ticks += 1
        self.replica_envs = [int(r["envs"]) for r in records]
        others = [r for i, r in enumerate(records) if i != self.group.rank]
        self.metrics.add_shared(sum(r["steps"] for r in others),
                                sum(r["episodes"] for r in others),
                                [x for r in others for x in r["returns"]],
                                [x for r in others for x in r["lengths"]])
        self.group_env_steps += sum(r["steps"] for r in records)
        if any(r["batch"] for r in records):
            sizes = [self.local_batch if r["batch"] else 0 for r in records]
            self.update(unrolls, env_steps=self.group_env_steps, sizes=sizes)
        return any(r["stop"] for r in records)

    def update(self, unrolls: Unrolls | None, env_steps: int | None = None,
               sizes: list[int] | None = None) -> TrainStats:
        """One update on ``unrolls`` [T+1, B] (E x M optimizer steps); publishes the new
        weights. A replica passes None when it had no batch this tick, the group's
        ``env_steps`` and every replica's number of unrolls (``sizes``)."""
        started = time.perf_counter()
        batch = Batch.from_unrolls(unrolls, self.device) if unrolls is not None else None
        with self._update_lock:
            if self.deterministic:  # the env steps trained, not those served by now
                env_steps = self.policy_version * self.steps_per_update
            learning_rate = learning_rate_at(
                self.metrics.env_steps if env_steps is None else env_steps, self.config)
            trained = self.policy_version  # the published weights the update starts from
            stats = train_batch(self.model, self.optimizer, batch, self.config, learning_rate,
                                self.group, sizes=sizes, version=trained)
            if stats.skipped_steps:
                self.metrics.skipped_updates += stats.skipped_steps
                log.warning("skipped an update: non-finite loss %.3g or gradient norm %.3g "
                            "in %d of the batch's %d optimizer steps (%d skipped so far)",
                            stats.loss_total, stats.grad_norm, stats.skipped_steps,
                            stats.skipped_steps + stats.optimizer_steps,
                            self.metrics.skipped_updates)
            if not stats.skipped:
                self.weights.publish(self.model, trained + 1)
                if unrolls is None:
                    self.metrics.add_train_step()
                    self.metrics.add_time("train", time.perf_counter() - started)
                    return stats
                acted = unrolls.policy_versions[:-1]  # the versions that chose a_0..a_{T-1}
                logged = {k: v for k, v in vars(stats).items() if k != "skipped_steps"}
                if self.model.popart is not None:
                    logged["popart_mu"] = float(self.model.popart.mu[0])
                    logged["popart_sigma"] = float(self.model.popart.sigma[0])
                self.metrics.add_train(logged, trained - float(acted.mean()),
                                       trained - int(acted.min()))
                if self.update_log is not None:
                    self.update_log.write({
                        "policy_version": trained + 1,
                        "trained_env_steps": (trained + 1) * self.steps_per_update,
                        "policy_lag_mean": trained - float(acted.mean()),
                        "policy_lag_max": trained - int(acted.min()),
                        "weights": self.weights.digest(), **logged})
        self.metrics.add_time("train", time.perf_counter() - started)
        return stats

    def snapshot(self, timeout: float | None = None,
                 give_up: threading.Event | None = None) -> dict[str, Any] | None:
        """CPU copies of the model and optimizer state and the train steps and policy version,
        all of one and the same update (taken between two updates); None when ``timeout``
        seconds pass while an update is in flight, or once ``give_up`` is set (an update
        stuck in a collective of a broken replica group must not hold a stop)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._update_lock.acquire(timeout=0.2 if deadline is None else max(
                0.0, min(0.2, deadline - time.monotonic()))):
            if (give_up is not None and give_up.is_set()) or (
                    deadline is not None and time.monotonic() >= deadline):
                return None
        try:
            return {
                "model": {k: v.detach().to("cpu", copy=True)
                          for k, v in self.model.state_dict().items()},
                "optimizer": _cpu_copy(self.optimizer.state_dict()),
                "train_steps": self.metrics.train_steps,
                "policy_version": self.policy_version,
            }
        finally:
            self._update_lock.release()


def _cpu_copy(value: Any) -> Any:
    """``value`` (nested dicts, lists, tuples) with every tensor copied to the CPU."""
    if isinstance(value, Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        return {k: _cpu_copy(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value
