"""``seed-rl train``: config resolution, presets, the actor command, curves and the live
status (fast, in-process), and the real command end to end (slow: real learner, actor
processes and files, bounded in time).

End-to-end runs use small step budgets (``--total-steps``) and a few environments so that
they finish in seconds; nothing asserts a timing or a learning result.
"""

from __future__ import annotations

import io
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from procs import REPO, children_of, is_running
from rich.console import Console

from learner.running import local_actors
from learner.running import local_run as train
from learner.training import checkpoint
from learner.watching import curves
from learner.watching.console import LiveStatus, format_duration, progress
from seed_rl import cli, presets
from seed_rl import config as cfg
from seed_rl.config import Config
from seed_rl.env_import import EnvImportError, EnvironmentUnavailable, extra_hint, make_env

WAIT = 60.0  # seconds: generous bound for a whole small run on a busy 2-core machine
SMALL = ["--num-actors", "1", "--envs-per-actor", "8", "--log-every", "0.5"]


def parse(*argv: str):
    return cli.build_parser().parse_args(["train", *argv])


def resolve(*argv: str, environ: dict[str, str] | None = None, cpus: int = 2):
    """(config of ``seed-rl train ARGV``, the preset applied)."""
    resolved = cfg.resolve(parse(*argv), "train", environ=environ or {})
    return train.local_config(resolved, cpus=cpus), resolved.preset


# -- config resolution --------------------------------------------------------------------


def test_no_arguments_train_cartpole_with_its_preset_and_local_defaults() -> None:
    config, preset = resolve()
    assert preset is not None and preset.name == "cartpole.toml"
    values = cfg.load_toml(preset)
    assert config.env == "CartPole-v1"
    assert config.target_return == 475.0
    for name, value in values.items():
        assert getattr(config, name) == value, name
    assert config.logdir == str(Path("runs") / "CartPole-v1")  # the same command resumes
    assert config.address == "127.0.0.1:0"
    assert (config.num_actors, config.envs_per_actor) == train.local_actor_layout(2)
    assert config.resume


def test_precedence_preset_then_config_file_then_env_vars_then_flags(tmp_path) -> None:
    toml = tmp_path / "mine.toml"
    toml.write_text('learning_rate = 0.1\nbatch_size = 4\nentropy_cost = 0.5\nlogdir = "x"\n')
    environ = {"SEED_RL_BATCH_SIZE": "5", "SEED_RL_ENTROPY_COST": "0.25"}
    config, preset = resolve("--config", str(toml), "--entropy-cost", "0.125", environ=environ)
    assert preset is not None and preset.name == "cartpole.toml"
    assert config.optimizer == "adam"  # from the preset
    assert config.learning_rate == 0.1  # the file beats the preset
    assert config.batch_size == 5  # an env var beats the file
    assert config.entropy_cost == 0.125  # a flag beats everything
    assert config.logdir == "x"  # given in the file: no local default


def test_explicit_knobs_are_kept_and_cpu_count_picks_the_actors() -> None:
    config, _ = resolve("--logdir", "elsewhere", "--num-actors", "3", "--address", "127.0.0.1:7")
    assert (config.logdir, config.num_actors, config.address) == ("elsewhere", 3, "127.0.0.1:7")
    big, _ = resolve(cpus=16)
    assert big.num_actors == train.local_actor_layout(16)[0] > 2


def test_env_picks_its_preset_or_the_defaults() -> None:
    config, preset = resolve("--env", "Acrobot-v1")
    assert preset is not None and preset.name == "acrobot.toml"
    assert config.target_return == -100.0 and config.logdir == str(Path("runs/Acrobot-v1"))
    config, preset = resolve("--env", "MountainCar-v0")
    assert preset is None
    assert math.isnan(config.target_return) and config.optimizer == Config().optimizer
    assert config.logdir == str(Path("runs/MountainCar-v0"))


def test_preset_by_name_and_unknown_preset() -> None:
    config, preset = resolve("--preset", "pong")
    assert preset is not None and preset.name == "pong.toml"
    assert config.env == "seed_rl.envs:Atari-v0"
    assert config.env_kwargs == {"game": "ALE/Pong-v5"}
    assert config.logdir == str(Path("runs/seed_rl.envs-Atari-v0"))
    with pytest.raises(cfg.ConfigError, match="no such preset.*cartpole"):
        resolve("--preset", "no-such-game")


def test_each_run_makes_its_own_auth_token_unless_one_is_given() -> None:
    first, _ = resolve()
    second, _ = resolve()
    assert len(first.auth_token) >= 32 and first.auth_token != second.auth_token
    given, _ = resolve(environ={"SEED_RL_AUTH_TOKEN": "mine"})
    assert given.auth_token == "mine"


def test_slug_makes_directory_names() -> None:
    assert train.slug("ALE/Pong-v5") == "ALE-Pong-v5"
    assert train.slug("CartPole-v1") == "CartPole-v1"
    assert train.slug("///") == "env"


def test_actor_command_carries_every_actor_knob_but_no_secret() -> None:
    config, _ = resolve(
        "--env-kwargs", '{"a": 1}', "--seed", "7", "--envs-per-actor", "5", "--auth-token", "hush"
    )
    argv = local_actors.actor_command(config, "127.0.0.1:1234", "WARNING")
    assert argv[:3] == [sys.executable, "-m", "actors"]
    assert not any("hush" in a for a in argv)
    args = cli.build_parser().parse_args(["actors", *argv[3:]])
    assert args.log_level == "WARNING"
    child = cfg.resolve(args, "actors", environ={"SEED_RL_AUTH_TOKEN": "hush"}).config
    for f in cfg.fields_for("actors"):
        if f.name == "learner":
            assert child.learner == "127.0.0.1:1234"
        elif f.name == "status_every":
            assert child.status_every == 0
        elif f.name.startswith("tls"):
            continue
        else:
            assert getattr(child, f.name) == getattr(config, f.name), f.name


def test_actor_environment_has_the_token_and_no_other_seed_rl_variables(monkeypatch) -> None:
    monkeypatch.setenv("SEED_RL_BATCH_SIZE", "3")
    env = local_actors.actor_environment("tok")
    assert env["SEED_RL_AUTH_TOKEN"] == "tok"
    assert not [k for k in env if k.startswith("SEED_RL_") and k != "SEED_RL_AUTH_TOKEN"]
    assert "SEED_RL_AUTH_TOKEN" not in local_actors.actor_environment("")


# -- presets ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(presets.shipped()))
def test_each_preset_loads_and_builds_its_env_and_model(name) -> None:

    from learner.training.models import build_model

    path = presets.shipped()[name]
    values = cfg.load_toml(path)
    assert "target_return" in values and "env" in values
    config = cfg.resolve(None, "train", environ={"SEED_RL_PRESET": name}).config
    try:
        env = make_env(config.env, config.env_kwargs, config.env_import, "test")
    except (EnvironmentUnavailable, EnvImportError):  # the preset's extra is missing: say which
        with pytest.raises(SystemExit, match=r"pip install 'seed-rl\[(atari|box2d|minatar|popgym)\]'"):
            train.check_environment(config)
        return
    try:
        observation, _ = env.reset(seed=0)
        model = build_model(env.observation_space, env.action_space, config)
        assert env.observation_space.contains(observation)
    finally:
        env.close()
    import numpy as np
    import torch

    from seed_rl.spaces import observation_layout

    layout = observation_layout(env.observation_space)
    rows = np.zeros((1, *layout.row_shape), layout.row_dtype)  # as the actors send it
    layout.write(rows, 0, observation)
    obs = torch.from_numpy(rows)[None]
    output = model(obs, torch.ones(1, 1, dtype=torch.bool), model.initial_state(1))
    assert output.policy_params.shape == (1, 1, model.distribution.num_params)


def test_missing_dependency_names_the_extra() -> None:
    assert "atari" in extra_hint("seed_rl.envs:Atari-v0")
    assert "atari" in extra_hint("ALE/Breakout-v5")
    assert "box2d" in extra_hint("LunarLander-v3")
    assert extra_hint("CartPole-v1") == ""
    config = Config(env="NoSuchEnvAnywhere-v0")
    with pytest.raises(SystemExit, match="does not know the environment 'NoSuchEnvAnywhere-v0'.*--env-import"):
        train.check_environment(config)


def test_atari_env_module_is_torch_free() -> None:
    code = "import sys, seed_rl.envs; assert 'torch' not in sys.modules, 'torch imported'"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO, timeout=60)


# -- curves and the status ----------------------------------------------------------------


def write_metrics(path: Path, records: list[dict]) -> None:
    with open(path, "w") as file:
        for record in records:
            file.write(json.dumps(record) + "\n")
        file.write('{"torn": ')  # a crash mid-line


def test_curve_reads_metrics_and_continues_wall_time_across_resumes(tmp_path) -> None:
    write_metrics(
        tmp_path / "metrics.jsonl",
        [
            {"elapsed": 1.0, "env_steps": 100, "episode_return_mean": None},
            {"elapsed": 2.0, "env_steps": 200, "episode_return_mean": 10.0},
            {
                "elapsed": 3.0,
                "env_steps": 300,
                "episode_return_mean": 20.0,
                "eval/episode_return_mean": 25.0,
            },
            {"elapsed": 0.5, "env_steps": 350, "episode_return_mean": 30.0},  # resumed
        ],
    )
    curve = curves.read_curve(tmp_path / "metrics.jsonl")
    assert curve.env_steps == [200, 300, 350]
    assert curve.wall_time == [2.0, 3.0, 3.5]
    assert curve.returns == [10.0, 20.0, 30.0]
    assert (curve.eval_steps, curve.eval_returns, curve.runs) == ([300], [25.0], 2)
    path = curves.plot_learning_curve(tmp_path, title="t", target_return=25.0)
    assert path == tmp_path / "learning_curve.png"
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_resume_is_a_new_run_even_when_its_clock_has_caught_up(tmp_path) -> None:
    """A short first run (ended at 2.4 s) and a resumed one whose first record comes at
    2.5 s: the run start tells them apart, elapsed alone could not."""
    write_metrics(
        tmp_path / "metrics.jsonl",
        [
            {"run_started": 100.0, "elapsed": 2.4, "env_steps": 300, "episode_return_mean": 20.0},
            {"run_started": 200.0, "elapsed": 2.5, "env_steps": 400, "episode_return_mean": 30.0},
        ],
    )
    curve = curves.read_curve(tmp_path / "metrics.jsonl")
    assert curve.runs == 2 and curve.wall_time == [2.4, 4.9]


def test_curve_of_a_run_without_episodes_is_still_written(tmp_path) -> None:
    path = curves.plot_learning_curve(tmp_path)  # no metrics.jsonl at all
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_and_eta() -> None:
    record = {"env_steps": 1000, "sps": 100.0, "elapsed": 10.0}
    goal, eta = progress(record, Config(total_steps=2000))
    assert "50% of 2,000 steps" in goal and eta == pytest.approx(10.0)
    goal, eta = progress(record, Config(total_steps=2000, max_time=15.0))
    assert eta == pytest.approx(5.0)  # the time limit comes first
    goal, eta = progress(record, Config(target_return=475.0))
    assert "target return 475" in goal and math.isnan(eta)
    assert format_duration(75.3) == "1:15" and format_duration(3725) == "1:02:05"
    assert format_duration(math.nan) == "-"


def test_status_off_a_terminal_prints_plain_lines() -> None:
    stream = io.StringIO()
    with LiveStatus(Config(total_steps=1000), stream=stream) as status:
        status.update(
            {
                "env_steps": 500,
                "sps": 50.0,
                "episode_return_mean": 12.5,
                "loss_total": 1.5,
                "elapsed": 10.0,
            }
        )
        status.update({"env_steps": 600, "sps": 50.0, "episode_return_mean": 11.0, "elapsed": 12.0})
        status.print_line("[not markup] from a child")
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith("steps 500 | sps 50 | return 12.5 (best 12.5)")
    assert "eta 0:10" in lines[0]
    assert "return 11.0 (best 12.5)" in lines[1]
    assert lines[2] == "[not markup] from a child"


def test_off_a_terminal_lines_are_throttled_and_the_last_record_is_never_lost() -> None:
    stream = io.StringIO()
    with LiveStatus(Config(), stream=stream, line_every=3600.0) as status:
        for steps in (100, 200, 300):
            status.update({"env_steps": steps, "sps": 10.0, "elapsed": 1.0})
        assert stream.getvalue() == ""  # the first interval has not passed
    (line,) = stream.getvalue().splitlines()
    assert line.startswith("steps 300 |")  # printed at exit


def test_a_budget_next_to_a_target_return_gives_the_latest_end() -> None:
    stream = io.StringIO()
    config = Config(total_steps=1000, target_return=475.0)
    with LiveStatus(config, stream=stream) as status:
        status.update({"env_steps": 500, "sps": 50.0, "elapsed": 10.0})
    assert "eta <=0:10" in stream.getvalue()
    live = LiveStatus(config, stream=io.StringIO(), live=False)
    live.update({"env_steps": 500, "sps": 50.0, "elapsed": 10.0})
    rendered = io.StringIO()
    Console(file=rendered, width=120).print(live._render())
    assert "at the latest 0:10 (the target may end it sooner)" in rendered.getvalue()


# -- the real command ---------------------------------------------------------------------


def run_train(processes, logdir: Path, *flags: str):
    return processes(
        [sys.executable, "-m", "seed_rl", "train", "--logdir", str(logdir), *SMALL, *flags]
    )


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        for child in children_of(todo.pop()):
            found.append(child)
            todo.append(child)
    return found


def wait_gone(pids: list[int], timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while [p for p in pids if is_running(p)]:
        assert time.monotonic() < deadline, f"still running: {[p for p in pids if is_running(p)]}"
        time.sleep(0.1)


def wait_descendants(pid: int, count: int, timeout: float = WAIT) -> list[int]:
    """The supervisor and its actors, once ``count`` processes are up."""
    deadline = time.monotonic() + timeout
    while len(found := descendants(pid)) < count:
        assert time.monotonic() < deadline, f"only {found} below {pid}"
        time.sleep(0.1)
    return found


@pytest.mark.slow
def test_train_end_to_end_then_resume(processes, tmp_path) -> None:
    logdir = tmp_path / "run"
    first = run_train(processes, logdir, "--total-steps", "3000")
    assert first.wait(WAIT) == 0, first.text
    checkpoints = sorted((logdir / "checkpoints").glob("ckpt-*.pt"))
    assert checkpoints, first.text
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records and records[-1]["env_steps"] >= 3000
    assert (logdir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((logdir / "config.json").read_text())
    assert saved["env"] == "CartPole-v1" and saved["optimizer"] == "adam"  # the preset
    assert saved["total_steps"] == 3000 and saved["logdir"] == str(logdir)
    assert saved["preset"] == "cartpole"
    assert saved["auth_token"] == "<redacted>"  # the run made a token (only set ones redact)
    assert "without TLS" not in first.text  # loopback: no warning about the token in clear
    assert "done: reached 3000 env steps" in first.text
    assert f"checkpoint  {checkpoints[-1]}" in first.text
    # The last status line shows the final record, the one the summary reports.
    (summary_steps,) = re.findall(r"env steps +([\d,]+) \(", first.text)
    status_lines = [line for line in first.lines if line.startswith("steps ")]
    assert status_lines and status_lines[-1].startswith(f"steps {summary_steps} |"), first.text
    assert "resumed from" not in first.text

    second = run_train(processes, logdir, "--total-steps", "6000")
    assert second.wait(WAIT) == 0, second.text
    assert f"resumed from  {checkpoints[-1]}" in second.text
    records = [json.loads(line) for line in (logdir / "metrics.jsonl").read_text().splitlines()]
    assert records[-1]["env_steps"] >= 6000
    assert records[-1]["train_steps"] > int(checkpoints[-1].stem.split("-")[1])
    assert curves.read_curve(logdir / "metrics.jsonl").runs == 2


@pytest.mark.slow
def test_sigint_stops_everything_and_keeps_the_results(processes, tmp_path) -> None:
    logdir = tmp_path / "run"
    run = run_train(processes, logdir, "--max-time", "120")
    run.wait_for_line(r"actor \S+ \(run \w+\) joined", WAIT)
    family = wait_descendants(run.popen.pid, 2)  # the supervisor and its actor
    os.kill(run.popen.pid, signal.SIGINT)
    assert run.wait(WAIT) == 128 + signal.SIGINT, run.text
    wait_gone(family)
    assert "interrupted (received SIGINT)" in run.text
    assert sorted((logdir / "checkpoints").glob("ckpt-*.pt")), run.text
    assert (logdir / "learning_curve.png").is_file()


@pytest.mark.slow
def test_sigkilled_train_takes_its_actors_along(processes, tmp_path) -> None:
    run = run_train(processes, tmp_path / "run", "--max-time", "120")
    run.wait_for_line(r"actor \S+ \(run \w+\) joined", WAIT)
    family = wait_descendants(run.popen.pid, 2)
    run.popen.kill()
    run.wait(WAIT)
    wait_gone(family)


@pytest.mark.slow
def test_failing_actors_stop_training_with_their_output(processes, tmp_path) -> None:
    # The learner refuses actor ids longer than 256 characters (INVALID_ARGUMENT, a
    # permanent error): the supervisor restarts no actor and exits 2 at once; train must
    # stop, exit 1, keep its results and show what the actors said.
    run = run_train(
        processes,
        tmp_path / "run",
        "--max-time",
        "120",
        "--max-restarts",
        "0",
        "--actor-id-prefix",
        "x" * 300,
    )
    assert run.wait(WAIT) == 1, run.text
    assert "the actor processes exited with code 2 while training was running" in run.text
    assert "must be 1-256 printable characters" in run.text  # the actors' own words
    assert "stopped: the actors failed" in run.text
    assert sorted((tmp_path / "run" / "checkpoints").glob("ckpt-*.pt"))


@pytest.mark.slow
def test_train_with_two_replicas_end_to_end(processes, tmp_path) -> None:
    """``seed-rl train --replicas 2``: two learner replica processes, the actors dial
    rank 0 (one is redirected to rank 1); summary, curve and checkpoint as with one."""
    logdir = tmp_path / "run"
    run = run_train(processes, logdir, "--replicas", "2", "--num-actors", "2",
                    "--total-steps", "3000")
    assert run.wait(3 * WAIT) == 0, run.text
    assert run.text.count("learner serving CartPole-v1") == 2, run.text
    assert "sends this actor to" in run.text or run.text.count(" joined from ") == 2
    state, path = checkpoint.load_latest(logdir)
    assert state["counters"]["env_steps"] >= 3000
    assert state["counters"]["policy_version"] == state["counters"]["train_steps"] > 0
    assert (logdir / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "done (2 learner replicas)" in run.text and f"checkpoint  {path}" in run.text
    (summary_steps,) = re.findall(r"env steps +([\d,]+) \(", run.text)
    assert int(summary_steps.replace(",", "")) >= 3000
    assert json.loads((logdir / "config.json").read_text())["replicas"] == 2


@pytest.mark.slow
def test_sigint_stops_two_replicas_and_keeps_the_results(processes, tmp_path) -> None:
    logdir = tmp_path / "run"
    run = run_train(processes, logdir, "--replicas", "2", "--max-time", "120")
    run.wait_for_line(r"actor \S+ \(run \w+\) joined", 2 * WAIT)
    family = descendants(run.popen.pid)  # the replicas, the supervisor and its actor
    os.kill(run.popen.pid, signal.SIGINT)
    assert run.wait(WAIT) == 128 + signal.SIGINT, run.text
    wait_gone(family)
    assert "interrupted (received SIGINT)" in run.text
    assert checkpoint.list_checkpoints(logdir), run.text
    assert (logdir / "learning_curve.png").is_file()
