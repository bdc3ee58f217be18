"""Trajectory store: unroll overlap, nothing lost or duplicated, episode ends (terminated vs
truncated) in their slots and in the V-trace inputs. The bounded queue is in
test_unroll_queue.py."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from support.unrolls import A, K, T, feed, make_builder

from learner.training.models import ModelOutput
from learner.training.store import UnrollBuilder, Unrolls
from learner.training.update import Batch, vtrace_inputs
from seed_rl.config import Config
from seed_rl.functional import vtrace


def test_unrolls_have_t_plus_one_slots_and_overlap_by_one():
    unrolls = feed(make_builder(), 3 * T + 1)
    assert len(unrolls) == 3
    for i, u in enumerate(unrolls):
        assert u.observations.shape == (T + 1, K, 1)
        steps = u.observations[:, 0, 0]
        np.testing.assert_array_equal(steps, np.arange(i * T, i * T + T + 1))
        # Each env keeps its own column.
        np.testing.assert_array_equal(u.observations[:, 2, 0], steps + 2000)
        # The core state is the one before the unroll's first slot.
        np.testing.assert_array_equal(u.core_state[0], np.full((K, 5), i * T))
    for first, second in zip(unrolls, unrolls[1:], strict=False):
        np.testing.assert_array_equal(first.observations[-1], second.observations[0])


def test_every_transition_is_trained_on_exactly_once():
    """Transitions (slot t -> slot t+1) across all unrolls cover each step once."""
    unrolls = feed(make_builder(), 5 * T + 1)
    transitions = [int(x) for u in unrolls for x in u.observations[:-1, 0, 0]]
    assert transitions == list(range(5 * T))


def test_incomplete_unroll_is_not_emitted():
    assert feed(make_builder(), T) == []


# --- terminated vs truncated, through the store and into the V-trace inputs ----------------
#
# Steps s = 0 .. 2T of five environments (two unrolls). A flag at step s describes the
# transition that led to x_s, so it lands in slot s % T (and, at s = T, in both unrolls'
# overlapping slot: slot T of the first, slot 0 of the second).
ENDS_K = 5
GAMMA = 0.9
TERMINATED = {(2, 0), (8, 2), (4, 3)}  # (step, env): mid-unroll, last slot, boundary
TRUNCATED = {(4, 1): 5.0, (1, 2): 3.0, (6, 3): 7.0}  # (step, env): V(final observation)
# env 4 never ends: the control whose returns do bootstrap from V(x_T).


def episode_end_tables():
    steps = 2 * T + 1
    rewards = 100.0 * np.arange(ENDS_K)[None, :] + np.arange(steps)[:, None]
    terminated = np.zeros((steps, ENDS_K), bool)
    truncated = np.zeros((steps, ENDS_K), bool)
    values = np.zeros((steps, ENDS_K), np.float32)
    for step, env in TERMINATED:
        terminated[step, env] = True
    for (step, env), value in TRUNCATED.items():
        truncated[step, env] = True
        values[step, env] = value
    return rewards.astype(np.float32), terminated, truncated, values


def feed_episode_ends() -> list[Unrolls]:
    rewards, terminated, truncated, values = episode_end_tables()
    builder = UnrollBuilder(T, ENDS_K, (1,), np.dtype(np.float32), A)
    out = []
    for step in range(2 * T + 1):
        unrolls = builder.add_step(
            observations=np.full((ENDS_K, 1), step, np.float32),
            rewards=rewards[step], terminated=terminated[step], truncated=truncated[step],
            truncation_values=values[step], actions=np.full(ENDS_K, step % A),
            behaviour_params=np.zeros((ENDS_K, A), np.float32), policy_version=0)
        if unrolls is not None:
            out.append(unrolls)
    return out


def test_episode_end_flags_and_truncation_values_land_in_their_slots():
    rewards, terminated, truncated, values = episode_end_tables()
    first, second = feed_episode_ends()
    for i, unroll in enumerate((first, second)):
        rows = slice(i * T, i * T + T + 1)
        np.testing.assert_array_equal(unroll.rewards, rewards[rows])
        np.testing.assert_array_equal(unroll.terminated, terminated[rows])
        np.testing.assert_array_equal(unroll.truncated, truncated[rows])
        np.testing.assert_array_equal(unroll.truncation_values, values[rows])
    # Spelled out: mid-unroll ends sit in their own slot only ...
    assert first.terminated[2, 0] and not first.terminated[[0, 1, 3, 4], 0].any()
    assert first.truncated[1, 2] and first.truncation_values[1, 2] == 3.0
    assert second.truncated[2, 3] and second.truncation_values[2, 3] == 7.0
    assert second.terminated[T, 2]
    # ... and an end at step T is in the shared slot of both unrolls (slot 0 of the second
    # marks x_T as an episode start, which the recurrent replay needs).
    assert first.truncated[T, 1] and second.truncated[0, 1]
    assert first.truncation_values[T, 1] == second.truncation_values[0, 1] == 5.0
    assert first.terminated[T, 3] and second.terminated[0, 3]
    assert not (first.terminated | first.truncated)[:, 4].any()
    assert not (second.terminated | second.truncated)[:, 4].any()


def vtrace_inputs_of(unrolls: Unrolls, values: torch.Tensor, discount: float = GAMMA):
    batch = Batch.from_unrolls(unrolls, torch.device("cpu"))
    logits = torch.zeros(T + 1, unrolls.size, A)
    output = ModelOutput(logits, values, ())
    config = dataclasses.replace(Config(), discount=discount, reward_clip=0.0)
    return vtrace_inputs(batch, output, config)


def test_vtrace_inputs_stop_at_terminations_and_bootstrap_truncations_from_the_final_value():
    rewards, terminated, truncated, final_values = episode_end_tables()
    unrolls = feed_episode_ends()
    bootstraps = 0
    for i, unroll in enumerate(unrolls):
        values = torch.arange((T + 1) * ENDS_K, dtype=torch.float32).view(T + 1, ENDS_K) + 1
        inputs = vtrace_inputs_of(unroll, values)
        nxt = slice(i * T + 1, i * T + T + 1)  # the outcome of (x_t, a_t) is step t + 1
        ended = terminated[nxt] | truncated[nxt]
        expected_discounts = np.where(ended, 0.0, GAMMA)
        expected_rewards = rewards[nxt] + GAMMA * np.where(truncated[nxt], final_values[nxt], 0)
        np.testing.assert_allclose(inputs.discounts.numpy(), expected_discounts)
        np.testing.assert_allclose(inputs.rewards.numpy(), expected_rewards, rtol=1e-6)
        torch.testing.assert_close(inputs.bootstrap_value, values[-1])
        torch.testing.assert_close(inputs.values, values[:-1])
        bootstraps += int((inputs.rewards.numpy() != rewards[nxt]).sum())
    # Spelled out for the first unroll: env 0 terminated at step 2, env 2 truncated at step 1
    # (V = 3), env 1 truncated at the boundary step T (V = 5).
    first = vtrace_inputs_of(unrolls[0], torch.ones(T + 1, ENDS_K))
    assert first.discounts[1, 0] == 0 and first.rewards[1, 0] == rewards[2, 0]
    assert first.discounts[0, 2] == 0
    assert first.rewards[0, 2] == pytest.approx(rewards[1, 2] + GAMMA * 3.0)
    assert first.discounts[T - 1, 1] == 0
    assert first.rewards[T - 1, 1] == pytest.approx(rewards[T, 1] + GAMMA * 5.0)
    # The boundary truncation is bootstrapped exactly once across the two unrolls (the second
    # unroll's slot 0 is only an episode start, never an outcome).
    assert bootstraps == len(TRUNCATED)


def test_no_bootstrap_across_an_episode_end():
    """V-trace targets up to an episode end do not depend on any value after it (the next
    episode's observations, V(x_T) included), whether the episode terminated or was
    truncated; the environment that never ends does depend on V(x_T)."""
    first = feed_episode_ends()[0]
    torch.manual_seed(0)
    values = torch.randn(T + 1, ENDS_K)

    def targets(values):
        inputs = vtrace_inputs_of(first, values)
        return vtrace.from_importance_weights(
            torch.zeros(T, ENDS_K), inputs.discounts, inputs.rewards, inputs.values,
            inputs.bootstrap_value).vs

    base = targets(values)
    # (env, last slot t whose outcome ends the episode): env 2 truncated at step 1 (t = 0),
    # env 0 terminated at step 2 (t = 1), env 1 truncated and env 3 terminated at step T.
    for env, last in ((2, 0), (0, 1), (1, T - 1), (3, T - 1)):
        changed = values.clone()
        changed[last + 1 :, env] += 100.0  # every value after the end, V(x_T) included
        torch.testing.assert_close(targets(changed)[: last + 1, env], base[: last + 1, env])
    changed = values.clone()
    changed[T, 4] += 100.0
    assert (targets(changed)[:, 4] - base[:, 4]).abs().min() > 1.0  # the control bootstraps


def test_a_step_both_terminated_and_truncated_does_not_bootstrap():
    """Gymnasium may report both flags; termination wins: no bootstrap even when a
    truncation value is present in the slot."""
    builder = UnrollBuilder(T, 1, (1,), np.dtype(np.float32), A)
    unrolls = None
    for step in range(T + 1):
        end = step == 2
        unrolls = builder.add_step(
            observations=np.full((1, 1), step, np.float32), rewards=np.ones(1, np.float32),
            terminated=np.array([end]), truncated=np.array([end]),
            truncation_values=np.array([4.0 if end else 0.0], np.float32),
            actions=np.zeros(1, np.int64), behaviour_params=np.zeros((1, A), np.float32),
            policy_version=0)
    inputs = vtrace_inputs_of(unrolls, torch.ones(T + 1, 1))
    assert inputs.discounts[1, 0] == 0
    assert inputs.rewards[1, 0] == 1.0, "a terminated step must not bootstrap"
