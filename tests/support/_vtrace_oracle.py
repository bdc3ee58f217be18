"""An independent NumPy oracle for V-trace, written straight from the IMPALA paper.

Espeholt et al. 2018, eq. (1): for an unroll x_s .. x_{s+n} (here: from s to the end of the
unroll, n = T - s),

    v_s = V(x_s) + sum_{t=s}^{s+n-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t V,
    delta_t V = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)),
    rho_t = min(rho_bar, pi/mu),  c_t = lambda * min(c_bar, pi/mu),

and section 4.2: pg_advantage_s = rho^pg_s (r_s + gamma_s v_{s+1} - V(x_s)), v_T = V(x_T).

This is the explicit double sum, evaluated term by term in float64: deliberately NOT the backward
recursion of Remark 1 that the implementation uses. It is O(T^2) per batch entry; test sizes only.
"""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log softmax over the last axis, in float64."""
    z = np.asarray(logits, dtype=np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def action_log_probs(logits: np.ndarray, actions: np.ndarray) -> np.ndarray:
    """log softmax(logits)[..., actions]."""
    return np.take_along_axis(log_softmax(logits), actions[..., None].astype(np.int64), -1)[..., 0]


def vtrace(
    log_rhos,
    discounts,
    rewards,
    values,
    bootstrap_value,
    clip_rho_threshold=1.0,
    clip_pg_rho_threshold=1.0,
    clip_c_threshold=1.0,
    lambda_=1.0,
):
    """Return (vs, pg_advantages) in float64. Time-major [T, B, ...] inputs, bootstrap [B, ...]."""
    log_rhos, discounts, rewards, values, bootstrap_value = (
        np.asarray(x, dtype=np.float64)
        for x in (log_rhos, discounts, rewards, values, bootstrap_value)
    )
    num_steps = values.shape[0]
    ratios = np.exp(log_rhos)

    def clip(threshold):
        return ratios if threshold is None else np.minimum(threshold, ratios)

    rho = clip(clip_rho_threshold)
    c = lambda_ * clip(clip_c_threshold)
    rho_pg = clip(clip_pg_rho_threshold)

    def value(t):  # V(x_t) for t = 0 .. T
        return bootstrap_value if t == num_steps else values[t]

    def delta(t):
        return rho[t] * (rewards[t] + discounts[t] * value(t + 1) - value(t))

    vs = []
    for s in range(num_steps):
        v_s = value(s) + 0.0 * delta(s)  # the broadcast shape
        for t in range(s, num_steps):
            weight = np.ones_like(v_s)
            for i in range(s, t):
                weight = weight * discounts[i] * c[i]
            v_s = v_s + weight * delta(t)
        vs.append(v_s)
    vs = np.stack(vs)

    def v_target(t):  # v_t for t = 0 .. T, with v_T = V(x_T)
        return bootstrap_value if t == num_steps else vs[t]

    pg_advantages = np.stack(
        [
            rho_pg[s] * (rewards[s] + discounts[s] * v_target(s + 1) - value(s))
            for s in range(num_steps)
        ]
    )
    return vs, pg_advantages
