"""`seed-rl eval` as a user runs it: a checkpoint played by the real command, its statistics, a GIF and an MP4."""

from __future__ import annotations

import re
import sys

import imageio.v2 as imageio
from support.playing import STATS, make_checkpoint, run_eval
from support.procs import REPO

from learner.running import evaluate

WAIT = 60.0  # seconds: generous bound for a whole small run on a busy 2-core machine


def test_eval_cli_plays_a_checkpoint_writes_a_gif_and_prints_statistics(tmp_path) -> None:
    import subprocess

    logdir = make_checkpoint(tmp_path)
    gif = tmp_path / "out" / "episodes.gif"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "seed_rl",
            "eval",
            "--checkpoint",
            str(logdir),
            "--episodes",
            "3",
            "--greedy",
            "--video",
            str(gif),
            "--seed",
            "4",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=WAIT,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "3 episode(s), greedy actions, seed 4" in out
    mean, std, low, high = (float(x) for x in STATS.search(out).groups())
    assert 1 <= low <= mean <= high <= 500 and std >= 0
    frames = imageio.mimread(gif)
    assert len(frames) > 1
    height, width = frames[0].shape[:2]
    assert 0 < width <= evaluate.GIF_MAX_WIDTH and height > 0
    assert re.search(rf"video   {re.escape(str(gif))} \(\d+ frames\)", out)


def test_eval_writes_mp4(tmp_path, capsys) -> None:
    logdir = make_checkpoint(tmp_path)
    video = tmp_path / "episodes.mp4"
    rc, out = run_eval(
        capsys, "--checkpoint", str(logdir), "--episodes", "1", "--video", str(video)
    )
    assert rc == 0
    reader = imageio.get_reader(video)
    try:
        frame = reader.get_data(0)
    finally:
        reader.close()
    assert frame.ndim == 3 and frame.shape[2] == 3
