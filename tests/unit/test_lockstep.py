"""Deterministic mode's pieces (learner/serving/lockstep.py): the counter-keyed noise, the
acting version of each rollout, sampling from given noise, the start-up refusals, and the
lockstep through a real learner and real gRPC clients: a tick waits for every actor of the
fixed set, its actions do not depend on who came first, another actor is refused, and an
actor that leaves mid-run stops the learner."""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import gymnasium as gym
import numpy as np
import pytest
import torch
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_harness import make_config, running_learner

from learner.serving.lockstep import (
    DeterminismBroken,
    acting_version,
    counter_noise,
    lag_ticks,
)
from learner.training.policies import Categorical, DiagGaussian, MultiCategorical
from seed_rl.config import Config, ConfigError, validate

K = 2  # environments per scripted actor


@pytest.fixture(autouse=True)
def torch_state_restored():
    """A deterministic learner sets process-wide torch state (deterministic algorithms, one
    thread): give the tests after these the state they had."""
    deterministic, threads = torch.are_deterministic_algorithms_enabled(), torch.get_num_threads()
    yield
    torch.use_deterministic_algorithms(deterministic)
    torch.set_num_threads(threads)


def test_counter_noise_rows_depend_on_seed_tick_and_row_alone() -> None:
    few = counter_noise(seed=3, tick=7, rows=2, size=4, kind="gumbel")
    many = counter_noise(seed=3, tick=7, rows=5, size=4, kind="gumbel")
    np.testing.assert_array_equal(few, many[:2])  # more rows after do not change these
    np.testing.assert_array_equal(many, counter_noise(3, 7, 5, 4, "gumbel"))
    assert not np.array_equal(many, counter_noise(3, 8, 5, 4, "gumbel"))  # another tick
    assert not np.array_equal(many, counter_noise(4, 7, 5, 4, "gumbel"))  # another seed
    assert few.dtype == np.float32 and few.shape == (2, 4)


def test_counter_noise_has_the_moments_of_its_kind() -> None:
    gumbel = counter_noise(0, 0, 20_000, 5, "gumbel")
    normal = counter_noise(0, 0, 20_000, 5, "normal")
    assert abs(gumbel.mean() - np.euler_gamma) < 0.02  # standard Gumbel: mean gamma
    assert abs(gumbel.var() - np.pi ** 2 / 6) < 0.05
    assert abs(normal.mean()) < 0.02 and abs(normal.std() - 1.0) < 0.02
    with pytest.raises(ValueError, match="unknown noise kind"):
        counter_noise(0, 0, 1, 1, "uniform")


def test_sampling_from_noise_is_each_distributions_own_draw() -> None:
    logits = torch.tensor([[0.0, 2.0, -1.0], [1.0, 1.0, 5.0]])
    noise = torch.tensor([[3.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    assert Categorical(3).sample_with_noise(logits, noise).tolist() == [0, 2]
    multi = MultiCategorical([2, 3])
    params = torch.tensor([[0.0, 1.0, 5.0, 0.0, 0.0]])
    assert multi.noise_size == 5
    assert multi.sample_with_noise(params, torch.tensor([[2.0, 0.0, 0.0, 0.0, 9.0]])
                                   ).tolist() == [[0, 2]]
    gaussian = DiagGaussian((2,))
    assert gaussian.noise_kind == "normal" and gaussian.noise_size == 2
    params = torch.tensor([[1.0, -1.0, 0.0, float(np.log(2.0))]])  # means 1, -1; stds 1, 2
    sample = gaussian.sample_with_noise(params, torch.tensor([[0.5, -1.0]]))
    torch.testing.assert_close(sample, torch.tensor([[1.5, -3.0]]))
    # The draw matches Gumbel-max's frequencies: softmax([0, log 3]) = [0.25, 0.75].
    frequent = Categorical(2).sample_with_noise(
        torch.tensor([[0.0, float(np.log(3.0))]]).expand(20_000, 2),
        torch.from_numpy(counter_noise(1, 0, 20_000, 2, "gumbel")))
    assert abs(frequent.float().mean().item() - 0.75) < 0.015


def test_each_tick_acts_with_the_version_trained_on_unrolls_completed_lag_ticks_before() -> None:
    # 16 envs of unrolls of 20 steps, 8 unrolls an update: a batch every 10 ticks.
    assert lag_ticks(20, 8, 16) == 10
    versions = [acting_version(t, 10, 20, 16, 8, 0) for t in range(0, 80, 5)]
    # Unrolls complete at ticks 20, 40, 60 (2 updates each), acting 10 ticks later.
    assert versions == [0, 0, 0, 0, 0, 0, 2, 2, 2, 2, 4, 4, 4, 4, 6, 6]
    assert acting_version(30, 10, 20, 16, 8, 40) == 42  # resumed at version 40
    # Cleanba's case, one batch per rollout: one rollout of lag.
    assert lag_ticks(20, 16, 16) == 20
    assert [acting_version(t, 20, 20, 16, 16, 0) for t in (19, 20, 39, 40, 60)] == \
        [0, 0, 0, 1, 2]
    # A batch larger than a rollout of the set: whole updates only.
    assert lag_ticks(4, 8, 2) == 16
    assert [acting_version(t, 16, 4, 2, 8, 0) for t in (16, 31, 32, 48)] == [0, 0, 1, 2]


def _config(**overrides) -> Config:
    values = dict(deterministic=True, num_actors=2, envs_per_actor=8, batch_size=8)
    values.update(overrides)
    return dataclasses.replace(Config(), **values)


def test_what_deterministic_mode_cannot_reproduce_is_refused_at_start_up() -> None:
    validate(_config())
    validate(_config(env_groups="1"))
    with pytest.raises(ConfigError, match="--env-groups 2"):
        validate(_config(env_groups="2"))
    validate(_config(replicas=2))  # each replica serves one of the two actors
    with pytest.raises(ConfigError, match="--replicas 2 an equal share of the --num-actors 3"):
        validate(_config(replicas=2, num_actors=3))
    # 2 x 8 envs, 8 unrolls an update: unrolls lag up to 5 versions.
    with pytest.raises(ConfigError, match="give --max-policy-lag 5 or more"):
        validate(_config(max_policy_lag=4))
    validate(_config(max_policy_lag=5))


def test_each_replica_serves_its_share_of_the_set_and_redirects_the_rest() -> None:
    from learner.serving.lockstep import FixedActorSet
    from learner.serving.validation import HandshakeRejected

    replica = FixedActorSet(num_actors=4, envs_per_actor=K, rank=1, world=2)
    assert replica.num_actors == 2
    assert [replica.replica_for(i) for i in ("h-0", "h-1", "h-3.g0", "h-12", "nohyphen")] == \
        [0, 1, 1, 0, None]
    addresses = ["127.0.0.1:1", "127.0.0.1:2"]
    assert replica.redirect("h-2", addresses) == "127.0.0.1:1"
    assert replica.redirect("h-3", addresses) == ""
    with pytest.raises(HandshakeRejected) as starting:  # the group's addresses not known yet
        replica.redirect("h-2", addresses[:1])
    assert starting.value.code == grpc.StatusCode.UNAVAILABLE
    replica.admit("h-3", K)
    with pytest.raises(HandshakeRejected, match="I mod 2 = 1"):
        replica.admit("h-2", K)


# -- through a real learner ---------------------------------------------------------------

def _learner_config(tmp_path, num_actors: int = 2, **overrides) -> Config:
    return make_config(tmp_path, env="CartPole-v1", deterministic=True, num_actors=num_actors,
                       envs_per_actor=K, batch_size=2, unroll_length=4, seed=11, **overrides)


def _observations(seed: int) -> np.ndarray:
    env = gym.make("CartPole-v1")
    rows = np.stack([env.reset(seed=seed + i)[0] for i in range(K)]).astype(np.float32)
    env.close()
    return rows


def _address(learner) -> str:
    return f"127.0.0.1:{learner.port}"


def _first_actions(tmp_path, first: str) -> dict[str, list[int]]:
    """Actors "a" and "b" each send their first observations, ``first`` well before the
    other; the actions each got."""
    with running_learner(_learner_config(tmp_path / first), train=False) as learner:
        actors = {name: ScriptedActor(_address(learner),
                                      handshake_request("CartPole-v1", K, actor_id=name))
                  for name in ("a", "b")}
        with ThreadPoolExecutor(2) as pool:
            early = pool.submit(actors[first].step, step_request(_observations(ord(first))))
            time.sleep(0.5)
            assert not early.done(), "a tick started before every actor of the set was in"
            other = "b" if first == "a" else "a"
            late = pool.submit(actors[other].step, step_request(_observations(ord(other))))
            responses = {first: early.result(10), other: late.result(10)}
        actions = {name: actors[name].actions(r).tolist() for name, r in responses.items()}
        for actor in actors.values():
            actor.close()
    return actions


def test_a_tick_waits_for_the_set_and_its_actions_do_not_depend_on_arrival(tmp_path) -> None:
    a_first = _first_actions(tmp_path, "a")
    b_first = _first_actions(tmp_path, "b")
    assert a_first == b_first


def test_only_the_fixed_set_is_served(tmp_path) -> None:
    with running_learner(_learner_config(tmp_path, num_actors=1), train=False) as learner:
        admitted = ScriptedActor(_address(learner), handshake_request("CartPole-v1", K,
                                                                      actor_id="a"))
        for request, words in ((handshake_request("CartPole-v1", K, actor_id="b"),
                                "--num-actors 1 actors"),
                               (handshake_request("CartPole-v1", K + 1, actor_id="a2"),
                                "--envs-per-actor 2")):
            with pytest.raises(grpc.RpcError) as refused:
                ScriptedActor(_address(learner), request)
            assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert words in refused.value.details()
        response = admitted.step(step_request(_observations(0)))  # the set is still served
        assert len(admitted.actions(response)) == K
        admitted.close()


def test_an_actor_leaving_mid_run_stops_the_learner(tmp_path) -> None:
    with running_learner(_learner_config(tmp_path), train=False) as learner:
        actors = [ScriptedActor(_address(learner), handshake_request("CartPole-v1", K,
                                                                     actor_id=name))
                  for name in ("a", "b")]
        with ThreadPoolExecutor(2) as pool:
            for answer in [pool.submit(actor.step, step_request(_observations(i)))
                           for i, actor in enumerate(actors)]:
                answer.result(10)
            actors[0].close()  # gone after one tick
            waiting = pool.submit(actors[1].step, step_request(_observations(5)))
            with pytest.raises(grpc.RpcError) as ended:
                waiting.result(10)
        assert ended.value.code() == grpc.StatusCode.UNAVAILABLE
        assert isinstance(learner.batcher.failure, DeterminismBroken)
        assert "actor 'a' left at tick 1" in str(learner.batcher.failure)
        actors[1].close()


def test_cuda_without_a_fixed_cublas_workspace_is_refused(monkeypatch) -> None:
    from learner.serving.lockstep import use_deterministic_kernels

    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    with pytest.raises(SystemExit, match="CUBLAS_WORKSPACE_CONFIG=:4096:8"):
        use_deterministic_kernels(torch.device("cuda"))
    assert not torch.are_deterministic_algorithms_enabled()  # refused before any change
