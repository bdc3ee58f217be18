"""Progress counters an actor process keeps for its supervisor's status line.

Each actor process owns one row of ``WIDTH`` float64 slots; the supervisor gives every
child a row of one shared ``multiprocessing`` RawArray and reads them all. An actor run on
its own (a test, ``--actor-index``) keeps a private row. The writers of a row are the
threads of one process (one per group of environments, actors/groups.py), so updates
take a per-row lock; the supervisor only reads.
"""

from __future__ import annotations

import threading
from collections.abc import MutableSequence

CONNECTED, STEPS, EPISODES, RETURN_SUM, RTT_P50_MS, RTT_P99_MS = range(6)
WIDTH = 6


class Counters:
    """A view of one actor process's row: connected flag, env steps, episodes, sum of
    returns, round-trip percentiles."""

    __slots__ = ("_array", "_base", "_lock")

    def __init__(self, array: MutableSequence[float] | None = None, index: int = 0):
        if array is None:
            array, index = [0.0] * WIDTH, 0
        self._array = array
        self._base = index * WIDTH
        self._lock = threading.Lock()  # `+=` on a slot is a read-modify-write

    def groups(self, count: int) -> list[Counters]:
        """Views of this row for ``count`` group threads that write it together: env steps
        and episodes add up, the row is connected while every group is, and its round
        trip is the slowest group's. One group writes the row itself."""
        if count == 1:
            return [self]
        shared = _GroupStates(count)
        return [_GroupCounters(self, shared, group) for group in range(count)]

    def set_connected(self, connected: bool) -> None:
        self._array[self._base + CONNECTED] = 1.0 if connected else 0.0

    def add_steps(self, env_steps: int) -> None:
        with self._lock:
            self._array[self._base + STEPS] += env_steps

    def add_episode(self, episode_return: float) -> None:
        with self._lock:
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


class _GroupStates:
    """What each group of one process last reported: connected, round trip (ms)."""

    def __init__(self, count: int):
        self.connected = [False] * count
        self.round_trips = [(0.0, 0.0)] * count


class _GroupCounters(Counters):
    """One group's view of its process's row (see :meth:`Counters.groups`)."""

    __slots__ = ("_states", "_group")

    def __init__(self, row: Counters, states: _GroupStates, group: int):
        self._array, self._base, self._lock = row._array, row._base, row._lock
        self._states, self._group = states, group

    def set_connected(self, connected: bool) -> None:
        with self._lock:
            self._states.connected[self._group] = connected
            super().set_connected(all(self._states.connected))

    def set_round_trip(self, p50_ms: float, p99_ms: float) -> None:
        with self._lock:
            self._states.round_trips[self._group] = (p50_ms, p99_ms)
            trips = self._states.round_trips
            super().set_round_trip(max(p for p, _ in trips), max(p for _, p in trips))
