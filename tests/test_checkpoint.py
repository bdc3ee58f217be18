"""Checkpoints: round trip, resume with continuing counters, torn or corrupt files
skipped with a warning, NaN weights never written, non-finite updates skipped."""

from __future__ import annotations

import logging

import pytest
import torch
from learner_harness import make_config

from learner import checkpoint
from learner.main import Learner


def make_learner(tmp_path, **overrides) -> Learner:
    return Learner(make_config(tmp_path, **overrides))


def test_resume_continues_counters_weights_and_optimizer(tmp_path):
    first = make_learner(tmp_path, optimizer="adam")
    first.metrics.env_steps, first.metrics.train_steps, first.policy_version = 1234, 56, 56
    first.metrics.returns.extend([10.0, 20.0])
    with torch.no_grad():
        for p in first.model.parameters():
            p.add_(0.5)
    path = first.save_checkpoint()
    first.metrics.close()
    assert path is not None and path.name == "ckpt-0000000056.pt"

    second = make_learner(tmp_path, optimizer="adam")
    assert second.resumed_from == path
    assert (second.metrics.env_steps, second.metrics.train_steps, second.policy_version) == (
        1234, 56, 56)
    assert list(second.metrics.returns) == [10.0, 20.0]
    for a, b in zip(first.model.parameters(), second.model.parameters(), strict=True):
        torch.testing.assert_close(a, b)
    # Inference starts from the resumed weights too.
    for a, b in zip(first.model.parameters(), second.inference_model.parameters(), strict=True):
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
        next(learner.model.parameters()).fill_(float("nan"))
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
