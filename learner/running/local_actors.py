"""The actors of ``seed-rl train``: one child process, ``python -m actors`` (the supervisor
of N actor processes), started so that it never outlives this process and never sees the
auth token on its command line; its output forwarded, its last lines kept for a failure
report. Torch-free; never imports ``actors`` (they are a subprocess).
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

from seed_rl import config as cfg
from seed_rl.config import Config
from seed_rl.lifetime import orphan_safe_command

log = logging.getLogger("train")

#: The actors' stop sequence after the learner has shut down (seconds).
ACTORS_EXIT_WAIT_S = 5.0  # they normally exit at once: the learner said training is over
ACTORS_TERM_WAIT_S = 8.0  # after SIGTERM (the supervisor gives its children 5 s)
OUTPUT_TAIL_LINES = 40
#: The actors start before the learner listens and retry until it does; their "cannot
#: reach" warnings are expected until then.
_STARTUP_RETRY = "cannot reach the learner"


def _flag_value(value: Any) -> str:
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, list):
        return ",".join(str(v) for v in value)
    return str(value)


def actor_command(config: Config, learner_address: str, log_level: str) -> list[str]:
    """``python -m actors`` with every actor knob of ``config`` as a flag (secrets and TLS
    excluded: the token travels in the environment, and the link is loopback)."""
    skip = {"auth_token", "tls_cert", "tls_key", "tls_ca", "learner", "status_every"}
    argv = [
        sys.executable,
        "-m",
        "actors",
        f"--learner={learner_address}",
        "--status-every=0",
        f"--log-level={log_level}",
    ]
    for f in cfg.fields_for("actors"):
        if f.name in skip:
            continue
        value = getattr(config, f.name)
        if isinstance(value, bool):
            argv.append(cfg.flag_name(f.name) if value else "--no-" + cfg.flag_name(f.name)[2:])
        else:
            argv.append(f"{cfg.flag_name(f.name)}={_flag_value(value)}")
    return argv


class LocalActors:
    """The supervisor of the local actors, as one child process.

    Its output (stdout and stderr) is forwarded line by line to ``sink`` and the last lines
    are kept for the failure report. It runs in its own session, so a Ctrl-C on the
    terminal reaches only this process, which stops the learner first; the learner then
    tells the actors that training is over and they exit 0.
    """

    def __init__(
        self,
        command: list[str],
        env: dict[str, str],
        sink: Callable[[str], None],
        learner_up: threading.Event | None = None,
    ):
        self.command = command
        self.learner_up = learner_up
        self.tail: collections.deque[str] = collections.deque(maxlen=OUTPUT_TAIL_LINES)
        self._sink = sink
        self.popen = subprocess.Popen(
            orphan_safe_command(command),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            errors="replace",
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._forward, name="actor-output", daemon=True)
        self._reader.start()

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _forward(self) -> None:
        try:
            for line in self.popen.stdout:  # type: ignore[union-attr]
                line = line.rstrip("\n")
                self.tail.append(line)
                if (
                    self.learner_up is not None
                    and not self.learner_up.is_set()
                    and _STARTUP_RETRY in line
                ):
                    continue  # expected: the actors start before the learner listens
                self._sink(line)
        except Exception:  # never silently: the log says the forwarding broke
            log.exception("forwarding the actors' output failed")

    def poll(self) -> int | None:
        return self.popen.poll()

    def wait(self, timeout: float | None = None) -> int | None:
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self) -> None:
        """SIGKILL the supervisor and its actor processes (one process group)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signal.SIGKILL)

    def stop(self) -> int:
        """Wait for a clean exit, then SIGTERM, then SIGKILL; returns the exit code."""
        rc = self.wait(ACTORS_EXIT_WAIT_S)
        if rc is None:
            log.info("the actors have not exited yet; sending them SIGTERM")
            self.popen.terminate()
            rc = self.wait(ACTORS_TERM_WAIT_S)
        if rc is None:
            log.warning("the actors did not stop after SIGTERM; killing them")
            self.kill()
            rc = self.popen.wait()
        else:
            self.kill()  # the group: any actor that outlived its supervisor
        self._reader.join(timeout=5.0)
        return rc


def actor_environment(token: str) -> dict[str, str]:
    """The actors' environment: no SEED_RL_* variables (every knob is a flag) but the auth
    token, which must not appear on a command line (``ps`` shows those to everyone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(cfg.ENV_PREFIX)}
    if token:
        env[cfg.env_var_name("auth_token")] = token
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def connect_host(bind_host: str) -> str:
    """Where local actors reach a learner bound to ``bind_host``."""
    return (
        "127.0.0.1"
        if bind_host in ("", "0.0.0.0", "localhost")
        else ("[::1]" if bind_host == "[::]" else bind_host)
    )
