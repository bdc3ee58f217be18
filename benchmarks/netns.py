"""Network namespaces with added latency and packet loss, for measuring seed-rl under real
network conditions instead of a perfect loopback (benchmarks/network.py,
tests/integration/test_network_conditions.py).

Everything happens inside a network namespace created here (``ip netns add``, root or
CAP_SYS_ADMIN): the learner, the actors, and the impairment, applied to that namespace's own
loopback, so no other interface or address is touched and the namespace's ports are free.

Two ways to impair the loopback, chosen once per namespace by ``detect_method``:

* ``netem`` (when the kernel has sch_netem): ``tc qdisc ... netem delay D/2 loss P%`` on
  ``lo``. Every packet leaves ``lo`` once, so a round trip grows by D and each packet is
  lost with probability P.
* ``proxy`` (kernels built without CONFIG_NET_SCH_NETEM, where ``tc`` answers "Specified
  qdisc kind is unknown"): the actors connect to benchmarks/delay_proxy.py, which forwards to
  the learner holding every chunk D/2 in each direction, and an nftables rule drops P % of
  the packets to and from the proxy's port (the kernel drops them; TCP retransmits for
  real). Only the actor-proxy leg is lossy, so the loss per path is P, as with netem.

A namespace deletes itself on ``__exit__`` and, as a backstop, at interpreter exit, after
killing every process inside it. Namespaces are named ``seedrl-net-PID-N``; ones left by a
SIGKILLed run (their PID is gone) are removed by ``remove_stale_namespaces``.
"""

from __future__ import annotations

import atexit
import contextlib
import itertools
import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

PREFIX = "seedrl-net-"
PROXY_SCRIPT = Path(__file__).resolve().with_name("delay_proxy.py")
NFT_TABLE = "seedrl_loss"
_names = itertools.count()


class NamespaceUnavailable(RuntimeError):
    """A network namespace could not be created here (not root, no CAP_SYS_ADMIN, no
    iproute2, or namespaces disabled in this container)."""


def _run(argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def list_namespaces() -> list[str]:
    """Names of the named network namespaces (``ip netns list``)."""
    listed = _run(["ip", "netns", "list"])
    return [line.split()[0] for line in listed.stdout.splitlines() if line.strip()]


def remove_stale_namespaces() -> list[str]:
    """Delete namespaces this module created in processes that no longer exist."""
    removed = []
    for name in list_namespaces():
        match = re.fullmatch(re.escape(PREFIX) + r"(\d+)-\d+", name)
        if match and not _pid_alive(int(match.group(1))):
            NetworkNamespace(name).delete()
            removed.append(name)
    return removed


class NetworkNamespace:
    """A network namespace of our own whose only interface is its loopback, up.

    ``with NetworkNamespace() as ns:`` creates it; ``ns.command([...])`` is the argv that
    runs a program inside it; leaving the block kills whatever still runs inside and deletes
    it. Raises ``NamespaceUnavailable`` when it cannot be created.
    """

    def __init__(self, name: str | None = None):
        self.name = name or f"{PREFIX}{os.getpid()}-{next(_names)}"

    def create(self) -> NetworkNamespace:
        added = _run(["ip", "netns", "add", self.name])
        if added.returncode != 0:
            raise NamespaceUnavailable(
                f"`ip netns add {self.name}` failed: {added.stderr.strip() or added.returncode}")
        atexit.register(self.delete)
        up = self.run(["ip", "link", "set", "lo", "up"])
        if up.returncode != 0:
            self.delete()
            raise NamespaceUnavailable(f"cannot bring up lo in {self.name}: {up.stderr.strip()}")
        return self

    def command(self, argv: list[str]) -> list[str]:
        """The argv that runs ``argv`` inside this namespace (``ip netns exec`` execs in
        place, so the PID of the started process is the program's own)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def run(self, argv: list[str], timeout: float = 30.0) -> subprocess.CompletedProcess[str]:
        """Run a command inside the namespace to completion; output captured."""
        return _run(self.command(argv), timeout)

    def check(self, argv: list[str]) -> str:
        """Run a command inside the namespace; raise with its stderr if it fails."""
        done = self.run(argv)
        if done.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} failed in {self.name}: {done.stderr.strip()}")
        return done.stdout

    def start(self, argv: list[str], env: dict[str, str] | None = None) -> LoggedProcess:
        """Start a program inside the namespace, its output collected line by line."""
        return LoggedProcess(self.command(argv), env)

    def pids(self) -> list[int]:
        """Every process running inside the namespace."""
        listed = _run(["ip", "netns", "pids", self.name])
        return [int(pid) for pid in listed.stdout.split() if pid.isdigit()]

    def kill_processes(self, grace: float = 5.0) -> None:
        """SIGTERM everything inside the namespace, SIGKILL what is left after ``grace``."""
        for signum in (signal.SIGTERM, signal.SIGKILL):
            pids = self.pids()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signum)
            deadline = time.monotonic() + grace
            while pids and time.monotonic() < deadline:
                time.sleep(0.05)
                pids = [pid for pid in pids if _pid_alive(pid) and not _is_zombie(pid)]
            if not pids:
                return

    def delete(self) -> None:
        """Kill the processes inside, then delete the namespace (idempotent)."""
        atexit.unregister(self.delete)
        if self.name not in list_namespaces():
            return
        self.kill_processes()
        _run(["ip", "netns", "delete", self.name])

    def exists(self) -> bool:
        return self.name in list_namespaces()

    def __enter__(self) -> NetworkNamespace:
        return self.create()

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 trace: TracebackType | None) -> None:
        self.delete()


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2] == "Z"


class LoggedProcess:
    """A subprocess whose stdout and stderr are collected line by line in the background."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None):
        self.popen = subprocess.Popen(
            argv, env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True, start_new_session=True)
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.popen.stdout is not None
        for line in self.popen.stdout:
            self.lines.append(line.rstrip("\n"))

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def wait_for_line(self, pattern: str, timeout: float) -> re.Match[str]:
        """The first output line matching ``pattern``; raises if the process exits or the
        time runs out first."""
        deadline = time.monotonic() + timeout
        while True:
            for line in list(self.lines):
                if match := re.search(pattern, line):
                    return match
            if self.popen.poll() is not None and not self._reader.is_alive():
                raise RuntimeError(f"exited ({self.popen.returncode}) without printing "
                                   f"{pattern!r}:\n{self.text}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"no line matching {pattern!r} in {timeout} s:\n{self.text}")
            time.sleep(0.05)

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._reader.join(10)
        return self.popen.returncode


def detect_method(ns: NetworkNamespace) -> tuple[str, str]:
    """("netem" or "proxy", why): netem when ``tc`` can add it to the namespace's lo."""
    probe = ns.run(["tc", "qdisc", "add", "dev", "lo", "root", "netem", "delay", "0ms"])
    if probe.returncode == 0:
        ns.run(["tc", "qdisc", "del", "dev", "lo", "root"])
        return "netem", "tc netem on the namespace's loopback"
    reason = probe.stderr.strip().splitlines()[-1] if probe.stderr.strip() else "tc failed"
    return "proxy", (f"no netem on this kernel (tc: {reason!r}): delay by a userspace TCP "
                     "proxy, loss by an nftables rule")


@dataclass(frozen=True)
class Impairment:
    """What a path adds: ``added_rtt_ms`` to every round trip, ``loss_percent`` of packets
    dropped; ``proxied=False`` with the proxy method: no proxy at all (the baseline)."""

    added_rtt_ms: float = 0.0
    loss_percent: float = 0.0
    proxied: bool = True

    @property
    def label(self) -> str:
        text = f"{self.added_rtt_ms:g} ms"
        if self.loss_percent:
            text += f", {self.loss_percent:g} % loss"
        return text if self.proxied else text + " (no proxy)"


def add_nft_loss(ns: NetworkNamespace, percent: float, port: int) -> None:
    """Drop ``percent`` of the TCP packets to or from ``port`` on the namespace's lo
    (random, per packet; resolution 0.01 %)."""
    threshold = round(percent * 100)
    ns.check(["nft", "add", "table", "inet", NFT_TABLE])
    ns.check(["nft", "add", "chain", "inet", NFT_TABLE, "out",
              "{ type filter hook output priority 0; }"])
    for direction in ("dport", "sport"):
        ns.check(["nft", "add", "rule", "inet", NFT_TABLE, "out", "oif", "lo", "tcp",
                  direction, str(port), "numgen", "random", "mod", "10000", "<",
                  str(threshold), "counter", "drop"])


def nft_dropped_packets(ns: NetworkNamespace) -> int:
    """Packets the loss rules dropped so far (0 without them)."""
    listed = ns.run(["nft", "list", "table", "inet", NFT_TABLE])
    return sum(int(n) for n in re.findall(r"counter packets (\d+)", listed.stdout))


def remove_nft_loss(ns: NetworkNamespace) -> None:
    ns.run(["nft", "delete", "table", "inet", NFT_TABLE])


def set_netem(ns: NetworkNamespace, impairment: Impairment) -> None:
    """netem on lo: half the added round trip per packet (each crosses lo once each way)."""
    argv = ["tc", "qdisc", "replace", "dev", "lo", "root", "netem",
            "delay", f"{impairment.added_rtt_ms / 2:g}ms"]
    if impairment.loss_percent:
        argv += ["loss", f"{impairment.loss_percent:g}%"]
    ns.check(argv)


def clear_netem(ns: NetworkNamespace) -> None:
    ns.run(["tc", "qdisc", "del", "dev", "lo", "root"])


class ImpairedPath:
    """``with ImpairedPath(ns, method, impairment, target_port, proxy_port) as path:``
    connect to 127.0.0.1:``path.port`` inside ``ns`` to reach ``target_port`` with the
    impairment; leaving the block removes it (and stops the proxy, whose CPU seconds are
    then in ``path.proxy_cpu_s``)."""

    def __init__(self, ns: NetworkNamespace, method: str, impairment: Impairment,
                 target_port: int, proxy_port: int):
        if method not in ("netem", "proxy"):
            raise ValueError(f"unknown method {method!r}")
        if method == "proxy" and not impairment.proxied and impairment.added_rtt_ms:
            raise ValueError("a delay needs the proxy")
        self.ns, self.method, self.impairment = ns, method, impairment
        self.target_port, self.proxy_port = target_port, proxy_port
        self.port = target_port
        self.proxy: LoggedProcess | None = None
        self.proxy_cpu_s: float | None = None  # CPU seconds of the proxy, start to stop
        self.proxy_wall_s: float | None = None  # and how long it ran
        self.dropped_packets = 0

    def __enter__(self) -> ImpairedPath:
        try:
            if self.method == "netem":
                if self.impairment.added_rtt_ms or self.impairment.loss_percent:
                    set_netem(self.ns, self.impairment)
                return self
            if self.impairment.proxied:
                self.proxy = self.ns.start(
                    [sys.executable, str(PROXY_SCRIPT), "serve", "--listen-port",
                     str(self.proxy_port), "--target-port", str(self.target_port),
                     "--rtt-ms", f"{self.impairment.added_rtt_ms:g}"])
                self.proxy.wait_for_line(r"proxy listening", 30.0)
                self.port = self.proxy_port
            if self.impairment.loss_percent:
                add_nft_loss(self.ns, self.impairment.loss_percent, self.port)
        except BaseException:
            self.close()
            raise
        return self

    def close(self) -> None:
        if self.method == "netem":
            clear_netem(self.ns)
            return
        self.dropped_packets = nft_dropped_packets(self.ns)
        remove_nft_loss(self.ns)
        if self.proxy is not None:
            self.proxy.stop(10.0)
            found = re.search(r"cpu_s=([\d.]+) wall_s=([\d.]+)", self.proxy.text)
            if found:
                self.proxy_cpu_s, self.proxy_wall_s = map(float, found.groups())
            self.proxy = None

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


def echo_round_trip_ms(ns: NetworkNamespace, added_rtt_ms: float, through_proxy: bool,
                       count: int = 20) -> tuple[float, float]:
    """(min, median) round trip in ms of small TCP messages inside ``ns``: through a delay
    proxy adding ``added_rtt_ms`` (the proxy method), or straight over the namespace's lo as
    it is impaired right now (netem, or nothing)."""
    argv = [sys.executable, str(PROXY_SCRIPT), "rtt", "--rtt-ms", f"{added_rtt_ms:g}",
            "--count", str(count)]
    if not through_proxy:
        argv.append("--no-proxy")
    out = ns.check(argv)
    found = re.search(r"min=([\d.]+) p50=([\d.]+)", out)
    if not found:
        raise RuntimeError(f"unexpected output of the echo probe: {out!r}")
    return float(found.group(1)), float(found.group(2))


def exit_cleanly_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks and ``__exit__`` run (Ctrl-C
    already raises KeyboardInterrupt)."""
    def _raise(signum: int, _frame: Any) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _raise)
