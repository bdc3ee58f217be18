"""Data-parallel replicas as real processes (torch.distributed, gloo on loopback): two replicas
with half batches equal one learner with the whole (also with every option of the update on:
PopArt, advantage normalisation, observation normalisation, 2 epochs of 2 minibatches, the
clipped surrogate, means),
and a replica without unrolls does not block the others."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from support.distributed_workers import make_config, make_model, replica
from support.unrolls import random_unrolls

from learner.training.store import Unrolls
from learner.training.update import Batch, build_optimizer, train_batch


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def run_replicas(tmp_path, shares: list[list[Unrolls]], overrides: dict, envs: list[int],
                 target_updates: int) -> list[dict]:
    port = free_port()
    context = mp.get_context("spawn")
    procs = [context.Process(target=replica, args=(rank, len(shares), port, str(tmp_path),
                                                   overrides, shares[rank], envs[rank],
                                                   target_updates))
             for rank in range(len(shares))]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0] * len(procs)
    return [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(len(shares))]


#: every option of the update on at once (their defaults are off)
ALL_OPTIONS = {"popart": True, "popart_beta": 0.1, "normalize_advantages": True, "epochs": 2,
               "minibatches": 2, "ppo_clip": 0.2, "normalize_observations": True}


@pytest.mark.parametrize(("lstm", "options"), [
    (False, {}), (True, {}), (False, ALL_OPTIONS), (True, ALL_OPTIONS),
    (False, {**ALL_OPTIONS, "loss_reduction": "mean", "max_grad_norm": 0.01})],
    ids=["mlp", "lstm", "mlp-all-options", "lstm-all-options", "mlp-all-options-mean"])
def test_two_replicas_with_half_batches_equal_one_learner_with_the_whole(tmp_path, lstm,
                                                                         options):
    overrides = {"lstm": lstm, **options}
    config = make_config(**overrides)
    T, B, updates = config.unroll_length, config.batch_size, 3
    batches = [random_unrolls(seed, T, B, lstm=config.lstm_size if lstm else 0)
               for seed in range(updates)]
    # One learner, all B unrolls per update.
    model = make_model(config)
    optimizer = build_optimizer(model, config)
    norms = []
    for version, unrolls in enumerate(batches):
        stats = train_batch(model, optimizer, Batch.from_unrolls(unrolls, torch.device("cpu")),
                            config, config.learning_rate, version=version)
        assert stats.optimizer_steps == config.epochs * config.minibatches
        norms.append(stats.grad_norm)
    assert max(norms) > config.max_grad_norm  # clipping is part of what must agree
    if config.popart:  # the statistics moved, and must agree too
        assert model.popart.mu.abs().item() > 0.01
    if config.normalize_observations:  # every observation of the batches was taken in
        assert model.observation_norm.parts["0"].count.item() == updates * T * B
    shares = [[u.select(slice(0, B // 2)) for u in batches],
              [u.select(slice(B // 2, B)) for u in batches]]
    results = run_replicas(tmp_path, shares, overrides, envs=[1, 1], target_updates=updates)
    for result in results:
        assert result["policy_version"] == updates and result["train_steps"] == updates
        # the group sums its gradients in another order than one learner does; after 12 Adam
        # steps at lr 1e-2 a weight whose gradient is near 0 carries that rounding: ~1e-5,
        # 2.6e-5 on one LSTM weight with every option on one AMD EPYC VM (a wrong gradient
        # moves weights by ~1e-2)
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(result["model"][name], tensor, rtol=1e-5, atol=1e-4)
        state = optimizer.state_dict()["state"]
        for index, moments in result["optimizer"]["state"].items():
            for key, value in moments.items():
                torch.testing.assert_close(value, state[index][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(("silent_envs", "options"), [(0, {}), (1, {}), (0, ALL_OPTIONS)],
                         ids=["actors-gone", "actors-silent", "actors-gone-all-options"])
def test_a_replica_without_unrolls_does_not_block_the_others(tmp_path, silent_envs, options):
    config = make_config(**options)
    updates = 4
    share = [random_unrolls(seed, config.unroll_length, config.batch_size // 2)
             for seed in range(updates)]
    results = run_replicas(tmp_path, [share, []], options, envs=[1, silent_envs],
                           target_updates=updates)
    assert [r["policy_version"] for r in results] == [updates, updates]
    assert [r["train_steps"] for r in results] == [updates, updates]
    for name, tensor in results[0]["model"].items():
        torch.testing.assert_close(results[1]["model"][name], tensor, rtol=0, atol=0)
    if options:  # the group trained what one learner with rank 0's unrolls alone would
        model = make_model(config)
        optimizer = build_optimizer(model, config)
        for version, unrolls in enumerate(share):
            train_batch(model, optimizer, Batch.from_unrolls(unrolls, torch.device("cpu")),
                        config, config.learning_rate, version=version)
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(results[0]["model"][name], tensor, rtol=1e-5,
                                       atol=1e-6)
    # Rank 0's updates were not held up for more than the bounded wait per tick.
    assert results[0]["seconds"] < 20
