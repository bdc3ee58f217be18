"""Data-parallel replicas (learner/training/distributed.py): real gloo processes on 127.0.0.1.

* N = 2 replicas with B/2 unrolls each make the update of one learner on all B (MLP, LSTM),
  clipping and Adam included, and start from rank 0's weights;
* a replica without unrolls (its actors gone, or silent) does not block the others:
  updates go on and both ranks end with identical weights and policy version.
"""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp
from distributed_workers import make_config, make_model, replica
from unrolls import random_unrolls

from learner.training.distributed import ReplicaGroup, advertised_address, replica_port_address
from learner.training.store import Unrolls
from learner.training.trainer import Batch, build_optimizer, train_step

pytestmark = pytest.mark.timeout(180)


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


def test_single_learner_without_environment():
    group = ReplicaGroup.from_env(torch.device("cpu"), environ={})
    assert (group.rank, group.world_size, group.distributed, group.backend) == (0, 1, False, "")
    assert group.all_gather({"x": 1}) == [{"x": 1}]
    assert not torch.distributed.is_initialized()


def test_a_rank_outside_the_group_is_refused_before_any_rendezvous():
    env = {"WORLD_SIZE": "2", "RANK": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "1"}
    with pytest.raises(SystemExit, match="RANK=2 is not below WORLD_SIZE=2"):
        ReplicaGroup.from_env(torch.device("cpu"), environ=env)
    assert not torch.distributed.is_initialized()


def test_each_replica_binds_the_base_port_plus_its_local_rank():
    assert replica_port_address("0.0.0.0:50051", 2) == "0.0.0.0:50053"
    assert replica_port_address("127.0.0.1:0", 1) == "127.0.0.1:0"
    assert replica_port_address("[::]:7000", 1) == "[::]:7001"


def test_advertised_address_names_each_replica():
    template = "learner-{rank}.learner.rl.svc:50051"  # --advertise-address wins over --address
    assert advertised_address(template, 3, 0, "0.0.0.0", 50051) == "learner-3.learner.rl.svc:50051"
    assert advertised_address("node-a:7000", 1, 1, "10.0.0.1", 7001) == "node-a:7001"  # 2 a machine
    with pytest.raises(SystemExit, match="HOST:PORT"):
        advertised_address("learner-0", 0, 0, "0.0.0.0", 50051)
    # without it: the host of --address and the bound port, or the host the actor dialled
    assert advertised_address("", 1, 1, "10.0.0.1", 50052) == "10.0.0.1:50052"
    assert advertised_address("", 1, 1, "0.0.0.0", 50052) == ":50052"
    assert advertised_address("", 0, 0, "[::]", 50051) == ":50051"


@pytest.mark.parametrize("lstm", [False, True], ids=["mlp", "lstm"])
def test_two_replicas_with_half_batches_equal_one_learner_with_the_whole(tmp_path, lstm):
    overrides = {"lstm": lstm}
    config = make_config(**overrides)
    T, B, updates = config.unroll_length, config.batch_size, 3
    batches = [random_unrolls(seed, T, B, lstm=config.lstm_size if lstm else 0)
               for seed in range(updates)]
    # One learner, all B unrolls per update.
    model = make_model(config)
    optimizer = build_optimizer(model, config)
    norms = []
    for unrolls in batches:
        stats = train_step(model, optimizer, Batch.from_unrolls(unrolls, torch.device("cpu")),
                           config, config.learning_rate)
        norms.append(stats.grad_norm)
    assert max(norms) > config.max_grad_norm  # clipping is part of what must agree
    shares = [[u.select(slice(0, B // 2)) for u in batches],
              [u.select(slice(B // 2, B)) for u in batches]]
    results = run_replicas(tmp_path, shares, overrides, envs=[1, 1], target_updates=updates)
    for result in results:
        assert result["policy_version"] == updates and result["train_steps"] == updates
        for name, tensor in model.state_dict().items():
            torch.testing.assert_close(result["model"][name], tensor, rtol=1e-5, atol=1e-6)
        state = optimizer.state_dict()["state"]
        for index, moments in result["optimizer"]["state"].items():
            for key, value in moments.items():
                torch.testing.assert_close(value, state[index][key], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("silent_envs", [0, 1], ids=["actors-gone", "actors-silent"])
def test_a_replica_without_unrolls_does_not_block_the_others(tmp_path, silent_envs):
    config = make_config()
    updates = 4
    share = [random_unrolls(seed, config.unroll_length, config.batch_size // 2)
             for seed in range(updates)]
    results = run_replicas(tmp_path, [share, []], {}, envs=[1, silent_envs],
                           target_updates=updates)
    assert [r["policy_version"] for r in results] == [updates, updates]
    assert [r["train_steps"] for r in results] == [updates, updates]
    for name, tensor in results[0]["model"].items():
        torch.testing.assert_close(results[1]["model"][name], tensor, rtol=0, atol=0)
    # Rank 0's updates were not held up for more than the bounded wait per tick.
    assert results[0]["seconds"] < 20
