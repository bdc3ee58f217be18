"""``seed-rl eval`` and the learner's periodic greedy evaluation (``--eval-every``).

Checkpoints are produced in the tests by a real :class:`learner.running.learner.Learner`; episodes
are played in real gymnasium environments; videos are real files read back with imageio.
"""

from __future__ import annotations

import json
import time

import gymnasium as gym
import numpy as np
import pytest
import torch
from support.learner_harness import make_config
from support.playing import STATS, WAIT, make_checkpoint, run_eval

from learner.running import evaluate
from learner.running.learner import Learner
from learner.training.models import build_model
from learner.watching import evaluator
from seed_rl.config import Config
from seed_rl.envs.making import make_env

REVEAL = "seed_rl.testing:RevealAction-v0"


def test_eval_is_reproducible_for_a_seed_and_takes_a_checkpoint_file(tmp_path, capsys) -> None:
    logdir = make_checkpoint(tmp_path)
    (checkpoint_file,) = (logdir / "checkpoints").glob("ckpt-*.pt")
    runs = [
        run_eval(capsys, "--checkpoint", str(target), "--episodes", "4", "--seed", "9")
        for target in (logdir, checkpoint_file, logdir)
    ]
    assert all(rc == 0 for rc, _ in runs)
    stats = [STATS.search(out).groups() for _, out in runs]
    assert stats[0] == stats[1] == stats[2]  # sampled actions, but seeded
    other = STATS.search(
        run_eval(capsys, "--checkpoint", str(logdir), "--episodes", "4", "--seed", "10")[1]
    ).groups()
    assert other != stats[0]


def test_eval_errors_say_what_to_do(tmp_path, capsys) -> None:
    with pytest.raises(SystemExit, match="does not exist"):
        run_eval(capsys, "--checkpoint", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit, match="no readable checkpoint.*train first"):
        run_eval(capsys, "--checkpoint", str(tmp_path / "empty"))
    logdir = make_checkpoint(tmp_path)
    with pytest.raises(SystemExit, match=r"give a \.mp4 or a \.gif"):
        run_eval(capsys, "--checkpoint", str(logdir), "--video", str(tmp_path / "x.avi"))
    with pytest.raises(SystemExit, match="--episodes must be positive"):
        run_eval(capsys, "--checkpoint", str(logdir), "--episodes", "0")
    (checkpoint_file,) = (logdir / "checkpoints").glob("ckpt-*.pt")
    checkpoint_file.write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="unreadable"):
        run_eval(capsys, "--checkpoint", str(checkpoint_file))


def rigged_model(config: Config, action: int):
    """A model whose greedy action is always ``action`` (policy weights 0, one bias up)."""
    import gymnasium as gym

    env = gym.make(config.env, **config.env_kwargs)
    model = build_model(env.observation_space, env.action_space, config)
    env.close()
    with torch.no_grad():
        model.policy.weight.zero_()
        model.policy.bias.zero_()
        model.policy.bias[action] = 5.0
    return model.eval()


@pytest.mark.parametrize("lstm", [False, True])
def test_play_episodes_counts_returns_and_lengths(lstm) -> None:
    # RevealAction pays 10 * t + a for action a at step t: 3 steps of action 1 -> 33.
    config = Config(
        env=REVEAL,
        env_kwargs={"episode_length": 3, "num_actions": 3},
        hidden_sizes=[8],
        lstm=lstm,
        lstm_size=8,
    )
    env = make_env(config.env, config.env_kwargs, config.env_import, config.env_wrapper, "test",
                   render_mode="rgb_array")
    try:
        stats = evaluator.play_episodes(
            rigged_model(config, 1), env, 4, greedy=True, seed=0, record=True
        )
    finally:
        env.close()
    assert stats.returns == [33.0] * 4 and stats.lengths == [3] * 4
    assert len(stats.frames) == 4 * (3 + 1)  # the first frame of each episode, then one per step
    summary = stats.summary()
    assert summary["episode_return_mean"] == 33.0 and summary["episode_return_std"] == 0.0
    assert (summary["episode_return_min"], summary["episode_return_max"]) == (33.0, 33.0)


class DictObservationBoxActionEnv(gym.Env):
    """Dict observations, a Box action in [-1, 1]^2; pays action[0] - action[1] per step
    for 3 steps and records every action it is given."""

    observation_space = gym.spaces.Dict({"t": gym.spaces.Discrete(4),
                                         "v": gym.spaces.Box(-1, 1, (2,), np.float32)})
    action_space = gym.spaces.Box(-1, 1, (2,), np.float32)

    def __init__(self):
        self.taken: list[np.ndarray] = []
        self._t = 0

    def _obs(self):
        return {"t": self._t, "v": np.full(2, 0.5 * self._t - 0.5, np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self._t = 0
        return self._obs(), {}

    def step(self, action):
        self.taken.append(action)
        self._t += 1
        return self._obs(), float(action[0] - action[1]), self._t >= 3, False, {}


@pytest.mark.parametrize("greedy", [True, False])
def test_box_actions_are_clipped_to_the_bounds_before_env_step(greedy) -> None:
    """The greedy action is the Gaussian's mean (here far outside the bounds); whatever the
    policy picks, the environment gets it clipped, as the actors do."""
    env = DictObservationBoxActionEnv()
    model = build_model(env.observation_space, env.action_space, Config(hidden_sizes=[8]))
    with torch.no_grad():
        model.policy.weight.zero_()
        model.policy.bias.copy_(torch.tensor([10.0, -10.0]))
    stats = evaluator.play_episodes(model.eval(), env, 2, greedy=greedy, seed=0)
    assert stats.lengths == [3, 3]
    taken = np.stack(env.taken)
    assert taken.dtype == np.float32 and ((taken >= -1) & (taken <= 1)).all()
    if greedy:
        assert stats.returns == [6.0, 6.0]
        np.testing.assert_array_equal(taken, np.tile([1.0, -1.0], (6, 1)))


def test_config_round_trips_through_checkpoint_json() -> None:
    original = Config(
        env=REVEAL,
        env_kwargs={"pixels": 8},
        hidden_sizes=[3, 4],
        lstm=True,
        auth_token="secret",
        target_return=float("nan"),
    )
    text = json.dumps(original.to_json_dict())
    restored = evaluate.config_from_json(json.dumps({**json.loads(text), "future_knob": 1}))
    assert restored.env_kwargs == {"pixels": 8} and restored.hidden_sizes == [3, 4]
    assert restored.lstm and np.isnan(restored.target_return)
    assert restored.auth_token == ""  # redacted in the file, never restored


def test_eval_every_logs_greedy_evaluations(tmp_path) -> None:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    config = make_config(
        tmp_path,
        env=REVEAL,
        env_kwargs={"episode_length": 4},
        hidden_sizes=[8],
        eval_every=0.2,
        eval_episodes=2,
    )
    learner = Learner(config)
    learner.start(train=False)
    try:
        deadline = time.monotonic() + WAIT
        while learner.evaluator.evaluations < 1:
            assert time.monotonic() < deadline, "no evaluation happened"
            assert learner.failure is None, learner.failure
            time.sleep(0.05)
        record = learner.emit_metrics()
    finally:
        learner.request_stop("test finished")
        learner.shutdown()
    assert learner.failure is None
    assert record["eval/episodes"] == 2.0
    assert record["eval/episode_length_mean"] == 4.0
    assert 0.0 <= record["eval/episode_return_min"] <= record["eval/episode_return_max"]
    lines = [
        json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().split("\n") if x
    ]
    assert any("eval/episode_return_mean" in line for line in lines)
    events = EventAccumulator(str(tmp_path / "run" / "tb"))
    events.Reload()
    assert "eval/episode_return_mean" in events.Tags()["scalars"]


def test_a_failing_evaluator_stops_the_learner(tmp_path) -> None:
    config = make_config(tmp_path, env=REVEAL, hidden_sizes=[8], eval_every=0.1)
    learner = Learner(config)
    learner.config = Config(**{**vars(config), "env": "NoSuchEnv-v0"})  # breaks make_env only
    learner.start(train=False)
    try:
        deadline = time.monotonic() + WAIT
        while not learner.stop_requested.is_set():
            assert time.monotonic() < deadline, "the learner did not stop"
            time.sleep(0.05)
    finally:
        learner.shutdown()
    assert "evaluator failed" in learner.stop_reason
    assert learner.failure is not None
