"""Returns are shown with the digits they need (issue 25: ``seed-rl train``'s summary
rounded returns to one decimal, so a mean return of 0.959 read as 1.0): three significant
digits below 100 in magnitude, one decimal from 100 on, in the exit summary and in both
forms of the live status (the plain line and the terminal panel)."""

from __future__ import annotations

import io
import math

import pytest

from learner.running.local_state import RunTotals, summary_lines
from learner.watching.console import LiveStatus, format_return
from seed_rl.config import Config

SHOWN = {0.959: "0.959", -0.5: "-0.500", 475.0: "475.0", -123.456: "-123.5"}


@pytest.mark.parametrize(("value", "text"), [
    *SHOWN.items(),
    (12.345, "12.3"), (99.96, "100.0"), (1234.56, "1,234.6"), (0.0, "0.0"), (3, "3.00"),
    (-1e-9, "0.000000"), (None, "-"), (math.nan, "-"), (-math.inf, "-"),
])
def test_format_return(value, text: str) -> None:
    assert format_return(value) == text


@pytest.mark.parametrize(("final", "best"), [(0.959, -0.5), (475.0, -123.456),
                                              (-123.456, 0.959)])
def test_the_summary_shows_returns_with_their_digits(tmp_path, final, best) -> None:
    config = Config(env="CartPole-v1", logdir=str(tmp_path))
    totals = RunTotals(env_steps=1000, train_steps=10, episodes=40, final_return=final,
                       best_return=best, window=40, resumed_from=None)
    lines = summary_lines(config, totals, 12.0, None, "done")
    (line,) = [line for line in lines if "mean return" in line]
    assert f"final {SHOWN[final]}, best {SHOWN[best]} " in line, line


def test_the_summary_of_a_run_without_episodes(tmp_path) -> None:
    config = Config(env="CartPole-v1", logdir=str(tmp_path))
    totals = RunTotals(0, 0, 0, math.nan, -math.inf, 0, None)
    lines = summary_lines(config, totals, 1.0, None, "done")
    assert "  mean return   - (no episode finished)" in lines


@pytest.mark.parametrize(("mean", "best"), [(0.959, -0.5), (-123.456, 475.0)])
@pytest.mark.parametrize("live", [False, True], ids=["line", "panel"])
def test_the_live_status_shows_returns_with_their_digits(mean, best, live: bool) -> None:
    out = io.StringIO()  # live=False: one plain line per update; True: the rich panel
    config = Config(env="CartPole-v1", total_steps=10_000)
    with LiveStatus(config, stream=out, live=live) as status:
        status.update({"env_steps": 100, "episode_return_mean": best, "episodes": 3})
        status.update({"env_steps": 200, "episode_return_mean": mean, "episodes": 6,
                       "eval/episode_return_mean": mean})
    text = out.getvalue()
    shown_best = SHOWN[max(mean, best)]
    if live:
        assert f"{SHOWN[mean]}  (best {shown_best}, 6 episodes)" in text, text
        (eval_row,) = [row for row in text.splitlines() if "greedy eval return" in row]
        assert SHOWN[mean] in eval_row, text
    else:
        assert f"return {SHOWN[mean]} (best {shown_best})" in text.splitlines()[-1], text


def test_the_stop_reason_shows_the_mean_return_with_its_digits(tmp_path) -> None:
    pytest.importorskip("torch")
    from support.learner_harness import make_config

    from learner.running.learner import Learner

    learner = Learner(make_config(tmp_path, env="CartPole-v1", target_return=0.95))
    try:
        learner.metrics.returns.extend([0.959] * 100)
        reason = learner.stop_criterion(0.0)
    finally:
        learner.metrics.close()
    assert reason == "mean return 0.959 of the last 100 episodes reached the target 0.95"
