"""Data-parallel replicas (learner/training/distributed.py): real gloo processes on 127.0.0.1.

* N = 2 replicas with B/2 unrolls each make the update of one learner on all B (MLP, LSTM),
  clipping and Adam included, and start from rank 0's weights;
* a replica without unrolls (its actors gone, or silent) does not block the others:
  updates go on and both ranks end with identical weights and policy version.
"""

from __future__ import annotations

import pytest
import torch

from learner.training.distributed import ReplicaGroup, advertised_address, replica_port_address

pytestmark = pytest.mark.timeout(180)


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
