"""Inputs for the V-trace tests (tests/unit/test_vtrace.py, test_vtrace_logits.py): random
unrolls whose importance weights spread so that every clip is active, the clipping settings
to try, tolerances by dtype, and the NumPy oracle (_vtrace_oracle.py) on them."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from support import _vtrace_oracle as oracle

# (clip_rho_threshold, clip_pg_rho_threshold, clip_c_threshold, lambda_)
CLIPPING = [
    pytest.param(1.0, 1.0, 1.0, 1.0, id="defaults"),
    pytest.param(None, None, None, 1.0, id="no-clipping"),
    pytest.param(0.5, 2.0, 0.8, 1.0, id="rho0.5-pg2-c0.8"),
    pytest.param(2.0, 0.5, 1.5, 1.0, id="rho2-pg0.5-c1.5"),
    pytest.param(1.0, 1.0, 1.0, 0.5, id="lambda0.5"),
    pytest.param(None, 1.0, 0.3, 0.95, id="rho-none-c0.3-lambda0.95"),
    pytest.param(3.7, None, None, 0.9, id="pg-none-c-none"),
]


def tolerances(dtype: torch.dtype) -> dict[str, float]:
    return (
        {"rtol": 1e-5, "atol": 1e-5} if dtype == torch.float32 else {"rtol": 1e-10, "atol": 1e-10}
    )


def random_inputs(
    num_steps: int,
    batch: int,
    dtype: torch.dtype = torch.float64,
    *,
    seed: int = 0,
    termination_prob: float = 0.1,
    log_rho_scale: float = 1.0,
    trailing: tuple[int, ...] = (),
) -> dict[str, torch.Tensor]:
    """Inputs of from_importance_weights; log_rhos spread so that every clip is active."""
    rng = np.random.default_rng(seed)
    shape = (num_steps, batch, *trailing)
    discounts = rng.uniform(0.8, 1.0, shape)
    discounts[rng.uniform(size=shape) < termination_prob] = 0.0
    arrays = {
        "log_rhos": rng.normal(0.0, log_rho_scale, shape),
        "discounts": discounts,
        "rewards": rng.normal(0.0, 1.0, shape),
        "values": rng.normal(0.0, 2.0, shape),
        "bootstrap_value": rng.normal(0.0, 2.0, shape[1:]),
    }
    return {k: torch.tensor(v, dtype=dtype) for k, v in arrays.items()}


def oracle_of(inputs: dict[str, torch.Tensor], **kwargs) -> tuple[np.ndarray, np.ndarray]:
    return oracle.vtrace(**{k: v.cpu().double().numpy() for k, v in inputs.items()}, **kwargs)


def random_logits_inputs(num_steps=6, batch=4, num_actions=5, dtype=torch.float64, seed=12):
    gen = torch.Generator().manual_seed(seed)
    rest = random_inputs(num_steps, batch, dtype=dtype, seed=seed)
    del rest["log_rhos"]
    return {
        "behavior_policy_logits": torch.randn(num_steps, batch, num_actions, generator=gen).to(
            dtype
        ),
        "target_policy_logits": torch.randn(num_steps, batch, num_actions, generator=gen).to(dtype),
        "actions": torch.randint(0, num_actions, (num_steps, batch), generator=gen),
        **rest,
    }
