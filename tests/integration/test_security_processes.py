"""Security through real learner and actor processes: the token on every RPC and never logged, TLS and mutual TLS refusals, loopback-only binding, the warning for an unprotected learner beyond loopback."""

from __future__ import annotations

import ipaddress
import sys
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from support.learner_client import handshake_request
from support.learner_process import (
    SERVING,
    actors_command,
    last_metric,
    learner_command,
    read_metrics,
    wait_for,
)
from support.secure_clients import ENV, REFUSAL_TIMEOUT, TOKEN, bearer, secure_channel, status_of

from seed_rl import wire
from seed_rl.proto.seed_rl.v1 import seed_rl_pb2_grpc as pb_grpc


def call_handshake(channel: grpc.Channel, metadata=()) -> grpc.StatusCode:
    """One Handshake RPC; the status code it got (OK when it succeeded)."""
    try:
        pb_grpc.LearnerStub(channel).Handshake(
            handshake_request(ENV, 1), metadata=metadata, timeout=REFUSAL_TIMEOUT
        )
    except grpc.RpcError as error:
        return error.code()
    return grpc.StatusCode.OK

def tls_learner(processes, logdir: Path, port: int, pki: dict[str, Path], flags: str = ""):
    learner = processes(
        learner_command(
            logdir,
            port,
            f"--env {ENV} --tls-cert {pki['server.pem']} --tls-key {pki['server.key']} {flags}",
        )
    )
    learner.wait_for_line(SERVING.pattern)
    return learner

def trains_over_tls(processes, logdir: Path, port: int, learner, flags: str) -> None:
    """A real actor process with ``flags`` trains against the TLS learner, then all stop."""
    actor = processes(
        actors_command(
            port, f"--actor-index 0 --actor-id-prefix tls --env {ENV} --envs-per-actor 4 {flags}"
        )
    )
    wait_for(
        lambda: last_metric(logdir, "train_steps") >= 3, "the TLS actor training", process=learner
    )
    learner.popen.terminate()
    assert learner.wait() == 0, learner.text
    assert actor.wait() == 0, actor.text
    assert read_metrics(logdir)[-1]["env_steps"] > 0

def seed_rl_command() -> list[str]:
    """The installed ``seed-rl`` console script (the real command users type)."""
    script = Path(sys.executable).with_name("seed-rl")
    assert script.exists(), f"{script} is missing: pip install -e . in this environment"
    return [str(script)]

def listening_hosts(port: int) -> set[str]:
    """IP addresses with a socket listening on TCP ``port`` (from /proc/net/tcp, tcp6)."""
    hosts = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for row in Path(table).read_text().splitlines()[1:]:
            local, _remote, state = row.split()[1:4]
            address, port_hex = local.split(":")
            if state != "0A" or int(port_hex, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(address)
            words = [raw[i : i + 4][::-1] for i in range(0, len(raw), 4)]  # host-order words
            ip = ipaddress.ip_address(b"".join(words))
            hosts.add(str(getattr(ip, "ipv4_mapped", None) or ip))  # ::ffff:127.0.0.1
    return hosts


@pytest.mark.slow
def test_every_rpc_needs_the_token_and_the_token_is_never_logged(
    tmp_path, processes, free_port
) -> None:
    logdir = tmp_path / "run"
    learner = processes(
        learner_command(logdir, free_port, f"--env {ENV}"), env={"SEED_RL_AUTH_TOKEN": TOKEN}
    )  # the environment variable route
    learner.wait_for_line(SERVING.pattern)
    channel = grpc.insecure_channel(f"127.0.0.1:{free_port}")
    stub = pb_grpc.LearnerStub(channel)
    health = health_pb2_grpc.HealthStub(channel)
    calls = {
        "Handshake": lambda md: stub.Handshake(
            handshake_request(ENV, 1), metadata=md, timeout=REFUSAL_TIMEOUT
        ),
        "Step": lambda md: list(stub.Step(iter([]), metadata=md, timeout=REFUSAL_TIMEOUT)),
        "Health": lambda md: health.Check(
            health_pb2.HealthCheckRequest(), metadata=md, timeout=REFUSAL_TIMEOUT
        ),
        "unknown method": lambda md: channel.unary_unary("/seed_rl.v1.Learner/Nope")(
            b"", metadata=md, timeout=REFUSAL_TIMEOUT
        ),
    }
    wrong = [
        (),
        bearer("wrong"),
        bearer(TOKEN + "x"),
        bearer(TOKEN[:-1]),
        [(wire.AUTH_METADATA_KEY, TOKEN)],
        [("x-token", TOKEN)],
    ]
    for name, call in calls.items():
        for metadata in wrong:
            code, details = status_of(lambda call=call, md=metadata: call(md))
            assert code == grpc.StatusCode.UNAUTHENTICATED, (name, metadata, code)
            assert "auth token" in details and TOKEN not in details
    # With the token the health check answers, and a real actor (token by flag) trains.
    assert status_of(lambda: calls["Health"](bearer(TOKEN)))[0] == grpc.StatusCode.OK
    channel.close()
    actor = processes(
        actors_command(
            free_port,
            f"--actor-index 0 --actor-id-prefix tok "
            f"--env {ENV} --envs-per-actor 4 --auth-token {TOKEN}",
        )
    )
    wait_for(lambda: last_metric(logdir, "train_steps") >= 3, "the actor training", process=learner)
    # An actor with the wrong token is refused for good: exit 2, with the reason.
    stranger = processes(
        actors_command(
            free_port, f"--actor-index 0 --actor-id-prefix bad --env {ENV} --auth-token wrong"
        )
    )
    assert stranger.wait() == 2, stranger.text
    assert "UNAUTHENTICATED" in stranger.text and "auth token" in stranger.text
    learner.popen.terminate()
    assert learner.wait() == 0, learner.text
    assert actor.wait() == 0, actor.text
    assert "without --auth-token or TLS" not in learner.text  # loopback (and a token)
    # Never logged, never written: logs, the saved config, metrics.
    for text, where in (
        (learner.text, "learner log"),
        (actor.text, "actor log"),
        (stranger.text, "refused actor log"),
    ):
        assert TOKEN not in text, where
    for path in logdir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path
    assert '"auth_token": "<redacted>"' in (logdir / "config.json").read_text()


@pytest.mark.slow
def test_tls_learner_refuses_plaintext_and_wrong_ca_clients(
    tmp_path, processes, free_port, pki
) -> None:
    logdir = tmp_path / "run"
    learner = tls_learner(processes, logdir, free_port, pki)
    plaintext = grpc.insecure_channel(f"127.0.0.1:{free_port}")
    assert call_handshake(plaintext) == grpc.StatusCode.UNAVAILABLE
    wrong_ca = secure_channel(free_port, pki["other-ca.pem"])  # cannot verify the learner
    assert call_handshake(wrong_ca) == grpc.StatusCode.UNAVAILABLE
    good = secure_channel(free_port, pki["ca.pem"])
    assert call_handshake(good) == grpc.StatusCode.OK
    for channel in (plaintext, wrong_ca, good):
        channel.close()
    assert learner.text.count(" joined from ") == 1  # only the good client got in
    trains_over_tls(processes, logdir, free_port, learner, f"--tls-ca {pki['ca.pem']}")


@pytest.mark.slow
def test_mutual_tls_refuses_clients_without_a_trusted_certificate(
    tmp_path, processes, free_port, pki
) -> None:
    logdir = tmp_path / "run"
    learner = tls_learner(processes, logdir, free_port, pki, f"--tls-client-ca {pki['ca.pem']}")
    refused = {
        "plaintext": grpc.insecure_channel(f"127.0.0.1:{free_port}"),
        "no client certificate": secure_channel(free_port, pki["ca.pem"]),
        "certificate from another CA": secure_channel(
            free_port, pki["ca.pem"], pki["other-client.pem"], pki["other-client.key"]
        ),
    }
    for name, channel in refused.items():
        assert call_handshake(channel) == grpc.StatusCode.UNAVAILABLE, name
        channel.close()
    good = secure_channel(free_port, pki["ca.pem"], pki["client.pem"], pki["client.key"])
    assert call_handshake(good) == grpc.StatusCode.OK
    good.close()
    assert learner.text.count(" joined from ") == 1
    trains_over_tls(
        processes,
        logdir,
        free_port,
        learner,
        f"--tls-ca {pki['ca.pem']} --tls-cert {pki['client.pem']} --tls-key {pki['client.key']}",
    )


@pytest.mark.slow
def test_learner_warns_when_it_listens_beyond_loopback_unprotected(
    tmp_path, processes, free_port
) -> None:
    common = ["learner", "--env", ENV, "--device", "cpu", "--checkpoint-every", "3600"]
    warning = "without --auth-token or TLS"
    exposed = processes(
        [
            *seed_rl_command(),
            *common,
            "--address",
            f"0.0.0.0:{free_port}",
            "--logdir",
            str(tmp_path / "exposed"),
        ]
    )
    line = exposed.wait_for_line(warning)
    assert "WARNING" in line and f"0.0.0.0:{free_port}" in line
    exposed.wait_for_line(SERVING.pattern)
    assert listening_hosts(free_port) & {"0.0.0.0", "::"}  # it binds where told
    exposed.popen.terminate()
    assert exposed.wait() == 0, exposed.text
    # With a token (or TLS) it is protected: no warning. (On loopback it never warns: the
    # other tests' learners listen on 127.0.0.1 and stay quiet.)
    quiet = processes(
        [
            *seed_rl_command(),
            *common,
            "--address",
            f"0.0.0.0:{free_port}",
            "--auth-token",
            TOKEN,
            "--logdir",
            str(tmp_path / "quiet"),
        ]
    )
    quiet.wait_for_line(SERVING.pattern)
    quiet.popen.terminate()
    assert quiet.wait() == 0, quiet.text
    assert warning not in quiet.text and TOKEN not in quiet.text


@pytest.mark.slow
def test_seed_rl_train_listens_on_loopback_only(tmp_path, processes) -> None:
    logdir = tmp_path / "run"
    train = processes(
        [
            *seed_rl_command(),
            "train",
            "--max-time",
            "1",
            "--logdir",
            str(logdir),
            "--num-actors",
            "1",
            "--envs-per-actor",
            "2",
            "--device",
            "cpu",
        ]
    )
    serving = SERVING.search(train.wait_for_line(SERVING.pattern, timeout=60))
    assert serving["host"] == "127.0.0.1"
    assert listening_hosts(int(serving["port"])) == {"127.0.0.1"}
    assert train.wait(60) == 0, train.text
    assert "without --auth-token or TLS" not in train.text
