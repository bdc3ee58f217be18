"""Progress counters an actor keeps for its supervisor's status line.

Each actor owns one row of ``WIDTH`` float64 slots; the supervisor gives every child a row
of one shared ``multiprocessing`` RawArray and reads them all. An actor run on its own (a
test, ``--actor-index``) keeps a private row. One writer per row, so no lock is needed.
"""

from __future__ import annotations

from collections.abc import MutableSequence

CONNECTED, STEPS, EPISODES, RETURN_SUM, RTT_P50_MS, RTT_P99_MS = range(6)
WIDTH = 6


class Counters:
    """A view of one actor's row: connected flag, env steps, episodes, sum of returns,
    round-trip percentiles."""

    __slots__ = ("_array", "_base")

    def __init__(self, array: MutableSequence[float] | None = None, index: int = 0):
        if array is None:
            array, index = [0.0] * WIDTH, 0
        self._array = array
        self._base = index * WIDTH

    def set_connected(self, connected: bool) -> None:
        self._array[self._base + CONNECTED] = 1.0 if connected else 0.0

    def add_steps(self, env_steps: int) -> None:
        self._array[self._base + STEPS] += env_steps

    def add_episode(self, episode_return: float) -> None:
        self._array[self._base + EPISODES] += 1
        self._array[self._base + RETURN_SUM] += episode_return

    def set_round_trip(self, p50_ms: float, p99_ms: float) -> None:
        """Latest percentiles of the actor's step round trip (request sent -> actions in)."""
        self._array[self._base + RTT_P50_MS] = p50_ms
        self._array[self._base + RTT_P99_MS] = p99_ms

    @property
    def round_trip_ms(self) -> tuple[float, float]:
        return (float(self._array[self._base + RTT_P50_MS]),
                float(self._array[self._base + RTT_P99_MS]))

    @property
    def connected(self) -> bool:
        return self._array[self._base + CONNECTED] > 0

    @property
    def steps(self) -> int:
        return int(self._array[self._base + STEPS])

    @property
    def episodes(self) -> int:
        return int(self._array[self._base + EPISODES])

    @property
    def return_sum(self) -> float:
        return float(self._array[self._base + RETURN_SUM])
