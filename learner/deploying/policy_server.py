"""The learner's serving path with training off: :class:`PolicyServer`, what ``seed-rl serve``
runs (learner/deploying/serve.py is the command).

The same parts as a training learner (learner/running/learner.py) for the actors' side: the
grpc.aio server with its health service, token and TLS (learner/serving/server.py), the
servicer (learner/serving/service.py) with its handshake checks, limits and idle
watchdog, the inference batcher reading :class:`~learner.training.weights.PublishedWeights`.
What is not there: no trainer, no unroll queue (the servicer gets no recorder: no step
outlives its answer), no checkpoint written. The weights are a checkpoint's, and actors
are told its policy version; with ``--follow`` a newer checkpoint of a running job replaces
them (learner/deploying/follow.py). Episode returns and lengths go to the metrics as a run's
do (console, ``metrics.jsonl``, TensorBoard under ``--logdir``), and to the tally of
``--episodes`` (learner/deploying/episodes.py).

Threads: the serving loop and the batcher on it (inline forward passes on CPU, an
``inference`` thread on CUDA), ``watchdog`` (idle actors), ``follow`` (with --follow) and
main (metrics, stop criteria, signals). A failure of inference or of the follower stops it
with exit code 1.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import threading
import time
from pathlib import Path

from learner.deploying.episodes import ReturnSummary, ServeMetrics
from learner.deploying.follow import CheckpointFollower, Served
from learner.running.learner import set_up_torch
from learner.serving.batcher import InferenceBatcher
from learner.serving.server import LearnerServer
from learner.serving.service import LearnerServicer
from learner.serving.validation import make_spec
from learner.training.models import build_model
from learner.training.weights import PublishedWeights
from seed_rl.config import Config

log = logging.getLogger("serve")

ACTORS_TOLD_S = 3.0  # at a stop: how long connected actors get to hear "it is over"


class PolicyServer:
    """Serves ``served``'s policy to actors until :meth:`serve_forever` stops.

    ``config`` is the checkpoint's training config with serve's own serving knobs on top
    (learner/deploying/serve.py makes it); ``episodes`` > 0 stops after that many episodes;
    ``follow`` is the run whose newer checkpoints replace the served one."""

    def __init__(self, config: Config, served: Served, *, greedy: bool = False,
                 episodes: int = 0, follow: Path | None = None):
        self.config = config
        self.device = set_up_torch(config)
        self.logdir = Path(config.logdir)
        self.logdir.mkdir(parents=True, exist_ok=True)
        self.spec = dataclasses.replace(make_spec(config), source=f"checkpoint {served.path}")
        self.model = build_model(self.spec.observation_space, self.spec.action_space, config)
        try:
            self.model.load_state_dict(served.model)
        except RuntimeError as error:
            raise SystemExit(f"checkpoint {served.path}: its weights do not fit the model its "
                             f"config describes ({str(error).splitlines()[0]})") from None
        self.model.to(self.device).eval()
        self.served = served
        self.greedy = greedy
        self.weights = PublishedWeights(self.model, version=served.policy_version)
        self.tally = ReturnSummary(limit=episodes)
        self.metrics = ServeMetrics(self.logdir, self.tally, train_steps=served.train_steps)
        self.batcher = InferenceBatcher(
            self.weights, self.device, max_batch=config.max_batch,
            max_wait_s=config.max_wait_ms / 1000.0, on_batch=self.metrics.add_batch,
            connected_envs=lambda: self.servicer.session_envs)
        self.servicer = LearnerServicer(
            config, self.spec, self.batcher, None, self.metrics,
            initial_core_state=lambda k: self.model.initial_state(k),
            policy_version=lambda: self.weights.version, greedy=greedy)
        self.follower = None if follow is None else CheckpointFollower(
            follow, served, self.weights, copy.deepcopy(self.model), self.device,
            config.follow_every, on_new=self._now_serving, on_failure=self._follower_failed)
        self.stop_requested = threading.Event()
        self.stop_reason = ""
        self.failure: BaseException | None = None
        self.server: LearnerServer | None = None
        self.port = 0
        self._watchdog = threading.Thread(target=self._watch_sessions, name="watchdog",
                                          daemon=True)
        self._shut_down = False
        config.save(self.logdir / "config.json")

    def start(self) -> int:
        """Start serving; returns the bound port (health SERVING from here on)."""
        self.server = LearnerServer(self.config, self.servicer)
        self.port = self.server.start()
        self.batcher.start()
        self._watchdog.start()
        if self.follower is not None:
            self.follower.start()
        self.server.set_serving(True)
        host = self.config.address.rsplit(":", 1)[0]
        log.info("serve answering %s actors on %s:%d from %s (%s actions, device %s, no "
                 "training), logdir %s", self.config.env, host, self.port,
                 self.served.describe(), "greedy" if self.greedy else "sampled", self.device,
                 self.logdir)
        return self.port

    def request_stop(self, reason: str) -> None:
        if not self.stop_requested.is_set():
            self.stop_reason = reason
            log.info("stopping: %s", reason)
            self.stop_requested.set()

    def serve_forever(self, on_metrics=None) -> int:
        """Serve until a stop criterion, a signal or a failure; the exit code (1: failure)."""
        started = time.monotonic()
        next_log = started + self.config.log_every
        while not self.stop_requested.wait(timeout=0.2):
            now = time.monotonic()
            if self.batcher.failure is not None:
                self.failure = self.batcher.failure
                self.request_stop("the inference batcher failed")
                break
            if now >= next_log:
                next_log = now + self.config.log_every
                record = self.emit_metrics()
                if on_metrics is not None:
                    on_metrics(record)
            reason = self.stop_criterion(now - started)
            if reason:
                self.request_stop(reason)
        self.shutdown()
        if on_metrics is not None:
            on_metrics(self.metrics.last_record)
        return 1 if self.failure is not None else 0

    def stop_criterion(self, elapsed: float) -> str:
        config = self.config
        if self.tally.reached.is_set():
            return f"served {self.tally.limit} episodes"
        if config.total_steps and self.metrics.env_steps >= config.total_steps:
            return f"reached {config.total_steps} env steps"
        if config.max_time and elapsed >= config.max_time:
            return f"reached the time limit of {config.max_time:g} s"
        return ""

    def shutdown(self) -> None:
        """Health NOT_SERVING, tell the actors it is over (``training_over``, as a learner
        does), stop the threads and the server, write the last metrics."""
        if self._shut_down:
            return
        self._shut_down = True
        self.stop_requested.set()
        if self.server is not None:
            self.server.set_serving(False)
        self.servicer.stopping.set()
        deadline = time.monotonic() + ACTORS_TOLD_S  # actors hear it on their next step
        while self.servicer.connected_actors and time.monotonic() < deadline:
            time.sleep(0.05)
        if self.follower is not None:
            self.follower.stop()
        self.batcher.stop()
        if self.server is not None:
            self.server.stop(grace=1.0)
        self.emit_metrics()
        self.metrics.close()
        log.info("serve stopped (%s): %d env steps, %d episodes, policy version %d",
                 self.stop_reason, self.metrics.env_steps, self.metrics.episodes,
                 self.weights.version)

    def emit_metrics(self) -> dict:
        return self.metrics.emit(policy_version=self.weights.version,
                                 connected_actors=self.servicer.connected_actors,
                                 served_episodes=self.tally.count)

    # -- background work -----------------------------------------------------------------
    def _now_serving(self, served: Served) -> None:
        self.served = served
        self.metrics.train_steps = served.train_steps  # of the policy served

    def _follower_failed(self, error: BaseException) -> None:
        self.failure = error
        self.request_stop(f"the checkpoint follower failed: {error}")

    def _watch_sessions(self) -> None:
        while not self.stop_requested.wait(timeout=1.0):
            try:
                self.server.call_soon(self.servicer.expire_idle)
            except Exception:
                log.exception("session watchdog error")
