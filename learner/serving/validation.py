"""Checking what actors send against the contract, before anything else in the learner sees it.

Handshakes are checked against the :class:`LearnerSpec` (protocol version, ids, environment,
spaces, how many environments fit a message) and every step message against the spec and
its session's K (decode, shapes, dtypes, flag bytes, final observations, episode
statistics, the values of every part of an observation: floats finite, categorical values
in range, bits and bools 0 or 1, so that nothing a client sends can crash or poison
inference and training; and a session's first message carries no transition: rewards 0,
no episode ends). A broken rule raises a :class:`Rejected` carrying the status code and
a message a person can act on; the service turns it into the end of that one RPC, and the
other actors keep training (docs/architecture.md, "Wire contract"; docs/reliability.md has
the table of status codes).

Codes raised here: INVALID_ARGUMENT for anything malformed (bytes that do not parse, wrong
dtype/shape/byte length, non-finite values, ids that are not printable, more environments
than --max-envs-per-actor or than fit --max-message-bytes); FAILED_PRECONDITION for a
protocol version, environment or spaces that do not match the learner's.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import grpc
import gymnasium as gym
import numpy as np

from learner.serving.space_match import space_mismatch
from learner.training.models import check_spaces
from seed_rl import wire
from seed_rl.config import Config
from seed_rl.envs.making import EnvImportError, EnvironmentUnavailable, make_env
from seed_rl.envs.symbols import symbol_grid_warnings
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2 as pb
from seed_rl.spaces import Leaf, ObservationLayout, observation_layout

log = logging.getLogger(__name__)

MAX_ID_LENGTH = 256
ECHO_CHARS = 80  # at most this much of a client's own text is echoed back in an error


def echo(value: object) -> str:
    """``repr`` of client-supplied text, cut short: error messages stay small and readable
    however large the hostile input."""
    text = repr(value)
    return text if len(text) <= ECHO_CHARS else text[:ECHO_CHARS] + f"... ({len(text)} chars)"


class Rejected(Exception):
    """A request broke the contract: the RPC ends with ``code`` and this message."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code


class HandshakeRejected(Rejected):
    """A handshake the learner will not open a session for."""


class StepRejected(Rejected):
    """A step message that ends its stream (and its session)."""


@dataclass(frozen=True)
class MalformedMessage:
    """Stands in for request bytes that are not a valid message, so that the handler (not
    grpc, which would answer INTERNAL) rejects them with INVALID_ARGUMENT and a reason."""

    type_name: str
    size: int
    error: str

    def describe(self) -> str:
        return (f"a {self.size}-byte request is not a valid {self.type_name} ({self.error}); "
                "actor and learner must run matching seed-rl versions")


def lenient_parser(message_type: type) -> Callable[[bytes], object]:
    """A request deserializer that never raises: bad bytes become a MalformedMessage."""
    type_name = message_type.DESCRIPTOR.full_name

    def parse(data: bytes) -> object:
        try:
            return message_type.FromString(data)
        except Exception as error:  # DecodeError: truncated, bad wire types, bad UTF-8
            return MalformedMessage(type_name, len(data), str(error)[:200])

    return parse


@dataclass
class LearnerSpec:
    """What the learner serves: the environment and its spaces (any that seed_rl/spaces.py
    carries; learner.models.check_spaces refuses the others at start-up)."""

    env_id: str
    env_kwargs: dict
    observation_space: gym.Space
    action_space: gym.Space
    env_wrapper: tuple[str, ...] = ()  # --env-wrapper: the spaces are the wrapped env's
    max_episode_steps: int | None = None  # the env's step limit (TimeLimit), when it has one
    source: str = ""  # what serves it, in refusals: "checkpoint PATH" under seed-rl serve

    @functools.cached_property
    def wire_spaces(self) -> tuple[pb.Space, pb.Space]:
        """The observation and action spaces as every HandshakeResponse carries them, so a
        client can copy them exactly; encoded once (a reconnect storm answers thousands of
        handshakes). WireError for a space the wire cannot carry (make_spec refuses it)."""
        return wire.encode_space(self.observation_space), wire.encode_space(self.action_space)


# -- handshakes ------------------------------------------------------------------------------


def check_protocol_and_ids(request: pb.HandshakeRequest) -> None:
    """The parts every handshake needs, even one that only asks which environment to make."""
    if request.protocol_version != wire.PROTOCOL_VERSION:
        raise HandshakeRejected(
            grpc.StatusCode.FAILED_PRECONDITION,
            f"protocol version {request.protocol_version} is not supported: this learner "
            f"speaks version {wire.PROTOCOL_VERSION}; run matching seed-rl versions on "
            "actors and learner")
    for name, value in (("actor_id", request.actor_id), ("run_id", request.run_id)):
        if not value or len(value) > MAX_ID_LENGTH or not value.isprintable():
            raise HandshakeRejected(
                grpc.StatusCode.INVALID_ARGUMENT,
                f"{name} must be 1-{MAX_ID_LENGTH} printable characters, got {echo(value)}")


def check_actor_matches(request: pb.HandshakeRequest, spec: LearnerSpec, *,
                        max_envs_per_actor: int, max_message_bytes: int) -> None:
    """An actor that wants a session runs the learner's environment and spaces, and its K
    environments fit the learner's limits (a worst-case message: every env truncated)."""
    try:
        kwargs = json.loads(request.env_kwargs_json or "{}")
        observation_space = wire.decode_space(request.observation_space,
                                              name="observation_space")
        action_space = wire.decode_space(request.action_space, name="action_space")
    except wire.UnknownSpace as error:  # a kind this learner does not know (a newer actor)
        raise HandshakeRejected(grpc.StatusCode.FAILED_PRECONDITION,
                                f"this learner cannot carry the actor's space: {error}; run "
                                "matching seed-rl versions on actors and learner") from None
    except Exception as error:  # WireError, bad JSON, too deep, spaces gymnasium rejects
        raise HandshakeRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                f"bad handshake: {type(error).__name__}: {str(error)[:200]}"
                                ) from None
    problems, spaces_differ = [], False
    if request.env_id != spec.env_id or kwargs != spec.env_kwargs:
        problems.append(f"environment: learner runs {spec.env_id} {spec.env_kwargs}, actor "
                        f"runs {echo(request.env_id)} {echo(kwargs)}")
    for name, mine, theirs in (("observation space", spec.observation_space, observation_space),
                               ("action space", spec.action_space, action_space)):
        mismatch = space_mismatch(mine, theirs)
        if mismatch is not None:
            problems.append(f"{name}: {mismatch.what}")
            spaces_differ = True
    if problems:
        # The actor's own text is echoed cut short: a hostile handshake cannot bloat it.
        wrapped = (f" and its --env-wrapper {','.join(spec.env_wrapper)}" if spec.env_wrapper
                   else "")
        copy = (" A client of its own can copy the learner's spaces from any HandshakeResponse "
                "(a handshake with an empty env_id asks for them; docs/protocol.md)."
                if spaces_differ else "")
        served = f" (serving {spec.source} of {spec.env_id})" if spec.source else ""
        raise HandshakeRejected(grpc.StatusCode.FAILED_PRECONDITION,
                                f"actor and learner{served} disagree: " + "; ".join(problems)
                                + f". Start the actors with the learner's --env{wrapped} (or "
                                f"no --env: they then take the learner's).{copy}")
    k = request.num_envs
    if not 0 < k <= max_envs_per_actor:
        raise HandshakeRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                f"num_envs={k}: an actor may run 1 to {max_envs_per_actor} "
                                "environments (learner flag --max-envs-per-actor)")
    row = observation_layout(spec.observation_space)
    obs_bytes = math.prod(row.row_shape) * row.row_dtype.itemsize * k
    if obs_bytes * 2 > max_message_bytes:
        raise HandshakeRejected(grpc.StatusCode.INVALID_ARGUMENT,
                                f"{k} environments of {obs_bytes // k} observation bytes do not "
                                f"fit in a message of at most {max_message_bytes} bytes; use "
                                "fewer --envs-per-actor or raise --max-message-bytes")


# -- step messages ---------------------------------------------------------------------------


@dataclass
class CheckedStep:
    """One step message of K environments, decoded and checked: x_t and the reward and
    flags of the transition that led to it (docs/architecture.md, "Slot convention")."""

    observations: np.ndarray  # [K, *row_shape], the observation layout's row dtype
    rewards: np.ndarray  # [K] float
    terminated: np.ndarray  # [K] bool
    truncated: np.ndarray  # [K] bool
    final_envs: np.ndarray  # int64 indices of the truncated envs that sent a final obs
    final_observations: np.ndarray  # [len(final_envs), *row_shape]
    episode_envs: list[int]  # what the actor reports of its finished episodes (env index,
    episode_returns: list[float]  # return, length); the learner keeps its own count
    episode_lengths: list[int]

    @property
    def episode_start(self) -> np.ndarray:
        """[K] bool: x_t is the first observation of a new episode."""
        return self.terminated | self.truncated


class StepValidator:
    """Checks step messages against the observation space agreed at the handshake (rows
    as its :class:`ObservationLayout` carries them)."""

    def __init__(self, observation_space: gym.Space, max_message_bytes: int):
        self.layout: ObservationLayout = observation_layout(observation_space)
        self.observation_shape = self.layout.row_shape
        self.observation_dtype = self.layout.row_dtype
        self.max_message_bytes = max_message_bytes

    def check(self, request: pb.StepRequest, num_envs: int, *,
              first: bool = False) -> CheckedStep:
        """Decode ``request`` for a session of ``num_envs`` environments, or raise
        :class:`StepRejected` saying what is wrong. ``first``: the session's first message,
        which must carry no transition (:func:`check_first_message`)."""
        k, shape, dtype = num_envs, self.observation_shape, self.observation_dtype
        observations = self._decode(request.observations, "observations")
        rewards = self._decode(request.rewards, "rewards")
        terminated = self._decode(request.terminated, "terminated")
        truncated = self._decode(request.truncated, "truncated")
        _expect(observations, "observations", (k, *shape), dtype)
        self._check_values(observations, "observations")
        _expect(rewards, "rewards", (k,), None)
        if rewards.dtype.kind != "f":
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"rewards: dtype {rewards.dtype} must be a float type")
        if rewards.dtype == np.float32:  # what actors send: no conversion to check
            finite = np.isfinite(rewards)
        else:
            with np.errstate(over="ignore"):  # float64 beyond float32's range becomes inf
                finite = np.isfinite(rewards.astype(np.float32))
        if not finite.all():
            bad = np.flatnonzero(~finite)[:5].tolist()
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"rewards: non-finite values (or beyond float32) at environments "
                               f"{bad}; check the environment (a NaN reward would poison "
                               "training)")
        _expect(terminated, "terminated", (k,), np.dtype(bool))
        _expect(truncated, "truncated", (k,), np.dtype(bool))
        if (terminated.view(np.uint8) | truncated.view(np.uint8)).max(initial=0) > 1:
            name = "terminated" if terminated.view(np.uint8).max() > 1 else "truncated"
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{name}: bool bytes must be 0 or 1")
        episodes = request.episodes
        if len(episodes) > k or any(e.env_index >= k or not math.isfinite(e.episode_return)
                                    for e in episodes):
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"episodes: {len(episodes)} entries; at most one per "
                               f"environment, env_index in [0, {k}), finite episode_return")
        final_envs, final_observations = self._final_observations(request, k, truncated)
        cut = truncated & ~terminated  # truncated by a time limit: bootstraps
        if cut.any() and (cut & ~np.isin(np.arange(k), final_envs)).any():
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               "truncated environments must send their final observation "
                               "(final_observation_envs / final_observations)")
        if first:
            check_first_message(rewards, terminated, truncated)
        return CheckedStep(observations, rewards, terminated, truncated, final_envs,
                           final_observations, [e.env_index for e in episodes],
                           [e.episode_return for e in episodes],
                           [e.episode_length for e in episodes])

    def _final_observations(self, request: pb.StepRequest, k: int,
                            truncated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The true final observations of environments a time limit cut this step (their
        values bootstrap the truncated return): distinct indices of truncated envs."""
        final_envs = np.asarray(request.final_observation_envs, dtype=np.int64)
        if not len(final_envs):
            return final_envs, np.zeros((0, *self.observation_shape), self.observation_dtype)
        finals = self._decode(request.final_observations, "final_observations")
        _expect(finals, "final_observations", (len(final_envs), *self.observation_shape),
                self.observation_dtype)
        if final_envs.max() >= k or len(np.unique(final_envs)) != len(final_envs):
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"final_observation_envs {final_envs[:8].tolist()} must be "
                               f"distinct indices in [0, {k})")
        if not truncated[final_envs].all():
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               "final_observation_envs lists environments that were not "
                               "truncated this step")
        self._check_values(finals, "final_observations", envs=final_envs)
        return final_envs, finals

    def _check_values(self, rows: np.ndarray, name: str, envs: np.ndarray | None = None) -> None:
        """Every part of every row holds a value its space allows, as far as the model
        relies on it: finite floats, categorical values in range, bits and bools 0 or 1
        (Box bounds are not enforced: environments overshoot them). ``envs``: the
        environment of each row, when not the row index."""
        for leaf, values in zip(self.layout.leaves, self.layout.unpack(rows), strict=True):
            if values.dtype.kind == "f" and np.isfinite(values).all():
                continue  # the common case, checked without per-row reductions
            bad = _bad_rows(leaf, values)
            if bad is None or not bad.any():
                continue
            where = f" (part {leaf.path!r})" if leaf.path else ""
            if values.dtype.kind == "f":
                what = ("non-finite values", "NaN observations would poison inference and "
                        "training")
            else:
                what = (f"values outside {leaf.space}", "the model would misread them")
            at = (envs if envs is not None else np.arange(len(rows)))[bad][:5].tolist()
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                               f"{name}{where}: {what[0]} at environments {at}; check the "
                               f"environment ({what[1]})")

    def _decode(self, tensor: pb.Tensor, name: str) -> np.ndarray:
        try:
            return wire.decode_tensor(tensor, name=name, max_bytes=self.max_message_bytes)
        except wire.WireError as error:
            raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT, str(error)) from None


def check_first_message(rewards: np.ndarray, terminated: np.ndarray,
                        truncated: np.ndarray) -> None:
    """Each session's first message carries x_0 alone (the reset observations, or the
    current ones after a reconnect): no transition of this session led to it, so every
    reward is 0 and no episode ended. The learner starts each session's trajectories
    afresh; a client that sent the reward or an episode end of a step its old session never
    had answered would have it dropped silently, so it is refused instead, saying the rule."""
    bad = np.flatnonzero((rewards != 0) | terminated | truncated)
    if bad.size:
        raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                           "each session's first message must carry reward 0 and "
                           "terminated = truncated = false for every environment (its "
                           "observations start the session: no transition led to them); "
                           f"environments {bad[:5].tolist()} break it")


def _bad_rows(leaf: Leaf, values: np.ndarray) -> np.ndarray | None:
    """[N] bool: the rows whose ``values [N, *leaf.shape]`` the model cannot take; None when
    every value of this dtype is fine."""
    space, rows = leaf.space, len(values)
    if values.dtype.kind == "f":
        ok = np.isfinite(values)
    elif values.dtype == np.bool_ or isinstance(space, gym.spaces.MultiBinary):
        ok = values.view(np.uint8) <= 1
    elif isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        counts = space.n if isinstance(space, gym.spaces.Discrete) else space.nvec
        offset = values - np.asarray(space.start, np.int64)
        ok = (offset >= 0) & (offset < np.asarray(counts, np.int64))
    else:
        return None
    return ~ok.reshape(rows, -1).all(1)


def _expect(array: np.ndarray, name: str, shape: tuple[int, ...],
            dtype: np.dtype | None) -> None:
    """``array`` has exactly ``shape`` (and ``dtype`` unless None), or StepRejected."""
    if array.shape != shape:
        raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{name}: shape {list(array.shape)}, expected {list(shape)}")
    if dtype is not None and array.dtype != dtype:
        raise StepRejected(grpc.StatusCode.INVALID_ARGUMENT,
                           f"{name}: dtype {array.dtype}, expected {dtype}")


def make_spec(config: Config) -> LearnerSpec:
    """Make the environment once (after --env-import, with --env-wrapper) to learn its
    spaces: the contract actors must match. SystemExit says what is missing (without the
    role: this runs under ``seed-rl learner`` and ``seed-rl train``, and the CLI names the
    one running). A uint8 image that holds symbol codes rather than pixels is logged as a
    warning with the fix (seed_rl/envs/symbols.py)."""
    try:
        env = make_env(config.env, config.env_kwargs, config.env_import, config.env_wrapper,
                       "learner")
    except (EnvImportError, EnvironmentUnavailable) as error:
        raise SystemExit(str(error)) from None
    try:
        spec = LearnerSpec(config.env, dict(config.env_kwargs), env.observation_space,
                           env.action_space, tuple(config.env_wrapper),
                           getattr(env.spec, "max_episode_steps", None))
        symbol_grids = symbol_grid_warnings(env, config.seed)
    finally:
        env.close()
    try:
        check_spaces(spec.observation_space, spec.action_space, config)
        spec.wire_spaces  # noqa: B018 - every HandshakeResponse carries them
    except ValueError as error:  # UnsupportedSpace, a conv torso that cannot fit, WireError
        raise SystemExit(f"--env {config.env}: {error}") from None
    for warning in symbol_grids:
        log.warning("--env %s: %s", config.env, warning)
    return spec
