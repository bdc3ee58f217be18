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
    builder: UnrollBuilder
    core_state: tuple[torch.Tensor, ...]
    created: float = field(default_factory=time.monotonic)
    last_seen: float = field(default_factory=time.monotonic)
    stream: asyncio.Task | None = None  # the Step handler, while the stream is open
    ended_by_learner: str = ""  # why the learner cancelled the stream (idle, replaced)
    closed: bool = False
    busy: bool = False  # the learner holds its request (inference, backpressure): not idle
    steps: int = 0  # messages handled; the first carries x_0 alone, no transition


def end_stream(session: Session, reason: str) -> None:
    """End the session's open Step stream (its actor sees CANCELLED and reconnects)."""
    if session.stream is not None and not session.stream.done():
        session.ended_by_learner = reason
        session.stream.cancel()
