"""Learner metrics: counters fed from many threads, written as JSON lines and TensorBoard.

``LOGDIR/metrics.jsonl`` gets one object per ``log_every`` seconds; ``LOGDIR/tb/`` the same
scalars for TensorBoard, and, with ``--wandb``, Weights & Biases too (same names, the env
steps as the step). Names are stable (tests and ``seed-rl train`` read them).
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
import uuid
from collections import deque
from pathlib import Path
from typing import Any

RETURN_WINDOW = 100

log = logging.getLogger(__name__)


class Metrics:
    def __init__(self, logdir: str | Path, *, tensorboard: bool = True,
                 env_steps: int = 0, train_steps: int = 0, episodes: int = 0,
                 recent_returns: list[float] | None = None, wandb_run: Any = None,
                 write: bool = True):
        """``write=False`` (a replica other than rank 0) keeps the counters and builds the
        records but writes nothing."""
        self.logdir = Path(logdir)
        if write:
            self.logdir.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.start_time = time.time()
        self.env_steps = env_steps
        self.train_steps = train_steps
        self.episodes = episodes
        self.returns: deque[float] = deque(recent_returns or [], maxlen=RETURN_WINDOW)
        self.lengths: deque[int] = deque(maxlen=RETURN_WINDOW)
        # what the actors say their episodes returned (StepRequest.episodes): their figure,
        # shown beside the learner's own, never used for a stop
        self.reported_returns: deque[float] = deque(maxlen=RETURN_WINDOW)
        self.best_return_mean = -math.inf
        self.skipped_updates = 0
        self.shared = False  # a replica: counts what it has not yet shared with the others
        self._unshared: list = [0, 0, [], []]  # steps, episodes, returns, lengths
        self.dropped_unrolls_restart = 0  # partial unrolls of ended sessions
        self._batch_envs: list[int] = []
        self._batch_waits: list[float] = []
        self._lags: list[float] = []
        self._lag_max = math.nan  # largest policy lag of any step trained in this window
        self._train: dict[str, list[float]] = {}
        self._eval: dict[str, float] = {}
        self._timers: dict[str, list[float]] = {}
        self._last_emit_time = time.time()
        self.write_failures: dict[str, int] = {}  # by target: a full disk must not stop us
        self._last_emit_steps = env_steps
        self.last_record: dict[str, Any] = {}
        self._jsonl = open(self.logdir / "metrics.jsonl", "a", buffering=1) \
            if write else None  # noqa: SIM115
        self._wandb = wandb_run  # a wandb Run (start_wandb) or None
        self._writer = None
        if tensorboard and write:
            from torch.utils.tensorboard import SummaryWriter

            self._writer = SummaryWriter(str(self.logdir / "tb"), purge_step=env_steps or None)

    # -- fed by the serving and training threads -----------------------------------------
    def add_env_steps(self, steps: int, episode_returns: list[float],
                      episode_lengths: list[int], handling_s: float | None = None,
                      reported_returns: list[float] = ()) -> None:
        """One actor message: its transitions, the episodes they finished as the learner
        saw them (learner/serving/session.py, EpisodeTally), and, from the service, the
        seconds its handling took (not counting inference) and the returns the actor
        reported for its finished episodes."""
        with self._lock:
            self.reported_returns.extend(reported_returns)
            if handling_s is not None:
                self._timers.setdefault("step_handling", []).append(handling_s)
            if self.shared:
                self._unshared[0] += steps
                self._unshared[1] += len(episode_returns)
                self._unshared[2].extend(episode_returns)
                self._unshared[3].extend(episode_lengths)
            self.env_steps += steps
            self.episodes += len(episode_returns)
            self.returns.extend(episode_returns)
            self.lengths.extend(episode_lengths)

    def take_unshared(self) -> tuple[int, int, list[float], list[int]]:
        """Env steps, episodes, returns and lengths of this replica's actors since the last
        call (a replica shares them with the others at every tick)."""
        with self._lock:
            taken = tuple(self._unshared)
            self._unshared = [0, 0, [], []]
            return taken  # type: ignore[return-value]

    def add_shared(self, steps: int, episodes: int, returns: list[float],
                   lengths: list[int]) -> None:
        """The other replicas' env steps and episodes: the counters become the group's."""
        with self._lock:
            self.env_steps += steps
            self.episodes += episodes
            self.returns.extend(returns)
            self.lengths.extend(lengths)

    def add_train_step(self) -> None:
        """An update this replica took part in without a batch of its own (no stats)."""
        with self._lock:
            self.train_steps += 1

    def add_batch(self, envs: int, waited_s: float, inference_s: float) -> None:
        with self._lock:
            self._batch_envs.append(envs)
            self._batch_waits.append(waited_s)
            self._timers.setdefault("inference", []).append(inference_s)

    def add_train(self, stats: dict[str, float], policy_lag: float,
                  policy_lag_max: float | None = None) -> None:
        """One update: its stats, the mean policy lag of its steps and the largest one
        (policy versions between the one that acted and the one trained)."""
        with self._lock:
            self.train_steps += 1
            self._lags.append(policy_lag)
            largest = policy_lag if policy_lag_max is None else policy_lag_max
            if not largest <= self._lag_max:  # also when nothing was trained yet (nan)
                self._lag_max = largest
            for key, value in stats.items():
                self._train.setdefault(key, []).append(value)

    def add_time(self, name: str, seconds: float) -> None:
        """Time one piece of learner work took (for "where the learner's time goes")."""
        with self._lock:
            self._timers.setdefault(name, []).append(seconds)

    def add_eval(self, stats: dict[str, float]) -> None:
        with self._lock:
            self._eval.update(stats)

    # -- read by the main loop -----------------------------------------------------------
    def return_mean(self) -> float:
        with self._lock:
            return sum(self.returns) / len(self.returns) if self.returns else math.nan

    def emit(self, **extra: Any) -> dict[str, Any]:
        """Write one record (window since the last emit) and return it."""
        now = time.time()
        with self._lock:
            elapsed = max(now - self._last_emit_time, 1e-9)
            sps = (self.env_steps - self._last_emit_steps) / elapsed
            record: dict[str, Any] = {
                "wall_time": now,
                "run_started": self.start_time,  # one value per learner run (resumes differ)
                "elapsed": now - self.start_time,
                "env_steps": self.env_steps,
                "train_steps": self.train_steps,
                "sps": sps,
                "episodes": self.episodes,
                "episode_return_mean": _mean(self.returns),
                "episode_length_mean": _mean(self.lengths),
                "actor_reported_return_mean": _mean(self.reported_returns),
                "batch_size_mean": _mean(self._batch_envs),
                "batch_wait_ms_mean": 1000 * _mean(self._batch_waits),
                "inference_batches": len(self._batch_envs),
                "policy_lag_mean": _mean(self._lags),
                "policy_lag_max": self._lag_max,
                "skipped_updates": self.skipped_updates,
            }
            for key, values in self._train.items():
                record[key] = _mean(values)
            record.update({f"eval/{k}": v for k, v in self._eval.items()})
            for name, times in self._timers.items():
                # mean duration, and the share of wall time spent on it in this window
                record[f"time/{name}_ms"] = 1000 * _mean(times)
                record[f"time/{name}_busy"] = sum(times) / elapsed
            record.update(extra)
            self._batch_envs, self._batch_waits, self._lags, self._train = [], [], [], {}
            self._lag_max = math.nan
            self._eval, self._timers = {}, {}
            self._last_emit_time, self._last_emit_steps = now, self.env_steps
            if not math.isnan(record["episode_return_mean"]) and len(self.returns) > 0:
                self.best_return_mean = max(self.best_return_mean,
                                            record["episode_return_mean"])
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                 for k, v in record.items()}
        try:
            if self._jsonl is not None:
                self._jsonl.write(json.dumps(clean) + "\n")
        except OSError as error:
            self._write_failed("metrics.jsonl", error)
        step = record["env_steps"]
        scalars = {key if "/" in key else f"learner/{key}": value
                   for key, value in record.items()
                   if key not in ("wall_time", "run_started", "env_steps")
                   and isinstance(value, (int, float)) and math.isfinite(value)}
        if self._wandb is not None:
            try:
                self._wandb.log(scalars, step=step)
            except Exception as error:  # an outage of W&B must not stop training
                self._wandb = None
                log.error("Weights & Biases logging failed (%s: %s); it is off for the rest "
                          "of the run, metrics.jsonl and TensorBoard go on",
                          type(error).__name__, error)
        if self._writer is not None:
            try:
                for key, value in scalars.items():
                    self._writer.add_scalar(key, value, step)
                self._writer.flush()
            except OSError as error:  # its writer thread died; TensorBoard logging stops
                self._writer = None
                self._write_failed("TensorBoard (tb/, off for the rest of the run)", error)
        self.last_record = record
        return record

    def _write_failed(self, what: str, error: OSError) -> None:
        """A full disk must not stop training: say so (once per target and 1000 failures),
        carry on without that record."""
        count = self.write_failures[what] = self.write_failures.get(what, 0) + 1
        if count % 1000 == 1:
            log.error("cannot write %s in %s (%s; %d failure(s)); the learner goes on "
                      "without it: free some disk space", what, self.logdir, error, count)

    def close(self) -> None:
        if self._wandb is not None:
            self._wandb.finish()
            self._wandb = None
        for target in (self._jsonl, self._writer):
            try:
                if target is not None:
                    target.close()
            except OSError as error:
                self._write_failed("the last metrics", error)


def _mean(values) -> float:
    return sum(values) / len(values) if values else math.nan


def start_wandb(config: Any, logdir: Path) -> Any:
    """A Weights & Biases run for this logdir (``--wandb``), holding the config (secrets
    redacted); a resumed logdir continues the same run (its id is kept in
    ``LOGDIR/wandb_run_id``). SystemExit says what to install when wandb is missing."""
    try:
        import wandb
    except ImportError:
        raise SystemExit("--wandb needs the wandb package: pip install 'seed-rl[wandb]' (or "
                         "drop --wandb)") from None
    id_file = Path(logdir) / "wandb_run_id"
    run_id = id_file.read_text().strip() if id_file.is_file() else uuid.uuid4().hex[:12]
    run = wandb.init(project=config.wandb_project, entity=config.wandb_entity or None,
                     name=config.wandb_run_name or Path(logdir).name, id=run_id,
                     resume="allow", dir=str(logdir), config=config.to_json_dict(),
                     mode=config.wandb_mode or None,
                     settings=wandb.Settings(console="off"))  # our console stays ours
    id_file.write_text(run_id + "\n")
    return run
