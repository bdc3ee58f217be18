"""``seed-rl serve`` in this process: a real PolicyServer (gRPC on loopback) answering a
scripted actor from a real checkpoint file, the follower reading real files, the pure parts
(the episode tally, what may replace a served checkpoint, the serving config) and the
command's one-line errors. The command as a process, with real actors: tests/integration/
test_serve_command.py."""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import torch
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.serving import write_checkpoint

from learner.deploying import serve
from learner.deploying.episodes import ReturnSummary
from learner.deploying.follow import incompatibility, load_served, newest_after, run_directory
from learner.deploying.policy_server import PolicyServer
from seed_rl import cli
from seed_rl import config as cfg


def serve_args(*argv: str):
    return cli.build_parser().parse_args(["serve", *argv])


def resolved(*argv: str) -> cfg.Resolved:
    return cfg.resolve(serve_args(*argv), "serve", environ={})


@contextlib.contextmanager
def policy_server(checkpoint: Path, tmp_path: Path, *argv: str, greedy: bool = False,
                  follow: Path | None = None) -> Iterator[PolicyServer]:
    served = load_served(checkpoint)
    config = serve.serving_config(served.config, resolved(
        "--address", "127.0.0.1:0", "--logdir", str(tmp_path / "serve"), "--max-wait-ms", "1",
        "--listeners", "2", "--device", "cpu", *argv))
    server = PolicyServer(config, served, greedy=greedy, follow=follow)
    server.start()
    try:
        yield server
    finally:
        server.request_stop("test finished")
        server.shutdown()


def observations(k: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.2, 0.2, (k, 4)).astype(np.float32)


# -- the pure parts --------------------------------------------------------------------------


def test_the_tally_counts_the_first_n_episodes_and_their_statistics():
    tally = ReturnSummary(limit=5)
    tally.add([1.0, 2.0], [10, 20])
    assert not tally.reached.is_set()
    tally.add([3.0, 4.0, 5.0, 6.0], [30, 40, 50, 60])  # the 6th is past the limit
    tally.add([100.0], [1])
    assert tally.reached.is_set()
    summary = tally.summary()
    values = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert summary["episodes"] == 5
    assert summary["episode_return_mean"] == pytest.approx(values.mean())
    assert summary["episode_return_std"] == pytest.approx(values.std())
    assert (summary["episode_return_min"], summary["episode_return_max"]) == (1.0, 5.0)
    assert summary["episode_length_mean"] == pytest.approx(30.0)
    unlimited = ReturnSummary()
    assert math.isnan(unlimited.summary()["episode_return_mean"])
    unlimited.add([7.0] * 1000, [1] * 1000)
    assert unlimited.summary()["episodes"] == 1000 and not unlimited.reached.is_set()


def test_only_a_checkpoint_of_the_same_environment_and_model_may_replace_the_served_one():
    served = cfg.Config(hidden_sizes=[64, 64])
    assert incompatibility(served, cfg.Config(hidden_sizes=[64, 64], learning_rate=1.0)) == ""
    other_env = incompatibility(served, cfg.Config(env="Acrobot-v1", hidden_sizes=[64, 64]))
    assert "env 'Acrobot-v1' (served: 'CartPole-v1')" in other_env
    wider = incompatibility(served, cfg.Config(hidden_sizes=[128, 128]))
    assert "hidden_sizes [128, 128] (served: [64, 64])" in wider


def test_the_serving_config_is_the_checkpoints_model_with_serves_own_knobs(tmp_path):
    trained = cfg.Config(hidden_sizes=[7], lstm=True, max_batch=8, address="0.0.0.0:1",
                         logdir="runs/trained", learning_rate=0.5)
    config = serve.serving_config(trained, resolved("--max-batch", "64"))
    assert config.hidden_sizes == [7] and config.lstm and config.learning_rate == 0.5
    assert config.max_batch == 64  # given to serve
    assert config.address == cfg.Config().address  # serve's default, not the trained one's
    assert config.logdir == serve.DEFAULT_LOGDIR  # never the training run's
    given = serve.serving_config(trained, resolved("--logdir", str(tmp_path / "eval")))
    assert given.logdir == str(tmp_path / "eval")
    assert "follow_every" in {f.name for f in cfg.fields_for("serve")}
    assert "learning_rate" not in {f.name for f in cfg.fields_for("serve")}


def test_run_directory_of_a_file_or_a_logdir(tmp_path):
    path = write_checkpoint(tmp_path / "run", policy_version=1)
    assert run_directory(path) == tmp_path / "run"
    assert run_directory(tmp_path / "run") == tmp_path / "run"
    assert run_directory(tmp_path / "run" / "checkpoints") == tmp_path / "run"


# -- serving from a checkpoint ----------------------------------------------------------------


def test_serve_answers_with_the_checkpoints_policy_and_version_and_keeps_nothing(tmp_path):
    path = write_checkpoint(tmp_path / "run", policy_version=7)
    with policy_server(path, tmp_path, greedy=True) as server:
        actor = ScriptedActor(f"127.0.0.1:{server.port}", handshake_request("CartPole-v1", 3))
        try:
            assert actor.handshake.policy_version == 7
            for step in range(5):
                x = observations(3, step)
                response = actor.step(step_request(x))
                assert response.policy_version == 7
                # greedy: the controller's choice, push towards the side the pole falls to
                expected = (x[:, 2] + x[:, 3] > 0).astype(np.int64)
                np.testing.assert_array_equal(actor.actions(response), expected)
            # nothing is kept for training: no recorder, no unroll builders, no queue
            assert server.servicer.recorder is None
            assert [s.builder for s in server.servicer.sessions()] == [None]
            assert not hasattr(server, "queue") and not hasattr(server, "trainer")
        finally:
            actor.close()
    assert not (tmp_path / "serve" / "checkpoints").exists()
    assert (tmp_path / "serve" / "config.json").is_file()
    assert (tmp_path / "serve" / "metrics.jsonl").is_file()
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == [path.name]


def test_serve_runs_torch_on_its_own_torch_threads(tmp_path):
    """--torch-threads is serve's own knob, as it is the learner's (not the checkpoint's)."""
    path = write_checkpoint(tmp_path / "run", policy_version=1)
    default = torch.get_num_threads()
    threads = default + 1  # not what torch had
    try:
        with policy_server(path, tmp_path, "--torch-threads", str(threads)) as server:
            assert server.config.torch_threads == threads == torch.get_num_threads()
    finally:
        torch.set_num_threads(default)


def test_sampled_actions_by_default(tmp_path):
    """Without --greedy the actions are samples of the policy: a state the controller is
    unsure about (z = 0: probability 1/2 each) gets both actions."""
    path = write_checkpoint(tmp_path / "run", policy_version=1)
    with policy_server(path, tmp_path) as server:
        actor = ScriptedActor(f"127.0.0.1:{server.port}", handshake_request("CartPole-v1", 64))
        try:
            actions = actor.actions(actor.step(step_request(np.zeros((64, 4), np.float32))))
        finally:
            actor.close()
    assert set(actions.tolist()) == {0, 1}


def test_an_actor_of_another_environment_is_told_which_checkpoint_is_served(tmp_path):
    path = write_checkpoint(tmp_path / "run", policy_version=2)
    with policy_server(path, tmp_path) as server, pytest.raises(grpc.RpcError) as refused:
        ScriptedActor(f"127.0.0.1:{server.port}", handshake_request("Acrobot-v1", 2))
    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    details = refused.value.details()
    assert f"serving checkpoint {path} of CartPole-v1" in details
    assert "learner runs CartPole-v1" in details and "actor runs 'Acrobot-v1'" in details


# -- following a run --------------------------------------------------------------------------


def test_the_follower_publishes_newer_checkpoints_and_skips_bad_ones(tmp_path, caplog):
    run = tmp_path / "run"
    first = write_checkpoint(run, policy_version=3)
    with policy_server(first, tmp_path, "--follow-every", "3600", follow=run) as server:
        follower = server.follower
        assert follower.poll() is None  # nothing newer yet
        newer = write_checkpoint(run, policy_version=9)
        os.utime(newer, ns=(first.stat().st_mtime_ns + 10**9,) * 2)
        assert follower.poll().path == newer
        actor = ScriptedActor(f"127.0.0.1:{server.port}", handshake_request("CartPole-v1", 2))
        try:
            assert actor.handshake.policy_version == 9
            assert actor.step(step_request(observations(2))).policy_version == 9
            # a torn newest file: logged once, skipped; the served policy goes on
            torn = run / "checkpoints" / "ckpt-0000000100.pt"
            torn.write_bytes(b"not a checkpoint")
            os.utime(torn, ns=(newer.stat().st_mtime_ns + 10**9,) * 2)
            assert follower.poll() is None and follower.poll() is None
            assert sum(f"not serving {torn}" in r.message for r in caplog.records) == 1
            # another environment's checkpoint: refused by name
            other = write_checkpoint(run, policy_version=50, env="Acrobot-v1", gain=None)
            os.utime(other, ns=(torn.stat().st_mtime_ns + 10**9,) * 2)
            assert follower.poll() is None
            assert any(f"not serving {other}: it was trained with another environment" in
                       r.message and "Acrobot-v1" in r.message for r in caplog.records)
            assert actor.step(step_request(observations(2))).policy_version == 9
            # a later good one behind the refused ones is served
            latest = write_checkpoint(run, policy_version=11)
            os.utime(latest, ns=(other.stat().st_mtime_ns + 10**9,) * 2)
            assert follower.poll().policy_version == 11
            assert actor.step(step_request(observations(2))).policy_version == 11
            assert server.metrics.train_steps == 11
        finally:
            actor.close()


def test_newest_after_falls_back_to_an_older_readable_checkpoint(tmp_path):
    run = tmp_path / "run"
    good = write_checkpoint(run, policy_version=4)
    torn = run / "checkpoints" / "ckpt-0000000005.pt"
    torn.write_bytes(torch.zeros(3).numpy().tobytes())
    os.utime(torn, ns=(good.stat().st_mtime_ns + 10**9,) * 2)
    refused: set = set()
    assert newest_after(run, (0, 0), refused).path == good
    assert [path for path, _ in refused] == [torn]
    assert newest_after(run, (good.stat().st_mtime_ns, 0), refused) is None


# -- one-line errors --------------------------------------------------------------------------


@pytest.mark.parametrize("case", ["missing", "garbage", "empty run", "nothing", "own logdir"])
def test_bad_checkpoints_and_flags_end_with_one_line(tmp_path, case):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    garbage = run / "checkpoints" / "ckpt-0000000001.pt"
    argv, expected = {
        "missing": (["--checkpoint", str(tmp_path / "nope")],
                    f"--checkpoint {tmp_path / 'nope'} does not exist"),
        "garbage": (["--checkpoint", str(garbage)],
                    f"--checkpoint: checkpoint {garbage} is unreadable"),
        "empty run": (["--checkpoint", str(tmp_path / "empty")],
                      f"no readable checkpoint in {tmp_path / 'empty'}"),
        "nothing": ([], "give --checkpoint RUN_OR_FILE"),
        "own logdir": (["--follow", str(run), "--logdir", str(run)],
                       f"--logdir {run} is the logdir of the run being served"),
    }[case]
    garbage.write_bytes(b"\0" * 10)
    (tmp_path / "empty").mkdir()
    with pytest.raises(SystemExit) as exited:
        cli.main(["serve", "--address", "127.0.0.1:0", *argv])
    message = str(exited.value.code)
    assert message.startswith("seed-rl serve: error: ") and "\n" not in message
    assert expected in message


def test_the_serve_page_shows_commands_the_cli_takes_and_paths_that_exist():
    text = (Path(__file__).resolve().parents[2] / "docs" / "serve.md").read_text()
    shell = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    commands = re.findall(r"^\s*seed-rl (\w+[^#\n]*)", shell, re.M)
    assert {c.split()[0] for c in commands} >= {"serve", "actors"}
    for command in commands:
        cli.build_parser().parse_args(command.split())  # exits on a flag it does not have
    root = Path(__file__).resolve().parents[2]
    for path in set(re.findall(r"(?:deploy|tests|benchmarks|docker)/[\w./-]*\w", text)):
        assert (root / path).exists(), f"docs/serve.md names {path}, which does not exist"
    serve_parser = argparse.ArgumentParser()
    cli.add_arguments(serve_parser, "serve")
    cli.add_serve_arguments(serve_parser)
    flags = set(re.findall(r"--[a-z-]+", serve_parser.format_help()))
    # flags of the roles that train, named as what a checkpoint was trained with
    trained = {"--env", "--env-kwargs", "--env-import", "--env-wrapper", "--hidden-sizes",
               "--lstm", "--lstm-size", "--conv-net", "--checkpoint-every"}
    for flag in re.findall(r"`(--[a-z-]+)", text):
        assert flag in flags | trained | {"--serve"}, flag  # --serve: the benchmark's


def test_stopping_says_not_serving_and_tells_the_actor_it_is_over(tmp_path):
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    path = write_checkpoint(tmp_path / "run", policy_version=4)
    with policy_server(path, tmp_path) as server:
        address = f"127.0.0.1:{server.port}"
        actor = ScriptedActor(address, handshake_request("CartPole-v1", 1))
        try:
            assert actor.step(step_request(observations(1))).policy_version == 4
            # shutdown waits (a few seconds at most) for the connected actor to hear it
            stopping = threading.Thread(target=server.shutdown)
            stopping.start()
            with grpc.insecure_channel(address) as channel:
                health = health_pb2_grpc.HealthStub(channel)
                request = health_pb2.HealthCheckRequest(service="seed_rl.v1.Learner")
                deadline = time.monotonic() + 10
                while health.Check(request, timeout=5).status == \
                        health_pb2.HealthCheckResponse.SERVING:
                    assert time.monotonic() < deadline, "still SERVING while stopping"
                    time.sleep(0.01)
            over = actor.step(step_request(observations(1)))
            assert over.training_over and over.policy_version == 4
            stopping.join(timeout=30)
            assert not stopping.is_alive()
        finally:
            actor.close()


def test_token_tls_and_max_streams_are_the_learners(tmp_path, pki):
    """Serve's own --auth-token, --tls-cert/--tls-key and --max-streams: an RPC without the
    token is refused, a TLS client with it is served, a second session past the limit gets
    RESOURCE_EXHAUSTED."""
    from support.secure_clients import TOKEN, bearer, secure_channel, status_of

    from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc

    path = write_checkpoint(tmp_path / "run", policy_version=5)
    with policy_server(path, tmp_path, "--auth-token", TOKEN, "--tls-cert",
                       str(pki["server.pem"]), "--tls-key", str(pki["server.key"]),
                       "--max-streams", "1") as server:
        assert server.config.auth_token == TOKEN and server.config.max_streams == 1
        with secure_channel(server.port, pki["ca.pem"]) as channel:
            stub = pb_grpc.LearnerStub(channel)
            code, _ = status_of(lambda: stub.Handshake(
                handshake_request("CartPole-v1", 1), timeout=10))
            assert code == grpc.StatusCode.UNAUTHENTICATED
            first = stub.Handshake(handshake_request("CartPole-v1", 1), timeout=10,
                                   metadata=bearer(TOKEN))
            assert first.session_id and first.policy_version == 5
            code, details = status_of(lambda: stub.Handshake(
                handshake_request("CartPole-v1", 1), timeout=10, metadata=bearer(TOKEN)))
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-streams 1" in details


@pytest.mark.parametrize(("env", "overrides"), [("CartPole-v1", {"lstm": True, "lstm_size": 8}),
                                                ("Pendulum-v1", {})], ids=["lstm", "box-actions"])
def test_recurrent_and_continuous_policies_are_served(tmp_path, env, overrides):
    """An LSTM checkpoint (each session's core state carried from step to step) and a
    Gaussian policy (greedy: its mean) are served like a feed-forward categorical one."""
    import gymnasium as gym

    path = write_checkpoint(tmp_path / "run", policy_version=3, env=env, gain=None,
                            **overrides)
    probe = gym.make(env)
    with policy_server(path, tmp_path, greedy=True) as server:
        actor = ScriptedActor(f"127.0.0.1:{server.port}", handshake_request(env, 2))
        try:
            for _ in range(4):
                x = np.stack([probe.observation_space.sample() for _ in range(2)])
                response = actor.step(step_request(x.astype(np.float32)))
                assert response.policy_version == 3
                actions = actor.actions(response)
                assert len(actions) == 2 and np.all(np.isfinite(actions)), actions
            (session,) = server.servicer.sessions()
            if overrides.get("lstm"):  # (h, c), moved on by every step
                assert len(session.core_state) == 2
                assert all(float(s.abs().sum()) > 0 for s in session.core_state)
            else:
                assert session.core_state == ()
        finally:
            actor.close()
            probe.close()
