"""Shared fixtures (small and generic), and the rules of the test layout.

tests/unit/ runs in this process (real gRPC servers and threads, no child processes);
tests/integration/ starts real processes; tests/deploy/ checks the containers and the
Kubernetes manifests. Every test under integration/ and deploy/ is marked ``slow``, and a
test outside them that starts a process fails, naming the rule: so ``pytest -m "not
slow"`` is the quick loop (README) and stays quick. Shared helpers live in tests/support/.
"""

from __future__ import annotations

import _posixsubprocess
import datetime
import ipaddress
import os
import socket
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.actor_threads import ActorThread
from support.procs import WAIT, Process
from support.stand_in_learner import StandInLearner

from actors.counters import Counters
from seed_rl.config import ENV_PREFIX, Config

TESTS = Path(__file__).resolve().parent
#: folders whose every test is ``slow``: they start processes
SLOW_FOLDERS = ("integration", "deploy")


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        folder = Path(str(item.path)).resolve().relative_to(TESTS).parts[0]
        if folder in SLOW_FOLDERS:
            item.add_marker(pytest.mark.slow)


FAILED_BEFORE_TEARDOWN = pytest.StashKey[bool]()
#: the process starts a test attempted (tests/unit/test_layout.py clears what it provoked)
PROCESS_ATTEMPTS = pytest.StashKey[list[str]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo) -> pytest.TestReport:
    report = yield
    if report.when in ("setup", "call") and report.failed:
        item.stash[FAILED_BEFORE_TEARDOWN] = True
    return report


class ProcessStarted(AssertionError):
    """A test that is not marked ``slow`` started a process."""


@pytest.fixture(autouse=True)
def _no_processes_unless_slow(request: pytest.FixtureRequest) -> Iterator[None]:
    """Outside ``slow`` tests, starting a process (subprocess, multiprocessing, os.fork,
    posix_spawn) raises :class:`ProcessStarted` and fails the test, also when the start
    happened in a thread that swallowed the error."""
    if request.node.get_closest_marker("slow") or request.node.get_closest_marker("docker"):
        yield
        return
    attempts: list[str] = []
    request.node.stash[PROCESS_ATTEMPTS] = attempts
    originals = {(os, "fork"): os.fork, (os, "posix_spawn"): os.posix_spawn,
                 (os, "posix_spawnp"): os.posix_spawnp,
                 (_posixsubprocess, "fork_exec"): _posixsubprocess.fork_exec,
                 (subprocess, "_fork_exec"): subprocess._fork_exec}

    def refuse(what: str) -> Callable[..., object]:
        def start(*_args: object, **_kwargs: object) -> object:
            attempts.append(what)
            raise ProcessStarted(
                f"{request.node.nodeid} started a process ({what}): a test that starts "
                "processes belongs in tests/integration/ (marked slow), see tests/conftest.py")
        return start

    for (module, name) in originals:
        setattr(module, name, refuse(f"{module.__name__}.{name}"))
    try:
        yield
    finally:
        for (module, name), original in originals.items():
            setattr(module, name, original)
    if attempts and not request.node.stash.get(FAILED_BEFORE_TEARDOWN, False):
        pytest.fail(f"{request.node.nodeid} started a process ({attempts[0]}): move it to "
                    "tests/integration/ or mark it slow", pytrace=False)


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
    now = datetime.datetime.now(datetime.UTC)
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
    """Start stand-in learners (tests/support/stand_in_learner.py); all are stopped afterwards."""
    started: list[StandInLearner] = []

    def start(**kwargs) -> StandInLearner:
        learner = StandInLearner(**kwargs).start()
        started.append(learner)
        return learner

    yield start
    for learner in started:
        learner.stop()


@pytest.fixture
def actors() -> Iterator[Callable[..., ActorThread]]:
    """Start actors in threads of this process (tests/support/actor_threads.py); every one is
    told to stop afterwards and waited for."""
    running: list[ActorThread] = []

    def start(config: Config, index: int = 0, counters: Counters | None = None) -> ActorThread:
        actor = ActorThread(config, index, counters)
        running.append(actor)
        return actor

    yield start
    for actor in running:
        actor.stop.set()
    for actor in running:
        actor.thread.join(WAIT)
