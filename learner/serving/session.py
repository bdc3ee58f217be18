"""A session: one actor incarnation's connection to the learner, from its handshake to the
end of its Step stream: its K environments and slots, their unfinished unrolls and
recurrent state, its stream, what the idle watchdog reads (``last_seen``, ``busy``), and
its environments' episodes as the learner sees them (:class:`EpisodeTally`).
learner/serving/service.py opens, streams and closes them; :func:`end_stream` is how the
learner itself ends one (idle, replaced), telling its actor CANCELLED with the reason.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import torch

from learner.training.store import UnrollBuilder


class EpisodeTally:
    """The episodes of a session's K environments as the learner sees them: the sum of the
    rewards it received and the transitions it counted, per environment.

    An episode counts only if the learner saw all of it. One that began in this session
    did; for the first episode of each environment the learner cannot tell whether the
    session's first observation was an episode's start (a new actor) or its middle (an
    actor reconnecting mid-episode, the transition in flight lost), so it counts only when
    the actor reports that episode with exactly the length the learner counted. What an
    actor reports never changes a return: the learner's sum of rewards is the figure.
    """

    def __init__(self, num_envs: int):
        self.returns = np.zeros(num_envs, np.float64)
        self.lengths = np.zeros(num_envs, np.int64)
        self.from_start = np.zeros(num_envs, bool)  # this session saw the episode begin

    def add(self, rewards: np.ndarray, terminated: np.ndarray, truncated: np.ndarray,
            reported_lengths: Mapping[int, int]) -> tuple[list[float], list[int]]:
        """One transition of every environment (``[K]`` each) and the lengths the actor
        reports for the episodes it ended (by env index); returns the returns and lengths
        of the ended episodes the learner saw whole."""
        self.returns += rewards
        self.lengths += 1
        ended = terminated | truncated
        whole = [i for i in np.flatnonzero(ended).tolist()
                 if self.from_start[i] or reported_lengths.get(i) == self.lengths[i]]
        finished = self.returns[whole].tolist(), self.lengths[whole].tolist()
        self.returns[ended] = 0.0
        self.lengths[ended] = 0
        self.from_start |= ended
        return finished


@dataclass
class Session:
    """One actor incarnation's connection: K environments and their unfinished unrolls."""

    session_id: str
    actor_id: str
    run_id: str
    peer: str
    num_envs: int
    slot_ids: list[int]
    builder: UnrollBuilder | None  # None: nothing kept for training (seed-rl serve)
    core_state: tuple[torch.Tensor, ...]
    episodes: EpisodeTally
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    stream: asyncio.Task | None = None  # the Step handler, while the stream is open
    ended_by_learner: str = ""  # why the learner cancelled the stream (idle, replaced)
    closed: bool = False
    busy: bool = False  # the learner holds its request (inference, backpressure): not idle
    reading: bool = False  # the Step handler waits for the actor's next message
    steps: int = 0  # messages handled; the first carries x_0 alone, no transition


def end_stream(session: Session, reason: str, grace: float = 5.0) -> None:
    """End the session's open Step stream (on the serving loop): its actor gets CANCELLED
    with the reason and reconnects. A handler waiting for the actor's next message is
    cancelled at once; one holding a step (inference, backpressure, its answer being
    written) answers it and then ends the stream itself, because a task cancelled inside
    gRPC's write ends the RPC with no status and its actor would wait forever. One that
    has not within ``grace`` seconds (a client that reads no answers) is cancelled."""
    stream = session.stream
    if stream is None or stream.done():
        return
    session.ended_by_learner = reason
    if session.reading:
        stream.cancel()
    else:
        asyncio.get_running_loop().call_later(grace, lambda: stream.done() or stream.cancel())


def ended_by_learner(reason: str) -> str:
    """The CANCELLED details an actor gets when the learner ends its stream."""
    return f"the learner ended this stream: {reason}; reconnect"
