"""Hostile and malformed input against a live learner, while a real actor keeps training.

A real ``python -m learner`` serves CartPole and a real ``python -m actors`` process trains
against it. Four client threads then send well over 1000 malformed or hostile messages:
random bytes, invalid UTF-8, wrong dtypes, shapes and byte lengths, oversized messages,
NaN/inf values, streams without a handshake, wrong protocol versions, duplicate actor ids,
far too many environments... Each case names the status code docs/reliability.md
documents for it and words its message must contain. The learner must answer every one
so, never crash (no traceback in its log), keep its memory flat, keep training the good
actor (never disturbing its session), and still serve a new actor afterwards. The counts
per status code are printed (``pytest -s``).

The client is tests/support/hostile_client.py, the cases tests/support/hostile_cases.py.
"""

from __future__ import annotations

import collections
import threading
import time

import numpy as np
import pytest
from support.hostile_cases import Fuzzer
from support.hostile_client import (
    ENV,
    MAX_ENVS_PER_ACTOR,
    MAX_MESSAGE,
    MAX_TOTAL_ENVS,
    Outcome,
    fill_the_learner,
)
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_process import (
    SERVING,
    actors_command,
    last_metric,
    learner_command,
    rss_bytes,
    wait_for,
)

HOSTILE_MESSAGES = 1000
THREADS = 4


@pytest.mark.slow
def test_fuzz_the_learner_while_a_good_actor_trains(tmp_path, processes, free_port) -> None:
    logdir = tmp_path / "run"
    learner = processes(
        learner_command(
            logdir,
            free_port,
            f"--env {ENV} --max-message-bytes {MAX_MESSAGE} "
            f"--max-envs-per-actor {MAX_ENVS_PER_ACTOR} --max-total-envs {MAX_TOTAL_ENVS} ",
        )
    )
    learner.wait_for_line(SERVING.pattern)
    actor = processes(
        actors_command(
            free_port, f"--actor-index 0 --actor-id-prefix good --env {ENV} --envs-per-actor 4"
        )
    )
    wait_for(
        lambda: last_metric(logdir, "train_steps") >= 3, "the good actor training", process=learner
    )
    address = f"127.0.0.1:{free_port}"
    pid = learner.popen.pid

    outcomes: list[Outcome] = []
    lock = threading.Lock()
    errors: list[BaseException] = []
    rss_after_warmup: list[int] = []

    def fire(seed: int, count: int) -> None:
        fuzzer = Fuzzer(address, seed)
        try:
            for _ in range(count):
                outcome = fuzzer.rng.choice(fuzzer.cases)()
                with lock:
                    outcomes.append(outcome)
                    if len(outcomes) == 200:
                        rss_after_warmup.append(rss_bytes(pid))
        except BaseException as error:  # surfaced below, never swallowed
            errors.append(error)
        finally:
            fuzzer.close()

    steps_before = last_metric(logdir, "env_steps")
    trained_before = last_metric(logdir, "train_steps")
    started = time.monotonic()
    per_thread = -(-HOSTILE_MESSAGES // THREADS) + 10
    threads = [threading.Thread(target=fire, args=(seed, per_thread)) for seed in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert not any(thread.is_alive() for thread in threads), "fuzz threads did not finish"
    assert not errors, f"a fuzz client failed: {errors[0]!r}"
    outcomes.append(fill_the_learner(address))
    elapsed = time.monotonic() - started
    rss_end = rss_bytes(pid)

    bad = [o for o in outcomes if not o.ok]
    assert not bad, "unexpected answers:\n" + "\n".join(
        f"  {o.case}: {o.code.name} {o.details[:200]!r} (expected "
        f"{sorted(c.name for c in o.expected)} matching {o.words!r})"
        for o in bad[:10]
    )
    assert len(outcomes) >= HOSTILE_MESSAGES
    assert learner.popen.poll() is None, learner.text
    # Memory stays flat (a loose bound: no leak per message).
    growth = rss_end - rss_after_warmup[0]
    assert growth < 100 * 2**20, f"learner RSS grew {growth / 2**20:.0f} MiB"
    # The good actor trained throughout, never disturbed (one session the whole time).
    wait_for(
        lambda: last_metric(logdir, "train_steps") > trained_before + 5,
        "the good actor to keep training",
        process=learner,
    )
    assert last_metric(logdir, "env_steps") > steps_before
    # And a new, well-behaved actor is still served.
    newcomer = ScriptedActor(address, handshake_request(ENV, 3, actor_id="newcomer"))
    for _ in range(3):
        response = newcomer.step(step_request(np.zeros((3, 4), np.float32)))
        assert newcomer.actions(response).shape == (3,)
    newcomer.close()

    learner.popen.terminate()
    assert learner.wait() == 0, learner.text
    assert actor.wait() == 0, actor.text
    assert "Traceback" not in learner.text, learner.text[-5000:]
    assert actor.text.count("connected to the learner") == 1, actor.text

    by_code = collections.Counter(o.code.name for o in outcomes)
    by_case = collections.Counter(o.case for o in outcomes)
    print(
        f"\nfuzz: {len(outcomes)} hostile messages in {elapsed:.1f} s from {THREADS} "
        f"threads; learner RSS {rss_after_warmup[0] / 2**20:.0f} -> "
        f"{rss_end / 2**20:.0f} MiB; the good actor trained on"
    )
    for code, count in by_code.most_common():
        print(f"  {code:20s} {count}")
    print(
        f"  ({len(by_case)} kinds of message: "
        + ", ".join(f"{case} {count}" for case, count in sorted(by_case.items()))
        + ")"
    )
