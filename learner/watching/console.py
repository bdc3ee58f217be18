"""The live status of a training run on the terminal (``seed-rl train``, and reusable by
``seed-rl learner``).

On a terminal it is a `rich` panel redrawn in place: env steps, env steps per second,
the mean return of the last 100 episodes (and the best so far), the losses, the elapsed
time and, when a stop criterion is set, the progress towards it and an ETA. Log records go
through the same console, above the panel, so they never tear it. Off a terminal (a pipe,
a file, CI) every update is one plain line instead, so logs stay readable.

Fed with the records of :meth:`learner.watching.metrics.Metrics.emit` (``metrics.jsonl`` lines).
"""

from __future__ import annotations

import logging
import math
import sys
import time
from typing import Any, TextIO

from rich.console import Console
from rich.live import Live
from rich.logging import RichHandler
from rich.table import Table

from seed_rl.config import Config


def format_duration(seconds: float) -> str:
    """``75.3`` -> ``"1:15"``, ``3725`` -> ``"1:02:05"``; ``"-"`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "-"
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def format_number(value: Any, digits: int = 1) -> str:
    """A metric for display: ``None``/nan -> ``"-"``; large counts with thousands commas."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    if isinstance(value, int) or (
        isinstance(value, float) and value.is_integer() and abs(value) >= 1000
    ):
        return f"{int(value):,}"
    return f"{value:,.{digits}f}"


#: returns are shown with this many significant digits below RETURN_ONE_DECIMAL_FROM ...
RETURN_DIGITS = 3
#: ... and with one decimal from there on (475.0, -123.5, 1,234.5)
RETURN_ONE_DECIMAL_FROM = 100.0
RETURN_MAX_DECIMALS = 6  # a return closer to 0 than 1e-6 shows as 0.000000


def format_return(value: Any) -> str:
    """An episode return for display (the live status, ``seed-rl train``'s summary):
    ``RETURN_DIGITS`` significant digits below ``RETURN_ONE_DECIMAL_FROM`` in magnitude
    (0.959, -0.500, 12.3), one decimal from there on (475.0, -123.5); ``"-"`` when there
    is none (None, nan, or the -inf best of a run without episodes). Rounding every return
    to one decimal showed 0.959 as 1.0: a task with returns in [-1, 1] read as solved."""
    if value is None or not math.isfinite(float(value)):
        return "-"
    value = float(value)
    magnitude = abs(value)
    if magnitude >= RETURN_ONE_DECIMAL_FROM or magnitude == 0.0:
        decimals = 1
    else:
        decimals = RETURN_DIGITS - 1 - math.floor(math.log10(magnitude))
        decimals = min(max(decimals, 1), RETURN_MAX_DECIMALS)
    if round(value, decimals) == 0.0:
        value = 0.0  # no "-0.000000"
    return f"{value:,.{decimals}f}"


def progress(record: dict[str, Any], config: Config) -> tuple[str, float]:
    """The progress towards the stop criteria and the ETA in seconds (nan if unknown).

    The ETA is the soonest of the step budget (at the current steps per second) and the
    time limit (``--max-time`` counts the learner's time, the record's ``elapsed``); a
    target return alone gives no ETA (learning is not linear).
    """
    parts, etas = [], []
    elapsed = record.get("elapsed") or 0.0
    steps = record.get("env_steps") or 0
    sps = record.get("sps") or 0.0
    if config.total_steps:
        parts.append(
            f"{100.0 * min(1.0, steps / config.total_steps):.0f}% of {config.total_steps:,} steps"
        )
        if sps > 0:
            etas.append(max(0.0, config.total_steps - steps) / sps)
    if config.max_time:
        parts.append(
            f"{100.0 * min(1.0, elapsed / config.max_time):.0f}% of "
            f"{format_duration(config.max_time)}"
        )
        etas.append(max(0.0, config.max_time - elapsed))
    if not math.isnan(config.target_return):
        parts.append(f"target return {config.target_return:g}")
    return (", ".join(parts) or "no stop criterion (Ctrl-C stops)", min(etas) if etas else math.nan)


class LiveStatus:
    """Shows metrics records as they come; a context manager around the run.

    ``with LiveStatus(config) as status: ... status.update(record)``. ``print_line`` writes
    a line above the panel (e.g. forwarded output of child processes).
    """

    def __init__(
        self,
        config: Config,
        *,
        title: str = "seed-rl train",
        stream: TextIO | None = None,
        live: bool | None = None,
        line_every: float = 0.0,
    ):
        self.config = config
        self.title = title
        stream = stream if stream is not None else sys.stderr
        self.console = Console(file=stream, highlight=False)
        self.live_enabled = self.console.is_terminal if live is None else live
        self.started = time.monotonic()
        self.best_return = -math.inf
        self.last_record: dict[str, Any] = {}
        # Off a terminal: at most one line per ``line_every`` seconds, and the last record
        # at exit whatever the interval (0: every record).
        self.line_every = line_every
        self._next_line = self.started + line_every
        self._unprinted = False
        self._live: Live | None = None
        self._handlers: list[logging.Handler] = []
        self._rich_handler: logging.Handler | None = None

    # -- lifetime -------------------------------------------------------------------------
    def __enter__(self) -> LiveStatus:
        if self.live_enabled:
            root = logging.getLogger()
            self._handlers = list(root.handlers)
            level = min((h.level for h in self._handlers), default=logging.NOTSET)
            self._rich_handler = RichHandler(
                console=self.console, show_path=False, level=level, log_time_format="%H:%M:%S"
            )
            for handler in self._handlers:
                root.removeHandler(handler)
            root.addHandler(self._rich_handler)
            self._live = Live(
                self._render(),
                console=self.console,
                refresh_per_second=4,
                transient=False,
                redirect_stdout=False,
                redirect_stderr=False,
            )
            self._live.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._unprinted:
            self._print_line()
        if self._live is not None:
            self._live.update(self._render())
            self._live.stop()
            self._live = None
            root = logging.getLogger()
            if self._rich_handler is not None:
                root.removeHandler(self._rich_handler)
            for handler in self._handlers:
                root.addHandler(handler)

    # -- feeding --------------------------------------------------------------------------
    def update(self, record: dict[str, Any]) -> None:
        """Show one metrics record (a ``Metrics.emit`` dict)."""
        self.last_record = dict(record)
        mean = record.get("episode_return_mean")
        if mean is not None and math.isfinite(mean):
            self.best_return = max(self.best_return, mean)
        if self._live is not None:
            self._live.update(self._render())
            return
        self._unprinted = True
        if time.monotonic() >= self._next_line:
            self._print_line()

    def _print_line(self) -> None:
        self.console.print(self.line(), markup=False, highlight=False, soft_wrap=True)
        self._next_line = time.monotonic() + self.line_every
        self._unprinted = False

    def print_line(self, text: str) -> None:
        """Write ``text`` verbatim above the live panel (or as a plain line)."""
        self.console.print(text, markup=False, highlight=False, soft_wrap=True)

    # -- rendering ------------------------------------------------------------------------
    def line(self) -> str:
        """The current record as one plain line (for logs and non-terminals)."""
        r = self.last_record
        elapsed = time.monotonic() - self.started
        _, eta = progress(r, self.config)
        text = (
            f"steps {format_number(r.get('env_steps'))} | "
            f"sps {format_number(r.get('sps'), 0)} | "
            f"return {format_return(r.get('episode_return_mean'))} "
            f"(best {format_return(self.best_return)}) | "
            f"loss {format_number(r.get('loss_total'), 2)} | "
            f"actors {format_number(r.get('connected_actors'))} | "
            f"elapsed {format_duration(elapsed)}"
        )
        if math.isfinite(eta):
            at_most = "<=" if self._target_may_stop_sooner() else ""
            text += f" | eta {at_most}{format_duration(eta)}"
        return text

    def _target_may_stop_sooner(self) -> bool:
        """With a target return the step or time budget only bounds the run (a preset's
        safety net), so its ETA is the latest end, not a forecast."""
        return not math.isnan(self.config.target_return)

    def _render(self) -> Table:
        r = self.last_record
        elapsed = time.monotonic() - self.started
        goal, eta = progress(r, self.config)
        table = Table(
            title=f"{self.title}: {self.config.env}",
            show_header=False,
            title_justify="left",
            min_width=60,
        )
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column(no_wrap=True)
        table.add_row("env steps", format_number(r.get("env_steps")))
        table.add_row("env steps / s", format_number(r.get("sps"), 0))
        table.add_row(
            "mean return (100 ep.)",
            f"{format_return(r.get('episode_return_mean'))}  "
            f"(best {format_return(self.best_return)}, "
            f"{format_number(r.get('episodes'))} episodes)",
        )
        eval_mean = r.get("eval/episode_return_mean")
        if eval_mean is not None:
            table.add_row("greedy eval return", format_return(eval_mean))
        table.add_row(
            "losses: total / pg / value / entropy",
            " / ".join(
                format_number(r.get(k), 2)
                for k in ("loss_total", "loss_pg", "loss_baseline", "loss_entropy")
            ),
        )
        table.add_row(
            "train steps, policy lag",
            f"{format_number(r.get('train_steps'))}, {format_number(r.get('policy_lag_mean'))}",
        )
        table.add_row("connected actors", format_number(r.get("connected_actors")))
        table.add_row("elapsed", format_duration(elapsed))
        table.add_row("stops at", goal)
        if math.isfinite(eta):
            if self._target_may_stop_sooner():
                table.add_row("ETA", f"at the latest {format_duration(eta)} (the target may "
                              "end it sooner)")
            else:
                table.add_row("ETA", format_duration(eta))
        return table
