"""deploy/kubernetes/: the manifests render, validate, and are safe to apply.

Always run (no cluster needed; kubectl must be installed, ``kubectl kustomize`` works
offline): every overlay and component renders with ``kubectl kustomize``; every rendered
object validates against the Kubernetes OpenAPI schemas of several versions (the
kubernetes-validate package ships them, strict: unknown fields fail); pods run as the
image's user with least privilege; the learner keeps its run on a volume; every variable is
a knob its role reads; no Secret is ever rendered; the NetworkPolicies admit only actor pods
to the learner's port. The agreement with docker/compose.yaml is
test_kubernetes_compose.py, the rehearsal on loopback test_kubernetes_rehearsal.py, and
docs/kubernetes.md's walkthrough test_kubernetes_walkthrough.py.

The helpers (rendering, the environment kubelet gives a container, what a NetworkPolicy
admits, a container as a local process) are in tests/support/k8s_manifests.py.
"""

from __future__ import annotations

import re

import kubernetes_validate
import pytest
from kubernetes_validate import utils as schemas
from support.k8s_manifests import (
    COMPONENTS,
    K8S,
    OVERLAYS,
    RENDERS,
    REPO,
    VERSIONS,
    SecretRef,
    actor_deployment,
    admits,
    container,
    container_env,
    example_pods,
    learner_set,
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

from seed_rl import cli, config

DOCKERFILE = REPO / "docker" / "Dockerfile"
#: variables that are not knobs of the role but are read by the image's healthcheck
HEALTHCHECK_VARIABLES = {"SEED_RL_TLS_CA", "SEED_RL_HEALTHCHECK_TLS_NAME"}


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
