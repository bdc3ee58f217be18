"""components/learner-replicas and overlays/replicas: the learner as a group of data-parallel
replicas on Kubernetes, one pod each (docs/kubernetes.md, "Learner replicas").

The rendered objects: each pod's environment gives torch.distributed what torchrun would
(RANK the pod's ordinal, WORLD_SIZE the number of pods, MASTER_ADDR pod 0's name in the
headless Service, which publishes pods before they are ready), and each replica advertises
its own pod's name; learner pods reach one another on every port but the actors'; probes,
volume and disruption budget are the single learner's. A rehearsal runs two rendered learner
pods and an actor pod as local processes, with the pods' DNS names and ports replaced by
127.0.0.1 and free ports: they form one group, the replica behind the Service redirects an
actor to the other pod, they train, stop on SIGTERM, resume from rank 0's volume alone, and
a replica that dies takes the other down with it (the StatefulSet then restarts both).
"""

from __future__ import annotations

import re
import signal
import socket
from contextlib import ExitStack
from pathlib import Path

import pytest
import torch
from support.k8s_manifests import (
    K8S,
    LEARNER_SERVICE,
    REPLICA_VARIABLES,
    RESOURCE,
    Pod,
    actor_deployment,
    admits,
    container,
    kustomize,
    learner_pod_env,
    learner_set,
    one,
    overlay_with,
    pod_labels,
    port_of,
    rendered,
    resolve,
    stateful_pod,
    validate_all,
)
from support.learner_process import RESUMED, SERVING, last_metric, wait_for

from learner.training import checkpoint
from learner.training.distributed import ReplicaGroup, advertised_address, replica_port_address

DOC = K8S.parents[1] / "docs" / "kubernetes.md"
#: the doc's example: an overlay of its own that makes the gpu overlay a group of 4
DOC_OVERLAY = "my-cluster/gpu-replicas/kustomization.yaml"


def doc_overlay(tmp_path: Path) -> list[dict]:
    """The page's example overlay, rendered where the page puts it (next to deploy/)."""
    (body,) = re.findall(rf"```yaml\n# {re.escape(DOC_OVERLAY)}\n(.*?)```", DOC.read_text(), re.S)
    path = tmp_path / "repo" / DOC_OVERLAY
    path.parent.mkdir(parents=True)
    path.write_text(body)
    (tmp_path / "repo" / "deploy").symlink_to(K8S.parent)
    return kustomize(path.parent)


@pytest.fixture(params=["overlays/replicas", DOC_OVERLAY])
def group(request, tmp_path) -> list[dict]:
    """A rendered group of learner replicas: the repository's overlay and the page's."""
    if request.param == DOC_OVERLAY:
        return doc_overlay(tmp_path)
    return list(rendered(request.param))


# -- the rendered objects --------------------------------------------------------------------


def test_the_doc_overlay_is_a_group_of_four_gpu_replicas(tmp_path):
    objects = doc_overlay(tmp_path)
    validate_all(objects, f"docs/kubernetes.md: {DOC_OVERLAY}")
    statefulset = learner_set(objects)
    assert statefulset["spec"]["replicas"] == 4
    assert learner_pod_env(objects)["SEED_RL_DEVICE"] == "cuda"  # NCCL between the replicas
    limits = container(statefulset, "learner")["resources"]["limits"]
    assert int(limits["nvidia.com/gpu"]) == 1  # one GPU per pod: cuda:LOCAL_RANK is cuda:0


def test_the_page_shows_what_applying_the_overlay_creates():
    objects = rendered("overlays/replicas")
    printed = "\n".join(f"{RESOURCE[o['kind']]}/{o['metadata']['name']} created" for o in objects)
    assert printed in DOC.read_text(), f"docs/kubernetes.md should show:\n{printed}"


def test_every_pod_gets_torchruns_environment_from_itself(group):
    statefulset = learner_set(group)
    spec = statefulset["spec"]
    pods = spec["replicas"]
    assert pods >= 2
    learner = container(statefulset, "learner")
    headless = one(group, "Service", spec["serviceName"])
    namespace = statefulset["metadata"]["namespace"]
    dns = f"{spec['serviceName']}.{namespace}.svc"  # what a pod's name is qualified with
    for ordinal in range(pods):
        pod = stateful_pod(statefulset, ordinal)
        env = learner_pod_env(group, ordinal)
        assert set(env) >= REPLICA_VARIABLES
        assert (env["RANK"], env["WORLD_SIZE"], env["LOCAL_RANK"]) == (f"{ordinal}", f"{pods}", "0")
        # the rendezvous: pod 0's name in the headless Service, its rendezvous port
        assert env["MASTER_ADDR"] == f"{stateful_pod(statefulset, 0)['metadata']['name']}.{dns}"
        assert env["MASTER_PORT"] == str(port_of(learner, "rendezvous"))
        # one replica per pod: it listens on the pod's gRPC port and gives actors its own name
        config = resolve("learner", env)
        grpc = port_of(learner, "grpc")
        assert replica_port_address(config.address, int(env["LOCAL_RANK"])) == f"0.0.0.0:{grpc}"
        mine = advertised_address(config.advertise_address, ordinal, int(env["LOCAL_RANK"]),
                                  "0.0.0.0", grpc)
        assert mine == f"{pod['metadata']['name']}.{dns}:{grpc}"
    # the names resolve through the headless Service before the pods are ready
    assert headless["spec"]["clusterIP"] == "None"
    assert headless["spec"]["publishNotReadyAddresses"] is True
    assert headless["spec"]["selector"].items() <= pod_labels(statefulset).items()
    # the group starts together, and a change never makes groups of old and new pods
    assert spec["podManagementPolicy"] == "Parallel"
    assert spec["updateStrategy"] == {"type": "OnDelete"}


def test_a_pod_beyond_the_group_exits_before_any_rendezvous(group):
    """`kubectl scale` past WORLD_SIZE: the extra pod's replica refuses at once."""
    pods = learner_set(group)["spec"]["replicas"]
    env = {k: str(v) for k, v in learner_pod_env(group, pods).items()}
    with pytest.raises(SystemExit, match=f"RANK={pods} is not below WORLD_SIZE={pods}"):
        ReplicaGroup.from_env(torch.device("cpu"), environ=env)
    assert not torch.distributed.is_initialized()


def test_learner_pods_reach_one_another_and_only_actors_reach_the_actor_port(group):
    statefulset = learner_set(group)
    learner = pod_labels(statefulset)
    actors = pod_labels(actor_deployment(group))
    grpc = port_of(container(statefulset, "learner"), "grpc")
    rendezvous = port_of(container(statefulset, "learner"), "rendezvous")
    # the rendezvous store, and gloo's and NCCL's connections on Linux's ephemeral ports
    for port in (rendezvous, 32768, 45000, 60999):
        assert admits(group, learner, learner, port), port
        assert not admits(group, actors, learner, port), port
    assert admits(group, actors, learner, grpc)
    assert not admits(group, learner, learner, grpc)


def test_each_pod_is_the_single_learner_in_probes_volume_and_budget(group):
    single = rendered("overlays/cpu")
    ours, theirs = learner_set(group), learner_set(single)
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container(ours, "learner")[probe] == container(theirs, "learner")[probe], probe
    assert ours["spec"]["volumeClaimTemplates"] == theirs["spec"]["volumeClaimTemplates"]
    grace = "terminationGracePeriodSeconds"
    assert ours["spec"]["template"]["spec"][grace] == theirs["spec"]["template"]["spec"][grace]
    assert one(group, "PodDisruptionBudget")["spec"] == one(single, "PodDisruptionBudget")["spec"]
    # rank 0 writes the run on its volume: the run reader's claim is pod 0's
    (volume,) = [v for v in one(rendered("run-reader"), "Pod")["spec"]["volumes"]
                 if v["name"] == "runs"]  # fmt: skip
    claim = volume["persistentVolumeClaim"]["claimName"]
    assert claim == f"runs-{stateful_pod(ours, 0)['metadata']['name']}"
    assert learner_pod_env(group, 0)["RANK"] == "0"


# -- a rehearsal on loopback: two learner pods and an actor pod as local processes ------------


def free_ports(count: int) -> list[int]:
    """``count`` different TCP ports on 127.0.0.1 that nothing listened on a moment ago."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


def two_pods_and_an_actor_pod(tmp_path: Path) -> tuple[list[Pod], Pod, list[int]]:
    """overlays/replicas, with 2 actor processes in the actor pod (a ConfigMap merge), run on
    loopback: pod R listens on 127.0.0.1:ports[R] and its DNS name is 127.0.0.1:ports[R];
    pod 0's rendezvous port is a free one; the Service sends the actor pod to pod 1."""
    (tmp_path / "k").mkdir()
    objects = overlay_with(
        tmp_path / "k",
        "configMapGenerator:\n  - name: seed-rl-actors\n    behavior: merge\n"
        "    literals:\n      - SEED_RL_NUM_ACTORS=2\n",
        base="overlays/replicas",
    )
    statefulset = learner_set(objects)
    assert statefulset["spec"]["replicas"] == 2
    *ports, master = free_ports(3)
    secrets = {"seed-rl-auth": {"token": "rehearsal-token"}}
    pod_names = [stateful_pod(statefulset, r)["metadata"]["name"] for r in range(2)]
    dns = f"{statefulset['spec']['serviceName']}.seed-rl.svc"
    network = {
        f"{LEARNER_SERVICE}:50051": f"127.0.0.1:{ports[1]}",  # the Service picks pod 1
        f"{pod_names[0]}.{dns}": "127.0.0.1",  # MASTER_ADDR
    }
    for name, port in zip(pod_names, ports, strict=True):
        network[f"{name}.{dns}:50051"] = f"127.0.0.1:{port}"
    learners = []
    for ordinal, port in enumerate(ports):
        pod = Pod(objects, statefulset, "learner", tmp_path / f"learner-pod-{ordinal}", secrets,
                  {**network, "0.0.0.0:50051": f"127.0.0.1:{port}"},
                  stateful_pod(statefulset, ordinal))  # fmt: skip
        assert pod.env["MASTER_PORT"] == str(port_of(pod.container, "rendezvous"))
        pod.env["MASTER_PORT"] = str(master)
        learners.append(pod)
    actors = Pod(objects, actor_deployment(objects), "actors", tmp_path / "actor-pod", secrets,
                 network)  # fmt: skip
    return learners, actors, ports


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_rehearsal_two_learner_pods_train_as_one_group(tmp_path, processes, clean_environment):
    pods, actor_pod, ports = two_pods_and_an_actor_pod(tmp_path)
    runs = [pod.root / "runs" for pod in pods]
    run = runs[0] / "default"
    assert [pod.env["SEED_RL_LOGDIR"] for pod in pods] == [str(r / "default") for r in runs]

    learners = [pod.start(processes) for pod in pods]
    for rank, process in enumerate(learners):
        process.wait_for_line(
            rf"replica {rank} of 2: actors are redirected here as 127\.0\.0\.1:{ports[rank]}$",
            timeout=120,
        )
        process.wait_for_line(SERVING.pattern, timeout=60)
        assert pods[rank].probe().returncode == 0  # each pod's readiness: its own replica
    fleet = actor_pod.start(processes)
    # pod 1 (behind the Service) serves the first actor and sends the second to pod 0
    wait_for(lambda: f"sends this actor to 127.0.0.1:{ports[0]}" in fleet.text,
             "a redirect to pod 0", timeout=60, process=fleet)  # fmt: skip
    wait_for(lambda: last_metric(run, "train_steps") >= 2, "training", timeout=120,
             process=learners[0])  # fmt: skip

    # `kubectl scale statefulset/seed-rl-learner --replicas=0`: SIGTERM to every pod
    for process in learners:
        process.popen.send_signal(signal.SIGTERM)
    for process in learners:
        assert process.wait(timeout=120) == 0, process.text
    assert fleet.wait(timeout=60) == 0, fleet.text  # training is over for both actors
    saved = checkpoint.list_checkpoints(run)
    assert saved and (run / "config.json").is_file()
    assert list(runs[1].iterdir()) == []  # rank 1 wrote nothing on its volume

    # scaled back to 2: rank 0 loads its checkpoint and hands it to rank 1
    learners = [pod.start(processes) for pod in pods]
    for process in learners:
        resumed = RESUMED.search(process.wait_for_line(RESUMED.pattern, timeout=120))
        assert Path(resumed["path"]) == saved[0] and int(resumed["train_steps"]) >= 2
    for process in learners:
        process.wait_for_line(SERVING.pattern, timeout=60)
    # a replica dies: the other stops by itself, with an error (no launcher in a pod)
    learners[1].popen.kill()
    assert learners[0].wait(timeout=60) != 0, learners[0].text
    assert "the replica group is broken" in learners[0].text
