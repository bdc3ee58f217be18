"""benchmarks/learning.py's suite mode, without training: the per-entry summary over seeds
(benchmarks/suite_report.py) read from metrics.jsonl files written by the learner's own
Metrics, and the resume markers (benchmarks/learning_suite.py): a finished run is read
back, not rerun; an interrupted or failed one is run again. tests/integration/
test_learning_suite.py runs the real `seed-rl train` and kills and restarts the suite."""

from __future__ import annotations

import gzip
import json
import math
import sys
from pathlib import Path

import pytest
from support.procs import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import learning_suite  # noqa: E402
import suite_report  # noqa: E402
from learning_suite import load_result, read_run, result_path, save_result  # noqa: E402
from suite_report import (  # noqa: E402
    SuiteRun,  # noqa: E402
    return_at,
    summarise,
    summary_table,
)

from learner.watching.curves import read_curve  # noqa: E402
from learner.watching.metrics import Metrics  # noqa: E402
from seed_rl import presets  # noqa: E402
from seed_rl.config import load_toml  # noqa: E402

ENTRY = "minatar-breakout --epochs 2"
TARGET = 28.0
M = 1_000_000


def write_metrics(logdir: Path, returns: list[float]) -> Path:
    """A metrics.jsonl as the learner writes it: one record per 1M env steps, each after
    100 episodes of the given return (so the mean of the last 100 is that return)."""
    metrics = Metrics(logdir, tensorboard=False)
    metrics.emit()  # the first record, before any episode: no mean return yet
    for value in returns:
        metrics.add_env_steps(M, [value] * 100, [50] * 100)
        metrics.emit()
    metrics.close()
    return logdir / "metrics.jsonl"


@pytest.fixture
def three_seeds(tmp_path: Path) -> list[SuiteRun]:
    curves = {0: [2, 5, 9, 14, 20, 29, 30, 31, 30, 32],  # 28 crossed at 6M, ran to 10M
              1: [3, 8, 15, 29, 25, 27, 33, 34, 35, 36, 37],  # crossed at 4M, ran to 11M
              2: [1, 2, 4, 6, 9, 12, 13]}  # never crossed, stopped at 7M
    return [read_run(ENTRY, seed, TARGET, 100.0 + seed, write_metrics(tmp_path / str(seed),
                                                                       returns))
            for seed, returns in curves.items()]


def test_a_run_reads_its_target_final_and_milestones_from_its_metrics(three_seeds) -> None:
    first, _, never = three_seeds
    assert first.steps_to_target == 6 * M and first.env_steps == 10 * M
    assert first.final_return == 32 and first.best_return == 32
    assert never.final_return == 13 and math.isnan(never.steps_to_target)
    assert math.isnan(never.time_to_target)
    curve = read_curve(first.metrics)
    assert [return_at(curve, n) for n in (5 * M, 10 * M)] == [20, 32]
    assert math.isnan(return_at(curve, 11 * M))  # it did not get there
    assert math.isnan(return_at(read_curve(never.metrics), 10 * M))


def test_a_torn_last_line_is_skipped_as_the_curve_skips_it(tmp_path) -> None:
    """A learner killed mid-write leaves half a record: the run reads as its whole records
    (as the curve does), not as a crash of the suite."""
    metrics = write_metrics(tmp_path, [2, 5, 9])
    with open(metrics, "a") as file:
        file.write('{"elapsed": 9.5, "env_steps": 40000')
    run = read_run(ENTRY, 0, TARGET, 100.0, metrics)
    assert (run.env_steps, run.final_return, run.best_return) == (3 * M, 9, 9)
    assert read_curve(metrics).returns == [2, 5, 9]


def test_the_summary_gives_median_and_range_over_seeds_and_how_many_reached(
        three_seeds) -> None:
    (summary,) = summarise(three_seeds)
    assert summary.seeds == [0, 1, 2] and summary.reached == 2
    assert (summary.final.median, summary.final.low, summary.final.high) == (32, 13, 37)
    at5, at10 = summary.at[5 * M], summary.at[10 * M]
    assert (at5.median, at5.low, at5.high, at5.count) == (20, 9, 25, 3)
    assert (at10.median, at10.low, at10.high, at10.count) == (34, 32, 36, 2)
    steps = summary.steps_to_target
    assert (steps.median, steps.low, steps.high, steps.count) == (5 * M, 4 * M, 6 * M, 2)
    assert summary.time_to_target.count == 2
    (row,) = [line for line in summary_table([summary], {ENTRY: "gymnax PPO at 10M"})
              if line.startswith(f"| {ENTRY}")]
    cells = [cell.strip() for cell in row.strip("|").split("|")]
    assert cells[:8] == [ENTRY, "0,1,2", "28", "gymnax PPO at 10M", "2/3",
                         "32.00 (13.00 to 37.00)", "20.00 (9.00 to 25.00)",
                         "34.00 (32.00 to 36.00), 2/3 seeds"]
    assert cells[8] == "5,000,000 (4,000,000 to 6,000,000)"


def test_the_figure_draws_the_median_and_the_range_of_the_seeds(three_seeds, tmp_path) -> None:
    curves = [read_curve(r.metrics) for r in three_seeds]
    grid, median, low, high = suite_report.median_band(
        [c.env_steps for c in curves], [c.returns for c in curves], points=11)
    assert list(grid) == [n * M for n in range(1, 12)]
    assert (median[4], low[4], high[4]) == (20, 9, 25)  # at 5M: all three seeds
    assert (median[8], low[8], high[8]) == (32.5, 30, 35)  # at 9M: seed 2 had stopped
    assert (median[10], low[10], high[10]) == (37, 37, 37)  # at 11M: seed 1 alone
    suite_report.plot_suite(three_seeds, tmp_path / "suite.png")
    assert (tmp_path / "suite.png").stat().st_size > 0


def test_a_finished_run_is_read_back_and_an_unfinished_or_failed_one_is_not(
        three_seeds, tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    run = three_seeds[0]
    saved = save_result(out, run, ["seed-rl", "train"], 300.0, True)
    assert saved.metrics == out / "minatar-breakout_epochs_2-seed0-metrics.jsonl"
    assert saved.metrics.read_text() == run.metrics.read_text()
    back = load_result(out, ENTRY, 0, 300.0, True)
    assert back == saved
    assert load_result(out, ENTRY, 1, 300.0, True) is None  # never finished: no marker
    save_result(out, SuiteRun(**{**vars(three_seeds[1]), "exit_code": 1}), ["x"], 300.0, True)
    assert load_result(out, ENTRY, 1, 300.0, True) is None  # failed: run again
    with pytest.raises(SystemExit, match="--budget 300 --past-target, not --budget 600"):
        load_result(out, ENTRY, 0, 600.0, True)
    result_path(out, ENTRY, 2).write_text('{"entry": "torn')
    with pytest.raises(SystemExit, match="is not a suite result"):
        load_result(out, ENTRY, 2, 300.0, True)


def test_a_run_of_a_preset_changed_since_is_not_resumed(three_seeds, tmp_path, capsys) -> None:
    """A suite resumed sessions later must not mix runs of two versions of one preset: the
    marker keeps the preset file's values, and a difference is an error naming it."""
    out = tmp_path / "out"
    out.mkdir()
    save_result(out, three_seeds[0], ["seed-rl", "train"], 300.0, True)
    marker = result_path(out, ENTRY, 0)
    data = json.loads(marker.read_text())
    assert data["preset"] == json.loads(json.dumps(load_toml(presets.named("minatar-breakout"))))
    assert load_result(out, ENTRY, 0, 300.0, True) is not None
    data["preset"]["max_grad_norm"] = 1234.0  # the run of an earlier version of the preset
    del data["preset"]["popart"]
    marker.write_text(json.dumps(data))
    now = json.dumps(load_toml(presets.named("minatar-breakout"))["max_grad_norm"])
    with pytest.raises(SystemExit, match=rf"another minatar-breakout preset \(max_grad_norm "
                       rf"1234.0 -> {now}, popart \(unset\) -> true\): give another --out"):
        load_result(out, ENTRY, 0, 300.0, True)
    del data["preset"]  # a marker from before the suite kept them: read, with a note
    marker.write_text(json.dumps(data))
    assert load_result(out, ENTRY, 0, 300.0, True) is not None
    assert "does not record its preset's values" in capsys.readouterr().err


def test_a_compact_result_keeps_the_curve_columns_and_reads_back_the_same(
        three_seeds, tmp_path) -> None:
    """--compact: the metrics copied into --out keep only the curve's columns, compressed,
    no figure; the run read back from them gives the same tables and curve as the full
    file, and compacting again gives the same bytes."""
    out = tmp_path / "out"
    out.mkdir()
    run = three_seeds[1]
    (run.metrics.parent / "learning_curve.png").write_bytes(b"png")
    saved = save_result(out, run, ["seed-rl", "train"], 300.0, True, compact=True)
    assert sorted(p.name for p in out.iterdir()) == [
        "minatar-breakout_epochs_2-seed1-metrics.jsonl.gz",
        "minatar-breakout_epochs_2-seed1-result.json"]
    full = [json.loads(line) for line in run.metrics.read_text().splitlines()]
    kept = [json.loads(line) for line in gzip.decompress(saved.metrics.read_bytes())
            .decode().splitlines()]
    assert len(kept) == len(full) and set(full[-1]) > set(kept[-1])
    assert set(kept[-1]) <= set(learning_suite.CURVE_KEYS)
    assert {"elapsed", "env_steps", "episode_return_mean"} <= set(kept[-1])
    back = load_result(out, ENTRY, 1, 300.0, True)
    assert back == saved
    assert summarise([back]) == summarise([run])
    assert read_curve(back.metrics).returns == read_curve(run.metrics).returns
    again = tmp_path / "again.jsonl.gz"
    learning_suite.compact_metrics(back.metrics, again)
    assert again.read_bytes() == back.metrics.read_bytes()


def test_the_suite_reruns_only_what_is_not_finished(three_seeds, tmp_path, monkeypatch,
                                                    capsys) -> None:
    out = tmp_path / "out"
    out.mkdir()
    save_result(out, three_seeds[0], ["seed-rl", "train"], 300.0, False)
    ran = []

    def run_entry(entry: str, seed: int, budget: float, workdir: Path,
                  past_target: bool = False, progress_every: float = 60.0
                  ) -> tuple[SuiteRun, list[str]]:
        ran.append(seed)
        return three_seeds[seed], ["seed-rl", "train", "--seed", str(seed)]

    monkeypatch.setattr(learning_suite, "run_entry", run_entry)
    assert learning_suite.run_suite([ENTRY], [0, 1, 2], 300.0, out, tmp_path) == 0
    assert ran == [1, 2]
    printed = capsys.readouterr().out
    assert f"not rerun): {ENTRY} seed 0\n" in printed
    assert "| 2/3 | 32.00 (13.00 to 37.00) |" in printed
    assert all(result_path(out, ENTRY, seed).is_file() for seed in (0, 1, 2))
    ran.clear()
    learning_suite.run_suite([ENTRY], [0, 1, 2], 300.0, out, tmp_path)
    assert ran == []
    assert f"{ENTRY} seed 0; {ENTRY} seed 1; {ENTRY} seed 2" in capsys.readouterr().out


def test_each_entry_names_where_its_target_comes_from() -> None:
    """From the shipped preset's ``target_source``, unless the entry sets its own target;
    every preset that sets a target says where it comes from."""
    assert learning_suite.entry_target("minatar-spaceinvaders", []) == 185
    assert "AC(lambda)" in learning_suite.entry_target_source("minatar-spaceinvaders --popart")
    assert learning_suite.entry_target_source("cartpole") == (
        "gymnasium's reward threshold for CartPole-v1")
    for own in ("cartpole --target-return 100", "cartpole --target-return=100"):
        name, *flags = own.split()
        assert learning_suite.entry_target(name, flags) == 100
        assert learning_suite.entry_target_source(own) == "the entry's --target-return"
    for name, path in presets.shipped().items():
        values = load_toml(path)
        assert "target_return" not in values or values.get("target_source"), name


def test_the_summary_reads_the_return_at_the_milestones_it_is_given(three_seeds) -> None:
    """`--at 0.5M,3M`: the summary's columns are those counts, read from each curve as at the
    default 5M and 10M."""
    (summary,) = summarise(three_seeds, (M // 2, 3 * M))
    assert list(summary.at) == [M // 2, 3 * M]
    at_half = summary.at[M // 2]  # the first record with at least 0.5M env steps: at 1M
    assert (at_half.median, at_half.low, at_half.high, at_half.count) == (2, 1, 3, 3)
    at3 = summary.at[3 * M]
    assert (at3.median, at3.low, at3.high, at3.count) == (9, 4, 15, 3)
    header, _, row = summary_table([summary])
    assert "| at 0.5M env steps | at 3M env steps |" in header
    assert "| 9.00 (4.00 to 15.00) |" in row


def test_milestones_are_written_as_people_write_env_steps() -> None:
    assert suite_report.parse_steps("1M, 0.5M,2500k,3000000,1M") == (
        500_000, 1_000_000, 2_500_000, 3_000_000)
    assert [suite_report.steps_label(n) for n in (500_000, 10 * M, 2_500_000, 20_000)] == [
        "0.5M", "10M", "2.5M", "20k"]
    for bad in ("two", "1G", "-1M", "0", "1.5"):
        with pytest.raises(ValueError, match="env steps"):
            suite_report.parse_steps(bad)


def test_a_progress_line_reads_the_last_record_of_a_run_in_training(tmp_path) -> None:
    metrics = tmp_path / "run" / "metrics.jsonl"
    assert learning_suite.progress_line("breakout seed 0", metrics) is None  # not started
    write_metrics(tmp_path / "run", [2, 5, 9])
    line = learning_suite.progress_line("breakout seed 0", metrics)
    assert line.startswith("  breakout seed 0: 3.00M env steps, return 9.00 (last 100 episodes)")
    assert line.endswith(" env steps/s")
