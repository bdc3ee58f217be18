"""``LOGDIR/updates.jsonl``: one record per update, written in deterministic mode.

``metrics.jsonl`` is written every ``--log-every`` seconds, so which updates its records
fall on depends on timing; this file has one line per update instead, with nothing that
depends on timing: the update's policy version and trained env steps, its loss terms,
entropy, gradient norm and learning rate, the policy lag of its unrolls and a digest of the
weights it published. Two runs of ``seed-rl train --deterministic`` with the same seed and
settings write the same lines (docs/reliability.md, "Deterministic mode"); where two runs
that should agree first differ, the first line that differs names the update.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

FILENAME = "updates.jsonl"


class UpdateLog:
    """Appends one JSON object per update to ``logdir/updates.jsonl`` (a resumed run
    continues the file)."""

    def __init__(self, logdir: str | Path):
        self.path = Path(logdir) / FILENAME
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        self._file.write(json.dumps(record, sort_keys=True) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def read_updates(logdir: str | Path) -> list[dict[str, Any]]:
    """The records of ``logdir/updates.jsonl``, in order."""
    path = Path(logdir) / FILENAME
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]
