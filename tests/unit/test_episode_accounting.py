"""The learner's episode returns come from what it received, never from what an actor
says: a real learner, a scripted client (real gRPC) that reports made-up EpisodeStats."""

from __future__ import annotations

import numpy as np
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner

from learner.serving.session import EpisodeTally

K = 2
OBS = np.zeros((K, 4), np.float32)


def test_the_tally_counts_only_episodes_it_saw_whole() -> None:
    tally = EpisodeTally(3)
    no = np.zeros(3, bool)
    # env 0 ends at once, reported as 5 steps long: it began before the session
    assert tally.add(np.array([1.0, 2.0, 3.0]), np.array([True, False, False]), no,
                     {0: 5}) == ([], [])
    assert tally.add(np.array([1.0, 2.0, 3.0]), no, no, {}) == ([], [])
    # env 0's second episode (2 steps, begun in this session: no report needed); env 1
    # reported with the length the learner counted (3): whole; env 2 not reported
    assert tally.add(np.array([0.5, 2.0, 3.0]), np.array([True, True, False]),
                     np.array([False, False, True]), {1: 3}) == ([1.5, 6.0], [2, 3])
    # a report never changes a return, and a wrong length leaves nothing out that was seen
    assert tally.add(np.array([4.0, 0.0, 1.0]), np.zeros(3, bool),
                     np.array([True, False, True]), {0: 99, 2: 1}) == ([4.0, 1.0], [1, 1])


def test_made_up_episode_stats_neither_count_nor_stop_the_run(tmp_path) -> None:
    config = make_config(tmp_path, env="CartPole-v1", target_return=100.0)
    with running_learner(config, train=False) as learner:
        actor = ScriptedActor(f"127.0.0.1:{learner.port}",
                              handshake_request("CartPole-v1", K), token=config.auth_token)
        try:
            actor.step(step_request(OBS))  # x_0: no transition
            ones, no = np.ones(K, np.float32), np.zeros(K, bool)
            ended = np.array([True, True])
            # x_0 began this session's view: its episodes count once they end
            for _ in range(2):
                actor.step(step_request(OBS, ones, no, no))
            actor.step(step_request(OBS, ones, ended, no,
                                    episodes=[(0, 1e6, 3), (1, 1e6, 3)]))
            for _ in range(3):
                actor.step(step_request(OBS, ones, no, no))
            actor.step(step_request(OBS, ones, np.array([True, False]), no,
                                    episodes=[(0, 5e5, 4)]))
        finally:
            actor.close()
        record = learner.emit_metrics()
        assert list(learner.metrics.returns) == [3.0, 3.0, 4.0]
        assert list(learner.metrics.lengths) == [3, 3, 4]
        assert record["episodes"] == 3 and record["episode_return_mean"] == 10.0 / 3
        assert record["actor_reported_return_mean"] == (1e6 + 1e6 + 5e5) / 3
        assert learner.stop_criterion(elapsed=1.0) == ""  # 1e6 reported, 3.3 seen


def test_an_episode_that_spans_a_reconnect_is_left_out(tmp_path) -> None:
    config = make_config(tmp_path, env="CartPole-v1")
    with running_learner(config, train=False) as learner:
        address, ones, no = f"127.0.0.1:{learner.port}", np.ones(K, np.float32), np.zeros(K, bool)
        request = handshake_request("CartPole-v1", K)
        first = ScriptedActor(address, request, token=config.auth_token)
        first.step(step_request(OBS))
        first.step(step_request(OBS, ones, no, no))
        first.close()
        again = ScriptedActor(address, handshake_request(
            "CartPole-v1", K, actor_id=request.actor_id), token=config.auth_token)
        try:
            again.step(step_request(OBS))  # the new session's x_0, mid-episode
            again.step(step_request(OBS, ones, np.array([True, True]), no,
                                    episodes=[(0, 2.0, 2), (1, 2.0, 2)]))
            again.step(step_request(OBS, ones, np.array([True, False]), no))
        finally:
            again.close()
        assert list(learner.metrics.returns) == [1.0]  # only env 0's episode seen whole
        assert learner.metrics.episodes == 1
        assert list(learner.metrics.reported_returns) == [2.0, 2.0]
