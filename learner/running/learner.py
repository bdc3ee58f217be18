"""One learner: wires the gRPC server, the batcher, the trainer and the run's state
(resume, metrics, checkpoints, stop criteria, shutdown). learner/running/main.py runs it as
the ``seed-rl learner`` process; ``seed-rl train`` runs one in its own process.
Threads of one learner:

  serving loop   one asyncio event loop running the grpc.aio server
                 (learner/serving/server.py): every actor stream is a coroutine that
                 decodes and checks a message, awaits its actions from the batcher, writes
                 the step to the session's unrolls and answers
  batcher        on the serving loop (learner/serving/batcher.py): one forward pass per
                 batch of waiting requests, inline on CPU, on its own ``inference`` thread
                 and CUDA stream on a GPU
  trainer        B unrolls -> IMPALA update -> new inference weights, policy version + 1
                 (learner/training/trainer.py)
  watchdog       every second, hands the loop the check that ends silent sessions
  evaluator      with --eval-every: greedy episodes (learner/watching/evaluator.py)
  main           metrics, checkpoints, stop criteria, signals

docs/architecture.md draws the whole data path.

A failure of the trainer, of inference or of the evaluator stops the learner with a
non-zero exit code and the traceback in the log. An exception in one stream's handler ends
that stream with a status code; one in a watchdog round or a callback on the serving loop
is logged with its traceback and serving goes on.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import threading
import time
from pathlib import Path

import torch

from learner.running.reachable import unreachable_target
from learner.serving.batcher import InferenceBatcher
from learner.serving.lockstep import FixedActorSet, LockstepBatcher, use_deterministic_kernels
from learner.serving.server import LearnerServer
from learner.serving.service import LearnerServicer
from learner.serving.validation import make_spec
from learner.training import checkpoint
from learner.training.checkpoint import capture_rng, restore_rng
from learner.training.distributed import ReplicaGroup, advertised_address, replica_port_address
from learner.training.models import build_model
from learner.training.store import UnrollQueue
from learner.training.trainer import Trainer
from learner.watching.console import format_return
from learner.watching.metrics import Metrics, start_wandb
from learner.watching.update_log import UpdateLog
from seed_rl.config import Config

log = logging.getLogger("learner")

STOP_TICK_GRACE_S = 5.0  # beyond replica_wait, for the replicas' common stop tick
UPDATE_IN_FLIGHT_S = 2.0  # a broken group: how long the final checkpoint waits for an update


def select_device(name: str) -> torch.device:
    """``--device``: ``auto`` is CUDA where this machine has it, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit(f"--device {name}: CUDA is not available on this machine; use "
                         "--device cpu or auto")
    return device


def set_up_torch(config: Config) -> torch.device:
    """This process's torch as ``config`` says: seeded with ``--seed``, on ``--torch-threads``
    intra-op threads (0 keeps torch's default); returns the ``--device`` to build on."""
    device = select_device(config.device)
    torch.manual_seed(config.seed)
    if config.torch_threads:
        torch.set_num_threads(config.torch_threads)
    return device


class Learner:
    """One learner: serves actors, trains, checkpoints. ``serve_forever`` until stopped.

    A replica of a data-parallel group (``group``, default: torchrun's environment, else a
    single learner; learner/training/distributed.py) serves on ``--address``'s port + its local rank;
    only rank 0 writes to the logdir (config.json, checkpoints, metrics)."""

    def __init__(self, config: Config, group: ReplicaGroup | None = None):
        self.device = set_up_torch(config)
        self.group = group if group is not None else ReplicaGroup.from_env(self.device)
        self.writes = self.group.is_main  # only rank 0 writes to the logdir
        saved_config = config
        if self.group.distributed:
            config = dataclasses.replace(config, address=replica_port_address(
                config.address, self.group.local_rank))
        self.config = config
        self.logdir = Path(config.logdir)
        if self.writes:
            self.logdir.mkdir(parents=True, exist_ok=True)
        self.spec = make_spec(config)
        if self.group.is_main and (unreachable := unreachable_target(
                config, self.spec.max_episode_steps)):
            log.warning("%s", unreachable)
        if config.deterministic:
            use_deterministic_kernels(self.device)

        counters = {"env_steps": 0, "train_steps": 0, "policy_version": 0, "episodes": 0,
                    "recent_returns": []}
        # Every replica resumes from rank 0's checkpoint (broadcast: no shared disk needed).
        found = None
        if config.resume and self.group.is_main:
            found = checkpoint.load_latest(self.logdir, map_location=(
                "cpu" if self.group.distributed else self.device))
        found = self.group.broadcast_object(found)
        self.resumed_from: Path | None = found[1] if found is not None else None
        if found is not None:
            counters.update(found[0]["counters"])
        self.metrics = Metrics(self.logdir, env_steps=int(counters["env_steps"]),
                               train_steps=int(counters["train_steps"]),
                               episodes=int(counters["episodes"]),
                               recent_returns=list(counters["recent_returns"]),
                               wandb_run=start_wandb(config, self.logdir)
                               if config.wandb and self.writes else None,
                               write=self.writes)
        local_batch = config.batch_size // self.group.world_size
        self.queue = UnrollQueue(capacity=config.queue_size * max(local_batch, 1),
                                 max_policy_lag=config.max_policy_lag)
        self.trainer = Trainer(build_model(self.spec.observation_space,
                                           self.spec.action_space, config),
                               config, self.device, self.queue, self.metrics, self.group,
                               local_envs=lambda: self.servicer.session_envs,
                               update_log=UpdateLog(self.logdir)
                               if config.deterministic and self.writes else None)
        if found is not None:
            self.trainer.load(found[0])
            restore_rng(found[0].get("rng", {}))
            log.info("resumed from %s: %d env steps, %d train steps, policy version %d",
                     self.resumed_from, counters["env_steps"], counters["train_steps"],
                     counters["policy_version"])
        if self.group.distributed:
            self.group.broadcast_module(self.trainer.model)
            self.trainer.load({"model": self.trainer.model.state_dict(),
                               "optimizer": self.trainer.optimizer.state_dict(),
                               "counters": {"policy_version": self.trainer.policy_version}})
            torch.manual_seed(torch.initial_seed() + self.group.rank)  # own action samples
        self.fixed_actors: FixedActorSet | None = None
        self.batcher: InferenceBatcher | LockstepBatcher
        if config.deterministic:  # docs/reliability.md, "Deterministic mode"
            self.fixed_actors = FixedActorSet(config.num_actors, config.envs_per_actor,
                                              self.group.rank, self.group.world_size)
            self.batcher = LockstepBatcher(
                self.trainer.weights, self.device, self.fixed_actors, config.seed,
                config.unroll_length, local_batch, on_batch=self.metrics.add_batch,
                training_over=lambda: (self.servicer.stopping.is_set()
                                       or self.stop_requested.is_set()))
        else:
            self.batcher = InferenceBatcher(
                self.trainer.weights, self.device, max_batch=config.max_batch,
                max_wait_s=config.max_wait_ms / 1000.0, on_batch=self.metrics.add_batch,
                connected_envs=lambda: self.servicer.session_envs)
        self.servicer = LearnerServicer(
            config, self.spec, self.batcher, self.queue, self.metrics,
            initial_core_state=lambda k: tuple(
                s.cpu() for s in self.trainer.model.initial_state(k)),
            policy_version=lambda: self.trainer.policy_version,
            fixed_actors=self.fixed_actors)
        self.servicer.group = self.group
        self.servicer.replica_envs = lambda: self.trainer.replica_envs
        self.stop_requested = threading.Event()
        self.stop_reason = ""
        self.failure: BaseException | None = None
        self._trainer = threading.Thread(target=self._train, name="trainer", daemon=True)
        self._watchdog = threading.Thread(target=self._watch_sessions, name="watchdog",
                                          daemon=True)
        self.evaluator = None  # learner.evaluate.PeriodicEvaluator with --eval-every
        self.server: LearnerServer | None = None
        self.port: int = 0
        self._shut_down = False
        self.group_broken = False
        if self.writes:
            saved_config.save(self.logdir / "config.json")

    # -- lifetime ------------------------------------------------------------------------
    def start(self, train: bool = True) -> int:
        """Start serving; returns the bound port. ``train=False`` serves inference and
        fills the unroll queue without training (tests read the queue)."""
        config = self.config
        self.server = LearnerServer(config, self.servicer)
        self.port = self.server.start()
        host = config.address.rsplit(":", 1)[0]
        if self.group.distributed:  # before the trainer ticks on the same control group
            mine = advertised_address(config.advertise_address, self.group.rank,
                                      self.group.local_rank, host, self.port)
            self.servicer.replica_addresses = self.group.all_gather(mine)
            log.info("replica %d of %d: actors are redirected here as %s", self.group.rank,
                     self.group.world_size, mine)
        self.batcher.start()
        if train:
            self._trainer.start()
        self._watchdog.start()
        if config.eval_every > 0 and self.writes:
            from learner.watching.evaluator import PeriodicEvaluator

            self.evaluator = PeriodicEvaluator(self)
            self.evaluator.start()
        self.server.set_serving(True)
        log.info("learner serving %s on %s:%d (device %s, torch threads %d, model %d "
                 "parameters, %s), logdir %s", config.env, host, self.port, self.device,
                 torch.get_num_threads(),
                 sum(p.numel() for p in self.trainer.model.parameters()),
                 f"preset {config.preset}" if config.preset else "no preset", self.logdir)
        return self.port

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self.stop_requested.set()

    def serve_forever(self, on_metrics=None) -> int:
        """Run until a stop criterion, a signal or a failure; returns the exit code."""
        config = self.config
        started = time.monotonic()
        next_log = started + config.log_every
        next_checkpoint = started + config.checkpoint_every
        while not self.stop_requested.wait(timeout=0.2):
            now = time.monotonic()
            if self.batcher.failure is not None:
                self.failure = self.batcher.failure
                self.request_stop(f"inference failed: {self.failure}")
                break
            if now >= next_log:
                next_log = now + config.log_every
                record = self.emit_metrics()
                if on_metrics is not None:
                    on_metrics(record)
            if now >= next_checkpoint:
                next_checkpoint = now + config.checkpoint_every
                # Waits for an update in flight, but not past a stop request: the final
                # checkpoint at shutdown then decides (a stuck collective must not hold it).
                self.save_checkpoint(give_up=self.stop_requested)
            reason = self.stop_criterion(now - started)
            if reason:
                self.request_stop(reason)
        self.shutdown()
        if on_metrics is not None:  # the final record, written by shutdown()
            on_metrics(self.metrics.last_record)
        return 1 if self.failure is not None else 0

    def stop_criterion(self, elapsed: float) -> str:
        config, metrics = self.config, self.metrics
        if self.trainer.finished:  # --deterministic: --total-steps is a number of updates
            return (f"trained {self.trainer.policy_version} updates of "
                    f"{self.trainer.steps_per_update} env steps (--total-steps "
                    f"{config.total_steps}, --deterministic)")
        if config.total_steps and metrics.env_steps >= config.total_steps and \
                not config.deterministic:
            return f"reached {config.total_steps} env steps"
        if config.max_time and elapsed >= config.max_time:
            return f"reached the time limit of {config.max_time:g} s"
        if not math.isnan(config.target_return) and len(metrics.returns) >= min(
                100, metrics.returns.maxlen):
            mean = metrics.return_mean()
            if mean >= config.target_return:
                return (f"mean return {format_return(mean)} of the last "
                        f"{len(metrics.returns)} episodes reached the target "
                        f"{config.target_return:g}")
        return ""

    def shutdown(self) -> None:
        """Tell actors training is over, stop the threads, write the final checkpoint.

        A replica first ends its tick loop (the stop tick every replica takes together,
        learner/training/trainer.py). If that does not finish, because a replica died or hangs (the
        group is *broken*), its actors are not told that training is over: their streams
        end with UNAVAILABLE and they reconnect by themselves when the job is restarted.
        Rank 0 then writes the final checkpoint only if no update is in flight (the state of
        its last completed update; an update whose gradient all-reduce failed was never
        applied), and the process exits without waiting for the stuck collective."""
        if self._shut_down:
            return
        self._shut_down = True
        if self.server is not None:
            self.server.set_serving(False)
        if self.group.distributed and self._trainer.is_alive():
            self._trainer.join(timeout=self.config.replica_wait + STOP_TICK_GRACE_S)
        self.group_broken = self.group.distributed and (
            self._trainer.is_alive() or self.failure is not None)
        if self.group_broken:
            log.error("the replica group is broken (%s); actors are not told that training "
                      "is over: they reconnect when the job restarts",
                      "a collective is stuck" if self._trainer.is_alive()
                      else f"the trainer failed: {self.failure}")
            self.servicer.unavailable.set()
        else:
            self.servicer.stopping.set()
            deadline = time.monotonic() + 3.0  # actors hear "training over" on their next step
            while self.servicer.connected_actors and time.monotonic() < deadline:
                time.sleep(0.05)
        self.queue.close()
        if self._trainer.is_alive() and not self.group.distributed:
            self._trainer.join(timeout=30)
        self.batcher.stop()
        if self.evaluator is not None:
            self.evaluator.stop()
        if self.server is not None:
            self.server.stop(grace=1.0)
        self.emit_metrics()
        self.save_checkpoint(timeout=UPDATE_IN_FLIGHT_S if self.group_broken else None)
        self.metrics.close()
        if self.trainer.update_log is not None:
            self.trainer.update_log.close()
        if not self._trainer.is_alive():  # a stuck collective would hang the group's end
            self.group.close()
        digest = f", weights {self.trainer.weights.digest()}" \
            if self.group.distributed or self.config.deterministic else ""
        log.info("learner stopped (%s): %d env steps, %d train steps, policy version %d%s",
                 self.stop_reason, self.metrics.env_steps, self.metrics.train_steps,
                 self.trainer.policy_version, digest)

    @property
    def stuck(self) -> bool:
        """The trainer thread is still inside a collective of a broken group."""
        return self._trainer.is_alive() and self._shut_down

    # -- background work -----------------------------------------------------------------
    def _train(self) -> None:
        try:
            self.trainer.run(self.stop_requested)
            if self.group.distributed and not self.trainer.finished:  # any replica's stop
                # ends the tick loop of all; a finished one stops on its stop criterion
                self.request_stop("another replica stopped")
        except BaseException as error:
            self.failure = error
            log.exception("the trainer failed; the learner stops")
            self.request_stop(f"trainer failed: {error}")

    def _watch_sessions(self) -> None:
        while not self.stop_requested.wait(timeout=1.0):
            try:
                self.server.call_soon(self.servicer.expire_idle)
            except Exception:
                log.exception("session watchdog error")

    # -- state ---------------------------------------------------------------------------
    def emit_metrics(self) -> dict:
        return self.metrics.emit(
            policy_version=self.trainer.policy_version,
            queue_depth=self.queue.depth,
            dropped_unrolls=self.queue.dropped_stale + self.servicer.dropped_partial_unrolls,
            dropped_stale_unrolls=self.queue.dropped_stale,
            dropped_partial_unrolls=self.servicer.dropped_partial_unrolls,
            connected_actors=self.servicer.connected_actors,
            **({"replica_collective_wait_s": self.group.collective_wait_s()}
               if self.group.distributed else {}),
        )

    def checkpoint_state(self, timeout: float | None = None,
                         give_up: threading.Event | None = None) -> dict | None:
        """What a checkpoint holds: model, optimizer, train steps and policy version of one
        update (the trainer's snapshot), the env counters, the config and the RNG states.
        None when ``timeout`` s pass, or ``give_up`` is set, while an update is in flight."""
        snapshot = self.trainer.snapshot(timeout, give_up)
        if snapshot is None:
            return None
        metrics = self.metrics
        return {
            "model": snapshot["model"],
            "optimizer": snapshot["optimizer"],
            "counters": {"env_steps": metrics.env_steps, "train_steps": snapshot["train_steps"],
                         "policy_version": snapshot["policy_version"],
                         "episodes": metrics.episodes,
                         "recent_returns": [float(r) for r in metrics.returns]},
            "config": json.dumps(self.config.to_json_dict()),
            "rng": capture_rng(),
        }

    def save_checkpoint(self, timeout: float | None = None,
                        give_up: threading.Event | None = None) -> Path | None:
        if not self.writes:  # rank 0 writes the group's checkpoints
            return None
        state = self.checkpoint_state(timeout, give_up)
        if state is None and give_up is not None:
            log.info("periodic checkpoint skipped: stopping while an update is in flight")
            return None
        if state is None:
            log.error("no final checkpoint: an update is stuck in a collective of the broken "
                      "group; the job resumes from the last checkpoint written")
            return None
        try:
            path = checkpoint.save(self.logdir, state)
        except checkpoint.CheckpointError as error:
            log.error("%s", error)
            return None
        log.debug("checkpoint written: %s", path)
        return path
