"""The options of seed_rl.functional.impala.loss against hand computations: the PPO-style
clipped surrogate (values and gradients), PopArt's scale, advantage normalisation (alone
and over a group's batch split in two), the mean reduction. Expectations come from
tests/support/impala_by_hand.py (the paper's quantities in plain loops) and plain Python
arithmetic on them."""

from __future__ import annotations

import math

import pytest
import torch
from support.impala_by_hand import BASELINE_COST, ENTROPY_COST, B, T, by_hand, inputs

from seed_rl.functional import impala

EPS = 0.2
CELLS = [(t, b) for t in range(T) for b in range(B)]


def run(x: dict[str, torch.Tensor], **options) -> impala.ImpalaLoss:
    return impala.loss(**x, baseline_cost=BASELINE_COST, entropy_cost=ENTROPY_COST, **options)


def plain_advantages(x: dict[str, torch.Tensor]) -> list[list[float]]:
    """A_t = r_t + gamma_t v_{t+1} - V(x_t): V-trace's advantage without its rho factor."""
    vs = by_hand(x, 1.0, 1.0, 1.0, 1.0)["vs"]
    r, g, v = x["rewards"].tolist(), x["discounts"].tolist(), x["values"].tolist()
    boot = x["bootstrap_value"].tolist()
    return [[r[t][b] + g[t][b] * (vs[t + 1][b] if t + 1 < T else boot[b]) - v[t][b]
             for b in range(B)] for t in range(T)]


def normalised(values: list[list[float]]) -> list[list[float]]:
    flat = [values[t][b] for t, b in CELLS]
    mean = sum(flat) / len(flat)
    std = math.sqrt(sum((a - mean) ** 2 for a in flat) / len(flat))
    return [[(values[t][b] - mean) / (std + 1e-8) for b in range(B)] for t in range(T)]


def test_the_clipped_surrogate_matches_a_hand_computation_values_and_gradients():
    x = inputs(seed=3)
    x["target_log_probs"].requires_grad_(True)
    x["values"].requires_grad_(True)
    out = run(x, ppo_clip=EPS)
    detached = {k: v.detach() for k, v in x.items()}
    adv = plain_advantages(detached)
    lp, lmu = detached["target_log_probs"].tolist(), detached["behaviour_log_probs"].tolist()
    loss_pg, grad_lp, clipped = 0.0, [[0.0] * B for _ in range(T)], 0
    for t, b in CELLS:
        rho = math.exp(lp[t][b] - lmu[t][b])
        unclipped, bounded = rho * adv[t][b], min(max(rho, 1 - EPS), 1 + EPS) * adv[t][b]
        loss_pg -= min(unclipped, bounded)
        if unclipped <= bounded:  # d(rho A)/d log pi = rho A
            grad_lp[t][b] = -rho * adv[t][b]
        else:  # the clipped branch is flat in log pi
            clipped += 1
    assert 0 < clipped < len(CELLS)  # both branches are exercised
    assert out.loss_pg.item() == pytest.approx(loss_pg, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(out.pg_advantages, torch.tensor(adv, dtype=torch.float64))
    expected = by_hand(detached, 1.0, 1.0, 1.0, 1.0)
    assert out.total.item() == pytest.approx(
        loss_pg + BASELINE_COST * expected["loss_baseline"]
        + ENTROPY_COST * expected["loss_entropy"], rel=1e-12)
    grads = torch.autograd.grad(out.total, [x["target_log_probs"], x["values"]])
    torch.testing.assert_close(grads[0], torch.tensor(grad_lp, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    # the values get only the baseline's gradient: A_t is a constant
    vs = torch.tensor(expected["vs"], dtype=torch.float64)
    torch.testing.assert_close(grads[1], -BASELINE_COST * (vs - detached["values"]),
                               rtol=1e-12, atol=1e-12)


def test_popart_scale_divides_the_value_error_and_the_advantages():
    x = inputs(seed=4)
    sigma = 2.5
    out = run(x, value_scale=torch.tensor([sigma], dtype=torch.float64))
    expected = by_hand(x, 1.0, 1.0, 1.0, 1.0)
    lp, values = x["target_log_probs"].tolist(), x["values"].tolist()
    adv = [[a / sigma for a in row] for row in expected["pg_advantages"]]
    assert out.loss_pg.item() == pytest.approx(-sum(adv[t][b] * lp[t][b] for t, b in CELLS),
                                               rel=1e-12)
    assert out.loss_baseline.item() == pytest.approx(
        0.5 * sum(((expected["vs"][t][b] - values[t][b]) / sigma) ** 2 for t, b in CELLS),
        rel=1e-12)
    # the targets stay in return units
    torch.testing.assert_close(out.vs, torch.tensor(expected["vs"], dtype=torch.float64))


@pytest.mark.parametrize("ppo_clip", [0.0, EPS], ids=["impala", "ppo-clip"])
def test_advantage_normalisation_matches_a_hand_computation(ppo_clip):
    x = inputs(seed=5)
    x["target_log_probs"].requires_grad_(True)
    out = run(x, normalize_advantages=True, ppo_clip=ppo_clip,
              value_scale=torch.tensor([3.0], dtype=torch.float64))  # sigma ~cancels
    detached = {k: v.detach() for k, v in x.items()}
    raw = (plain_advantages(detached) if ppo_clip
           else by_hand(detached, 1.0, 1.0, 1.0, 1.0)["pg_advantages"])
    adv = normalised([[a / 3.0 for a in row] for row in raw])
    torch.testing.assert_close(out.pg_advantages, torch.tensor(adv, dtype=torch.float64),
                               rtol=1e-12, atol=1e-12)
    assert out.pg_advantages.mean().item() == pytest.approx(0.0, abs=1e-12)
    assert out.pg_advantages.std(correction=0).item() == pytest.approx(1.0, rel=1e-6)
    if not ppo_clip:
        (grad,) = torch.autograd.grad(out.loss_pg, [x["target_log_probs"]])
        torch.testing.assert_close(grad, -torch.tensor(adv, dtype=torch.float64))


def test_a_group_normalises_with_the_moments_of_its_whole_batch():
    """Two halves of a batch (two replicas), each told the other's moments through
    ``group_sum``, normalise exactly as the whole batch does alone."""
    x = inputs(seed=6)
    whole = run(x, normalize_advantages=True)
    halves = [{k: (v[:, cols] if v.dim() == 2 else v[cols]) for k, v in x.items()}
              for cols in (slice(0, 1), slice(1, B))]
    raw = [run(h).pg_advantages for h in halves]  # each half's advantages, before
    calls = []
    for i, half in enumerate(halves):
        other = impala.moments(raw[1 - i])

        def group_sum(mine, other=other):
            calls.append(mine)
            return mine + other

        out = run(half, normalize_advantages=True, group_sum=group_sum)
        torch.testing.assert_close(out.pg_advantages, whole.pg_advantages[:, [0] if i == 0
                                                                          else [1, 2]])
    assert [c.tolist()[0] for c in calls] == [T * 1, T * 2]  # one call each: [count, ...]


def test_mean_reduction_divides_each_term_by_the_steps():
    x = inputs(seed=7)
    summed, mean = run(x), run(x, reduction="mean")
    for name in ("loss_pg", "loss_baseline", "loss_entropy", "total"):
        assert getattr(mean, name).item() == pytest.approx(
            getattr(summed, name).item() / (T * B), rel=1e-12)
    group = run(x, reduction="mean", steps=4 * T * B)  # a group four times this batch
    assert group.total.item() == pytest.approx(summed.total.item() / (4 * T * B), rel=1e-12)


def test_bad_options_are_refused():
    x = inputs()
    with pytest.raises(ValueError, match="ppo_clip"):
        run(x, ppo_clip=1.0)
    with pytest.raises(ValueError, match="reduction"):
        run(x, reduction="avg")
