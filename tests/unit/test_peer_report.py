"""benchmarks/peer_sample_factory.py without training: a finished seed's two curves are kept
and read back (so an interrupted comparison resumes), and the table over seeds reads each
system's return at the same wall time since launch."""

from __future__ import annotations

import sys

from support.procs import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

from peer_sample_factory import PeerCurve, load_seed, plot, report, save_seed  # noqa: E402


def _curve(system: str, returns: list[float]) -> PeerCurve:
    """A curve with one record every 100 s from 100 s on, 100k env steps apart."""
    seconds = [100.0 * (i + 1) for i in range(len(returns))]
    return PeerCurve(system, wall_s=seconds[-1] + 5, seconds=seconds,
                     env_steps=[100_000 * (i + 1) for i in range(len(returns))],
                     returns=returns, total_steps=100_000 * len(returns),
                     train_s=seconds[-1])


def test_a_seed_is_kept_and_read_back(tmp_path):
    kept = tmp_path / "breakout-900s-seed0.json"
    assert load_seed(kept) is None
    curves = [_curve("seed-rl", [1.0, 2.5]), _curve("Sample Factory 2.1.1", [0.5, 3.0])]
    save_seed(curves, kept)
    assert load_seed(kept) == curves


def test_the_table_gives_each_systems_median_at_equal_wall_time(tmp_path, capsys):
    seeds = {
        0: [_curve("seed-rl", [1, 2, 3, 4, 5, 6, 7, 8, 9]), _curve("SF", [0, 1, 1, 2, 2, 3, 3, 4, 4])],
        1: [_curve("seed-rl", [2, 4, 6, 8, 10, 12, 14, 16, 18]), _curve("SF", [1, 2, 3, 4, 5, 6, 7, 8, 20])],
        2: [_curve("seed-rl", [3, 3, 3, 3, 3, 3, 3, 3, 3]), _curve("SF", [5, 5, 5, 5, 5, 5, 5, 5, 5])],
    }
    report(seeds, budget=900, target=28.0)
    table = capsys.readouterr().out
    # no record by 60 s; by 120 and 180 s the first (1, 2, 3 against 0, 1, 5); by 300 s the
    # third (3, 6, 3 against 1, 3, 5); by 900 s the last (9, 18, 3 against 4, 20, 5)
    assert ("| seed-rl | - | 2.00 (1.00 to 3.00) | 2.00 (1.00 to 3.00) | 3.00 (3.00 to 6.00) |"
            in table)
    assert "| SF | - | 1.00 (0.00 to 5.00) | 1.00 (0.00 to 5.00) | 3.00 (1.00 to 5.00) |" in table
    assert "| seeds where seed-rl is ahead | - | 2 of 3 | 2 of 3 | 2 of 3 |" in table
    assert table.rstrip().endswith("| 1 of 3 |")
    assert "| 0 | seed-rl | 900,000 | 1,000 | - | 9.00 | 9.00 | 905 |" in table
    plot(seeds, 28.0, "MinAtar Breakout", tmp_path / "peer.png")
    assert (tmp_path / "peer.png").stat().st_size > 0
