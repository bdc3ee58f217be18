"""seed-rl behind a slow, lossy network: a real learner and real actors inside a network
namespace whose loopback has 20 ms added to every round trip and 1 % of its packets
dropped (benchmarks/netns.py: netem where the kernel has it, else a delay proxy and an
nftables rule). Asserts behaviour, not speed: the harness really adds the delay, training
goes on with every actor connected, and nothing is left behind, namespace or process.

Needs root (CAP_SYS_ADMIN) for ``ip netns add``; skips, saying so, where that fails.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from support.procs import REPO, is_running

sys.path.insert(0, str(REPO / "benchmarks"))  # the harness is shared with the benchmark
from netns import (  # noqa: E402
    ImpairedPath,
    Impairment,
    NamespaceUnavailable,
    NetworkNamespace,
    detect_method,
    echo_round_trip_ms,
    list_namespaces,
)

ADDED_RTT_MS, LOSS_PERCENT = 20.0, 1.0
LEARNER_PORT, PROXY_PORT = 50051, 50052  # the namespace's own: nothing else listens there
ENV = {"PYTHONPATH": str(REPO)}


def open_namespace() -> NetworkNamespace:
    """A fresh namespace, or skip the test where this machine cannot make one."""
    try:
        return NetworkNamespace().create()
    except (NamespaceUnavailable, FileNotFoundError) as error:
        pytest.skip(f"cannot create a network namespace here ({error}); these tests need "
                    "root (CAP_SYS_ADMIN) and iproute2's `ip`")


def env_steps(metrics: Path) -> int:
    """The learner's latest env step count (0 before its first metrics line)."""
    if not metrics.is_file():
        return 0
    records = []
    for line in metrics.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:  # a line being written
            continue
    return int(records[-1]["env_steps"]) if records else 0


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def test_the_harness_adds_the_round_trip_it_promises_and_cleans_up() -> None:
    ns = open_namespace()
    try:
        method, _ = detect_method(ns)
        plain_min, _ = echo_round_trip_ms(ns, 0.0, through_proxy=False, count=10)
        with ImpairedPath(ns, method, Impairment(ADDED_RTT_MS), LEARNER_PORT, PROXY_PORT):
            delayed_min, _ = echo_round_trip_ms(ns, ADDED_RTT_MS, method == "proxy", count=10)
    finally:
        ns.delete()
    assert not ns.exists()
    # a lower bound: behaviour of the harness, not a timing of the machine
    assert delayed_min >= ADDED_RTT_MS, (plain_min, delayed_min)
    assert plain_min < ADDED_RTT_MS  # the namespace's loopback itself adds nothing


@pytest.mark.slow
def test_training_goes_on_behind_20_ms_and_1_percent_loss(tmp_path) -> None:
    ns = open_namespace()
    metrics = tmp_path / "run" / "metrics.jsonl"
    try:
        method, why = detect_method(ns)
        if method == "proxy" and shutil.which("nft") is None:
            pytest.skip(f"{why}, and no `nft` here to drop packets with")
        with ImpairedPath(ns, method, Impairment(ADDED_RTT_MS, LOSS_PERCENT), LEARNER_PORT,
                          PROXY_PORT) as path:
            learner = ns.start(
                [sys.executable, "-m", "learner", "--env", "CartPole-v1", "--address",
                 f"127.0.0.1:{LEARNER_PORT}", "--logdir", str(tmp_path / "run"),
                 "--log-every", "0.5", "--status-every", "0", "--target-return", "nan",
                 "--checkpoint-every", "3600", "--device", "cpu"], ENV)
            learner.wait_for_line(r"learner serving", 90.0)
            actors = ns.start(
                [sys.executable, "-m", "actors", "--learner", f"127.0.0.1:{path.port}",
                 "--num-actors", "2", "--envs-per-actor", "8", "--status-every", "1"], ENV)
            # the actors publish their round trip after 256 steps each: about 6 s here
            with_trip = actors.wait_for_line(r"status: 2/2 actors connected .*round trip "
                                             r"p50 ([\d.]+) ms", 60.0)
            trained_from = env_steps(metrics)
            assert trained_from > 0
            wait_until(lambda: env_steps(metrics) > trained_from + 1000, 30.0,
                       "1,000 more env steps behind the impaired network")
            status_lines = [line for line in actors.lines if "status:" in line]
            pids = [learner.popen.pid, actors.popen.pid, *ns.pids()]
            # SIGTERM to the learner: it tells the actors, through the slow lossy path, that
            # training is over; they exit 0 by themselves
            assert learner.stop(60.0) == 0, learner.text
            assert actors.popen.wait(60.0) == 0, actors.text
        dropped = path.dropped_packets
    finally:
        ns.delete()

    assert not ns.exists() and ns.name not in list_namespaces()
    assert not [pid for pid in pids if is_running(pid)]
    assert "2/2 actors connected" in status_lines[-1], status_lines
    # the actors' own step round trip: they see the delay
    assert float(with_trip.group(1)) >= ADDED_RTT_MS, with_trip.string
    for process in (learner, actors):
        assert "Traceback" not in process.text and " ERROR " not in process.text, process.text
    assert "reconnecting" not in actors.text, actors.text
    if method == "proxy":  # the nftables rule counts its drops: the loss was real
        assert dropped > 0, why


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_an_interrupted_run_removes_its_namespace_and_processes(signum: int) -> None:
    open_namespace().delete()  # skips where namespaces cannot be made
    # Python keeps SIGINT ignored when it inherits it so (a shell starts background jobs
    # that way without job control, e.g. a CI runner's `cmd &`); Ctrl-C reaches a terminal's
    # process with Python's KeyboardInterrupt handler, which is what this test is about.
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGINT, signal.default_int_handler)\n"
        f"sys.path.insert(0, {str(REPO / 'benchmarks')!r})\n"
        "from netns import NetworkNamespace, exit_cleanly_on_sigterm\n"
        "exit_cleanly_on_sigterm()\n"
        "with NetworkNamespace() as ns:\n"
        "    sleeper = ns.start(['sleep', '60'])\n"
        "    print(ns.name, sleeper.popen.pid, flush=True)\n"
        "    time.sleep(60)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    name, sleeper = run.stdout.readline().split()
    try:
        assert name in list_namespaces() and is_running(int(sleeper))
        run.send_signal(signum)
        run.wait(30)
        assert name not in list_namespaces()
    finally:
        if run.poll() is None:
            run.kill()
            run.wait(10)
        NetworkNamespace(name).delete()  # a no-op unless the test failed
    wait_until(lambda: not is_running(int(sleeper)), 10.0, "the process inside to end")
