"""IMPALA's quantities evaluated by hand for tests/unit/test_impala*.py: plain Python loops over
Espeholt et al. 2018, eq. 1 (the double sum, not the recursion the code uses) and section 4.2;
nothing here calls the code under test."""

from __future__ import annotations

import math

import numpy as np
import torch

T, B = 4, 3
BASELINE_COST, ENTROPY_COST = 0.5, 0.01


def inputs(seed: int = 0) -> dict[str, torch.Tensor]:
    """A small batch, float64; log-rhos spread so that every clip is active, one termination."""
    rng = np.random.default_rng(seed)
    discounts = np.full((T, B), 0.9)
    discounts[1, 0] = 0.0  # the episode of batch entry 0 ends after step 1
    arrays = {
        "target_log_probs": rng.uniform(-2.0, -0.1, (T, B)),
        "behaviour_log_probs": rng.uniform(-2.0, -0.1, (T, B)),
        "entropies": rng.uniform(0.1, 1.0, (T, B)),
        "values": rng.normal(0.0, 1.0, (T, B)),
        "bootstrap_value": rng.normal(0.0, 1.0, (B,)),
        "rewards": rng.normal(0.0, 1.0, (T, B)),
        "discounts": discounts,
    }
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in arrays.items()}


def clip(x: float, threshold: float | None) -> float:
    return x if threshold is None else min(threshold, x)


def by_hand(x: dict[str, torch.Tensor], rho_bar, pg_rho_bar, c_bar, lambda_) -> dict:
    """The paper's quantities, one number at a time."""
    lp, lmu = x["target_log_probs"].tolist(), x["behaviour_log_probs"].tolist()
    values, bootstrap = x["values"].tolist(), x["bootstrap_value"].tolist()
    rewards, gammas, entropies = x["rewards"].tolist(), x["discounts"].tolist(), x["entropies"].tolist()
    vs = [[0.0] * B for _ in range(T)]
    adv = [[0.0] * B for _ in range(T)]
    for b in range(B):
        value = [values[t][b] for t in range(T)] + [bootstrap[b]]  # V(x_0) .. V(x_T)
        rho = [math.exp(lp[t][b] - lmu[t][b]) for t in range(T)]
        c = [lambda_ * clip(r, c_bar) for r in rho]
        delta = [clip(rho[t], rho_bar) * (rewards[t][b] + gammas[t][b] * value[t + 1] - value[t])
                 for t in range(T)]
        for s in range(T):  # eq. 1: v_s = V(x_s) + sum_t (prod_{i<t} gamma_i c_i) delta_t
            total = value[s]
            for t in range(s, T):
                trace = 1.0
                for i in range(s, t):
                    trace *= gammas[i][b] * c[i]
                total += trace * delta[t]
            vs[s][b] = total
        for s in range(T):  # section 4.2, with v_T = V(x_T)
            v_next = vs[s + 1][b] if s + 1 < T else bootstrap[b]
            adv[s][b] = clip(rho[s], pg_rho_bar) * (rewards[s][b] + gammas[s][b] * v_next
                                                     - value[s])
    cells = [(t, b) for t in range(T) for b in range(B)]
    loss_pg = -sum(adv[t][b] * lp[t][b] for t, b in cells)
    loss_baseline = 0.5 * sum((vs[t][b] - values[t][b]) ** 2 for t, b in cells)
    loss_entropy = -sum(entropies[t][b] for t, b in cells)
    return {
        "vs": vs, "pg_advantages": adv, "loss_pg": loss_pg, "loss_baseline": loss_baseline,
        "loss_entropy": loss_entropy,
        "total": loss_pg + BASELINE_COST * loss_baseline + ENTROPY_COST * loss_entropy,
        "entropy": -loss_entropy / len(cells),
    }
