"""seed_rl.functional.impala.loss against the paper's formulas, evaluated by hand.

The expected numbers come from plain Python loops over Espeholt et al. 2018, eq. 1 (the double
sum, not the recursion the code uses) and section 4.2; nothing here calls the code under test
to build its expectations. The gradient tests check that each input gets exactly the gradient
the paper's update prescribes: advantages and V-trace targets are constants."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from support.impala_by_hand import BASELINE_COST, ENTROPY_COST, B, T, by_hand, inputs

from seed_rl.functional import impala

DOCS = Path(__file__).resolve().parents[2] / "docs" / "functional.md"

# (clip_rho_threshold, clip_pg_rho_threshold, clip_c_threshold, lambda_)
CLIPPING = [
    pytest.param(1.0, 1.0, 1.0, 1.0, id="defaults"),
    pytest.param(0.8, 1.5, 0.9, 0.7, id="rho0.8-pg1.5-c0.9-lambda0.7"),
    pytest.param(None, None, None, 1.0, id="no-clipping"),
]


def run(x: dict[str, torch.Tensor], rho_bar, pg_rho_bar, c_bar, lambda_) -> impala.ImpalaLoss:
    return impala.loss(**x, baseline_cost=BASELINE_COST, entropy_cost=ENTROPY_COST,
                       clip_rho_threshold=rho_bar, clip_pg_rho_threshold=pg_rho_bar,
                       clip_c_threshold=c_bar, lambda_=lambda_)


@pytest.mark.parametrize(("rho_bar", "pg_rho_bar", "c_bar", "lambda_"), CLIPPING)
def test_losses_match_the_paper_by_hand(rho_bar, pg_rho_bar, c_bar, lambda_):
    x = inputs()
    out = run(x, rho_bar, pg_rho_bar, c_bar, lambda_)
    expected = by_hand(x, rho_bar, pg_rho_bar, c_bar, lambda_)
    for name in ("total", "loss_pg", "loss_baseline", "loss_entropy", "entropy"):
        assert getattr(out, name).dim() == 0
        assert getattr(out, name).item() == pytest.approx(expected[name], rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(out.vs.numpy(), expected["vs"], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.pg_advantages.numpy(), expected["pg_advantages"],
                               rtol=1e-12, atol=1e-12)


def test_a_termination_cuts_the_trace():
    """Batch entry 0 ends after step 1: its targets at steps 0 and 1 ignore everything later."""
    x = inputs()
    later = {k: v.clone() for k, v in x.items()}
    later["rewards"][2:, 0] += 100.0
    later["values"][2:, 0] -= 50.0
    later["bootstrap_value"][0] += 7.0
    before, after = run(x, 1.0, 1.0, 1.0, 1.0), run(later, 1.0, 1.0, 1.0, 1.0)
    torch.testing.assert_close(after.vs[:2, 0], before.vs[:2, 0], rtol=0, atol=0)
    torch.testing.assert_close(after.pg_advantages[:2, 0], before.pg_advantages[:2, 0],
                               rtol=0, atol=0)


@pytest.mark.parametrize(("rho_bar", "pg_rho_bar", "c_bar", "lambda_"), CLIPPING)
def test_gradients_flow_only_where_the_paper_says(rho_bar, pg_rho_bar, c_bar, lambda_):
    x = inputs(seed=1)
    for v in x.values():
        v.requires_grad_(True)
    out = run(x, rho_bar, pg_rho_bar, c_bar, lambda_)
    assert not out.vs.requires_grad and not out.pg_advantages.requires_grad
    assert not out.entropy.requires_grad
    names = list(x)
    grads = dict(zip(names, torch.autograd.grad(out.total, [x[n] for n in names],
                                                allow_unused=True), strict=True))
    expected = by_hand({k: v.detach() for k, v in x.items()}, rho_bar, pg_rho_bar, c_bar, lambda_)
    adv = torch.tensor(expected["pg_advantages"], dtype=torch.float64)
    vs = torch.tensor(expected["vs"], dtype=torch.float64)
    # Policy: -A_t grad log pi; A_t is a constant (the importance weights inside it are not
    # differentiated), so the gradient w.r.t. log pi(a_t|x_t) is exactly -A_t.
    torch.testing.assert_close(grads["target_log_probs"], -adv, rtol=1e-12, atol=1e-12)
    # Value: -(v_t - V(x_t)) times the baseline cost; v_t is a constant, and no gradient
    # reaches V through the advantages of the policy term.
    torch.testing.assert_close(grads["values"], -BASELINE_COST * (vs - x["values"].detach()),
                               rtol=1e-12, atol=1e-12)
    # Entropy bonus: -entropy_cost per step.
    torch.testing.assert_close(grads["entropies"], torch.full((T, B), -ENTROPY_COST,
                                                              dtype=torch.float64))
    # Data and targets: nothing.
    for name in ("behaviour_log_probs", "bootstrap_value", "rewards", "discounts"):
        assert grads[name] is None, name


def test_rejects_mismatched_shapes():
    x = inputs()
    x["entropies"] = x["entropies"][:, :2]
    with pytest.raises(ValueError, match="entropies") as info:
        run(x, 1.0, 1.0, 1.0, 1.0)
    assert "(4, 2)" in str(info.value)
    x = inputs()
    x["rewards"] = x["rewards"][:3]
    with pytest.raises(ValueError, match="rewards"):
        run(x, 1.0, 1.0, 1.0, 1.0)


def test_the_documented_example_runs_and_backpropagates():
    (example,) = [block for block in re.findall(r"```python\n(.*?)```", DOCS.read_text(),
                                                flags=re.S)
                  if "import torch" in block and "impala.loss(" in block]
    scope: dict = {}
    exec(compile(example, str(DOCS), "exec"), scope)  # noqa: S102 - our own docs
    assert torch.isfinite(scope["out"].total)
    assert scope["values"].grad is not None and scope["target_logits"].grad is not None
