"""The episodes ``seed-rl serve`` answered: counted for ``--episodes N`` and its summary.

The servicer counts each finished episode's return and length from the rewards and episode
ends it received (learner/serving/session.py, ``EpisodeTally``) and hands them to the
metrics, as a training learner's does. :class:`ServeMetrics` is those metrics
(``metrics.jsonl``, TensorBoard, the console: the window of the last 100 episodes) plus a
:class:`ReturnSummary` of every episode since
the start, up to ``--episodes`` (the first N: episodes that finish with or after the N-th,
in the same message or another actor's, are not counted), for the summary printed at the
end: count, mean, std (population, as ``seed-rl eval``), min and max return, mean length.
"""

from __future__ import annotations

import math
import threading
from pathlib import Path
from typing import Any

from learner.watching.metrics import Metrics


class ReturnSummary:
    """Running statistics of episode returns and lengths, the first ``limit`` (0: all)."""

    def __init__(self, limit: int = 0):
        self.limit = limit
        self._lock = threading.Lock()
        self.count = 0
        self._sum = 0.0
        self._sum_squares = 0.0
        self._length_sum = 0
        self.low = math.inf
        self.high = -math.inf
        self.reached = threading.Event()  # set once ``limit`` episodes are counted

    def add(self, returns: list[float], lengths: list[int]) -> None:
        """Count the episodes of one message (in order), as far as the limit allows."""
        with self._lock:
            room = len(returns) if not self.limit else max(self.limit - self.count, 0)
            for value, length in zip(returns[:room], lengths[:room], strict=True):
                value = float(value)
                self.count += 1
                self._sum += value
                self._sum_squares += value * value
                self._length_sum += int(length)
                self.low = min(self.low, value)
                self.high = max(self.high, value)
            if self.limit and self.count >= self.limit:
                self.reached.set()

    def summary(self) -> dict[str, float]:
        """Count, mean, std (population), min, max return and mean length (nan: none)."""
        with self._lock:
            n = self.count
            if n == 0:
                return {"episodes": 0, "episode_return_mean": math.nan,
                        "episode_return_std": math.nan, "episode_return_min": math.nan,
                        "episode_return_max": math.nan, "episode_length_mean": math.nan}
            mean = self._sum / n
            variance = max(self._sum_squares / n - mean * mean, 0.0)
            return {"episodes": n, "episode_return_mean": mean,
                    "episode_return_std": math.sqrt(variance), "episode_return_min": self.low,
                    "episode_return_max": self.high, "episode_length_mean": self._length_sum / n}


class ServeMetrics(Metrics):
    """A run's metrics (learner/watching/metrics.py) that also feed a :class:`ReturnSummary`."""

    def __init__(self, logdir: str | Path, tally: ReturnSummary, **kwargs: Any):
        super().__init__(logdir, **kwargs)
        self.tally = tally

    def add_env_steps(self, steps: int, episode_returns: list[float],
                      episode_lengths: list[int], handling_s: float | None = None,
                      reported_returns: list[float] = ()) -> None:
        super().add_env_steps(steps, episode_returns, episode_lengths, handling_s,
                              reported_returns)
        if episode_returns:
            self.tally.add(list(episode_returns), list(episode_lengths))
