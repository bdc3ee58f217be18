"""The per-message verdicts: what the checking learner saw, judged against the rules.

The checking learner (learner/conformance/checking_learner.py) hands every RPC, handshake,
stream and step message here, on its serving loop; the scenario reads the counts and
waits on :attr:`Judge.verdicts`' condition. Environments are tracked per actor id and
environment index, across sessions and learner restarts (that is how a reconnect is
checked to keep them): the observation the learner answered, the action it answered, the
steps and return of the episode so far, and whether the policy balances it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from learner.conformance.rules import (
    STEP_LIMIT,
    CartPoleReplay,
    Replayed,
    ScriptedPolicy,
    Verdicts,
    is_reset,
    same_observation,
    show,
)
from learner.serving.validation import CheckedStep


@dataclass
class EnvTrack:
    """One environment of one actor id, as the learner last answered it."""

    observation: np.ndarray  # x_t, [4] float32
    action: int  # a_t, answered to x_t
    steps: int | None  # steps of the episode up to x_t (0: a reset); None: unknown
    episode_return: float | None  # rewards of the episode up to x_t; None: unknown
    balance: bool  # the policy balances this episode (else random actions)


@dataclass
class Judge:
    """Everything the checking learner saw, and the verdicts (thread-safe through
    ``verdicts.changed``: the serving loop writes, the scenario reads)."""

    seed: int
    verdicts: Verdicts = field(default_factory=Verdicts)
    replay: CartPoleReplay = field(default_factory=CartPoleReplay)
    messages: int = 0  # step messages judged (every session)
    sent: dict[str, int] = field(default_factory=dict)  # actor id -> its step messages
    handshakes: list[tuple[float, str, bool]] = field(default_factory=list)  # (time, actor, ok)
    first_messages: list[tuple[float, str]] = field(default_factory=list)  # (time, actor)
    stopped_client: str = ""  # the learner refused something the client must stop on
    training_over_at: float | None = None
    tracks: dict[str, list[EnvTrack]] = field(default_factory=dict)  # actor id -> envs
    incarnations: dict[str, str] = field(default_factory=dict)  # actor id -> its run id

    def __post_init__(self) -> None:
        self.policy = ScriptedPolicy(self.seed)

    # -- RPCs, handshakes, streams and refusals -------------------------------------------
    def rpc(self, method: str, has_token: bool) -> None:
        """Any RPC reached the learner (before the token interceptor)."""
        v = self.verdicts
        if not v.held_count["connects"]:
            v.held("connects")
        if has_token:
            v.held("token")
        else:
            v.broke("token", f"{method} without `authorization: Bearer <token>` (the "
                    "learner answered UNAUTHENTICATED)")
            self._stops("UNAUTHENTICATED")

    def handshake(self, actor_id: str, env_id: str, refusal: str, code: str) -> None:
        """A handshake passed the token; ``refusal`` is the learner's message ("" when it
        opened a session or answered a query)."""
        with self.verdicts.changed:
            self.handshakes.append((time.monotonic(), actor_id, not refusal))
        if self.training_over_at is not None:
            self.verdicts.broke("training over", f"actor {actor_id!r} handshook again after "
                                "it was told training_over")
        if refusal:
            self.verdicts.broke("handshake", f"actor {actor_id!r} (env_id {env_id!r}): "
                                f"{code}: {refusal}")
            self._stops(code)
        elif env_id:
            self.verdicts.held("handshake")

    def stream_refused(self, code: str, message: str) -> None:
        """A Step stream the learner refuses: no session metadata, or a second stream."""
        self.verdicts.broke("step stream", f"{code}: {message}")
        if code == "FAILED_PRECONDITION":
            self._stops(code)

    def step_refused(self, actor_id: str, rule: str, code: str, message: str) -> None:
        sent = self.sent.get(actor_id, 0) + 1
        self.verdicts.broke(rule, f"actor {actor_id!r}, message {sent}: the learner answered "
                            f"{code}: {message}")
        self._stops(code)

    def _stops(self, code: str) -> None:
        with self.verdicts.changed:
            self.stopped_client = self.stopped_client or code
            self.verdicts.changed.notify_all()

    def told_training_over(self) -> None:
        with self.verdicts.changed:
            if self.training_over_at is None:
                self.training_over_at = time.monotonic()

    # -- step messages -------------------------------------------------------------------
    def step(self, actor_id: str, run_id: str, first: bool, step: CheckedStep,
             episodes: list[tuple[int, float, int]]) -> np.ndarray:
        """Judge one accepted step message of ``actor_id`` (incarnation ``run_id``); the
        actions to answer, [K] int64. Under the verdicts' lock: the scenario sees a message
        with its verdicts, or not at all."""
        observations = np.asarray(step.observations, np.float32)
        with self.verdicts.changed:
            self.messages += 1
            message = self.sent[actor_id] = self.sent.get(actor_id, 0) + 1
            if first:
                self.first_messages.append((time.monotonic(), actor_id))
                self.verdicts.held("first message")
                self._first(actor_id, run_id, observations)
            else:
                self._transitions(actor_id, message, step, episodes)
            actions = np.zeros(len(observations), np.int64)
            for index, track in enumerate(self.tracks[actor_id]):
                track.observation = observations[index]
                track.action = actions[index] = self.policy.action(track.observation,
                                                                   track.balance)
            self.verdicts.held("message format")
            return actions

    def _first(self, actor_id: str, run_id: str, observations: np.ndarray) -> None:
        """A session's first message: fresh environments (a new actor id, or a new
        incarnation of one: a restarted process), or (a reconnect of the same incarnation)
        the ones it had, continued."""
        previous = self.tracks.get(actor_id)
        if self.incarnations.get(actor_id) != run_id:
            previous = None
        self.incarnations[actor_id] = run_id
        fresh = [EnvTrack(o, 0, 0 if is_reset(o) else None, 0.0 if is_reset(o) else None,
                          balance=index % 2 == 0) for index, o in enumerate(observations)]
        if previous is None:
            self.tracks[actor_id] = fresh
            return
        if len(previous) != len(observations):
            self.verdicts.broke("keeps environments", f"actor {actor_id!r} came back with "
                                f"{len(observations)} environments, not {len(previous)}")
            self.tracks[actor_id] = fresh
            return
        kept = True
        for index, (track, got) in enumerate(zip(previous, observations, strict=True)):
            kept &= self._continues(actor_id, index, track, got)
        if kept:
            self.verdicts.held("keeps environments")

    def _continues(self, actor_id: str, index: int, track: EnvTrack, got: np.ndarray) -> bool:
        """Whether ``got`` is environment ``index``'s state after its last answer: the
        observation answered (not stepped yet), that one stepped (a reset when the step
        ended the episode). A step with another action than the one answered keeps the
        environment but breaks the slot convention. Updates the track."""
        if same_observation(got, track.observation):
            return True
        steps = None if track.steps is None else track.steps + 1
        answered = self.replay.step(track.observation, track.action)
        for action in (track.action, 1 - track.action):  # CartPole: Discrete(2)
            replayed = answered if action == track.action else self.replay.step(
                track.observation, action)
            ended = replayed.terminated or steps == STEP_LIMIT
            if not (same_observation(got, replayed.observation) or (ended and is_reset(got))):
                continue
            if action != track.action:
                self.verdicts.broke("slot convention", f"actor {actor_id!r}, env {index}: "
                                    f"the new session starts from {show(got)}, CartPole's "
                                    f"step from {show(track.observation)} with action "
                                    f"{action}, not the action {track.action} answered")
            if ended and is_reset(got):
                self._new_episode(track, got)
            else:
                track.steps = steps
                if track.episode_return is not None:
                    track.episode_return += replayed.reward
            return True
        self.verdicts.broke("keeps environments", f"actor {actor_id!r}, env {index}: the new "
                            f"session starts from {show(got)}; the environment held "
                            f"{show(track.observation)} (action {track.action} answered, "
                            f"giving {show(answered.observation)})")
        self._new_episode(track, got)
        return False

    @staticmethod
    def _new_episode(track: EnvTrack, observation: np.ndarray) -> None:
        reset = is_reset(observation)
        track.steps, track.episode_return = (0, 0.0) if reset else (None, None)
        track.balance = not track.balance

    def _transitions(self, actor_id: str, message: int, step: CheckedStep,
                     episodes: list[tuple[int, float, int]]) -> None:
        """Every environment's transition x_{t-1} --a_{t-1}--> x_t, replayed and compared."""
        finals = dict(zip(step.final_envs.tolist(), step.final_observations, strict=True))
        stats: dict[int, list[tuple[float, int]]] = {}
        for env, episode_return, length in episodes:
            stats.setdefault(env, []).append((episode_return, length))
        for index, track in enumerate(self.tracks[actor_id]):
            where = f"actor {actor_id!r}, env {index}, message {message}"
            replayed = self.replay.step(track.observation, track.action)
            got = Got(np.asarray(step.observations[index], np.float32),
                      float(step.rewards[index]), bool(step.terminated[index]),
                      bool(step.truncated[index]), finals.get(index), stats.pop(index, []))
            self._transition(where, track, replayed, got)
        for index, entries in stats.items():
            self.verdicts.broke("episode stats", f"actor {actor_id!r}, message {message}: "
                                f"{len(entries)} EpisodeStats for env {index}, whose episode "
                                "did not end")

    def _transition(self, where: str, track: EnvTrack, replayed: Replayed, got: Got) -> None:
        v = self.verdicts
        steps = None if track.steps is None else track.steps + 1
        came = (f"from {show(track.observation)} with action {track.action}")
        if got.reward != replayed.reward:
            v.broke("slot convention", f"{where}: reward {got.reward}, expected "
                    f"{replayed.reward} (CartPole's step {came})")
        # at a bound (within the tolerance) either flag is right: the client's decides
        ends = got.terminated if replayed.borderline else replayed.terminated
        if ends:
            self._termination(where, came, replayed, got)
        elif steps == STEP_LIMIT:
            self._truncation(where, came, replayed, got)
        elif steps is None and got.truncated:  # its episode began out of sight: no count
            if got.final is None or not same_observation(got.final, replayed.observation):
                v.broke("slot convention", f"{where}: final observation {got.final}, "
                        f"expected {show(replayed.observation)} (CartPole's step {came})")
        elif got.terminated:
            v.broke("slot convention", f"{where}: terminated=true, but CartPole's step {came} "
                    f"gives {show(replayed.observation)}, which ends nothing: the flags are "
                    "those of the transition into the observation sent")
        elif got.truncated:
            v.broke("truncated", f"{where}: truncated=true after {steps} steps, before "
                    f"CartPole-v1's {STEP_LIMIT}-step limit")
        elif same_observation(got.observation, replayed.observation):
            v.held("slot convention")
        else:
            v.broke("slot convention", f"{where}: observation {show(got.observation)}, "
                    f"expected {show(replayed.observation)} (CartPole's step {came}: the "
                    "action answered to the previous request)")
        self._episode_stats(where, track, replayed, got, steps)
        if got.terminated or got.truncated:
            self._new_episode(track, got.observation)
        else:
            track.steps = steps
            if track.episode_return is not None:
                track.episode_return += got.reward

    def _termination(self, where: str, came: str, replayed: Replayed, got: Got) -> None:
        """The replayed step ends the episode: the pole fell or the cart left."""
        v = self.verdicts
        if got.terminated:
            if is_reset(got.observation):
                v.held("terminated")
            else:
                v.broke("terminated", f"{where}: terminated, but the observation "
                        f"{show(got.observation)} is not the next episode's first")
        elif got.truncated:
            v.broke("terminated", f"{where}: CartPole's step {came} ends the episode (pole "
                    "or cart out of bounds): expected terminated=true, got terminated=false, "
                    "truncated=true")
        elif same_observation(got.observation, replayed.observation):
            v.broke("terminated", f"{where}: CartPole's step {came} ends the episode (pole "
                    "or cart out of bounds), but the client went on with it: expected "
                    "terminated=true and the next episode's first observation")
        else:
            v.broke("slot convention", f"{where}: observation {show(got.observation)}, "
                    f"expected the end of the episode: CartPole's step {came} terminates it")

    def _truncation(self, where: str, came: str, replayed: Replayed, got: Got) -> None:
        """The episode reached the step limit (and the replayed step does not end it)."""
        v = self.verdicts
        if not got.truncated or got.terminated:
            v.broke("truncated", f"{where}: the episode reached CartPole-v1's {STEP_LIMIT}-step "
                    "limit: expected truncated=true, terminated=false; got "
                    f"truncated={str(got.truncated).lower()}, "
                    f"terminated={str(got.terminated).lower()}")
        elif got.final is None:
            v.broke("truncated", f"{where}: truncated without its final observation")
        elif not same_observation(got.final, replayed.observation):
            v.broke("slot convention", f"{where}: final observation {show(got.final)}, "
                    f"expected {show(replayed.observation)} (CartPole's step {came})")
        elif not is_reset(got.observation):
            v.broke("truncated", f"{where}: truncated, but the observation "
                    f"{show(got.observation)} is not the next episode's first")
        else:
            v.held("truncated")

    def _episode_stats(self, where: str, track: EnvTrack, replayed: Replayed, got: Got,
                       steps: int | None) -> None:
        v = self.verdicts
        if not (got.terminated or got.truncated):
            return  # entries for envs that did not end: _transitions
        if len(got.episodes) != 1:
            v.broke("episode stats", f"{where}: the episode ended with {len(got.episodes)} "
                    "EpisodeStats for it, expected 1")
            return
        episode_return, length = got.episodes[0]
        expected = (None if track.episode_return is None
                    else track.episode_return + got.reward)
        if expected is not None and abs(episode_return - expected) > 1e-3 * max(1, expected):
            v.broke("episode stats", f"{where}: episode_return {episode_return}, but the "
                    f"rewards of the episode sum to {expected}")
        elif steps is not None and length != steps:
            v.broke("episode stats", f"{where}: episode_length {length}, but the episode "
                    f"took {steps} steps")
        elif expected is not None and steps is not None:
            v.held("episode stats")


@dataclass
class Got:
    """What a client reported for one environment's transition."""

    observation: np.ndarray
    reward: float
    terminated: bool
    truncated: bool
    final: np.ndarray | None
    episodes: list[tuple[float, int]]  # its EpisodeStats (return, length)
