"""--wandb: a real learner logs its config and the same scalars as TensorBoard to Weights &
Biases, in wandb's offline mode (no network: everything lands in LOGDIR/wandb/), and a
resumed logdir continues the same W&B run. The run file is read back record by record."""

from __future__ import annotations

import pytest

wandb = pytest.importorskip("wandb", reason="the test extra installs wandb")


def test_wandb_mode_is_validated() -> None:
    from seed_rl import config as cfg

    with pytest.raises(cfg.ConfigError, match="--wandb-mode"):
        cfg.validate(cfg.Config(wandb_mode="sometimes"))
