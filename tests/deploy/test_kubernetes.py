"""deploy/kubernetes/: the manifests render, validate, and agree with docker/compose.yaml.

Always run (no cluster needed; kubectl must be installed, ``kubectl kustomize`` works
offline): every overlay and component renders with ``kubectl kustomize``; every rendered
object validates against the Kubernetes OpenAPI schemas of several versions (the
kubernetes-validate package ships them, strict: unknown fields fail); the learner and the
actors get the same SEED_RL_* variables, ports, health check, commands and volume layout as
in docker/compose.yaml (documented exceptions below); no Secret is ever rendered; the
NetworkPolicies admit only actor pods to the learner's port. A rehearsal runs the rendered
pods' commands, environments and probe on loopback (real processes): train, SIGTERM, final
checkpoint, resume, `kubectl cp` of the run directory, `seed-rl eval` on it.

The helpers (rendering, the environment kubelet gives a container, what a NetworkPolicy
admits, a container as a local process) are in tests/support/k8s_manifests.py.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as schemas
from support.k8s_manifests import (
    K8S,
    LEARNER_SERVICE,
    REPLICA_VARIABLES,
    REPO,
    RESOURCE,
    VERSIONS,
    Pod,
    SecretRef,
    actor_deployment,
    admits,
    container,
    container_env,
    example_pods,
    kustomize,
    learner_pod_env,
    learner_set,
    loopback,
    one,
    overlay_with,
    pod_labels,
    pod_specs,
    port_of,
    rendered,
    resolve,
    seed_rl_env,
    selects,
    stateful_pod,
    validate_all,
    with_component,
    world_size,
)
from support.learner_process import RESUMED, SERVING, last_metric, wait_for

from seed_rl import cli, config

COMPOSE_FILE = REPO / "docker" / "compose.yaml"
DOCKERFILE = REPO / "docker" / "Dockerfile"
DOC = REPO / "docs" / "kubernetes.md"

OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir())
#: every kustomization a person applies: the overlays and the run reader
RENDERS = [f"overlays/{name}" for name in OVERLAYS] + ["run-reader"]

#: variables whose value differs from docker/compose.yaml's on purpose, and why
#: (docs/kubernetes.md, "Compared with docker/compose.yaml")
VALUE_EXCEPTIONS = {
    "SEED_RL_LEARNER": "the actors dial the learner's Service, seed-rl-learner:50051",
    "SEED_RL_AUTH_TOKEN": "from the Secret seed-rl-auth (compose: the shell, default empty)",
    "SEED_RL_ENV_GROUPS": "auto: actor pods reach the learner pod over the network (compose: 1, "
                          "its learner shares the machine's cores)",
}
OVERLAY_VALUE_EXCEPTIONS = {"gpu": {"SEED_RL_DEVICE": "cuda: the learner has a GPU"}}
#: variables of the manifests that are not SEED_RL_* knobs, and variables that are not knobs
#: of the role but are read by the image's healthcheck
NOT_KNOBS = {"RUN_NAME"}
HEALTHCHECK_VARIABLES = {"SEED_RL_TLS_CA", "SEED_RL_HEALTHCHECK_TLS_NAME"}


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


# -- they render and validate ----------------------------------------------------------------


def test_every_overlay_and_component_is_rendered_by_these_tests():
    assert {"cpu", "gpu"} <= set(OVERLAYS)
    assert {"tensorboard", "tls", "actor-hpa"} <= set(COMPONENTS)
    for directory in [*(K8S / "overlays").iterdir(), *(K8S / "components").iterdir()]:
        assert (directory / "kustomization.yaml").is_file(), directory


@pytest.mark.parametrize("name", RENDERS)
def test_kubectl_kustomize_renders(name):
    objects = rendered(name)
    kinds = sorted(o["kind"] for o in objects)
    if name.startswith("overlays/"):
        assert kinds.count("ConfigMap") == 3 and kinds.count("Service") == 2, kinds
        for kind in ("StatefulSet", "Deployment", "PodDisruptionBudget"):
            assert kinds.count(kind) == 1, kinds
        # components/learner-replicas adds the learner pods' policy for one another
        assert kinds.count("NetworkPolicy") == 2 + (world_size(objects) > 1), kinds
    for o in objects:
        assert o["metadata"].get("namespace") == "seed-rl", o["metadata"]
    for _, spec in pod_specs(objects):
        for c in spec["containers"]:
            # a tag or a digest, never an implicit one
            assert "@sha256:" in c["image"] or ":" in c["image"].split("/")[-1], c["image"]


def test_kubernetes_validate_ships_the_versions():
    available = {schemas.major_minor(v) for v in schemas.all_versions()}
    assert len(VERSIONS) >= 2 and set(VERSIONS) <= available, (VERSIONS, sorted(available))


@pytest.mark.parametrize("name", RENDERS)
def test_every_object_validates_against_the_kubernetes_schemas(name):
    validate_all(rendered(name), name)


@pytest.mark.parametrize("component", COMPONENTS)
def test_every_component_renders_and_validates(tmp_path, component):
    objects = with_component(tmp_path, component)
    validate_all(objects, f"overlays/cpu + components/{component}")
    base = {(o["kind"], o["metadata"]["name"]) for o in rendered("overlays/cpu")}
    assert base <= {(o["kind"], o["metadata"]["name"]) for o in objects}


def test_strict_validation_catches_a_typo():
    statefulset = learner_set(rendered("overlays/cpu"))
    broken = {**statefulset, "spec": {**statefulset["spec"], "replica": 1}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, VERSIONS[-1], strict=True)


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


@pytest.mark.parametrize("name", RENDERS)
def test_pods_run_as_the_image_user_with_least_privilege(name):
    uid = int(re.search(r"useradd [^\n]*--uid (\d+)", DOCKERFILE.read_text())[1])
    for workload, spec in pod_specs(rendered(name)):
        security = spec["securityContext"]
        assert security["runAsNonRoot"] is True and security["runAsUser"] == uid, workload
        assert security["seccompProfile"]["type"] == "RuntimeDefault", workload
        assert spec["automountServiceAccountToken"] is False, workload
        # a Service named seed-rl-learner would inject SEED_RL_LEARNER_PORT=tcp://...
        assert spec["enableServiceLinks"] is False, workload
        for c in spec["containers"]:
            context = c["securityContext"]
            assert context["allowPrivilegeEscalation"] is False, (workload, c["name"])
            assert context["readOnlyRootFilesystem"] is True, (workload, c["name"])
            assert context["capabilities"]["drop"] == ["ALL"], (workload, c["name"])
            assert "add" not in context["capabilities"]
            writable = {m["mountPath"] for m in c["volumeMounts"] if not m.get("readOnly")}
            assert {"/tmp", "/home/seedrl"} <= writable, (workload, c["name"])
            resources = c["resources"]
            assert {"cpu", "memory"} <= set(resources["requests"]), (workload, c["name"])
            assert {"cpu", "memory"} <= set(resources["limits"]), (workload, c["name"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_learner_statefulset_keeps_its_run(overlay):
    objects = rendered(f"overlays/{overlay}")
    spec = learner_set(objects)["spec"]
    # one learner pod, or one pod per replica of a group (components/learner-replicas): never
    # pods that would be independent learners, each with its own run
    assert spec["replicas"] == world_size(objects)
    assert (spec["replicas"] == 1) == (overlay != "replicas")
    assert spec["persistentVolumeClaimRetentionPolicy"] == {
        "whenDeleted": "Retain",
        "whenScaled": "Retain",
    }
    (claim,) = spec["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "runs"
    assert claim["spec"]["accessModes"] == ["ReadWriteOnce"]
    headless = one(objects, "Service", spec["serviceName"])
    assert headless["spec"]["publishNotReadyAddresses"] is True
    budget = one(objects, "PodDisruptionBudget")
    assert (
        budget["spec"]["selector"]["matchLabels"].items()
        <= pod_labels(learner_set(objects)).items()
    )
    assert budget["spec"]["maxUnavailable"] == 0
    # the run reader mounts the claim the StatefulSet makes for pod 0
    (volume,) = [
        v for v in one(rendered("run-reader"), "Pod")["spec"]["volumes"] if v["name"] == "runs"
    ]
    assert (
        volume["persistentVolumeClaim"]["claimName"]
        == f"runs-{learner_set(objects)['metadata']['name']}-0"
    )


def test_configmap_knobs_change_the_cluster(tmp_path):
    """What `kustomize edit add configmap ... --behavior merge` does: any knob, the run name,
    the preset, the environment for both roles."""
    objects = overlay_with(
        tmp_path,
        "configMapGenerator:\n"
        "  - name: seed-rl-common\n    behavior: merge\n    literals:\n"
        "      - SEED_RL_ENV=Acrobot-v1\n"
        "  - name: seed-rl-learner\n    behavior: merge\n    literals:\n"
        "      - RUN_NAME=exp\n      - SEED_RL_TOTAL_STEPS=123\n      - SEED_RL_EVAL_EVERY=60\n"
        "  - name: seed-rl-actors\n    behavior: merge\n    literals:\n"
        "      - SEED_RL_ENVS_PER_ACTOR=3\n",
    )
    learner_env = container_env(container(learner_set(objects), "learner"), objects)
    actor_env = container_env(container(actor_deployment(objects), "actors"), objects)
    assert learner_env["SEED_RL_LOGDIR"] == "/runs/exp"
    learner = resolve("learner", learner_env)
    actors = resolve("actors", actor_env)
    assert learner.env == actors.env == "Acrobot-v1"
    assert learner.total_steps == 123 and learner.eval_every == 60
    assert learner.preset == "acrobot"  # the env's shipped preset, as in compose
    assert actors.envs_per_actor == 3
    objects = overlay_with(
        tmp_path,
        "configMapGenerator:\n  - name: seed-rl-learner\n    behavior: merge\n"
        "    literals:\n      - SEED_RL_PRESET=none\n",
    )
    learner = resolve("learner", container_env(container(learner_set(objects), "learner"), objects))
    assert learner.preset == "" and learner.optimizer == "rmsprop"


@pytest.mark.parametrize("name", [f"overlays/{o}" for o in OVERLAYS] + ["tls"])
def test_every_variable_is_a_knob_the_role_reads(tmp_path, name):
    objects = with_component(tmp_path, name) if name == "tls" else rendered(name)
    for workload, name_, role in (
        (learner_set(objects), "learner", "learner"),
        (actor_deployment(objects), "actors", "actors"),
    ):
        c = container(workload, name_)
        parser = cli.build_parser()
        parser.parse_args(c["args"])  # exits on a command the CLI does not have
        assert parser.parse_args(c["args"]).role == role
        env = container_env(c, objects, stateful_pod(workload) if role == "learner" else None)
        knobs = {config.env_var_name(f.name) for f in config.fields_for(role)}
        knobs.add(config.ENV_PREFIX + "CONFIG")
        extra = HEALTHCHECK_VARIABLES if role == "learner" else set()
        for variable in seed_rl_env(env):
            assert variable in knobs | extra, f"{name}: {variable} is not read by seed-rl {role}"
        resolved = resolve(role, env)
        if role == "learner":
            assert resolved.logdir.startswith("/runs/")


# -- secrets and the network -----------------------------------------------------------------


def all_renders(tmp_path) -> dict[str, list[dict]]:
    out = {name: list(rendered(name)) for name in RENDERS}
    for component in COMPONENTS:
        (tmp_path / component).mkdir()
        out[f"components/{component}"] = with_component(tmp_path / component, component)
    return out


def test_no_secret_is_rendered_and_secrets_come_from_secret_objects(tmp_path):
    for name, objects in all_renders(tmp_path).items():
        assert not [o for o in objects if o["kind"] == "Secret"], f"{name} renders a Secret"
        for o in objects:
            if o["kind"] == "ConfigMap":
                for key, value in o.get("data", {}).items():
                    assert not re.search(r"TOKEN|KEY|PASSWORD|SECRET", key), (name, key)
                    assert "BEGIN" not in value, (name, key)
        for pod, spec in example_pods(objects):
            workload = pod["metadata"]["name"]
            for c in spec["containers"]:
                env = container_env(c, objects, pod)
                if "SEED_RL_AUTH_TOKEN" in env:
                    assert env["SEED_RL_AUTH_TOKEN"] == SecretRef("seed-rl-auth", "token")
                for var in c.get("env", []):
                    optional = var.get("valueFrom", {}).get("secretKeyRef", {}).get("optional")
                    assert not optional, f"{name} {workload}: {var['name']} must not be optional"
            for volume in spec.get("volumes", []):
                if "secret" in volume:
                    assert volume["secret"]["secretName"] == "seed-rl-tls", (name, volume)


#: ports the NetworkPolicy checks try: the learner's gRPC port, the rendezvous port of learner
#: replicas, both ends of Linux's ephemeral range (gloo's and NCCL's connections), TensorBoard's
TRIED_PORTS = (50051, 29500, 32768, 60999, 6006)


def test_the_network_policy_admits_only_actor_pods_to_the_learner(tmp_path):
    """The learner's gRPC port admits actor pods and no one else; its other ports admit no
    one, except learner pods where components/learner-replicas makes them one group (which
    tests/deploy/test_kubernetes_replicas.py checks further); nothing reaches the actors."""
    strangers = [
        {"app.kubernetes.io/name": "seed-rl", "app.kubernetes.io/component": "run-reader"},
        {"app": "anything-else"},
    ]
    for name, objects in all_renders(tmp_path).items():
        if name == "run-reader":
            (policy,) = [o for o in objects if o["kind"] == "NetworkPolicy"]
            assert selects(policy["spec"]["podSelector"], one(objects, "Pod")["metadata"]["labels"])
            assert policy["spec"]["policyTypes"] == ["Ingress"] and not policy["spec"].get(
                "ingress"
            )
            continue
        learner = pod_labels(learner_set(objects))
        actors = pod_labels(actor_deployment(objects))
        grpc = port_of(container(learner_set(objects), "learner"), "grpc")
        group = world_size(objects) > 1
        for port in {grpc, *TRIED_PORTS}:
            where = f"{name}, port {port}"
            assert admits(objects, actors, learner, port) == (port == grpc), where
            assert admits(objects, learner, learner, port) == (group and port != grpc), where
            for stranger in strangers:
                assert not admits(objects, stranger, learner, port), (where, stranger)
            for source in (learner, actors, *strangers):
                assert not admits(objects, source, actors, port), (where, source)
        # the actors serve nothing
        policies = [o for o in objects if o["kind"] == "NetworkPolicy"]
        on_actors = [p for p in policies if selects(p["spec"]["podSelector"], actors)]
        assert [p["spec"].get("ingress", []) for p in on_actors] == [[]], name


def test_images_pin_by_digest(tmp_path):
    digest = "sha256:" + "0123456789abcdef" * 4
    objects = overlay_with(
        tmp_path,
        "images:\n"
        f"  - name: seed-rl-learner\n    newName: registry.example.org/seed-rl-learner\n    digest: {digest}\n"
        f"  - name: seed-rl-actor\n    newName: registry.example.org/seed-rl-actor\n    digest: {digest}\n",
    )
    images = {c["name"]: c["image"] for _, spec in pod_specs(objects) for c in spec["containers"]}
    assert images == {
        "learner": f"registry.example.org/seed-rl-learner@{digest}",
        "tensorboard": f"registry.example.org/seed-rl-learner@{digest}",
        "actors": f"registry.example.org/seed-rl-actor@{digest}",
    }


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


# -- the walkthrough -------------------------------------------------------------------------


def test_the_walkthrough_commands_and_paths_exist():
    text = DOC.read_text()
    parser = cli.build_parser()
    shell = "\n".join(re.findall(r"```bash\n(.*?)```", text, re.S))
    commands = re.findall(r"^\s*(?:[A-Z_]+=\S+ )*seed-rl (\w+[^#\n]*)", shell, re.M)
    assert len(commands) >= 1
    for command in commands:
        assert parser.parse_args(command.split()).role in cli.ROLES, command
    for path in set(re.findall(r"deploy/kubernetes/[\w./-]*\w", text)):
        assert (REPO / path).exists(), f"docs/kubernetes.md names {path}, which does not exist"
    for applied in re.findall(r"kubectl (?:apply|delete|kustomize) -k (deploy/\S+)", shell):
        assert (REPO / applied / "kustomization.yaml").is_file(), applied
    assert "StatefulSet `seed-rl-learner` (1 replica)" in text  # the base: one learner pod


def test_the_walkthrough_overlays_render_as_the_page_says(tmp_path):
    """The page's own overlay (my-cluster/) and run-reader kustomization render, validate,
    and `kubectl apply` would print exactly the objects the page shows, hashes included."""
    text = DOC.read_text()
    blocks = dict(re.findall(r"```yaml\n# (my-cluster/\S+)\n(.*?)```", text, re.S))
    assert set(blocks) == {
        "my-cluster/kustomization.yaml",
        "my-cluster/run-reader/kustomization.yaml",
        "my-cluster/gpu-replicas/kustomization.yaml",  # tests/deploy/test_kubernetes_replicas.py
    }
    del blocks["my-cluster/gpu-replicas/kustomization.yaml"]
    for name, body in blocks.items():
        path = tmp_path / "repo" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
    (tmp_path / "repo" / "deploy").symlink_to(REPO / "deploy")
    overlay = kustomize(tmp_path / "repo" / "my-cluster")
    validate_all(overlay, "docs/kubernetes.md: my-cluster")
    printed = "\n".join(f"{RESOURCE[o['kind']]}/{o['metadata']['name']} created" for o in overlay)
    assert printed in text, f"docs/kubernetes.md should show what apply prints:\n{printed}"
    learner = container_env(container(learner_set(overlay), "learner"), overlay)
    assert learner["SEED_RL_LOGDIR"] == "/runs/cartpole-1"
    assert resolve("learner", learner).total_steps == 20_000_000
    assert f"logdir {learner['SEED_RL_LOGDIR']}" in text and "--checkpoint runs/cartpole-1" in text
    images = {c["image"] for _, spec in pod_specs(overlay) for c in spec["containers"]}
    assert len(images) == 2 and all("@sha256:" in image for image in images), images
    for image in images:
        assert image.split("@")[1] in text  # the digests the page says docker printed
    reader = kustomize(tmp_path / "repo" / "my-cluster" / "run-reader")
    validate_all(reader, "docs/kubernetes.md: my-cluster/run-reader")
    printed = "\n".join(f"{RESOURCE[o['kind']]}/{o['metadata']['name']} created" for o in reader)
    assert printed in text
    assert {c["image"] for _, spec in pod_specs(reader) for c in spec["containers"]} <= images
