"""``seed-rl conformance -- COMMAND...``: run a client against the checking learner through
the scenario, and print one verdict per rule.

The client command runs as its own process group with ``SEED_RL_LEARNER`` (the checking
learner's ``127.0.0.1:PORT``) and ``SEED_RL_AUTH_TOKEN`` (a fresh token) in its
environment, its output kept in a temporary file. The scenario, every wait bounded:

1. connect: the client's first step message within ``--connect-timeout``;
2. step: until a termination and a truncation were judged, at most ``--steps`` messages
   or ``--step-timeout`` seconds;
3. restart: the learner stops at once and serves again on the same port; every actor id
   must open a new session within ``--reconnect-timeout``, then ``--steps-after-restart``
   more messages;
4. stop: the learner answers ``training_over``; the client must exit 0 within
   ``--exit-timeout``.

A refusal the client must stop on (a bad token, handshake or message) ends the scenario
early: the later rules are *not reached*. At the end the client's process group is
killed, whatever state it is in. Exit code 0 when every rule held, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

from learner.conformance.checking_learner import CheckingLearner
from learner.conformance.judge import Judge
from learner.conformance.rules import ENV_ID, HELD, RULES, STEP_LIMIT
from seed_rl.config import ConfigError, Resolved
from seed_rl.lifetime import orphan_safe_command

KILL_GRACE_S = 5.0  # SIGTERM, then SIGKILL
OUTPUT_LINES = 30  # of the client's output, shown when a rule is not held


@dataclass(frozen=True)
class Limits:
    """How long and how far each phase may go (the flags of ``seed-rl conformance``)."""

    connect_timeout: float  # s, to the first step message
    steps: int  # most step messages before the restart
    step_timeout: float  # s of stepping, before the restart and after it
    reconnect_timeout: float  # s, from the restart to every actor id's new first message
    steps_after_restart: int  # step messages after the restart, before training_over
    exit_timeout: float  # s, from training_over to the client's exit


class Client:
    """The client command as a process group of its own, its output in ``log``; it dies
    with the checker."""

    def __init__(self, command: list[str], environ: dict[str, str], log: TextIO):
        if shutil.which(command[0], path=environ.get("PATH")) is None:
            raise SystemExit(f"cannot run the client command {shlex.join(command)}: "
                             f"{command[0]!r} is not an executable file (nor one on PATH)")
        # Wrapped to die with the checker, even one that is SIGKILLed (seed_rl/lifetime.py).
        self.popen = subprocess.Popen(orphan_safe_command(command), env=environ,
                                      stdin=subprocess.DEVNULL, stdout=log,
                                      stderr=subprocess.STDOUT, start_new_session=True)

    def exit_code(self) -> int | None:
        return self.popen.poll()

    def kill(self) -> None:
        """End the whole process group: SIGTERM, then SIGKILL for whatever is left."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(KILL_GRACE_S)


class Scenario:
    """The phases (module docstring), judged as they go."""

    def __init__(self, judge: Judge, learner: CheckingLearner, client: Client,
                 limits: Limits):
        self.judge, self.learner, self.client, self.limits = judge, learner, client, limits
        self.verdicts = judge.verdicts

    def wait(self, done: Callable[[], bool], timeout: float, refusal_ends: bool = True) -> bool:
        """Until ``done()``, the client exited or (``refusal_ends``) was refused something
        it must stop on, or ``timeout`` s; whether ``done()``."""
        deadline = time.monotonic() + timeout
        with self.verdicts.changed:
            while not done():
                remaining = deadline - time.monotonic()
                if (remaining <= 0 or (refusal_ends and self.judge.stopped_client)
                        or self.client.exit_code() is not None):
                    return done()
                self.verdicts.changed.wait(min(remaining, 0.1))
        return True

    def ended_early(self) -> bool:
        """The client stopped (rightly, after a refusal) or exited unasked (a broken rule)."""
        if self.judge.stopped_client:
            return True
        code = self.client.exit_code()
        if code is not None:
            self.verdicts.broke("training over", f"the client exited with code {code} after "
                                f"{self.judge.messages} step messages, before it was told "
                                "training_over")
            return True
        return False

    def run(self) -> None:
        if self.connect() and not self.ended_early():
            self.step()
            if not self.ended_early() and self.restart() and not self.ended_early():
                self.stop()
                return
        if self.judge.stopped_client:  # refused: a client stops (the report says how)
            self.wait(lambda: self.client.exit_code() is not None, self.limits.exit_timeout,
                      refusal_ends=False)

    def connect(self) -> bool:
        limits, judge = self.limits, self.judge
        self.wait(lambda: judge.messages > 0, limits.connect_timeout)
        if judge.messages:
            return True
        code = self.client.exit_code()
        if not self.verdicts.held_count["connects"]:
            self.verdicts.broke("connects", f"the client exited with code {code} before it "
                                "called the learner" if code is not None else
                                f"no RPC within --connect-timeout {limits.connect_timeout:g} s")
        elif self.verdicts.held_count["handshake"] and not judge.stopped_client:
            self.verdicts.broke("step stream", "no step message within --connect-timeout "
                                f"{limits.connect_timeout:g} s of the start (a handshake was "
                                "accepted)" + (f"; the client exited with code {code}"
                                               if code is not None else ""))
        return False

    def step(self) -> None:
        limits, judge, v = self.limits, self.judge, self.verdicts

        def seen(rule: str) -> bool:
            return bool(v.held_count[rule] or v.broken_count[rule])

        self.wait(lambda: (seen("terminated") and seen("truncated"))
                  or judge.messages >= limits.steps, limits.step_timeout)

    def restart(self) -> bool:
        """Stop the learner, serve again, wait for every actor id's new session."""
        limits, judge = self.limits, self.judge
        with self.verdicts.changed:
            actors = set(judge.tracks)
        self.learner.stop()
        time.sleep(0.5)  # the client's next tries find no learner
        restarted = time.monotonic()
        self.learner.start()

        def back() -> set[str]:
            return {actor for at, actor in judge.first_messages if at > restarted}

        if not self.wait(lambda: actors <= back(), limits.reconnect_timeout):
            if judge.stopped_client:
                return False
            code = self.client.exit_code()
            missing = ", ".join(sorted(actors - back()))
            self.verdicts.broke("reconnect", f"after the learner restarted, the client exited "
                                f"with code {code}" if code is not None else
                                f"actors {missing} did not come back within "
                                f"--reconnect-timeout {limits.reconnect_timeout:g} s")
            return False
        self.verdicts.held("reconnect")
        target = judge.messages + limits.steps_after_restart
        self.wait(lambda: judge.messages >= target, limits.step_timeout)
        return True

    def stop(self) -> None:
        limits = self.limits
        self.learner.end_training()
        told = time.monotonic()
        self.wait(lambda: self.client.exit_code() is not None, limits.exit_timeout)
        code = self.client.exit_code()
        if code is None:
            waited = time.monotonic() - told
            self.verdicts.broke("training over", f"the client still ran {waited:.0f} s after "
                                "the learner ended training"
                                + ("" if self.judge.training_over_at else
                                   " (it sent no step message to be told training_over)"))
        elif code != 0:
            self.verdicts.broke("training over", f"the client exited with code {code} "
                                "after training_over, not 0")
        elif self.judge.training_over_at is None:
            self.verdicts.broke("training over", "the client exited before it was told "
                                "training_over")
        else:
            self.verdicts.held("training over")


def check_client(command: list[str], limits: Limits, seed: int | None = None,
                 out: TextIO = sys.stdout) -> int:
    """Run ``command`` through the scenario; print the report; 0 if every rule held."""
    seed = secrets.randbits(32) if seed is None else seed
    judge = Judge(seed)
    token = secrets.token_hex(16)
    learner = CheckingLearner(judge, token)
    learner.start()
    environ = {**os.environ, "SEED_RL_LEARNER": learner.address, "SEED_RL_AUTH_TOKEN": token}
    try:
        with tempfile.TemporaryDirectory(prefix="seed-rl-conformance-") as folder:
            log_path = Path(folder, "client.log")
            with log_path.open("w") as log:
                client = Client(command, environ, log)
                try:
                    Scenario(judge, learner, client, limits).run()
                finally:
                    exit_code = client.exit_code()
                    client.kill()
            output = log_path.read_text(errors="replace").splitlines()
    finally:
        learner.stop()
    return report(command, judge, seed, learner.address, exit_code, output, out)


def report(command: list[str], judge: Judge, seed: int, address: str, exit_code: int | None,
           output: list[str], out: TextIO) -> int:
    """The table of rules; the evidence of each broken one; the exit code."""
    v = judge.verdicts
    write = out.write
    write(f"seed-rl conformance: {shlex.join(command)}\n"
          f"  checking learner {address}, {ENV_ID} (episodes cut at {STEP_LIMIT} steps), "
          f"seed {seed}; {judge.messages} step messages judged; the client "
          + ("was still running (killed)" if exit_code is None else
             f"exited with code {exit_code}") + "\n\n")
    width = max(len(rule.name) for rule in RULES)
    write(f"  {'rule':<{width}}  {'verdict':<11}  section of docs/protocol.md\n")
    for rule in RULES:
        write(f"  {rule.name:<{width}}  {v.verdict(rule.name):<11}  {rule.section}\n")
        if v.evidence[rule.name]:
            write(f"  {'':<{width}}    a client must: {rule.what.replace('`', '')}\n")
        for line in v.evidence[rule.name]:
            write(f"  {'':<{width}}    - {line}\n")
        more = v.broken_count[rule.name] - len(v.evidence[rule.name])
        if more > 0:
            write(f"  {'':<{width}}    - ... and {more} more\n")
    verdicts = [v.verdict(rule.name) for rule in RULES]
    held = verdicts.count(HELD)
    write(f"\n{held} of {len(RULES)} rules held, {verdicts.count('BROKEN')} broken, "
          f"{len(RULES) - held - verdicts.count('BROKEN')} not reached: "
          + ("the client conforms\n" if held == len(RULES) else "the client does NOT conform\n"))
    if held != len(RULES) and output:
        write(f"\nthe client's last {min(len(output), OUTPUT_LINES)} lines of output:\n")
        for line in output[-OUTPUT_LINES:]:
            write(f"  | {line}\n")
    out.flush()
    return 0 if held == len(RULES) else 1


def main(resolved: Resolved, args: argparse.Namespace) -> int:
    """``seed-rl conformance``: 0 when the client held every rule, 1 when it did not (or
    could not be run); a bad flag is a ConfigError (exit 2)."""
    command = list(args.command)
    if command[:1] == ["--"]:
        command = command[1:]
    if not command:
        raise ConfigError("give the client command after --: seed-rl conformance [flags] -- "
                          "COMMAND...")
    for name in ("connect_timeout", "step_timeout", "reconnect_timeout", "exit_timeout"):
        if not getattr(args, name) > 0:
            raise ConfigError(f"--{name.replace('_', '-')} must be a positive number of "
                              f"seconds, not {getattr(args, name)}")
    for name in ("steps", "steps_after_restart"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')} must be at least 1, not "
                              f"{getattr(args, name)}")
    limits = Limits(args.connect_timeout, args.steps, args.step_timeout,
                    args.reconnect_timeout, args.steps_after_restart, args.exit_timeout)
    return check_client(command, limits, args.seed)
