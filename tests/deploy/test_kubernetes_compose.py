"""deploy/kubernetes/ agrees with docker/compose.yaml: the learner and the actors get the same
SEED_RL_* variables, ports, health check, commands, images and volume layout as in compose
(the documented exceptions below; docs/kubernetes.md, "Compared with docker/compose.yaml").
No cluster needed: the overlays are rendered with ``kubectl kustomize`` offline.
"""

from __future__ import annotations

import re

import pytest
import yaml
from support.k8s_manifests import (
    LEARNER_SERVICE,
    OVERLAYS,
    REPLICA_VARIABLES,
    REPO,
    SecretRef,
    actor_deployment,
    container,
    container_env,
    learner_pod_env,
    learner_set,
    one,
    pod_labels,
    rendered,
    seed_rl_env,
    world_size,
)

COMPOSE_FILE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"

#: variables whose value differs from docker/compose.yaml's on purpose, and why
#: (docs/kubernetes.md, "Compared with docker/compose.yaml")
VALUE_EXCEPTIONS = {
    "SEED_RL_LEARNER": "the actors dial the learner's Service, seed-rl-learner:50051",
    "SEED_RL_AUTH_TOKEN": "from the Secret seed-rl-auth (compose: the shell, default empty)",
    "SEED_RL_ENV_GROUPS": "auto: actor pods reach the learner pod over the network (compose: 1, "
                          "its learner shares the machine's cores)",
}
OVERLAY_VALUE_EXCEPTIONS = {"gpu": {"SEED_RL_DEVICE": "cuda: the learner has a GPU"}}
#: variables of the manifests that are not SEED_RL_* knobs
NOT_KNOBS = {"RUN_NAME"}


# -- docker/compose.yaml with its defaults (no variables set) --------------------------------


def compose() -> dict:
    """docker/compose.yaml with every ${VAR:-default} replaced by its default, as compose
    resolves it in an empty environment."""
    text = re.sub(
        r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?-([^}]*))?\}",
        lambda m: m[1] or "",
        COMPOSE_FILE.read_text(),
    )
    return yaml.safe_load(text)


def compose_env(service: dict) -> dict[str, str]:
    env = service.get("environment", {})
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: "" if v is None else str(v) for k, v in env.items()}


def seconds(duration: str) -> float:
    units = {"h": 3600, "m": 60, "s": 1, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", str(duration))
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


def image_repository(image: str) -> str:
    """``registry/name`` of ``registry/name:tag`` or ``registry/name@sha256:...``."""
    head, _, last = image.split("@")[0].rpartition("/")
    return f"{head}/{last.split(':')[0]}" if head else last.split(":")[0]


# -- they agree with docker/compose.yaml -----------------------------------------------------


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_same_variables_as_compose(overlay):
    """Each role gets exactly the SEED_RL_* variables compose gives it, with compose's
    defaults, except the documented exceptions."""
    objects = rendered(f"overlays/{overlay}")
    services = compose()["services"]
    exceptions = {**VALUE_EXCEPTIONS, **OVERLAY_VALUE_EXCEPTIONS.get(overlay, {})}
    # a group of learner replicas has more (tests/deploy/test_kubernetes_replicas.py checks them)
    group = REPLICA_VARIABLES if world_size(objects) > 1 else set()
    actor_env = container_env(container(actor_deployment(objects), "actors"), objects)
    for ours, name, service in (
        (learner_pod_env(objects), "learner", "learner"),
        (actor_env, "actors", "actor"),
    ):
        extra = group if name == "learner" else set()
        theirs = compose_env(services[service])
        knobs = set(seed_rl_env(ours)) - extra
        assert knobs == set(theirs), (
            f"{name}: only in the manifests {sorted(knobs - set(theirs))}, "
            f"only in compose {sorted(set(theirs) - knobs)}"
        )
        assert set(ours) - set(seed_rl_env(ours)) <= NOT_KNOBS | extra, sorted(ours)
        differ = {k for k in theirs if ours[k] != theirs[k]}
        assert differ <= set(exceptions), {
            k: (ours[k], theirs[k]) for k in differ - set(exceptions)
        }
    learner_env = learner_pod_env(objects)
    assert (
        learner_env["SEED_RL_AUTH_TOKEN"]
        == actor_env["SEED_RL_AUTH_TOKEN"]
        == SecretRef("seed-rl-auth", "token")
    )
    if overlay == "gpu":
        assert learner_env["SEED_RL_DEVICE"] == "cuda"
        limits = container(learner_set(objects), "learner")["resources"]["limits"]
        assert int(limits["nvidia.com/gpu"]) == 1


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_ports_commands_health_check_and_volumes_agree_with_compose(overlay):
    objects = rendered(f"overlays/{overlay}")
    services = compose()["services"]
    statefulset = learner_set(objects)
    learner = container(statefulset, "learner")
    actors = container(actor_deployment(objects), "actors")
    learner_env = learner_pod_env(objects)
    actor_env = container_env(actors, objects)

    # commands (arguments of the images' entrypoint `seed-rl`) and images
    assert "command" not in learner and "command" not in actors
    assert learner["args"] == services["learner"]["command"]
    assert actors["args"] == services["actor"]["command"]
    assert image_repository(learner["image"]) == image_repository(services["learner"]["image"])
    assert image_repository(actors["image"]) == image_repository(services["actor"]["image"])

    # ports: compose's container port = the container port = the Services' ports = the port
    # the learner listens on = the port the actors dial
    published = services["learner"]["ports"][0]
    compose_port = int(
        published["target"] if isinstance(published, dict) else published.split(":")[-1]
    )
    (grpc,) = [p for p in learner["ports"] if p["name"] == "grpc"]
    assert grpc["containerPort"] == compose_port
    assert learner_env["SEED_RL_ADDRESS"] == compose_env(services["learner"])["SEED_RL_ADDRESS"]
    assert learner_env["SEED_RL_ADDRESS"] == f"0.0.0.0:{compose_port}"
    headless = statefulset["spec"]["serviceName"]
    for name in (LEARNER_SERVICE, headless):
        service = one(objects, "Service", name)
        assert service["spec"]["selector"].items() <= pod_labels(statefulset).items()
        assert [(p["port"], p["targetPort"]) for p in service["spec"]["ports"]] == [
            (compose_port, "grpc")
        ]
    assert one(objects, "Service", headless)["spec"]["clusterIP"] == "None"
    assert one(objects, "Service", LEARNER_SERVICE)["spec"]["type"] == "ClusterIP"
    assert actor_env["SEED_RL_LEARNER"] == f"{LEARNER_SERVICE}:{compose_port}"
    compose_host, compose_dialed = compose_env(services["actor"])["SEED_RL_LEARNER"].rsplit(":", 1)
    assert int(compose_dialed) == compose_port and compose_host == "learner"

    # the health check: the image's script, in all three probes, with compose's timing
    healthcheck = services["learner"]["healthcheck"]
    assert healthcheck["test"][0] == "CMD"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert learner[probe]["exec"]["command"] == healthcheck["test"][1:], probe
        assert learner[probe]["timeoutSeconds"] == seconds(healthcheck["timeout"]), probe
    assert learner["readinessProbe"]["periodSeconds"] == seconds(healthcheck["interval"])
    startup = learner["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= seconds(
        healthcheck["start_period"]
    )
    assert "COPY docker/healthcheck.py /opt/seed-rl/healthcheck.py" in DOCKERFILE.read_text()

    # the volume layout: the run volume at /runs, the run in /runs/RUN_NAME
    (compose_runs,) = [v for v in services["learner"]["volumes"] if v.split(":")[1] == "/runs"]
    assert compose_runs.split(":")[0] in compose()["volumes"]
    claims = {t["metadata"]["name"]: t for t in statefulset["spec"]["volumeClaimTemplates"]}
    (runs,) = [m for m in learner["volumeMounts"] if m["mountPath"] == "/runs"]
    assert runs["name"] in claims and not runs.get("readOnly")
    assert learner_env["SEED_RL_LOGDIR"] == compose_env(services["learner"])["SEED_RL_LOGDIR"]
    assert learner_env["SEED_RL_LOGDIR"] == f"/runs/{learner_env['RUN_NAME']}"
    assert not any(m["mountPath"] == "/runs" for m in actors.get("volumeMounts", []))

    # TensorBoard: compose's service reads /runs read-only; here a sidecar on the same claim
    tensorboard = container(statefulset, "tensorboard")
    theirs = services["tensorboard"]
    assert tensorboard["command"] == theirs["entrypoint"]
    assert image_repository(tensorboard["image"]) == image_repository(theirs["image"])
    assert tensorboard["image"] == learner["image"]
    ours_args, their_args = tensorboard["args"], theirs["command"]
    for flag in ("--logdir", "--port"):
        assert ours_args[ours_args.index(flag) + 1] == their_args[their_args.index(flag) + 1]
    assert any(
        p["containerPort"] == int(theirs["ports"][0].split(":")[-1]) for p in tensorboard["ports"]
    )
    # loopback only (kubectl port-forward), where compose publishes it on the host
    assert ours_args[ours_args.index("--host") + 1] == "127.0.0.1" and "--bind_all" not in ours_args
    (tb_runs,) = [m for m in tensorboard["volumeMounts"] if m["mountPath"] == "/runs"]
    assert tb_runs["name"] == runs["name"] and tb_runs["readOnly"] is True
    assert any(v.endswith(":/runs:ro") for v in theirs["volumes"])

    # SIGTERM: at least compose's grace for the final checkpoint
    grace = statefulset["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= seconds(services["learner"]["stop_grace_period"]) and grace >= 120
