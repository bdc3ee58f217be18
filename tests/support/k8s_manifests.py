"""deploy/kubernetes/ as the tests see it: `kubectl kustomize` renders, the parts of the
rendered objects (workloads, containers, the environment kubelet gives a container, what
the NetworkPolicies admit), and a rendered container run as a local process (:class:`Pod`).
"""

from __future__ import annotations

import dataclasses
import os
import re
import shutil
import subprocess
import sys
from functools import cache
from pathlib import Path

import kubernetes_validate
import pytest
import yaml
from kubernetes_validate import utils as schemas

from seed_rl import config
from support.procs import Process

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "kubernetes"

#: Kubernetes versions every object must validate against (what kubernetes-validate ships:
#: at least two, the newest included)
VERSIONS = tuple(dict.fromkeys(("1.31", "1.34", schemas.major_minor(schemas.latest_version()))))

LEARNER_SERVICE = "seed-rl-learner"

OVERLAYS = sorted(p.name for p in (K8S / "overlays").iterdir() if p.is_dir())
COMPONENTS = sorted(p.name for p in (K8S / "components").iterdir() if p.is_dir())
#: every kustomization a person applies: the overlays and the run reader
RENDERS = [f"overlays/{name}" for name in OVERLAYS] + ["run-reader"]

#: how `kubectl apply` names each kind it reports
RESOURCE = {
    "ConfigMap": "configmap",
    "Service": "service",
    "Deployment": "deployment.apps",
    "StatefulSet": "statefulset.apps",
    "PodDisruptionBudget": "poddisruptionbudget.policy",
    "NetworkPolicy": "networkpolicy.networking.k8s.io",
    "Pod": "pod",
}


# -- rendering -----------------------------------------------------------------------------


def kubectl() -> str:
    exe = shutil.which("kubectl")
    assert exe is not None, (
        "kubectl is not installed, and the Kubernetes manifests must render on every run: "
        "install it (https://kubernetes.io/docs/tasks/tools/, or your distribution's "
        "kubectl package); `kubectl kustomize` needs no cluster"
    )
    return exe


def kustomize(directory: Path) -> list[dict]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@cache
def rendered(name: str) -> tuple[dict, ...]:
    return tuple(kustomize(K8S / name))


def overlay_with(tmp_path: Path, body: str, base: str = "overlays/cpu") -> list[dict]:
    """Render a kustomization in ``tmp_path`` on top of ``base`` (what a user's own overlay
    does); ``body`` is more YAML for it, with ``K8S`` standing for deploy/kubernetes."""
    relative = os.path.relpath(K8S, tmp_path)
    (tmp_path / "kustomization.yaml").write_text(
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
        f"namespace: seed-rl\nresources:\n  - {relative}/{base}\n" + body.replace("K8S", relative)
    )
    return kustomize(tmp_path)


def with_component(tmp_path: Path, component: str) -> list[dict]:
    return overlay_with(tmp_path, f"components:\n  - K8S/components/{component}\n")


def validate_all(objects, where: str) -> None:
    problems = []
    for o in objects:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(o, version, strict=True)
            except kubernetes_validate.ValidationError as error:
                problems.append(
                    f"{where}: {o['kind']} {o['metadata']['name']} is not valid in Kubernetes "
                    f"{version}: {error.message} at {'/'.join(map(str, error.path))}"
                )
    assert not problems, "\n".join(problems)


# -- the rendered objects --------------------------------------------------------------------


def one(objects, kind: str, name: str | None = None) -> dict:
    found = [o for o in objects if o["kind"] == kind and name in (None, o["metadata"]["name"])]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def learner_set(objects) -> dict:
    return one(objects, "StatefulSet", "seed-rl-learner")


def actor_deployment(objects) -> dict:
    return one(objects, "Deployment", "seed-rl-actors")


def container(workload: dict, name: str) -> dict:
    (found,) = [c for c in workload["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    return found


def port_of(c: dict, name: str) -> int:
    (port,) = [p["containerPort"] for p in c["ports"] if p["name"] == name]
    return port


def pod_specs(objects) -> list[tuple[str, dict]]:
    out = []
    for o in objects:
        if o["kind"] in {"StatefulSet", "Deployment"}:
            out.append((o["metadata"]["name"], o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((o["metadata"]["name"], o["spec"]))
    return out


def pod_labels(workload: dict) -> dict:
    return workload["spec"]["template"]["metadata"]["labels"]


def stateful_pod(statefulset: dict, ordinal: int = 0) -> dict:
    """Pod ``ordinal`` of ``statefulset`` as its controller makes it: named NAME-ORDINAL, in
    the StatefulSet's namespace, with the template's labels and the two the controller adds."""
    name = f"{statefulset['metadata']['name']}-{ordinal}"
    labels = {
        **pod_labels(statefulset),
        "statefulset.kubernetes.io/pod-name": name,
        "apps.kubernetes.io/pod-index": str(ordinal),
    }
    namespace = statefulset["metadata"]["namespace"]
    return {"metadata": {"name": name, "namespace": namespace, "labels": labels}}


@dataclasses.dataclass(frozen=True)
class SecretRef:
    name: str
    key: str


def downward(pod: dict, path: str) -> str:
    """What kubelet puts in a variable from ``fieldRef: {fieldPath: path}`` of ``pod``
    (a missing label is the empty string)."""
    keyed = re.fullmatch(r"metadata\.(labels|annotations)\['([^']+)'\]", path)
    if keyed:
        return pod["metadata"].get(keyed[1], {}).get(keyed[2], "")
    assert path in ("metadata.name", "metadata.namespace"), f"fieldRef {path}: not modelled"
    return pod["metadata"][path.split(".")[1]]


def container_env(c: dict, objects, pod: dict | None = None) -> dict[str, str | SecretRef]:
    """The environment kubelet gives container ``c`` of ``pod``: envFrom ConfigMaps first,
    then env, with $(VAR) references expanded as kubelet does; a secretKeyRef stays a
    SecretRef; a fieldRef (downward API) needs ``pod`` (e.g. :func:`stateful_pod`)."""
    configmaps = {
        o["metadata"]["name"]: o.get("data", {}) for o in objects if o["kind"] == "ConfigMap"
    }
    env: dict[str, str | SecretRef] = {}
    for source in c.get("envFrom", []):
        assert set(source) == {"configMapRef"}, source
        name = source["configMapRef"]["name"]
        assert name in configmaps, f"envFrom names ConfigMap {name}, which is not rendered"
        env.update(configmaps[name])
    for var in c.get("env", []):
        if "value" in var:
            env[var["name"]] = re.sub(
                r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
                lambda m: env[m[1]] if isinstance(env.get(m[1]), str) else m[0],
                var["value"],
            )
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = SecretRef(ref["name"], ref["key"])
        elif "fieldRef" in var["valueFrom"] and pod is not None:
            env[var["name"]] = downward(pod, var["valueFrom"]["fieldRef"]["fieldPath"])
        else:
            pytest.fail(f"{c['name']}: {var['name']} comes from {var['valueFrom']}")
    return env


def learner_pod_env(objects, ordinal: int = 0) -> dict[str, str | SecretRef]:
    """The learner container's environment in pod ``ordinal`` of the StatefulSet."""
    statefulset = learner_set(objects)
    return container_env(container(statefulset, "learner"), objects,
                         stateful_pod(statefulset, ordinal))  # fmt: skip


#: what components/learner-replicas adds to the learner's environment: torchrun's variables,
#: made from the pod (docs/kubernetes.md, "Learner replicas"), and the name it advertises
REPLICA_VARIABLES = {
    "POD_NAME", "POD_NAMESPACE", "RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR",
    "MASTER_PORT", "SEED_RL_ADVERTISE_ADDRESS",
}  # fmt: skip


def world_size(objects) -> int:
    """The learner pods' WORLD_SIZE: 1 (a single learner) without components/learner-replicas."""
    return int(learner_pod_env(objects).get("WORLD_SIZE", "1"))


def example_pods(objects) -> list[tuple[dict, dict]]:
    """(a pod's metadata as in :func:`stateful_pod`, its spec) for one pod of each workload."""
    out = []
    for o in objects:
        if o["kind"] == "StatefulSet":
            out.append((stateful_pod(o), o["spec"]["template"]["spec"]))
        elif o["kind"] == "Deployment":
            meta = {"name": f"{o['metadata']['name']}-5d8c7b9f4c-7xk2p", "labels": pod_labels(o),
                    "namespace": o["metadata"]["namespace"]}  # fmt: skip
            out.append(({"metadata": meta}, o["spec"]["template"]["spec"]))
        elif o["kind"] == "Pod":
            out.append((o, o["spec"]))
    return out


def seed_rl_env(env: dict) -> dict:
    return {k: v for k, v in env.items() if k.startswith(config.ENV_PREFIX)}


def resolve(role: str, env: dict) -> config.Config:
    plain = {k: ("a-token" if isinstance(v, SecretRef) else v) for k, v in env.items()}
    try:
        return config.resolve(None, role, environ=plain).config
    except config.ConfigError as error:
        pytest.fail(f"the {role} environment is not a valid config: {error}")


# -- NetworkPolicy ---------------------------------------------------------------------------


def selects(selector: dict, labels: dict) -> bool:
    assert set(selector) <= {"matchLabels"}, selector  # no matchExpressions to reason about
    return selector.get("matchLabels", {}).items() <= labels.items()


def admits(objects, source: dict, target: dict, port: int) -> bool:
    """Whether the NetworkPolicies of ``objects`` let a pod labelled ``source`` (in the same
    namespace) connect to TCP ``port`` of a pod labelled ``target``: no policy isolates the
    target for ingress, or a rule of one that does admits that peer on that port."""
    policies = [
        o for o in objects
        if o["kind"] == "NetworkPolicy" and "Ingress" in o["spec"]["policyTypes"]
        and selects(o["spec"]["podSelector"], target)
    ]  # fmt: skip
    if not policies:
        return True
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            peers = rule.get("from")
            for peer in peers or []:
                assert set(peer) == {"podSelector"}, f"only pods of this namespace: {peer}"
            if peers is not None and not any(selects(p["podSelector"], source) for p in peers):
                continue
            ports = rule.get("ports")
            if ports is None or any(
                p["protocol"] == "TCP" and p["port"] <= port <= p.get("endPort", p["port"])
                for p in ports
            ):
                return True
    return False


# -- a rendered container as a local process ---------------------------------------------------


def loopback(port: int) -> dict[str, str]:
    """The single learner's addresses on this machine: it listens, and the actors dial its
    Service, on 127.0.0.1:``port``."""
    return {"0.0.0.0:50051": f"127.0.0.1:{port}", f"{LEARNER_SERVICE}:50051": f"127.0.0.1:{port}"}


class Pod:
    """A container of a rendered workload, run as a local process: its args after the image's
    entrypoint (`seed-rl`), its environment (Secrets from ``secrets``, the downward API from
    ``pod``), its volumes under ``root`` (emptyDirs and the run volume as directories, Secret
    volumes as files). The one liberty: ``network`` replaces the addresses of the cluster
    (Service and pod DNS names, ports) by loopback ones in every value (:func:`loopback`)."""

    def __init__(self, objects, workload: dict, name: str, root: Path, secrets: dict,
                 network: dict[str, str], pod: dict | None = None):  # fmt: skip
        self.container = container(workload, name)
        self.root = root
        volumes = {v["name"]: v for v in workload["spec"]["template"]["spec"].get("volumes", [])}
        self.mounts = {}
        for mount in self.container.get("volumeMounts", []):
            path = root / mount["mountPath"].lstrip("/")
            path.mkdir(parents=True, exist_ok=True)
            self.mounts[mount["mountPath"]] = path
            secret = volumes.get(mount["name"], {}).get("secret")
            if secret:
                data = secrets[secret["secretName"]]
                items = secret.get("items") or [{"key": k, "path": k} for k in data]
                for item in items:
                    (path / item["path"]).write_text(data[item["key"]])
        self.network = network
        self.env = {}
        environment = container_env(self.container, objects, pod)
        for key, value in environment.items():
            if isinstance(value, SecretRef):
                value = secrets[value.name][value.key]
            self.env[key] = self._local(value)
        self.env["HOME"] = str(self.mounts.get("/home/seedrl", root))
        self.env["TMPDIR"] = str(self.mounts.get("/tmp", root))
        # kubelet expands $(VAR) in args from the container's environment
        self.args = [self._local(re.sub(
            r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)",
            lambda m: environment[m[1]] if isinstance(environment.get(m[1]), str) else m[0],
            arg)) for arg in self.container["args"]]

    def _local(self, value: str) -> str:
        """A path under a mount, or a cluster address, as this machine has it."""
        for mount_path, local in self.mounts.items():
            if value == mount_path or value.startswith(mount_path + "/"):
                value = str(local) + value[len(mount_path) :]
                break
        for cluster, local in sorted(self.network.items(), key=lambda kv: -len(kv[0])):
            value = value.replace(cluster, local)
        return value

    def start(self, spawn=Process) -> Process:
        """The container's command as a process (``spawn``: the ``processes`` fixture kills
        it at the end of the test)."""
        return spawn([sys.executable, "-m", "seed_rl.cli", *self.args], self.env)

    def probe(self, kind: str = "readinessProbe", **env: str) -> subprocess.CompletedProcess:
        command = self.container[kind]["exec"]["command"]
        assert command == ["python", "/opt/seed-rl/healthcheck.py"]
        return subprocess.run(
            [sys.executable, str(REPO / "docker" / "healthcheck.py")],
            env={**os.environ, **self.env, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
