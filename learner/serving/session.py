"""A session: one actor incarnation's connection to the learner, from its handshake to the
end of its Step stream: its K environments and slots, their unfinished unrolls and
recurrent state, its stream, and what the idle watchdog reads (``last_seen``, ``busy``).
learner/serving/service.py opens, streams and closes them; :func:`end_stream` is how the
learner itself ends one (idle, replaced), telling its actor CANCELLED with the reason.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import torch

from learner.training.store import UnrollBuilder


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
