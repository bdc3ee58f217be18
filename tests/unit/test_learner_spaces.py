"""Any carried gymnasium space through the learner's own parts: models built for every kind
of observation and action, packed rows unpacked exactly as seed_rl/spaces.py packs them,
and inference -> store -> training replaying exactly what was served (real batcher, store
and trainer; the wire of composite spaces is tested with the actors)."""

from __future__ import annotations

import asyncio
import dataclasses

import gymnasium as gym
import numpy as np
import pytest
import torch

from learner.serving.batcher import InferenceBatcher
from learner.serving.requests import InferenceRequest
from learner.training import policies
from learner.training.models import (
    ActorCritic,
    FlatFeatures,
    MultiPartTorso,
    build_model,
    check_spaces,
    unpack_rows,
)
from learner.training.store import UnrollBuilder
from learner.training.torsos import MinAtarTorso, MLPTorso, NatureTorso
from learner.training.update import Batch, build_optimizer, train_step
from learner.training.weights import PublishedWeights
from seed_rl.config import Config
from seed_rl.spaces import UnsupportedSpace, observation_layout

Box, Discrete, MultiDiscrete, MultiBinary = (gym.spaces.Box, gym.spaces.Discrete,
                                             gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)

IMAGE = Box(0, 255, (36, 36, 3), np.uint8)
OBSERVATIONS = {
    "box-vector": Box(-1, 1, (5,), np.float32),
    "box-image-uint8": IMAGE,
    "bool-image-minatar": Box(0, 1, (10, 10, 4), bool),
    "discrete": Discrete(4, start=-2),
    "multi-discrete": MultiDiscrete([[2, 3], [4, 1]], start=[[0, 1], [-1, 5]]),
    "multi-binary": MultiBinary([2, 3]),
    "dict": gym.spaces.Dict({"image": Box(0, 255, (12, 12, 2), np.uint8),
                             "position": Box(-5, 5, (3,), np.float64),
                             "room": Discrete(7, start=1)}),
    "tuple": gym.spaces.Tuple((Discrete(3), Box(-1, 1, (2, 2), np.float32), MultiBinary(4))),
}
ACTIONS = {
    "discrete": Discrete(3, start=1),
    "multi-discrete": MultiDiscrete([3, 2, 4]),
    "box": Box(-2, 2, (2,), np.float32),
}


def config_for(name: str = "", **overrides) -> Config:
    """A small model; MinAtar's torso wherever an image is small (the config's validate()
    is bypassed on purpose: it does not know minatar yet)."""
    conv_net = "minatar" if name in ("bool-image-minatar", "dict") else "nature"
    return dataclasses.replace(Config(), hidden_sizes=[16], conv_net=conv_net, **overrides)


def rows_of(space: gym.Space, count: int, seed: int = 0) -> np.ndarray:
    """``count`` sampled observations as they travel: [count, *row_shape]."""
    layout = observation_layout(space)
    space.seed(seed)
    rows = np.zeros((count, *layout.row_shape), layout.row_dtype)
    for i in range(count):
        layout.write(rows, i, space.sample())
    return rows


@pytest.mark.parametrize("action", ACTIONS, ids=list(ACTIONS))
@pytest.mark.parametrize("observation", OBSERVATIONS, ids=list(OBSERVATIONS))
def test_a_model_is_built_for_every_space_kind(observation, action):
    space, action_space = OBSERVATIONS[observation], ACTIONS[action]
    torch.manual_seed(0)
    model = build_model(space, action_space, config_for(observation))
    distribution = model.distribution
    steps, batch = 2, 3
    rows = torch.from_numpy(rows_of(space, steps * batch)).view(
        steps, batch, *observation_layout(space).row_shape)
    out = model(rows, torch.zeros(steps, batch, dtype=torch.bool))
    assert out.policy_params.shape == (steps, batch, distribution.num_params)
    assert out.values.shape == (steps, batch)
    assert torch.isfinite(out.policy_params).all() and torch.isfinite(out.values).all()
    actions = distribution.sample(out.policy_params)
    assert actions.shape == (steps, batch, *distribution.action_shape)
    assert torch.isfinite(distribution.log_prob(out.policy_params, actions)).all()


def test_each_kind_of_part_gets_its_encoder():
    assert isinstance(build_model(OBSERVATIONS["box-vector"], ACTIONS["box"],
                                  config_for()).torso, MLPTorso)
    assert isinstance(build_model(IMAGE, ACTIONS["box"], config_for()).torso, NatureTorso)
    minatar = build_model(OBSERVATIONS["bool-image-minatar"], ACTIONS["discrete"],
                          config_for("bool-image-minatar"))
    assert isinstance(minatar.torso, MinAtarTorso)
    (conv,) = [m for m in minatar.torso.modules() if isinstance(m, torch.nn.Conv2d)]
    assert (conv.out_channels, conv.kernel_size, conv.stride) == (16, (3, 3), (1, 1))
    assert minatar.torso.fc[0].in_features == 16 * 8 * 8 and minatar.torso.output_size == 128
    composite = build_model(OBSERVATIONS["dict"], ACTIONS["discrete"], config_for("dict"))
    torso = composite.torso
    assert isinstance(torso, MultiPartTorso) and len(torso.images) == 1
    # position (3 floats) and room (one-hot of 7) go through the MLP together
    assert torso.mlp.net[0].in_features == 3 + 7
    assert torso.output_size == 128 + 16
    # A Gaussian head: the mean from the features, a learned state-independent log-std.
    gaussian = build_model(OBSERVATIONS["box-vector"], ACTIONS["box"], config_for())
    assert gaussian.policy.out_features == 2 and gaussian.policy_log_std.shape == (2,)
    out = gaussian(torch.zeros(1, 4, 5), torch.zeros(1, 4, dtype=torch.bool))
    torch.testing.assert_close(out.policy_params[..., 2:], torch.zeros(1, 4, 2))


def test_packed_rows_unpack_exactly_as_the_layout_does():
    space = gym.spaces.Dict({
        "a_image": Box(0, 1, (3, 4, 2), bool),
        "b_wide": Box(0, 60000, (3,), np.uint16),
        "c_float": Box(-1e300, 1e300, (2,), np.float64),
        "d_nested": gym.spaces.Tuple((Discrete(5, start=-3), MultiBinary(3),
                                      MultiDiscrete([2, 9]))),
        "e_half": Box(-1, 1, (1,), np.float16),
    })
    layout = observation_layout(space)
    for count in (6, 1):  # one row too (a batch of one env): leaves at unaligned offsets
        rows = rows_of(space, count, seed=3)
        expected = layout.unpack(rows)
        got = unpack_rows(torch.from_numpy(rows), layout)
        assert len(got) == len(expected) == 7
        for leaf, mine, theirs in zip(layout.leaves, got, expected, strict=True):
            assert mine.numpy().dtype == theirs.dtype == leaf.dtype, leaf.path
            np.testing.assert_array_equal(mine.numpy(), theirs, err_msg=leaf.path)


def test_categorical_parts_become_one_hots_of_value_minus_start():
    layout = observation_layout(OBSERVATIONS["multi-discrete"])  # nvec [[2,3],[4,1]]
    encode = FlatFeatures(layout.leaves[0])
    values = torch.tensor([[[1, 3], [2, 5]], [[0, 1], [-1, 5]]])  # start [[0,1],[-1,5]]
    expected = torch.tensor([
        [0, 1] + [0, 0, 1] + [0, 0, 0, 1] + [1],
        [1, 0] + [1, 0, 0] + [1, 0, 0, 0] + [1],
    ], dtype=torch.float32)
    torch.testing.assert_close(encode(values), expected)
    discrete = FlatFeatures(observation_layout(Discrete(4, start=-2)).leaves[0])
    torch.testing.assert_close(discrete(torch.tensor([-2, 1])),
                               torch.tensor([[1.0, 0, 0, 0], [0, 0, 0, 1]]))
    # Out of range (refused by validation) never crashes inference: no category is hot.
    assert discrete(torch.tensor([9, -7])).sum() == 0


def test_only_uint8_images_are_scaled():
    torch.manual_seed(0)
    torso = MinAtarTorso((5, 5, 2))
    bits = torch.rand(3, 5, 5, 2) < 0.5
    torch.testing.assert_close(torso(bits), torso(bits.float()))
    torch.testing.assert_close(torso(bits.to(torch.uint8) * 255), torso(bits.float()))


def test_images_too_small_for_the_conv_net_are_refused_with_a_suggestion():
    small = Box(0, 1, (10, 10, 4), bool)
    with pytest.raises(UnsupportedSpace, match=r"nature conv net needs images of at least "
                       r"36x36.*--conv-net impala or minatar"):
        check_spaces(small, Discrete(2), config_for())
    composite = gym.spaces.Dict({"frame": small, "x": Box(0, 1, (1,))})
    with pytest.raises(UnsupportedSpace, match="observation part 'frame'"):
        build_model(composite, Discrete(2), config_for())
    check_spaces(composite, Discrete(2), config_for("dict"))


async def infer(batcher: InferenceBatcher, request: InferenceRequest) -> InferenceRequest:
    """One request through the batcher, on an event loop as the service submits it."""
    batcher.submit(request)
    await asyncio.wait_for(request.waiter, 10)
    return request


def serve(model: ActorCritic, space: gym.Space, steps: int, num_envs: int,
          unroll_length: int) -> list:
    """Serve ``steps`` inference requests of ``num_envs`` envs through the real batcher and
    store them as the service does; returns the complete unrolls."""
    batcher = InferenceBatcher(PublishedWeights(model), torch.device("cpu"), max_batch=64,
                               max_wait_s=0.001)
    builder = UnrollBuilder.for_layouts(
        unroll_length, num_envs, model.observation_layout, model.action_layout,
        model.distribution.num_params,
        tuple(tuple(s.shape) for s in model.initial_state(num_envs)))
    core_state = model.initial_state(num_envs)
    rng = np.random.default_rng(0)
    complete = []
    batcher.start()
    try:
        for step in range(steps):
            starts = rng.random(num_envs) < 0.2
            request = asyncio.run(infer(batcher, InferenceRequest(
                observations=rows_of(space, num_envs, seed=step), episode_start=starts,
                core_state=core_state, final_env_indices=np.zeros(0, np.int64),
                final_observations=rows_of(space, 0))))
            assert request.error is None
            unrolls = builder.add_step(
                request.observations, rng.normal(size=num_envs).astype(np.float32), starts,
                np.zeros(num_envs, bool), np.zeros(num_envs, np.float32), request.actions,
                request.policy_params, request.policy_version,
                tuple(s.numpy() for s in core_state))
            core_state = request.next_core_state
            if unrolls is not None:
                complete.append(unrolls)
    finally:
        batcher.stop()
    return complete


@pytest.mark.parametrize(("observation", "action", "lstm"), [
    ("box-vector", "box", False), ("dict", "box", True), ("tuple", "multi-discrete", False),
    ("multi-discrete", "multi-discrete", True), ("box-image-uint8", "discrete", False),
])
def test_training_replays_inference_exactly_for_every_action_kind(observation, action, lstm):
    """The trainer's log pi(a_t|x_t), with the weights that acted, equals the behaviour's
    log mu(a_t|x_t) for the stored actions: log_rhos are 0 for Gaussian and multi-discrete
    actions too. Then a few updates train without error."""
    space, num_envs, unroll_length = OBSERVATIONS[observation], 3, 4
    config = config_for(observation, lstm=lstm, lstm_size=8, batch_size=num_envs,
                        unroll_length=unroll_length)
    torch.manual_seed(0)
    model = build_model(space, ACTIONS[action], config)
    unrolls = serve(model, space, 2 * unroll_length + 1, num_envs, unroll_length)
    assert len(unrolls) == 2
    first = unrolls[0]
    distribution = model.distribution
    assert first.actions.shape == (unroll_length + 1, num_envs, *distribution.action_shape)
    assert first.actions.dtype == (np.float32 if action == "box" else np.int64)
    assert first.behaviour_params.shape == (unroll_length + 1, num_envs,
                                            distribution.num_params)
    optimizer = build_optimizer(model, config)
    for unroll in unrolls:
        batch = Batch.from_unrolls(unroll, torch.device("cpu"))
        with torch.no_grad():
            output = model(batch.observations, batch.terminated | batch.truncated,
                           batch.core_state)
        torch.testing.assert_close(output.policy_params, batch.behaviour_params,
                                   atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(distribution.log_prob(output.policy_params, batch.actions),
                                   distribution.log_prob(batch.behaviour_params, batch.actions),
                                   atol=1e-5, rtol=1e-5)
    for unroll in unrolls:  # now train (the weights change, so this is after the replay)
        stats = train_step(model, optimizer, Batch.from_unrolls(unroll, torch.device("cpu")),
                           config, 1e-3)
        assert not stats.skipped and np.isfinite(stats.loss_total)
        assert np.isfinite(stats.entropy)


def test_the_gaussian_log_std_is_learned():
    space, num_envs, unroll_length = OBSERVATIONS["box-vector"], 4, 5
    config = config_for(batch_size=num_envs, unroll_length=unroll_length, entropy_cost=0.1)
    torch.manual_seed(0)
    model = build_model(space, ACTIONS["box"], config)
    (unrolls,) = serve(model, space, unroll_length + 1, num_envs, unroll_length)
    before = model.policy_log_std.detach().clone()
    train_step(model, build_optimizer(model, config),
               Batch.from_unrolls(unrolls, torch.device("cpu")), config, 1e-2)
    assert not torch.equal(model.policy_log_std.detach(), before)


def test_policies_module_is_what_the_model_uses():
    model = build_model(OBSERVATIONS["box-vector"], ACTIONS["multi-discrete"], config_for())
    assert isinstance(model.distribution, policies.MultiCategorical)
    assert model.distribution.nvec == (3, 2, 4)


def test_a_real_learner_serves_and_trains_a_box_action_env(tmp_path):
    """Pendulum-v1 (Box actions) through a real learner: the actions served are float32
    raw Gaussian samples, stored as they were sent, and the trainer updates on them."""
    from support.learner_client import ScriptedActor, handshake_request, step_request
    from support.learner_harness import make_config, running_learner

    env_id, num_envs, unroll_length = "Pendulum-v1", 3, 5
    config = make_config(tmp_path, env=env_id, unroll_length=unroll_length,
                         batch_size=num_envs, hidden_sizes=[16],
                         queue_size=2)  # room for both unrolls of each env
    with running_learner(config, train=False) as learner:
        envs = [gym.make(env_id) for _ in range(num_envs)]
        obs = np.stack([env.reset(seed=i)[0] for i, env in enumerate(envs)])
        actor = ScriptedActor(f"127.0.0.1:{learner.port}",
                              handshake_request(env_id, num_envs))
        request, sent = step_request(obs), []
        for _ in range(2 * unroll_length + 1):
            actions = actor.actions(actor.step(request))
            assert actions.dtype == np.float32 and actions.shape == (num_envs, 1)
            sent.append(actions)
            rewards = []
            for i, (env, action) in enumerate(zip(envs, actions, strict=True)):
                obs[i], reward, _, _, _ = env.step(np.clip(action, -2.0, 2.0))
                rewards.append(reward)
            request = step_request(obs, rewards)
        actor.close()
        unrolls = learner.queue.get(2 * num_envs, learner.trainer.policy_version, timeout=5)
        assert unrolls is not None
        assert unrolls.actions.dtype == np.float32
        assert unrolls.actions.shape == (unroll_length + 1, 2 * num_envs, 1)
        assert unrolls.behaviour_params.shape == (unroll_length + 1, 2 * num_envs, 2)
        np.testing.assert_array_equal(unrolls.actions[:, :num_envs], np.stack(
            sent[:unroll_length + 1]))  # the raw samples, unclipped, as they were sent
        for half in (slice(0, num_envs), slice(num_envs, None)):
            stats = learner.trainer.update(unrolls.select(half))
            assert not stats.skipped and np.isfinite(stats.loss_total)
        assert learner.trainer.policy_version == 2
