"""deploy/kubernetes/serve: `seed-rl serve --follow` beside a training job, and its TLS
component. Rendered with ``kubectl kustomize`` and validated against the Kubernetes schemas
like the overlays (tests/deploy/test_kubernetes.py); its serve container reads only serve's
knobs, shares the learner's probe, token, port and run volume (read-only, on the learner's
node); only its evaluation actors reach it. A rehearsal runs the rendered serve and actor
containers on loopback (real processes): a checkpoint on the "run volume" is served, the
actors play it, a newer one is picked up, SIGTERM ends both with exit 0.
"""

from __future__ import annotations

import os
import signal

import numpy as np
import pytest
from support.k8s_manifests import (
    K8S,
    Pod,
    SecretRef,
    admits,
    container,
    container_env,
    kustomize,
    learner_set,
    one,
    pod_labels,
    pod_specs,
    port_of,
    rendered,
    resolve,
    seed_rl_env,
    selects,
    validate_all,
)
from support.learner_client import ScriptedActor, handshake_request, step_request
from support.learner_process import read_metrics, wait_for
from support.serving import write_checkpoint

from seed_rl import cli, config

SERVE = "serve"
HEALTHCHECK_VARIABLES = {"SEED_RL_TLS_CA", "SEED_RL_HEALTHCHECK_TLS_NAME"}
NOT_KNOBS = {"RUN_NAME"}


def serve_deployment(objects) -> dict:
    return one(objects, "Deployment", "seed-rl-serve")


def serve_actors(objects) -> dict:
    return one(objects, "Deployment", "seed-rl-serve-actors")


def with_tls(tmp_path) -> list[dict]:
    """What a user's kustomization with the serve resources and their TLS component renders."""
    relative = os.path.relpath(K8S / "serve", tmp_path)  # kustomize takes no absolute roots
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"resources:\n  - {relative}\ncomponents:\n  - {relative}/tls\n")
    return kustomize(tmp_path)


def test_serve_renders_and_validates(tmp_path):
    objects = rendered(SERVE)
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == ["ConfigMap", "ConfigMap", "Deployment", "Deployment", "NetworkPolicy",
                     "NetworkPolicy", "Service"], kinds
    validate_all(objects, "serve")
    for o in objects:
        assert o["metadata"]["namespace"] == "seed-rl"
    assert not [o for o in objects if o["kind"] == "Secret"]
    for _, spec in pod_specs(objects):
        for c in spec["containers"]:
            assert ":" in c["image"].split("/")[-1] or "@sha256:" in c["image"], c["image"]
    (tmp_path / "tls").mkdir()
    secured = with_tls(tmp_path / "tls")
    validate_all(secured, "serve + serve/tls")
    env = container_env(container(serve_deployment(secured), "serve"), secured)
    assert env["SEED_RL_TLS_CERT"] == "/etc/seed-rl/tls/tls.crt"
    assert env["SEED_RL_HEALTHCHECK_TLS_NAME"] == "seed-rl-serve"  # the name actors dial
    actors = container(serve_actors(secured), "actors")
    assert container_env(actors, secured)["SEED_RL_TLS_CA"] == "/etc/seed-rl/tls/ca.crt"
    (volume,) = [v for v in serve_actors(secured)["spec"]["template"]["spec"]["volumes"]
                 if "secret" in v]
    assert volume["secret"]["items"] == [{"key": "ca.crt", "path": "ca.crt"}]


def test_serve_runs_seed_rl_serve_with_its_own_knobs_and_the_learners_probe_token_and_run():
    objects = rendered(SERVE)
    learner_objects = rendered("overlays/cpu")
    statefulset = learner_set(learner_objects)
    learner = container(statefulset, "learner")
    deployment = serve_deployment(objects)
    serve = container(deployment, "serve")
    env = container_env(serve, objects)

    # the command: `seed-rl serve --follow /runs/RUN_NAME`, kubelet expanding $(RUN_NAME)
    args = [a.replace("$(RUN_NAME)", env["RUN_NAME"]) for a in serve["args"]]
    parsed = cli.build_parser().parse_args(args)
    assert parsed.role == "serve" and parsed.follow == "/runs/default"
    knobs = {config.env_var_name(f.name) for f in config.fields_for("serve")}
    for variable in seed_rl_env(env):
        assert variable in knobs | HEALTHCHECK_VARIABLES, f"{variable} is not read by serve"
    assert set(env) - set(seed_rl_env(env)) <= NOT_KNOBS
    resolved = resolve("serve", env)
    assert resolved.address == "0.0.0.0:50051"
    assert not resolved.logdir.startswith("/runs")  # its metrics never go into the run
    assert env["SEED_RL_AUTH_TOKEN"] == SecretRef("seed-rl-auth", "token")

    # the learner's probe, port and run volume
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert serve[probe]["exec"] == learner[probe]["exec"], probe
    assert serve["readinessProbe"] == learner["readinessProbe"]
    assert port_of(serve, "grpc") == port_of(learner, "grpc") == 50051
    service = one(objects, "Service", "seed-rl-serve")
    assert selects({"matchLabels": service["spec"]["selector"]}, pod_labels(deployment))
    assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [(50051, "grpc")]
    (runs,) = [m for m in serve["volumeMounts"] if m["mountPath"] == "/runs"]
    assert runs["readOnly"]
    volumes = {v["name"]: v for v in deployment["spec"]["template"]["spec"]["volumes"]}
    claim = volumes[runs["name"]]["persistentVolumeClaim"]
    (template,) = statefulset["spec"]["volumeClaimTemplates"]
    assert claim == {"claimName": f"{template['metadata']['name']}-seed-rl-learner-0",
                     "readOnly": True}
    # a ReadWriteOnce volume: on the learner's node
    (term,) = deployment["spec"]["template"]["spec"]["affinity"]["podAffinity"][
        "requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert selects(term["labelSelector"], pod_labels(statefulset))

    # the evaluation actors dial serve and ask it for the environment
    actors = container(serve_actors(objects), "actors")
    assert cli.build_parser().parse_args(actors["args"]).role == "actors"
    actor_env = container_env(actors, objects)
    assert actor_env["SEED_RL_LEARNER"] == f"{service['metadata']['name']}:50051"
    assert "SEED_RL_ENV" not in actor_env
    actor_knobs = {config.env_var_name(f.name) for f in config.fields_for("actors")}
    assert set(seed_rl_env(actor_env)) <= actor_knobs
    assert actor_env["SEED_RL_AUTH_TOKEN"] == env["SEED_RL_AUTH_TOKEN"]


def test_only_the_evaluation_actors_reach_serve():
    objects = rendered(SERVE)
    serve = pod_labels(serve_deployment(objects))
    evaluators = pod_labels(serve_actors(objects))
    strangers = [{"app.kubernetes.io/name": "seed-rl", "app.kubernetes.io/component": c}
                 for c in ("actor", "learner")] + [{"app": "anything-else"}]
    for port in (50051, 6006, 29500):
        assert admits(objects, evaluators, serve, port) == (port == 50051), port
        for stranger in strangers:
            assert not admits(objects, stranger, serve, port), (stranger, port)
        for source in (serve, evaluators, *strangers):
            assert not admits(objects, source, evaluators, port), (source, port)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rehearsal_serve_follows_the_run_volume(tmp_path, free_port, processes,
                                                clean_environment):
    objects = rendered(SERVE)
    secrets = {"seed-rl-auth": {"token": "rehearsal-token"}}
    network = {"0.0.0.0:50051": f"127.0.0.1:{free_port}",
               "seed-rl-serve:50051": f"127.0.0.1:{free_port}"}
    root = tmp_path / "serve-pod"
    serve = Pod(objects, serve_deployment(objects), "serve", root, secrets, network)
    actors = Pod(objects, serve_actors(objects), "actors", tmp_path / "actor-pod", secrets,
                 network)
    run = root / "runs" / "default"  # the learner's volume, as this pod mounts it
    assert serve.args[-1] == str(run)
    server = serve.start(processes)
    server.wait_for_line("waiting for the first checkpoint", timeout=60)
    write_checkpoint(run, policy_version=2)
    server.wait_for_line(r"serve answering CartPole-v1 actors", timeout=60)
    probe = serve.probe()
    assert probe.returncode == 0 and "seed_rl.v1.Learner is SERVING" in probe.stdout, probe
    assert serve.probe(SEED_RL_AUTH_TOKEN="wrong").returncode == 1
    fleet = actors.start(processes)
    logdir = root / "serve"
    wait_for(lambda: any(r.get("episodes") for r in read_metrics(logdir)), "episodes",
             timeout=120, process=server)
    write_checkpoint(run, policy_version=6)
    server.wait_for_line(r"now serving .*policy version 6", timeout=60)
    client = ScriptedActor(f"127.0.0.1:{free_port}", handshake_request("CartPole-v1", 1),
                           token="rehearsal-token")
    try:
        assert client.step(step_request(np.zeros((1, 4), np.float32))).policy_version == 6
    finally:
        client.close()
    server.popen.send_signal(signal.SIGTERM)
    grace = serve_deployment(objects)["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert server.wait(timeout=grace) == 0, server.text
    assert fleet.wait(timeout=60) == 0, fleet.text
    assert sorted(p.name for p in logdir.iterdir()) == ["config.json", "metrics.jsonl", "tb"]
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # nothing written there
