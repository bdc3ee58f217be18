"""The C++ reference actor (clients/cpp/) end to end, through real `python -m learner`
processes on loopback: C++ actors alone train CartPole-v1 to the preset's target of 475 and
exit 0 when told training is over; one rejoins a learner restarted on its port; the token
(from SEED_RL_AUTH_TOKEN) and mutual TLS; refusals end it with exit code 2 and the
learner's one-line message; and its CartPole is gymnasium's, step for step, bit for bit.
The binary is built once per session (tests/support/cpp_actor.py)."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from support.conformance_runs import RULE_NAMES, conformance
from support.cpp_actor import ToolchainMissing, build, cpp_actor_command
from support.learner_process import SERVING, last_metric, learner_command, read_metrics, wait_for
from support.procs import WAIT
from support.secure_clients import TOKEN

EXIT_PERMANENT = 2
TRAIN_TIMEOUT = 240.0  # seconds: 475 takes about 15-30 s of C++ acting on a 2-core machine
JOINED = r"actor {} \(run (\w+)\) joined from "


@pytest.fixture(scope="session")
def cpp_actor() -> Path:
    """The built binary; fails (never skips) where the toolchain is missing."""
    try:
        return build()
    except ToolchainMissing as error:
        pytest.fail(str(error), pytrace=False)


def error_line(text: str) -> str:
    """The actor's one-line error (its last line, which must be it)."""
    last = text.strip().splitlines()[-1]
    assert last.startswith("seed-rl-cpp-actor: error: "), text
    return last


def test_cpp_actors_alone_train_cartpole_to_the_target_and_exit_0(
    tmp_path, free_port, processes, cpp_actor, clean_environment
) -> None:
    logdir = tmp_path / "run"
    # `seed-rl learner --env CartPole-v1` as a user runs it: the cartpole preset, its
    # --target-return 475; the step budget only bounds a run that does not learn. C++
    # actors outpace this 2-core learner's trainer, so the unroll queue stays full; with a
    # queue of 8 batches (the default before) the policy lag doubled (5-10 against 3-4), 475
    # took about twice the env steps and one run in five or six collapsed (entropy 0,
    # return 9). The default queue of one batch holds the lag at the Python actors' level.
    learner = processes([
        sys.executable, "-m", "learner", "--env", "CartPole-v1", "--address",
        f"127.0.0.1:{free_port}", "--logdir", str(logdir), "--total-steps", "3000000",
        "--log-every", "1",
    ])  # fmt: skip
    learner.wait_for_line(r"learner serving CartPole-v1 .*preset cartpole")
    actors = [
        processes(cpp_actor_command(cpp_actor, free_port,
                                    f"--actor-id cpp-{i} --envs-per-actor 32 --seed {i}"))
        for i in range(2)
    ]
    assert learner.wait(timeout=TRAIN_TIMEOUT) == 0, learner.text
    assert re.search(r"mean return [\d.]+ of the last 100 episodes reached the target 475",
                     learner.text), learner.text
    for actor in actors:
        assert actor.wait() == 0, actor.text
        assert "the learner says training is over; exiting" in actor.text
        assert "error" not in actor.text
    # only C++ actors trained it: the two that joined are ours
    joined = {m[1] for m in re.finditer(r"actor (\S+) \(run \w+\) joined from ", learner.text)}
    assert joined == {"cpp-0", "cpp-1"}
    records = read_metrics(logdir)
    assert records[-1]["train_steps"] > 100
    assert max(r["connected_actors"] for r in records) == 2


def test_cpp_actor_rejoins_a_learner_restarted_on_its_port(
    tmp_path, free_port, processes, cpp_actor, clean_environment
) -> None:
    logdir = tmp_path / "run"
    flags = "--env CartPole-v1 --checkpoint-every 1"
    first = processes(learner_command(logdir, free_port, flags))
    first.wait_for_line(SERVING.pattern)
    actor = processes(cpp_actor_command(
        cpp_actor, free_port, "--actor-id cpp-back --envs-per-actor 4 --reconnect-max-backoff 0.5"))
    run_id = re.search(JOINED.format("cpp-back"), first.wait_for_line(JOINED.format("cpp-back")))[1]
    wait_for(lambda: last_metric(logdir, "train_steps") >= 3, "training", process=first)
    first.popen.kill()
    first.wait()
    killed_at = time.time()
    actor.wait_for_line(r"lost the learner at 127\.0\.0\.1:\d+ \(UNAVAILABLE")
    assert actor.popen.poll() is None, actor.text  # it retries; it does not give up

    second = processes(learner_command(logdir, free_port, flags))
    rejoined = second.wait_for_line(JOINED.format("cpp-back"))
    assert re.search(JOINED.format("cpp-back"), rejoined)[1] == run_id  # the same incarnation
    wait_for(lambda: any(r["wall_time"] > killed_at and r["env_steps"] > 0
                         and r["train_steps"] >= 3 for r in read_metrics(logdir)),
             "training after the restart", process=second)
    second.popen.terminate()  # the learner tells its actors training is over
    assert second.wait() == 0, second.text
    assert actor.wait() == 0, actor.text
    assert "the learner says training is over; exiting" in actor.text
    assert len(re.findall(r"connected to the learner at ", actor.text)) >= 2


def test_cpp_actor_token_from_the_environment_and_a_wrong_token_exits_2(
    tmp_path, free_port, processes, cpp_actor, clean_environment
) -> None:
    logdir = tmp_path / "run"
    learner = processes(learner_command(logdir, free_port, f"--env CartPole-v1 --auth-token {TOKEN}"))
    learner.wait_for_line(SERVING.pattern)
    wrong = processes(cpp_actor_command(cpp_actor, free_port, "--actor-id cpp-wrong"),
                      env={"SEED_RL_AUTH_TOKEN": "not-the-token"})
    assert wrong.wait() == EXIT_PERMANENT, wrong.text
    line = error_line(wrong.text)
    assert "refused this actor: UNAUTHENTICATED: missing or wrong auth token" in line
    assert "(not retrying)" in line and "not-the-token" not in wrong.text

    # the right token and the learner's address, both from the environment, as for
    # `seed-rl actors`; SIGTERM stops it with 0 after closing its stream
    right = processes([str(cpp_actor), "--status-every", "0", "--actor-id", "cpp-right",
                       "--envs-per-actor", "4"],
                      env={"SEED_RL_LEARNER": f"127.0.0.1:{free_port}",
                           "SEED_RL_AUTH_TOKEN": TOKEN})
    wait_for(lambda: last_metric(logdir, "train_steps") >= 3, "training with the token",
             process=learner)
    right.popen.send_signal(signal.SIGTERM)
    assert right.wait() == 0, right.text
    assert "received SIGTERM; stopping" in right.text and "stopped" in right.text
    learner.wait_for_line(r"actor cpp-right \(run \w+\) disconnected: stream ended")
    assert TOKEN not in right.text + learner.text


def test_cpp_actor_trains_over_mutual_tls(
    tmp_path, free_port, processes, cpp_actor, pki, clean_environment
) -> None:
    logdir = tmp_path / "run"
    learner = processes(learner_command(
        logdir, free_port,
        f"--env CartPole-v1 --tls-cert {pki['server.pem']} --tls-key {pki['server.key']} "
        f"--tls-client-ca {pki['ca.pem']}"))
    learner.wait_for_line(SERVING.pattern)
    actor = processes(cpp_actor_command(
        cpp_actor, free_port,
        f"--actor-id cpp-tls --envs-per-actor 4 --tls-ca {pki['ca.pem']} "
        f"--tls-cert {pki['client.pem']} --tls-key {pki['client.key']}"))
    wait_for(lambda: last_metric(logdir, "train_steps") >= 3, "training over mutual TLS",
             process=learner)
    learner.popen.terminate()
    assert learner.wait() == 0, learner.text
    assert actor.wait() == 0, actor.text
    assert "the learner says training is over; exiting" in actor.text


def test_cpp_actor_exits_2_with_the_learners_message_when_refused(
    tmp_path, free_port, processes, cpp_actor, clean_environment
) -> None:
    learner = processes(learner_command(tmp_path / "run", free_port, "--env Acrobot-v1"))
    learner.wait_for_line(SERVING.pattern)
    other_env = processes(cpp_actor_command(cpp_actor, free_port, "--actor-id cpp-cartpole"))
    assert other_env.wait() == EXIT_PERMANENT, other_env.text
    line = error_line(other_env.text)
    assert "refused this actor: FAILED_PRECONDITION: actor and learner disagree" in line
    assert "Acrobot-v1" in line and "CartPole-v1" in line
    learner.popen.terminate()
    assert learner.wait() == 0, learner.text

    # K is checked after the environment: a CartPole learner that takes at most 32 per actor
    learner = processes(learner_command(tmp_path / "run2", free_port,
                                        "--env CartPole-v1 --max-envs-per-actor 32"))
    learner.wait_for_line(SERVING.pattern)
    too_many = processes(cpp_actor_command(cpp_actor, free_port,
                                           "--actor-id cpp-many --envs-per-actor 33"))
    assert too_many.wait() == EXIT_PERMANENT, too_many.text
    assert "refused this actor: INVALID_ARGUMENT" in error_line(too_many.text)

    bad_flag = subprocess.run([str(cpp_actor), "--envs-per-actor", "zero"],
                              capture_output=True, text=True, timeout=WAIT, check=False)
    assert bad_flag.returncode == EXIT_PERMANENT
    assert bad_flag.stderr.strip() == (
        "seed-rl-cpp-actor: error: --envs-per-actor: expected an integer, got 'zero'")


def test_cpp_cartpole_is_gymnasiums_step_for_step(cpp_actor) -> None:
    # The binary prints one CartPole's trajectory (float64 states, float32 observations,
    # rewards, flags, resets); gymnasium's CartPole-v1, put in each reset state, steps the
    # same actions: every state, observation, reward and flag must be equal, bit for bit.
    steps = 2500
    dump = subprocess.run([str(cpp_actor), "--dump-cartpole", str(steps), "--seed", "7"],
                          capture_output=True, text=True, timeout=WAIT, check=True)
    records = [json.loads(line) for line in dump.stdout.splitlines()]
    env = gym.make("CartPole-v1")
    compared, ends = 0, {"terminated": 0, "truncated": 0}
    for record in records:
        state = np.array(record["state"], dtype=np.float64)
        if record.get("reset"):
            assert np.all(np.abs(state) <= 0.05), record  # uniform(-0.05, 0.05)
            assert np.array_equal(np.array(record["observation"], np.float32),
                                  state.astype(np.float32))
            env.reset(seed=0)  # restarts the TimeLimit count; the state is then the C++ one
            env.unwrapped.state = state
            continue
        assert np.array_equal(env.unwrapped.state, state), (compared, record)
        observation, reward, terminated, truncated, _ = env.step(record["action"])
        assert np.array_equal(env.unwrapped.state, np.array(record["next_state"])), (
            compared, env.unwrapped.state, record)
        assert np.array_equal(observation, np.array(record["observation"], np.float32))
        assert (reward, terminated, truncated) == (
            record["reward"], record["terminated"], record["truncated"]), (compared, record)
        ends["terminated"] += terminated
        ends["truncated"] += truncated
        compared += 1
    assert compared == steps
    assert ends["terminated"] >= 1 and ends["truncated"] >= 1, ends  # both ends compared


def test_cpp_actor_holds_every_rule_of_the_conformance_checker(cpp_actor) -> None:
    """The reference actor in another language passes ``seed-rl conformance`` (it reads
    SEED_RL_LEARNER and SEED_RL_AUTH_TOKEN from its environment, as the checker hands
    them), with no asyncio noise from the checker's restarted learner in the output."""
    code, output, verdicts = conformance(str(cpp_actor), "--envs-per-actor", "4",
                                         "--status-every", "0", flags=())
    assert verdicts == dict.fromkeys(RULE_NAMES, "held"), output
    assert code == 0 and "13 of 13 rules held" in output, output
    assert "Traceback" not in output, output
