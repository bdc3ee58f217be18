"""Env groups (actors/groups.py): one actor process steps its K environments as G sessions
of the learner, one thread each.

Against the stand-in learner (real gRPC, tests/support/stand_in_learner.py), with real gymnasium
environments: in-process actors in a thread with a stop event, and real ``python -m
actors`` processes. The real learner's side of groups is tests/unit/test_actor_contract.py.
Every wait is bounded; nothing asserts a timing.
"""

from __future__ import annotations

import logging
import time

import grpc
import gymnasium as gym
import numpy as np
import pytest
from support import custom_env_plugin
from support.procs import WAIT
from support.stand_in_learner import check_reveal_trajectory, groups_of, wait_streaming

from actors.client import EXIT_CRASH, EXIT_PERMANENT
from actors.counters import Counters
from actors.env_loop import env_seeds
from actors.groups import group_actor_id, split_envs
from seed_rl.config import Config

REVEAL = "seed_rl.testing:RevealAction-v0"
LENGTH = 3  # RevealAction's episode length here


def make_config(address: str, **overrides) -> Config:
    values = dict(learner=address, env=REVEAL, env_kwargs={"episode_length": LENGTH},
                  envs_per_actor=4, env_groups="2", actor_id_prefix="grp",
                  reconnect_max_backoff=0.2, seed=0)
    values.update(overrides)
    return Config(**values)


# -- the split ----------------------------------------------------------------------------


def test_the_split_is_contiguous_even_and_never_leaves_a_group_empty() -> None:
    assert split_envs(5, 2) == [range(0, 3), range(3, 5)]
    assert split_envs(4, 1) == [range(0, 4)]
    for k in range(1, 13):
        for g in range(1, k + 1):
            parts = split_envs(k, g)
            sizes = [len(p) for p in parts]
            assert [i for p in parts for i in p] == list(range(k))
            assert min(sizes) >= 1 and max(sizes) - min(sizes) <= 1
            assert sizes == sorted(sizes, reverse=True)
    with pytest.raises(ValueError, match="3 groups"):
        split_envs(2, 3)
    assert group_actor_id("host-0", 0, 1) == "host-0"  # one group: the id of old
    assert [group_actor_id("host-0", g, 2) for g in (0, 1)] == ["host-0.g0", "host-0.g1"]


# -- sessions, alignment, counters --------------------------------------------------------


@pytest.mark.parametrize(("k", "g"), [(4, 2), (5, 2), (3, 3)], ids=["4x2", "5x2", "3x3"])
def test_each_group_is_a_session_of_its_share_and_every_step_arrives_once(
        learners, actors, k: int, g: int) -> None:
    learner = learners(env_id=REVEAL)
    counters = Counters()
    actor = actors(make_config(learner.address, envs_per_actor=k, env_groups=str(g)),
                   counters=counters)
    wait_streaming(learner, g, steps=8)
    actor.stop.set()
    assert actor.join() == 0
    sessions = groups_of(learner)
    assert [h.request.actor_id for h in sessions] == [f"grp-0.g{i}" for i in range(g)]
    assert [h.request.num_envs for h in sessions] == [len(r) for r in split_envs(k, g)]
    assert len({h.request.run_id for h in sessions}) == 1  # one incarnation, G sessions
    steps = episodes = 0
    for hello in sessions:
        mine = learner.steps_of(hello.session_id)
        k_g = hello.request.num_envs
        # the slot convention per session: each request follows from the one before with
        # the action answered to it, so no step of any env is lost or sent twice
        assert len(check_reveal_trajectory(mine, k_g, LENGTH, truncate=False)) >= k_g
        steps += (len(mine) - 1) * k_g  # the answer to the last request is never applied
        episodes += sum(len(step.episodes) for step in mine)
        # stopped: each group half-closed its stream rather than dropping it
        learner.wait_until(lambda s, sid=hello.session_id: sid in s.ended_sessions, WAIT,
                           f"the end of {hello.request.actor_id}'s stream")
    # the process's one row of counters is the sum of its groups
    assert counters.steps == steps and counters.episodes == episodes
    assert not counters.connected


def test_the_groups_seeds_together_are_the_seeds_of_one_group(learners, actors) -> None:
    learner = learners(env_id="CartPole-v1")
    first: dict[int, np.ndarray] = {}
    for g in (1, 2):
        before = {h.session_id for h in learner.sessions()}
        config = make_config(learner.address, env="CartPole-v1", env_kwargs={}, seed=7,
                             env_groups=str(g))
        actor = actors(config)
        learner.wait_until(
            lambda s, b=before, g=g: len([h for h in s.sessions() if h.session_id not in b]) == g
            and all(s.steps_of(h.session_id) for h in s.sessions()), WAIT, "first steps")
        actor.stop.set()
        assert actor.join() == 0
        mine = [h for h in groups_of(learner) if h.session_id not in before]
        first[g] = np.concatenate([learner.steps_of(h.session_id)[0].observations
                                   for h in mine])
    assert first[1].shape == (4, 4)
    np.testing.assert_array_equal(first[2], first[1])  # env i has seed i of the process
    assert len({row.tobytes() for row in first[2]}) == 4  # distinct across groups


@pytest.mark.parametrize("whose", ["own", "learners"])
def test_group_0_finds_the_env_and_runs_env_import_once_per_process(
        learners, actors, whose: str) -> None:
    plugin = "support.custom_env_plugin:register_envs"
    gym.registry.pop("CustomPlugin-v0", None)
    custom_env_plugin.CALLS.clear()
    try:
        if whose == "own":  # the actor's --env and --env-import
            learner = learners(env_id="CustomPlugin-v0")
            config = make_config(learner.address, env="CustomPlugin-v0", env_kwargs={},
                                 env_import=[plugin])
        else:  # no --env: the learner names it and its --env-import
            learner = learners(env_id="CustomPlugin-v0", env_import=[plugin])
            config = make_config(learner.address, env="", env_kwargs={})
        actor = actors(config)
        sessions = wait_streaming(learner, 2, steps=3)
        actor.stop.set()
        assert actor.join() == 0
    finally:
        gym.registry.pop("CustomPlugin-v0", None)
    assert len(custom_env_plugin.CALLS) == 1, "--env-import ran once per group, not process"
    asks = [h for h in learner.handshakes if not h.request.env_id]
    assert len(asks) == (0 if whose == "own" else 1)
    assert {h.request.env_id for h in sessions} == {"CustomPlugin-v0"}
    for hello in sessions:
        check_reveal_trajectory(learner.steps_of(hello.session_id), 2, 3, truncate=False)


def test_the_groups_share_one_connection_and_reconnect_each_its_own_session(
        learners, actors, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    learner = learners(env_id=REVEAL)
    actor = actors(make_config(learner.address))
    old = wait_streaming(learner, 2, steps=5)
    assert old[0].peer == old[1].peer  # one channel, one connection, two streams
    learner.stop()
    last_old = {h.request.actor_id: learner.steps_of(h.session_id)[-1] for h in old}
    deadline = time.monotonic() + WAIT
    while not sum("cannot reach the learner" in r.getMessage() for r in caplog.records) >= 2:
        assert time.monotonic() < deadline and actor.thread.is_alive(), "no reconnect attempts"
        time.sleep(0.05)
    learner.start()  # same port: every group reconnects by itself, as a new session
    learner.wait_until(lambda s: len(s.sessions()) == 4, WAIT, "two new sessions")
    new = [h for h in groups_of(learner) if h.session_id not in {o.session_id for o in old}]
    assert [h.request.actor_id for h in new] == ["grp-0.g0", "grp-0.g1"]
    assert {h.request.run_id for h in new} == {old[0].request.run_id}  # same incarnation
    learner.wait_until(lambda s: all(len(s.steps_of(h.session_id)) >= 3 for h in new), WAIT,
                       "steps of both new sessions")
    for hello in new:
        steps = learner.steps_of(hello.session_id)
        # the envs kept their state: the new session starts at the observation whose
        # action never came, or the one after it, with reward 0 and no flags
        before = last_old[hello.request.actor_id].observations
        for k, row in enumerate(steps[0].observations):
            t, episode = before[k]
            after = [0.0, episode + 1] if t + 1 == LENGTH else [t + 1, episode]
            assert row.tolist() in (before[k].tolist(), after)
        np.testing.assert_array_equal(steps[0].rewards, 0.0)
        for previous, current in zip(steps, steps[1:], strict=False):
            t = previous.observations[:, 0]
            np.testing.assert_array_equal(current.rewards, 10 * t + previous.actions)
    actor.stop.set()
    assert actor.join() == 0


# -- how a process ends -------------------------------------------------------------------


def test_a_permanent_error_in_one_group_stops_the_process(learners, actors, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    # group 1 is refused with a code that is retried until group 0 streams ...
    learner = learners(env_id=REVEAL, handshake_errors={
        "grp-0.g1": (grpc.StatusCode.ALREADY_EXISTS, "wait")})
    actor = actors(make_config(learner.address))
    learner.wait_until(lambda s: len(s.handshakes) >= 2, WAIT, "group 1's handshakes")
    (streaming,) = wait_streaming(learner, 1, steps=5)
    assert streaming.request.actor_id == "grp-0.g0"
    # ... and then with one that is not
    message = "observation spaces differ (the stand-in says no to group 1)"
    learner.handshake_errors["grp-0.g1"] = (grpc.StatusCode.FAILED_PRECONDITION, message)
    assert actor.join() == EXIT_PERMANENT
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("grp-0.g1" in e and message in e and "FAILED_PRECONDITION" in e
               for e in errors), errors
    assert any("group grp-0.g1 exited with code 2; stopped the other groups too" in e
               for e in errors), errors
    # the healthy group stopped too, closing its stream cleanly
    learner.wait_until(lambda s: streaming.session_id in s.ended_sessions, WAIT,
                       "group 0's stream to end")


def test_an_exception_in_one_group_is_the_process_crash(learners, actors, caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    crash_seed = env_seeds(0, "grp-0", 4)[3]  # env 3: group 1's second
    learner = learners(env_id=REVEAL)
    config = make_config(learner.address, env="support.custom_env_plugin:CrashOnSeed-v0",
                         env_kwargs={"crash_seed": crash_seed})
    actor = actors(config)
    assert actor.join() == EXIT_CRASH
    crashed = [r for r in caplog.records if "actor grp-0.g1 crashed" in r.getMessage()]
    assert len(crashed) == 1 and crashed[0].exc_info is not None  # the traceback is logged
    assert f"the env seeded {crash_seed} exploded" in str(crashed[0].exc_info[1])
    assert "group grp-0.g1 exited with code 1; stopped the other groups too" in caplog.text
    assert not any("grp-0.g0 crashed" in r.getMessage() for r in caplog.records)


def test_training_over_in_one_group_ends_every_group_with_0(learners, actors,
                                                            caplog) -> None:
    caplog.set_level(logging.INFO, logger="actors")
    learner = learners(env_id=REVEAL)
    actor = actors(make_config(learner.address))
    sessions = wait_streaming(learner, 2, steps=3)
    learner.training_over_after = 1  # every session's next answer says training is over
    assert actor.join() == 0
    for hello in sessions:
        learner.wait_until(lambda s, sid=hello.session_id: sid in s.ended_sessions, WAIT,
                           f"the end of {hello.request.actor_id}'s stream")
    lines = [r.getMessage() for r in caplog.records]
    assert lines.count("actor grp-0: the learner says training is over; exiting") == 1
