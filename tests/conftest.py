"""Shared fixtures (small and generic)."""

from __future__ import annotations

import datetime
import ipaddress
import os
import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from procs import Process
from stand_in_learner import StandInLearner

from seed_rl.config import ENV_PREFIX


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listened on a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def processes() -> Iterator[Callable[..., Process]]:
    started: list[Process] = []

    def start(args: list[str], env: dict[str, str] | None = None) -> Process:
        process = Process(args, env)
        started.append(process)
        return process

    yield start
    for process in started:
        process.kill()


@pytest.fixture
def clean_environment(monkeypatch):
    """No SEED_RL_* variable of the test runner reaches the processes a test starts."""
    for key in list(os.environ):
        if key.startswith(ENV_PREFIX):
            monkeypatch.delenv(key)


# -- TLS: certificates made at test time (the cryptography package; no openssl CLI) --------


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def certificate(subject: str, key, issuer: str, issuer_key, *, ca: bool,
                names: tuple[str, ...] = ("127.0.0.1", "localhost")) -> x509.Certificate:
    """An X.509 certificate valid for one day; a leaf is valid for ``names`` (IP addresses
    or DNS names)."""
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(_name(issuer))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        alt: list[x509.GeneralName] = []
        for name in names:
            try:
                alt.append(x509.IPAddress(ipaddress.ip_address(name)))
            except ValueError:
                alt.append(x509.DNSName(name))
        builder = builder.add_extension(x509.SubjectAlternativeName(alt), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> dict[str, Path]:
    """Two certificate authorities and PEM files signed by them, in ``directory``.

    ``ca.pem`` signs ``server.pem``/``server.key`` (for 127.0.0.1) and ``client.pem``/
    ``client.key``; ``other-ca.pem``, a CA nobody trusts, signs ``other-client.pem``/
    ``other-client.key``. Returns file name -> path.
    """
    files: dict[str, Path] = {}

    def write(name: str, data: bytes) -> None:
        files[name] = directory / name
        files[name].write_bytes(data)

    def new_key() -> ec.EllipticCurvePrivateKey:
        return ec.generate_private_key(ec.SECP256R1())

    for ca_name, leaves in (("ca", ("server", "client")), ("other-ca", ("other-client",))):
        ca_key = new_key()
        write(
            f"{ca_name}.pem",
            certificate(ca_name, ca_key, ca_name, ca_key, ca=True).public_bytes(
                serialization.Encoding.PEM
            ),
        )
        for leaf in leaves:
            key = new_key()
            write(
                f"{leaf}.pem",
                certificate(leaf, key, ca_name, ca_key, ca=False).public_bytes(
                    serialization.Encoding.PEM
                ),
            )
            write(
                f"{leaf}.key",
                key.private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                ),
            )
    return files


@pytest.fixture
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Fresh TLS certificates for one test (see :func:`make_pki`)."""
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def learners() -> Iterator[Callable[..., StandInLearner]]:
    """Start stand-in learners (tests/stand_in_learner.py); all are stopped afterwards."""
    started: list[StandInLearner] = []

    def start(**kwargs) -> StandInLearner:
        learner = StandInLearner(**kwargs).start()
        started.append(learner)
        return learner

    yield start
    for learner in started:
        learner.stop()
