"""Checkpoints: round trip, resume with continuing counters, torn or corrupt files
skipped with a warning, NaN weights never written, non-finite updates skipped, snapshots
of one update while training runs, the RNG restored."""

from __future__ import annotations

import copy
import logging
import threading

import pytest
import torch
from support.learner_harness import make_config
from support.unrolls import random_unrolls

from learner.running.learner import Learner
from learner.training import checkpoint
from learner.training.models import build_model
from learner.training.update import Batch, build_optimizer, train_step


def make_learner(tmp_path, **overrides) -> Learner:
    return Learner(make_config(tmp_path, **overrides))


def test_resume_continues_counters_weights_and_optimizer(tmp_path):
    first = make_learner(tmp_path, optimizer="adam")
    first.metrics.env_steps, first.metrics.train_steps = 1234, 56
    first.trainer.weights.publish(first.trainer.model, 56)
    first.metrics.returns.extend([10.0, 20.0])
    with torch.no_grad():
        for p in first.trainer.model.parameters():
            p.add_(0.5)
    path = first.save_checkpoint()
    first.metrics.close()
    assert path is not None and path.name == "ckpt-0000000056.pt"

    second = make_learner(tmp_path, optimizer="adam")
    assert second.resumed_from == path
    assert (second.metrics.env_steps, second.metrics.train_steps, second.trainer.policy_version) == (
        1234, 56, 56)
    assert list(second.metrics.returns) == [10.0, 20.0]
    for a, b in zip(first.trainer.model.parameters(), second.trainer.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # Inference starts from the resumed weights too.
    with second.trainer.weights.read() as (served, version):
        assert version == 56
        for a, b in zip(first.trainer.model.parameters(), served.parameters(), strict=True):
            torch.testing.assert_close(a, b)
    second.metrics.close()

    third = make_learner(tmp_path, resume=False)
    assert third.resumed_from is None and third.metrics.env_steps == 0
    third.metrics.close()


def test_previous_checkpoint_is_kept_and_a_corrupt_newest_one_is_skipped(tmp_path, caplog):
    learner = make_learner(tmp_path)
    for steps in (10, 20, 30):
        learner.metrics.train_steps = steps
        learner.save_checkpoint()
    learner.metrics.close()
    files = checkpoint.list_checkpoints(tmp_path / "run")
    assert [f.name for f in files] == ["ckpt-0000000030.pt", "ckpt-0000000020.pt"]
    # A crash mid-write or a full disk: the newest file is cut short.
    data = files[0].read_bytes()
    files[0].write_bytes(data[: len(data) // 3])
    with caplog.at_level(logging.WARNING):
        state, path = checkpoint.load_latest(tmp_path / "run")
    assert path == files[1] and state["counters"]["train_steps"] == 20
    assert "ckpt-0000000030.pt is unreadable" in caplog.text
    # Garbage that is not a checkpoint at all.
    files[0].write_bytes(b"not a checkpoint")
    resumed = make_learner(tmp_path)
    assert resumed.metrics.train_steps == 20
    resumed.metrics.close()


def test_a_model_with_nan_weights_is_never_written(tmp_path):
    learner = make_learner(tmp_path)
    with torch.no_grad():
        next(learner.trainer.model.parameters()).fill_(float("nan"))
    assert learner.save_checkpoint() is None
    assert checkpoint.list_checkpoints(tmp_path / "run") == []
    with pytest.raises(checkpoint.CheckpointError, match="non-finite"):
        checkpoint.save(tmp_path / "run", learner.checkpoint_state())
    learner.metrics.close()


def test_checkpoints_load_without_unpickling(tmp_path):
    learner = make_learner(tmp_path)
    path = learner.save_checkpoint()
    learner.metrics.close()
    # weights_only loading refuses arbitrary objects: prove the file needs none.
    state = torch.load(path, weights_only=True)
    assert set(state) >= {"model", "optimizer", "counters", "config", "rng"}


def test_checkpoints_taken_while_training_hold_one_and_the_same_update(tmp_path):
    """The main thread snapshots while the trainer thread updates: every snapshot must
    equal the state after exactly ``train_steps`` updates, replayed here from scratch."""
    B, T, updates = 4, 8, 60
    config = make_config(tmp_path, optimizer="adam", batch_size=B, unroll_length=T,
                         queue_size=updates, max_policy_lag=10**6, hidden_sizes=[256, 256])
    learner = make_learner(tmp_path, **{k: getattr(config, k) for k in (
        "optimizer", "batch_size", "unroll_length", "queue_size", "max_policy_lag",
        "hidden_sizes")})
    initial = copy.deepcopy(learner.trainer.model.state_dict())
    batches = [random_unrolls(seed, T, B) for seed in range(updates)]
    for unrolls in batches:
        assert learner.queue.put(unrolls, timeout=1)
    stop = threading.Event()
    trainer = threading.Thread(target=learner.trainer.run, args=(stop,))
    trainer.start()
    snapshots = []
    while learner.metrics.train_steps < updates:
        snapshots.append(learner.checkpoint_state())
    stop.set()
    trainer.join()
    learner.metrics.close()
    middle = [s for s in snapshots if 0 < s["counters"]["train_steps"] < updates]
    assert len({s["counters"]["train_steps"] for s in middle}) >= 3  # taken mid-training

    replay = build_model(learner.spec.observation_space, learner.spec.action_space, config)
    replay.load_state_dict(initial)
    optimizer = build_optimizer(replay, config)
    by_steps = {s["counters"]["train_steps"]: s for s in snapshots}
    for done in range(updates + 1):
        if done in by_steps:
            snapshot = by_steps[done]
            assert snapshot["counters"]["policy_version"] == done
            for name, tensor in replay.state_dict().items():
                torch.testing.assert_close(snapshot["model"][name], tensor, rtol=0, atol=0)
            saved_state = snapshot["optimizer"]["state"]
            for index, state in optimizer.state_dict()["state"].items():
                for key, value in state.items():
                    torch.testing.assert_close(saved_state[index][key], value, rtol=0, atol=0)
        if done < updates:
            train_step(replay, optimizer, Batch.from_unrolls(batches[done], torch.device("cpu")),
                       config, config.learning_rate)


def test_resume_restores_the_rng_that_samples_actions(tmp_path):
    learner = make_learner(tmp_path)
    torch.manual_seed(1234)
    path = learner.save_checkpoint()
    learner.metrics.close()
    expected = torch.rand(5)
    torch.manual_seed(99)  # anything else in between
    resumed = make_learner(tmp_path)
    resumed.metrics.close()
    assert resumed.resumed_from == path
    torch.testing.assert_close(torch.rand(5), expected, rtol=0, atol=0)
    state = torch.load(path, weights_only=True)
    assert set(state["rng"]) <= {"torch", "cuda"}  # no half-restored NumPy state
