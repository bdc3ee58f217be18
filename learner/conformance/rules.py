"""The rules a client is checked against, their verdicts, and the two tools that make the
step rules exact on CartPole-v1: a replay of its dynamics and the checker's scripted policy.

Each rule is one named check with a verdict (after DeepMind's dm_env_rpc compliance
tests): *held* (seen done right, at least once, and never wrong), *broken* (the evidence
says where: which environment, which message, expected and got) or *not reached* (the
scenario never got there, e.g. after an earlier rule stopped the client). A conformant
client holds every rule.

CartPole's dynamics are deterministic given the state, and its observation *is* the state
(float32 of the float64 state), so the step a client reports can be recomputed from the
observation the learner answered and the action it answered: an observation paired with
the wrong action (the classic off-by-one of the slot convention) shows at once, because
the policy draws its actions from the checker's own random generator.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import gymnasium as gym
import numpy as np

ENV_ID = "CartPole-v1"
STEP_LIMIT = 500  # CartPole-v1's TimeLimit: an episode this long is truncated
RESET_BOUND = 0.05  # CartPole's reset draws every state variable from U(-0.05, 0.05)
# The replay starts from the float32 observation, the client's env from its float64 state:
# one step apart they differ by a few float32 rounding steps, never by this much.
TOLERANCE = 1e-4
EXPLORATION = 0.2  # the balancing policy's share of random actions: still reaches 500 steps
MAX_EVIDENCE = 3  # broken-rule evidence kept per rule (the rest only counted)


@dataclass(frozen=True)
class Rule:
    name: str
    section: str  # where docs/protocol.md states it
    what: str  # what the client must do, as the report says it


RULES: tuple[Rule, ...] = (  # docs/protocol.md, "Checking a client", has this table
    Rule("connects", "The handshake",
         "call the learner at `SEED_RL_LEARNER` within `--connect-timeout`, without "
         "exiting first"),
    Rule("token", "Transport",
         "carry `authorization: Bearer <SEED_RL_AUTH_TOKEN>` on every RPC"),
    Rule("handshake", "The handshake",
         "be accepted: version 1, valid ids, CartPole-v1 with the learner's kwargs and "
         "spaces, `num_envs` within the limits"),
    Rule("step stream", "The step stream",
         "open one Step stream per handshake, with the session id in `seed-rl-session`"),
    Rule("first message", "The step stream",
         "start each session with x_0 alone: rewards 0, no episode end"),
    Rule("message format", "Tensor, What the spaces carry, StepRequest",
         "send StepRequests the learner accepts: dtypes, shapes, byte lengths, values, "
         "final observations, episode statistics"),
    Rule("slot convention", "Slot convention",
         "report, for request t+1, what the action answered to request t did (the replayed"
         " observation, reward and flags; a final observation too)"),
    Rule("terminated", "Slot convention, StepRequest",
         "report an episode the pole or the cart ended as terminated, not truncated, "
         "without a final observation, and send the next episode's first observation"),
    Rule("truncated", "Slot convention, StepRequest",
         "report an episode cut at the 500-step limit as truncated and not terminated, "
         "list its final observation, and send the next episode's first observation"),
    Rule("episode stats", "StepRequest",
         "send one EpisodeStats per ended episode: the sum of the rewards the learner saw,"
         " its number of steps; none for the others"),
    Rule("reconnect", "Reconnects and backoff, Status codes",
         "handshake again (every actor id) within `--reconnect-timeout` after the learner "
         "restarts, and stream on"),
    Rule("keeps environments", "The step stream",
         "start a new session of the same incarnation (`run_id`) from the observations the "
         "environments hold (the last one sent, or that one stepped with its answer); a new "
         "incarnation starts afresh, and leaves this rule not reached"),
    Rule("training over", "The step stream",
         "exit with code 0 within `--exit-timeout` once told `training_over`, without "
         "another handshake (and not exit before)"),
)
RULE_NAMES = tuple(rule.name for rule in RULES)

HELD, BROKEN, NOT_REACHED = "held", "BROKEN", "not reached"


@dataclass
class Verdicts:
    """The evidence for every rule, gathered on the serving loop and read by the scenario.

    ``changed`` is notified whenever anything is recorded, so the scenario can wait on a
    condition with a timeout instead of polling."""

    held_count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULE_NAMES, 0))
    evidence: dict[str, list[str]] = field(
        default_factory=lambda: {name: [] for name in RULE_NAMES})
    broken_count: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULE_NAMES, 0))
    changed: threading.Condition = field(default_factory=threading.Condition)

    def held(self, rule: str) -> None:
        with self.changed:
            self.held_count[_known(rule)] += 1
            self.changed.notify_all()

    def broke(self, rule: str, evidence: str) -> None:
        with self.changed:
            self.broken_count[_known(rule)] += 1
            if len(self.evidence[rule]) < MAX_EVIDENCE:
                self.evidence[rule].append(evidence)
            self.changed.notify_all()

    def verdict(self, rule: str) -> str:
        with self.changed:
            if self.broken_count[_known(rule)]:
                return BROKEN
            return HELD if self.held_count[rule] else NOT_REACHED

    def all_held(self) -> bool:
        return all(self.verdict(rule) == HELD for rule in RULE_NAMES)


def _known(rule: str) -> str:
    if rule not in RULE_NAMES:
        raise KeyError(f"no rule {rule!r}; the rules are {', '.join(RULE_NAMES)}")
    return rule


@dataclass(frozen=True)
class Replayed:
    """CartPole's step from an observation with an action."""

    observation: np.ndarray  # [4] float32, as the environment returns it
    reward: float
    terminated: bool
    borderline: bool  # within TOLERANCE of a termination bound: either flag is right


class CartPoleReplay:
    """Recomputes CartPole-v1 steps from observations (gymnasium's own dynamics, its
    unwrapped environment, so the checker never re-implements the physics)."""

    def __init__(self) -> None:
        self._env = gym.make(ENV_ID).unwrapped
        self._env.reset(seed=0)

    def step(self, observation: np.ndarray, action: int) -> Replayed:
        env = self._env
        env.state = np.asarray(observation, dtype=np.float64).copy()
        env.steps_beyond_terminated = None
        next_observation, reward, terminated, _, _ = env.step(int(action))
        x, theta = float(env.state[0]), float(env.state[2])
        borderline = (abs(abs(x) - env.x_threshold) < TOLERANCE
                      or abs(abs(theta) - env.theta_threshold_radians) < TOLERANCE)
        return Replayed(np.asarray(next_observation, np.float32), float(reward),
                        bool(terminated), borderline)


def same_observation(got: np.ndarray, expected: np.ndarray) -> bool:
    return bool(np.allclose(got, expected, rtol=TOLERANCE, atol=TOLERANCE))


def is_reset(observation: np.ndarray) -> bool:
    """Whether ``observation`` can be the first of a CartPole episode."""
    return bool(np.all(np.abs(observation) <= RESET_BOUND + TOLERANCE))


class ScriptedPolicy:
    """The checker's actions: random ones, or a balancing controller (with some random
    actions) that keeps the pole up past the 500-step limit, so that both episode ends
    happen. Every random choice comes from this policy's own generator."""

    def __init__(self, seed: int):
        self.rng = np.random.default_rng(seed)

    def action(self, observation: np.ndarray, balance: bool) -> int:
        if not balance or self.rng.random() < EXPLORATION:
            return int(self.rng.integers(2))
        x, x_dot, theta, theta_dot = (float(v) for v in observation)
        return int(theta + 0.5 * theta_dot + 0.05 * x + 0.1 * x_dot > 0)


def show(values: np.ndarray) -> str:
    """A short, exact-enough rendering of an observation for evidence lines."""
    return np.array2string(np.asarray(values), precision=5, separator=", ",
                           suppress_small=False)
