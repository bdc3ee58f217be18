"""``seed-rl conformance -- COMMAND...`` on real clients: the Python actors (``seed-rl
actors``, several processes and env groups) hold every rule; a foreign client
(tests/support/broken_clients.py, built on the generated stubs and seed_rl.wire, not on
actors/) holds every rule in its ``ok`` mode and fails the checker, naming the rule, in
each broken one. Every run is a real process tree against the checking learner on a free
loopback port, and must end by itself: the checker bounds every wait and kills the client.
"""

from __future__ import annotations

import os
import signal
import sys
import time

import pytest
from support.conformance_runs import BROKEN_CLIENT, conformance
from support.procs import WAIT, cmdline, descendants, is_running

from learner.conformance.rules import RULE_NAMES


def test_the_python_actors_hold_every_rule() -> None:
    """Two actor processes of two env groups each: four sessions, each one's slots
    replayed, each reconnecting after the learner restart, all told training_over."""
    code, output, verdicts = conformance(sys.executable, "-m", "seed_rl", "actors",
                                         "--num-actors", "2", "--envs-per-actor", "4",
                                         "--env-groups", "2", flags=())  # the default bounds
    assert verdicts == dict.fromkeys(RULE_NAMES, "held"), output
    assert code == 0, output
    assert "13 of 13 rules held" in output and "the client exited with code 0" in output


def test_a_foreign_client_that_follows_the_spec_holds_every_rule() -> None:
    code, output, verdicts = conformance(sys.executable, str(BROKEN_CLIENT), "ok", flags=())
    assert verdicts == dict.fromkeys(RULE_NAMES, "held"), output
    assert code == 0, output


# mode -> the rule it breaks, and words of the evidence
BROKEN = {
    "shift": ("slot convention", "the action answered to the previous request"),
    "dtype": ("message format", "INVALID_ARGUMENT: observations: dtype float64, expected "
              "float32"),
    "first-reward": ("first message", "INVALID_ARGUMENT: each session's first message must "
                     "carry reward 0"),
    "terminated-at-limit": ("truncated", "expected truncated=true, terminated=false; got "
                            "truncated=false, terminated=true"),
    "no-final": ("truncated", "truncated environments must send their final observation"),
    "no-reconnect": ("reconnect", "after the learner restarted, the client exited with code 1"),
    "ignore-over": ("training over", "the client still ran"),
    "never-connects": ("connects", "no RPC within --connect-timeout 20 s"),
    "dies": ("connects", "the client exited with code 3 before it called the learner"),
    "no-token": ("token", "Handshake without `authorization: Bearer <token>`"),
}


@pytest.mark.parametrize("mode", list(BROKEN))
def test_a_broken_client_fails_naming_the_rule(mode: str) -> None:
    rule, evidence = BROKEN[mode]
    code, output, verdicts = conformance(sys.executable, str(BROKEN_CLIENT), mode)
    assert code == 1, output
    assert [name for name, verdict in verdicts.items() if verdict == "BROKEN"] == [rule], output
    broken_line = output.index(f"  {rule} ")
    assert evidence in output[broken_line:], output
    assert "the client does NOT conform" in output
    if rule in ("message format", "first message", "token"):
        # the client was refused with the learner's own code and message, and stopped
        assert "the client exited with code 2" in output, output


def test_a_client_dies_with_a_checker_that_is_killed(processes, tmp_path) -> None:
    """SIGKILLed, the checker cannot kill its client: the client dies with it anyway."""
    # a SIGKILLed checker cannot remove its temporary folder either: keep it in tmp_path
    checker = processes([sys.executable, "-m", "seed_rl", "conformance",
                         "--connect-timeout", "600", "--", sys.executable, str(BROKEN_CLIENT),
                         "never-connects"], env={"TMPDIR": str(tmp_path)})
    deadline = time.monotonic() + WAIT
    while not (clients := [pid for pid in descendants(checker.popen.pid)
                           if "never-connects" in cmdline(pid)]):
        assert time.monotonic() < deadline and checker.popen.poll() is None, checker.text
        time.sleep(0.1)
    os.kill(checker.popen.pid, signal.SIGKILL)
    checker.popen.wait(WAIT)
    deadline = time.monotonic() + WAIT
    while any(is_running(pid) for pid in clients):
        assert time.monotonic() < deadline, f"the client outlived its checker: {clients}"
        time.sleep(0.1)
