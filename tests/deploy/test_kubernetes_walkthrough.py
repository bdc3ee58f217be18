"""docs/kubernetes.md's walkthrough: its commands exist, the paths it names are there, and the
overlays it writes render, validate and print what the page shows.
"""

from __future__ import annotations

import re

from support.k8s_manifests import (
    REPO,
    RESOURCE,
    container,
    container_env,
    kustomize,
    learner_set,
    pod_specs,
    resolve,
    validate_all,
)

from seed_rl import cli

DOC = REPO / "docs" / "kubernetes.md"


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
