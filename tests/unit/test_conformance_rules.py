"""The conformance checker's rule logic (learner/conformance/rules.py, judge.py), in this
process: the judge answers a client made here of real CartPole-v1 environments, right or
wrong in one way at a time, and names the rule it breaks; the checking learner gives a
foreign client's bad message the learner's own status code and message while it keeps
answering another session (real gRPC on loopback)."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import grpc
import gymnasium as gym
import numpy as np
import pytest
from support.learner_client import ScriptedActor, handshake_request, step_request

from learner.conformance.checking_learner import CheckingLearner
from learner.conformance.judge import Judge
from learner.conformance.rules import (
    BROKEN,
    HELD,
    NOT_REACHED,
    RULE_NAMES,
    RULES,
    STEP_LIMIT,
    CartPoleReplay,
    ScriptedPolicy,
    Verdicts,
    is_reset,
)
from learner.serving.validation import CheckedStep
from seed_rl import cli

STEP_RULES = ("first message", "message format", "slot convention", "terminated", "truncated",
              "episode stats")


class Client:
    """K CartPole-v1 environments stepped with the judge's answers, as a client would;
    ``mistake`` picks one way to get it wrong."""

    def __init__(self, judge: Judge, k: int = 2, mistake: str = "", actor_id: str = "a"):
        self.judge, self.k, self.mistake, self.actor_id = judge, k, mistake, actor_id
        self.run_id = "run-1"
        self.envs = [gym.make("CartPole-v1") for _ in range(k)]
        self.observations = np.stack([env.reset(seed=i)[0] for i, env in enumerate(self.envs)])
        self.returns, self.lengths = np.zeros(k), np.zeros(k, np.int64)
        self.previous = np.zeros(k, np.int64)
        self.actions = self.send(CheckedStep(self.observations.copy(), np.zeros(k, np.float32),
                                             np.zeros(k, bool), np.zeros(k, bool),
                                             np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
                                             [], [], []), [], first=True)

    def send(self, step: CheckedStep, episodes: list, first: bool = False) -> np.ndarray:
        return self.judge.step(self.actor_id, self.run_id, first, step, episodes)

    def step(self) -> None:
        actions = self.actions
        if self.mistake == "shift":
            actions, self.previous = self.previous, actions.copy()
        k = self.k
        rewards = np.zeros(k, np.float32)
        terminated, truncated = np.zeros(k, bool), np.zeros(k, bool)
        final_envs, finals, episodes = [], [], []
        for i, env in enumerate(self.envs):
            observation, reward, term, trunc, _ = env.step(int(actions[i]))
            self.returns[i] += reward
            self.lengths[i] += 1
            rewards[i] = reward
            if term or trunc:
                wrong = 1 if self.mistake == "episode stats" else 0
                episodes.append((i, float(self.returns[i]) + wrong, int(self.lengths[i])))
                self.returns[i], self.lengths[i] = 0.0, 0
                if trunc and not term:
                    if self.mistake == "terminated-at-limit":
                        term, trunc = True, False
                    else:
                        final_envs.append(i)
                        finals.append(observation)
                observation, _ = env.reset()
            terminated[i], truncated[i] = term, trunc
            self.observations[i] = observation
        self.actions = self.send(CheckedStep(
            self.observations.copy(), rewards, terminated, truncated,
            np.asarray(final_envs, np.int64),
            np.asarray(finals, np.float32).reshape(len(finals), 4), [], [], []), episodes)

    def reconnect(self, reset: bool = False) -> None:
        """A new session's first message: the environments as they are (or reset)."""
        if reset:
            self.observations = np.stack([env.reset()[0] for env in self.envs])
        self.actions = self.send(CheckedStep(
            self.observations.copy(), np.zeros(self.k, np.float32), np.zeros(self.k, bool),
            np.zeros(self.k, bool), np.zeros(0, np.int64), np.zeros((0, 4), np.float32),
            [], [], []), [], first=True)


def run(mistake: str = "", steps: int = STEP_LIMIT + 30,
        then: Callable[[Client], None] | None = None) -> Verdicts:
    judge = Judge(seed=7)
    client = Client(judge, mistake=mistake)
    for _ in range(steps):
        client.step()
    if then is not None:
        then(client)
    return judge.verdicts


def broken(verdicts: Verdicts) -> list[str]:
    return [rule for rule in RULE_NAMES if verdicts.verdict(rule) == BROKEN]


def test_a_right_client_holds_every_step_rule_both_episode_ends_included() -> None:
    verdicts = run()
    assert broken(verdicts) == []
    for rule in STEP_RULES:
        assert verdicts.verdict(rule) == HELD, rule
    assert verdicts.held_count["truncated"] >= 1  # env 0's balanced episode reached 500
    assert verdicts.held_count["terminated"] >= 1  # env 1's random episode fell


def test_an_off_by_one_action_breaks_the_slot_convention_with_the_evidence() -> None:
    verdicts = run("shift", steps=50)
    assert broken(verdicts) == ["slot convention"]
    first = verdicts.evidence["slot convention"][0]
    assert "actor 'a', env " in first and "message " in first and "expected" in first
    assert "the action answered to the previous request" in first


def test_terminated_at_the_step_limit_breaks_the_truncation_rule() -> None:
    verdicts = run("terminated-at-limit")
    assert broken(verdicts) == ["truncated"]
    assert "expected truncated=true, terminated=false" in verdicts.evidence["truncated"][0]
    assert f"{STEP_LIMIT}-step limit" in verdicts.evidence["truncated"][0]


def test_wrong_episode_returns_break_the_episode_stats_rule() -> None:
    verdicts = run("episode stats", steps=60)
    assert broken(verdicts) == ["episode stats"]
    assert "episode_return" in verdicts.evidence["episode stats"][0]


def test_a_reconnect_keeps_the_environments_or_breaks_the_rule() -> None:
    kept = run(steps=30, then=lambda c: (c.reconnect(), [c.step() for _ in range(30)]))
    assert kept.verdict("keeps environments") == HELD and broken(kept) == []

    def reset_then_step(client: Client) -> None:
        for _ in range(5):  # mid-episode for both environments
            client.step()
        client.reconnect(reset=True)
        for _ in range(10):
            client.step()

    reset = run(steps=3, then=reset_then_step)
    assert broken(reset) == ["keeps environments"]
    assert "the new session starts from" in reset.evidence["keeps environments"][0]

    def restarted_process(client: Client) -> None:  # a new incarnation starts afresh
        client.run_id = "run-2"
        reset_then_step(client)

    incarnation = run(steps=3, then=restarted_process)
    assert broken(incarnation) == []
    assert incarnation.verdict("keeps environments") == NOT_REACHED


def test_verdicts_are_held_broken_or_not_reached() -> None:
    verdicts = Verdicts()
    assert {verdicts.verdict(rule) for rule in RULE_NAMES} == {NOT_REACHED}
    verdicts.held("token")
    verdicts.broke("slot convention", "evidence")
    verdicts.held("slot convention")  # once broken, broken
    assert verdicts.verdict("token") == HELD
    assert verdicts.verdict("slot convention") == BROKEN
    assert not verdicts.all_held()
    with pytest.raises(KeyError, match="no rule 'tokens'"):
        verdicts.held("tokens")


def test_the_replay_is_cartpoles_step_and_the_balancing_policy_reaches_the_limit() -> None:
    env, replay = gym.make("CartPole-v1"), CartPoleReplay()
    policy = ScriptedPolicy(seed=3)
    observation, _ = env.reset(seed=5)
    assert is_reset(observation)
    for _ in range(STEP_LIMIT):
        action = policy.action(observation, balance=True)
        replayed = replay.step(observation, action)
        observation, reward, terminated, truncated, _ = env.step(action)
        np.testing.assert_allclose(replayed.observation, observation, atol=1e-5)
        assert (replayed.reward, replayed.terminated) == (reward, terminated)
        assert not terminated
    assert truncated  # at the 500th step, not before


def test_the_checking_learner_refuses_a_bad_message_as_the_learner_and_serves_the_others():
    judge = Judge(seed=1)
    learner = CheckingLearner(judge, token="secret")
    learner.start()
    good = bad = None
    try:
        good = ScriptedActor(learner.address, handshake_request("CartPole-v1", 2, "good"),
                             token="secret")
        bad = ScriptedActor(learner.address, handshake_request("CartPole-v1", 2, "bad"),
                            token="secret")
        observations = np.zeros((2, 4), np.float32)
        assert good.actions(good.step(step_request(observations))).shape == (2,)
        with pytest.raises(grpc.RpcError) as refused:
            bad.step(step_request(observations.astype(np.float64)))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "observations: dtype float64, expected float32" in refused.value.details()
        for _ in range(3):  # the other session is answered on
            actions = good.actions(good.step(step_request(observations)))
            assert set(actions.tolist()) <= {0, 1}
    finally:
        for actor in (good, bad):
            if actor is not None:
                actor.close()
        learner.stop()
    assert judge.verdicts.verdict("message format") == BROKEN
    assert "actor 'bad'" in judge.verdicts.evidence["message format"][0]
    assert judge.stopped_client == "INVALID_ARGUMENT"


def test_the_command_line_takes_the_client_after_the_double_dash() -> None:
    args = cli.build_parser().parse_args(
        ["conformance", "--steps", "5", "--", "seed-rl", "actors", "--num-actors", "1"])
    assert args.role == "conformance" and args.steps == 5
    assert [a for a in args.command if a != "--"] == ["seed-rl", "actors", "--num-actors", "1"]


def test_docs_protocol_md_lists_every_rule_as_the_checker_has_it() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    checking = doc[doc.index("## Checking a client"):]
    rows = re.findall(r"^\| `([a-z ]+)` \| (.+?) \| (.+?) \|$", checking, re.MULTILINE)
    assert rows == [(rule.name, rule.what, rule.section) for rule in RULES]
    headings = set(re.findall(r"^#+ (.+)$", doc, re.MULTILINE))
    for rule in RULES:
        assert set(rule.section.split(", ")) <= headings, rule.section


@pytest.mark.parametrize(("argv", "message"), [
    (["conformance"], "give the client command after --"),
    (["conformance", "--exit-timeout", "0", "--", "client"], "--exit-timeout must be a positive"),
    (["conformance", "--steps", "0", "--", "client"], "--steps must be at least 1"),
])
def test_a_bad_conformance_command_line_is_one_error_line_and_exit_2(argv, message, capsys):
    with pytest.raises(SystemExit) as exited:
        cli.main(argv)
    assert exited.value.code == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("seed-rl conformance: error: ") and message in line
