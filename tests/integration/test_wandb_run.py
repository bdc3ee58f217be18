"""Weights & Biases through a real learner process (offline mode): the config and scalars are logged and the run resumes."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from support.learner_harness import make_config
from wandb.proto import wandb_internal_pb2 as wandb_pb  # noqa: E402

from learner.running.learner import Learner

BLOCK = 32 * 1024  # the run file is a LevelDB-style log: 32 KiB blocks of records

HEADER = 7  # file header (":W&B", magic, version); record headers are 7 bytes too

def read_records(path: Path) -> list[wandb_pb.Record]:
    """Every record of a ``run-*.wandb`` file (FULL, or FIRST..MIDDLE..LAST fragments)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B"
    records, pending, position = [], b"", HEADER
    while position + HEADER <= len(data):
        left_in_block = BLOCK - position % BLOCK
        if left_in_block < HEADER:  # trailer padding
            position += left_in_block
            continue
        length, kind = struct.unpack_from("<HB", data, position + 4)
        payload = data[position + HEADER:position + HEADER + length]
        position += HEADER + length
        if kind == 0 and length == 0:
            continue
        pending += payload
        if kind in (1, 4):  # FULL or LAST
            record = wandb_pb.Record()
            record.ParseFromString(pending)
            records.append(record)
            pending = b""
    return records


def logged(logdir: Path) -> tuple[list[dict], dict, list[str]]:
    """(history rows, config, run ids) of every offline run in ``logdir``."""
    rows, config, ids = [], {}, []
    for run_file in sorted(logdir.glob("wandb/offline-run-*/run-*.wandb")):
        for record in read_records(run_file):
            kind = record.WhichOneof("record_type")
            if kind == "history":
                rows.append({item.key or "/".join(item.nested_key): json.loads(item.value_json)
                             for item in record.history.item})
            elif kind in ("run", "config"):  # wandb.init's config: in either record
                if kind == "run":
                    ids.append(record.run.run_id)
                updates = record.run.config.update if kind == "run" else record.config.update
                for item in updates:
                    value = json.loads(item.value_json)
                    if isinstance(value, dict) and set(value) == {"value"}:  # {"value": x}
                        value = value["value"]
                    config[item.key or "/".join(item.nested_key)] = value
    return rows, config, ids


def test_the_learner_logs_config_and_scalars_offline_and_resumes_the_run(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_SILENT", "true")
    config = make_config(tmp_path, wandb=True, wandb_mode="offline", wandb_project="t",
                         auth_token="never-logged")
    learner = Learner(config)
    learner.metrics.add_env_steps(100, [5.0, 7.0], [10, 12])
    learner.metrics.add_train({"loss_total": 1.5}, 0.0)
    record = learner.metrics.emit(policy_version=1)
    learner.metrics.close()
    logdir = Path(config.logdir)
    rows, saved, ids = logged(logdir)
    assert "env" in saved, ("no config in the offline run", sorted(
        str(p.relative_to(logdir)) for p in logdir.rglob("*")), sorted(saved), len(rows))
    assert saved["env"] == "CartPole-v1" and saved["preset"] == ""
    assert saved["auth_token"] == "<redacted>"
    assert "never-logged" not in "".join(p.read_text(errors="ignore")
                                         for p in logdir.rglob("*") if p.is_file())
    (row,) = [r for r in rows if "learner/episode_return_mean" in r]
    assert row["_step"] == record["env_steps"] == 100
    assert row["learner/episode_return_mean"] == record["episode_return_mean"] == 6.0
    assert row["learner/loss_total"] == 1.5
    # TensorBoard got the same names.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(logdir / "tb"))
    events.Reload()
    assert {"learner/episode_return_mean", "learner/loss_total"} <= set(events.Tags()["scalars"])

    resumed = Learner(config)  # same logdir: the same W&B run goes on
    resumed.metrics.close()
    _, _, ids_after = logged(logdir)
    assert len(set(ids_after)) == 1 and ids_after[0] == (logdir / "wandb_run_id").read_text().strip()
