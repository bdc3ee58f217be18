"""A rehearsal of deploy/kubernetes/ on loopback, with no cluster: the rendered pods'
commands, environments and probe run as real processes (tests/support/k8s_manifests.py's
Pod), with the Secrets' files where the manifests mount them. Train, SIGTERM within the
grace period, final checkpoint, resume, `kubectl cp` of the run directory, `seed-rl eval`
on it; and the same with components/tls.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from support.k8s_manifests import (
    LEARNER_SERVICE,
    REPO,
    Pod,
    actor_deployment,
    learner_set,
    loopback,
    rendered,
    with_component,
)
from support.learner_process import RESUMED, SERVING, last_metric, wait_for

# -- a rehearsal on loopback: the rendered pods' commands, environments and probe -------------


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rehearsal_train_stop_resume_collect_and_eval(tmp_path, free_port, clean_environment):
    objects = rendered("overlays/cpu")
    secrets = {"seed-rl-auth": {"token": "rehearsal-token"}}
    root = tmp_path / "learner-pod"
    network = loopback(free_port)
    learner = Pod(objects, learner_set(objects), "learner", root, secrets, network)
    actors = Pod(
        objects, actor_deployment(objects), "actors", tmp_path / "actor-pod", secrets, network
    )
    run = root / "runs" / "default"
    assert learner.env["SEED_RL_LOGDIR"] == str(run)

    first = learner.start()
    first.wait_for_line(SERVING.pattern, timeout=60)
    probe = learner.probe()
    assert probe.returncode == 0 and "seed_rl.v1.Learner is SERVING" in probe.stdout, probe
    assert learner.probe(SEED_RL_AUTH_TOKEN="wrong").returncode == 1  # the token matters
    fleet = actors.start()
    wait_for(lambda: last_metric(run, "train_steps") >= 2, "training", timeout=120, process=first)

    # `kubectl scale statefulset/seed-rl-learner --replicas=0`: SIGTERM within the grace
    grace = learner_set(objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    first.popen.send_signal(signal.SIGTERM)
    assert first.wait(timeout=grace) == 0, first.text
    assert fleet.wait(timeout=60) == 0, fleet.text  # training is over: the actors exit 0
    checkpoints = sorted((run / "checkpoints").glob("ckpt-*.pt"))
    assert checkpoints and (run / "config.json").is_file() and (run / "metrics.jsonl").is_file()

    # scale back to 1: the same volume, the run resumes
    second = learner.start()
    resumed = RESUMED.search(second.wait_for_line(RESUMED.pattern, timeout=60))
    assert Path(resumed["path"]) == checkpoints[-1] and int(resumed["train_steps"]) >= 2
    second.wait_for_line(SERVING.pattern, timeout=60)
    assert learner.probe("livenessProbe").returncode == 0
    second.popen.send_signal(signal.SIGTERM)
    assert second.wait(timeout=grace) == 0, second.text

    # `kubectl cp seed-rl-runs:/runs/default runs/default`, then `seed-rl eval` on it
    collected = tmp_path / "laptop"
    shutil.copytree(run, collected / "runs" / "default")
    evaluation = subprocess.run(
        [sys.executable, "-m", "seed_rl.cli", "eval", "--checkpoint", "runs/default",
         "--episodes", "1"],
        cwd=collected,
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])},
        capture_output=True,
        text=True,
        timeout=120,
    )  # fmt: skip
    assert evaluation.returncode == 0, evaluation.stderr
    assert "seed-rl eval: runs/default/checkpoints/ckpt-" in evaluation.stdout
    assert "(CartPole-v1," in evaluation.stdout and "return  mean" in evaluation.stdout


def certificate_for(names: list[str], directory: Path) -> dict[str, str]:
    """A CA and a learner certificate for ``names`` (DNS names or IP addresses), as the
    Secret seed-rl-tls holds them."""
    from conftest import certificate
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    pem = serialization.Encoding.PEM
    return {
        "ca.crt": certificate("seed-rl-ca", ca_key, "seed-rl-ca", ca_key, ca=True)
        .public_bytes(pem).decode(),
        "tls.crt": certificate(names[0], key, "seed-rl-ca", ca_key, ca=False, names=tuple(names))
        .public_bytes(pem).decode(),
        "tls.key": key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    }


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rehearsal_with_the_tls_component(tmp_path, free_port, clean_environment):
    """The learner and an actor with components/tls: the Secret's files where the manifests
    mount them, the probe asks for the name the actors dial (seed-rl-learner). The rehearsal's
    actors dial 127.0.0.1 in place of the Service, so the certificate names that too."""
    (tmp_path / "k").mkdir()
    objects = with_component(tmp_path / "k", "tls")
    secrets = {
        "seed-rl-auth": {"token": "rehearsal-token"},
        "seed-rl-tls": certificate_for([LEARNER_SERVICE, "127.0.0.1"], tmp_path),
    }
    root = tmp_path / "learner-pod"
    network = loopback(free_port)
    learner = Pod(objects, learner_set(objects), "learner", root, secrets, network)
    actors = Pod(
        objects, actor_deployment(objects), "actors", tmp_path / "actor-pod", secrets, network
    )
    assert sorted(p.name for p in (tmp_path / "actor-pod" / "etc/seed-rl/tls").iterdir()) == [
        "ca.crt"
    ]
    process = learner.start()
    process.wait_for_line(SERVING.pattern, timeout=60)
    probe = learner.probe()
    assert probe.returncode == 0, probe.stderr
    # without the name the component sets, the check would expect "localhost" and fail
    assert learner.probe(SEED_RL_HEALTHCHECK_TLS_NAME="localhost").returncode == 1
    fleet = actors.start()
    run = root / "runs" / "default"
    wait_for(lambda: last_metric(run, "env_steps") > 0, "env steps", timeout=120, process=process)
    process.popen.send_signal(signal.SIGTERM)
    assert process.wait(timeout=120) == 0, process.text
    assert fleet.wait(timeout=60) == 0, fleet.text
